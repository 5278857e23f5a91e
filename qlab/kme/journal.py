"""Write-ahead journal of a KME: one JSON object per line, appended and fsync'd before the action it records
takes effect (a reservation before the peer hears of it, a delivery before the key leaves the process).

The journal holds key IDs, SAE IDs and key-store ranges, never key bits; it is still an owner-only file
(0600 in a 0700 directory) because it maps IDs to key material. A line torn by a crash (no trailing newline,
or not JSON) is the last one and is dropped: the action it would have recorded never happened.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

from qlab.storage.secret import open_secret_append


class Journal:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._repaired = False

    def _repair(self, fd: int) -> None:
        """Cut a torn last line off before the first append of this process."""
        size = os.fstat(fd).st_size
        if size == 0:
            return
        data = self.path.read_bytes()  # fd is write-only (O_APPEND)
        keep = data.rfind(b"\n") + 1
        if keep != size:
            os.ftruncate(fd, keep)

    def append(self, records: list[dict[str, Any]]) -> None:
        """Append ``records`` durably (one write, one fsync)."""
        if not records:
            return
        data = b"".join(json.dumps(r, separators=(",", ":")).encode() + b"\n" for r in records)
        with self._lock:
            fd = open_secret_append(self.path)
            try:
                if not self._repaired:
                    self._repair(fd)
                    self._repaired = True
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)

    def replay(self) -> list[dict[str, Any]]:
        """Every complete record in order (empty if the journal does not exist)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        out = []
        for line in data.split(b"\n")[:-1]:  # the part after the last newline is torn or empty
            try:
                out.append(json.loads(line))
            except ValueError:
                break  # only a crash mid-write leaves a bad line, and it is the last one
        return out
