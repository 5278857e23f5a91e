"""`polarization`: find compensator settings that undo the fibre's polarization unitary.

The objective is the mean of the H/V and D/A visibilities: both at maximum pin the two-photon state to the
target Bell state. For any rotated retarder every detection probability is a trigonometric polynomial in
its angle θ with harmonics up to 4θ, so each plate in turn is measured at 8 angles, the 5-term series
[1, cos 2θ, sin 2θ, cos 4θ, sin 4θ] is fitted, and the plate goes to the fitted maximum (coordinate
ascent with exact one-dimensional steps). The fit averages the counting noise and the number of moves is
fixed. The best positions become a versioned calibration record that the lab applies when it opens.

Keeps: the compensator angles it finds (its purpose). Restores: the analyzer angles and the laser state it
found, also on an error or abort.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from qlab.errors import QlabError
from qlab.optics import axis_retardance
from qlab.procedures.engine import Param, Procedure, RunContext
from qlab.procedures.measure import light_on
from qlab.procedures.restore import restoring
from qlab.procedures.visibility import measure_visibilities

SAMPLES_PER_SWEEP = 8

ARMS = (("H", "V"), ("D", "A"))  # Alice's / Bob's two analyzer arms: Z and X measurements


def _design(theta_deg: np.ndarray) -> np.ndarray:
    t = np.radians(theta_deg)
    return np.stack([np.ones_like(t), np.cos(2 * t), np.sin(2 * t), np.cos(4 * t), np.sin(4 * t)], axis=1)


class PolarizationProcedure(Procedure):
    name = "polarization"
    title = "Compensate fibre polarization drift"
    params = {
        "integration_s": Param(0.2, "s", "integration per trial setting", 0.01, 60),
        "sweeps": Param(4, "", "passes over all plates", 1, 20),
        "target": Param(0.995, "", "stop the plate sweeps once the mean visibility reaches this", 0.5, 1.0),
    }

    def execute(self, ctx: RunContext) -> dict[str, Any]:
        with restoring(ctx.lab, stages=("analyzer",)):
            return self._compensate(ctx)

    def _compensate(self, ctx: RunContext) -> dict[str, Any]:
        lab = ctx.lab
        comps = [n for p in ("bob", "alice") for n in lab.controllers(p, "compensator")]
        if not comps:
            raise QlabError("the lab has no polarization controller with optics.stage = compensator")
        inst = comps[0]
        axes = lab[inst].axes()
        lo, hi = lab[inst].instrument.limits.bounds("position_deg")
        # Plates repeat every 180°: search one period inside the controller's travel.
        lo = max(0.0, lo if lo is not None else 0.0)
        hi = min(hi if hi is not None else lo + 180.0, lo + 180.0)
        light_on(lab)
        before = measure_visibilities(ctx, self.integration_s)
        pos = {ax: float(np.clip(np.mod(lab[inst].position(ax), 180.0), lo, hi)) for ax in axes}
        party = "bob" if inst in lab.controllers("bob", "compensator") else "alice"
        self._probes = 0
        solved = None
        if {f"{p}.{k}" for p in ("alice", "bob") for k in "HVDA"} <= set(lab.roles()):
            solved = self._solve(ctx, inst, axes, party, lo, hi)
            if solved is not None:
                pos = solved
                for ax, a in pos.items():
                    lab[inst].move_absolute(a, ax)
        grid = np.linspace(lo, hi, int((hi - lo) * 10) + 1)  # 0.1° steps inside the controller's travel
        trials = 0
        best = 0.5 * (before["HV"] + before["DA"])
        total = self.sweeps * len(axes) * SAMPLES_PER_SWEEP
        check = measure_visibilities(ctx, max(self.integration_s, 0.5))
        best = 0.5 * (check["HV"] + check["DA"])
        # The solved setting is final unless it is clearly short (e.g. too few counts to solve well).
        for _ in range(self.sweeps if best < min(self.target, 0.9) else 0):
            for ax in axes:
                angles = lo + (np.arange(SAMPLES_PER_SWEEP) + 0.5) * (min(hi - lo, 180.0) / SAMPLES_PER_SWEEP)
                values = []
                for a in angles:
                    lab[inst].move_absolute(float(a), ax)
                    v = measure_visibilities(ctx, self.integration_s)
                    values.append(0.5 * (v["HV"] + v["DA"]))
                    trials += 1
                    ctx.progress(trials / total, f"{ax} at {a:.1f}°: V={values[-1]:.3f}")
                coef, *_ = np.linalg.lstsq(_design(angles), np.array(values), rcond=None)
                fitted = _design(grid) @ coef
                pos[ax] = float(grid[int(np.argmax(fitted))])
                lab[inst].move_absolute(pos[ax], ax)
                best = float(fitted.max())
            if best >= self.target:
                break
        after = measure_visibilities(ctx, max(self.integration_s, 1.0))
        lab.calibrations.add("polarization", {inst: pos}, source=str(ctx.runfile.path) if ctx.runfile else "")
        return {"controller": inst, "positions_deg": pos, "settings_tried": trials,
                "probe_settings": self._probes, "solved": solved is not None,
                "visibility_before": before, "visibility_after": after}

    def _stack(self, ctx: RunContext, party: str, stage: str) -> tuple[list[float], list[float], list[float]]:
        """(current angles, retardances, zero offsets) of every plate of one party's stage, in light order."""
        angles, rets, zeros = [], [], []
        for inst in ctx.lab.controllers(party, stage):
            for ax, a in ctx.lab.config.instruments[inst].axes.items():
                angles.append(ctx.lab[inst].position(ax))
                rets.append(axis_retardance(a))
                zeros.append(a.zero_deg)
        return angles, rets, zeros

    def _party_rotation(self, ctx: RunContext, party: str, stages: tuple[str, ...]) -> np.ndarray:
        from qlab import optics

        u = np.eye(2, dtype=complex)
        for stage in stages:
            ang, rets, zeros = self._stack(ctx, party, stage)
            if ang:
                u = optics.plate_stack([a + z for a, z in zip(ang, zeros, strict=True)], rets) @ u
        return optics.bloch_rotation(u)

    def _solve(self, ctx: RunContext, inst: str, axes: list[str], party: str, lo: float,
               hi: float) -> dict[str, float] | None:
        """Measure correlations at known compensator settings, then solve for the compensating rotation.

        With E(a, b) = u_a · (R_A R_C)ᵀ b for the compensated party's arms b (R_C its compensator, R_A its
        analyzer), u_a is found by least squares; the ideal state (Φ+, correlation tensor diag(1, -1, 1))
        would give R_C u_a = T (R_other)ᵀ a, so R_C is the proper rotation mapping the measured u_a there.
        """
        from scipy.optimize import minimize

        from qlab import optics
        from qlab.procedures.measure import integrate

        lab = ctx.lab
        spec = lab.config.instruments[inst].axes
        rets = [axis_retardance(a) for a in spec.values()]
        zeros = [a.zero_deg for a in spec.values()]
        other = "alice" if party == "bob" else "bob"
        z, x = np.array([0.0, 0, 1]), np.array([1.0, 0, 0])
        r_analyzer = self._party_rotation(ctx, party, ("analyzer",))
        r_other = self._party_rotation(ctx, other, ("compensator", "analyzer"))
        rng = np.random.default_rng(3)
        settings = [np.full(len(axes), lo)] + [rng.uniform(lo, hi, len(axes)) for _ in range(3)]
        rows: list[np.ndarray] = []
        meas: list[list[float]] = [[], []]
        for k, angles in enumerate(settings):
            for ax, a in zip(axes, angles, strict=True):
                lab[inst].move_absolute(float(a), ax)
            ctx.progress(0.05 + 0.1 * k, f"probe setting {k + 1}/{len(settings)}")
            m = integrate(ctx, max(self.integration_s, 0.5))
            self._probes += 1
            rc = optics.bloch_rotation(optics.plate_stack(list(angles + zeros), rets))
            for b_arm, b_dir in zip(ARMS, (z, x), strict=True):
                rows.append((r_analyzer @ rc).T @ b_dir)
                for i, a_arm in enumerate(ARMS):
                    pairs = {(p, q): m.coinc(f"{other}.{q}", f"{party}.{p}") for p in b_arm for q in a_arm}
                    n = sum(pairs.values())
                    same = pairs[(b_arm[0], a_arm[0])] + pairs[(b_arm[1], a_arm[1])]
                    meas[i].append((2 * same - n) / n if n else 0.0)
        a_mat = np.array(rows)
        u = [np.linalg.lstsq(a_mat, np.array(mi), rcond=None)[0] for mi in meas]
        if min(np.linalg.norm(v) for v in u) < 0.2:
            return None  # too little correlation to solve (source off, or a very mixed state)
        t_ideal = np.diag([1.0, -1.0, 1.0])
        want = [t_ideal @ r_other.T @ d for d in (z, x)]

        def frame(v0: np.ndarray, v1: np.ndarray) -> np.ndarray:
            e0 = v0 / np.linalg.norm(v0)
            e1 = v1 - (v1 @ e0) * e0
            e1 /= np.linalg.norm(e1)
            return np.stack([e0, e1, np.cross(e0, e1)])

        r_target = frame(*want).T @ frame(*u)  # proper rotation: measured axes -> ideal axes

        def cost(ang: np.ndarray) -> float:
            r = optics.bloch_rotation(optics.plate_stack(list(ang + zeros), rets))
            out = np.clip(lo - ang, 0, None) + np.clip(ang - hi, 0, None)
            return float(((r - r_target) ** 2).sum() + 10 * (out**2).sum())

        best, best_cost = None, np.inf
        for _ in range(24):
            res = minimize(cost, rng.uniform(lo, hi, len(axes)), method="Nelder-Mead",
                           options={"xatol": 1e-4, "fatol": 1e-10, "maxiter": 4000})
            if res.fun < best_cost:
                best, best_cost = res.x, res.fun
            if best_cost < 1e-8:
                break
        if best is None or best_cost > 1e-3:
            return None
        return {ax: float(np.clip(a, lo, hi)) for ax, a in zip(axes, best, strict=True)}

    def summary(self, r: dict[str, Any]) -> str:
        b, a = r["visibility_before"], r["visibility_after"]
        how = []
        if r.get("probe_settings"):
            how.append(f"solved from {r['probe_settings']} probe settings" if r.get("solved")
                       else f"{r['probe_settings']} probe settings did not solve it")
        if r["settings_tried"]:
            how.append(f"{r['settings_tried']} sweep settings tried")
        return (f"visibility H/V {b['HV']:.3f} -> {a['HV']:.3f}, D/A {b['DA']:.3f} -> {a['DA']:.3f} "
                f"({'; '.join(how) or 'no settings measured'})")
