"""Exact analysis of one stored stream in independent time segments, on local cores or a Dask cluster.

A segment is a range of tag indices (run / Photon-HDF5 files) or record indices (PTU T2 files). Each segment
task opens the file itself and reads only its range plus a bounded context: the tags within reach before it
(the coincidence/accidental scan, the histogram range, the n-fold margin) and, for n-fold groups, after it.
Every pair is counted by the segment holding its later raw tag (``qlab.stream.parallel.count_segment``), every
n-fold event by the segment holding its anchor, every histogram entry by the segment holding the later tag,
so the sum over segments equals the serial streaming pass for any segment length. Duration and exposure are
reproduced from the serial reader's chunking (``READ_CHUNK``), including its float summation order.

Tasks are plain functions of picklable arguments (``SegmentTask``), so the same code runs in a local process
pool (HDF5 reads hold a library-wide lock, so threads would serialise them) or on Dask workers that see the
file at the same path (shared storage).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qlab.analysis.allocator import freed_memory_reused
from qlab.errors import FileFormatError
from qlab.stream.kernels import channel_histogram
from qlab.stream.parallel import CountSpec, count_segment

READ_CHUNK = 1 << 22  # tags (HDF5) / records (PTU) per chunk of the serial readers (RunReader, iter_ptu_t2)
DEFAULT_SEGMENT = 1 << 22  # segment length when none is given: a few per worker for balance, bounded memory
_CONTEXT_READ = 1 << 12  # first size of the context reads; doubled until the context is covered


@dataclass(frozen=True)
class AnalysisSpec:
    """What a segment computes. ``nfold_groups``: channel lists, anchor first. ``histogram``: (reference
    channel, other channels, range ps, bin ps) of a cross-correlation, or None. Times in ps."""

    channels: tuple[int, ...]
    window_ps: int
    delays_ps: tuple[tuple[int, int], ...] = ()
    accidentals_offset_ps: int = 0
    nfold_groups: tuple[tuple[int, ...], ...] = ()
    histogram: tuple[int, tuple[int, ...], int, int] | None = None

    @property
    def count_spec(self) -> CountSpec:
        return CountSpec(self.channels, self.window_ps, self.delays_ps, self.accidentals_offset_ps)

    def delay(self, ch: int) -> int:
        return dict(self.delays_ps).get(ch, 0)

    def nfold_margin_ps(self) -> int:
        """Raw-time reach of an n-fold partner around its anchor (half window + delay spread)."""
        if not self.nfold_groups:
            return 0
        d = [self.delay(c) for g in self.nfold_groups for c in g]
        return self.window_ps // 2 + max(d) - min(d)

    def hist_scan_ps(self) -> int:
        if self.histogram is None:
            return 0
        ref, others, range_ps, _ = self.histogram
        d = [self.delay(c) for c in (ref, *others)]
        return range_ps + max(d) - min(d)

    def back_ps(self) -> int:
        return max(self.count_spec.counter().scan, self.nfold_margin_ps(), self.hist_scan_ps())


@dataclass
class SegmentCounts:
    """Additive results of one or more segments. ``chunk_spans``: (reader chunk index, covered ps, ps lost
    to gaps) for the serial reader's chunks that start in the segment (HDF5); ``last_photon``: (record index,
    time ps) of the segment's last photon (PTU)."""

    singles: np.ndarray
    coincidences: np.ndarray
    accidentals: np.ndarray
    nfold: np.ndarray
    channel_events: np.ndarray
    histogram: np.ndarray | None
    tags: int = 0
    chunk_spans: list[tuple[int, int, int]] = field(default_factory=list)
    last_photon: tuple[int, int] | None = None

    def __add__(self, other: SegmentCounts) -> SegmentCounts:
        last = max((x for x in (self.last_photon, other.last_photon) if x is not None), default=None)
        return SegmentCounts(self.singles + other.singles, self.coincidences + other.coincidences,
                             self.accidentals + other.accidentals, self.nfold + other.nfold,
                             self.channel_events + other.channel_events,
                             None if self.histogram is None else self.histogram + other.histogram,
                             self.tags + other.tags, self.chunk_spans + other.chunk_spans, last)


