"""A node's key store for one link: committed blocks under sequential block IDs, durable across kill -9.

Files (owner-only, in a 0700 directory):
- ``<peer>.keys``: the block keys (qlab.qkd.keystore record format; key id = b"QLNETBLK" + block number u64 BE);
- ``<peer>.journal``: one JSON line per event, fsync'd before the event takes effect:
  ``reserve`` (a block number is taken: never reused, even if the block never completes), ``commit``,
  ``paired`` (the peer is known to hold the same block), ``drop`` (held on this side only: removed).

A block is committed by the BBM92 parties only after both confirmed, but the last acknowledgement can be lost
(docs/security.md): one side may hold a block the other lacks. ``reconcile`` settles that on the next
session: each side lists its unpaired blocks, the peer answers which of them it holds, and a side keeps
(marks ``paired``) exactly the blocks the peer holds and drops the others. A side only drops a block the
peer does not hold, and block numbers are never reused, so a block held by both is never dropped.
Only ``paired`` blocks may be delivered to applications (the hook for a key manager: ``blocks()``,
``paired_ids()``, ``read_ranges()``; qlab.network.kme_node serves them). The store holds net key only: the
Wegman–Carter pad refills a block pays for are cut from the key's head before it reaches ``commit``
(``refills`` just records their size), so no authentication bit is ever in the deliverable ranges.
"""

from __future__ import annotations

import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qlab.kme.journal import Journal
from qlab.qkd.keystore import KeyRange, KeyStore
from qlab.storage.secret import secret_dir

ID_PREFIX = b"QLNETBLK"


def block_key_id(block: int) -> bytes:
    return ID_PREFIX + struct.pack(">Q", block)


def block_of(key_id: bytes) -> int | None:
    return struct.unpack(">Q", key_id[8:])[0] if key_id[:8] == ID_PREFIX else None


@dataclass(frozen=True)
class BlockInfo:
    block: int
    bits: int
    paired: bool


