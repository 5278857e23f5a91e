"""PicoQuant MultiHarp and HydraHarp in T2 mode: drivers over the vendor libraries (ctypes) and API-level
simulated libraries fed by the simulated lab.

The two libraries share their calls under different prefixes (``MH_`` in mhlib, ``HH_`` in hhlib) and the
same T2 record layout (HydraHarp record version 2). The HydraHarp differs where its hardware does: it must
be calibrated after initialisation, its inputs are constant-fraction discriminators (level and zero-cross
in mV, magnitudes) rather than edge triggers, and ``HH_ReadFiFo`` takes the buffer length as an argument.

The driver decodes the device's 32-bit T2 FIFO records itself: bit 31 special, bits 25–30 channel, bits
0–24 time tag; special with channel 0x3F is an overflow whose time tag counts the 2^25 wraps. Channels are
reported 1-based (front-panel numbering); sync events (special, channel 0) and markers are skipped.

Config block::

    tagger:
      driver: picoquant.multiharp      # or picoquant.hydraharp
      backend: "0"           # device index; or sim
      settings: {trigger_levels_v: {1: -0.05}}
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np

from qlab.errors import InstrumentError
from qlab.instruments.tagger import TimeTagger
from qlab.types import TagChunk

MODE_T2 = 2
FIFO_RECORDS = 1_048_576
T2_WRAP = 1 << 25
FLAG_FIFOFULL = 0x0002


def decode_t2(records: np.ndarray, overflows: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(times in base units, 0-based channels, overflow count after these records) of photon records."""
    r = np.asarray(records, np.uint32)
    special = (r >> 31).astype(bool)
    chan = ((r >> 25) & 0x3F).astype(np.int16)
    tag = (r & (T2_WRAP - 1)).astype(np.int64)
    ovf = special & (chan == 0x3F)
    inc = np.where(ovf, np.where(tag == 0, 1, tag), 0)
    wraps = overflows + np.cumsum(inc)
    photon = ~special
    times = wraps[photon] * T2_WRAP + tag[photon]
    return times, chan[photon], int(overflows + inc.sum())


