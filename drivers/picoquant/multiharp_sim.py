"""Simulated PicoQuant libraries (mhlib, hhlib) at the API level: the calls the drivers make, with the
libraries' conventions (0 = ok, negative error codes), T2 records built from the simulated lab's tags."""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np
from qlab.drivers.picoquant.multiharp import (
    FIFO_RECORDS,
    FLAG_FIFOFULL,
    HH_TTREADMAX,
    T2_WRAP,
    PicoQuantHydraHarp,
    PicoQuantMultiHarp,
)

from qlab.sim.faults import FaultInjectable, lost_chunk


def build_simulated_multiharp(name: str, sim: Any, limits: Any, cfg: Any, options: dict) -> PicoQuantMultiHarp:
    """A MultiHarp driver on a simulated mhlib fed by tagger ``name`` of ``sim``."""
    lib = SimulatedMHLib(sim, name)
    sim.device_sims[name] = lib
    return PicoQuantMultiHarp(name, limits=limits, clock=sim.clock, options=options, lib=lib)


def build_simulated_hydraharp(name: str, sim: Any, limits: Any, cfg: Any, options: dict) -> PicoQuantHydraHarp:
    """A HydraHarp driver on a simulated hhlib fed by tagger ``name`` of ``sim``."""
    lib = SimulatedHHLib(sim, name)
    sim.device_sims[name] = lib
    return PicoQuantHydraHarp(name, limits=limits, clock=sim.clock, options=options, lib=lib)


def _out(ref: Any) -> Any:
    """The ctypes object behind ``ctypes.byref(x)`` (or ``x`` itself)."""
    return getattr(ref, "_obj", ref)


class SimulatedMHLib(FaultInjectable):
    """The mhlib calls qlab uses, with the library's conventions (0 = ok, negative error codes). Faults
    (qlab.sim.faults): calls fail with an error code (disconnect, device-error), the FIFO stays empty and time
    stands still (silent), holds random records (garbage), reports more records than it delivered (truncated),
    or overflows (FIFO-full flag, records lost)."""

    model_id = "multiharp"
    ERRORS = {-1: "MH_ERROR_DEVICE_OPEN_FAIL", -5: "MH_ERROR_INVALID_ARGUMENT", -16: "MH_ERROR_INVALID_MODE",
              -17: "MH_ERROR_INVALID_OPTION", -70: "MH_ERROR_USB_DEVICE_LOST (simulated)",
              -71: "MH_ERROR_HARDWARE_FAULT (simulated)"}
    FAULT_CODES = {"disconnect": -70, "device-error": -71}

    def __getattribute__(self, attr: str) -> Any:
        # Every library call fails with the fault's code while a disconnect / device error is in effect.
        value = object.__getattribute__(self, attr)
        if attr[:3] in ("MH_", "HH_") and not attr.endswith("GetErrorString") and callable(value):
            code = object.__getattribute__(self, "FAULT_CODES").get(object.__getattribute__(self, "active_fault")())
            if code is not None:
                return lambda *a, **k: code
        return value

    def __init__(self, lab: Any, name: str, resolution_ps: float = 5.0):
        self.lab, self.name = lab, name
        self.resolution_ps = resolution_ps
        self.mode = 0
        self.open = False
        self.pending = np.zeros(0, np.uint32)
        self.units_emitted_wraps = 0  # overflow records emitted so far
        self.t0_ps = 0
        self.fifo_full = False
        self._init_faults(lab.clock.now, name)

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
        fault = self.active_fault()
        if fault == "silent":
            _out(nactual).value = 0
            return 0
        if fault == "garbage":
            n = min(len(buf), 1000)
            rng = np.random.default_rng(self.faults.rng.getrandbits(32))
            ctypes.memmove(buf, rng.integers(0, 1 << 32, n, dtype=np.uint32).ctypes.data, 4 * n)
            _out(nactual).value = n
            return 0
        if fault == "truncated":
            _out(nactual).value = len(buf) + 64  # claims records it did not deliver
            return 0
        if self.pending.size < FIFO_RECORDS:
            chunk = self.lab.read_tags(self.name)
            if fault == "overflow":
                chunk = lost_chunk(chunk)
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

