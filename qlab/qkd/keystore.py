"""Final keys and authentication keys on disk: owner-only files (0600) in owner-only directories (0700),
never logged.

Key store record: b"QLKEY1" | uint64 unix time (ns) | uint32 key bits | 16-byte key id | packed key bits. Both
parties store a block under the same id (Alice draws it at commit), so ids pair keys across the two stores.

Read API: ``blocks()`` lists the committed blocks (id, bits, time) in store order, ``read_bits(block_id, offset,
length)`` reads a bit range of one block. Used/free map: a side file ``<store>.used`` (owner-only, append-only,
fsync'd) records every bit range taken out of the store — by the key manager for delivered keys (``KEY``), for
Wegman–Carter pad refills (``AUTH``) or discarded (``DISCARDED``) — so a range is handed out at most once across
restarts and processes (allocation holds an exclusive ``flock`` on the side file). Used-map record:
b"QLUSE1" | 16-byte block id | uint32 bit offset | uint32 bit length | uint8 purpose | 16-byte owner tag (e.g. the
key_ID a KME delivered the range under; zeros if none).

Authentication keys of the lab (both parties in this process, one data directory) live in ``keys/auth/``:
``hmac.psk`` (32 bytes, HMAC-SHA256 lab mode) and ``alice.wcpool`` / ``bob.wcpool`` (Wegman–Carter hash
point and pads, identical for both parties). ``lab_authenticators`` creates them on first use from the OS
CSPRNG: that first key is the pre-shared one. On a real two-site link they are provisioned once by copying
the files over a trusted path; afterwards Wegman–Carter pads are refilled from committed key.
"""

from __future__ import annotations

import fcntl
import os
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from qlab.errors import QlabError
from qlab.qkd.auth import Authenticator, HmacAuth, WegmanCarterAuth
from qlab.qkd.wegman_carter import AuthKeyPool
from qlab.storage.secret import create_secret_file, open_secret_append, secret_dir, write_secret_atomic

MAGIC = b"QLKEY1"
AUTH_MODES = ("hmac", "wegman-carter")
USED_MAGIC = b"QLUSE1"
_USED = struct.Struct("<6s16sIIB16s")
_HEADER_BYTES = 34  # magic, time, bit count, key id


class Purpose:
    """Why a range left the free pool (the used-map record's purpose byte)."""

    KEY = 1  # delivered (or reserved for delivery) by a key manager
    AUTH = 2  # refilled Wegman–Carter pads
    DISCARDED = 3  # withdrawn and never to be used


class KeyRange(NamedTuple):
    """``length`` bits of block ``block_id`` starting at bit ``offset``."""

    block_id: bytes
    offset: int
    length: int


@dataclass(frozen=True)
class BlockInfo:
    """One committed block: its id, size in bits, commit time (unix ns) and record position in the file."""

    block_id: bytes
    nbits: int
    time_ns: int
    file_offset: int


class InsufficientKey(QlabError):
    """The store has fewer free bits than requested."""


class RangeUnavailable(QlabError):
    """A range names an unknown block, lies outside it, or overlaps bits already used."""


def _records(data: bytes, path: Path) -> Iterator[tuple[int, int, bytes]]:
    """(start, end, key id) of each complete record of a key-store file's bytes; stops at a torn last record.
    Raises ValueError for a record without the magic."""
    i = 0
    while i + _HEADER_BYTES <= len(data):
        if data[i:i + 6] != MAGIC:
            raise ValueError(f"{path}: corrupt key record at byte {i}")
        nbits = struct.unpack("<I", data[i + 14:i + 18])[0]
        end = i + _HEADER_BYTES + (nbits + 7) // 8
        if end > len(data):
            return
        yield i, end, data[i + 18:i + 34]
        i = end


def _complete_bytes(data: bytes, path: Path) -> int:
    """Length of the complete records at the start of a key-store file's bytes."""
    return max((end for _, end, _ in _records(data, path)), default=0)


