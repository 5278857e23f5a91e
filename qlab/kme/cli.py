"""``qlab pki init DIR`` and ``qlab kme serve KME_YAML``: registered on qlab's parser by ``add_kme_commands``.
The KME stack (FastAPI, uvicorn, cryptography) is imported only when one of these commands runs."""

from __future__ import annotations

import argparse
import json
import signal
import threading
from typing import Any

from qlab.errors import QlabError


def add_kme_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    pk = sub.add_parser("pki", parents=[common], help="certificates for KMEs and SAEs")
    psub = pk.add_subparsers(dest="pki_command", required=True)
    pi = psub.add_parser("init", parents=[common], help="create (or complete) a CA and KME/SAE certificates")
    pi.add_argument("dir", help="output directory (made 0700; private keys 0600)")
    pi.add_argument("--network", metavar="NETWORK_YAML", help="take KME and SAE names from a network description")
    pi.add_argument("--kme", action="append", default=[], metavar="NAME", help="a KME (server certificate)")
    pi.add_argument("--sae", action="append", default=[], metavar="NAME", help="an SAE (client certificate)")
    pi.set_defaults(fn=cmd_pki_init)

    k = sub.add_parser("kme", parents=[common], help="ETSI GS QKD 014 key management entity")
    ksub = k.add_subparsers(dest="kme_command", required=True)
    ks = ksub.add_parser("serve", parents=[common], help="serve one KME over an existing key store (mutual TLS)")
    ks.add_argument("kme_config", help="the KME's YAML file (see qlab/kme/config.py)")
    ks.add_argument("--duration-s", type=float, help="stop after this many seconds (default: until Ctrl-C)")
    ks.set_defaults(fn=cmd_kme_serve)


def cmd_pki_init(args: argparse.Namespace) -> int:
    from pathlib import Path

    from qlab.kme.peer import load_psk
    from qlab.kme.pki import init_pki, names_from_network

    kmes, saes = list(args.kme), list(args.sae)
    if args.network:
        nk, ns = names_from_network(args.network)
        kmes += [n for n in nk if n not in kmes]
        saes += [n for n in ns if n not in saes]
    if not kmes and not saes:
        raise QlabError("name the KMEs and SAEs: --network NETWORK_YAML or --kme NAME ... --sae NAME ...")
    result = init_pki(args.dir, kmes, saes)
    psk = Path(result.root) / "kme-link.psk"
    load_psk(psk, create=True)  # the two KMEs' pre-shared link key (copy it to both KMEs)
    out = {"dir": str(result.root), "kmes": kmes, "saes": saes, "created": [str(p) for p in result.created],
           "kept": [str(p) for p in result.kept], "kme_link_psk": str(psk)}
    if args.json:
        print(json.dumps(out))
    else:
        print(f"PKI in {result.root}: {len(result.created)} certificate(s) issued, {len(result.kept)} kept")
        for p in result.created:
            print(f"  new  {p}")
    return 0


def cmd_kme_serve(args: argparse.Namespace) -> int:
    from qlab.kme.config import config_dict, load_kme_config
    from qlab.kme.service import KmeService

    cfg = load_kme_config(args.kme_config)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    svc = KmeService(cfg).start()
    try:
        info = {**config_dict(cfg), "listen": f"{svc.https.address[0]}:{svc.https.address[1]}", "ready": True}
        print(json.dumps(info) if args.json else f"KME {cfg.kme_id} serving ETSI GS QKD 014 on "
                                                  f"https://{info['listen']}/api/v1/keys/ (Ctrl-C stops)", flush=True)
        stop.wait(args.duration_s)
    finally:
        svc.stop()
    return 0
