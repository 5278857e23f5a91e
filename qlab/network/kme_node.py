"""The ETSI GS QKD 014 KME a network node serves over its own link key store (``qlab node NAME --kme``).

What is deliverable: only blocks the node's ``LinkKeyStore`` marks ``paired`` (both nodes hold them: Alice
after Bob's acknowledgement, Bob after the next reconciliation). ``DeliverableStore`` gives the key manager
(qlab.kme.manager) that view: a master KME allocates from paired blocks only; a slave KME accepts the peer's
ranges in any block it holds (the master only names blocks it has paired, which means both hold them, and a
block held by both is never dropped). Wegman–Carter pad refills never reach the store (the BBM92 parties cut
them from the key's head before the key sink), so authentication bits are never delivered.

KME-to-KME messages travel on a second authenticated TCP connection between the nodes (``PeerServer`` on
``kme.peer_listen``, ``TcpPeerLink`` to the peer's), not multiplexed into the QKD session: the link session is
a lock-step protocol whose blocks run for tens of seconds, so key requests would wait behind it, and a
broken QKD session must not stall key delivery (or the reverse). The connection is authenticated like the
link (AuthenticatedChannel: fresh nonces, sequence numbers, HMAC-SHA256 tags) under ``kme-link.psk``, a
32-byte key provisioned with the node pair's other pre-shared keys (same directory, same lock, carried over
the same trusted path); it is a key of its own so that the QKD channel's Wegman–Carter pads are not consumed
by it and tags of one channel can never be replayed on the other.

Files, all under the node's key directory (0700, files 0600): ``<peer>.kme-journal`` (write-ahead journal of
reservations and deliveries, qlab.kme.journal), and the key store's used map ``<peer>.keys.used``.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from qlab.errors import QlabError
from qlab.kme.config import KmeConfig, TlsFiles, parse_endpoint
from qlab.kme.netconfig import KmeNodeSection
from qlab.network.keys import LinkKeyStore
from qlab.qkd.keystore import KeyRange

if TYPE_CHECKING:
    from qlab.network.config import NetworkDescription

log = logging.getLogger(__name__)

FLUSH_PERIOD_S = 2.0  # how often releases the peer has not acknowledged are retried


class DeliverableStore:
    """The key-store interface of ``KeyManager`` over a node's ``LinkKeyStore``: allocation from paired
    blocks only; reads under the link store's lock."""

    def __init__(self, link: LinkKeyStore):
        self.link = link
        self.keys = link.keys

    def allocate(self, sizes: list[int], purpose: int, tags: list[bytes] | None = None,
                 from_end: bool = False) -> list[list[KeyRange]]:
        """Raises InsufficientKey (nothing recorded)."""
        return self.keys.allocate(sizes, purpose, tags, from_end=from_end, only=self.link.paired_ids())

    def free_bits(self) -> int:
        return self.keys.free_bits(only=self.link.paired_ids())

    def mark_used(self, ranges: list[KeyRange], purpose: int, tags: list[bytes] | None = None) -> None:
        """Raises RangeUnavailable (unknown block, outside it, overlapping used bits)."""
        self.keys.mark_used(ranges, purpose, tags)

    def discard(self, ranges: list[KeyRange]) -> int:
        return self.keys.discard(ranges)

    def read_ranges(self, ranges: list[KeyRange]) -> np.ndarray:
        return self.link.read_ranges(ranges)


def pair_keys_dir(desc: NetworkDescription, node: str) -> Path:
    """The node pair's pre-shared key directory (as the link's ``provision_pair_keys`` uses it)."""
    pair = "-".join(sorted([node, desc.peer_of(node)]))
    return desc.data_dir / desc.config.key_management.keys_dir / pair


