"""Part of a run file's stream for `qlab analyze --step/--segment`.

A run file holds the tags of every acquisition of a run back to back (a demo's delay scan, polarization
probes and CHSH settings in one stream). ``--step NAME`` picks the tags a demo step recorded, from the tag
index ranges the demo stores in its ``tag_ranges`` result; ``--segment N`` picks the N-th acquisition, found
from the pauses of the tagger stream between acquisitions (no tag for SEGMENT_PAUSE_PS while instruments
move; within an acquisition even dark counts alone leave gaps of milliseconds at most).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from qlab.errors import QlabError
from qlab.types import TagChunk

SEGMENT_PAUSE_PS = 50_000_000_000  # 50 ms


def _tag_ranges(path: str | Path) -> dict[str, list[int]]:
    from qlab.storage.reader import RunReader

    with open(path, "rb") as f:
        if not f.read(8).startswith(b"\x89HDF"):
            raise QlabError(f"{path}: --step and --segment need a qlab run file (HDF5)")
    with RunReader(path) as r:
        if not r.is_qlab:
            raise QlabError(f"{path}: --step and --segment need a qlab run file; this one is not")
        found = [x["data"] for x in r.results() if x["name"] == "tag_ranges"]
        procedure = r.metadata().get("procedure")
    if not found:
        raise QlabError(f"{path}: this {procedure} run file records no per-step tag ranges (only demo run files "
                        "written by this qlab version do); use --segment N")
    return found[-1]


def segment_bounds(chunks: Iterator[TagChunk], pause_ps: int = SEGMENT_PAUSE_PS) -> list[tuple[int, int]]:
    """[start, stop) tag indices of the acquisitions in a stream: runs of tags without a pause > pause_ps."""
    bounds: list[tuple[int, int]] = []
    start, offset, last = 0, 0, None
    for chunk in chunks:
        t = chunk.timestamps
        if not t.size:
            continue
        if last is not None and t[0] - last > pause_ps:
            bounds.append((start, offset))
            start = offset
        for i in np.flatnonzero(np.diff(t) > pause_ps):
            bounds.append((start, offset + int(i) + 1))
            start = offset + int(i) + 1
        offset += t.size
        last = int(t[-1])
    if offset > start:
        bounds.append((start, offset))
    return bounds


def slice_stream(chunks: Iterator[TagChunk], start: int, stop: int) -> Iterator[TagChunk]:
    """The tags with indices [start, stop) of a chunked stream; each piece spans only its own tags."""
    offset = 0
    for chunk in chunks:
        n = len(chunk)
        lo, hi = max(start - offset, 0), min(stop - offset, n)
        offset += n
        if lo >= hi:
            if offset >= stop:
                return
            continue
        t, c = chunk.timestamps[lo:hi], chunk.channels[lo:hi]
        t0, t1 = int(t[0]), int(t[-1]) + 1
        gaps = chunk.gaps[(chunk.gaps[:, 0] < t1) & (chunk.gaps[:, 1] > t0)] if len(chunk.gaps) else chunk.gaps
        yield TagChunk(t, c, t0, t1, gaps)


def select_tags(path: str | Path, stream: Iterator[TagChunk], step: str | None = None,
                segment: int | None = None) -> tuple[Iterator[TagChunk], str]:
    """(the selected part of ``stream``, a description of it). QlabError naming the valid choices."""
    if step is not None:
        ranges = _tag_ranges(path)
        if step not in ranges:
            raise QlabError(f"{path}: no step {step!r}; steps with recorded tags: "
                            f"{', '.join(k for k, v in ranges.items() if v[1] > v[0]) or 'none'}")
        start, stop = ranges[step]
        if stop <= start:
            raise QlabError(f"{path}: step {step!r} recorded no tags (a QKD key run keeps its tags secret)")
        return slice_stream(stream, start, stop), f"step {step}: tags {start:,}..{stop:,}"
    assert segment is not None
    from qlab.analysis.offline import open_stream

    first_pass, closer = open_stream(path)
    try:
        bounds = segment_bounds(first_pass)
    finally:
        if closer is not None:
            closer.close()
    if not 0 <= segment < len(bounds):
        raise QlabError(f"{path}: no segment {segment}; the stream has {len(bounds)} acquisition segment(s), "
                        f"0..{len(bounds) - 1}")
    start, stop = bounds[segment]
    return slice_stream(stream, start, stop), f"segment {segment} of {len(bounds)}: tags {start:,}..{stop:,}"
