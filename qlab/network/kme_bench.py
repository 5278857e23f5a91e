"""Measure key delivery on the network demo: emulator + two node processes with their KMEs (default key
management settings unless overridden), SAEs as real mutual-TLS httpx clients.

    python -m qlab.network.kme_bench [--config network.yaml] [--duration-s 120] [--requests 100] [--json]

Reports: enc_keys / dec_keys latency for 1 × 256-bit key (keep-alive connection, and a new TLS connection per
request), the KMEs' request capacity in keys/s while key is available, the link's net secret key rate, and the
sustained delivery rate when an SAE keeps asking for 1 × 256-bit keys: it cannot exceed the net key rate / 256
(plus what was stored before), whatever the KME's capacity. Wall-clock numbers depend on CPU and disk (every
reservation and delivery is fsync'd on both nodes).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from qlab.kme.bench import key_pair_latencies, latency_ms, sae_context
from qlab.network.kme_node import ensure_pki
from qlab.network.launcher import NetworkProcesses, prepare_config


def run(config: Path, duration_s: float = 120.0, requests: int = 100,
        overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Start the network, wait for a first deliverable block, measure, stop. Raises QlabError on start failure."""
    with tempfile.TemporaryDirectory(prefix="qlab-kme-bench-") as tmp:
        work = Path(tmp)
        cfg = prepare_config(config, work, overrides)
        with NetworkProcesses(cfg, work) as net:
            desc = net.desc
            pki = ensure_pki(desc)
            assert pki is not None
            a, b = desc.node_by_role("alice"), desc.node_by_role("bob")
            ka, kb = desc.config.nodes[a].kme, desc.config.nodes[b].kme
            sae_a, sae_b = next(iter(ka.saes)), next(iter(kb.saes))
            ua, ub = f"https://{ka.listen}/api/v1/keys", f"https://{kb.listen}/api/v1/keys"
            net.start_emulator()
            t0 = time.monotonic()
            net.start_node(a, kme=True)
            net.start_node(b, kme=True)
            out: dict[str, Any] = {"requests": requests, "block_duration_s":
                                   desc.config.key_management.block_duration_s}
            with httpx.Client(verify=sae_context(pki, ka.saes[sae_a]), timeout=30) as sa, \
                    httpx.Client(verify=sae_context(pki, kb.saes[sae_b]), timeout=30) as sb:

                def stored() -> int:
                    try:
                        r = sa.get(f"{ua}/{sae_b}/status", timeout=3)
                    except httpx.TransportError:
                        return 0
                    return int(r.json()["stored_key_count"]) if r.status_code == 200 else 0

                net.wait_for(lambda: stored() >= requests + 10, duration_s, "a deliverable block")
                out["first_deliverable_after_s"] = round(time.monotonic() - t0, 1)
                lat = key_pair_latencies(sa, sb, ua, ub, sae_a, sae_b, requests)
                out["kme_capacity_keys_per_s_enc_and_dec"] = lat.pop("rounds_per_s")
                out.update(lat)
                fresh = []
                for _ in range(max(1, requests // 5)):
                    t1 = time.perf_counter()
                    with httpx.Client(verify=sae_context(pki, ka.saes[sae_a]), timeout=30) as c:
                        c.get(f"{ua}/{sae_b}/enc_keys", params={"number": 1, "size": 256}).raise_for_status()
                    fresh.append(time.perf_counter() - t1)
                out["enc_keys_1x256_new_tls_connection"] = latency_ms(fresh)
                # sustained: drain the store, then keep asking for the rest of the run
                delivered, refused = 0, 0
                t_start = time.monotonic()
                bits0 = sum(x["bits"] for x in (net.status(a) or {}).get("store", []))
                stored0 = stored()
                while time.monotonic() - t0 < duration_s:
                    r = sa.get(f"{ua}/{sae_b}/enc_keys", params={"number": 1, "size": 256})
                    if r.status_code == 200:
                        delivered += 1
                    else:
                        refused += 1
                        time.sleep(0.05)
                span = time.monotonic() - t_start
                bits1 = sum(x["bits"] for x in (net.status(a) or {}).get("store", []))
                out["sustained"] = {"seconds": round(span, 1), "keys_stored_at_start": stored0,
                                    "keys_delivered": delivered, "requests_refused_503": refused,
                                    "delivered_keys_per_s": round(delivered / span, 2),
                                    "net_key_bits_committed_meanwhile": bits1 - bits0,
                                    "net_key_rate_bps_meanwhile": round((bits1 - bits0) / span, 1),
                                    "bound_keys_per_s": round((stored0 * 256 + bits1 - bits0) / 256 / span, 2)}
            st = net.status(a) or {}
            bits = sum(x["bits"] for x in st.get("store", []))
            out["net_secret_key_rate_bps"] = round(bits / (time.time() - st.get("started_at", time.time())), 1)
            out["net_key_rate_in_256_bit_keys_per_s"] = round(out["net_secret_key_rate_bps"] / 256, 2)
            return out


def main() -> None:
    from qlab.network.cli import default_network_config

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config")
    ap.add_argument("--duration-s", type=float, default=120.0)
    ap.add_argument("--requests", type=int, default=100)
    ap.add_argument("--block-duration-s", type=float, help="override key_management.block_duration_s")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    overrides = {"key_management": {"block_duration_s": args.block_duration_s}} if args.block_duration_s else None
    res = run(default_network_config(args.config), args.duration_s, args.requests, overrides)
    print(json.dumps(res) if args.json else json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
