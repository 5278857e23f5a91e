"""Issue #15: the key stays secret. No key material in run files or logs, owner-only secret files, fresh
protocol randomness, session-bound authentication (HMAC and Wegman–Carter), key confirmation before commit,
a tolerated error rate fixed in advance, squashing of multi-click events."""

from __future__ import annotations

import logging
import math
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from qlab.errors import QlabError
from qlab.procedures.engine import RunEngine
from qlab.procedures.qkd import QkdProcedure
from qlab.qkd.auth import WegmanCarterAuth
from qlab.qkd.bbm92 import VERIFY_BITS, Alice, Bob, QkdParams, run_parties
from qlab.qkd.channel import AuthenticatedChannel, AuthenticationError, QueuePipe
from qlab.qkd.finite_key import key_length
from qlab.qkd.keystore import KeyStore, lab_authenticators
from qlab.qkd.pipeline import distill
from qlab.qkd.squash import squash
from qlab.qkd.wegman_carter import PAD_BYTES, AuthKeyPool
from qlab.storage.reader import RunReader
from tests.simlab_helpers import calibrated_delays, set_visibility

PARAMS = QkdParams(eps_sec=1e-6, eps_cor=1e-9)


def _lab(make_lab, seed: int, v: float = 0.97):
    def cfg(c):
        set_visibility(v)(c)
        calibrated_delays(c)
    return make_lab(cfg, seed=seed)


