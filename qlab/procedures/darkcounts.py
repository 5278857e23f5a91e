"""`darkcounts`: switch the lasers off through their instruments and measure each detector's dark rate.

Restores: the laser state it found after a clean finish (lasers that were on go back on); on an error or
abort the lasers stay off. Moves no optics.
"""

from __future__ import annotations

import math
from typing import Any

from qlab.procedures.engine import Param, Procedure, RunContext
from qlab.procedures.measure import integrate, light_off, role_channels
from qlab.procedures.restore import restoring


class DarkCountsProcedure(Procedure):
    name = "darkcounts"
    title = "Dark counts per detector (lasers off)"
    params = {"integration_s": Param(2.0, "s", "integration time", 0.01, 3600)}

    def execute(self, ctx: RunContext) -> dict[str, Any]:
        with restoring(ctx.lab, stages=()):
            light_off(ctx.lab)
            ctx.progress(0.1, "integrating in the dark")
            m = integrate(ctx, self.integration_s)
        roles = role_channels(ctx.lab)
        t = m.result.exposure_s
        rates = {role: m.result.single(ch) / t for role, ch in roles.items()}
        errs = {role: math.sqrt(m.result.single(ch)) / t for role, ch in roles.items()}
        ctx.lab.calibrations.add("darkcounts", {"dark_count_hz": rates},
                                 source=str(ctx.runfile.path) if ctx.runfile else "")
        return {"dark_count_hz": rates, "dark_count_err_hz": errs, "exposure_s": t}

    def summary(self, r: dict[str, Any]) -> str:
        return "dark counts (Hz): " + ", ".join(f"{k}={v:.0f}" for k, v in sorted(r["dark_count_hz"].items()))
