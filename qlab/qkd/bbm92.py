"""BBM92 post-processing as two parties that talk only through the authenticated channel.

Each party holds only its own clicks (time in a common time frame, detector port), squashed into events
(multi-click events get a random bit). Messages: Bob's event times and bases; Alice's matches and bases;
the test-basis bits; a sample of key-basis bits; Cascade parities; a verification hash; the
privacy-amplification seed; Bob's confirmation hash of his final key; Alice's commit; Bob's acknowledgement.
Key bits never cross the channel.

All public randomness (sample positions, Cascade permutations, hash and PA seeds) is drawn per block from
the OS CSPRNG, the PA seed only after error correction and verification. The key length uses the tolerated
error rate ``qber_tol`` fixed before the run (the block aborts if an estimate exceeds it). A block's key is
handed to the parties' key sinks only after both confirmed: Bob stores on Alice's commit, Alice on Bob's
acknowledgement; a failure before that leaves no key on either side.

Bases: Z = H/V (key), X = D/A (test: all X bits are revealed to bound the phase error). Bit 0 = H or D.
"""

from __future__ import annotations

import math
import os
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from qlab.qkd.auth import Authenticator
from qlab.qkd.cascade import cascade_alice, cascade_bob, efficiency
from qlab.qkd.channel import AuthenticatedChannel, AuthenticationError
from qlab.qkd.finite_key import key_length, statistical_deviation
from qlab.qkd.squash import csprng_bits, squash
from qlab.qkd.toeplitz import toeplitz_hash
from qlab.stream.kernels import pairs_within

PORTS = {"H": 0, "V": 1, "D": 2, "A": 3}
HASH_BITS = 64  # one verification or confirmation hash
VERIFY_BITS = 2 * HASH_BITS  # revealed about the reconciled key: the verification and the confirmation hash

KeySink = Callable[[np.ndarray, bytes], None]  # (final key bits, block id) -> stored; raises on failure


@dataclass
class QkdParams:
    """Protocol parameters, all fixed before the run. There is no seed: protocol randomness is fresh."""

    window_ps: int = 2000  # full coincidence window
    sample_fraction: float = 0.05  # key-basis bits revealed to estimate QBER_Z (then discarded)
    qber_tol: float = 0.08  # tolerated error rate: abort above it; the key length assumes it
    eps_sec: float = 1e-10
    eps_cor: float = 1e-15


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
    confirmed: bool = False
    messages: int = 0
    multi_click_events: int = 0  # squashed events of this party (random bit)
    auth_tags: int = 0  # tags this party sent
    auth_consumed_bits: int = 0  # key spent on the block's authentication (both directions; 0 with HMAC)
    net_secret_bits: int = 0  # committed: secret bits minus the authentication key refilled from them
    block_id: str = ""
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
    ia, ib = pairs_within(t_alice, t_bob, -half, half)
    ua, ca = np.unique(ia, return_counts=True)
    ub, cb = np.unique(ib, return_counts=True)
    single = np.isin(ia, ua[ca == 1]) & np.isin(ib, ub[cb == 1])
    return ia[single], ib[single]


def _bits_from(payload: bytes, n: int) -> np.ndarray:
    return np.unpackbits(np.frombuffer(payload, np.uint8))[:n]


def random_sample(n: int, k: int) -> np.ndarray:
    """``k`` distinct positions of ``range(n)``, sorted, uniformly from the OS CSPRNG."""
    if k <= 0:
        return np.zeros(0, np.int64)
    keys = np.frombuffer(os.urandom(8 * n), np.uint64)
    return np.sort(np.argpartition(keys, k - 1)[:k]).astype(np.int64)


def _errors(a: np.ndarray, b: np.ndarray) -> float | None:
    return float(np.count_nonzero(a != b)) / a.size if a.size else None


