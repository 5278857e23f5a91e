"""Wegman–Carter authentication: a polynomial hash over the prime field GF(2^127 - 1), one-time padded.

tag = (h_k(m) + r) mod p with h_k(m) = Σ m_i k^(L-i+1) over the message split into 15-byte blocks m_i (plus a
final block holding the length, so messages of different lengths never share a polynomial), k the secret
hash point and r a fresh uniform pad. h is ε-almost-Δ-universal over Z_p with ε = (L + 1)/p, so (h + r)
is ε-almost-strongly-universal: a forger's chance per message is at most
(L + 1)/2^127 ≈ 2^-107 for a 100 MB message. The hash point k may be reused across messages; each pad
never is. A pad is 16 bytes of key reduced mod p (statistical distance 2^-127 from uniform on Z_p).

The pool (``AuthKeyPool``) is one owner-only file per party holding k and two pad streams, one per
direction (Alice → Bob, Bob → Alice); both parties hold identical copies. The first pool is pre-shared
(``provision``); later ones are refilled from committed QKD key (``refill``).
"""

from __future__ import annotations

import os
import struct
import threading
from pathlib import Path

from qlab.storage.secret import write_secret_atomic

P127 = (1 << 127) - 1
TAG_BYTES = 16
PAD_BYTES = 16
BLOCK_BYTES = 15  # 120-bit blocks stay below p
MAGIC = b"QLWCP1\0\0"
ROLES = ("alice", "bob")


class PoolExhausted(Exception):
    """The pool has no pad left for a tag."""


def poly_hash(k: int, message: bytes) -> int:
    """h_k(message) in Z_p (Horner), with the message length as the last coefficient."""
    h = 0
    mv = memoryview(message)
    fb = int.from_bytes
    for i in range(0, len(message), BLOCK_BYTES):
        h = (h + fb(mv[i:i + BLOCK_BYTES], "little") + 1) * k % P127  # +1: leading zero bytes still count
    return (h + len(message)) * k % P127


def wc_tag(k: int, pad: bytes, message: bytes) -> bytes:
    """16-byte tag (h_k(message) + pad) mod p."""
    r = int.from_bytes(pad, "little") % P127
    return ((poly_hash(k, message) + r) % P127).to_bytes(TAG_BYTES, "little")


class AuthKeyPool:
    """One party's Wegman–Carter key: hash point k and, per direction, the unused pads from slot ``next``.

    File: MAGIC | k (16 B) | next_alice u64 | next_bob u64 | len_alice u64 | len_bob u64 | pads alice→bob |
    pads bob→alice. Every pad taken or skipped is erased from the file at once (the file is rewritten
    atomically, 0600 in a 0700 directory), so a crash never lets a pad be used twice.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            raise FileNotFoundError(f"{self.path}: no Wegman–Carter key pool (provision one first)") from None
        if data[:8] != MAGIC or len(data) < 56:
            raise ValueError(f"{self.path}: not a Wegman–Carter key pool")
        self.k = int.from_bytes(data[8:24], "little") % P127
        self._k_raw = data[8:24]
        na, nb, la, lb = struct.unpack("<QQQQ", data[24:56])
        if len(data) != 56 + la + lb:
            raise ValueError(f"{self.path}: truncated Wegman–Carter key pool")
        self.next = {"alice": na, "bob": nb}
        self.pads = {"alice": bytearray(data[56:56 + la]), "bob": bytearray(data[56 + la:])}

    @staticmethod
    def provision(paths: dict[str, Path], pads_per_direction: int = 4096) -> None:
        """Write identical fresh pools (hash point and pads from the OS CSPRNG) for both parties: the
        pre-shared key that bootstraps Wegman–Carter. ``paths`` maps role -> file."""
        k = os.urandom(16)
        pads = {r: os.urandom(PAD_BYTES * pads_per_direction) for r in ROLES}
        for path in paths.values():
            AuthKeyPool._write(Path(path), k, {"alice": 0, "bob": 0}, pads)

    @staticmethod
    def _write(path: Path, k: bytes, nxt: dict[str, int], pads: dict[str, bytes]) -> None:
        head = MAGIC + k + struct.pack("<QQQQ", nxt["alice"], nxt["bob"], len(pads["alice"]), len(pads["bob"]))
        write_secret_atomic(path, head + bytes(pads["alice"]) + bytes(pads["bob"]))

    def _save(self) -> None:
        self._write(self.path, self._k_raw, self.next, self.pads)

    def available_bits(self, sender: str) -> int:
        return 8 * len(self.pads[sender])

    def take(self, sender: str) -> tuple[int, bytes]:
        """(slot, pad) for the next tag ``sender`` sends; the pad is erased from the pool before it is used.
        Raises PoolExhausted."""
        with self._lock:
            if len(self.pads[sender]) < PAD_BYTES:
                raise PoolExhausted(f"Wegman–Carter pool {self.path.name}: no pad left for {sender}'s tags")
            slot, pad = self.next[sender], bytes(self.pads[sender][:PAD_BYTES])
            del self.pads[sender][:PAD_BYTES]
            self.next[sender] += 1
            self._save()
            return slot, pad

    def pad_for(self, sender: str, slot: int) -> bytes:
        """The pad of ``sender``'s tag in ``slot`` (≥ the next unused one, else a replay); pads of skipped
        slots and this one are erased. Raises PoolExhausted or ValueError (replayed slot)."""
        with self._lock:
            skip = slot - self.next[sender]
            if skip < 0:
                raise ValueError(f"pad slot {slot} of {sender} was used already (replay)")
            if len(self.pads[sender]) < PAD_BYTES * (skip + 1):
                raise PoolExhausted(f"Wegman–Carter pool {self.path.name}: slot {slot} beyond the pool")
            pad = bytes(self.pads[sender][PAD_BYTES * skip:PAD_BYTES * (skip + 1)])
            del self.pads[sender][:PAD_BYTES * (skip + 1)]
            self.next[sender] = slot + 1
            self._save()
            return pad

    def refill(self, pads: dict[str, bytes]) -> None:
        """Append committed key bytes to each direction's pad stream (both parties append the same bytes)."""
        with self._lock:
            for role, extra in pads.items():
                self.pads[role] += extra
            self._save()
