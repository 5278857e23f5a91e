"""`qkd`: BBM92 key distillation from a timestamp stream on the lab, both parties in this process.

Keys go to owner-only key stores under the data directory, never to the run file or the log; the run file
keeps statistics (QBER, lengths, leaked bits, ε, rates).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from qlab.errors import NotBuiltError, QlabError
from qlab.instruments.tagger import TagChunk
from qlab.procedures.engine import Param, Procedure, RunContext
from qlab.procedures.measure import integrate, light_on
from qlab.procedures.visibility import set_analyzers
from qlab.qkd.bbm92 import PORTS, QkdParams, run_in_process
from qlab.qkd.finite_key import plob_bound
from qlab.qkd.keystore import KeyStore


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


def distill(chunk: TagChunk, roles: dict[str, int], params: QkdParams, duration_s: float,
            auth_key: bytes | None = None) -> tuple[dict[str, Any], np.ndarray | None, np.ndarray | None]:
    """Run both parties on ``chunk``. Returns (statistics for users, Alice's key, Bob's key)."""
    ta, pa = party_clicks(chunk, roles, "alice")
    tb, pb = party_clicks(chunk, roles, "bob")
    alice, bob = run_in_process(ta, pa, tb, pb, params, auth_key or os.urandom(32))
    s = alice.stats
    aborted = s.aborted or bob.stats.aborted or alice.key is None or bob.key is None
    stats = {"protocol": "bbm92", "qber": {"Z": s.qber_z, "X": s.qber_x},
             "sifted_bits": s.sifted_z + s.sifted_x, "sifted": {"Z": s.sifted_z, "X": s.sifted_x},
             "secret_bits": 0 if aborted else s.secret_bits,
             "secret_key_rate_bps": (0 if aborted else s.secret_bits) / duration_s if duration_s > 0 else 0.0,
             "ec_efficiency": s.ec_efficiency, "leaked_ec_bits": s.leaked_ec_bits, "key_bits_in": s.key_bits_in,
             "qber_z_corrected": s.qber_z_corrected, "statistical_deviation": s.statistical_deviation,
             "eps_sec": params.eps_sec, "eps_cor": params.eps_cor, "aborted": aborted,
             "abort_reason": s.abort_reason or bob.stats.abort_reason, "verified": s.verified,
             "messages": s.messages, "duration_s": duration_s}
    return stats, (None if aborted else alice.key), (None if aborted else bob.key)


class QkdProcedure(Procedure):
    name = "qkd"
    title = "QKD key distillation"
    params = {
        "protocol": Param("bbm92", "", "bbm92 (entanglement, passive basis choice) or bb84 (decoy states)"),
        "integration_s": Param(10.0, "s", "acquisition time of one key block", 0.1, 3600),
        "eps_sec": Param(1e-10, "", "secrecy parameter", 1e-20, 1e-3),
        "eps_cor": Param(1e-15, "", "correctness parameter", 1e-20, 1e-3),
        "store_keys": Param(True, "", "append final keys to the owner-only key stores"),
        "seed": Param(0, "", "seed of the public randomness (sampling, permutations, hashes)"),
    }

    def execute(self, ctx: RunContext) -> dict[str, Any]:
        if self.protocol == "bb84":
            raise NotBuiltError("BB84 with decoy states is not built yet (issue #8); use --protocol bbm92")
        if self.protocol != "bbm92":
            raise QlabError(f"unknown protocol {self.protocol!r}; expected bbm92 or bb84")
        lab = ctx.lab
        light_on(lab)
        set_analyzers(lab, 0.0, 0.0)
        ctx.progress(0.05, "acquiring")
        m = integrate(ctx, self.integration_s)
        ctx.progress(0.6, "sifting, estimation, error correction, privacy amplification")
        params = QkdParams(window_ps=lab.config.analysis.window_ps, eps_sec=self.eps_sec, eps_cor=self.eps_cor,
                           seed=int(self.seed))
        stats, key_a, key_b = distill(m.chunk, m.roles, params, m.result.exposure_s)
        if key_a is not None:
            stats["keys_identical"] = bool(np.array_equal(key_a, key_b))
            if self.store_keys:
                kdir = lab.data_dir / "keys"
                stats["key_id"] = KeyStore(kdir / "alice.keys").append(key_a).hex()
                KeyStore(kdir / "bob.keys").append(key_b)
                stats["key_stores"] = [str(kdir / "alice.keys"), str(kdir / "bob.keys")]
        if lab.sim is not None:
            stats["plob_bound_bps"] = _plob_rate(lab)
        return stats

    def summary(self, r: dict[str, Any]) -> str:
        q = r["qber"]
        fmt = lambda x: "—" if x is None else f"{100 * x:.2f} %"  # noqa: E731
        head = f"QBER Z {fmt(q['Z'])}, X {fmt(q['X'])}; sifted {r['sifted_bits']} bits; "
        if r["aborted"]:
            return head + f"ABORTED ({r['abort_reason']}): no key"
        return head + (f"secret {r['secret_bits']} bits ({r['secret_key_rate_bps']:.0f} bit/s), "
                       f"EC efficiency {r['ec_efficiency']:.3f}")


def _plob_rate(lab) -> float:
    """Repeaterless bound of the simulated channel: emitted pairs/s × -log2(1 - η_A η_B)."""
    sim = lab.sim
    eta = {}
    for party in ("alice", "bob"):
        dets = [d for d in sim.detectors.values() if d.party == party]
        eta[party] = sim.fibre_transmission[party] * float(np.mean([d.efficiency for d in dets]))
    return sim.pair_rate_hz() * plob_bound(eta["alice"] * eta["bob"])
