"""`polarization`: find compensator settings that undo the fibre's polarization unitary.

A Nelder–Mead search over the compensator's axes (e.g. QWP-HWP-QWP) maximizes the mean of the H/V and
D/A visibilities, with a hard budget on the number of settings tried. Correlations in two mutually
unbiased bases both at maximum pin the two-photon state to the target Bell state. The best positions
become a versioned calibration record that the lab applies when it opens.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.optimize import minimize

from qlab.errors import QlabError
from qlab.procedures.engine import Param, Procedure, RunContext
from qlab.procedures.measure import light_on
from qlab.procedures.visibility import measure_visibilities


class PolarizationProcedure(Procedure):
    name = "polarization"
    title = "Compensate fibre polarization drift"
    params = {
        "integration_s": Param(0.2, "s", "integration per trial setting", 0.01, 60),
        "max_settings": Param(120, "", "budget of compensator settings tried", 10, 2000),
        "seed": Param(1, "", "seed of the random starting points"),
    }

    def execute(self, ctx: RunContext) -> dict[str, Any]:
        lab = ctx.lab
        comps = [n for p in ("bob", "alice") for n in lab.controllers(p, "compensator")]
        if not comps:
            raise QlabError("the lab has no polarization controller with optics.stage = compensator")
        inst = comps[0]
        axes = lab[inst].axes()
        light_on(lab)
        before = measure_visibilities(ctx, self.integration_s)
        trials: list[tuple[float, list[float]]] = []

        def score(x: np.ndarray) -> float:
            if len(trials) >= self.max_settings:
                raise _Budget
            for ax, deg in zip(axes, x, strict=True):
                lab[inst].move_absolute(float(np.mod(deg, 360.0)), ax)
            v = measure_visibilities(ctx, self.integration_s)
            s = 0.5 * (v["HV"] + v["DA"])
            trials.append((s, [float(np.mod(d, 360.0)) for d in x]))
            ctx.progress(len(trials) / self.max_settings, f"trial {len(trials)}: V={s:.3f}")
            return -s

        rng = np.random.default_rng(self.seed)
        try:
            # Coarse random exploration, then Nelder–Mead from the best point found.
            for _ in range(min(24, self.max_settings // 4)):
                score(rng.uniform(0, 180, len(axes)))
            best = max(trials)[1]
            minimize(score, np.array(best), method="Nelder-Mead",
                     options={"initial_simplex": _simplex(best, 20.0), "xatol": 0.3, "fatol": 1e-3,
                              "maxfev": self.max_settings})
        except _Budget:
            pass
        best_score, best_x = max(trials)
        positions = dict(zip(axes, best_x, strict=True))
        for ax, deg in positions.items():
            lab[inst].move_absolute(deg, ax)
        after = measure_visibilities(ctx, max(self.integration_s, 1.0))
        lab.calibrations.add("polarization", {inst: positions},
                             source=str(ctx.runfile.path) if ctx.runfile else "")
        return {"controller": inst, "positions_deg": positions, "settings_tried": len(trials),
                "visibility_before": before, "visibility_after": after}

    def summary(self, r: dict[str, Any]) -> str:
        b, a = r["visibility_before"], r["visibility_after"]
        return (f"visibility H/V {b['HV']:.3f} -> {a['HV']:.3f}, D/A {b['DA']:.3f} -> {a['DA']:.3f} "
                f"({r['settings_tried']} settings tried)")


class _Budget(Exception):
    pass


def _simplex(x0: list[float], step: float) -> np.ndarray:
    pts = [np.array(x0)]
    for i in range(len(x0)):
        p = np.array(x0, float)
        p[i] += step
        pts.append(p)
    return np.array(pts)
