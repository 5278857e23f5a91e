"""Shared pieces of the KME tests: a PKI, two KME configurations on loopback, SAE clients, identical stores."""

from __future__ import annotations

import os
import socket
import ssl
from pathlib import Path

import httpx
import numpy as np
import yaml

from qlab.kme.peer import load_psk
from qlab.qkd.keystore import KeyStore
from qlab.transport.listen import free_port


def sae_client(pki: Path, sae: str, timeout_s: float = 15.0) -> httpx.Client:
    """An httpx client authenticated by the SAE's certificate, trusting only the test CA."""
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    ctx.load_cert_chain(pki / "sae" / f"{sae}.crt", pki / "sae" / f"{sae}.key")
    return httpx.Client(verify=ctx, timeout=timeout_s)


def raw_tls_get(port: int, ctx: ssl.SSLContext) -> bytes | Exception:
    """The first bytes a KME on loopback answers to a status GET over a TLS connection made with ``ctx``, or
    the exception the handshake or the read ended with."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
                ctx.wrap_socket(raw, server_hostname="localhost") as s:
            s.sendall(b"GET /api/v1/keys/SAE_B/status HTTP/1.1\r\nHost: localhost\r\n\r\n")
            return s.recv(100)
    except (ssl.SSLError, OSError) as exc:
        return exc


def fill_identical(stores: list[KeyStore], nblocks: int = 3, nbits: int = 2048) -> list[tuple[bytes, np.ndarray]]:
    """Write the same random blocks under the same ids to every store (as two nodes' commits would)."""
    blocks = [(os.urandom(16), np.frombuffer(os.urandom(nbits), np.uint8) & 1) for _ in range(nblocks)]
    for store in stores:
        for block_id, bits in blocks:
            store.append(bits, block_id)
    return blocks


def write_configs(tmp: Path, pki: Path) -> tuple[Path, Path]:
    """kme_a.yaml (SAE_A, allocates from the front) and kme_b.yaml (SAE_B, from the back) on free loopback
    ports, sharing the PKI's link key; key stores keys/a.keys and keys/b.keys."""
    psk = pki / "kme-link.psk"
    load_psk(psk, create=True)
    ha, hb, pa, pb = (free_port() for _ in range(4))
    out = []
    for me, peer, sae, other, store, http, listen, connect, from_end in (
            ("KME_A", "KME_B", "SAE_A", "SAE_B", "a", ha, pa, pb, False),
            ("KME_B", "KME_A", "SAE_B", "SAE_A", "b", hb, pb, pa, True)):
        cfg = {"kme_id": me, "peer_kme_id": peer, "key_store": str(tmp / "keys" / f"{store}.keys"),
               "listen": f"127.0.0.1:{http}",
               "tls": {"cert": str(pki / "kme" / f"{me}.crt"), "key": str(pki / "kme" / f"{me}.key"),
                       "ca": str(pki / "ca.crt")},
               "saes": {sae: str(pki / "sae" / f"{sae}.crt")}, "pairs": {sae: [other]},
               "peer": {"listen": f"127.0.0.1:{listen}", "connect": f"127.0.0.1:{connect}", "psk_file": str(psk),
                        "timeout_s": 5.0},
               "allocate_from_end": from_end, "max_key_per_request": 64}
        path = tmp / f"kme_{store}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        out.append(path)
    return out[0], out[1]
