"""`demo`: the main job on the simulated lab — delays, polarization compensation, CHSH, BBM92 QKD — in one
run file.

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


class DemoProcedure(Procedure):
    name = "demo"
    title = "Calibrate, run a Bell test and distill a key"
    params = {"integration_s": Param(1.0, "s", "integration per CHSH setting", 0.01, 3600)}

    def steps(self) -> list[Procedure]:
        return [DelaysProcedure(), PolarizationProcedure(), ChshProcedure(integration_s=self.integration_s),
                QkdProcedure(integration_s=10.0)]

    def execute(self, ctx: RunContext) -> dict[str, Any]:
        out: dict[str, Any] = {}
        steps = self.steps()
        for i, step in enumerate(steps):
            sub = _SubProgress(ctx, i, len(steps), step.name)
            out[step.name] = step.execute(sub)
            if ctx.runfile is not None:
                ctx.runfile.add_result(step.name, out[step.name])
        return out

    def summary(self, r: dict[str, Any]) -> str:
        lines = []
        for step in self.steps():
            if step.name in r:
                lines.append(f"  {step.name:13s} {step.summary(r[step.name])}")
        return "\n".join(lines)


class _SubProgress(RunContext):
    """Maps a step's 0..1 progress onto its slice of the demo's progress."""

    def __init__(self, parent: RunContext, index: int, count: int, name: str):
        super().__init__(parent.lab, parent.runfile, parent._progress, parent.abort_event)
        self._slice = (index / count, 1 / count)
        self._name = name
        self._parent = parent

    def note_acquisition(self) -> None:
        self._parent.note_acquisition()

    def progress(self, fraction: float, message: str = "") -> None:
        self.check_abort()
        if self._progress is not None:
            self._progress(self._slice[0] + self._slice[1] * fraction, f"{self._name}: {message}")
