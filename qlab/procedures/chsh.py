"""`chsh`: set the analyzers to the four CHSH setting pairs through the polarization controllers,
integrate, and report S ± σ raw and accidental-subtracted side by side.

Restores: the analyzer angles and the laser state it found, also on an error or abort.
"""

from __future__ import annotations

import logging
from typing import Any

from qlab.analysis.bell import (
    CHSH_ANGLES_DEG,
    CHSH_SETTINGS,
    Counts4,
    chsh,
    chsh_subtracted,
    distinguishable_from_accidentals,
)
from qlab.procedures.engine import Param, Procedure, RunContext
from qlab.procedures.measure import Measurement, light_on
from qlab.procedures.restore import restoring
from qlab.procedures.visibility import measure_visibilities, set_analyzers

log = logging.getLogger(__name__)

NO_SIGNAL_HINT = ("coincidences are indistinguishable from accidentals ({c:.0f} vs {a:.0f}): S means nothing. "
                  "Is the pump on? Run `qlab run delays` first (with uncalibrated cable delays the pairs fall "
                  "outside the coincidence window).")


def counts4(m: Measurement, accidentals: bool = False) -> Counts4:
    f = m.acc if accidentals else m.coinc
    return Counts4(f("alice.H", "bob.H"), f("alice.V", "bob.V"), f("alice.H", "bob.V"), f("alice.V", "bob.H"))


class ChshProcedure(Procedure):
    name = "chsh"
    title = "CHSH Bell test"
    params = {
        "integration_s": Param(1.0, "s", "integration per setting pair", 0.01, 3600),
        "measure_visibility": Param(True, "", "also measure H/V and D/A visibility"),
    }

    def execute(self, ctx: RunContext) -> dict[str, Any]:
        with restoring(ctx.lab):
            return self._measure(ctx)

    def _measure(self, ctx: RunContext) -> dict[str, Any]:
        from qlab.procedures.measure import integrate

        lab = ctx.lab
        light_on(lab)
        if self.measure_visibility:
            ctx.progress(0.0, "visibility H/V and D/A")
        vis = measure_visibilities(ctx, self.integration_s) if self.measure_visibility else None
        raw, acc, settings = [], [], []
        for i, (sa, sb) in enumerate(CHSH_SETTINGS):
            a, b = CHSH_ANGLES_DEG[sa], CHSH_ANGLES_DEG[sb]
            ctx.progress(0.2 + 0.2 * i, f"setting ({sa}={a}°, {sb}={b}°)")
            set_analyzers(lab, a, b)
            m = integrate(ctx, self.integration_s)
            raw.append(counts4(m))
            acc.append(counts4(m, accidentals=True))
            settings.append({"alice_deg": a, "bob_deg": b, "coincidences": raw[-1].__dict__,
                             "accidentals": acc[-1].__dict__})
        set_analyzers(lab, 0.0, 0.0)
        r_raw = chsh(raw)
        r_sub = chsh_subtracted(raw, acc)  # σ includes the measured accidentals' own noise
        total_c, total_a = sum(c.total for c in raw), sum(x.total for x in acc)
        warnings = []
        if not distinguishable_from_accidentals(total_c, total_a):
            warnings.append(NO_SIGNAL_HINT.format(c=total_c, a=total_a))
            log.warning("chsh: %s", warnings[-1])
        return {"S": r_sub["S"], "S_err": r_sub["S_err"], "violation_sigma": r_sub["violation_sigma"],
                "S_raw": r_raw["S"], "S_raw_err": r_raw["S_err"], "violation_sigma_raw": r_raw["violation_sigma"],
                "E": r_sub["E"], "E_err": r_sub["E_err"], "E_raw": r_raw["E"],
                "visibility": vis, "coincidences": [c.total for c in raw],
                "accidentals": [c.total for c in acc], "settings": settings,
                "integration_s": self.integration_s, "warnings": warnings}

    def summary(self, r: dict[str, Any]) -> str:
        text = (f"S = {r['S']:.3f} ± {r['S_err']:.3f} ({r['violation_sigma']:.1f} σ above 2; "
                f"raw S = {r['S_raw']:.3f} ± {r['S_raw_err']:.3f})")
        return text + "".join(f"\nWARNING: {w}" for w in r.get("warnings", []))
