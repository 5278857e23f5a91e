"""Polarization optics: Jones matrices, the two-photon state and joint detection probabilities.

Angles here are radians unless a name says ``_deg``. Basis order: |H>, |V>.
"""

from __future__ import annotations

import numpy as np

H = np.array([1.0, 0.0], complex)
V = np.array([0.0, 1.0], complex)
D = (H + V) / np.sqrt(2)
A = (H - V) / np.sqrt(2)
R = (H + 1j * V) / np.sqrt(2)
L = (H - 1j * V) / np.sqrt(2)
KETS = {"H": H, "V": V, "D": D, "A": A, "R": R, "L": L}
PLATE_RETARDANCE = {"half": 0.5, "quarter": 0.25, "paddle": 0.5}  # waves, by the config's plate type


def axis_retardance(axis) -> float:
    """Retardance in waves of a configured axis: its ``retardance_waves`` if given, else by plate type."""
    return axis.retardance_waves if axis.retardance_waves is not None else PLATE_RETARDANCE[axis.plate]


def projector(ket: np.ndarray) -> np.ndarray:
    return np.outer(ket, ket.conj())


def rotation(theta: float) -> np.ndarray:
    c, s = np.cos(theta), np.sin(theta)
    return np.array([[c, -s], [s, c]], complex)


def retarder(retardance_waves: float, axis_rad: float) -> np.ndarray:
    """Jones matrix of a wave plate with the given retardance (in waves) and fast axis angle."""
    phase = np.diag([1.0, np.exp(2j * np.pi * retardance_waves)])
    return rotation(axis_rad) @ phase @ rotation(-axis_rad)


def su2_from_euler(alpha: float, beta: float, gamma: float) -> np.ndarray:
    """ZYZ Euler angles (radians) on the Poincaré sphere -> SU(2)."""
    rz = lambda a: np.diag([np.exp(-0.5j * a), np.exp(0.5j * a)])  # noqa: E731
    ry = lambda b: np.array([[np.cos(b / 2), -np.sin(b / 2)], [np.sin(b / 2), np.cos(b / 2)]], complex)  # noqa: E731
    return rz(alpha) @ ry(beta) @ rz(gamma)


def haar_su2(rng: np.random.Generator) -> np.ndarray:
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    a, b = q[0] + 1j * q[1], q[2] + 1j * q[3]
    return np.array([[a, -b.conjugate()], [b, a.conjugate()]])


def bell_state(name: str) -> np.ndarray:
    if name == "phi_plus":
        return (np.kron(H, H) + np.kron(V, V)) / np.sqrt(2)
    if name == "psi_minus":
        return (np.kron(H, V) - np.kron(V, H)) / np.sqrt(2)
    raise ValueError(f"unknown Bell state {name!r}")


def werner(state: str, visibility: float) -> np.ndarray:
    """rho = V |psi><psi| + (1 - V) I/4."""
    psi = bell_state(state)
    return visibility * np.outer(psi, psi.conj()) + (1 - visibility) * np.eye(4) / 4


def intercept_resend_bob(rho: np.ndarray) -> np.ndarray:
    """Eve measures Bob's photon in a random basis (H/V or D/A) and resends what she found."""
    out = np.zeros_like(rho)
    for basis in (("H", "V"), ("D", "A")):
        for k in basis:
            p = np.kron(np.eye(2), projector(KETS[k]))
            out += 0.5 * p @ rho @ p
    return out


def joint_probabilities(rho: np.ndarray, u_a: np.ndarray, u_b: np.ndarray,
                        povm_a: list[np.ndarray], povm_b: list[np.ndarray]) -> np.ndarray:
    """P[k, l] = Tr[(E_k ⊗ F_l) (U_a ⊗ U_b) rho (U_a ⊗ U_b)†] for POVM elements E_k, F_l."""
    u = np.kron(u_a, u_b)
    r = u @ rho @ u.conj().T
    p = np.empty((len(povm_a), len(povm_b)))
    for k, ek in enumerate(povm_a):
        for l, fl in enumerate(povm_b):
            p[k, l] = np.real(np.trace(np.kron(ek, fl) @ r))
    return np.clip(p, 0.0, None)


def port_povm(layout: str) -> dict[str, np.ndarray]:
    """POVM element of each analyzer output port, in the frame after the party's unitaries.

    ``chsh``: one PBS (H transmitted, V reflected). ``bbm92``: a 50/50 splitter to an H/V and a D/A PBS.
    """
    if layout == "chsh":
        return {"H": projector(H), "V": projector(V)}
    return {k: 0.5 * projector(KETS[k]) for k in ("H", "V", "D", "A")}


def plate_stack(angles_deg: list[float], retardances: list[float]) -> np.ndarray:
    """Jones matrix of wave plates traversed in list order (fast axes at ``angles_deg``)."""
    u = np.eye(2, dtype=complex)
    for ang, ret in zip(angles_deg, retardances, strict=True):
        u = retarder(ret, np.radians(ang)) @ u
    return u


def angles_for_unitary(target: np.ndarray, retardances: list[float], starts: int = 12,
                       seed: int = 0) -> tuple[list[float], float]:
    """Plate angles (degrees) whose stack equals ``target`` up to a global phase; returns (angles, infidelity).

    QWP-HWP-QWP reaches every SU(2); the search is a least-squares fit from several starting points.
    """
    from scipy.optimize import minimize

    rng = np.random.default_rng(seed)

    def cost(x: np.ndarray) -> float:
        return 1.0 - abs(np.trace(plate_stack(list(x), retardances).conj().T @ target)) / 2.0

    best_x, best_c = None, np.inf
    for _ in range(starts):
        res = minimize(cost, rng.uniform(0, 180, len(retardances)), method="Nelder-Mead",
                       options={"xatol": 1e-6, "fatol": 1e-12, "maxiter": 4000})
        if res.fun < best_c:
            best_x, best_c = res.x, res.fun
        if best_c < 1e-10:
            break
    return [float(np.mod(a, 180.0)) for a in best_x], float(best_c)


def unitary_to_h(ket: np.ndarray) -> np.ndarray:
    """A unitary M with M|ket> = |H>, so a PBS after M transmits exactly the ket component."""
    k = ket / np.linalg.norm(ket)
    perp = np.array([-np.conj(k[1]), np.conj(k[0])])
    return np.array([k.conj(), perp.conj()])


PAULI_XYZ = [np.array([[0, 1], [1, 0]], complex), np.array([[0, -1j], [1j, 0]]), np.diag([1.0 + 0j, -1.0])]


def bloch_rotation(u: np.ndarray) -> np.ndarray:
    """SO(3) matrix R with U σ_n U† = σ_{R n}: R_ij = ½ Tr(σ_i U σ_j U†)."""
    return np.array([[0.5 * np.trace(si @ u @ sj @ u.conj().T).real for sj in PAULI_XYZ] for si in PAULI_XYZ])