class PicoQuantMultiHarp(TimeTagger):
    model = "PicoQuant MultiHarp"
    transport_kind = "sdk"
    prefix = "MH_"
    lib_names: tuple[str, ...] = ("libmhlib.so", "mhlib64.dll", "mhlib.dll")

    def __init__(self, *args: Any, lib: Any = None, **kw: Any):
        super().__init__(*args, **kw)
        self.lib = lib
        self.dev = 0
        self._buf = (ctypes.c_uint32 * FIFO_RECORDS)()
        self._ofl = 0
        self._t_read_units = 0
        self._delays: dict[int, int] = {}
        self._levels: dict[int, float] = {}
        self._running = False

    @classmethod
    def simulated(cls, name: str, sim: Any, limits: Any, cfg: Any, options: dict) -> PicoQuantMultiHarp:
        lib = cls.simulated_library(sim, name)
        sim.device_sims[name] = lib
        return cls(name, limits=limits, clock=sim.clock, options=options, lib=lib)

    def _call(self, fn: str, *args: Any) -> None:
        """Call ``<prefix><fn>`` of the vendor library; a negative return code becomes an InstrumentError."""
        code = getattr(self.lib, self.prefix + fn)(*args)
        if code < 0:
            text = ctypes.create_string_buffer(40)
            getattr(self.lib, self.prefix + "GetErrorString")(text, code)
            raise InstrumentError(self.name, f"{self.prefix}{fn} failed: {code} {text.value.decode(errors='replace')}")

    def _open(self) -> None:
        if self.lib is None:
            for lib_name in self.lib_names:
                try:
                    self.lib = ctypes.CDLL(lib_name)
                    break
                except OSError:
                    continue
            else:
                raise InstrumentError(self.name, f"the PicoQuant library ({self.lib_names[0]}) is not installed; "
                                                 "install the vendor software or use backend: sim")
        backend = self.options.get("backend", "0")
        self.dev = 0 if backend in ("", "sim") else int(backend)
        serial = ctypes.create_string_buffer(8)
        self._call("OpenDevice", self.dev, serial)
        self._serial = serial.value.decode(errors="replace")
        self._call("Initialize", self.dev, MODE_T2, 0)
        self._after_initialize()
        res, steps, n = ctypes.c_double(), ctypes.c_int(), ctypes.c_int()
        self._call("GetBaseResolution", self.dev, ctypes.byref(res), ctypes.byref(steps))
        self._call("GetNumOfInputChannels", self.dev, ctypes.byref(n))
        self.resolution_ps = res.value
        self._channels = list(range(1, n.value + 1))

    def _after_initialize(self) -> None:
        """Model-specific steps between initialisation and use (none on the MultiHarp)."""

    def _read_fifo(self, n: Any) -> None:
        self._call("ReadFiFo", self.dev, self._buf, ctypes.byref(n))

    def _close(self) -> None:
        self.stop_stream()
        getattr(self.lib, self.prefix + "CloseDevice")(self.dev)

    def identify(self) -> str:
        return f"{self.model} serial {self._serial}, {self.resolution_ps:g} ps base resolution"

    def channels(self) -> list[int]:
        return self._channels

    def _set_delay(self, channel: int, delay_ps: int) -> None:
        self._call("SetInputChannelOffset", self.dev, channel - 1, int(delay_ps))
        self._delays[channel] = int(delay_ps)

    def delay(self, channel: int) -> int:
        return self._delays.get(channel, 0)

    def _set_trigger_level(self, channel: int, level_v: float) -> None:
        self._call("SetInputEdgeTrg", self.dev, channel - 1, int(round(level_v * 1000)), 1)
        self._levels[channel] = level_v

    def trigger_level(self, channel: int) -> float:
        return self._levels.get(channel, 0.0)

    def start_stream(self, channels: list[int] | None = None) -> None:
        self.stop_stream()
        self._call("StartMeas", self.dev, 360_000_000)
        self._ofl = 0
        self._t_read_units = 0
        self._running = True

    def stop_stream(self) -> None:
        if self._running:
            getattr(self.lib, self.prefix + "StopMeas")(self.dev)
            self._running = False

    def read_chunk(self) -> TagChunk:
        if not self._running:
            self.start_stream()
        n = ctypes.c_int()
        self._read_fifo(n)
        records = np.frombuffer(self._buf, np.uint32, count=n.value)
        times, chans, self._ofl = decode_t2(records, self._ofl)
        flags = ctypes.c_int()
        self._call("GetFlags", self.dev, ctypes.byref(flags))
        t0 = int(round(self._t_read_units * self.resolution_ps))
        end_units = max(self._ofl * T2_WRAP, int(times[-1]) + 1 if times.size else 0, self._t_read_units)
        self._t_read_units = end_units
        ts = np.round(times * self.resolution_ps).astype(np.int64)
        gaps = np.array([[t0, int(round(end_units * self.resolution_ps))]], np.int64) if flags.value & FLAG_FIFOFULL \
            else np.zeros((0, 2), np.int64)
        return TagChunk(ts, (chans + 1).astype(np.int16), t0, int(round(end_units * self.resolution_ps)), gaps)


HH_TTREADMAX = 131_072  # hhlib's largest ReadFiFo request (records); it must be a multiple of 128


class PicoQuantHydraHarp(PicoQuantMultiHarp):
    model = "PicoQuant HydraHarp"
    prefix = "HH_"
    lib_names = ("libhh400.so", "hhlib64.dll", "hhlib.dll")
    zero_cross_mv = 10

    def _after_initialize(self) -> None:
        self._call("Calibrate", self.dev)  # the HydraHarp refuses to measure uncalibrated

    def _set_trigger_level(self, channel: int, level_v: float) -> None:
        # CFD levels are magnitudes (the detector pulse polarity is set by the hardware, not the call).
        self._call("SetInputCFD", self.dev, channel - 1, int(round(abs(level_v) * 1000)), self.zero_cross_mv)
        self._levels[channel] = abs(level_v)  # what the discriminator was given

    def _read_fifo(self, n: Any) -> None:
        self._call("ReadFiFo", self.dev, self._buf, HH_TTREADMAX, ctypes.byref(n))


# ==== simulated library ========================================================================================

