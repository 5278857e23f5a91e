"""PicoQuant MultiHarp and HydraHarp in T2 mode: drivers over the vendor libraries (ctypes) and API-level
simulated libraries fed by the simulated lab (``multiharp_sim.py``).

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
from qlab.drivers.guard import StreamWatch

from qlab.errors import InstrumentError, ProtocolError
from qlab.instruments.tagger import TimeTagger
from qlab.types import Identification, TagChunk

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
    stream_stall_s = 2.0  # no records and no time progress for this long: the device stopped delivering

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
        self._watch = StreamWatch(self.name, self.clock, self.stream_stall_s)

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

    def identify(self) -> Identification:
        """Serial and base resolution the library reported when the device was opened."""
        return Identification("PicoQuant", self.model.removeprefix("PicoQuant "), self._serial,
                              details=f"{self.resolution_ps:g} ps base resolution")

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
        self._watch.reset()

    def stop_stream(self) -> None:
        if self._running:
            getattr(self.lib, self.prefix + "StopMeas")(self.dev)
            self._running = False

    def read_chunk(self) -> TagChunk:
        if not self._running:
            self.start_stream()
        n = ctypes.c_int()
        self._read_fifo(n)
        if not 0 <= n.value <= len(self._buf):
            raise ProtocolError(self.name, f"ReadFiFo reported {n.value} records for a {len(self._buf)}-record buffer")
        records = np.frombuffer(self._buf, np.uint32, count=n.value)
        times, chans, ofl = decode_t2(records, self._ofl)
        if chans.size and chans.max() >= len(self._channels):
            raise ProtocolError(self.name, f"T2 records on input {int(chans.max()) + 1}; the device has "
                                           f"{len(self._channels)}")
        if times.size and (np.any(np.diff(times) < 0) or times[0] < self._t_read_units - T2_WRAP):
            raise ProtocolError(self.name, "T2 records out of time order (corrupt FIFO data)")
        self._ofl = ofl
        flags = ctypes.c_int()
        self._call("GetFlags", self.dev, ctypes.byref(flags))
        t0 = int(round(self._t_read_units * self.resolution_ps))
        end_units = max(self._ofl * T2_WRAP, int(times[-1]) + 1 if times.size else 0, self._t_read_units)
        self._watch.update(end_units > self._t_read_units)
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