@dataclass(frozen=True)
class SegmentTask:
    """One unit of work: analyse indices [i0, i1) of ``path`` (tags of an HDF5 file, records of a PTU) in
    segments of ``segment`` indices, opening the file once. ``ptu_offset_units``: overflow time units before
    the reader chunk holding record i0 (PTU only, from ``ptu_overflow_units``)."""

    path: str
    kind: str  # "h5" or "ptu"
    i0: int
    i1: int
    n: int  # tags / records in the file (PTU: those analysed)
    spec: AnalysisSpec
    ptu_offset_units: int = 0
    segment: int = DEFAULT_SEGMENT


# ----------------------------------------------------------------------------------------------- sources

class _H5Source:
    """Tag ranges of a run / Photon-HDF5 file's first tagger, as ``RunReader`` reads them (the tag datasets,
    then a killed writer's pending partial chunk)."""

    def __init__(self, path: str):
        from qlab.storage.reader import RunReader

        self.reader = RunReader(path)
        self.n = self.reader.n_tags(0)
        self.gaps = self.reader.gaps(0)
        self._buffers: tuple[np.ndarray, np.ndarray] | None = None

    def close(self) -> None:
        self.reader.close()

    def read(self, a: int, b: int, reuse: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Tags [a, b) as (int64 ps, int16 channels), exactly as RunReader.iter_chunks reads them.
        ``reuse``: decode into this source's buffers (the result is valid until the next reusing read)."""
        a, b = max(a, 0), min(b, self.n)
        if b <= a:
            return np.zeros(0, np.int64), np.zeros(0, np.int16)
        buffers = None
        if reuse:
            if self._buffers is None or self._buffers[0].size < b - a:
                g = self.reader.f[self.reader.groups[0]]
                det = g.get("detectors")
                self._buffers = (np.empty(b - a, g["timestamps"].dtype),
                                 np.empty(b - a, det.dtype if det is not None else np.int16))
            buffers = self._buffers
        return self.reader.read_tags(0, a, b, buffers)


class _PtuSource:
    """Photons of a record range of a PTU T2 file, timed exactly as ``iter_ptu_t2`` times them: the overflow
    units before a record come from the task's offset at its reader chunk plus a scan of the records since."""

    def __init__(self, path: str, n: int, chunk_offset_units: int, chunk_start: int):
        import ptufile

        from qlab.storage.ptu import REC_HYDRAHARP1_T2, REC_PICOHARP_T2, T2_TYPES, read_ptu_header

        self.path = path
        self.header = read_ptu_header(path)
        self.n = n
        self.records = np.memmap(path, np.dtype("<u4"), "r", offset=self.header.data_offset,
                                 shape=(self.header.records_in_file,))
        try:
            self.ptu = ptufile.PtuFile(path)
        except Exception as exc:  # noqa: BLE001 - ptufile raises several types for bad files
            raise FileFormatError(path, f"not a readable PTU file: {exc}") from None
        if self.ptu.is_t3 or int(self.ptu.record_type) not in T2_TYPES:
            self.ptu.close()
            raise FileFormatError(path, f"record type {self.ptu.record_type!r} is not a T2 record type; qlab "
                                        "imports T2 time-tag files")
        self.one_per_record = self.header.record_type == REC_HYDRAHARP1_T2
        self.picoharp = self.header.record_type == REC_PICOHARP_T2
        self.res_ps = self.header.resolution_s / 1e-12
        self._known = (chunk_start, chunk_offset_units)  # (record index, overflow units before it)
        self.segment_last_record = -1

    def close(self) -> None:
        self.ptu.close()
        del self.records

    def units(self, a: int, b: int) -> int:
        from qlab.storage.ptu import _overflow_units

        return _overflow_units(np.asarray(self.records[a:b]), self.one_per_record, self.picoharp) if b > a else 0

    def offset_at(self, a: int) -> int:
        k, off = self._known
        return off + self.units(k, a) if a >= k else off - self.units(a, k)

    def read(self, a: int, b: int, reuse: bool = False) -> tuple[np.ndarray, np.ndarray]:
        a, b = max(a, 0), min(b, self.n)
        if b <= a:
            return np.zeros(0, np.int64), np.zeros(0, np.int16)
        recs = np.ascontiguousarray(self.records[a:b])
        dec = self.ptu.decode_records(recs)
        off = self.offset_at(a)
        times = dec["time"].astype(np.int64) + off
        from qlab.storage.ptu import _overflow_units

        self._known = (b, off + _overflow_units(recs, self.one_per_record, self.picoharp))  # later reads start here
        photons = dec["channel"] >= 0
        t = np.round(times[photons] * self.res_ps).astype(np.int64)
        self._read_records = a + np.flatnonzero(photons)  # record index of every photon read
        return t, dec["channel"][photons].astype(np.int16)

    def photons_in(self, a: int, b: int) -> int:
        """Photons among records [a, b) of the last ``read`` (which covered them); also notes the record of
        the last one for the duration bookkeeping."""
        r = self._read_records
        lo, hi = int(np.searchsorted(r, a, "left")), int(np.searchsorted(r, b, "left"))
        if hi > lo:
            self.segment_last_record = int(r[hi - 1])
        return hi - lo


def _with_context(src: Any, i0: int, i1: int, back_ps: int, fwd_ps: int
                  ) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Tags of indices [i0, i1) with every tag within ``back_ps`` before and ``fwd_ps`` after them; returns
    (t, c, local start, local stop of the segment's tags). One read covers the segment and _CONTEXT_READ
    indices on each side that is needed; when that is not enough, more is read in doubling steps, so a
    sparse neighbourhood costs a few small reads, never the whole file."""
    lo = max(0, i0 - _CONTEXT_READ)
    hi = min(src.n, i1 + _CONTEXT_READ) if fwd_ps > 0 else i1
    t, c = src.read(lo, hi, reuse=True)  # the previous segment's arrays are no longer used
    n_before = _count_from(src, lo, i0)
    n_seg = _count_from(src, i0, i1)
    if n_seg == 0:
        return t[:0], c[:0], 0, 0
    first, last = int(t[n_before]), int(t[n_before + n_seg - 1])
    step = 2 * _CONTEXT_READ
    while lo > 0 and (n_before == 0 or int(t[0]) >= first - back_ps):
        new_lo = max(0, lo - step)
        bt, bc = src.read(new_lo, lo)
        t, c = np.concatenate([bt, t]), np.concatenate([bc, c])
        n_before += bt.size
        lo, step = new_lo, step * 2
    step = 2 * _CONTEXT_READ
    while fwd_ps > 0 and hi < src.n and (t.size == n_before + n_seg or int(t[-1]) <= last + fwd_ps):
        new_hi = min(src.n, hi + step)
        ft, fc = src.read(hi, new_hi)
        t, c = np.concatenate([t, ft]), np.concatenate([c, fc])
        hi, step = new_hi, step * 2
    return t, c, n_before, n_before + n_seg


def _count_from(src: Any, a: int, b: int) -> int:
    """Tags among indices [a, b) of the last read: all of them for a tag file; PTU records hold overflows
    too, so the PTU source says how many photons each sub-range of its last read held."""
    return b - a if not hasattr(src, "photons_in") else src.photons_in(a, b)


# ------------------------------------------------------------------------------------------ segment work

def _empty_counts(spec: AnalysisSpec) -> SegmentCounts:
    n = len(spec.channels)
    hist = None
    if spec.histogram is not None:
        _, others, range_ps, bin_ps = spec.histogram
        from qlab.stream.histogram import _bins

        hist = np.zeros((1 + len(others), _bins(range_ps, bin_ps)[1]), np.int64)
    return SegmentCounts(np.zeros(n, np.int64), np.zeros((n, n), np.int64), np.zeros((n, n), np.int64),
                         np.zeros(len(spec.nfold_groups), np.int64), np.zeros(512, np.int64), hist)


def count_tags(spec: AnalysisSpec, t: np.ndarray, c: np.ndarray, j0: int, j1: int, gaps: np.ndarray
               ) -> SegmentCounts:
    """Counts owned by tags [j0, j1) of (t, c), whose context around them is complete (see module doc)."""
    out = _empty_counts(spec)
    if j1 <= j0:
        return out
    res = count_segment(spec.count_spec, t, c, j0, j1, gaps)
    out.singles, out.coincidences, out.accidentals = res.singles, res.coincidences, res.accidentals
    channel_histogram(c[j0:j1], out.channel_events)
    out.tags = j1 - j0
    for gi, group in enumerate(spec.nfold_groups):
        out.nfold[gi] = _nfold_anchors(spec, group, t, c, j0, j1)
    if spec.histogram is not None:
        out.histogram = _histogram(spec, t, c, j0, j1)
    return out


def _nfold_anchors(spec: AnalysisSpec, group: tuple[int, ...], t: np.ndarray, c: np.ndarray, j0: int, j1: int
                   ) -> int:
    """Anchors (group[0] tags in [j0, j1)) with a tag of every other group channel within half a window in
    delay-corrected time, as NFoldCounter defines an n-fold event."""
    half = spec.window_ps // 2
    seg_c = c[j0:j1]
    anchors = t[j0:j1][seg_c == group[0]] - spec.delay(group[0])
    ok = np.ones(anchors.size, bool)
    for ch in group[1:]:
        partners = np.sort(t[c == ch] - spec.delay(ch))
        if partners.size == 0:
            return 0
        i = np.searchsorted(partners, anchors - half, "left")
        ok &= (i < partners.size) & (partners[np.minimum(i, partners.size - 1)] <= anchors + half)
    return int(np.count_nonzero(ok))


def _histogram(spec: AnalysisSpec, t: np.ndarray, c: np.ndarray, j0: int, j1: int) -> np.ndarray:
    from qlab.stream.coincidence import channel_lut
    from qlab.stream.histogram import _bins
    from qlab.stream.kernels import cross_histogram_from

    assert spec.histogram is not None
    ref, others, range_ps, bin_ps = spec.histogram
    channels = [ref, *[o for o in others if o != ref]]
    delay = np.array([spec.delay(ch) for ch in channels], np.int64)
    lo, nbins = _bins(range_ps, bin_ps)
    hist = np.zeros((len(channels), nbins), np.int64)
    # Pairs whose later tag is in [j0, j1); the segment ends at j1, so later tags never pair with context after.
    cross_histogram_from(t[:j1], c[:j1], channel_lut(channels), 0, delay, lo, bin_ps, nbins,
                         range_ps + int(delay.max() - delay.min()), hist, j0)
    return hist


def _chunk_spans(src: _H5Source, i0: int, i1: int, t: np.ndarray, j0: int) -> list[tuple[int, int, int]]:
    """(chunk index, t_stop - t_start, ps of gaps overlapping the chunk) of the serial reader's chunks that
    start in [i0, i1), as RunReader.iter_chunks frames them."""
    spans = []
    for k in range(-(-i0 // READ_CHUNK), -(-i1 // READ_CHUNK)):
        a, b = k * READ_CHUNK, min((k + 1) * READ_CHUNK, src.n)
        t0 = int(t[j0 + a - i0])
        t1 = (int(t[j0 + b - 1 - i0]) if b <= i1 else int(src.read(b - 1, b)[0][0])) + 1
        g = src.gaps
        lost = int((g[:, 1] - g[:, 0])[(g[:, 0] < t1) & (g[:, 1] > t0)].sum()) if len(g) else 0
        spans.append((k, t1 - t0, lost))
    return spans


def run_segment(task: SegmentTask) -> SegmentCounts:
    """Analyse one segment of a file (runs on any worker that sees ``task.path``). Raises FileFormatError
    naming the file for damaged data, as the serial readers do."""
    try:
        with freed_memory_reused():
            return _run_segment(task)
    except FileFormatError:
        raise
    except Exception as exc:  # noqa: BLE001 - h5py, ptufile and NumPy raise many types on damaged files
        what = "PTU records" if task.kind == "ptu" else "tag data"
        raise FileFormatError(task.path, f"damaged {what}: {type(exc).__name__}: {exc}") from None


def _run_segment(task: SegmentTask) -> SegmentCounts:
    spec = task.spec
    fwd = spec.nfold_margin_ps()
    if task.kind == "h5":
        src: Any = _H5Source(task.path)
        gaps = src.gaps
    else:
        src = _PtuSource(task.path, task.n, task.ptu_offset_units, (task.i0 // READ_CHUNK) * READ_CHUNK)
        gaps = np.zeros((0, 2), np.int64)
    total = _empty_counts(spec)
    try:
        for a, b in plan_segments(task.i1, task.segment, start=task.i0):
            t, c, j0, j1 = _with_context(src, a, b, spec.back_ps(), fwd)
            out = count_tags(spec, t, c, j0, j1, gaps)
            if task.kind == "h5" and j1 > j0:
                out.chunk_spans = _chunk_spans(src, a, b, t, j0)
            elif j1 > j0:
                out.last_photon = (src.segment_last_record, int(t[j1 - 1]))
            total = total + out
    finally:
        src.close()
    return total


def ptu_overflow_units(path: str, a: int, b: int) -> int:
    """Overflow time units in records [a, b) of a PTU T2 file (bounded memory: a memory map)."""
    from qlab.storage.ptu import REC_HYDRAHARP1_T2, REC_PICOHARP_T2, _overflow_units, read_ptu_header

    h = read_ptu_header(path)
    recs = np.memmap(path, np.dtype("<u4"), "r", offset=h.data_offset, shape=(h.records_in_file,))
    total = 0
    for s in range(a, b, READ_CHUNK):
        total += _overflow_units(np.asarray(recs[s:min(s + READ_CHUNK, b)]), h.record_type == REC_HYDRAHARP1_T2,
                                 h.record_type == REC_PICOHARP_T2)
    return total


# ------------------------------------------------------------------------------------------------ driver

Mapper = Callable[[Callable[[Any], Any], list[Any]], list[Any]]


def local_mapper(workers: int, start_method: str | None = None) -> Mapper:
    """Run tasks in ``workers`` local processes (in this process for 1). Processes, not threads: HDF5 and
    h5py serialise every read behind one lock, and reading is most of the work. ``start_method``: a
    multiprocessing start method; default fork in a single-threaded process, else forkserver."""
    def run(fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
        if workers <= 1 or len(items) <= 1:
            return [fn(x) for x in items]
        import multiprocessing
        import threading
        from concurrent.futures import ProcessPoolExecutor

        # fork starts a worker in milliseconds with everything imported and compiled; a process with other
        # threads (GUI, servers) may hold locks a forked child would inherit held, so it gets forkserver
        # (about a second per worker to import qlab and load the compiled kernels).
        method = start_method or ("fork" if threading.active_count() == 1 and os.name == "posix" else "forkserver")
        with ProcessPoolExecutor(min(workers, len(items)), mp_context=multiprocessing.get_context(method)) as pool:
            return list(pool.map(fn, items))
    run.slots = workers  # type: ignore[attr-defined]
    return run


def dask_mapper(client: Any) -> Mapper:
    """Run tasks on a ``dask.distributed.Client``'s workers (they must see the files at the same paths)."""
    def run(fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
        futures = client.map(fn, items, pure=False)
        return client.gather(futures)
    run.slots = max(1, sum(w.get("nthreads", 1) for w in client.scheduler_info()["workers"].values()))  # type: ignore[attr-defined]
    return run


def file_kind(path: str | Path) -> str:
    with open(path, "rb") as f:
        magic = f.read(8)
    if magic.startswith(b"PQTTTR"):
        return "ptu"
    if magic.startswith(b"\x89HDF"):
        return "h5"
    raise FileFormatError(str(path), f"unknown format (first bytes {magic!r}); expected HDF5 or PTU")


def _ptu_records(path: str, allow_truncated: bool) -> int:
    from qlab.storage.ptu import check_ptu_complete

    h = check_ptu_complete(path, allow_truncated)
    return min(h.records_in_file, h.records_declared)


def plan_segments(n: int, segment_tags: int, start: int = 0) -> list[tuple[int, int]]:
    """[i0, i1) ranges of ``segment_tags`` indices covering [start, n). Raises ValueError for a length <= 0."""
    if segment_tags <= 0:
        raise ValueError(f"segment length must be positive, got {segment_tags}")
    return [(a, min(a + segment_tags, n)) for a in range(start, n, segment_tags)]


def plan_tasks(n: int, segment_tags: int, slots: int) -> list[tuple[int, int]]:
    """Task ranges: [0, n) in equal parts, two per slot (balanced even when segments do not divide evenly;
    each task opens the file once and counts its part in segments of at most ``segment_tags``), one part
    for one slot, never more parts than segments. Any split is exact, so parts need not align to segments."""
    n_seg = -(-n // segment_tags) if n else 0
    n_tasks = max(1, min(n_seg, 1 if slots <= 1 else 2 * slots))
    edges = [n * k // n_tasks for k in range(n_tasks + 1)]
    return [(a, b) for a, b in zip(edges[:-1], edges[1:], strict=True) if b > a]


@dataclass
class FileCounts:
    """Totals of one file: the summed segment counts, its duration and exposure (s), and segments used."""

    counts: SegmentCounts
    duration_s: float
    exposure_s: float
    segments: int


def count_file(path: str | Path, spec: AnalysisSpec, mapper: Mapper, segment_tags: int | None = None,
               allow_truncated: bool = False) -> FileCounts:
    """Analyse the whole first-tagger stream of ``path`` in segments through ``mapper``. Identical to the
    serial streaming pass. Raises FileFormatError for unknown or damaged files, ValueError for a bad length."""
    path = str(path)
    kind = file_kind(path)
    seg = segment_tags or DEFAULT_SEGMENT
    if kind == "h5":
        src = _H5Source(path)
        n = src.n
        src.close()
        if seg <= 0:
            raise ValueError(f"segment length must be positive, got {seg}")
        tasks = [SegmentTask(path, kind, a, b, n, spec, segment=seg)
                 for a, b in plan_tasks(n, seg, getattr(mapper, "slots", 1))]
        parts = mapper(run_segment, tasks)
        total = _sum(parts, spec)
        duration = exposure = 0.0
        for _, span, lost in sorted(total.chunk_spans):  # the serial reader's order of float additions
            duration += span * 1e-12
            exposure += (span - lost) * 1e-12
        return FileCounts(total, duration, exposure, len(tasks))
    n = _ptu_records(path, allow_truncated)
    chunk_ranges = plan_segments(n, READ_CHUNK)
    units = mapper(_ptu_units_task, [(path, a, b) for a, b in chunk_ranges])
    chunk_offsets = np.concatenate([[0], np.cumsum(units, dtype=np.int64)]).astype(np.int64)
    if seg <= 0:
        raise ValueError(f"segment length must be positive, got {seg}")
    tasks = [SegmentTask(path, kind, a, b, n, spec, int(chunk_offsets[a // READ_CHUNK]), seg)
             for a, b in plan_tasks(n, seg, getattr(mapper, "slots", 1))]
    parts = mapper(run_segment, tasks)
    total = _sum(parts, spec)
    res_ps = _ptu_resolution_ps(path)
    duration = 0.0
    t_prev = 0
    for k, (a, _b) in enumerate(chunk_ranges):  # iter_ptu_t2's chunk frames, in its order
        if k + 1 < len(chunk_ranges):
            t_stop = int(round(int(chunk_offsets[k + 1]) * res_ps))
        else:
            lp = total.last_photon
            t_stop = lp[1] + 1 if lp is not None and lp[0] >= a else t_prev
        t_stop = max(t_stop, t_prev)
        duration += (t_stop - t_prev) * 1e-12
        t_prev = t_stop
    return FileCounts(total, duration, duration, len(tasks))


def _ptu_units_task(item: tuple[str, int, int]) -> int:
    return ptu_overflow_units(*item)


def _ptu_resolution_ps(path: str) -> float:
    from qlab.storage.ptu import read_ptu_header

    return read_ptu_header(path).resolution_s / 1e-12


def _sum(parts: Iterable[SegmentCounts], spec: AnalysisSpec) -> SegmentCounts:
    total = _empty_counts(spec)
    for p in parts:
        total = total + p
    return total


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))