def _out(ref: Any) -> Any:
    """The ctypes object behind ``ctypes.byref(x)`` (or ``x`` itself)."""
    return getattr(ref, "_obj", ref)


class SimulatedMHLib:
    """The mhlib calls qlab uses, with the library's conventions (0 = ok, negative error codes)."""

    model_id = "multiharp"
    ERRORS = {-1: "MH_ERROR_DEVICE_OPEN_FAIL", -5: "MH_ERROR_INVALID_ARGUMENT", -16: "MH_ERROR_INVALID_MODE",
              -17: "MH_ERROR_INVALID_OPTION"}

    def __init__(self, lab: Any, name: str, resolution_ps: float = 5.0):
        self.lab, self.name = lab, name
        self.resolution_ps = resolution_ps
        self.mode = 0
        self.open = False
        self.pending = np.zeros(0, np.uint32)
        self.units_emitted_wraps = 0  # overflow records emitted so far
        self.t0_ps = 0
        self.fifo_full = False

    def MH_GetErrorString(self, buf: Any, code: int) -> int:  # noqa: N802 - vendor API
        text = self.ERRORS.get(code, f"MH_ERROR_{-code}").encode()
        ctypes.memmove(buf, text, min(len(text), len(buf) - 1))
        return 0

    def MH_OpenDevice(self, dev: int, serial: Any) -> int:  # noqa: N802
        if dev != 0:
            return -1
        ctypes.memmove(serial, b"1045678", 7)
        self.open = True
        return 0

    def MH_CloseDevice(self, dev: int) -> int:  # noqa: N802
        self.open = False
        self.lab.stop_stream(self.name)
        return 0

    def MH_Initialize(self, dev: int, mode: int, refsource: int) -> int:  # noqa: N802
        if mode not in (2, 3):
            return -16
        self.mode = mode
        return 0

    def MH_GetBaseResolution(self, dev: int, res: Any, steps: Any) -> int:  # noqa: N802
        _out(res).value = self.resolution_ps
        _out(steps).value = 1
        return 0

    def MH_GetNumOfInputChannels(self, dev: int, n: Any) -> int:  # noqa: N802
        wired = [d.input for d in self.lab.detectors.values() if d.tagger == self.name]
        _out(n).value = max([8, *wired])
        return 0

    def MH_SetInputChannelOffset(self, dev: int, ch: int, ps: int) -> int:  # noqa: N802
        if not -99999 <= ps <= 99999:
            return -5
        self.lab.set_tagger_input(self.name, ch + 1, delay_ps=ps)
        return 0

    def MH_SetInputEdgeTrg(self, dev: int, ch: int, mv: int, edge: int) -> int:  # noqa: N802
        if not -1200 <= mv <= 1200:
            return -5
        self.lab.set_tagger_input(self.name, ch + 1, trigger_v=mv / 1000)
        return 0

    def MH_StartMeas(self, dev: int, tacq_ms: int) -> int:  # noqa: N802
        if self.mode != 2:
            return -16
        self.lab.start_stream(self.name)
        self.t0_ps = self.lab.taggers[self.name].t_read_ps
        self.pending = np.zeros(0, np.uint32)
        self.units_emitted_wraps = 0
        return 0

    def MH_StopMeas(self, dev: int) -> int:  # noqa: N802
        self.lab.stop_stream(self.name)
        return 0

    def MH_GetFlags(self, dev: int, flags: Any) -> int:  # noqa: N802
        _out(flags).value = FLAG_FIFOFULL if self.fifo_full else 0
        self.fifo_full = False
        return 0

    def MH_ReadFiFo(self, dev: int, buf: Any, nactual: Any) -> int:  # noqa: N802
        if self.pending.size < FIFO_RECORDS:
            chunk = self.lab.read_tags(self.name)
            self.fifo_full = self.fifo_full or bool(len(chunk.gaps))
            units = np.round((chunk.timestamps - self.t0_ps) / self.resolution_ps).astype(np.int64)
            end_wraps = int((chunk.t_stop_ps - self.t0_ps) / self.resolution_ps) >> 25
            self.pending = np.concatenate([self.pending, self._encode(units, chunk.channels - 1, end_wraps)])
        n = min(self.pending.size, len(buf))
        ctypes.memmove(buf, self.pending[:n].ctypes.data, 4 * n)
        self.pending = self.pending[n:]
        _out(nactual).value = n
        return 0

    def _encode(self, units: np.ndarray, chans: np.ndarray, end_wraps: int) -> np.ndarray:
        """T2 records for photons, with overflow records (each may carry several wraps) as time advances."""
        wraps = units >> 25
        out = []
        cur = self.units_emitted_wraps
        boundaries = np.flatnonzero(np.diff(wraps, prepend=cur)) if units.size else np.zeros(0, np.int64)
        start = 0
        for b in list(boundaries) + [units.size]:
            if b > start:
                out.append(((chans[start:b].astype(np.uint32) & 0x3F) << 25 | (units[start:b] & (T2_WRAP - 1))
                            ).astype(np.uint32))
            if b < units.size:
                n_wrap = int(wraps[b]) - cur
                out.append(_overflows(n_wrap))
                cur = int(wraps[b])
            start = b
        if end_wraps > cur:  # time advanced past the last photon: the device reports the wraps anyway
            out.append(_overflows(end_wraps - cur))
            cur = end_wraps
        self.units_emitted_wraps = cur
        return np.concatenate(out) if out else np.zeros(0, np.uint32)


