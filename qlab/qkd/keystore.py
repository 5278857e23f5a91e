"""Final keys on disk: append-only, owner-only permissions, never logged.

Record: b"QLKEY1" | uint64 unix time (ns) | uint32 key bits | 16-byte random key id | packed key bits.
"""

from __future__ import annotations

import os
import stat
import struct
import time
from pathlib import Path

import numpy as np

MAGIC = b"QLKEY1"


class KeyStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    def append(self, bits: np.ndarray) -> bytes:
        """Append a key; returns its random id (safe to log)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        key_id = os.urandom(16)
        record = MAGIC + struct.pack("<QI", time.time_ns(), int(bits.size)) + key_id + np.packbits(bits).tobytes()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.fchmod(fd, stat.S_IRUSR | stat.S_IWUSR)  # also tighten a file that existed with wider rights
            os.write(fd, record)
            os.fsync(fd)
        finally:
            os.close(fd)
        return key_id

    def read(self) -> list[tuple[bytes, np.ndarray]]:
        data = self.path.read_bytes()
        out, i = [], 0
        while i < len(data):
            if data[i:i + 6] != MAGIC:
                raise ValueError(f"{self.path}: corrupt key record at byte {i}")
            _, nbits = struct.unpack("<QI", data[i + 6:i + 18])
            key_id = data[i + 18:i + 34]
            nbytes = (nbits + 7) // 8
            bits = np.unpackbits(np.frombuffer(data[i + 34:i + 34 + nbytes], np.uint8))[:nbits]
            out.append((key_id, bits))
            i += 34 + nbytes
        return out