class _Party:
    """What both protocols share once the sifted key (Z) and test (X) positions are known: test-bit
    exchange, QBER sample, Cascade, verification, privacy amplification, confirmation and commit.
    Subclasses sift. ``key_sink`` (set before ``run``) receives the committed key; ``key`` holds it after."""

    def __init__(self, channel: AuthenticatedChannel, params: QkdParams):
        self.ch = channel
        self.p = params
        self.stats = BlockStats()
        self.key: np.ndarray | None = None
        self.key_sink: KeySink | None = None
        self.basis = np.zeros(0, np.uint8)
        self.bit = np.zeros(0, np.uint8)

    def _abort(self, reason: str, tell: bool = True) -> None:
        self.stats.aborted, self.stats.abort_reason = True, reason
        self.key = None
        if tell:
            self.ch.abort(reason)

    def _finish_abort(self, reason: str, tell: bool = True) -> BlockStats:
        self._abort(reason, tell)
        return self.stats

    def _guarded(self, session) -> BlockStats:
        """Run the party's session; any failure ends it for both parties (the peer is told at once rather
        than at its channel timeout) with no key."""
        try:
            return session()
        except AuthenticationError as exc:
            self._abort(f"authentication: {exc}", tell=True)
        except Exception as exc:  # noqa: BLE001 - a party thread must end the session, not die silently
            self._abort(f"{type(exc).__name__}: {exc}", tell=True)
        finally:
            self.stats.auth_tags = self.ch.auth.tags_sent
        return self.stats

    def _tolerance_exceeded(self) -> str:
        qs = {b: q for b, q in (("Z", self.stats.qber_z), ("X", self.stats.qber_x)) if q is not None}
        if not qs:
            return "no error estimate (no test bits)"
        over = {b: q for b, q in qs.items() if q > self.p.qber_tol}
        if over:
            return (f"QBER above the tolerated {self.p.qber_tol:.1%} "
                    f"({', '.join(f'{b} {100 * q:.2f} %' for b, q in over.items())})")
        return ""

    def _refill_bits(self, alice_tags: int, bob_tags: int) -> tuple[int, int]:
        """Key bits that refill each direction's Wegman–Carter pads: what this block's tags consumed."""
        per_tag = 8 * getattr(self.ch.auth, "pad_bytes", 0)
        return per_tag * alice_tags, per_tag * bob_tags

    def _commit(self, key: np.ndarray, block_id: bytes, refill: tuple[int, int]) -> None:
        """Refill the authentication pads from the head of the key, hand the rest to the key sink."""
        ra, rb = refill
        pool = getattr(self.ch.auth, "pool", None)
        if pool is not None and ra + rb:
            pool.refill({"alice": np.packbits(key[:ra]).tobytes(), "bob": np.packbits(key[ra:ra + rb]).tobytes()})
        net = key[ra + rb:]
        if self.key_sink is not None:
            self.key_sink(net, block_id)
        self.key = net
        s = self.stats
        s.confirmed, s.block_id = True, block_id.hex()
        s.auth_consumed_bits, s.net_secret_bits = ra + rb, int(net.size)


def confirmation_hash(key: np.ndarray, seed: np.ndarray) -> np.ndarray:
    return toeplitz_hash(key, seed, HASH_BITS)