def _overflows(n: int) -> np.ndarray:
    full, rest = divmod(n, T2_WRAP - 1)
    counts = [T2_WRAP - 1] * full + ([rest] if rest else [])
    return np.array([(1 << 31) | (0x3F << 25) | c for c in counts], np.uint32)


class SimulatedHHLib(SimulatedMHLib):
    """hhlib: the same calls under ``HH_``, plus calibration, CFD inputs and ReadFiFo's count argument."""

    model_id = "hydraharp"
    ERRORS = {**SimulatedMHLib.ERRORS, -1: "HH_ERROR_DEVICE_OPEN_FAIL", -5: "HH_ERROR_INVALID_ARGUMENT",
              -16: "HH_ERROR_INVALID_MODE", -37: "HH_ERROR_NOT_CALIBRATED"}
    N_INPUTS = 8

    def __init__(self, lab: Any, name: str):
        super().__init__(lab, name, resolution_ps=1.0)
        self.calibrated = False

    def __getattr__(self, attr: str) -> Any:
        # Calls the two libraries share keep their MultiHarp behaviour under the HH_ prefix.
        if attr.startswith("HH_"):
            return getattr(self, "MH_" + attr[3:])
        raise AttributeError(attr)

    def MH_GetErrorString(self, buf: Any, code: int) -> int:  # noqa: N802 - vendor API
        text = self.ERRORS.get(code, f"HH_ERROR_{-code}").encode()
        ctypes.memmove(buf, text, min(len(text), len(buf) - 1))
        return 0

    def HH_Calibrate(self, dev: int) -> int:  # noqa: N802
        self.calibrated = self.mode in (2, 3)
        return 0 if self.calibrated else -16

    def HH_SetInputCFD(self, dev: int, ch: int, level_mv: int, zc_mv: int) -> int:  # noqa: N802
        if not (0 <= level_mv <= 1000 and 0 <= zc_mv <= 40) or not 0 <= ch < self.N_INPUTS:
            return -5
        self.lab.set_tagger_input(self.name, ch + 1, trigger_v=level_mv / 1000)
        return 0

    def HH_StartMeas(self, dev: int, tacq_ms: int) -> int:  # noqa: N802
        return self.MH_StartMeas(dev, tacq_ms) if self.calibrated else -37

    def HH_ReadFiFo(self, dev: int, buf: Any, count: int, nactual: Any) -> int:  # noqa: N802
        if not 128 <= count <= min(HH_TTREADMAX, len(buf)) or count % 128:
            return -5
        view = (ctypes.c_uint32 * count).from_buffer(buf)  # the library fills at most ``count`` records
        return self.MH_ReadFiFo(dev, view, nactual)


PicoQuantMultiHarp.simulated_library = SimulatedMHLib
PicoQuantHydraHarp.simulated_library = SimulatedHHLib
PicoQuantMultiHarp.simulator_class = None  # simulated at the API level (simulated libraries), not on a wire
