"""BBM92 post-processing as two parties that talk only through the authenticated channel.

Each party holds only its own clicks (time in a common time frame, detector port). Messages: Bob's click
times and bases; Alice's matches and bases; the test-basis bits; a sample of key-basis bits; Cascade
parities; a verification hash; the privacy-amplification seed. Key bits never cross the channel.

Bases: Z = H/V (key), X = D/A (test: all X bits are revealed to bound the phase error). Bit 0 = H or D.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from qlab.qkd.cascade import cascade_alice, cascade_bob, efficiency
from qlab.qkd.channel import AuthenticatedChannel, AuthenticationError
from qlab.qkd.finite_key import key_length, statistical_deviation
from qlab.qkd.toeplitz import toeplitz_hash
from qlab.stream.kernels import pair_indices

PORTS = {"H": 0, "V": 1, "D": 2, "A": 3}
VERIFY_BITS = 64


@dataclass
class QkdParams:
    window_ps: int = 2000  # full coincidence window
    sample_fraction: float = 0.05  # key-basis bits revealed to estimate QBER_Z (then discarded)
    qber_threshold: float = 0.11
    eps_sec: float = 1e-10
    eps_cor: float = 1e-15
    seed: int = 0


@dataclass
class BlockStats:
    """What the run file and the user see: statistics only, never key material."""

    sifted_z: int = 0
    sifted_x: int = 0
    qber_z: float | None = None  # from the revealed sample
    qber_x: float | None = None  # over all test bits
    qber_z_corrected: float | None = None  # errors Cascade actually fixed / key bits
    key_bits_in: int = 0
    leaked_ec_bits: int = 0
    ec_efficiency: float | None = None
    statistical_deviation: float | None = None
    secret_bits: int = 0
    aborted: bool = False
    abort_reason: str = ""
    verified: bool = False
    messages: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def split_ports(ports: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(basis 0=Z 1=X, bit) of detector ports 0..3 = H, V, D, A."""
    p = np.asarray(ports, np.uint8)
    return p // 2, p % 2


