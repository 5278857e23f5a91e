"""Key management of one KME: reserve committed key-store ranges for keys, agree on them with the peer KME,
deliver each key once, recover after a crash.

Master side (``enc_keys``, the SAE asking is the master):
  1. take ``number`` × ``size`` free bits from the key store (``KeyStore.allocate``: recorded used, fsync);
  2. journal ``reserve`` (key_ID, SAEs, ranges; fsync);
  3. send ``reserve`` to the peer KME (it checks and records the same ranges as used, journals, acks);
  4. journal ``deliver`` (fsync), then return the keys.
  A refusal or an unreachable peer at 3 releases the keys (503). A crash after 2 and before 4 leaves a
  reservation that recovery releases on both sides (the SAE never received it). A crash after 4 leaves a
  completed key (the slave KME still serves it once to the slave SAE).
Slave side (``dec_keys``): a key_ID is served only to the slave SAE it was reserved for, asked with the right
master SAE ID, and only once (``deliver`` is journaled before the response).
Released keys' ranges stay marked used, so a key's bits are never delivered under another ID. The key store
holds only net committed key (Wegman–Carter pad refills are taken from a block before it is stored, and a
later refill from the store would use ``allocate(..., Purpose.AUTH)``), so authentication bits are never
delivered.
"""

from __future__ import annotations

import base64
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from qlab.kme.config import KmeConfig
from qlab.kme.journal import Journal
from qlab.kme.models import BadRequest, Unauthorized, Unavailable
from qlab.kme.peer import PeerLink, PeerUnavailable
from qlab.qkd.keystore import InsufficientKey, KeyRange, KeyStore, Purpose, RangeUnavailable

RESERVED, DELIVERED, RELEASED = "reserved", "delivered", "released"


@dataclass
class KeyRecord:
    key_id: str
    role: str  # "master": handed to the master SAE here; "slave": to be served to the slave SAE here
    master_sae: str
    slave_sae: str
    ranges: list[KeyRange]
    state: str = RESERVED


@dataclass
class Delivered:
    key_id: str
    key: bytes

    def as_json(self) -> dict[str, str]:
        return {"key_ID": self.key_id, "key": base64.b64encode(self.key).decode("ascii")}


def _ranges_json(ranges: list[KeyRange]) -> list[list[Any]]:
    return [[r.block_id.hex(), r.offset, r.length] for r in ranges]


def _ranges_from(data: Any) -> list[KeyRange]:
    """Parse ``[[block_id_hex, offset, length], ...]``. Raises ValueError."""
    out = []
    for item in data:
        block, offset, length = item
        block_id = bytes.fromhex(block)
        if len(block_id) != 16 or not isinstance(offset, int) or not isinstance(length, int) or length <= 0:
            raise ValueError(f"bad range {item!r}")
        out.append(KeyRange(block_id, offset, length))
    return out


def _canonical_uuid(text: str) -> str | None:
    try:
        return str(uuid.UUID(text))
    except (ValueError, TypeError, AttributeError):
        return None


