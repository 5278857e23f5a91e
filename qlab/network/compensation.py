"""Polarization re-compensation from live coincidences: the QBER of a short probe span and a bounded search.

``probe_qber`` matches the two nodes' clicks of one short span (both in Bob's tagger time) and counts errors per
basis (ports H, V, D, A = 0..3; Z = H/V, X = D/A). ``coordinate_search`` moves the compensator's axes one at a
time by ± a step (halved when no move helps) and stops as soon as the QBER of both bases is below the resume
threshold, or after ``max_trials`` settings (then the best setting seen is restored). Angles in degrees.

The probe spans' bits are disclosed on the classical channel; the link never uses them for key (the next block
starts after the compensation).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from qlab import optics
from qlab.stream.kernels import pairs_within


@dataclass
class ProbeResult:
    qber_z: float | None
    qber_x: float | None
    sifted_z: int
    sifted_x: int
    coincidences: int
    counts: np.ndarray | None = None  # 4×4 coincidences [Alice port, Bob port] (H, V, D, A)

    @property
    def worst(self) -> float:
        """The larger QBER of the two bases (1.0 when a basis has no sifted event: nothing to go by)."""
        return max(1.0 if self.qber_z is None else self.qber_z, 1.0 if self.qber_x is None else self.qber_x)

    @property
    def cost(self) -> float:
        return (1.0 if self.qber_z is None else self.qber_z) + (1.0 if self.qber_x is None else self.qber_x)

    def as_dict(self) -> dict:
        return {"qber_z": self.qber_z, "qber_x": self.qber_x, "sifted_z": self.sifted_z,
                "sifted_x": self.sifted_x, "coincidences": self.coincidences}


def probe_qber(t_bob: np.ndarray, p_bob: np.ndarray, t_alice_in_bob: np.ndarray, p_alice: np.ndarray,
               window_ps: float, anti_correlated: bool = False) -> ProbeResult:
    """QBER per basis of the pairs within ±window/2 (times in ps, both in Bob's frame, sorted)."""
    half = int(window_ps // 2)
    a = np.ascontiguousarray(t_alice_in_bob, np.int64)
    b = np.ascontiguousarray(t_bob, np.int64)
    oi, oj = pairs_within(a, b, -half, half)
    pa = np.asarray(p_alice)[oi].astype(np.int64)
    pb = np.asarray(p_bob)[oj].astype(np.int64)
    basis_a, basis_b = pa // 2, pb // 2
    bit_err = (pa % 2) != (pb % 2)
    if anti_correlated:
        bit_err = ~bit_err
    counts = np.zeros((4, 4), np.int64)
    np.add.at(counts, (pa, pb), 1)
    out = []
    for basis in (0, 1):
        sel = (basis_a == basis) & (basis_b == basis)
        n = int(sel.sum())
        out.append((None if n == 0 else float(bit_err[sel].mean()), n))
    return ProbeResult(out[0][0], out[1][0], out[0][1], out[1][1], int(oi.size), counts)


@dataclass
class SearchResult:
    best_setting: dict[str, float]
    best: ProbeResult
    trials: int
    success: bool
    history: list[dict] = field(default_factory=list)


def coordinate_search(start: dict[str, float], measure: Callable[[dict[str, float]], ProbeResult],
                      step_deg: float, max_trials: int, resume_qber: float, min_step_deg: float = 0.5,
                      should_stop: Callable[[], bool] = lambda: False,
                      restore: Callable[[dict[str, float]], None] | None = None) -> SearchResult:
    """Bounded coordinate descent on the sum of the two bases' QBER. ``measure(setting)`` moves the compensator
    to ``setting`` (axis -> degrees) and returns the live QBER there."""
    history: list[dict] = []

    def trial(setting: dict[str, float]) -> ProbeResult:
        r = measure(setting)
        history.append({"setting": dict(setting), **r.as_dict()})
        return r

    best_set = dict(start)
    best = trial(best_set)
    step = step_deg
    while best.worst > resume_qber and len(history) < max_trials and step >= min_step_deg and not should_stop():
        improved = False
        for axis in list(best_set):
            for sign in (1.0, -1.0):
                moved = False
                while len(history) < max_trials and not should_stop():  # keep going while it helps
                    cand = {**best_set, axis: best_set[axis] + sign * step}
                    r = trial(cand)
                    if r.cost < best.cost:
                        best_set, best, improved, moved = cand, r, True, True
                        if best.worst <= resume_qber:
                            break
                    else:
                        break
                if best.worst <= resume_qber or moved:
                    break
            if best.worst <= resume_qber:
                break
        if not improved:
            step /= 2
    success = best.worst <= resume_qber
    if history[-1]["setting"] != best_set and restore is not None:
        restore(best_set)  # leave the compensator at the best setting seen
    return SearchResult(best_set, best, len(history), success, history)


class CompensatorModel:
    """The node's nominal model of its compensator (plates from its configuration) and of the ideal BBM92 optics:
    from one probe's 4×4 coincidence counts it estimates the fibre's polarization rotation (up to the
    ambiguity of four correlators) and proposes compensator settings that undo it. This is instrument
    knowledge (plate types, zero offsets), not simulation state."""

    def __init__(self, axes: dict[str, tuple[float, float]], compensator_party: str, state: str = "phi_plus"):
        self.axes = axes  # axis -> (retardance in waves, zero offset in degrees), in beam order
        self.party = compensator_party
        self.state = state

    def _stack(self, setting: dict[str, float]) -> np.ndarray:
        u = np.eye(2, dtype=complex)
        for axis, (ret, zero) in self.axes.items():
            u = optics.retarder(ret, np.radians(setting[axis] + zero)) @ u
        return u

    @staticmethod
    def _rotation(w: np.ndarray) -> np.ndarray:
        angle = float(np.linalg.norm(w))
        if angle == 0:
            return np.eye(2, dtype=complex)
        n = w / angle
        sig = sum(n[i] * optics.PAULI_XYZ[i] for i in range(3))
        return np.cos(angle / 2) * np.eye(2) - 1j * np.sin(angle / 2) * sig

    def predicted(self, fibre: np.ndarray, setting: dict[str, float], visibility: float) -> np.ndarray:
        povm = optics.port_povm("bbm92")
        elems = [povm[k] for k in ("H", "V", "D", "A")]
        u = self._stack(setting) @ fibre
        eye = np.eye(2, dtype=complex)
        ua, ub = (u, eye) if self.party == "alice" else (eye, u)
        p = optics.joint_probabilities(optics.werner(self.state, visibility), ua, ub, elems, elems)
        return np.asarray(p, float) / max(float(np.sum(p)), 1e-12)

    def candidates(self, counts: np.ndarray, setting: dict[str, float], starts: int = 10,
                   seed: int = 0) -> list[dict[str, float]]:
        """Compensator settings (best first) that undo the fibre rotation fitted to ``counts`` taken at
        ``setting``. Raises ValueError without coincidences."""
        from scipy.optimize import minimize

        total = float(np.sum(counts))
        if total <= 0:
            raise ValueError("no coincidences in the probe")
        freq = np.asarray(counts, float) / total
        rng = np.random.default_rng(seed)

        def cost(x: np.ndarray) -> float:
            vis = float(np.clip(x[3], 0.0, 1.0))
            return float(np.sum((self.predicted(self._rotation(x[:3]), setting, vis) - freq) ** 2))

        fits = []
        for _ in range(starts):
            x0 = np.r_[rng.normal(0, 1.5, 3), 0.95]
            res = minimize(cost, x0, method="Nelder-Mead", options={"xatol": 1e-5, "fatol": 1e-10, "maxiter": 3000})
            fits.append((float(res.fun), res.x))
        fits.sort(key=lambda f: f[0])
        rets = [ret for ret, _ in self.axes.values()]
        zeros = [zero for _, zero in self.axes.values()]
        out: list[dict[str, float]] = []
        seen: list[np.ndarray] = []
        for c, x in fits:
            if c > 4 * fits[0][0] + 1e-6:
                break
            fibre = self._rotation(x[:3])
            if any(abs(np.trace(f.conj().T @ fibre)) / 2 > 0.999 for f in seen):
                continue
            seen.append(fibre)
            angles, _ = optics.angles_for_unitary(fibre.conj().T, rets, starts=8, seed=seed)
            cand = {axis: _nearest(a - z, setting[axis]) for axis, a, z in zip(self.axes, angles, zeros, strict=True)}
            out.append(cand)
        return out


def _nearest(angle_deg: float, near_deg: float) -> float:
    """``angle_deg`` modulo 180° (a wave plate's period) closest to ``near_deg``: the shortest move."""
    return float(near_deg + ((angle_deg - near_deg + 90.0) % 180.0) - 90.0)