class _AliceSide(_Party):
    def run(self) -> BlockStats:
        return self._guarded(lambda: self._distill(*self._sift()))

    def _sift(self) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _distill(self, z: np.ndarray, x: np.ndarray) -> BlockStats:
        self.stats.sifted_z, self.stats.sifted_x = int(z.size), int(x.size)
        # Test basis: all X bits revealed.
        self.ch.send("test_bits", {"n": int(x.size)}, np.packbits(self.bit[x]).tobytes())
        _, bob_x = self.ch.recv("test_bits")
        self.x_errors = self.bit[x] != _bits_from(bob_x, x.size)
        self.stats.qber_x = float(self.x_errors.mean()) if x.size else None
        # Key basis: a fresh random sample estimates QBER_Z, then is discarded.
        n_s = int(round(self.p.sample_fraction * z.size))
        sample = random_sample(z.size, n_s)
        self.ch.send("sample", {"n": n_s}, sample.tobytes() + np.packbits(self.bit[z[sample]]).tobytes())
        _, bob_sample = self.ch.recv("sample_bits")
        self.stats.qber_z = _errors(self.bit[z[sample]], _bits_from(bob_sample, n_s))
        self.key_positions = np.delete(z, sample)
        key = self.bit[self.key_positions]
        reason = "no key bits" if key.size == 0 else self._tolerance_exceeded()
        if reason:
            return self._finish_abort(reason)
        self.ch.send("go", {})
        with self.ch.deferred():
            self.stats.leaked_ec_bits = cascade_alice(key, self.ch)
        # Verification: a 64-bit Toeplitz hash with a fresh seed; mismatch aborts the block.
        vseed = csprng_bits(key.size + HASH_BITS - 1)
        self.ch.send("verify", {}, np.packbits(vseed).tobytes()
                     + np.packbits(toeplitz_hash(key, vseed, HASH_BITS)).tobytes())
        hdr, _ = self.ch.recv("verify_result")
        if not hdr["ok"]:
            return self._finish_abort("verification hash mismatch after error correction", tell=False)
        self.stats.verified = True
        return self._amplify(key, int(hdr["corrected"]))

    def _secret_length(self, n: int, leak_bits: int) -> int:
        """Finite-key length of this protocol for ``n`` reconciled bits after ``leak_bits`` were revealed."""
        raise NotImplementedError

    def _amplify(self, key: np.ndarray, corrected: int) -> BlockStats:
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
        # The PA seed is drawn now, after error correction and verification, fresh for this block.
        seed = csprng_bits(n + ell - 1)
        self.ch.send("pa", {"ell": ell}, np.packbits(seed).tobytes())
        final = toeplitz_hash(key, seed, ell)
        return self._confirm_and_commit(final)

    def _confirm_and_commit(self, final: np.ndarray) -> BlockStats:
        ell = int(final.size)
        _, payload = self.ch.recv("confirm")
        nseed = ell + HASH_BITS - 1
        cseed = _bits_from(payload[: (nseed + 7) // 8], nseed)
        bob_hash = _bits_from(payload[(nseed + 7) // 8:], HASH_BITS)
        if not np.array_equal(confirmation_hash(final, cseed), bob_hash):
            self.ch.send("commit", {"ok": False})
            return self._finish_abort("key confirmation failed: the final keys differ", tell=False)
        # This block's tags: Alice's so far plus the commit, Bob's so far plus his acknowledgement.
        refill = self._refill_bits(self.ch.auth.tags_sent + 1, self.ch.auth.tags_checked + 1)
        if sum(refill) >= ell:
            self.ch.send("commit", {"ok": False})
            return self._finish_abort(f"the block's {ell} secret bits do not cover the {sum(refill)} bits of "
                                      "Wegman–Carter key its authentication consumed", tell=False)
        block_id = os.urandom(16)
        self.ch.send("commit", {"ok": True, "block_id": block_id.hex(), "refill": list(refill)})
        self.ch.recv("committed")  # Bob has stored his key
        self._commit(final, block_id, refill)
        return self.stats


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
        with self.ch.deferred():  # Cascade's permutations: public, fresh per block
            fixed, cstats = cascade_bob(key, self.ch, max(q_est, 1e-3), seed=secrets.randbits(63))
        self.stats.leaked_ec_bits = cstats.leaked_bits
        hdr, payload = self.ch.recv("verify")
        nseed = fixed.size + HASH_BITS - 1
        vseed = _bits_from(payload[: (nseed + 7) // 8], nseed)
        alice_hash = _bits_from(payload[(nseed + 7) // 8:], HASH_BITS)
        ok = bool(np.array_equal(toeplitz_hash(fixed, vseed, HASH_BITS), alice_hash))
        self.ch.send("verify_result", {"ok": ok, "corrected": int(cstats.corrected)})
        if not ok:
            return self._finish_abort("verification hash mismatch after error correction", tell=False)
        self.stats.verified = True
        n = int(fixed.size)
        self.stats.key_bits_in = n
        self.stats.qber_z_corrected = cstats.corrected / n
        hdr, payload = self.ch.recv("pa")
        ell = int(hdr["ell"])
        self.stats.secret_bits = ell
        if ell <= 0:
            return self._finish_abort("finite-key length is zero for this block size", tell=False)
        final = toeplitz_hash(fixed, _bits_from(payload, n + ell - 1), ell)
        self._confirm(final)
        return self._await_commit(final)

    def _confirm(self, final: np.ndarray) -> None:
        """Send a hash of the final key under a fresh seed; Alice compares it with hers."""
        cseed = csprng_bits(final.size + HASH_BITS - 1)
        self.ch.send("confirm", {}, np.packbits(cseed).tobytes() + np.packbits(confirmation_hash(final, cseed))
                     .tobytes())

    def _await_commit(self, final: np.ndarray) -> BlockStats:
        hdr, _ = self.ch.recv("commit")
        if not hdr.get("ok"):
            return self._finish_abort("Alice did not commit the block (confirmation failed or key too short)",
                                      tell=False)
        refill = self._refill_bits(self.ch.auth.tags_checked, self.ch.auth.tags_sent + 1)
        if list(refill) != list(hdr.get("refill", [])):
            raise AuthenticationError(f"the parties disagree on the block's authentication cost "
                                      f"({refill} against Alice's {hdr.get('refill')})")
        self._commit(final, bytes.fromhex(hdr["block_id"]), refill)
        self.ch.send("committed", {})
        return self.stats


class _OwnClicks(_Party):
    """A BBM92 party: its own clicks (times in the common frame, ports 0..3 = H, V, D, A), squashed into
    events with the party's private randomness."""

    def __init__(self, times_ps: np.ndarray, ports: np.ndarray, channel: AuthenticatedChannel, params: QkdParams):
        super().__init__(channel, params)
        self.t, self.basis, self.bit, self.stats.multi_click_events = squash(times_ps, ports, params.window_ps // 2)


class Alice(_OwnClicks, _AliceSide):

    def _sift(self) -> tuple[np.ndarray, np.ndarray]:
        hdr, payload = self.ch.recv("clicks")
        nb = int(hdr["n"])
        t_bob = np.frombuffer(payload[: 8 * nb], np.int64)
        basis_bob = np.frombuffer(payload[8 * nb:], np.uint8)
        ia, ib = match_clicks(self.t, t_bob, self.p.window_ps)
        # Published by Bob anyway: kept for a clock tracker and the link's coincidence rate (qlab.network).
        self.peer_times, self.matched = t_bob, int(ia.size)
        same = self.basis[ia] == basis_bob[ib]
        self.ch.send("sift", {"n": int(ia.size)}, ib.astype(np.int64).tobytes() + self.basis[ia].tobytes())
        keep_a = ia[same]
        return keep_a[self.basis[keep_a] == 0], keep_a[self.basis[keep_a] == 1]

    def _secret_length(self, n: int, leak_bits: int) -> int:
        """Tomamichel et al. with the tolerated error rate fixed before the run (not the observed one)."""
        k = self.stats.sifted_x
        self.stats.statistical_deviation = statistical_deviation(n, k, self.p.eps_sec)
        return key_length(n, k, self.p.qber_tol, leak_bits, self.p.eps_sec, self.p.eps_cor)


class Bob(_OwnClicks, _BobSide):

    def _sift(self) -> tuple[np.ndarray, np.ndarray]:
        self.ch.send("clicks", {"n": int(self.t.size)}, self.t.tobytes() + self.basis.astype(np.uint8).tobytes())
        hdr, payload = self.ch.recv("sift")
        m = int(hdr["n"])
        ib = np.frombuffer(payload[: 8 * m], np.int64)
        basis_alice = np.frombuffer(payload[8 * m:], np.uint8)
        keep_b = ib[self.basis[ib] == basis_alice]
        return keep_b[self.basis[keep_b] == 0], keep_b[self.basis[keep_b] == 1]


Auth = bytes | tuple[Authenticator, Authenticator]


def run_parties(make_alice, make_bob, auth: Auth, tamper=None,
                sinks: tuple[KeySink | None, KeySink | None] = (None, None)) -> tuple[Any, Any]:
    """Both parties in this process (Alice in a thread), joined by an in-process authenticated pipe.
    ``make_alice(channel)`` / ``make_bob(channel)`` build the parties on their end of the channel. ``auth``
    is a pre-shared HMAC key or (Alice's, Bob's) authenticators; ``sinks`` receive each side's committed key.
    ``tamper`` (tests) rewrites Bob's outgoing frames."""
    import threading

    from qlab.qkd.channel import QueuePipe

    pa, pb = QueuePipe.pair(timeout_s=30.0)
    if tamper is not None:
        pb.tamper = tamper
    auth_a, auth_b = (auth, auth) if isinstance(auth, bytes | bytearray) else auth
    alice = make_alice(AuthenticatedChannel(pa, auth_a, "alice"))
    bob = make_bob(AuthenticatedChannel(pb, auth_b, "bob"))
    alice.key_sink, bob.key_sink = sinks
    th = threading.Thread(target=alice.run, name="qkd-alice", daemon=True)
    th.start()
    bob.run()
    th.join(60)
    alice.stats.messages = alice.ch.messages_sent + bob.ch.messages_sent
    return alice, bob


def run_in_process(alice_t: np.ndarray, alice_ports: np.ndarray, bob_t: np.ndarray, bob_ports: np.ndarray,
                   params: QkdParams, auth: Auth, tamper=None,
                   sinks: tuple[KeySink | None, KeySink | None] = (None, None)) -> tuple[Alice, Bob]:
    """BBM92 with both parties in this process."""
    return run_parties(lambda ch: Alice(alice_t, alice_ports, ch, params),
                       lambda ch: Bob(bob_t, bob_ports, ch, params), auth, tamper, sinks)


def secret_fraction_asymptotic(qber_z: float, qber_x: float, f: float = 1.0) -> float:
    h = lambda p: 0.0 if p <= 0 or p >= 1 else -p * math.log2(p) - (1 - p) * math.log2(1 - p)  # noqa: E731
    return max(0.0, 1.0 - h(qber_x) - f * h(qber_z))
