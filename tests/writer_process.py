"""Run as a subprocess by the storage tests: writes chunks forever, printing how many tags are flushed."""

from __future__ import annotations

import sys

import numpy as np

from qlab.storage.runfile import RunFile
from qlab.types import TagChunk


def main(path: str, chunk_tags: int = 50_000) -> None:
    rng = np.random.default_rng(1)
    t = 0
    total = 0
    rf = RunFile(path, taggers=["tagger"], procedure="writer-test")
    rf.log_settings("pump", {"current_set": {"value": 0.1, "unit": "A"}})
    while True:
        ts = t + np.cumsum(rng.integers(1, 2_000_000, chunk_tags))
        t = int(ts[-1])
        rf.append_tags(TagChunk(ts.astype(np.int64), rng.integers(1, 9, chunk_tags).astype(np.int16), 0, t))
        total += chunk_tags
        print(total, flush=True)
        line = sys.stdin.readline()  # the parent paces the writer
        if not line or line.strip() == "finish":
            rf.finish()
            print("finished", flush=True)
            return


if __name__ == "__main__":
    main(sys.argv[1])
