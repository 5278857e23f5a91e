"""Final keys and authentication keys on disk: owner-only files (0600) in owner-only directories (0700),
never logged.

Key store record: b"QLKEY1" | uint64 unix time (ns) | uint32 key bits | 16-byte key id | packed key bits. Both
parties store a block under the same id (Alice draws it at commit), so ids pair keys across the two stores.

Authentication keys of the lab (both parties in this process, one data directory) live in ``keys/auth/``:
``hmac.psk`` (32 bytes, HMAC-SHA256 lab mode) and ``alice.wcpool`` / ``bob.wcpool`` (Wegman–Carter hash
point and pads, identical for both parties). ``lab_authenticators`` creates them on first use from the OS
CSPRNG: that first key is the pre-shared one. On a real two-site link they are provisioned once by copying
the files over a trusted path; afterwards Wegman–Carter pads are refilled from committed key.
"""

from __future__ import annotations

import os
import struct
import time
from pathlib import Path

import numpy as np

from qlab.qkd.auth import Authenticator, HmacAuth, WegmanCarterAuth
from qlab.qkd.wegman_carter import AuthKeyPool
from qlab.storage.secret import create_secret_file, open_secret_append, secret_dir

MAGIC = b"QLKEY1"
AUTH_MODES = ("hmac", "wegman-carter")


class KeyStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    def append(self, bits: np.ndarray, key_id: bytes | None = None) -> bytes:
        """Append a key; returns its id (random unless given; safe to log)."""
        key_id = key_id or os.urandom(16)
        if len(key_id) != 16:
            raise ValueError("a key id has 16 bytes")
        record = MAGIC + struct.pack("<QI", time.time_ns(), int(bits.size)) + key_id + np.packbits(bits).tobytes()
        fd = open_secret_append(self.path)
        try:
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