class KeyStore:
    """Append-only store of committed key blocks plus its used/free map. Thread-safe; allocation is also safe
    across processes sharing the store (flock on the used map)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.used_path = self.path.with_name(self.path.name + ".used")
        self._lock = threading.RLock()
        self._blocks: dict[bytes, BlockInfo] = {}
        self._order: list[bytes] = []
        self._scanned = 0
        self._used: dict[bytes, list[tuple[int, int]]] = {}
        self._used_scanned = 0
        self._repaired = False

    def append(self, bits: np.ndarray, key_id: bytes | None = None) -> bytes:
        """Append a key; returns its id (random unless given; safe to log). The first append of a process
        cuts off a record torn by an earlier crash, so the new one does not land behind unreadable bytes."""
        key_id = key_id or os.urandom(16)
        if len(key_id) != 16:
            raise ValueError("a key id has 16 bytes")
        record = MAGIC + struct.pack("<QI", time.time_ns(), int(bits.size)) + key_id + np.packbits(bits).tobytes()
        with self._lock:
            fd = open_secret_append(self.path)
            try:
                if not self._repaired:
                    size = os.fstat(fd).st_size
                    whole = _complete_bytes(self.path.read_bytes(), self.path) if size else 0
                    if whole != size:
                        os.ftruncate(fd, whole)
                    self._repaired = True
                os.write(fd, record)
                os.fsync(fd)
            finally:
                os.close(fd)
        return key_id

    def read(self) -> list[tuple[bytes, np.ndarray]]:
        """Every complete record as (id, bits); a record torn by a crash at the end is not one. Raises
        ValueError for a corrupt record."""
        data = self.path.read_bytes()
        out = []
        for start, end, key_id in _records(data, self.path):
            nbits = struct.unpack("<I", data[start + 14:start + 18])[0]
            out.append((key_id, np.unpackbits(np.frombuffer(data[start + _HEADER_BYTES:end], np.uint8))[:nbits]))
        return out

    def remove(self, key_ids: set[bytes]) -> None:
        """Rewrite the store without the blocks ``key_ids`` (atomically, owner-only) and re-index it."""
        with self._lock:
            data = self.path.read_bytes() if self.path.exists() else b""
            kept = b"".join(data[a:b] for a, b, key_id in _records(data, self.path) if key_id not in key_ids)
            write_secret_atomic(self.path, kept)
            self.reindex()

    # -- read API by block id -------------------------------------------------------------------------------
    def _scan(self) -> None:
        """Index records appended since the last scan (the file only grows; a torn last record is skipped)."""
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return
        if size <= self._scanned:
            return
        with open(self.path, "rb") as f:
            f.seek(self._scanned)
            data = f.read(size - self._scanned)
        i = 0
        while i + _HEADER_BYTES <= len(data):
            if data[i:i + 6] != MAGIC:
                raise ValueError(f"{self.path}: corrupt key record at byte {self._scanned + i}")
            t_ns, nbits = struct.unpack("<QI", data[i + 6:i + 18])
            end = i + _HEADER_BYTES + (nbits + 7) // 8
            if end > len(data):
                break  # being written (or torn by a crash): not a committed block
            block_id = data[i + 18:i + 34]
            if block_id not in self._blocks:  # an id is committed once; a repeat is ignored
                self._blocks[block_id] = BlockInfo(block_id, int(nbits), int(t_ns), self._scanned + i)
                self._order.append(block_id)
            i = end
        self._scanned += i

    def blocks(self) -> list[BlockInfo]:
        """Committed blocks in store order."""
        with self._lock:
            self._scan()
            return [self._blocks[b] for b in self._order]

    def block(self, block_id: bytes) -> BlockInfo:
        """The block with this id. Raises KeyError if the store holds none."""
        with self._lock:
            self._scan()
            if block_id not in self._blocks:
                raise KeyError(f"{self.path}: no block {block_id.hex()}")
            return self._blocks[block_id]

    def read_block(self, block_id: bytes) -> np.ndarray:
        """All bits (uint8 0/1) of one block. Raises KeyError for an unknown id."""
        info = self.block(block_id)
        return self.read_bits(block_id, 0, info.nbits)

    def read_bits(self, block_id: bytes, offset: int, length: int) -> np.ndarray:
        """``length`` bits (uint8 0/1) of block ``block_id`` from bit ``offset``. Raises KeyError for an unknown
        id, RangeUnavailable for a range outside the block."""
        info = self.block(block_id)
        if offset < 0 or length < 0 or offset + length > info.nbits:
            raise RangeUnavailable(f"bits [{offset}, {offset + length}) outside block {block_id.hex()} "
                                   f"of {info.nbits} bits")
        first, last = offset // 8, (offset + length + 7) // 8
        with open(self.path, "rb") as f:
            f.seek(info.file_offset + _HEADER_BYTES + first)
            raw = np.frombuffer(f.read(last - first), np.uint8)
        start = offset - 8 * first
        return np.unpackbits(raw)[start:start + length]

    def read_ranges(self, ranges: list[KeyRange]) -> np.ndarray:
        """The bits of ``ranges`` concatenated in order."""
        parts = [self.read_bits(r.block_id, r.offset, r.length) for r in ranges]
        return np.concatenate(parts) if parts else np.zeros(0, np.uint8)

    # -- used/free map --------------------------------------------------------------------------------------
    def _scan_used(self) -> None:
        """Index used-map records appended since the last scan (whole records only)."""
        try:
            fd = os.open(self.used_path, os.O_RDONLY)
        except FileNotFoundError:
            return
        try:
            size = os.fstat(fd).st_size
            whole = size - size % _USED.size
            if whole <= self._used_scanned:
                return
            data = os.pread(fd, whole - self._used_scanned, self._used_scanned)
        finally:
            os.close(fd)
        for i in range(0, len(data), _USED.size):
            magic, block_id, off, length, _, _ = _USED.unpack_from(data, i)
            if magic != USED_MAGIC:
                raise ValueError(f"{self.used_path}: corrupt used-map record at byte {self._used_scanned + i}")
            self._used.setdefault(block_id, []).append((off, off + length))
        self._used_scanned = whole

    def _free_intervals(self, info: BlockInfo) -> list[tuple[int, int]]:
        free, pos = [], 0
        for a, b in sorted(self._used.get(info.block_id, [])):
            if a > pos:
                free.append((pos, a))
            pos = max(pos, b)
        if pos < info.nbits:
            free.append((pos, info.nbits))
        return free

    def free_ranges(self, only: set[bytes] | None = None) -> list[KeyRange]:
        """Every free range, block by block in store order (of the blocks in ``only``, if given)."""
        with self._lock:
            self._scan()
            self._scan_used()
            return [KeyRange(b, a, e - a) for b in self._order if only is None or b in only
                    for a, e in self._free_intervals(self._blocks[b])]

    def free_bits(self, only: set[bytes] | None = None) -> int:
        """Bits not yet used for anything (in the blocks of ``only``, if given)."""
        return sum(r.length for r in self.free_ranges(only))

    def reindex(self) -> None:
        """Forget the block index: the key file was rewritten in place (a node's key store drops a block held
        on one side only by rewriting the file), so block positions must be read afresh."""
        with self._lock:
            self._blocks, self._order, self._scanned = {}, [], 0

    def used_ranges(self, block_id: bytes) -> list[KeyRange]:
        """Used ranges of one block as recorded (possibly adjacent), sorted by offset."""
        with self._lock:
            self._scan_used()
            return [KeyRange(block_id, a, b - a) for a, b in sorted(self._used.get(block_id, []))]

    def _locked_used(self) -> int:
        """Open the used map for appending under an exclusive flock; a torn last record is cut off."""
        fd = open_secret_append(self.used_path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            size = os.fstat(fd).st_size
            if size % _USED.size:
                os.ftruncate(fd, size - size % _USED.size)
            self._scan_used()  # under the flock: records of other processes are in
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _record(self, fd: int, ranges: list[tuple[KeyRange, int, bytes]]) -> None:
        if not ranges:
            return
        os.write(fd, b"".join(_USED.pack(USED_MAGIC, r.block_id, r.offset, r.length, purpose, tag.ljust(16, b"\0"))
                              for r, purpose, tag in ranges))
        os.fsync(fd)
        for r, _, _ in ranges:
            self._used.setdefault(r.block_id, []).append((r.offset, r.offset + r.length))
        self._used_scanned = os.fstat(fd).st_size

    def allocate(self, sizes: list[int], purpose: int, tags: list[bytes] | None = None,
                 from_end: bool = False, only: set[bytes] | None = None) -> list[list[KeyRange]]:
        """Take ``sizes[i]`` free bits for each request i (ranges may span blocks), record them as used
        (durably, one fsync) and return each request's ranges in bit order. ``from_end`` takes the newest
        blocks' last bits first (the two KMEs of a link allocate from opposite ends so they rarely collide).
        ``tags`` (≤ 16 bytes each) are stored with the ranges; ``only``: take bits from these blocks only
        (e.g. those both nodes are known to hold). Raises InsufficientKey (nothing recorded)."""
        tags = tags or [b""] * len(sizes)
        with self._lock:
            self._scan()
            fd = self._locked_used()
            try:
                pool: list[KeyRange] = []
                order = reversed(self._order) if from_end else self._order
                for b in order:
                    if only is not None and b not in only:
                        continue
                    free = self._free_intervals(self._blocks[b])
                    pool += [KeyRange(b, a, e - a) for a, e in (reversed(free) if from_end else free)]
                need = sum(sizes)
                have = sum(r.length for r in pool)
                if need > have:
                    raise InsufficientKey(f"{self.path}: {need} bits requested, {have} free")
                out, records, k = [], [], 0
                for size, tag in zip(sizes, tags, strict=True):
                    got: list[KeyRange] = []
                    while size:
                        r = pool[k]
                        take = min(size, r.length)
                        piece = KeyRange(r.block_id, r.offset + r.length - take, take) if from_end else \
                            KeyRange(r.block_id, r.offset, take)
                        rest = KeyRange(r.block_id, r.offset, r.length - take) if from_end else \
                            KeyRange(r.block_id, r.offset + take, r.length - take)
                        got.append(piece)
                        size -= take
                        if rest.length:
                            pool[k] = rest
                        else:
                            k += 1
                    if from_end:
                        got.sort(key=lambda x: (self._order.index(x.block_id), x.offset))
                    out.append(got)
                    records += [(r, purpose, tag) for r in got]
                self._record(fd, records)
                return out
            finally:
                os.close(fd)  # closing releases the flock

    def mark_used(self, ranges: list[KeyRange], purpose: int, tags: list[bytes] | None = None) -> None:
        """Record ``ranges`` as used (durably, one fsync), all or none; ``tags[i]`` (≤ 16 bytes) is stored with
        range i. Raises RangeUnavailable if a range names a block this store does not hold, lies outside it,
        or overlaps a used range (or another range of the call)."""
        tags = tags or [b""] * len(ranges)
        with self._lock:
            self._scan()
            fd = self._locked_used()
            try:
                taken = {b: list(v) for b, v in self._used.items()}
                for r in ranges:
                    info = self._blocks.get(r.block_id)
                    if info is None:
                        raise RangeUnavailable(f"{self.path}: no committed block {r.block_id.hex()}")
                    if r.offset < 0 or r.length <= 0 or r.offset + r.length > info.nbits:
                        raise RangeUnavailable(f"bits [{r.offset}, {r.offset + r.length}) outside block "
                                               f"{r.block_id.hex()} of {info.nbits} bits")
                    spans = taken.setdefault(r.block_id, [])
                    if any(a < r.offset + r.length and r.offset < b for a, b in spans):
                        raise RangeUnavailable(f"bits [{r.offset}, {r.offset + r.length}) of block "
                                               f"{r.block_id.hex()} are already used")
                    spans.append((r.offset, r.offset + r.length))
                self._record(fd, [(r, purpose, tag) for r, tag in zip(ranges, tags, strict=True)])
            finally:
                os.close(fd)


    def discard(self, ranges: list[KeyRange]) -> int:
        """Mark the parts of ``ranges`` that are still free as used (``DISCARDED``), durably; parts already used
        and blocks this store does not hold are skipped. Returns the number of bits newly discarded."""
        with self._lock:
            self._scan()
            fd = self._locked_used()
            try:
                pieces = []
                for r in ranges:
                    info = self._blocks.get(r.block_id)
                    if info is None:
                        continue
                    for a, b in self._free_intervals(info):
                        lo, hi = max(a, r.offset), min(b, r.offset + r.length)
                        if lo < hi:
                            pieces.append((KeyRange(r.block_id, lo, hi - lo), Purpose.DISCARDED, b""))
                self._record(fd, pieces)
                return sum(p.length for p, _, _ in pieces)
            finally:
                os.close(fd)

def lab_authenticators(keys_dir: str | Path, mode: str) -> tuple[Authenticator, Authenticator, bool]:
    """(Alice's, Bob's) authenticators of the lab's pre-shared keys under ``keys_dir/auth``, and whether the
    keys were provisioned just now. Raises ValueError for an unknown mode."""
    auth_dir = secret_dir(Path(keys_dir) / "auth")
    if mode == "hmac":
        path = auth_dir / "hmac.psk"
        fresh = not path.exists()
        if fresh:
            create_secret_file(path, exclusive=True)
            fd = os.open(path, os.O_WRONLY)
            try:
                os.write(fd, os.urandom(32))
            finally:
                os.close(fd)
        key = path.read_bytes()
        return HmacAuth(key), HmacAuth(key), fresh
    if mode == "wegman-carter":
        paths = {r: auth_dir / f"{r}.wcpool" for r in ("alice", "bob")}
        fresh = not all(p.exists() for p in paths.values())
        if fresh:
            AuthKeyPool.provision(paths)
        return WegmanCarterAuth(AuthKeyPool(paths["alice"])), WegmanCarterAuth(AuthKeyPool(paths["bob"])), fresh
    raise ValueError(f"unknown authentication mode {mode!r}; expected one of {AUTH_MODES}")