class KeyManager:
    """Thread-safe. ``peer`` may be set after construction (the two KMEs start one after the other)."""

    def __init__(self, config: KmeConfig, store: KeyStore, journal: Journal, peer: PeerLink | None = None):
        self.config, self.store, self.journal, self.peer = config, store, journal, peer
        self._lock = threading.RLock()
        self._keys: dict[str, KeyRecord] = {}
        self._unacked_releases: set[str] = set()
        #: tests: called with the key_IDs after the peer acknowledged a reservation, before delivery
        self.before_delivery: Callable[[list[str]], None] | None = None
        self._replay()

    # -- recovery ---------------------------------------------------------------------------------------------
    def _replay(self) -> None:
        for rec in self.journal.replay():
            op = rec.get("op")
            if op == "reserve":
                for k in rec["keys"]:
                    self._keys[k["key_ID"]] = KeyRecord(k["key_ID"], rec["role"], rec["master_SAE_ID"],
                                                        rec["slave_SAE_ID"], _ranges_from(k["ranges"]))
            elif op == "deliver":
                for kid in rec["key_IDs"]:
                    self._keys[kid].state = DELIVERED
            elif op == "release":
                for kid in rec["key_IDs"]:
                    if kid in self._keys:
                        self._keys[kid].state = RELEASED
                    else:  # a tombstone: the peer withdrew an ID this KME never reserved
                        self._keys[kid] = KeyRecord(kid, "slave", "", "", [], RELEASED)
                    if not rec.get("peer_acked", True):
                        self._unacked_releases.add(kid)
            elif op == "release_acked":
                self._unacked_releases.difference_update(rec["key_IDs"])
        # master reservations never journaled as delivered were never sent to the SAE: withdraw them
        dangling = [k.key_id for k in self._keys.values() if k.role == "master" and k.state == RESERVED]
        if dangling:
            self._release(dangling, peer_acked=False)

    def flush_releases(self) -> bool:
        """Tell the peer about releases it has not acknowledged. True if none are left."""
        with self._lock:
            ids = sorted(self._unacked_releases)
        if not ids:
            return True
        if self.peer is None:
            return False
        with self._lock:  # the ranges let the peer retire the same bits (used maps stay identical)
            ranges = {k: _ranges_json(self._keys[k].ranges) for k in ids if k in self._keys}
        try:
            reply = self.peer.request({"op": "release", "key_IDs": ids, "ranges": ranges})
        except PeerUnavailable:
            return False
        if not reply.get("ok"):
            return False
        with self._lock:
            self.journal.append([{"op": "release_acked", "key_IDs": ids}])
            self._unacked_releases.difference_update(ids)
            return not self._unacked_releases

    def _release(self, key_ids: list[str], peer_acked: bool) -> None:
        with self._lock:
            self.journal.append([{"op": "release", "key_IDs": key_ids, "peer_acked": peer_acked}])
            for kid in key_ids:
                self._keys[kid].state = RELEASED
            if not peer_acked:
                self._unacked_releases.update(key_ids)

    # -- ETSI 014 operations ------------------------------------------------------------------------------------
    def _check_pair(self, local_sae: str, remote_sae: str) -> None:
        if local_sae not in self.config.sae_ids:
            raise Unauthorized(f"SAE {local_sae!r} is not served by {self.config.kme_id}")
        if not self.config.paired(local_sae, remote_sae):
            raise Unauthorized(f"SAE {local_sae!r} is not allowed to share keys with SAE {remote_sae!r}")

    def status(self, master_sae: str, slave_sae: str) -> dict[str, Any]:
        """The Status object for the pair. Raises Unauthorized."""
        self._check_pair(master_sae, slave_sae)
        c = self.config
        return {"source_KME_ID": c.kme_id, "target_KME_ID": c.peer_kme_id, "master_SAE_ID": master_sae,
                "slave_SAE_ID": slave_sae, "key_size": c.key_size_bits,
                "stored_key_count": min(self.store.free_bits() // c.key_size_bits, c.max_key_count),
                "max_key_count": c.max_key_count, "max_key_per_request": c.max_key_per_request,
                "max_key_size": c.max_key_size_bits, "min_key_size": c.min_key_size_bits, "max_SAE_ID_count": 0}

    def _check_request(self, number: int | None, size: int | None) -> tuple[int, int]:
        c = self.config
        number = 1 if number is None else number
        size = c.key_size_bits if size is None else size
        problems = []
        if not 1 <= number <= c.max_key_per_request:
            problems.append({"number": f"{number} is outside [1, max_key_per_request = {c.max_key_per_request}]"})
        if size % 8 or not c.min_key_size_bits <= size <= c.max_key_size_bits:
            problems.append({"size": f"{size} bits is not a multiple of 8 in [{c.min_key_size_bits}, "
                                     f"{c.max_key_size_bits}]"})
        if problems:
            raise BadRequest("bad key request", problems)
        return number, size

    def enc_keys(self, master_sae: str, slave_sae: str, number: int | None = None,
                 size: int | None = None) -> list[Delivered]:
        """Reserve and deliver ``number`` new keys of ``size`` bits for the pair. Raises BadRequest,
        Unauthorized, Unavailable (not enough key, peer KME unreachable or refusing)."""
        self._check_pair(master_sae, slave_sae)
        number, size = self._check_request(number, size)
        if self.peer is None:
            raise Unavailable(f"{self.config.kme_id} has no link to its peer KME {self.config.peer_kme_id}")
        self.flush_releases()
        key_ids = [str(uuid.uuid4()) for _ in range(number)]
        with self._lock:
            try:
                ranges = self.store.allocate([size] * number, Purpose.KEY, [uuid.UUID(k).bytes for k in key_ids],
                                             from_end=self.config.allocate_from_end)
            except InsufficientKey:
                have = self.store.free_bits()
                raise Unavailable("not enough key", [{"requested_bits": number * size, "stored_bits": have,
                                                      "stored_key_count": have // size}]) from None
            keys = [{"key_ID": k, "ranges": _ranges_json(r)} for k, r in zip(key_ids, ranges, strict=True)]
            self.journal.append([{"op": "reserve", "role": "master", "master_SAE_ID": master_sae,
                                  "slave_SAE_ID": slave_sae, "keys": keys}])
            for k, r in zip(key_ids, ranges, strict=True):
                self._keys[k] = KeyRecord(k, "master", master_sae, slave_sae, r)
        try:
            reply = self.peer.request({"op": "reserve", "master_SAE_ID": master_sae, "slave_SAE_ID": slave_sae,
                                       "keys": keys})
        except PeerUnavailable as exc:
            self._release(key_ids, peer_acked=False)
            self.flush_releases()
            raise Unavailable(f"peer KME {self.config.peer_kme_id} unreachable", [{"reason": str(exc)}]) from None
        if not reply.get("ok"):
            self._release(key_ids, peer_acked=False)  # the release retires the ranges at the peer too
            self.flush_releases()
            raise Unavailable(f"peer KME {self.config.peer_kme_id} refused the reservation",
                              [{"reason": str(reply.get("error"))}])
        if self.before_delivery is not None:
            self.before_delivery(key_ids)
        out = [Delivered(k, self._bytes(r)) for k, r in zip(key_ids, ranges, strict=True)]
        with self._lock:
            self.journal.append([{"op": "deliver", "key_IDs": key_ids}])
            for k in key_ids:
                self._keys[k].state = DELIVERED
        return out

    def dec_keys(self, slave_sae: str, master_sae: str, key_ids: list[str]) -> list[Delivered]:
        """Deliver the keys ``key_ids`` reserved by ``master_sae`` for ``slave_sae``, each once. Raises
        Unauthorized (pair not allowed), BadRequest (an ID unknown, not for this SAE, already delivered or
        released; nothing is delivered then)."""
        self._check_pair(slave_sae, master_sae)
        if not key_ids:
            raise BadRequest("no key_ID given")
        with self._lock:
            problems, records = [], []
            for kid in key_ids:
                canon = _canonical_uuid(kid)
                rec = self._keys.get(canon) if canon else None
                if rec is None or rec.role != "slave" or rec.slave_sae != slave_sae or rec.master_sae != master_sae \
                        or rec.state != RESERVED or rec in records:
                    # one reason for all cases: an SAE learns nothing about keys that are not its own
                    problems.append({"key_ID": kid, "reason": "not available (unknown, not for this SAE pair, "
                                                              "already delivered or withdrawn)"})
                else:
                    records.append(rec)
            if problems:
                raise BadRequest("key_ID not available", problems)
            out = [Delivered(r.key_id, self._bytes(r.ranges)) for r in records]
            self.journal.append([{"op": "deliver", "key_IDs": [r.key_id for r in records]}])
            for r in records:
                r.state = DELIVERED
            return out

    def _bytes(self, ranges: list[KeyRange]) -> bytes:
        return np.packbits(self.store.read_ranges(ranges)).tobytes()

    # -- peer messages ------------------------------------------------------------------------------------------
    def handle_peer(self, message: dict[str, Any]) -> dict[str, Any]:
        """Answer one message from the peer KME (see qlab.kme.peer for the format). Never raises for bad
        input: the reply says ``ok: false`` with the reason."""
        op = message.get("op") if isinstance(message, dict) else None
        try:
            if op == "reserve":
                return self._peer_reserve(message)
            if op == "release":
                return self._peer_release(message)
            if op == "ping":
                return {"ok": True, "kme_id": self.config.kme_id}
        except (KeyError, ValueError, TypeError) as exc:
            return {"ok": False, "error": f"malformed {op} message: {exc}"}
        return {"ok": False, "error": f"unknown operation {op!r}"}

    def _peer_reserve(self, m: dict[str, Any]) -> dict[str, Any]:
        master, slave = str(m["master_SAE_ID"]), str(m["slave_SAE_ID"])
        if slave not in self.config.sae_ids or not self.config.paired(slave, master):
            return {"ok": False, "error": f"SAE {slave!r} at {self.config.kme_id} is not paired with {master!r}"}
        keys = [(str(k["key_ID"]), _ranges_from(k["ranges"])) for k in m["keys"]]
        with self._lock:
            for kid, _ in keys:
                if _canonical_uuid(kid) != kid or kid in self._keys:
                    return {"ok": False, "error": f"key_ID {kid} is not a fresh UUID"}
            flat = [(r, uuid.UUID(kid).bytes) for kid, rs in keys for r in rs]
            try:
                self.store.mark_used([r for r, _ in flat], Purpose.KEY, [t for _, t in flat])
            except RangeUnavailable as exc:
                return {"ok": False, "error": str(exc)}
            self.journal.append([{"op": "reserve", "role": "slave", "master_SAE_ID": master, "slave_SAE_ID": slave,
                                  "keys": [{"key_ID": k, "ranges": _ranges_json(r)} for k, r in keys]}])
            for kid, rs in keys:
                self._keys[kid] = KeyRecord(kid, "slave", master, slave, rs)
        return {"ok": True}

    def _peer_release(self, m: dict[str, Any]) -> dict[str, Any]:
        ids = [str(k) for k in m["key_IDs"]]
        with self._lock:
            released = [k for k in ids if k not in self._keys or self._keys[k].state == RESERVED]
            delivered = [k for k in ids if k in self._keys and self._keys[k].state == DELIVERED]
            retire = [r for k in released if k not in self._keys
                      for r in _ranges_from(m.get("ranges", {}).get(k, []))]
            self.store.discard(retire)  # never reserved here: retire the bits the master took, where still free
            if released:
                self.journal.append([{"op": "release", "key_IDs": released, "peer_acked": True}])
                for k in released:
                    rec = self._keys.get(k) or KeyRecord(k, "slave", "", "", [])
                    rec.state = RELEASED
                    self._keys[k] = rec
        return {"ok": True, "released": released, "delivered": delivered}

    # -- inspection ---------------------------------------------------------------------------------------------
    def record(self, key_id: str) -> KeyRecord | None:
        with self._lock:
            return self._keys.get(key_id)

    def counts(self) -> dict[str, int]:
        """Keys per state (for status extensions and tests)."""
        with self._lock:
            out: dict[str, int] = {}
            for r in self._keys.values():
                out[f"{r.role}_{r.state}"] = out.get(f"{r.role}_{r.state}", 0) + 1
            out["unacked_releases"] = len(self._unacked_releases)
            return out
