"""Decoy-state BB84 on the simulated weak-coherent transmitter: the Lim et al. 2014 bound against true
yields, QBER against the detection model, key length against the formula, PLOB, abort on high error."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from qlab.procedures.engine import RunEngine
from qlab.procedures.qkd import QkdProcedure, run_bb84
from qlab.qkd.bbm92 import VERIFY_BITS, QkdParams
from qlab.qkd.decoy import DecoyCounts, decoy_key_length
from qlab.qkd.decoy_bb84 import DecoySource, alice_choices
from qlab.sim.wcp import WeakCoherentBB84


def test_decoy_bounds_bracket_the_true_single_photon_quantities() -> None:
    """Asymptotically large counts from the textbook channel model (yield Y_n = 1 − (1−η)^n + Y0)."""
    mu, p, eta, y0, ed, n, qz = (0.5, 0.1, 0.0002), (0.7, 0.15, 0.15), 0.1, 1e-6, 0.01, 1e11, 0.5

    def gain(m: float) -> float:
        return y0 + 1 - math.exp(-eta * m)

    def errors(m: float) -> float:
        return 0.5 * y0 + ed * (1 - math.exp(-eta * m))

    counts = DecoyCounts(mu, p, tuple(int(n * pk * qz * qz * gain(m)) for m, pk in zip(mu, p, strict=True)),
                         tuple(int(n * pk * (1 - qz) ** 2 * gain(m)) for m, pk in zip(mu, p, strict=True)),
                         tuple(int(n * pk * (1 - qz) ** 2 * errors(m)) for m, pk in zip(mu, p, strict=True)))
    ell, b = decoy_key_length(counts, 0, 1e-10, 1e-15)
    y1 = y0 + eta
    true_s1 = n * qz * qz * sum(pk * math.exp(-m) * m for m, pk in zip(mu, p, strict=True)) * y1
    e1 = (0.5 * y0 + ed * eta) / y1
    assert 0.9 * true_s1 < b.s_z1 <= true_s1  # a lower bound, and a tight one with a weak decoy
    assert e1 <= b.phi_z < e1 + 0.005  # an upper bound on the phase error
    assert 0 < ell < b.s_z1
    with pytest.raises(ValueError, match="μ1 > μ2 \\+ μ3"):
        decoy_key_length(DecoyCounts((0.1, 0.1, 0.0), p, (1, 1, 1), (1, 1, 1), (0, 0, 0)), 0, 1e-10, 1e-15)


def _expected_qber_x(tx: WeakCoherentBB84) -> float:
    """Error rate of sifted X events from the click model: 16 click patterns, squashing, intensities."""
    prob = tx.detection_probabilities()
    src = tx.source
    sifted = err = 0.0
    for k, pk in enumerate(src.probabilities):
        for v in (0, 1):
            pc = prob[1, v, k]  # Alice in X sending bit v: P(click) of H, V, D, A
            for pattern in itertools.product((0, 1), repeat=4):
                w = pk * 0.5 * np.prod([pc[j] if c else 1 - pc[j] for j, c in enumerate(pattern)])
                z_clicks, x_clicks = pattern[0] + pattern[1], pattern[2] + pattern[3]
                if z_clicks + x_clicks == 0:
                    continue
                if z_clicks and x_clicks:  # random basis, random bit
                    sifted += 0.5 * w
                    err += 0.25 * w
                elif x_clicks == 2:  # both X detectors: random bit
                    sifted += w
                    err += 0.5 * w
                elif x_clicks == 1:
                    sifted += w
                    err += w * (pattern[2 + (1 - v)] == 1)
    return err / sifted


def test_bb84_end_to_end_on_the_simulated_transmitter(make_lab) -> None:
    lab = make_lab(seed=84)
    source = DecoySource()
    params = QkdParams()
    stats, key_a, key_b = run_bb84(lab, source, 2.0, params, private_seed=11)
    assert not stats["aborted"] and stats["verified"], stats["abort_reason"]
    assert key_a is not None and np.array_equal(key_a, key_b) and key_a.size == stats["secret_bits"] > 10_000
    # QBER_X within 4σ of the detection model's prediction (misalignment plus squashed multi-clicks).
    tx = WeakCoherentBB84(lab.sim, source, 1, seed=0)
    q = _expected_qber_x(tx)
    n_x = stats["sifted"]["X"]
    assert abs(stats["qber"]["X"] - q) < 4 * math.sqrt(q * (1 - q) / n_x), (stats["qber"]["X"], q)
    assert 0.01 < q < 0.06
    # The key length is the Lim et al. bound evaluated on the measured counts and the bits EC revealed.
    d = stats["decoy"]
    counts = DecoyCounts(source.intensities, source.probabilities, tuple(d["n_z"]), tuple(d["n_x"]), tuple(d["m_x"]))
    ell, _ = decoy_key_length(counts, stats["leaked_ec_bits"] + VERIFY_BITS, params.eps_sec, params.eps_cor)
    assert stats["secret_bits"] == ell
    assert sum(d["n_z"]) == stats["sifted"]["Z"] and sum(d["n_x"]) == stats["sifted"]["X"]
    # Far below the repeaterless bound of the fibre, per pulse (simulation truth, reported by the simulation).
    plob_bits_per_pulse = lab.simulation_report()["bb84_transmitter"]["plob_bits_per_pulse"]
    assert 0 < stats["secret_bits_per_pulse"] < plob_bits_per_pulse


def test_alice_recomputes_her_choices_from_the_pulse_index() -> None:
    src = DecoySource(p_z=0.5)
    idx = np.arange(200_000, dtype=np.int64)
    basis, bit, cls = alice_choices(1234, src, idx)
    b2, v2, c2 = alice_choices(1234, src, idx[::-1])
    assert np.array_equal(basis[::-1], b2) and np.array_equal(bit[::-1], v2) and np.array_equal(cls[::-1], c2)
    some = np.array([150_001, 7, 99_999])  # random access gives the same choices as the full stream
    assert np.array_equal(alice_choices(1234, src, some)[1], bit[some])
    n = idx.size
    assert abs(basis.mean() - 0.5) < 4 * math.sqrt(0.25 / n) and abs(bit.mean() - 0.5) < 4 * math.sqrt(0.25 / n)
    for k, pk in enumerate(src.probabilities):
        assert abs(np.mean(cls == k) - pk) < 4 * math.sqrt(pk * (1 - pk) / n)
    assert not np.array_equal(alice_choices(1235, src, idx)[1], bit)  # a different key, different choices


def test_bb84_keys_are_fresh_and_fast_pulses_still_slot_correctly(make_lab) -> None:
    """Without a private seed every run draws new private randomness: same lab, same parameters, different
    keys. At 50 MHz the cable delays (15–19 ns) approach half a period; slotting removes them."""
    lab = make_lab(seed=86)
    source = DecoySource(rep_rate_hz=50e6)
    one, key_1, _ = run_bb84(lab, source, 0.5, QkdParams())
    two, key_2, _ = run_bb84(lab, source, 0.5, QkdParams())
    assert not one["aborted"] and not two["aborted"], (one["abort_reason"], two["abort_reason"])
    assert one["qber"]["X"] < 0.06 and two["qber"]["X"] < 0.06
    n = min(key_1.size, key_2.size)
    assert abs(np.mean(key_1[:n] != key_2[:n]) - 0.5) < 0.05  # unrelated keys


def test_bad_decoy_settings_are_refused_up_front(make_lab) -> None:
    from qlab.errors import QlabError

    lab = make_lab(seed=87)
    with pytest.raises(QlabError, match="μ1 > μ2 \\+ μ3"):
        RunEngine(lab).run(QkdProcedure(protocol="bb84", integration_s=0.2, mu_decoy=0.0, mu_weak=0.0,
                                        store_keys=False), record=False)


def test_bb84_aborts_when_misalignment_pushes_qber_over_threshold(make_lab) -> None:
    lab = make_lab(seed=85)
    r = RunEngine(lab).run(QkdProcedure(protocol="bb84", integration_s=0.5, misalignment=0.2, store_keys=False),
                           record=False)
    assert r["aborted"] and r["secret_bits"] == 0 and r["qber"]["X"] > 0.11
    assert "QBER above" in r["abort_reason"]


def test_a_failing_party_ends_the_session_for_both() -> None:
    """An exception inside one party is reported to the other as an abort, not a 30 s channel timeout."""
    from qlab.qkd.bb84 import Bb84Alice, Bb84Bob
    from qlab.qkd.bbm92 import run_parties

    def broken(index):
        raise ValueError("transmitter log unreadable")

    p = QkdParams(sample_fraction=0.0)
    idx = np.arange(10, dtype=np.int64)
    alice, bob = run_parties(lambda ch: Bb84Alice(broken, (0.5, 0.1, 0.0), (0.7, 0.15, 0.15), ch, p),
                             lambda ch: Bb84Bob(idx, idx % 2, idx % 2, ch, p), b"k" * 32)
    assert alice.stats.aborted and "ValueError: transmitter log unreadable" in alice.stats.abort_reason
    assert bob.stats.aborted and "the other party aborted: ValueError" in bob.stats.abort_reason
    assert alice.key is None and bob.key is None


def test_bb84_procedure_commits_one_block_to_both_stores_under_one_id(make_lab) -> None:
    """BB84 keys reach the key stores through the parties' commit sinks (after both confirmed), with
    Wegman-Carter authentication consuming key that is subtracted from the net rate."""
    from qlab.qkd.keystore import KeyStore

    lab = make_lab()
    r = RunEngine(lab).run(QkdProcedure(protocol="bb84", integration_s=2.0, auth="wegman-carter"), record=False)
    assert not r["aborted"], r["abort_reason"]
    assert r["confirmed"] and r["keys_identical"]
    kdir = lab.data_dir / "keys"
    (id_a, key_a), = KeyStore(kdir / "alice.keys").read()
    (id_b, key_b), = KeyStore(kdir / "bob.keys").read()
    assert id_a == id_b and r["key_id"] in (id_a, id_a.hex())
    assert np.array_equal(key_a, key_b) and key_a.size == r["net_secret_bits"]  # pads refilled first
    assert r["auth"]["consumed_bits"] > 0 and r["net_secret_bits"] == r["secret_bits"] - r["auth"]["consumed_bits"]


def test_pulse_slots_squash_as_bbm92_does() -> None:
    """One detector clicking twice in a slot keeps its basis and bit (as ``squash``); H and V together get a
    random bit in Z; H and D a random basis."""
    from qlab.qkd.decoy_bb84 import pulse_slots
    from qlab.types import TagChunk

    period = 10_000
    ports = {1: "H", 2: "V", 3: "D", 4: "A"}
    n = 400
    t = np.repeat(np.arange(n, dtype=np.int64) * period, 2) + np.tile([0, 100], n)
    c = np.tile(np.array([4, 4], np.int16), n)  # A twice in every slot
    index, basis, bit = pulse_slots(TagChunk(t, c, 0, n * period), ports, {}, period)
    assert index.tolist() == list(range(n)) and (basis == 1).all() and (bit == 1).all()
    c = np.tile(np.array([1, 2], np.int16), n)  # H and V: basis Z kept, bit random
    _, basis, bit = pulse_slots(TagChunk(t, c, 0, n * period), ports, {}, period)
    assert (basis == 0).all() and 0.35 < bit.mean() < 0.65  # 400 fair coins: 6 sigma
    c = np.tile(np.array([1, 3], np.int16), n)  # H and D: random basis
    _, basis, _ = pulse_slots(TagChunk(t, c, 0, n * period), ports, {}, period)
    assert 0.35 < basis.mean() < 0.65


def test_alice_choices_in_windows_equal_one_pass_over_the_whole_span() -> None:
    from qlab.qkd.decoy_bb84 import PHILOX_WINDOW, DecoySource, alice_choices

    rng = np.random.default_rng(5)
    idx = rng.integers(7, 3 * PHILOX_WINDOW + 11, 5000)  # unsorted, repeated, across four windows
    g = np.random.Philox(key=987654321)
    g.advance(0)
    raw = g.random_raw(int(idx.max()) + 1)[idx]  # every output from the start: the reference
    basis, bit, _ = alice_choices(987654321, DecoySource(), idx)
    assert np.array_equal(bit, ((raw >> np.uint64(24)) & np.uint64(1)).astype(np.uint8))
    u_basis = (raw & np.uint64(0xFFFFFF)).astype(np.float64) / 16777216.0
    assert np.array_equal(basis, (u_basis >= DecoySource().p_z).astype(np.uint8))
