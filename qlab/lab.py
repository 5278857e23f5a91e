"""A running lab: every instrument of instruments.yaml opened behind its own worker handle.

On close, on exit and on any instrument fault, lasers are switched off first; a laser whose off command
cannot be confirmed is reported as in an UNKNOWN state, never as off. During runs the watchdog
(qlab.instruments.watchdog) health-checks the instruments and reports faults through ``report_fault``.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any

from qlab.calibration import CalibrationStore
from qlab.config.loader import LoadedConfig, builtin_config_path, load_config
from qlab.errors import InstrumentError, QlabError
from qlab.instruments.clock import Clock, WallClock
from qlab.instruments.factory import build_transport, create_instrument, create_simulation
from qlab.instruments.handle import InstrumentHandle
from qlab.instruments.watchdog import Watchdog, policy_for

log = logging.getLogger(__name__)


class Lab:
    def __init__(self, loaded: LoadedConfig, *, realtime: bool | None = None, seed: int | None = None,
                 apply_calibrations: bool = True, data_dir: str | Path | None = None):
        self.loaded = loaded
        self.config = loaded.config
        self.apply_calibrations = apply_calibrations
        # False for runs that must leave nothing behind (`--no-record`): new calibrations apply in this
        # process only and are not appended to calibrations.jsonl.
        self.record_calibrations = True
        # The simulation behind `backend: sim` instruments (None on hardware). `sim` stays for tests, the
        # simulation's side; procedures, analysis and the GUI use only `clock`, `simulation_report` and
        # `simulation_service`.
        self._simulation = create_simulation(loaded, realtime=realtime, seed=seed)
        self.sim = self._simulation.lab if self._simulation is not None else None
        self._wall_clock = WallClock()
        self.handles: dict[str, InstrumentHandle] = {}
        self.faults: list[dict[str, Any]] = []
        self.fault_listeners: list[Callable[[dict[str, Any]], None]] = []
        self._data_dir = Path(data_dir) if data_dir is not None else None
        self._closed = False
        self._lock = threading.Lock()
        self.laser_states: dict[str, str] = {}  # "off" or "unknown: why", from the last lasers_off
        self._reported_unknown: set[str] = set()
        self._watchdog: Watchdog | None = None

    @classmethod
    def from_config(cls, path: str | Path | None = None, **kw: Any) -> Lab:
        return cls(load_config(path), **kw)

    # -- the simulation, through its narrow interface ----------------------------------------------------
    @property
    def simulated(self) -> bool:
        return self._simulation is not None

    @property
    def clock(self) -> Clock:
        """The clock instruments wait on: the simulation's when the lab is simulated, else the wall clock."""
        return self._simulation.clock if self._simulation is not None else self._wall_clock

    def simulation_report(self) -> dict[str, Any]:
        """Figures only the simulation knows (e.g. the channel's PLOB bound), labelled as simulation truth;
        {} on hardware."""
        return self._simulation.report() if self._simulation is not None else {}

    def simulation_service(self, name: str) -> Any:
        """Simulation-only equipment without a driver (``bb84_transmitter``). Raises QlabError on hardware
        or for an unknown name."""
        if self._simulation is None:
            raise QlabError(f"{name!r} exists only in the simulated lab (backend: sim); this lab has no "
                            "simulated instruments")
        return self._simulation.service(name)

    # -- where results go ----------------------------------------------------------------------------------
    @property
    def data_dir(self) -> Path:
        if self._data_dir is not None:
            return self._data_dir
        env = os.environ.get("QLAB_DATA_DIR")
        if env:
            return Path(env)
        base = Path.cwd() if Path(self.loaded.path) == builtin_config_path() else self.loaded.base_dir
        return base / self.config.lab.data_dir

    @property
    def calibrations(self) -> CalibrationStore:
        return CalibrationStore(self.data_dir / "calibrations.jsonl", writable=self.record_calibrations)

    # -- lifecycle ---------------------------------------------------------------------------------------------
    def open(self) -> Lab:
        try:
            for name, cfg in self.config.instruments.items():
                inst = create_instrument(name, cfg, self.sim)
                inst.open()
                handle = InstrumentHandle(inst, self._on_fault)
                self.handles[name] = handle
                settings = {k: v for k, v in cfg.settings.items()}
                if settings:
                    handle.call("apply_settings", settings)
            if self.apply_calibrations:
                self._apply_calibrations()
        except BaseException:
            self.close()
            raise
        atexit.register(self.close)
        return self

    def _apply_calibrations(self) -> None:
        rec = self.calibrations.latest("delays")
        if rec is not None:
            for tagger, delays in rec["values"].items():
                if tagger in self.handles:
                    for ch, d in delays.items():
                        self.handles[tagger].call("set_delay", int(ch), int(d))
        rec = self.calibrations.latest("polarization")
        if rec is not None:
            for inst, axes in rec["values"].items():
                if inst in self.handles:
                    for ax, deg in axes.items():
                        self.handles[inst].call("move_absolute", float(deg), ax)

    def close(self, timeout_s: float = 10.0) -> None:
        """Lasers off, then close every instrument (in parallel, at most ``timeout_s`` s in all; an
        instrument that is faulted gets 0.2 s, one stuck in a call none), then the simulation. Never raises."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self.stop_watchdog()
        failed = self.lasers_off()
        if failed and set(failed) != self._reported_unknown:
            log.error("laser state UNKNOWN (could not switch off): %s", ", ".join(failed))
        futures = {name: h.submit("close") for name, h in self.handles.items()}
        deadline = time.monotonic() + timeout_s
        for name, fut in futures.items():
            h = self.handles[name]
            wait = 0.0 if h.hung is not None else 0.2 if h.faulted is not None else deadline - time.monotonic()
            try:
                fut.result(max(0.0, wait))
            except FutureTimeout:
                log.info("%s: close did not finish in time; left to its worker", name)
            except Exception as exc:  # noqa: BLE001 - keep closing the others
                log.info("%s: close failed: %s", name, exc)
            h.stop(timeout=0.0 if not fut.done() else 1.0)
        if self._simulation is not None:
            self._simulation.close()
        atexit.unregister(self.close)

    def __enter__(self) -> Lab:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- safety ------------------------------------------------------------------------------------------------
    def stop_streams(self, timeout_s: float = 2.0) -> list[str]:
        """Stop every tagger's and counter's stream (after a fault or an abort: nothing more is recorded).
        Returns the names that did not confirm within ``timeout_s`` s; never raises."""
        futures = {}
        for name, h in self.handles.items():
            if h.kind in ("tagger", "counter") and hasattr(h.instrument, "stop_stream"):
                try:
                    futures[name] = h.submit("stop_stream")
                except Exception:  # noqa: BLE001 - a dead worker cannot stream either
                    continue
        failed = []
        deadline = time.monotonic() + timeout_s
        for name, fut in futures.items():
            try:
                fut.result(max(0.0, deadline - time.monotonic()))
            except Exception as exc:  # noqa: BLE001 - report, keep stopping the others
                failed.append(name)
                log.warning("%s: could not stop streaming: %s", name, exc)
        return failed

    def lasers_off(self, timeout_s: float = 2.0) -> list[str]:
        """Try to switch every laser's output off, all at once, each on its own worker; wait at most
        ``timeout_s`` s (0.2 s for a laser already faulted or stuck). Returns the names that could not be
        confirmed off: their state is UNKNOWN (``laser_states[name]`` says why), never reported as off.
        A queued off command of an unreachable laser still runs if its link comes back."""
        lasers = {n: h for n, h in self.handles.items() if h.kind == "laser"}
        # A laser whose worker is stuck in a call cannot run the off command until that call returns:
        # report it UNKNOWN at once (the command stays queued) instead of waiting.
        own = threading.current_thread()
        futures = {n: h.submit("safe_state") for n, h in lasers.items()}
        deadline = time.monotonic() + timeout_s
        states: dict[str, str] = {}
        for name, fut in futures.items():
            h = lasers[name]
            if own is h._thread:  # called from this laser's own worker (its link just failed): don't wait
                states[name] = f"unknown: {h.faulted or 'its link failed'}"
                continue
            wait = 0.0 if h.hung is not None else 0.2 if h.faulted is not None else deadline - time.monotonic()
            try:
                fut.result(max(0.0, wait))
                states[name] = "off"
            except FutureTimeout:
                states[name] = f"unknown: no answer to the off command ({h.hung or h.faulted or 'timeout'})"
            except Exception as exc:  # noqa: BLE001 - must try every laser
                states[name] = f"unknown: off command failed: {exc}"
        self.laser_states.update(states)
        failed = [n for n, st in states.items() if st != "off"]
        for name in failed:
            log.info("%s: laser state UNKNOWN: %s", name, states[name])
        return failed

    def _on_fault(self, name: str, exc: BaseException) -> None:
        """A worker's call failed on communication (timeout, OSError) or the watchdog found ``name`` dead
        or hung: lasers off, record the event, tell the listeners (the run engine aborts the run)."""
        failed = self.lasers_off()
        event = {"time": time.time(), "instrument": name, "message": str(exc), "type": type(exc).__name__,
                 "lasers_off": not failed, "unreachable_lasers": failed,
                 "laser_states": {n: st for n, st in self.laser_states.items()}}
        self.faults.append(event)
        self._reported_unknown |= set(failed)
        lasers = ("lasers off" if not failed else
                  f"lasers off except {', '.join(failed)} (state UNKNOWN)")
        what = str(exc) if str(exc).startswith(f"{name}: ") else f"{name}: {exc}"
        log.info("instrument fault: %s; %s", what, lasers)
        for listener in list(self.fault_listeners):
            listener(event)

    def report_fault(self, fault: BaseException) -> None:
        """The watchdog's entry point: ``fault`` (an InstrumentFault naming its instrument)."""
        name = getattr(fault, "instrument", "?")
        if name in self.handles:
            self.handles[name].faulted = fault
        self._on_fault(name, fault)

    def start_watchdog(self) -> Watchdog | None:
        """Health-check every watched instrument on its worker until ``stop_watchdog`` (the run engine does
        this for every run). Faults go to ``report_fault``. Returns the watchdog (None if nothing is watched)."""
        self.stop_watchdog()
        fast_sim = self.simulated and not getattr(self.clock, "realtime", False)
        policies = {}
        for name, h in self.handles.items():
            cfg = self.config.instruments.get(name)
            policy = policy_for(h.kind, cfg, fast_sim and getattr(cfg, "backend", "sim") == "sim")
            if policy is not None:
                policies[name] = policy
        if not policies:
            return None
        self._watchdog = Watchdog(self.handles, policies, self.report_fault, self._transport_factory).start()
        return self._watchdog

    def stop_watchdog(self) -> None:
        if self._watchdog is not None:
            self._watchdog.stop()
            self._watchdog = None

    def _transport_factory(self, name: str) -> Callable[[], Any] | None:
        """A builder of a fresh link for ``name`` (reconnects), None for simulated instruments."""
        cfg = self.config.instruments[name]
        if cfg.backend == "sim":
            return None
        cls = type(self.handles[name].instrument)
        return lambda: build_transport(cls, name, cfg.backend, cfg.timeout_s)

    def last_known_state(self) -> dict[str, dict[str, Any]]:
        """Each instrument's settings as last read or written (its cache; no device I/O), as snapshot entries
        with the time (Unix s) and source (set/read) of each value; lasers also carry ``laser_state``."""
        out: dict[str, dict[str, Any]] = {}
        for name, h in self.handles.items():
            entries = {k: {"value": v.value, "unit": v.unit, "time": v.time_s, "source": v.source}
                       for k, v in h.cache.values().items()}
            if name in self.laser_states:
                entries["laser_state"] = {"value": self.laser_states[name], "unit": ""}
            out[name] = entries
        return out

    # -- access ------------------------------------------------------------------------------------------------
    def __getitem__(self, name: str) -> InstrumentHandle:
        try:
            return self.handles[name]
        except KeyError:
            raise InstrumentError(name, f"no such instrument; the lab has {sorted(self.handles)}") from None

    def names(self, kind: str) -> list[str]:
        return [n for n, h in self.handles.items() if h.kind == kind]

    def roles(self) -> dict[str, tuple[str, int]]:
        """role (e.g. ``alice.H``) -> (tagger name, input)."""
        return {i.channel.role: (i.channel.tagger, i.channel.input)
                for i in self.config.instruments.values() if i.channel is not None}

    def controllers(self, party: str, stage: str) -> list[str]:
        return [n for n, i in self.config.instruments.items()
                if i.optics is not None and i.optics.party == party and i.optics.stage == stage]

    def snapshot(self) -> dict[str, Any]:
        out = {}
        for name, h in self.handles.items():
            try:
                out[name] = h.call("snapshot", timeout=10)
            except Exception as exc:  # noqa: BLE001 - one bad instrument must not hide the others
                out[name] = {"error": {"value": str(exc), "unit": ""}}
        return out
