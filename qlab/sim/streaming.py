"""The tag generator: clicks of every simulated detector, in batches, into each streaming tagger's buffer,
and the reads that hand them out (with overflow gaps like a real tagger's full buffer).

Generation runs the Numba kernel (``qlab.sim.kernel``) on two independent xoshiro streams, one per half of
a large batch (two cores). Times in ps: "true" time is the lab's, "tagger" time each tagger's own clock.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from qlab.rng import NORMAL_TABLE, seed_state
from qlab.sim.detectors import DetectorState, click_categories, timing_arrays
from qlab.sim.kernel import alias_table, generate_clicks, insertion_sort_pairs
from qlab.sim.optical import OpticalState
from qlab.sim.taggers import TaggerState
from qlab.types import TagChunk

PARALLEL_MIN_EVENTS = 8_000  # below this a batch is cheaper on one core than the thread hand-off


@functools.cache
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="simlab-gen")


class TagGenerator:
    """Generates physics up to a true time and serves each tagger's stream. Not thread-safe on its own:
    the owning SimLab calls it under its lock.

    ``rng`` (shared with the optics' setup) drives the fibre drift; the kernel draws from its own two
    xoshiro streams seeded from ``seed``.
    """

    batch_s = 0.01
    max_backlog_s = 0.1  # real-time mode: most data one read may be behind; older data overflow

    def __init__(self, optics: OpticalState, detectors: Mapping[str, DetectorState],
                 taggers: Mapping[str, TaggerState], seed: int, rng: np.random.Generator):
        self.optics = optics
        self.detectors = detectors
        self.taggers = taggers
        self._rng = rng
        self._state = seed_state(seed)
        self._state_b = seed_state(seed + 0x5EED)  # the second half of each parallel batch
        self.det_names = list(detectors)
        self.tagger_names = list(taggers)
        self.gen_true_ps = 0  # true time up to which physics has been generated
        self._last_click = np.full(len(self.det_names), -1e30)
        self._ap_pending = np.full(len(self.det_names), np.inf)
        self.dirty = True  # a setting changed: the category table must be rebuilt
        self._cache: tuple | None = None
        self._bufs: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    # -- the click process ---------------------------------------------------------------------------------
    def tables(self) -> tuple:
        """Category table of the click process for the current settings (cached until something changes)."""
        if self._cache is not None and not self.dirty and not self.optics.drifting:
            return self._cache
        dets = [self.detectors[n] for n in self.det_names]
        rates, cat_a, cat_b = click_categories(self.optics, dets, self.taggers)
        rates_arr = np.array(rates or [0.0], float)
        total = float(rates_arr.sum())
        alias = alias_table(rates_arr) if total > 0 else (np.ones(1), np.zeros(1, np.int64))
        tagger_of = np.array([self.tagger_names.index(d.tagger) for d in dets], np.int64)
        jitter, shift = timing_arrays(dets, self.taggers)
        self._cache = (total * 1e-12, alias, np.array(cat_a or [-1], np.int64), np.array(cat_b or [-1], np.int64),
                       np.array([d.dead_time_ns * 1e3 for d in dets]),
                       np.array([d.p.afterpulse_probability for d in dets]),
                       np.array([d.p.afterpulse_delay_ns * 1e3 for d in dets]), jitter, shift, tagger_of,
                       np.array([d.input for d in dets], np.int16))
        self.dirty = False
        return self._cache

    def catch_up(self, now_true_ps: int) -> None:
        """Generate physics up to now with the settings in force until now (before a change applies)."""
        if now_true_ps > self.gen_true_ps and any(t.streaming for t in self.taggers.values()):
            self.generate_until(now_true_ps)
        else:
            self.gen_true_ps = max(self.gen_true_ps, now_true_ps)

    def generate_until(self, true_ps: int) -> None:
        # ~500k events per batch keeps the per-batch Python and thread hand-off overhead negligible; 10–250 ms
        # keeps overflow detection and fibre drift fine-grained.
        rate_hz = self.tables()[0] * 1e12
        longest = 25 * self.batch_s
        batch_s = min(longest, max(self.batch_s, 5e5 / rate_hz if rate_hz > 0 else longest))
        batch_ps = int(batch_s * 1e12)
        while self.gen_true_ps < true_ps:
            t0 = self.gen_true_ps
            t1 = min(true_ps, t0 + batch_ps)
            self.optics.step_drift(self._rng, (t1 - t0) * 1e-12)
            self._generate_batch(t0, t1)
            self.gen_true_ps = t1

    def _generate_batch(self, t0: int, t1: int) -> None:
        tables = self.tables()
        rate, dead = tables[0], tables[4]
        taggers = [self.taggers[n] for n in self.tagger_names]
        scale = np.array([t.scale for t in taggers])
        tag_base = np.array([t.tagger_time(t0) for t in taggers], np.int64)
        res = np.array([t.p.resolution_ps for t in taggers], np.int64)
        args = (tables, scale, tag_base, res)
        span_ps = t1 - t0
        if rate * span_ps < PARALLEL_MIN_EVENTS:
            parts = self._run_kernel(self._state, 0.0, float(span_ps), self._last_click, self._ap_pending, 0, args)[0]
        else:
            # Two cores: the halves of the batch are generated at once from independent random streams. The
            # second half starts from a rested detector; at the seam its first click on a detector that the
            # first half left dead is removed, and afterpulses the first half scheduled past the seam are
            # dropped, so the dead-time guarantee holds exactly and the bias is ~1e-6 of the clicks.
            mid = float(span_ps // 2)
            last_b = np.full_like(self._last_click, -1e30)
            ap_b = np.full_like(self._ap_pending, np.inf)
            second = _pool().submit(self._run_kernel, self._state_b, mid, float(span_ps), last_b, ap_b, 1, args)
            parts = self._run_kernel(self._state, 0.0, mid, self._last_click, self._ap_pending, 0, args)[0]
            parts_b, first_idx, first_t = second.result()
            dead_at_seam = (first_idx >= 0) & (first_t - self._last_click < dead)
            if dead_at_seam.any():
                drop = first_idx[dead_at_seam]
                parts_b[0] = tuple(np.delete(a, drop) if a is not None else None for a in parts_b[0])
            parts += parts_b
            np.maximum(self._last_click, last_b, out=self._last_click)
            self._ap_pending[:] = ap_b
        self._last_click -= span_ps
        self._ap_pending -= span_ps
        span = span_ps * 1e-12
        many = len(taggers) > 1
        if many:
            all_t = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
            all_ch = np.concatenate([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
            all_k = np.concatenate([p[2] for p in parts]) if len(parts) > 1 else parts[0][2]
        for k, tg in enumerate(taggers):
            if not tg.streaming:
                continue
            if many:
                sel = all_k == k
                tts, ccs = [all_t[sel]], [all_ch[sel]]
            else:  # the parts go to the tagger as they are: read_tags joins them once
                tts, ccs = [p[0] for p in parts], [p[1] for p in parts]
            if sum(t.size for t in tts) / span > tg.p.max_rate_hz:
                # The tagger's buffer overflows: the whole batch is lost and reported as a gap.
                tg.gaps.append((tg.tagger_time(t0), tg.tagger_time(t1)))
                tg.overflows += 1
                continue
            tg.pend_t.extend(tts)
            tg.pend_ch.extend(ccs)

    def _run_kernel(self, state: np.ndarray, t_from: float, t_to: float, last_click: np.ndarray,
                    ap_pending: np.ndarray, slot: int, args: tuple) -> tuple[list, np.ndarray, np.ndarray]:
        """Clicks in [t_from, t_to) (ps from the batch base) as copied (t, ch, k) parts, plus the output index
        and true time of each detector's first click in the first part."""
        (rate, alias, cat_a, cat_b, dead, ap_p, ap_mean, jitter, shift, tagger_of, inputs), scale, tag_base, res = args
        expected = rate * (t_to - t_from) * 1.3 + 64 + 8 * len(dead)
        cap = int(min(expected, 2e7))
        keep_k = len(self.taggers) > 1
        parts: list[tuple] = []
        first_idx = np.full(len(dead), -1, np.int64)
        first_t = np.zeros(len(dead))
        while True:
            out_t, out_ch, out_k = self._buffers(cap, slot)
            fi = first_idx if not parts else np.full(len(dead), -1, np.int64)
            n, t_reached = generate_clicks(
                state, NORMAL_TABLE, t_from, t_to, rate, alias[0], alias[1], cat_a, cat_b, last_click, ap_pending,
                dead, ap_p, ap_mean, jitter, shift, tagger_of, scale, tag_base, res, inputs, out_t, out_ch, out_k,
                fi, first_t if not parts else np.zeros(len(dead)))
            parts.append((out_t[:n].copy(), out_ch[:n].copy(), out_k[:n].copy() if keep_k else None))
            if t_reached >= t_to:
                return parts, first_idx, first_t
            t_from = t_reached

    def _buffers(self, cap: int, slot: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Reused kernel output buffers (one set per parallel slot): fresh arrays would cost a page fault per
        4 KiB on every batch."""
        buf = self._bufs.get(slot)
        if buf is None or buf[0].size < cap:
            buf = (np.empty(cap, np.int64), np.empty(cap, np.int16), np.empty(cap, np.uint8))
            self._bufs[slot] = buf
        return buf

    # -- tagger streams ----------------------------------------------------------------------------------------
    def start(self, tagger: str, lossless: bool = False) -> None:
        """Start ``tagger``'s stream at the current generation time (call ``catch_up`` first)."""
        tg = self.taggers[tagger]
        tg.streaming = True
        tg.lossless = lossless
        tg.pend_t, tg.pend_ch, tg.gaps = [], [], []
        tg.t_read_ps = tg.tagger_time(self.gen_true_ps)

    def stop(self, tagger: str) -> None:
        self.taggers[tagger].streaming = False

    def read(self, tagger: str, now_true_ps: int, realtime: bool) -> TagChunk:
        """Tags of ``tagger`` from its previous read up to its tagger time at ``now_true_ps``. In real time a
        reader more than ``max_backlog_s`` behind loses the excess as an overflow gap of every streaming
        tagger. Raises KeyError for an unknown tagger."""
        tg = self.taggers[tagger]
        if not tg.streaming:
            t = tg.t_read_ps
            return TagChunk(np.zeros(0, np.int64), np.zeros(0, np.int16), t, t)
        t_stop = tg.tagger_time(now_true_ps)
        if realtime and not tg.lossless and now_true_ps - self.gen_true_ps > self.max_backlog_s * 1e12:
            # The reader fell behind real time: like a real tagger's full buffer, the excess is lost and
            # reported as an overflow gap (excluded from exposure) instead of growing every next read.
            skip_to = now_true_ps - int(self.max_backlog_s * 1e12)
            for other in self.taggers.values():
                if other.streaming:
                    gap0 = other.tagger_time(self.gen_true_ps)
                    # Pending batches are not time-sorted (jitter, per-detector shifts): keep tags and their
                    # channels by one mask, never by a prefix.
                    keep = [t < gap0 for t in other.pend_t]
                    other.pend_t = [t[m] for t, m in zip(other.pend_t, keep, strict=True)]
                    other.pend_ch = [c[m] for c, m in zip(other.pend_ch, keep, strict=True)]
                    other.gaps.append((gap0, other.tagger_time(skip_to)))
                    other.overflows += 1
            self.gen_true_ps = skip_to
            self._last_click[:] = -1e30
            self._ap_pending[:] = np.inf
        _, _, _, _, _, _, _, jitter, shift, _, _ = self.tables()
        margin = int(100_000 + 8 * (jitter.max() if jitter.size else 0) + max(0.0, -shift.min(initial=0)))
        # Generate far enough that every tag with tagger time < t_stop exists already.
        self.generate_until(now_true_ps + margin)
        tt = np.concatenate(tg.pend_t) if tg.pend_t else np.zeros(0, np.int64)
        cc = np.concatenate(tg.pend_ch) if tg.pend_ch else np.zeros(0, np.int16)
        spread = float(shift.max(initial=0) - shift.min(initial=0)) if shift.size else 0.0
        if spread * (tt.size / max(1e-12 * (margin + t_stop - tg.t_read_ps), 1e-9)) * 1e-12 > 32:
            order = np.argsort(tt, kind="stable")
            tt, cc = tt[order], cc[order]
        else:
            insertion_sort_pairs(tt, cc)
        cut = int(np.searchsorted(tt, t_stop, side="left"))
        first = int(np.searchsorted(tt[:cut], tg.t_read_ps, side="left"))  # drop tags from before (re)start
        out_t, out_ch = tt[first:cut], cc[first:cut]
        tg.pend_t, tg.pend_ch = [tt[cut:]], [cc[cut:]]
        gaps = np.array([g for g in tg.gaps if g[0] < t_stop], np.int64).reshape(-1, 2)
        tg.gaps = [g for g in tg.gaps if g[0] >= t_stop]
        chunk = TagChunk(out_t, out_ch, tg.t_read_ps, t_stop, gaps, 0)
        tg.t_read_ps = t_stop
        return chunk
