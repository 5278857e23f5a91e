"""`demo`: the main job on the simulated lab — delays, polarization compensation, CHSH, BBM92 QKD — in one
run file.

``integration_s`` given explicitly applies to every step (each step's own range permitting); left at its
default, each step uses its own default (CHSH 1 s per setting, the QKD block 10 s). The run file's
``tag_ranges`` result says which tags each step recorded ([start, stop) indices of the first tagger's stream),
so `qlab analyze --step NAME` can analyze one step.

Restores as its steps do: the delays and compensator calibrations stay applied; analyzer angles and the
laser state are put back after each measurement step.
"""

from __future__ import annotations

from typing import Any

from qlab.procedures.chsh import ChshProcedure
from qlab.procedures.delays import DelaysProcedure
from qlab.procedures.engine import Param, Procedure, RunContext
from qlab.procedures.polarization import PolarizationProcedure
from qlab.procedures.qkd import QkdProcedure
from qlab.storage.runfile import RunFile
from qlab.types import TagChunk


class DemoProcedure(Procedure):
    name = "demo"
    title = "Calibrate, run a Bell test and distill a key"
    params = {"integration_s": Param(1.0, "s", "if set: integration of every step's measurements (delays, "
                                               "polarization, CHSH setting, QKD block); default: CHSH 1 s per "
                                               "setting, each other step its own", 0.01, 3600)}

    def __init__(self, **values: Any):
        super().__init__(**values)
        self._explicit = set(values)  # parameters the user set (-p), as opposed to defaults

    def steps(self) -> list[Procedure]:
        if "integration_s" not in self._explicit:
            return [DelaysProcedure(), PolarizationProcedure(), ChshProcedure(integration_s=self.integration_s),
                    QkdProcedure(integration_s=10.0)]
        steps: list[Procedure] = []
        for cls in (DelaysProcedure, PolarizationProcedure, ChshProcedure, QkdProcedure):
            p = cls.params["integration_s"]
            value = min(max(self.integration_s, p.minimum or 0.0), p.maximum or self.integration_s)
            steps.append(cls(integration_s=value))
        return steps

    def execute(self, ctx: RunContext) -> dict[str, Any]:
        out: dict[str, Any] = {}
        steps = self.steps()
        tags = _CountingRunFile(ctx.runfile) if ctx.runfile is not None else None
        ranges: dict[str, list[int]] = {}
        for i, step in enumerate(steps):
            sub = _SubProgress(ctx, i, len(steps), step.name, tags)
            start = tags.appended if tags is not None else 0
            out[step.name] = step.execute(sub)
            if ctx.runfile is not None:
                ranges[step.name] = [start, tags.appended]
                ctx.runfile.add_result(step.name, out[step.name])
        if ctx.runfile is not None:
            ctx.runfile.add_result("tag_ranges", ranges)
        return out

    def summary(self, r: dict[str, Any]) -> str:
        lines = []
        for step in self.steps():
            if step.name in r:
                lines.append(f"  {step.name:13s} {step.summary(r[step.name])}")
        return "\n".join(lines)


class _SubProgress(RunContext):
    """Maps a step's 0..1 progress onto its slice of the demo's progress."""

    def __init__(self, parent: RunContext, index: int, count: int, name: str, runfile: Any = None):
        super().__init__(parent.lab, runfile if runfile is not None else parent.runfile, parent._progress,
                         parent.abort_event)
        self._slice = (index / count, 1 / count)
        self._name = name
        self._parent = parent

    def note_acquisition(self) -> None:
        self._parent.note_acquisition()

    def progress(self, fraction: float, message: str = "") -> None:
        self.check_abort()
        if self._progress is not None:
            self._progress(self._slice[0] + self._slice[1] * fraction, f"{self._name}: {message}")


class _CountingRunFile:
    """The run file as the demo's steps see it: everything passes through; tags appended to the first tagger
    are counted, so the demo knows which tag indices each step recorded."""

    def __init__(self, runfile: RunFile):
        self._runfile = runfile
        self.appended = 0

    def append_tags(self, chunk: TagChunk, tagger: str | int = 0, **kw: Any) -> None:
        self._runfile.append_tags(chunk, tagger, **kw)
        if tagger in (0, self._runfile.taggers[0]):
            self.appended += len(chunk)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._runfile, name)
