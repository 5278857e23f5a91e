"""Two-qubit state tomography: maximum likelihood over a Cholesky T-matrix (James, Kwiat, Munro & White,
PRA 64, 052312, 2001), with figures of merit and Monte Carlo uncertainties.

Input: projectors Π_i (4×4, measured, in the frame the state is wanted in) and counts n_i ~ Poisson(N Tr ρ Π_i)
with one unknown N (one detector pair, so detector efficiencies cannot bias the result).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

from qlab.abort import check_abort
from qlab.optics import bell_state

PAULI = [np.eye(2), np.array([[0, 1], [1, 0]]), np.array([[0, -1j], [1j, 0]]), np.diag([1.0, -1.0])]


def rho_from_t(t: np.ndarray) -> np.ndarray:
    """ρ = T†T / Tr(T†T) with T lower-triangular: 4 real diagonal and 6 complex off-diagonal entries."""
    tm = np.zeros((4, 4), complex)
    tm[np.diag_indices(4)] = t[:4]
    rows, cols = np.tril_indices(4, -1)
    tm[rows, cols] = t[4:10] + 1j * t[10:16]
    rho = tm.conj().T @ tm
    return rho / np.trace(rho).real


def t_from_rho(rho: np.ndarray) -> np.ndarray:
    """Inverse of ``rho_from_t`` for a starting point (ρ made positive definite first)."""
    w, v = np.linalg.eigh((rho + rho.conj().T) / 2)
    rho = (v * np.clip(w, 1e-6, None)) @ v.conj().T
    rho /= np.trace(rho).real
    # With P the index reversal and P ρ P = L L† (Cholesky), T = P L† P is lower triangular and T†T = ρ.
    p = np.eye(4)[::-1]
    low = np.linalg.cholesky(p @ rho @ p)
    tm = p @ low.conj().T @ p
    rows, cols = np.tril_indices(4, -1)
    return np.concatenate([tm[np.diag_indices(4)].real, tm[rows, cols].real, tm[rows, cols].imag])


def linear_inversion(projectors: list[np.ndarray], counts: np.ndarray) -> np.ndarray:
    """Least-squares ρ from Tr(ρ Π_i) ∝ n_i in the Pauli basis (may be unphysical; a starting point)."""
    basis = [np.kron(a, b) for a in PAULI for b in PAULI]
    a = np.array([[np.trace(p @ s).real for s in basis] for p in projectors])
    coef, *_ = np.linalg.lstsq(a, counts.astype(float), rcond=None)
    rho = sum(c * s for c, s in zip(coef, basis, strict=True)) / 4.0
    return rho / np.trace(rho).real


def maximum_likelihood(projectors: list[np.ndarray], counts: np.ndarray) -> np.ndarray:
    """Physical ρ maximizing the Poisson likelihood of ``counts`` (N profiled out analytically)."""
    proj = np.array(projectors)
    n = np.asarray(counts, float)
    total = n.sum()

    def nll(t: np.ndarray) -> float:
        check_abort()  # the fit can take seconds: an abort stops it (AbortedError) at the next evaluation
        rho = rho_from_t(t)
        p = np.clip(np.einsum("kij,ji->k", proj, rho).real, 1e-12, None)
        scale = total / p.sum()  # the best N for this ρ
        mu = scale * p
        return float((mu - n * np.log(mu)).sum())

    if total <= 0:
        raise ValueError("maximum_likelihood: no counts at all; there is no state to reconstruct")
    start_rho = linear_inversion(projectors, n)
    if not np.all(np.isfinite(start_rho)):  # a few noise counts can leave a traceless start: start mixed
        start_rho = np.eye(4) / 4
    try:
        start = t_from_rho(start_rho)
    except np.linalg.LinAlgError:
        start = t_from_rho(np.eye(4) / 4)
    res = minimize(nll, start, method="L-BFGS-B", options={"maxiter": 5000})
    res = minimize(nll, res.x, method="Nelder-Mead", options={"maxiter": 4000, "xatol": 1e-7, "fatol": 1e-9})
    return rho_from_t(res.x)


def concurrence(rho: np.ndarray) -> float:
    """Wootters' concurrence."""
    yy = np.kron(PAULI[2], PAULI[2])
    r = rho @ yy @ rho.conj() @ yy
    lam = np.sqrt(np.clip(np.sort(np.linalg.eigvals(r).real)[::-1], 0, None))
    return float(max(0.0, lam[0] - lam[1] - lam[2] - lam[3]))


def chsh_max(rho: np.ndarray) -> float:
    """Largest CHSH value the state allows (Horodecki): 2 sqrt(sum of the two largest eigenvalues of TᵀT)."""
    t = np.array([[np.trace(rho @ np.kron(PAULI[i], PAULI[j])).real for j in (1, 2, 3)] for i in (1, 2, 3)])
    ev = np.sort(np.linalg.eigvalsh(t.T @ t))[::-1]
    return float(2.0 * np.sqrt(ev[0] + ev[1]))


@dataclass
class TomographyResult:
    rho: np.ndarray
    fidelity: float
    fidelity_err: float
    purity: float
    purity_err: float
    concurrence: float
    concurrence_err: float
    chsh_predicted: float
    chsh_predicted_err: float
    # The Horodecki value of the ML state is biased upward: positivity pushes the small eigenvalues of a noisy
    # near-pure estimate to zero (a purer state) and the maximum picks the largest noisy correlations. Resampling
    # from the estimate cannot see that bias (the estimate already sits on the boundary), so the value is
    # reported as an upper estimate; ``chsh_predicted_err`` is the spread of the resampled states only.
    chsh_predicted_resampled_mean: float = float("nan")

    def as_dict(self) -> dict:
        return {"fidelity": self.fidelity, "fidelity_err": self.fidelity_err, "purity": self.purity,
                "purity_err": self.purity_err, "concurrence": self.concurrence,
                "concurrence_err": self.concurrence_err, "chsh_predicted": self.chsh_predicted,
                "chsh_predicted_err": self.chsh_predicted_err, "chsh_predicted_is_upper_estimate": True,
                "chsh_predicted_resampled_mean": self.chsh_predicted_resampled_mean,
                "rho_real": self.rho.real.tolist(),
                "rho_imag": self.rho.imag.tolist()}


def _merits(rho: np.ndarray, target: np.ndarray) -> tuple[float, float, float, float]:
    return (float((target.conj() @ rho @ target).real), float(np.trace(rho @ rho).real), concurrence(rho),
            chsh_max(rho))


def reconstruct(projectors: list[np.ndarray], counts: np.ndarray, target: str = "phi_plus",
                resamples: int = 30, seed: int = 0) -> TomographyResult:
    """ML state, figures of merit, and their spread over Poisson resamplings of the counts.

    ``chsh_predicted`` (Horodecki, from the ML state) is an upper estimate of the S the source gives: see
    ``TomographyResult``; its error is the resampling spread, which does not include that bias.
    """
    psi = bell_state(target)
    rho = maximum_likelihood(projectors, counts)
    f, p, c, s = _merits(rho, psi)
    rng = np.random.default_rng(seed)
    samples = np.array([_merits(maximum_likelihood(projectors, rng.poisson(counts)), psi)
                        for _ in range(resamples)]) if resamples else np.zeros((1, 4))
    err = samples.std(axis=0, ddof=1) if resamples > 1 else np.zeros(4)
    s_mean = float(samples[:, 3].mean()) if resamples else float("nan")
    return TomographyResult(rho, f, float(err[0]), p, float(err[1]), c, float(err[2]), s, float(err[3]), s_mean)