def kme_link_key(keys_dir: Path) -> bytes:
    """The KME link's pre-shared key ``keys_dir/auth/kme-link.psk`` (32 random bytes, created on first use
    under the pair's lock, owner-only). Raises PeerUnavailable for an unreadable or non-private file."""
    from qlab.kme.peer import load_psk
    from qlab.storage.secret import secret_dir

    auth = secret_dir(keys_dir / "auth")
    with open(os.open(keys_dir / ".lock", os.O_WRONLY | os.O_CREAT, 0o600), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return load_psk(auth / "kme-link.psk", create=True)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def pki_dir(desc: NetworkDescription, sec: KmeNodeSection) -> Path:
    p = Path(sec.pki_dir).expanduser()
    return p if p.is_absolute() else desc.data_dir / p


def node_kme_config(desc: NetworkDescription, node: str, store_dir: Path,
                    listen: str | None = None) -> KmeConfig:
    """The KmeConfig of ``node``'s KME from its ``kme:`` section (``listen`` overrides its address). Raises
    QlabError if the node has no section, or the PKI files are missing (naming the command that makes them)."""
    sec = desc.config.nodes[node].kme
    peer = desc.peer_of(node)
    peer_sec = desc.config.nodes[peer].kme
    if sec is None or peer_sec is None:
        raise QlabError(f"{desc.path}: nodes.{node}.kme (and nodes.{peer}.kme) are needed to serve a KME "
                        "(see qlab/kme/netconfig.py)")
    kme_id = sec.resolved_id(node)
    pki = pki_dir(desc, sec)
    tls = TlsFiles(pki / "kme" / f"{kme_id}.crt", pki / "kme" / f"{kme_id}.key", pki / "ca.crt")
    missing = [str(p) for p in (tls.cert, tls.key, tls.ca) if not p.is_file()]
    if missing:
        raise QlabError(f"node {node}: KME certificate files missing ({', '.join(missing)}); create them with "
                        f"`qlab pki init {pki} --network {desc.path}`")
    try:
        addr = parse_endpoint(listen or sec.listen)
    except ValueError as exc:
        raise QlabError(f"--kme: {exc}") from None
    from qlab.kme.config import PeerSettings

    return KmeConfig(
        kme_id=kme_id, peer_kme_id=peer_sec.resolved_id(peer), key_store=store_dir / f"{peer}.keys",
        journal=store_dir / f"{peer}.kme-journal", tls=tls, saes={}, sae_subjects=dict(sec.saes),
        pairs=sec.resolved_pairs(peer_sec), listen=addr,
        peer=PeerSettings(parse_endpoint(sec.peer_listen), parse_endpoint(peer_sec.peer_listen),
                          pair_keys_dir(desc, node) / "auth" / "kme-link.psk", timeout_s=10.0),
        allocate_from_end=sec.resolved_from_end(desc.config.nodes[node].role),
        key_size_bits=sec.key_size_bits, min_key_size_bits=sec.min_key_size_bits,
        max_key_size_bits=sec.max_key_size_bits, max_key_per_request=sec.max_key_per_request,
        max_key_count=sec.max_key_count)


class NodeKme:
    """A node's KME: key manager over the node's store, the KME link (server + client) and HTTPS (mutual TLS),
    in threads of the node process. ``start`` raises QlabError / OSError (port in use)."""

    def __init__(self, desc: NetworkDescription, node: str, store: LinkKeyStore, listen: str | None = None):
        from qlab.kme.service import KmeService

        self.node = node
        self.config = node_kme_config(desc, node, store.dir, listen)
        assert self.config.peer is not None
        self.service = KmeService(self.config, DeliverableStore(store), kme_link_key(pair_keys_dir(desc, node)))
        self.manager = self.service.manager
        self._stop = threading.Event()
        self._flusher: threading.Thread | None = None

    def start(self) -> NodeKme:
        self.service.start(flush_now=False)
        # releases recovered from the journal (a crash between reservation and delivery) reach the peer as
        # soon as it answers: from this thread, or with the next key request
        self._flusher = threading.Thread(target=self._flush_loop, name=f"{self.node}-kme-flush", daemon=True)
        self._flusher.start()
        return self

    def _flush_loop(self) -> None:
        while not self._stop.is_set():
            try:
                if self.manager.flush_releases():
                    self._stop.wait(FLUSH_PERIOD_S)
                    continue
            except Exception as exc:  # noqa: BLE001 - a failing flush is retried; the KME keeps serving
                log.warning("%s: KME release flush failed: %s", self.node, exc)
            self._stop.wait(0.5)

    @property
    def https(self) -> Any:
        return self.service.https

    @property
    def url(self) -> str:
        host, port = self.https.address
        return f"https://{host}:{port}/api/v1/keys"

    def status(self) -> dict[str, Any]:
        """For the node's status file: where it serves and its keys per state (no key material)."""
        return {"kme_id": self.config.kme_id, "url": self.url if self.https is not None else None,
                "deliverable_bits": self.manager.store.free_bits(), "keys": self.manager.counts()}

    def stop(self) -> None:
        self._stop.set()
        self.service.stop()
        if self._flusher is not None:
            self._flusher.join(5)


def ensure_pki(desc: NetworkDescription) -> Path | None:
    """Create (or complete) the PKI of the network's KMEs and SAEs if any node has a ``kme:`` section (the
    demo does this under its data directory). Returns the PKI directory of the first node, or None."""
    from qlab.kme.pki import init_pki

    dirs: dict[Path, tuple[list[str], list[str]]] = {}
    for node, ns in desc.config.nodes.items():
        if ns.kme is None:
            continue
        kmes, saes = dirs.setdefault(pki_dir(desc, ns.kme), ([], []))
        kmes.append(ns.kme.resolved_id(node))
        saes += [cn for cn in ns.kme.saes.values() if cn not in saes]
    for d, (kmes, saes) in dirs.items():
        init_pki(d, kmes, saes)
    return next(iter(dirs), None)
