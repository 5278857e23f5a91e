"""Live analysis for the GUI: per-chunk counts -> rolling (real-time) or accumulated statistics.

Pure NumPy, no Qt: the acquisition worker calls ``LiveAnalyzer.add`` off the GUI thread and hands the
resulting ``LiveFrame`` (plain data) to the window, which only draws it.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from qlab.analysis.bell import Counts4, chsh, visibility
from qlab.stream.coincidence import CoincidenceCounter, CoincidenceResult
from qlab.stream.histogram import cross_correlation
from qlab.types import TagChunk

QBER_ABORT = 0.11  # above this no key survives even asymptotically (Shor–Preskill)


def h2(p: float) -> float:
    return 0.0 if p <= 0 or p >= 1 else -p * math.log2(p) - (1 - p) * math.log2(1 - p)


@dataclass
class LiveFrame:
    """Everything one redraw needs. Rates in Hz."""

    wall_time: float
    mode: str
    exposure_s: float
    rates: dict[str, float]
    coincidence_rates: dict[str, float]
    accidental_rates: dict[str, float]
    hist_pair: tuple[str, str]
    hist_centers_ps: np.ndarray
    hist_counts: np.ndarray
    chsh: dict[str, float] | None
    visibility: dict[str, float]
    qkd: dict[str, float | bool | None]
    overflows: int = 0
    recording: str | None = None
    seq: int = 0  # 1, 2, … per analysed chunk: a redraw of the same frame shows no new data
    new_tags: int = 0  # tags in the chunk this frame added
    extra: dict = field(default_factory=dict)


class LiveAnalyzer:
    def __init__(self, roles: dict[str, int], window_ps: int, accidentals_offset_ps: int,
                 hist_range_ps: int = 5000, hist_bin_ps: int = 100, realtime_window_s: float = 1.0):
        self.roles = roles
        self.by_channel = {ch: r for r, ch in roles.items()}
        self.channels = sorted(roles.values())
        self.accidentals_offset_ps = accidentals_offset_ps
        self.counter = CoincidenceCounter(self.channels, window_ps, None, accidentals_offset_ps)
        self.hist_range_ps, self.hist_bin_ps = hist_range_ps, hist_bin_ps
        self.realtime_window_s = realtime_window_s
        self.mode = "realtime"
        alice = sorted(r for r in roles if r.startswith("alice"))
        bob = sorted(r for r in roles if r.startswith("bob"))
        first = lambda names, pref: pref if pref in names else (names[0] if names else None)  # noqa: E731
        self.hist_pair = (first(alice, "alice.H") or self.by_channel[self.channels[0]],
                          first(bob, "bob.H") or self.by_channel[self.channels[-1]])
        self.frames = 0
        self.reset()

    def reset(self) -> None:
        self._recent: deque[tuple[CoincidenceResult, np.ndarray]] = deque()
        self._total: CoincidenceResult | None = None
        self._total_hist: np.ndarray | None = None
        self.overflows = 0

    def set_mode(self, mode: str) -> None:
        if mode not in ("realtime", "accumulate"):
            raise ValueError(mode)
        self.mode = mode

    def restart_window(self) -> None:
        """Forget the realtime window (after a pause); the accumulated totals stay."""
        self._recent.clear()

    def set_hist_binning(self, bin_ps: int, range_ps: int) -> None:
        """Histogram bin width and range ± around zero (ps); restarts the histogram."""
        if bin_ps <= 0 or range_ps < bin_ps:
            raise ValueError(f"histogram bin {bin_ps} ps and range ±{range_ps} ps: need 0 < bin ≤ range")
        self.hist_bin_ps, self.hist_range_ps = int(bin_ps), int(range_ps)
        self._recent.clear()
        self._total_hist = None

    def set_window(self, window_ps: int) -> None:
        """Coincidence window of the live view (ps); restarts the statistics."""
        self.counter = CoincidenceCounter(self.channels, int(window_ps), None, self.accidentals_offset_ps)
        self.reset()

    def set_hist_pair(self, a: str, b: str) -> None:
        self.hist_pair = (a, b)
        self._recent.clear()
        self._total_hist = None

    def add(self, chunk: TagChunk) -> LiveFrame:
        res = self.counter.process(chunk)
        self.overflows += len(chunk.gaps)
        a, b = (self.roles[r] for r in self.hist_pair)
        hist = cross_correlation(chunk, a, [b], self.hist_range_ps, self.hist_bin_ps)[b]
        self._recent.append((res, hist.counts))
        while len(self._recent) > 1 and sum(r.duration_s for r, _ in self._recent) > self.realtime_window_s:
            self._recent.popleft()
        self._total = res if self._total is None else self._total.merge(res)
        self._total_hist = hist.counts if self._total_hist is None else self._total_hist + hist.counts
        if self.mode == "accumulate":
            agg, h = self._total, self._total_hist
        else:
            agg = self._recent[0][0]
            for r, _ in list(self._recent)[1:]:
                agg = agg.merge(r)
            h = np.sum([x for _, x in self._recent], axis=0)
        frame = self._frame(agg, hist.centers_ps, h)
        self.frames += 1
        frame.seq, frame.new_tags = self.frames, len(chunk)
        return frame

    def _frame(self, r: CoincidenceResult, centers: np.ndarray, h: np.ndarray) -> LiveFrame:
        t = r.exposure_s if r.exposure_s > 0 else float("nan")
        rates = {role: r.single(ch) / t for role, ch in self.roles.items()}
        coinc, acc = {}, {}
        port_order = {p: i for i, p in enumerate("HVDA")}
        key = lambda role: port_order.get(role.split(".")[1], 9)  # noqa: E731
        alice = sorted((x for x in self.roles if x.startswith("alice")), key=key)
        bob = sorted((x for x in self.roles if x.startswith("bob")), key=key)
        for x in alice:
            for y in bob:
                coinc[f"{x}|{y}"] = r.pair(self.roles[x], self.roles[y]) / t
                acc[f"{x}|{y}"] = r.accidental_pair(self.roles[x], self.roles[y]) / t
        n = {k: v * t for k, v in coinc.items()}
        have = set(self.roles)
        vis: dict[str, float] = {}
        if {"alice.H", "alice.V", "bob.H", "bob.V"} <= have:
            vis["HV"], vis["HV_err"] = visibility(n["alice.H|bob.H"] + n["alice.V|bob.V"],
                                                  n["alice.H|bob.V"] + n["alice.V|bob.H"])
        chsh_stats = None
        qkd: dict[str, float | bool | None] = {}
        if {f"{p}.{k}" for p in ("alice", "bob") for k in "HVDA"} <= have:
            vis["DA"], vis["DA_err"] = visibility(n["alice.D|bob.D"] + n["alice.A|bob.A"],
                                                  n["alice.D|bob.A"] + n["alice.A|bob.D"])

            def c4(x: str, y: str) -> Counts4:
                p, m = {"HV": ("H", "V"), "DA": ("D", "A")}[x], {"HV": ("H", "V"), "DA": ("D", "A")}[y]
                return Counts4(n[f"alice.{p[0]}|bob.{m[0]}"], n[f"alice.{p[1]}|bob.{m[1]}"],
                               n[f"alice.{p[0]}|bob.{m[1]}"], n[f"alice.{p[1]}|bob.{m[0]}"])

            # Passive layout: the H/V arm measures a (b), the D/A arm a' (b'); with Bob's analyzer turned to
            # 22.5° all four CHSH correlators are measured at once.
            chsh_stats = chsh([c4("HV", "HV"), c4("HV", "DA"), c4("DA", "HV"), c4("DA", "DA")])
            sz = sum(n[f"alice.{x}|bob.{y}"] for x in "HV" for y in "HV")
            sx = sum(n[f"alice.{x}|bob.{y}"] for x in "DA" for y in "DA")
            qz = (n["alice.H|bob.V"] + n["alice.V|bob.H"]) / sz if sz else None
            qx = (n["alice.D|bob.A"] + n["alice.A|bob.D"]) / sx if sx else None
            aborted = qz is None or qx is None or max(qz, qx) > QBER_ABORT
            # Asymptotic BBM92 estimate (Shor–Preskill with an f = 1.1 reconciler); the finite-key stack
            # of the QKD issue replaces it.
            skr = 0.0 if aborted else max(0.0, (sz / t) * (1 - 1.1 * h2(qz) - h2(qx)))
            qkd = {"sifted_rate_Z": sz / t, "sifted_rate_X": sx / t, "qber_Z": qz, "qber_X": qx,
                   "secret_key_rate_bps": skr, "aborted": aborted}
        return LiveFrame(time.time(), self.mode, r.exposure_s, rates, coinc,
                         {k: v for k, v in acc.items()}, self.hist_pair, centers, h, chsh_stats, vis, qkd,
                         self.overflows)
