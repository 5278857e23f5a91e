"""`tomography`: step both parties through projective measurements and reconstruct ρ by maximum likelihood.

Each projection |ψ> is realized on the party's compensator (QWP-HWP-QWP) *on top of* its current
compensation C: the plates are set to the angles of M·C, where M|ψ> = |H>, so the transmitted port of the
analyzer (at 0) projects on |ψ> in the compensated frame. Only the H detectors are used, so unequal
detector efficiencies cannot bias the state.

Restores: the compensator and analyzer angles and the laser state it found, also on an error or abort.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from qlab import optics
from qlab.analysis.bell import distinguishable_from_accidentals
from qlab.analysis.tomography import reconstruct
from qlab.errors import QlabError
from qlab.procedures.engine import Param, Procedure, RunContext
from qlab.procedures.measure import integrate, light_on
from qlab.procedures.restore import restoring
from qlab.procedures.visibility import set_analyzers

log = logging.getLogger(__name__)


class TomographyProcedure(Procedure):
    name = "tomography"
    title = "Two-qubit state tomography"
    params = {
        "integration_s": Param(0.5, "s", "integration per measurement setting", 0.01, 3600),
        "measurements": Param(36, "", "16 (H,V,D,R per photon) or 36 (H,V,D,A,R,L)", 16, 36),
        "resamples": Param(30, "", "Monte Carlo resamplings for the uncertainties", 0, 1000),
    }

    def _compensator(self, ctx: RunContext, party: str) -> tuple[str, list[str], list[float], list[float]]:
        names = ctx.lab.controllers(party, "compensator")
        if not names:
            raise QlabError(f"tomography needs a polarization compensator (QWP-HWP-QWP) for {party}")
        inst = names[0]
        axes_cfg = ctx.lab.config.instruments[inst].axes
        axes = list(axes_cfg)
        rets = [optics.axis_retardance(a) for a in axes_cfg.values()]
        zeros = [a.zero_deg for a in axes_cfg.values()]
        if len(axes) < 3:
            raise QlabError(f"{inst}: tomography needs three plates (QWP-HWP-QWP) to reach every projection")
        return inst, axes, rets, zeros

    def execute(self, ctx: RunContext) -> dict[str, Any]:
        if self.measurements not in (16, 36):
            raise QlabError("measurements must be 16 or 36")
        with restoring(ctx.lab, stages=("analyzer", "compensator")):
            projectors, counts, table = self._measure(ctx)
        total_c = sum(r["coincidences"] for r in table)
        total_a = sum(r["accidentals"] for r in table)
        if total_c == 0:
            raise QlabError("tomography: no coincidences at all; is the pump on? Run `qlab run delays` first.")
        warnings: list[str] = []
        if not distinguishable_from_accidentals(total_c, total_a):
            # The fit still runs (the result is recorded), but says it describes chance coincidences.
            warnings.append(f"coincidences are indistinguishable from accidentals ({total_c} vs {total_a}): the "
                            "reconstructed state describes noise. Is the pump on? Run `qlab run delays` first "
                            "(with uncalibrated cable delays the pairs fall outside the coincidence window).")
            log.warning("tomography: %s", warnings[-1])
        ctx.progress(0.95, "maximum-likelihood reconstruction")
        res = reconstruct(projectors, np.array(counts), resamples=self.resamples)
        return {**res.as_dict(), "measurements": table, "integration_s": self.integration_s, "warnings": warnings}

    def _measure(self, ctx: RunContext) -> tuple[list[np.ndarray], list[int], list[dict[str, Any]]]:
        """Coincidences of every projection pair: (projectors, counts, table for the results)."""
        lab = ctx.lab
        kets = "HVDR" if self.measurements == 16 else "HVDARL"
        light_on(lab)
        set_analyzers(lab, 0.0, 0.0)
        plan: dict[str, dict[str, list[float]]] = {}
        comp: dict[str, tuple] = {}
        for party in ("alice", "bob"):
            inst, axes, rets, zeros = self._compensator(ctx, party)
            start = [lab[inst].position(ax) for ax in axes]
            c_now = optics.plate_stack([a + z for a, z in zip(start, zeros, strict=True)], rets)
            comp[party] = (inst, axes, start)
            plan[party] = {}
            for k in kets:
                target = optics.unitary_to_h(optics.KETS[k]) @ c_now
                angles, infid = optics.angles_for_unitary(target, rets)
                if infid > 1e-6:
                    raise QlabError(f"{inst}: cannot realize the {k} projection (infidelity {infid:.1e})")
                plan[party][k] = [a - z for a, z in zip(angles, zeros, strict=True)]
        projectors, counts, table = [], [], []
        roles = {r: ch for r, (_, ch) in lab.roles().items()}
        for i, ka in enumerate(kets):
            self._set(lab, comp["alice"], plan["alice"][ka])
            for j, kb in enumerate(kets):
                ctx.progress((i * len(kets) + j) / len(kets) ** 2, f"projection {ka}{kb}")
                self._set(lab, comp["bob"], plan["bob"][kb])
                m = integrate(ctx, self.integration_s)
                n = m.result.pair(roles["alice.H"], roles["bob.H"])
                projectors.append(np.kron(optics.projector(optics.KETS[ka]), optics.projector(optics.KETS[kb])))
                counts.append(n)
                table.append({"alice": ka, "bob": kb, "coincidences": n,
                              "accidentals": m.result.accidental_pair(roles["alice.H"], roles["bob.H"])})
        return projectors, counts, table

    @staticmethod
    def _set(lab, comp: tuple, angles: list[float]) -> None:
        inst, axes, _ = comp
        for ax, a in zip(axes, angles, strict=True):
            lab[inst].move_absolute(float(np.mod(a, 360.0)), ax)

    def summary(self, r: dict[str, Any]) -> str:
        text = (f"fidelity with Φ+ {r['fidelity']:.4f} ± {r['fidelity_err']:.4f}, purity {r['purity']:.3f}, "
                f"concurrence {r['concurrence']:.3f}, predicted S ≤ {r['chsh_predicted']:.3f} (upper estimate: "
                "biased up by noise)")
        return text + "".join(f"\nWARNING: {w}" for w in r.get("warnings", []))
