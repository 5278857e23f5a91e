"""The QKD post-processing pipeline from a tag stream: each party's clicks, both BBM92 parties, decoy BB84
from Bob's slotted clicks, and the statistics users see. Procedures (live labs) and offline analysis
(stored streams) both import it.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

from qlab.errors import QlabError
from qlab.qkd.bb84 import Bb84Alice, Bb84Bob, Choices
from qlab.qkd.bbm92 import PORTS, Auth, KeySink, QkdParams, run_in_process, run_parties
from qlab.qkd.decoy_bb84 import DecoySource
from qlab.types import TagChunk


def party_clicks(chunk: TagChunk, roles: dict[str, int], party: str) -> tuple[np.ndarray, np.ndarray]:
    """One party's own clicks: (times ps, ports 0..3 = H, V, D, A)."""
    lut = np.full(512, 255, np.uint8)
    for port, code in PORTS.items():
        role = f"{party}.{port}"
        if role not in roles:
            raise QlabError(f"BBM92 needs a detector with role {role}")
        lut[roles[role] + 256] = code
    ports = lut[chunk.channels.astype(np.int64) + 256]
    sel = ports != 255
    return chunk.timestamps[sel], ports[sel]


def block_stats(protocol: str, alice: Any, bob: Any, params: QkdParams, duration_s: float) -> dict[str, Any]:
    s = alice.stats
    aborted = s.aborted or bob.stats.aborted or alice.key is None or bob.key is None
    # Without a revealed Z sample (BB84 here) the Z error rate is the one error correction found.
    qber_z = s.qber_z if s.qber_z is not None else s.qber_z_corrected
    return {"protocol": protocol, "qber": {"Z": qber_z, "X": s.qber_x},
            "sifted_bits": s.sifted_z + s.sifted_x, "sifted": {"Z": s.sifted_z, "X": s.sifted_x},
            "secret_bits": 0 if aborted else s.secret_bits,
            "secret_key_rate_bps": (0 if aborted else s.secret_bits) / duration_s if duration_s > 0 else 0.0,
            "ec_efficiency": s.ec_efficiency, "leaked_ec_bits": s.leaked_ec_bits, "key_bits_in": s.key_bits_in,
            "qber_z_corrected": s.qber_z_corrected, "statistical_deviation": s.statistical_deviation,
            "eps_sec": params.eps_sec, "eps_cor": params.eps_cor, "aborted": aborted,
            "abort_reason": s.abort_reason or bob.stats.abort_reason, "verified": s.verified,
            "messages": s.messages, "duration_s": duration_s, **auth_stats(alice, bob, aborted, duration_s),
            "qber_tol": params.qber_tol,
            "multi_click_events": {"alice": alice.stats.multi_click_events, "bob": bob.stats.multi_click_events}}


def auth_stats(alice: Any, bob: Any, aborted: bool, duration_s: float) -> dict[str, Any]:
    """Authentication cost of the block: tags sent, key they consumed (Wegman–Carter pads, both directions),
    and the net key (committed bits left after refilling the pads) and its rate."""
    consumed = alice.ch.auth.consumed_bits + bob.ch.auth.consumed_bits
    net = 0 if aborted else alice.stats.net_secret_bits
    return {"auth": {"mode": alice.ch.auth.mode, "tags": alice.ch.auth.tags_sent + bob.ch.auth.tags_sent,
                     "consumed_bits": consumed},
            "net_secret_bits": net, "net_key_rate_bps": net / duration_s if duration_s > 0 else 0.0,
            "confirmed": bool(alice.stats.confirmed and bob.stats.confirmed), "block_id": alice.stats.block_id}


def distill(chunk: TagChunk, roles: dict[str, int], params: QkdParams, duration_s: float,
            auth_key: Auth | None = None, sinks: tuple[KeySink | None, KeySink | None] = (None, None),
            ) -> tuple[dict[str, Any], np.ndarray | None, np.ndarray | None]:
    """Run both BBM92 parties on ``chunk``. Returns (statistics for users, Alice's key, Bob's key); the keys
    are the committed ones (also handed to ``sinks``), None unless both parties confirmed.
    ``auth_key``: pre-shared HMAC key or (Alice's, Bob's) authenticators; default a fresh in-process key."""
    ta, pa = party_clicks(chunk, roles, "alice")
    tb, pb = party_clicks(chunk, roles, "bob")
    alice, bob = run_in_process(ta, pa, tb, pb, params, auth_key or os.urandom(32), sinks=sinks)
    stats = block_stats("bbm92", alice, bob, params, duration_s)
    return stats, (None if stats["aborted"] else alice.key), (None if stats["aborted"] else bob.key)


def distill_bb84(index: np.ndarray, basis: np.ndarray, bit: np.ndarray, choices: Choices, source: DecoySource,
                 n_pulses: int, params: QkdParams, duration_s: float, auth_key: Auth | None = None,
                 sinks: tuple[KeySink | None, KeySink | None] = (None, None),
                 ) -> tuple[dict[str, Any], np.ndarray | None, np.ndarray | None]:
    """Run both decoy-BB84 parties: Bob holds his clicks per pulse slot (``index``, ``basis``, ``bit``, from
    ``pulse_slots``), Alice only ``choices`` (pulse indices -> her basis, bit, intensity class). ``n_pulses``
    pulses were sent over ``duration_s`` s. Returns (statistics for users, Alice's key, Bob's key); the keys
    are the committed ones (also handed to ``sinks``), None unless both parties confirmed."""
    p = dataclasses.replace(params, sample_fraction=0.0)  # QBER_Z comes from Cascade; no Z sample
    alice, bob = run_parties(
        lambda ch: Bb84Alice(choices, source.intensities, source.probabilities, ch, p),
        lambda ch: Bb84Bob(index, basis, bit, ch, p), auth_key or os.urandom(32), sinks=sinks)
    stats = block_stats("bb84", alice, bob, params, duration_s)
    b = alice.bounds
    stats.update({"pulses": n_pulses, "clicks": int(np.asarray(index).size), "intensities": list(source.intensities),
                  "probabilities": list(source.probabilities), "rep_rate_hz": source.rep_rate_hz,
                  "decoy": None if b is None else {"s_z0": b.s_z0, "s_z1": b.s_z1, "s_x1": b.s_x1,
                                                   "v_x1": b.v_x1, "phi_z": b.phi_z,
                                                   "n_z": list(alice.counts.n_z), "n_x": list(alice.counts.n_x),
                                                   "m_x": list(alice.counts.m_x)},
                  "secret_bits_per_pulse": stats["secret_bits"] / n_pulses if n_pulses else 0.0})
    return stats, (None if stats["aborted"] else alice.key), (None if stats["aborted"] else bob.key)
