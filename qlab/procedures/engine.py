"""The run engine: procedures with declared parameters, progress, abort and a clean finally-path.

Scripts, the CLI and the GUI all run procedures through ``RunEngine.run``. The engine opens the run
file, records the settings of every instrument at start and at the end, hands a RunContext to the
procedure, and whatever happens (success, abort, fault) leaves instruments safe and the file closed
and readable. Only a clean finish marks the run file complete.

Safety during a run: the engine starts the lab's instrument watchdog; a watchdog fault, Ctrl-C/SIGTERM
(through the CLI's handler) or the GUI's Abort all go through ``RunEngine.abort(reason)``, which switches
the lasers off at once on a separate thread and sets the run's ``AbortFlag``. Procedures see it within
one tagger read (``integrate`` checks between reads) and long analysis steps through
``qlab.abort.check_abort``. On any failure the run file gets the error, the watchdog's faults, each
laser's state (off, or UNKNOWN) and each instrument's last known settings (from its cache, since a dead
instrument cannot be read), and is closed with ``complete=false``. On a simulated lab the engine also records
what only the simulation knows (``Lab.simulation_report``, e.g. the channel's PLOB bound) under
``simulation_truth``, taken at the procedure's last acquisition, and returns it under the same key.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from qlab import abort as abort_flags
from qlab.abort import AbortFlag
from qlab.errors import AbortedError, QlabError
from qlab.instruments.watchdog import InstrumentFault
from qlab.lab import Lab
from qlab.storage.runfile import RunFile

log = logging.getLogger(__name__)

ProgressCallback = Callable[[float, str], None]


@dataclass(frozen=True)
class Param:
    """A declared procedure parameter; ``unit`` is shown to users, ``help`` explains it."""

    default: Any
    unit: str = ""
    help: str = ""
    minimum: float | None = None
    maximum: float | None = None

    def coerce(self, name: str, value: Any) -> Any:
        """``value`` (e.g. the text of ``-p KEY=VALUE``) as the default's type, checked against the range.
        Raises QlabError naming the parameter for a wrong type, NaN/infinity or a value out of range."""
        kind = type(self.default)
        try:
            if isinstance(self.default, bool):
                v = _to_bool(value)
            elif isinstance(self.default, int) and isinstance(value, str):
                v = _to_int(value)
            else:
                v = kind(value)
        except (TypeError, ValueError, OverflowError):
            raise QlabError(f"parameter {name}: expected {kind.__name__}, got {value!r}") from None
        if isinstance(v, float) and not math.isfinite(v):
            raise QlabError(f"parameter {name}: {value!r} is not a finite number")
        if self.minimum is not None and v < self.minimum or self.maximum is not None and v > self.maximum:
            lo = "-inf" if self.minimum is None else f"{self.minimum:g}"
            hi = "inf" if self.maximum is None else f"{self.maximum:g}"
            raise QlabError(f"parameter {name}={v:g} is outside [{lo}, {hi}] {self.unit}".rstrip())
        return v


def _to_int(text: str) -> int:
    """An integer from text, also written as an integral float ("1e6", "200000.0")."""
    try:
        return int(text)
    except ValueError:
        f = float(text)
        if not math.isfinite(f) or f != int(f):
            raise ValueError(text) from None
        return int(f)


def _to_bool(v: Any) -> bool:
    if isinstance(v, str):
        if v.lower() in ("1", "true", "yes", "on"):
            return True
        if v.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(v)
    return bool(v)


class RunContext:
    """What a running procedure may use: the lab, the run file, progress and abort."""

    def __init__(self, lab: Lab, runfile: RunFile | None, progress: ProgressCallback | None,
                 abort_event: threading.Event):
        self.lab = lab
        self.runfile = runfile
        self._progress = progress
        self.abort_event = abort_event
        self.simulation_truth: dict[str, Any] = {}

    def note_acquisition(self) -> None:
        """Data is being taken now: the engine records the simulation's truth as it is at this moment (the
        light is on; a procedure may switch it off before it ends). Nothing on hardware."""
        self.simulation_truth = self.lab.simulation_report()

    def progress(self, fraction: float, message: str = "") -> None:
        self.check_abort()
        if self._progress is not None:
            self._progress(max(0.0, min(1.0, fraction)), message)

    def check_abort(self) -> None:
        """Raise AbortedError (user abort) or the InstrumentFault that aborted the run, once aborted."""
        if self.abort_event.is_set():
            if isinstance(self.abort_event, AbortFlag):
                raise self.abort_event.error()
            raise AbortedError("aborted by the user")

    def record_settings(self, names: list[str] | None = None) -> None:
        if self.runfile is None:
            return
        for name in names or list(self.lab.handles):
            try:
                self.runfile.log_settings(name, self.lab[name].call("snapshot", timeout=10))
            except Exception as exc:  # noqa: BLE001 - record what could not be read
                self.runfile.log_settings(name, {"error": {"value": str(exc), "unit": ""}})


class Procedure(ABC):
    """Subclass, declare ``name``, ``params`` and implement ``execute``; results are a JSON-able dict."""

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    params: ClassVar[dict[str, Param]] = {}

    def __init__(self, **values: Any):
        unknown = set(values) - set(self.params)
        if unknown:
            raise QlabError(f"procedure {self.name}: unknown parameter(s) {sorted(unknown)}; "
                            f"it takes {sorted(self.params)}")
        self.values = {k: p.coerce(k, values.get(k, p.default)) for k, p in self.params.items()}

    def __getattr__(self, item: str) -> Any:
        values = self.__dict__.get("values", {})
        if item in values:
            return values[item]
        raise AttributeError(item)

    @abstractmethod
    def execute(self, ctx: RunContext) -> dict[str, Any]: ...

    def summary(self, results: dict[str, Any]) -> str:
        return ", ".join(f"{k}={v}" for k, v in results.items() if not isinstance(v, dict | list))


class RunEngine:
    """Runs procedures on ``lab``; ``abort()`` may be called from any thread (signal handler, GUI, watchdog)."""

    def __init__(self, lab: Lab, progress: ProgressCallback | None = None, watchdog: bool = True):
        self.lab = lab
        self.progress = progress
        self.watchdog = watchdog
        self.abort_event = AbortFlag()
        self._off_thread: threading.Thread | None = None

    def abort(self, reason: BaseException | None = None) -> None:
        """Stop the running procedure as soon as it next checks (within one tagger read) and switch the
        lasers off now, on a separate thread. ``reason``: the fault that caused it (None: the user)."""
        first = not self.abort_event.is_set()
        self.abort_event.set(reason)
        if first:
            self._off_thread = threading.Thread(target=self.lab.lasers_off, name="abort-lasers-off", daemon=True)
            self._off_thread.start()

    def _on_fault(self, event: dict[str, Any]) -> None:
        name, msg = event["instrument"], event["message"]
        self.abort(InstrumentFault(name, msg.removeprefix(f"{name}: ")))

    def new_run_path(self, name: str) -> Path:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        base = self.lab.data_dir / "runs"
        path = base / f"{stamp}-{name}.h5"
        i = 1
        while path.exists():
            path = base / f"{stamp}-{name}-{i}.h5"
            i += 1
        return path

    def run(self, procedure: Procedure, path: Path | None = None, record: bool = True,
            runfile: RunFile | None = None) -> dict[str, Any]:
        """Run ``procedure``; results include ``run_file`` when recorded. Raises AbortedError on abort, the
        InstrumentFault on a watchdog fault, or what the procedure raised; the exception then carries
        ``run_file`` (path or None) and ``laser_states`` ({laser: "off" | "unknown: why"})."""
        self.abort_event.clear()
        own_file = runfile is None and record
        if own_file:
            path = path or self.new_run_path(procedure.name)
            runfile = RunFile(path, taggers=self.lab.names("tagger"), procedure=procedure.name,
                              parameters=procedure.values, config_text=self.lab.loaded.text,
                              config_path=self.lab.loaded.path)
        ctx = RunContext(self.lab, runfile, self.progress, self.abort_event)
        ok = False
        abort_flags.install(self.abort_event)
        self.lab.fault_listeners.append(self._on_fault)
        n_faults = len(self.lab.faults)
        try:
            if self.watchdog:
                self.lab.start_watchdog()
            ctx.record_settings()
            results = procedure.execute(ctx)
            ctx.check_abort()  # a fault in the last moments still spoils the run
            truth = ctx.simulation_truth or self.lab.simulation_report()
            if runfile is not None:
                if truth:  # before the procedure's own results, which stay the file's last entry
                    runfile.add_result("simulation_truth", truth)
                runfile.add_result(procedure.name, results)
                ctx.record_settings()
                results = {**results, "run_file": str(runfile.path)}
            if truth:
                results = {**results, "simulation_truth": truth}
            ok = True
            if self.progress:
                self.progress(1.0, f"{procedure.name} done")
            return results
        except BaseException as exc:
            # Fault or abort: light off first, then record why.
            self.lab.stop_watchdog()
            self.lab.lasers_off()
            self.lab.stop_streams()
            if isinstance(exc, KeyboardInterrupt | AbortedError) and isinstance(self.abort_event.reason,
                                                                                InstrumentFault):
                exc = self.abort_event.reason  # the abort was the fault's doing
            log.info("%s stopped: %s", procedure.name, exc)
            if runfile is not None and not runfile.closed:
                self._record_failure(runfile, procedure, exc, self.lab.faults[n_faults:])
            _annotate(exc, runfile, dict(self.lab.laser_states))
            if exc is self.abort_event.reason:
                raise exc from None
            raise
        finally:
            self.lab.stop_watchdog()
            abort_flags.uninstall(self.abort_event)
            if self._on_fault in self.lab.fault_listeners:
                self.lab.fault_listeners.remove(self._on_fault)
            if own_file and runfile is not None:
                if ok:
                    runfile.finish()
                else:
                    runfile.close()

    def _record_failure(self, runfile: RunFile, procedure: Procedure, exc: BaseException,
                        faults: list[dict[str, Any]]) -> None:
        """The error, the faults of this run, each laser's state and each instrument's last known settings
        (cache only: a dead instrument cannot be read)."""
        try:
            runfile.add_result("error", {"procedure": procedure.name, "error": str(exc), "type": type(exc).__name__,
                                         "instrument": getattr(exc, "instrument", None)})
            for fault in faults:
                runfile.add_result("fault", fault)
            runfile.add_result("laser_states", dict(self.lab.laser_states))
            for name, state in self.lab.last_known_state().items():
                runfile.log_settings(name, state, source="last_known")
        except Exception:  # noqa: BLE001 - closing the file matters more
            log.exception("could not record the error in the run file")


def _annotate(exc: BaseException, runfile: RunFile | None, laser_states: dict[str, str]) -> None:
    """Attach where the run's data went and the lasers' states to the exception the engine raises."""
    try:
        exc.run_file = str(runfile.path) if runfile is not None else None  # type: ignore[attr-defined]
        exc.laser_states = laser_states  # type: ignore[attr-defined]
    except (AttributeError, TypeError):  # exceptions with __slots__
        pass