def _clicks(n: int = 60_000, error: float = 0.02, seed: int = 9):
    """Synthetic BBM92 clicks of both parties (one click per photon, ``error`` bit flips)."""
    rng = np.random.default_rng(seed)
    t = np.sort(rng.choice(10**12, n, replace=False)).astype(np.int64)
    pa = rng.integers(0, 4, n).astype(np.uint8)
    pb = np.where(rng.random(n) < error, pa ^ 1, pa).astype(np.uint8)
    basis_b = rng.integers(0, 2, n)
    pb = np.where(basis_b != pa // 2, (pb % 2) + 2 * basis_b, pb).astype(np.uint8)
    return t, pa, t + 100, pb


class _Sinks:
    def __init__(self):
        self.stored: dict[str, list[np.ndarray]] = {"alice": [], "bob": []}

    def pair(self):
        return (lambda bits, _id: self.stored["alice"].append(bits), lambda bits, _id: self.stored["bob"].append(bits))


def _run(auth, params=PARAMS, tamper=None, bob_cls=Bob, data=None, sinks=None):
    ta, pa, tb, pb = data if data is not None else _clicks()
    return run_parties(lambda ch: Alice(ta, pa, ch, params), lambda ch: bob_cls(tb, pb, ch, params), auth, tamper,
                       sinks.pair() if sinks else (None, None))


def _wc_auths(tmp_path: Path, pads: int = 256):
    paths = {r: tmp_path / "auth" / f"{r}.wcpool" for r in ("alice", "bob")}
    if not paths["alice"].exists():
        AuthKeyPool.provision(paths, pads)
    return WegmanCarterAuth(AuthKeyPool(paths["alice"])), WegmanCarterAuth(AuthKeyPool(paths["bob"]))


# -- no key material in run files or logs -------------------------------------------------------------------
def test_run_file_and_logs_hold_neither_key_nor_raw_data(make_lab, caplog, tmp_path: Path) -> None:
    caplog.set_level(logging.DEBUG)
    lab = _lab(make_lab, seed=151)
    r = RunEngine(lab).run(QkdProcedure(integration_s=3.0), record=True)
    assert not r["aborted"] and r["secret_bits"] > 0, r["abort_reason"]
    (key_id, key), = KeyStore(r["key_stores"][0]).read()
    assert key.size == r["net_secret_bits"] > 1000 and key_id.hex() == r["key_id"]
    key_bytes = np.packbits(key).tobytes()
    needles = [key_bytes[i:i + 16] for i in range(0, len(key_bytes) - 16, len(key_bytes) // 8)]
    needles += [key_bytes[:16].hex().encode(), "".join(map(str, key[:128])).encode()]
    # The run file: no tags recorded, the key run's tags only counted; no piece of the key in any byte.
    with RunReader(r["run_file"]) as rd:
        assert rd.n_tags() == 0 and rd.withheld_tags() > 100_000 and not rd.secret
        assert rd.duration_s() == pytest.approx(3.0, rel=0.01)
    raw = Path(r["run_file"]).read_bytes()
    logs = [rec.getMessage().encode() for rec in caplog.records]
    logs += [p.read_bytes() for p in lab.data_dir.rglob("*.log")]
    for blob in [raw, *logs]:
        assert not any(n in blob for n in needles)
    # Rebuilding through the public API finds no raw data.
    from qlab.analysis.offline import analyze_file

    with pytest.raises(QlabError, match="holds no raw detection data"):
        analyze_file(r["run_file"], protocol="bbm92")
    with RunReader(r["run_file"]) as rd:
        chunk = rd.read_all()
    roles = {role: ch for role, (_, ch) in lab.roles().items()}
    stats, ka, kb = distill(chunk, roles, QkdParams(), 3.0)
    assert stats["aborted"] and ka is None and kb is None


def test_keep_raw_writes_an_owner_only_secret_file(make_lab) -> None:
    from qlab.analysis.offline import analyze_file

    lab = _lab(make_lab, seed=152)
    r = RunEngine(lab).run(QkdProcedure(integration_s=1.0, keep_raw=True, store_keys=False), record=True)
    raw = Path(r["raw_file"])
    assert stat.S_IMODE(raw.stat().st_mode) == 0o600 and stat.S_IMODE(raw.parent.stat().st_mode) == 0o700
    with RunReader(raw) as rd:
        assert rd.secret and rd.n_tags() > 100_000 and "SECRET" in rd.metadata()["secret_note"]
    with RunReader(r["run_file"]) as rd:
        assert rd.n_tags() == 0
    out = analyze_file(raw, protocol="bbm92")
    assert out["secret"] and "SECRET raw detection data" in out["warning"] and out["sifted"]["Z"] > 0


def test_secret_files_are_0600_in_0700_directories_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)  # the widest umask: modes must not depend on it
    try:
        keys = tmp_path / "data" / "keys"
        KeyStore(keys / "alice.keys").append(np.ones(100, np.uint8))
        lab_authenticators(keys, "hmac")
        lab_authenticators(keys, "wegman-carter")
        from qlab.storage.runfile import RunFile

        with RunFile(tmp_path / "data" / "secret" / "raw.h5", taggers=["t"], secret=True) as f:
            f.finish()
    finally:
        os.umask(old)
    files = [keys / "alice.keys", keys / "auth" / "hmac.psk", keys / "auth" / "alice.wcpool",
             keys / "auth" / "bob.wcpool", tmp_path / "data" / "secret" / "raw.h5"]
    for p in files:
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
        assert stat.S_IMODE(p.parent.stat().st_mode) == 0o700, p.parent
    assert not list((keys / "auth").glob("*.tmp"))


# -- fresh randomness ----------------------------------------------------------------------------------------
def test_same_simulation_seed_gives_unrelated_keys(make_lab) -> None:
    chunks, keys = [], []
    for _ in range(2):
        lab = _lab(make_lab, seed=153)
        lab["pump"].set_output(True)
        chunks.append(lab["tagger"].acquire(3.0))
        roles = {role: ch for role, (_, ch) in lab.roles().items()}
        stats, ka, kb = distill(chunks[-1], roles, QkdParams(), 3.0)
        assert not stats["aborted"] and np.array_equal(ka, kb), stats["abort_reason"]
        keys.append(ka)
    assert np.array_equal(chunks[0].timestamps, chunks[1].timestamps)  # the same physics
    n = min(k.size for k in keys)
    assert n > 1000 and abs(np.mean(keys[0][:n] != keys[1][:n]) - 0.5) < 0.05  # unrelated keys


def test_qkd_procedure_has_no_protocol_seed() -> None:
    assert "seed" not in QkdProcedure.params and not hasattr(QkdParams(), "seed")
    with pytest.raises(QlabError, match="unknown parameter"):
        QkdProcedure(seed=1)


# -- authenticated sessions ----------------------------------------------------------------------------------
def _assert_no_key(alice, bob, sinks: _Sinks) -> None:
    assert alice.stats.aborted and bob.stats.aborted
    assert alice.key is None and bob.key is None
    assert sinks.stored == {"alice": [], "bob": []}


class _AttackPipe(QueuePipe):
    """Bob's end of the pipe with a man in the middle: ``edit(i, frame, sent)`` returns the frames delivered
    in place of Bob's i-th frame."""

    def __init__(self, inbox, outbox, edit):
        super().__init__(inbox, outbox, timeout_s=5.0)
        self.edit, self.sent = edit, []

    def send_frame(self, frame: bytes) -> None:
        self.sent.append(frame)
        for f in self.edit(len(self.sent) - 1, frame, self.sent):
            self.outbox.put(f)


def _run_attacked(auths, edit, sinks: _Sinks):
    import threading

    pa, pb = QueuePipe.pair(timeout_s=5.0)
    bob_pipe = _AttackPipe(pb.inbox, pb.outbox, edit)
    ta, pta, tb, ptb = _clicks()
    alice = Alice(ta, pta, AuthenticatedChannel(pa, auths[0], "alice"), PARAMS)
    bob = Bob(tb, ptb, AuthenticatedChannel(bob_pipe, auths[1], "bob"), PARAMS)
    alice.key_sink, bob.key_sink = sinks.pair()
    th = threading.Thread(target=alice.run, daemon=True)
    th.start()
    bob.run()
    th.join(30)
    return alice, bob, bob_pipe.sent


# Bob's frames: 0 hello, 1 clicks, 2 test bits, 3 sample bits, 4 Cascade start, 5 first Cascade request.
ATTACKS = {
    "tamper": (3, lambda i, f, sent, old: [f[:len(f) // 2] + bytes([f[len(f) // 2] ^ 1]) + f[len(f) // 2 + 1:]]),
    "replay_same": (2, lambda i, f, sent, old: [f, f]),
    "replay_earlier": (3, lambda i, f, sent, old: [old[i]]),
    "reorder": (4, None),
    "truncate": (3, lambda i, f, sent, old: [f[:-3]]),
    "drop": (4, lambda i, f, sent, old: []),
    "tamper_in_cascade": (5, lambda i, f, sent, old: [f[:-1] + bytes([f[-1] ^ 1])]),
}


@pytest.mark.parametrize("mode", ["hmac", "wegman-carter"])
@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_attacks_on_the_channel_abort_with_no_key(tmp_path: Path, mode: str, attack: str) -> None:
    def auths():
        return (b"k" * 32, b"k" * 32) if mode == "hmac" else _wc_auths(tmp_path)

    honest = _Sinks()
    alice, bob, earlier = _run_attacked(auths(), lambda i, f, sent: [f], honest)  # an earlier, honest session
    assert alice.key is not None and np.array_equal(alice.key, bob.key) and honest.stored["bob"]
    target, edit = ATTACKS[attack]

    def man_in_the_middle(i: int, frame: bytes, sent: list[bytes]) -> list[bytes]:
        if attack == "reorder":  # hold frame `target`, deliver it after the next one
            return [] if i == target else [frame, sent[target]] if i == target + 1 else [frame]
        return edit(i, frame, sent, earlier) if i == target else [frame]

    sinks = _Sinks()
    alice, bob, _ = _run_attacked(auths(), man_in_the_middle, sinks)
    _assert_no_key(alice, bob, sinks)
    reasons = alice.stats.abort_reason + " | " + bob.stats.abort_reason
    if attack != "tamper_in_cascade":  # inside a deferred Wegman–Carter section a garbled request may fail first
        assert "authentication" in reasons, reasons


def test_a_message_of_an_earlier_session_is_rejected_by_the_channel() -> None:
    def session():
        pa, pb = QueuePipe.pair(timeout_s=2)
        a, b = AuthenticatedChannel(pa, b"k" * 32, "alice"), AuthenticatedChannel(pb, b"k" * 32, "bob")
        a.send_hello()
        b.open()
        a.open()
        return a, b, pb

    a1, b1, pb1 = session()
    a1.send("x", {"v": 1})
    old = pb1.inbox.get()
    a2, b2, pb2 = session()
    pb2.inbox.put(old)  # sequence 0 in both sessions: only the nonces tell them apart
    with pytest.raises(AuthenticationError, match="authentication failed"):
        b2.recv("x")


def test_wegman_carter_consumption_per_block_matches_the_tags_sent(tmp_path: Path) -> None:
    auths = _wc_auths(tmp_path, pads=64)
    before = {r: AuthKeyPool(tmp_path / "auth" / f"{r}.wcpool") for r in ("alice", "bob")}
    sinks = _Sinks()
    alice, bob = _run(auths, sinks=sinks)
    assert not alice.stats.aborted and alice.key is not None and np.array_equal(alice.key, bob.key)
    tags_a, tags_b = alice.ch.auth.tags_sent, bob.ch.auth.tags_sent
    assert tags_a == bob.ch.auth.tags_checked and tags_b == alice.ch.auth.tags_checked
    consumed = 8 * PAD_BYTES * (tags_a + tags_b)
    assert alice.stats.auth_consumed_bits == bob.stats.auth_consumed_bits == consumed
    assert alice.ch.auth.consumed_bits + bob.ch.auth.consumed_bits == consumed
    # Cascade is one deferred section: a handful of tags per block, not one per parity round trip.
    assert 5 <= tags_a + tags_b <= 30 < alice.ch.messages_sent + bob.ch.messages_sent
    # The net key is the secret key minus what refilled the pads; the stores get the net key.
    assert alice.stats.net_secret_bits == alice.stats.secret_bits - consumed == sinks.stored["alice"][0].size
    for r in ("alice", "bob"):
        after = AuthKeyPool(tmp_path / "auth" / f"{r}.wcpool")
        assert after.next["alice"] == before[r].next["alice"] + tags_a
        assert after.next["bob"] == before[r].next["bob"] + tags_b
        assert after.available_bits("alice") == before[r].available_bits("alice")  # refilled by what it spent
    # Both pools stay identical: the next session authenticates.
    alice2, bob2 = _run(_wc_auths(tmp_path))
    assert alice2.key is not None and np.array_equal(alice2.key, bob2.key)


def test_wegman_carter_pool_runs_out_cleanly(tmp_path: Path) -> None:
    sinks = _Sinks()
    alice, bob = _run(_wc_auths(tmp_path, pads=3), sinks=sinks)
    _assert_no_key(alice, bob, sinks)
    assert "no pad left" in alice.stats.abort_reason + bob.stats.abort_reason


# -- key confirmation ----------------------------------------------------------------------------------------
class _BobFailsAfterPa(Bob):
    def _confirm(self, final: np.ndarray) -> None:
        raise RuntimeError("Bob crashed after privacy amplification")


class _BobStoreFails(Bob):
    def _commit(self, key, block_id, refill) -> None:
        raise OSError("Bob's key store is full")


@pytest.mark.parametrize("bob_cls", [_BobFailsAfterPa, _BobStoreFails])
def test_bob_failing_after_pa_leaves_no_key_on_either_side(bob_cls) -> None:
    sinks = _Sinks()
    alice, bob = _run(b"k" * 32, bob_cls=bob_cls, sinks=sinks)
    assert alice.stats.verified and alice.stats.secret_bits > 0  # it got as far as privacy amplification
    _assert_no_key(alice, bob, sinks)
    assert "the other party aborted" in alice.stats.abort_reason


def test_committed_blocks_share_one_id_in_both_stores(make_lab) -> None:
    lab = _lab(make_lab, seed=154)
    r = RunEngine(lab).run(QkdProcedure(integration_s=2.0), record=False)
    (ida, ka), = KeyStore(r["key_stores"][0]).read()
    (idb, kb), = KeyStore(r["key_stores"][1]).read()
    assert r["confirmed"] and ida == idb and ida.hex() == r["block_id"] and np.array_equal(ka, kb)


# -- tolerated error rate ------------------------------------------------------------------------------------
def test_tolerated_error_rate_on_both_sides_of_the_threshold() -> None:
    data = _clicks(error=0.03, seed=10)
    below = _run(b"k" * 32, params=QkdParams(eps_sec=1e-6, eps_cor=1e-9, qber_tol=0.02), data=data)[0]
    assert below.stats.aborted and below.key is None and "QBER above the tolerated 2.0%" in below.stats.abort_reason
    p = QkdParams(eps_sec=1e-6, eps_cor=1e-9, qber_tol=0.05)
    alice, bob = _run(b"k" * 32, params=p, data=data)
    s = alice.stats
    assert not s.aborted and 0.02 < s.qber_x < 0.05 and np.array_equal(alice.key, bob.key)
    assert s.secret_bits == key_length(s.key_bits_in, s.sifted_x, 0.05, s.leaked_ec_bits + VERIFY_BITS, 1e-6, 1e-9)
    # The length depends on the tolerance, not on the observation.
    wider = _run(b"k" * 32, params=QkdParams(eps_sec=1e-6, eps_cor=1e-9, qber_tol=0.06), data=data)[0].stats
    assert wider.secret_bits < s.secret_bits


# -- squashing -----------------------------------------------------------------------------------------------
def test_squash_gives_multi_click_events_a_random_basis_and_bit() -> None:
    n = 20_000
    t = np.repeat(np.arange(n, dtype=np.int64) * 10_000, 2) + np.tile([0, 50], n)
    mixed = np.tile([0, 2], n).astype(np.uint8)  # H and D: both bases
    et, basis, bit, multi = squash(t, mixed, 1000)
    assert et.size == n and multi == n
    for x in (basis, bit):
        assert abs(x.mean() - 0.5) < 4 * math.sqrt(0.25 / n)
    same = np.tile([0, 1], n).astype(np.uint8)  # H and V: Z basis, random bit
    _, basis, bit, _ = squash(t, same, 1000)
    assert not basis.any() and abs(bit.mean() - 0.5) < 4 * math.sqrt(0.25 / n)
    _, basis2, bit2, _ = squash(t, same, 1000)
    assert not np.array_equal(bit, bit2)  # fresh private randomness, not a seed
    single = np.zeros(n, np.int64)
    et, basis, bit, multi = squash(t[::2], np.full(n, 3, np.uint8), 1000)
    assert multi == 0 and np.all(basis == 1) and np.all(bit == 1) and et.size == single.size


def test_bbm92_keeps_multi_click_events_and_counts_their_errors() -> None:
    ta, pa, tb, pb = _clicks(n=60_000, error=0.0, seed=11)
    rng = np.random.default_rng(12)
    extra = np.flatnonzero(rng.random(ta.size) < 0.1)  # 10 % of Alice's photons also fire her other basis
    ta2 = np.concatenate([ta, ta[extra] + 30])
    pa2 = np.concatenate([pa, ((pa[extra] // 2) ^ 1) * 2 + rng.integers(0, 2, extra.size).astype(np.uint8)])
    order = np.argsort(ta2, kind="stable")
    p = QkdParams(eps_sec=1e-6, eps_cor=1e-9, qber_tol=0.11)
    plain = _run(b"k" * 32, params=p, data=(ta, pa, tb, pb))[0].stats
    alice, _ = _run(b"k" * 32, params=p, data=(ta2[order], pa2[order], tb, pb))
    s = alice.stats
    assert 0 <= s.multi_click_events - extra.size <= 12  # plus a few random photons closer than the window
    # Multi-click events are sifted like any other (about as many sifted bits as without them) ...
    assert abs((s.sifted_x + s.sifted_z) - (plain.sifted_x + plain.sifted_z)) < 0.03 * (plain.sifted_x + plain.sifted_z)
    # ... and their random bits show in the error estimate: half the multi-click events that sift are errors.
    expected = 0.1 * 0.5 * 1.0  # fraction multi × P(random bit wrong); random basis sifts at the same rate
    assert abs(s.qber_x - expected) < 4 * math.sqrt(expected / s.sifted_x) + 0.005, s.qber_x


def test_bbm92_analysis_of_a_file_with_recorded_steps_uses_them(tmp_path) -> None:
    """A demo-like file: one step's tags recorded, a key step's tags withheld. Distillation reads the recorded
    tags (no refusal), and never sees the withheld ones."""
    from qlab.analysis.offline import analyze_file
    from qlab.storage.runfile import RunFile
    from qlab.types import TagChunk

    rng = np.random.default_rng(2)
    t = np.sort(rng.integers(0, 10**11, 40_000)).astype(np.int64)
    chunk = TagChunk(t, rng.integers(1, 9, t.size).astype(np.int16), 0, 10**11)
    path = tmp_path / "demo-like.h5"
    with RunFile(path, taggers=["tagger"], procedure="demo") as rf:
        rf.append_tags(chunk)
        rf.withhold_tags(TagChunk(t + 10**11, chunk.channels, 10**11, 2 * 10**11))
        rf.finish()
    out = analyze_file(path, protocol="bbm92")
    assert sum(out["singles"].values()) == t.size  # the recorded step only
