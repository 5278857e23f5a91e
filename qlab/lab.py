"""A running lab: every instrument of instruments.yaml opened behind its own worker handle.

On close, on exit and on any instrument fault, lasers are switched off first.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qlab.calibration import CalibrationStore
from qlab.config.loader import LoadedConfig, builtin_config_path, load_config
from qlab.errors import InstrumentError, QlabError
from qlab.instruments.clock import Clock, WallClock
from qlab.instruments.factory import create_instrument, create_simulation
from qlab.instruments.handle import InstrumentHandle

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

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self.lasers_off()
        for name, h in list(self.handles.items()):
            try:
                h.call("close", timeout=10)
            except Exception as exc:  # noqa: BLE001 - keep closing the others
                log.error("%s: close failed: %s", name, exc)
            h.stop()
        if self._simulation is not None:
            self._simulation.close()
        atexit.unregister(self.close)

    def __enter__(self) -> Lab:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- safety ------------------------------------------------------------------------------------------------
    def lasers_off(self) -> list[str]:
        """Switch every laser's output off. Returns the names that could not be reached."""
        failed = []
        for name, h in self.handles.items():
            if h.kind == "laser":
                try:
                    h.call("safe_state", timeout=5)
                except Exception as exc:  # noqa: BLE001 - must try every laser
                    failed.append(name)
                    log.error("%s: could not switch laser off: %s", name, exc)
        return failed

    def _on_fault(self, name: str, exc: BaseException) -> None:
        failed = self.lasers_off()
        event = {"time": time.time(), "instrument": name, "message": str(exc),
                 "lasers_off": not failed, "unreachable_lasers": failed}
        self.faults.append(event)
        log.error("instrument fault: %s: %s; lasers switched off%s", name, exc,
                  f" except {failed}" if failed else "")
        for listener in list(self.fault_listeners):
            listener(event)

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