def match_clicks(t_alice: np.ndarray, t_bob: np.ndarray, window_ps: int) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one pairs (index in Alice's list, index in Bob's) with |Δt| ≤ window/2; multiple candidates
    of one click are dropped (they cannot be attributed)."""
    half = window_ps // 2
    cap = max(1024, 2 * min(t_alice.size, t_bob.size))
    while True:
        out_i, out_j = np.empty(cap, np.int64), np.empty(cap, np.int64)
        m = pair_indices(t_alice, t_bob, -half, half, out_i, out_j)
        if m >= 0:
            break
        cap *= 4
    ia, ib = out_i[:m], out_j[:m]
    ua, ca = np.unique(ia, return_counts=True)
    ub, cb = np.unique(ib, return_counts=True)
    single = np.isin(ia, ua[ca == 1]) & np.isin(ib, ub[cb == 1])
    return ia[single], ib[single]


def _bits_from(payload: bytes, n: int) -> np.ndarray:
    return np.unpackbits(np.frombuffer(payload, np.uint8))[:n]


def _errors(a: np.ndarray, b: np.ndarray) -> float | None:
    return float(np.count_nonzero(a != b)) / a.size if a.size else None


class _Party:
    """What both protocols share once the sifted key (Z) and test (X) positions are known: test-bit
    exchange, QBER sample, Cascade, verification and privacy amplification. Subclasses sift."""

    def __init__(self, channel: AuthenticatedChannel, params: QkdParams):
        self.ch = channel
        self.p = params
        self.stats = BlockStats()
        self.key: np.ndarray | None = None
        self.basis = np.zeros(0, np.uint8)
        self.bit = np.zeros(0, np.uint8)

    def _abort(self, reason: str, tell: bool = True) -> None:
        self.stats.aborted, self.stats.abort_reason = True, reason
        self.key = None
        if tell:
            self.ch.abort(reason)

    def _guarded(self, session) -> BlockStats:
        """Run the party's session; any failure ends it for both parties (the peer is told at once rather
        than at its channel timeout) with no key."""
        try:
            return session()
        except AuthenticationError as exc:
            self._abort(f"authentication: {exc}", tell=True)
        except Exception as exc:  # noqa: BLE001 - a party thread must end the session, not die silently
            self._abort(f"{type(exc).__name__}: {exc}", tell=True)
        return self.stats


class _AliceSide(_Party):
    def run(self) -> BlockStats:
        rng = np.random.default_rng(self.p.seed)
        return self._guarded(lambda: self._distill(*self._sift(), rng))

    def _sift(self) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _distill(self, z: np.ndarray, x: np.ndarray, rng: np.random.Generator) -> BlockStats:
        self.stats.sifted_z, self.stats.sifted_x = int(z.size), int(x.size)
        # Test basis: all X bits revealed.
        self.ch.send("test_bits", {"n": int(x.size)}, np.packbits(self.bit[x]).tobytes())
        _, bob_x = self.ch.recv("test_bits")
        self.x_errors = self.bit[x] != _bits_from(bob_x, x.size)
        self.stats.qber_x = float(self.x_errors.mean()) if x.size else None
        # Key basis: a random sample estimates QBER_Z (for Cascade's block sizes), then is discarded.
        n_s = int(round(self.p.sample_fraction * z.size))
        sample = np.sort(rng.choice(z.size, n_s, replace=False)) if n_s else np.zeros(0, np.int64)
        self.ch.send("sample", {"n": n_s}, sample.astype(np.int64).tobytes()
                     + np.packbits(self.bit[z[sample]]).tobytes())
        _, bob_sample = self.ch.recv("sample_bits")
        self.stats.qber_z = _errors(self.bit[z[sample]], _bits_from(bob_sample, n_s))
        self.key_positions = np.delete(z, sample)
        key = self.bit[self.key_positions]
        qs = [q for q in (self.stats.qber_z, self.stats.qber_x) if q is not None]
        if key.size == 0 or not qs or max(qs) > self.p.qber_threshold:
            return self._finish_abort(f"QBER above {self.p.qber_threshold:.0%} or no key bits "
                                      f"(Z {self.stats.qber_z}, X {self.stats.qber_x})")
        self.ch.send("go", {})
        self.stats.leaked_ec_bits = cascade_alice(key, self.ch)
        # Verification: a fresh 64-bit Toeplitz hash; mismatch aborts the block.
        vseed = rng.integers(0, 2, key.size + VERIFY_BITS - 1, dtype=np.uint8)
        self.ch.send("verify", {}, np.packbits(vseed).tobytes() + np.packbits(toeplitz_hash(key, vseed,
                                                                                              VERIFY_BITS)).tobytes())
        hdr, _ = self.ch.recv("verify_result")
        if not hdr["ok"]:
            return self._finish_abort("verification hash mismatch after error correction", tell=False)
        self.stats.verified = True
        return self._amplify(key, rng, int(hdr["corrected"]))

    def _finish_abort(self, reason: str, tell: bool = True) -> BlockStats:
        self._abort(reason, tell)
        return self.stats

    def _secret_length(self, n: int, leak_bits: int) -> int:
        """Finite-key length of this protocol for ``n`` reconciled bits after ``leak_bits`` were revealed."""
        raise NotImplementedError

    def _amplify(self, key: np.ndarray, rng: np.random.Generator, corrected: int) -> BlockStats:
        s = self.stats
        n = int(key.size)
        s.key_bits_in = n
        s.qber_z_corrected = corrected / n
        s.ec_efficiency = efficiency(s.leaked_ec_bits, n, s.qber_z_corrected) if corrected else None
        ell = self._secret_length(n, s.leaked_ec_bits + VERIFY_BITS)
        s.secret_bits = ell
        if ell <= 0:
            self.ch.send("pa", {"ell": 0})
            return self._finish_abort("finite-key length is zero for this block size", tell=False)
        seed = rng.integers(0, 2, n + ell - 1, dtype=np.uint8)
        self.ch.send("pa", {"ell": ell}, np.packbits(seed).tobytes())
        self.key = toeplitz_hash(key, seed, ell)
        return s


class _BobSide(_Party):
    def run(self) -> BlockStats:
        return self._guarded(lambda: self._distill(*self._sift()))

    def _sift(self) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _distill(self, z: np.ndarray, x: np.ndarray) -> BlockStats:
        self.stats.sifted_z, self.stats.sifted_x = int(z.size), int(x.size)
        hdr, alice_x = self.ch.recv("test_bits")
        self.ch.send("test_bits", {"n": int(x.size)}, np.packbits(self.bit[x]).tobytes())
        self.stats.qber_x = _errors(_bits_from(alice_x, x.size), self.bit[x])
        hdr, payload = self.ch.recv("sample")
        n_s = int(hdr["n"])
        sample = np.frombuffer(payload[: 8 * n_s], np.int64)
        alice_sample = _bits_from(payload[8 * n_s:], n_s)
        self.ch.send("sample_bits", {"n": n_s}, np.packbits(self.bit[z[sample]]).tobytes())
        self.stats.qber_z = _errors(alice_sample, self.bit[z[sample]])
        key = np.delete(self.bit[z], sample)
        self.ch.recv("go")
        q_est = self.stats.qber_z if self.stats.qber_z is not None else (self.stats.qber_x or 0.01)
        fixed, cstats = cascade_bob(key, self.ch, max(q_est, 1e-3), seed=self.p.seed + 1)
        self.stats.leaked_ec_bits = cstats.leaked_bits
        hdr, payload = self.ch.recv("verify")
        nseed = fixed.size + VERIFY_BITS - 1
        vseed = _bits_from(payload[: (nseed + 7) // 8], nseed)
        alice_hash = _bits_from(payload[(nseed + 7) // 8:], VERIFY_BITS)
        ok = bool(np.array_equal(toeplitz_hash(fixed, vseed, VERIFY_BITS), alice_hash))
        self.ch.send("verify_result", {"ok": ok, "corrected": int(cstats.corrected)})
        if not ok:
            self._abort("verification hash mismatch after error correction", tell=False)
            return self.stats
        self.stats.verified = True
        n = int(fixed.size)
        self.stats.key_bits_in = n
        self.stats.qber_z_corrected = cstats.corrected / n
        hdr, payload = self.ch.recv("pa")
        ell = int(hdr["ell"])
        self.stats.secret_bits = ell
        if ell <= 0:
            self._abort("finite-key length is zero for this block size", tell=False)
            return self.stats
        self.key = toeplitz_hash(fixed, _bits_from(payload, n + ell - 1), ell)
        return self.stats


class _OwnClicks(_Party):
    """A BBM92 party: its own clicks (times in the common frame, ports 0..3 = H, V, D, A)."""

    def __init__(self, times_ps: np.ndarray, ports: np.ndarray, channel: AuthenticatedChannel, params: QkdParams):
        super().__init__(channel, params)
        self.t = np.asarray(times_ps, np.int64)
        self.basis, self.bit = split_ports(ports)


class Alice(_OwnClicks, _AliceSide):

    def _sift(self) -> tuple[np.ndarray, np.ndarray]:
        hdr, payload = self.ch.recv("clicks")
        nb = int(hdr["n"])
        t_bob = np.frombuffer(payload[: 8 * nb], np.int64)
        basis_bob = np.frombuffer(payload[8 * nb:], np.uint8)
        ia, ib = match_clicks(self.t, t_bob, self.p.window_ps)
        same = self.basis[ia] == basis_bob[ib]
        self.ch.send("sift", {"n": int(ia.size)}, ib.astype(np.int64).tobytes() + self.basis[ia].tobytes())
        keep_a = ia[same]
        return keep_a[self.basis[keep_a] == 0], keep_a[self.basis[keep_a] == 1]

    def _secret_length(self, n: int, leak_bits: int) -> int:
        k = self.stats.sifted_x
        self.stats.statistical_deviation = statistical_deviation(n, k, self.p.eps_sec)
        return key_length(n, k, self.stats.qber_x or 0.0, leak_bits, self.p.eps_sec, self.p.eps_cor)


class Bob(_OwnClicks, _BobSide):

    def _sift(self) -> tuple[np.ndarray, np.ndarray]:
        self.ch.send("clicks", {"n": int(self.t.size)}, self.t.tobytes() + self.basis.astype(np.uint8).tobytes())
        hdr, payload = self.ch.recv("sift")
        m = int(hdr["n"])
        ib = np.frombuffer(payload[: 8 * m], np.int64)
        basis_alice = np.frombuffer(payload[8 * m:], np.uint8)
        keep_b = ib[self.basis[ib] == basis_alice]
        return keep_b[self.basis[keep_b] == 0], keep_b[self.basis[keep_b] == 1]


def run_parties(make_alice, make_bob, auth_key: bytes, tamper=None) -> tuple[Any, Any]:
    """Both parties in this process (Alice in a thread), joined by an in-process authenticated pipe.
    ``make_alice(channel)`` / ``make_bob(channel)`` build the parties on their end of the channel."""
    import threading

    from qlab.qkd.channel import QueuePipe

    pa, pb = QueuePipe.pair(timeout_s=30.0)
    if tamper is not None:
        pb.tamper = tamper
    alice = make_alice(AuthenticatedChannel(pa, auth_key, "alice"))
    bob = make_bob(AuthenticatedChannel(pb, auth_key, "bob"))
    th = threading.Thread(target=alice.run, name="qkd-alice", daemon=True)
    th.start()
    bob.run()
    th.join(60)
    alice.stats.messages = alice.ch.messages_sent + bob.ch.messages_sent
    return alice, bob


def run_in_process(alice_t: np.ndarray, alice_ports: np.ndarray, bob_t: np.ndarray, bob_ports: np.ndarray,
                   params: QkdParams, auth_key: bytes, tamper=None) -> tuple[Alice, Bob]:
    """BBM92 with both parties in this process."""
    return run_parties(lambda ch: Alice(alice_t, alice_ports, ch, params),
                       lambda ch: Bob(bob_t, bob_ports, ch, params), auth_key, tamper)


def secret_fraction_asymptotic(qber_z: float, qber_x: float, f: float = 1.0) -> float:
    h = lambda p: 0.0 if p <= 0 or p >= 1 else -p * math.log2(p) - (1 - p) * math.log2(1 - p)  # noqa: E731
    return max(0.0, 1.0 - h(qber_x) - f * h(qber_z))
