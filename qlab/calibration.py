"""Versioned calibration records: append-only JSON lines with timestamps, never edits of the user's config.

Each record: ``{"version", "time", "kind", "values", "source"}``. The latest record of a kind is applied
when a lab opens (delays to taggers, compensator positions to polarization controllers).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any


class CalibrationStore:
    def __init__(self, path: Path, writable: bool = True):
        """``writable=False``: ``add`` returns the record without appending it (runs with --no-record)."""
        self.path = Path(path)
        self.writable = writable

    def records(self, kind: str | None = None) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        out = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                rec = json.loads(line)
                if kind is None or rec["kind"] == kind:
                    out.append(rec)
        return out

    def latest(self, kind: str) -> dict[str, Any] | None:
        recs = self.records(kind)
        return recs[-1] if recs else None

    def add(self, kind: str, values: dict[str, Any], source: str = "") -> dict[str, Any]:
        rec = {"version": len(self.records(kind)) + 1, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
               "kind": kind, "values": values, "source": source}
        if not self.writable:
            return rec
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(rec) + "\n")
            f.flush()
            os.fsync(f.fileno())
        return rec