class LinkKeyStore:
    """Thread-safe. Raises ValueError for a block number that was reserved before (never reused)."""

    def __init__(self, directory: str | Path, peer: str):
        self.dir = secret_dir(directory)
        self.keys = KeyStore(self.dir / f"{peer}.keys")
        self.journal_path = self.dir / f"{peer}.journal"
        self.journal = Journal(self.journal_path)
        self._lock = threading.Lock()
        self.reserved: set[int] = set()
        self.committed: dict[int, int] = {}  # block -> bits
        self.paired: set[int] = set()
        self.dropped: set[int] = set()
        self.refills: dict[int, list[int]] = {}  # block -> Wegman–Carter pad bytes it refilled (alice, bob)
        self._replay()

    # -- durable journal -------------------------------------------------------------------------------------
    def _replay(self) -> None:
        for ev in self.journal.replay():  # a torn last line from a crash: that event never took effect
            self._apply(ev)
        held = {block_of(k): int(bits.size) for k, bits in self._read_keys()}
        # A key written but not journalled (crash between the two) still counts as committed: the peer decides.
        for b, n in held.items():
            if b is not None and b not in self.dropped:
                self.committed.setdefault(b, n)
                self.reserved.add(b)
        if any(b in self.dropped for b in held):  # a drop interrupted before the keys were rewritten
            self._rewrite_keys()

    def _apply(self, ev: dict) -> None:
        b = int(ev["block"])
        kind = ev["event"]
        if kind == "reserve":
            self.reserved.add(b)
        elif kind == "commit":
            self.reserved.add(b)
            self.committed[b] = int(ev["bits"])
            if ev.get("refill"):
                self.refills[b] = [int(x) for x in ev["refill"]]
        elif kind == "paired":
            self.paired.add(b)
        elif kind == "drop":
            self.dropped.add(b)
            self.committed.pop(b, None)
            self.paired.discard(b)

    def _log(self, **ev: object) -> None:
        ev["time"] = time.time()
        self.journal.append([ev])  # fsync'd; a line torn by an earlier crash is cut off first
        self._apply(ev)

    def _read_keys(self) -> list[tuple[bytes, np.ndarray]]:
        return self.keys.read() if self.keys.path.exists() else []

    def _rewrite_keys(self) -> None:
        """Rewrite the key file without dropped blocks (atomic, owner-only; re-indexed, so a key manager
        reading this store does not use stale positions)."""
        self.keys.remove({k for k, _ in self._read_keys() if block_of(k) in self.dropped})

    # -- API ----------------------------------------------------------------------------------------------------
    @property
    def next_block(self) -> int:
        """The lowest block number above every one ever reserved, committed or dropped here."""
        with self._lock:
            used = self.reserved | set(self.committed) | self.dropped
            return max(used) + 1 if used else 1

    def reserve(self, block: int) -> None:
        """Take ``block`` durably before any message of it is sent. Raises ValueError if it was taken before."""
        with self._lock:
            if block in self.reserved or block in self.committed or block in self.dropped:
                raise ValueError(f"block {block} was used before; block IDs are never reused")
            self._log(event="reserve", block=block)

    def commit(self, block: int, bits: np.ndarray, paired: bool, refill: list[int] | None = None) -> None:
        """Store the block's final key (after the protocol's confirmation); ``paired`` if the peer is known to
        hold it already (Alice, after Bob's acknowledgement); ``refill``: Wegman–Carter pad bytes per direction
        the block appended to the authentication pool (undone if the block is dropped)."""
        with self._lock:
            if block not in self.reserved or block in self.committed or block in self.dropped:
                raise ValueError(f"block {block} was not reserved, or is committed or dropped already")
            self.keys.append(np.asarray(bits, np.uint8), block_key_id(block))
            self._log(event="commit", block=block, bits=int(bits.size), refill=refill or [])
            if paired:
                self._log(event="paired", block=block)

    def unpaired(self) -> list[int]:
        with self._lock:
            return sorted(set(self.committed) - self.paired)

    def holds(self, blocks: list[int]) -> list[int]:
        with self._lock:
            return sorted(b for b in blocks if b in self.committed)

    def settle(self, peer_holds: list[int], asked: list[int]) -> tuple[list[int], list[int]]:
        """Apply the peer's answer to ``asked`` (our unpaired blocks): keep those it holds, drop the others.
        Returns (paired, dropped)."""
        with self._lock:
            held = set(peer_holds)
            paired, dropped = [], []
            for b in asked:
                if b not in self.committed or b in self.paired:
                    continue
                if b in held:
                    self._log(event="paired", block=b)
                    paired.append(b)
                else:
                    self._log(event="drop", block=b)
                    dropped.append(b)
            if dropped:
                self._rewrite_keys()
            return paired, dropped

    def blocks(self) -> list[BlockInfo]:
        """Committed blocks in order (``paired``: deliverable to applications)."""
        with self._lock:
            return [BlockInfo(b, n, b in self.paired) for b, n in sorted(self.committed.items())]

    def paired_ids(self) -> set[bytes]:
        """Key-store block IDs of the paired blocks (the only deliverable ones)."""
        with self._lock:
            return {block_key_id(b) for b in self.paired if b in self.committed}

    def read_ranges(self, ranges: list[KeyRange]) -> np.ndarray:
        """Bits of key-store ranges, under the store's lock (a concurrent drop rewrites the key file).
        Raises KeyError / RangeUnavailable (qlab.qkd.keystore) for a range the store does not hold."""
        with self._lock:
            return self.keys.read_ranges(ranges)

    def read_keys(self) -> dict[int, np.ndarray]:
        """block -> key bits of every block held (secret: never log these)."""
        with self._lock:
            return {b: bits for k, bits in self._read_keys() if (b := block_of(k)) is not None
                    and b not in self.dropped}
