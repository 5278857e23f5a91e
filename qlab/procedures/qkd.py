"""`qkd`: BBM92 key distillation from a timestamp stream on the lab, or decoy-state BB84 on the simulated
lab's weak-coherent transmitter; both parties in this process.

Keys go to owner-only key stores under the data directory (only after both parties confirmed the block),
never to the run file or the log. The run file keeps statistics (QBER, lengths, leaked bits, ε, rates,
authentication cost) and no raw detection data: anyone holding a key run's tags could rebuild the key.
``keep_raw`` writes them to a separate owner-only file under ``<data>/secret/``, marked secret. The channel's
PLOB bound is simulation truth: the run engine records it under ``simulation_truth``, not in these results.

Restores: BBM92 puts the analyzer angles and the laser state back after acquiring; BB84 moves nothing (its
transmitter exists only in the simulated lab and is reached through ``lab.simulation_service``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from qlab.errors import QlabError
from qlab.lab import Lab
from qlab.procedures.engine import Param, Procedure, RunContext
from qlab.procedures.measure import integrate, light_on
from qlab.procedures.restore import restoring
from qlab.procedures.visibility import set_analyzers
from qlab.qkd.bbm92 import Auth, KeySink, QkdParams
from qlab.qkd.decoy_bb84 import PORT_BASIS_BIT, DecoySource, alice_choices, pulse_slots
from qlab.qkd.keystore import AUTH_MODES, KeyStore, lab_authenticators
from qlab.qkd.pipeline import distill, distill_bb84
from qlab.storage.runfile import RunFile
from qlab.types import TagChunk


def bob_receiver(lab: Lab) -> tuple[dict[int, str], dict[int, int], float]:
    """Bob's BB84 receiver from the lab config: (tagger input -> port H/V/D/A, tagger input -> cable delay ps,
    largest detector jitter ps). Delays and jitter are the detector entries' ``cable_delay_ps`` and
    ``jitter_ps``: the delays calibration measures skews against Alice's reference detector, not against
    the transmitter's pulse clock, so it cannot place Bob's clicks in pulse slots."""
    ports: dict[int, str] = {}
    delays: dict[int, int] = {}
    jitter = 0.0
    for name, inst in lab.config.instruments.items():
        if inst.channel is None or not inst.channel.role.startswith("bob."):
            continue
        port = inst.channel.role.split(".", 1)[1]
        if port in PORT_BASIS_BIT:
            params = lab.loaded.sim_params.get(name)
            ports[inst.channel.input] = port
            delays[inst.channel.input] = int(getattr(params, "cable_delay_ps", 0))
            jitter = max(jitter, float(getattr(params, "jitter_ps", 0.0)))
    return ports, delays, jitter


def run_bb84(lab: Lab, source: DecoySource, duration_s: float, params: QkdParams,
             auth_key: Auth | None = None, private_seed: int | None = None,
             sinks: tuple[KeySink | None, KeySink | None] = (None, None),
             progress: Callable[[float, str], None] | None = None,
             ) -> tuple[dict[str, Any], np.ndarray | None, np.ndarray | None]:
    """Decoy BB84 over ``duration_s`` s of pulses from the lab's decoy-state transmitter (which exists only
    in the simulated lab: ``lab.simulation_service("bb84_transmitter")``): Bob's tags slotted to pulses,
    Alice's choices recomputed from her transmitter's QRNG key, then ``distill_bb84``.

    The private randomness (Alice's QRNG key, the channel, Bob's squashing coins) is fresh from the OS
    unless ``private_seed`` is given, which tests do to be reproducible; public randomness is always fresh.
    Raises QlabError on hardware, without Bob's four detectors, or when the pulse period is too short for
    the detector jitter. ``progress(fraction, message)`` is told as each stage starts."""
    report = progress or (lambda fraction, message: None)
    transmitter = lab.simulation_service("bb84_transmitter")
    ports, delays, jitter = bob_receiver(lab)
    if source.period_ps < 10 * jitter:
        raise QlabError(f"pulse period {source.period_ps} ps is too short for {jitter:.0f} ps detector jitter "
                        "to assign clicks to pulses; lower rep_rate_hz")
    private = np.random.SeedSequence(private_seed)
    alice_seq, channel_seq = private.spawn(2)
    alice_key = int.from_bytes(alice_seq.generate_state(4, np.uint32).tobytes(), "little")  # 128 bits
    report(0.05, f"transmitting {duration_s:g} s of decoy-state pulses")
    chunk, _, n_pulses = transmitter.transmit(source, alice_key, duration_s, seed=channel_seq)
    report(0.45, f"assigning {len(chunk):,} clicks to {n_pulses:,} pulses")
    index, basis, bit = pulse_slots(chunk, ports, delays, source.period_ps)
    report(0.55, "sifting, decoy estimation, error correction, privacy amplification")
    return distill_bb84(index, basis, bit, lambda idx: alice_choices(alice_key, source, idx), source, n_pulses,
                        params, duration_s, auth_key, sinks)


class QkdProcedure(Procedure):
    name = "qkd"
    title = "QKD key distillation"
    params = {
        "protocol": Param("bbm92", "", "bbm92 (entanglement, passive basis choice) or bb84 (decoy states)"),
        "integration_s": Param(10.0, "s", "acquisition time of one key block", 0.1, 3600),
        "eps_sec": Param(1e-10, "", "secrecy parameter", 1e-20, 1e-3),
        "eps_cor": Param(1e-15, "", "correctness parameter", 1e-20, 1e-3),
        "qber_tol": Param(0.08, "", "tolerated error rate, fixed before the run: a block whose QBER estimate "
                          "exceeds it aborts; the key length assumes it", 0.0, 0.11),
        "store_keys": Param(True, "", "append final keys to the owner-only key stores"),
        "auth": Param("hmac", "", "classical-channel authentication: hmac (pre-shared key, lab mode) or "
                      "wegman-carter (consumes key, subtracted from the net key rate)"),
        "keep_raw": Param(False, "", "bbm92: also write the raw tags to a separate owner-only secret file"),
        "rep_rate_hz": Param(10e6, "Hz", "bb84: pulse repetition rate of the transmitter", 1e3, 1e10),
        "mu_signal": Param(0.5, "", "bb84: mean photon number of signal pulses", 0.0, 5.0),
        "mu_decoy": Param(0.1, "", "bb84: mean photon number of decoy pulses", 0.0, 5.0),
        "mu_weak": Param(0.0002, "", "bb84: mean photon number of the weak decoy", 0.0, 5.0),
        "misalignment": Param(0.01, "", "bb84: simulated optical misalignment error", 0.0, 0.5),
    }

    def execute(self, ctx: RunContext) -> dict[str, Any]:
        if self.auth not in AUTH_MODES:
            raise QlabError(f"qkd: unknown auth {self.auth!r}; expected one of {', '.join(AUTH_MODES)}")
        if self.protocol == "bb84":
            return self._bb84(ctx)
        if self.protocol != "bbm92":
            raise QlabError(f"unknown protocol {self.protocol!r}; expected bbm92 or bb84")
        lab = ctx.lab
        with restoring(lab):
            light_on(lab)
            set_analyzers(lab, 0.0, 0.0)
            ctx.progress(0.05, "acquiring")
            m = integrate(ctx, self.integration_s, secret=True)
        raw_file = self._write_raw(ctx, m.chunk) if self.keep_raw else None
        ctx.progress(0.6, "sifting, estimation, error correction, privacy amplification")
        params = QkdParams(window_ps=lab.config.analysis.window_ps, eps_sec=self.eps_sec, eps_cor=self.eps_cor,
                           qber_tol=self.qber_tol)
        stats, key_a, key_b = self._distill_and_store(
            lab, lambda auth, sinks: distill(m.chunk, m.roles, params, m.result.exposure_s, auth, sinks))
        if raw_file is not None:
            stats["raw_file"] = str(raw_file)
        return stats

    def _write_raw(self, ctx: RunContext, chunk: TagChunk) -> Path:
        """The key run's tags, in a separate owner-only run file marked secret (``keep_raw``)."""
        stem = ctx.runfile.path.stem if ctx.runfile is not None else time.strftime("%Y%m%d-%H%M%S")
        base = ctx.lab.data_dir / "secret"
        path, i = base / f"{stem}-qkd-raw.h5", 1
        while path.exists():
            path, i = base / f"{stem}-qkd-raw-{i}.h5", i + 1
        tagger = ctx.lab.names("tagger")[0]
        with RunFile(path, taggers=[tagger], procedure="qkd-raw", parameters=self.values,
                     config_text=ctx.lab.loaded.text, config_path=ctx.lab.loaded.path,
                     description="qlab SECRET raw data of a QKD key run", secret=True) as raw:
            raw.append_tags(chunk, tagger)
            raw.finish()
        return path

    def _bb84(self, ctx: RunContext) -> dict[str, Any]:
        lab = ctx.lab
        if not lab.simulated:
            raise QlabError("BB84 needs a decoy-state transmitter; qlab has one only in the simulated lab "
                            "(backend: sim)")
        try:
            source = DecoySource(rep_rate_hz=float(self.rep_rate_hz),
                                 intensities=(float(self.mu_signal), float(self.mu_decoy), float(self.mu_weak)),
                                 misalignment=float(self.misalignment))
        except ValueError as exc:
            raise QlabError(f"qkd --protocol bb84: {exc}") from None
        params = QkdParams(eps_sec=self.eps_sec, eps_cor=self.eps_cor, qber_tol=self.qber_tol)
        stats, _, _ = self._distill_and_store(
            lab, lambda auth, sinks: run_bb84(lab, source, float(self.integration_s), params, auth, sinks=sinks,
                                              progress=ctx.progress))
        ctx.note_acquisition()  # the simulation's truth now includes the transmitter's channel
        return stats

    def _distill_and_store(self, lab: Lab, run: Any) -> tuple[dict[str, Any], np.ndarray | None, np.ndarray | None]:
        """Run both parties with the lab's authenticators; each party's key store receives the block through
        its sink only after both confirmed it, under the block id both agreed on."""
        kdir = lab.data_dir / "keys"
        auth_a, auth_b, provisioned = lab_authenticators(kdir, self.auth)
        sinks: tuple[KeySink | None, KeySink | None] = (None, None)
        if self.store_keys:
            sinks = (lambda bits, block_id: KeyStore(kdir / "alice.keys").append(bits, block_id),
                     lambda bits, block_id: KeyStore(kdir / "bob.keys").append(bits, block_id))
        stats, key_a, key_b = run((auth_a, auth_b), sinks)
        stats["auth"]["provisioned_now"] = provisioned
        if key_a is not None:
            stats["keys_identical"] = bool(np.array_equal(key_a, key_b))
            if self.store_keys:
                stats["key_id"] = stats["block_id"]
                stats["key_stores"] = [str(kdir / "alice.keys"), str(kdir / "bob.keys")]
        return stats, key_a, key_b

    def summary(self, r: dict[str, Any]) -> str:
        q = r["qber"]
        fmt = lambda x: "—" if x is None else f"{100 * x:.2f} %"  # noqa: E731
        head = f"QBER Z {fmt(q['Z'])}, X {fmt(q['X'])}; sifted {r['sifted_bits']} bits; "
        if r["aborted"]:
            return head + f"ABORTED ({r['abort_reason']}): no key"
        net = ""
        if r.get("auth", {}).get("consumed_bits"):
            net = (f", net {r['net_secret_bits']} bits ({r['net_key_rate_bps']:.0f} bit/s) after "
                   f"{r['auth']['consumed_bits']} bits of Wegman–Carter key")
        eff = "—" if r["ec_efficiency"] is None else f"{r['ec_efficiency']:.3f}"
        return head + (f"secret {r['secret_bits']} bits ({r['secret_key_rate_bps']:.0f} bit/s){net}, "
                       f"EC efficiency {eff}")

