"""Measure a pair of KMEs on loopback: latency of enc_keys / dec_keys for 1 × 256-bit key with a real mutual-TLS
client (httpx, keep-alive and fresh connection per request) and delivered keys/s, over identical random blocks.

    python -m qlab.kme.bench [--requests N] [--json]

Wall-clock numbers depend on the disk (every reservation and delivery is fsync'd on both KMEs) and the CPU.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import ssl
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from qlab.kme.config import KmeConfig, PeerSettings, TlsFiles, cert_fingerprint
from qlab.kme.peer import load_psk
from qlab.kme.pki import init_pki
from qlab.kme.service import KmeService
from qlab.qkd.keystore import KeyStore
from qlab.transport.listen import free_port


def _pair(root: Path) -> tuple[KmeService, KmeService, Path]:
    pki = root / "pki"
    init_pki(pki, ["KME_A", "KME_B"], ["SAE_A", "SAE_B"])
    psk = pki / "kme-link.psk"
    load_psk(psk, create=True)
    blocks = [(os.urandom(16), np.frombuffer(os.urandom(1 << 20), np.uint8) & 1) for _ in range(2)]
    ports = [free_port() for _ in range(4)]
    svcs = []
    for i, (me, peer, sae, other) in enumerate((("KME_A", "KME_B", "SAE_A", "SAE_B"),
                                                ("KME_B", "KME_A", "SAE_B", "SAE_A"))):
        store = KeyStore(root / "keys" / f"{me}.keys")
        for block_id, bits in blocks:
            store.append(bits, block_id)
        cfg = KmeConfig(kme_id=me, peer_kme_id=peer, key_store=store.path, journal=root / "keys" / f"{me}.journal",
                        tls=TlsFiles(pki / "kme" / f"{me}.crt", pki / "kme" / f"{me}.key", pki / "ca.crt"),
                        saes={sae: cert_fingerprint(pki / "sae" / f"{sae}.crt")}, pairs={sae: [other]},
                        listen=("127.0.0.1", ports[i]),
                        peer=PeerSettings(("127.0.0.1", ports[2 + i]), ("127.0.0.1", ports[3 - i]), psk),
                        allocate_from_end=bool(i))
        svcs.append(KmeService(cfg).start())
    return svcs[0], svcs[1], pki


def sae_context(pki: Path, sae: str) -> ssl.SSLContext:
    """TLS context of SAE ``sae``: trusts the PKI's CA and presents the SAE's client certificate."""
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    ctx.load_cert_chain(pki / "sae" / f"{sae}.crt", pki / "sae" / f"{sae}.key")
    return ctx


def latency_ms(samples: list[float]) -> dict[str, float]:
    """Median and 95th percentile (ms) of request times in s, and how many."""
    s = sorted(samples)
    p95 = s[math.ceil(0.95 * (len(s) - 1))]  # rounded up: never below the median, even for a few samples
    return {"median_ms": round(1e3 * statistics.median(s), 2), "p95_ms": round(1e3 * p95, 2), "n": len(s)}


def key_pair_latencies(sa: httpx.Client, sb: httpx.Client, ua: str, ub: str, sae_a: str, sae_b: str,
                       requests: int) -> dict[str, Any]:
    """``requests`` rounds of one 256-bit key: ``enc_keys`` by SAE A at ``ua``, then ``dec_keys`` of its key_ID
    by SAE B at ``ub`` (kept-alive connections). Returns both latency summaries (ms) and the rounds per second.
    Raises AssertionError if the two SAEs get different keys, httpx.HTTPStatusError for a refused request."""
    enc, dec = [], []
    t_all = time.perf_counter()
    for _ in range(requests):
        t = time.perf_counter()
        r = sa.get(f"{ua}/{sae_b}/enc_keys", params={"number": 1, "size": 256})
        enc.append(time.perf_counter() - t)
        r.raise_for_status()
        kid = r.json()["keys"][0]["key_ID"]
        t = time.perf_counter()
        r2 = sb.get(f"{ub}/{sae_a}/dec_keys", params={"key_ID": kid})
        dec.append(time.perf_counter() - t)
        r2.raise_for_status()
        if r2.json()["keys"][0]["key"] != r.json()["keys"][0]["key"]:
            raise AssertionError("the two SAEs got different keys")
    return {"enc_keys_1x256_keepalive": latency_ms(enc), "dec_keys_1x256_keepalive": latency_ms(dec),
            "rounds_per_s": round(requests / (time.perf_counter() - t_all), 1)}


def run(requests: int = 200) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        a, b, pki = _pair(Path(tmp))
        try:
            ua = f"https://127.0.0.1:{a.https.address[1]}/api/v1/keys"
            ub = f"https://127.0.0.1:{b.https.address[1]}/api/v1/keys"
            ca, cb = sae_context(pki, "SAE_A"), sae_context(pki, "SAE_B")
            out: dict = {"requests": requests}
            with httpx.Client(verify=ca, timeout=30) as sa, httpx.Client(verify=cb, timeout=30) as sb:
                lat = key_pair_latencies(sa, sb, ua, ub, "SAE_A", "SAE_B", requests)
                out["keys_per_s_1_per_request_enc_and_dec"] = lat.pop("rounds_per_s")
                out.update(lat)
                t = time.perf_counter()
                n = max(1, requests // 10)
                for _ in range(n):
                    sa.get(f"{ua}/SAE_B/enc_keys", params={"number": 128, "size": 256}).raise_for_status()
                out["keys_per_s_enc_128_per_request"] = round(128 * n / (time.perf_counter() - t), 1)
            fresh = []
            for _ in range(max(1, requests // 4)):
                t = time.perf_counter()
                with httpx.Client(verify=ca, timeout=30) as sa:
                    sa.get(f"{ua}/SAE_B/enc_keys", params={"number": 1, "size": 256}).raise_for_status()
                fresh.append(time.perf_counter() - t)
            out["enc_keys_1x256_new_tls_connection"] = latency_ms(fresh)
            return out
        finally:
            a.stop()
            b.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    res = run(args.requests)
    print(json.dumps(res) if args.json else json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
