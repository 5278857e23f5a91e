"""The simulated lab: one physics model of a two-party entangled-photon experiment.

Every simulated instrument is coupled through a SimLab: laser simulators set the pump power,
polarization-controller simulators set waveplate angles, detector simulators set enable/efficiency/
dead time, tagger simulators read timestamps generated from the current state. Formulas:
shared/reference/physics.md. Units: time in s at the interface, ps inside; angles in degrees.
"""

from __future__ import annotations

import functools
import math
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from qlab import optics
from qlab.config.loader import LoadedConfig
from qlab.config.schema import DetectorSim, LaserSim, TaggerSim
from qlab.rng import NORMAL_TABLE, seed_state
from qlab.sim.clock import SimClock
from qlab.sim.kernel import alias_table, generate_clicks, insertion_sort_pairs
from qlab.types import TagChunk

PARTIES = ("alice", "bob")
DETECTOR_PULSE_V = 2.5  # NIM/TTL pulse height seen by the tagger; trigger levels must sit below it
STAGE_ORDER = ("compensator", "analyzer")


@dataclass
class DetectorState:
    name: str
    party: str
    port: str
    tagger: str
    input: int
    p: DetectorSim
    enabled: bool = True
    gate_closed: bool = False
    efficiency: float = 0.0
    dead_time_ns: float = 0.0

    def __post_init__(self) -> None:
        self.efficiency = self.p.efficiency
        self.dead_time_ns = self.p.dead_time_ns
        self.gate_closed = self.p.gate

    @property
    def live(self) -> bool:
        return self.enabled and not self.gate_closed


@dataclass
class TaggerState:
    name: str
    p: TaggerSim
    input_delay_ps: dict[int, int] = field(default_factory=dict)
    trigger_v: dict[int, float] = field(default_factory=dict)
    streaming: bool = False
    lossless: bool = False  # a device that counts on board (coincidence counter): never loses data to a slow reader
    t_read_ps: int = 0  # tagger time up to which tags were handed out
    pend_t: list[np.ndarray] = field(default_factory=list)
    pend_ch: list[np.ndarray] = field(default_factory=list)
    gaps: list[tuple[int, int]] = field(default_factory=list)
    overflows: int = 0

    @property
    def scale(self) -> float:
        return 1.0 + self.p.drift_ppm * 1e-6

    def tagger_time(self, true_ps: float) -> int:
        return int(round(true_ps * self.scale)) + self.p.clock_offset_ps


@dataclass
class Waveplate:
    retardance_waves: float
    zero_deg: float
    angle_deg: float = 0.0


PARALLEL_MIN_EVENTS = 8_000  # below this a batch is cheaper on one core than the thread hand-off


@functools.cache
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="simlab-gen")


class SimLab:
    """Shared physical state plus the tag generator. Thread-safe: instrument workers call into it."""

    batch_s = 0.01
    max_backlog_s = 0.1  # real-time mode: most data one read may be behind; older data overflow

    def __init__(self, loaded: LoadedConfig, realtime: bool | None = None, seed: int | None = None):
        cfg = loaded.config
        self.loaded = loaded
        sim = cfg.simulation
        self.layout = cfg.lab.layout
        self.clock = SimClock(sim.realtime if realtime is None else realtime)
        self.seed = sim.seed if seed is None else seed
        self._rng = np.random.default_rng(self.seed)
        self._state = seed_state(self.seed)
        self._state_b = seed_state(self.seed + 0x5EED)  # the second half of each parallel batch
        self._lock = threading.RLock()
        self.source = sim.source.model_copy()
        self.eavesdropper = sim.eavesdropper
        self.fibre_transmission = {p: getattr(sim.fibres, p).transmission for p in PARTIES}
        self.fibre_drift = {p: getattr(sim.fibres, p).drift_rad_per_sqrt_s for p in PARTIES}
        self.fibre_u0 = {p: self._initial_unitary(getattr(sim.fibres, p).unitary) for p in PARTIES}
        self._fibre_walk = {p: np.zeros(3) for p in PARTIES}
        self.lasers: dict[str, dict] = {}
        self.waveplates: dict[str, dict[str, dict[str, Waveplate]]] = {p: {s: {} for s in STAGE_ORDER}
                                                                      for p in PARTIES}
        self.detectors: dict[str, DetectorState] = {}
        self.taggers: dict[str, TaggerState] = {}
        for name, inst in cfg.instruments.items():
            kind = loaded.kind(name)
            params = loaded.sim_params[name]
            if kind == "laser":
                assert isinstance(params, LaserSim)
                self.lasers[name] = {"on": False, "current_a": 0.0, "temperature_c": 25.0, "p": params}
            elif kind == "detector":
                ch = inst.channel
                party, port = ch.role.split(".")
                self.detectors[name] = DetectorState(name, party, port, ch.tagger, ch.input, params)
            elif kind in ("tagger", "counter"):  # a coincidence counter counts the same click streams
                self.taggers[name] = TaggerState(name, params)
            elif kind == "polarization":
                stage = self.waveplates[inst.optics.party][inst.optics.stage]
                for ax, a in inst.axes.items():
                    stage[f"{name}.{ax}"] = Waveplate(optics.axis_retardance(a), a.zero_deg)
        self._det_names = list(self.detectors)
        self._tagger_names = list(self.taggers)
        self._gen_true_ps = 0  # true time up to which physics has been generated
        self._last_click = np.full(len(self._det_names), -1e30)
        self._ap_pending = np.full(len(self._det_names), np.inf)
        self._dirty = True
        self._cache: tuple | None = None
        self.device_sims: dict[str, object] = {}  # instrument name -> its device simulator
        from qlab.sim.registry import register_lab

        register_lab(self)

    # -- setup ---------------------------------------------------------------------------------------------
    def _initial_unitary(self, spec) -> np.ndarray:
        if spec == "identity":
            return np.eye(2, dtype=complex)
        if spec == "random":
            return optics.haar_su2(self._rng)
        return optics.su2_from_euler(*np.radians(spec))

    # -- coupling API used by device simulators --------------------------------------------------------
    def set_laser(self, name: str, *, on: bool | None = None, current_a: float | None = None,
                  temperature_c: float | None = None) -> None:
        with self._lock:
            self._catch_up()
            las = self.lasers[name]
            if on is not None:
                las["on"] = bool(on)
            if current_a is not None:
                las["current_a"] = float(current_a)
            if temperature_c is not None:
                las["temperature_c"] = float(temperature_c)
            self._dirty = True

    def laser_power_mw(self, name: str) -> float:
        las = self.lasers[name]
        p: LaserSim = las["p"]
        if not las["on"]:
            return 0.0
        return max(0.0, (las["current_a"] - p.threshold_a) * p.slope_mw_per_a)

    @property
    def pump_power_mw(self) -> float:
        return sum(self.laser_power_mw(n) for n in self.lasers)

    def _plate(self, instrument: str, axis: str) -> Waveplate:
        for party in PARTIES:
            for stage in STAGE_ORDER:
                wp = self.waveplates[party][stage].get(f"{instrument}.{axis}")
                if wp is not None:
                    return wp
        raise KeyError(f"{instrument}.{axis} is not a wave plate or retarder in the simulated optics")

    def set_waveplate(self, instrument: str, axis: str, angle_deg: float) -> None:
        with self._lock:
            self._catch_up()
            self._plate(instrument, axis).angle_deg = float(angle_deg)
            self._dirty = True

    def set_retardance(self, instrument: str, axis: str, retardance_waves: float) -> None:
        """A voltage-driven retarder (fibre squeezer): the axis is fixed, the retardance changes."""
        with self._lock:
            self._catch_up()
            self._plate(instrument, axis).retardance_waves = float(retardance_waves)
            self._dirty = True

    def set_detector(self, name: str, **changes) -> None:
        with self._lock:
            self._catch_up()
            det = self.detectors[name]
            for k, v in changes.items():
                setattr(det, k, v)
            self._dirty = True

    def set_tagger_input(self, tagger: str, channel: int, *, delay_ps: int | None = None,
                         trigger_v: float | None = None) -> None:
        with self._lock:
            self._catch_up()
            tg = self.taggers[tagger]
            if delay_ps is not None:
                tg.input_delay_ps[channel] = int(delay_ps)
            if trigger_v is not None:
                tg.trigger_v[channel] = float(trigger_v)
            self._dirty = True

    def set_visibility(self, visibility: float) -> None:
        with self._lock:
            self._catch_up()
            self.source.visibility = float(visibility)
            self._dirty = True

    # -- optics ----------------------------------------------------------------------------------------------
    def fibre_unitary(self, party: str) -> np.ndarray:
        w = self._fibre_walk[party]
        angle = float(np.linalg.norm(w))
        if angle == 0:
            return self.fibre_u0[party]
        n = w / angle
        sig = n[0] * np.array([[0, 1], [1, 0]]) + n[1] * np.array([[0, -1j], [1j, 0]]) + n[2] * np.diag([1, -1])
        rot = math.cos(angle / 2) * np.eye(2) - 1j * math.sin(angle / 2) * sig
        return rot @ self.fibre_u0[party]

    def party_unitary(self, party: str) -> np.ndarray:
        u = self.fibre_unitary(party)
        for stage in STAGE_ORDER:
            for wp in self.waveplates[party][stage].values():
                u = optics.retarder(wp.retardance_waves, math.radians(wp.angle_deg + wp.zero_deg)) @ u
        return u

    def state(self) -> np.ndarray:
        rho = optics.werner(self.source.state, self.source.visibility)
        if self.eavesdropper == "intercept_resend":
            rho = optics.intercept_resend_bob(rho)
        return rho

    def pair_rate_hz(self) -> float:
        """Emitted pairs/s: pairs_per_mw × pump power, times a phase-matching factor of the laser
        temperature (Gaussian, 25 °C optimum, 8 °C width)."""
        if not self.lasers:
            return 0.0
        temp = np.mean([las["temperature_c"] for las in self.lasers.values()])
        return self.source.pairs_per_mw * self.pump_power_mw * math.exp(-0.5 * ((temp - 25.0) / 8.0) ** 2)

    def port_probabilities(self) -> tuple[list[str], list[str], np.ndarray]:
        """(ports of Alice, ports of Bob, P[k, l]) for one emitted pair, before losses."""
        povm = optics.port_povm(self.layout)
        ports = list(povm)
        p = optics.joint_probabilities(self.state(), self.party_unitary("alice"), self.party_unitary("bob"),
                                       [povm[k] for k in ports], [povm[k] for k in ports])
        return ports, ports, p

    def detector_efficiency(self, det: DetectorState) -> float:
        """Total detection probability of a photon reaching this detector's port (fibre × detector)."""
        if not self._det_visible(det):
            return 0.0
        return self.fibre_transmission[det.party] * det.efficiency

    def _det_visible(self, det: DetectorState) -> bool:
        tg = self.taggers[det.tagger]
        level = tg.trigger_v.get(det.input, 0.5)
        return det.live and 0.0 < level < DETECTOR_PULSE_V

    # -- analytic expectations (tests and users compare against these) ---------------------------------------
    def expected_rates(self) -> dict[str, object]:
        """Singles (before dead time) and true-coincidence rates in Hz from physics.md formulas."""
        ports_a, ports_b, p = self.port_probabilities()
        n = self.pair_rate_hz()
        eff = {d.name: self.detector_efficiency(d) for d in self.detectors.values()}
        singles, coinc = {}, {}
        for d in self.detectors.values():
            ports = ports_a if d.party == "alice" else ports_b
            marg = p.sum(axis=1) if d.party == "alice" else p.sum(axis=0)
            pi = marg[ports.index(d.port)] if d.port in ports else 0.0
            singles[d.name] = eff[d.name] * n * pi + (d.p.dark_count_hz if self._det_visible(d) else 0.0)
        for da in self.detectors.values():
            for db in self.detectors.values():
                if da.party == "alice" and db.party == "bob" and da.port in ports_a and db.port in ports_b:
                    pab = p[ports_a.index(da.port), ports_b.index(db.port)]
                    coinc[(da.name, db.name)] = eff[da.name] * eff[db.name] * n * pab
        return {"pair_rate_hz": n, "singles_hz": singles, "coincidences_hz": coinc}

    # -- generation -------------------------------------------------------------------------------------------
    def _tables(self):
        """Category table of the click process for the current settings (cached until something changes)."""
        drifting = any(self.fibre_drift[p] > 0 for p in PARTIES)
        if self._cache is not None and not self._dirty and not drifting:
            return self._cache
        dets = [self.detectors[n] for n in self._det_names]
        ports_a, ports_b, p = self.port_probabilities()
        idx_a = {d.port: i for i, d in enumerate(dets) if d.party == "alice"}
        idx_b = {d.port: i for i, d in enumerate(dets) if d.party == "bob"}
        eff = np.array([self.detector_efficiency(d) for d in dets])
        ea = np.array([eff[idx_a[k]] if k in idx_a else 0.0 for k in ports_a])
        eb = np.array([eff[idx_b[k]] if k in idx_b else 0.0 for k in ports_b])
        n = self.pair_rate_hz()
        rates, cat_a, cat_b = [], [], []
        for k, pk in enumerate(ports_a):
            for l, pl in enumerate(ports_b):
                if k < len(ea) and ea[k] > 0 and eb[l] > 0:
                    rates.append(n * p[k, l] * ea[k] * eb[l])
                    cat_a.append(idx_a[pk])
                    cat_b.append(idx_b[pl])
            r_only = n * ea[k] * float((p[k, :] * (1 - eb)).sum())
            if r_only > 0:
                rates.append(r_only)
                cat_a.append(idx_a[pk])
                cat_b.append(-1)
        for l, pl in enumerate(ports_b):
            r_only = n * eb[l] * float((p[:, l] * (1 - ea)).sum())
            if r_only > 0:
                rates.append(r_only)
                cat_a.append(idx_b[pl])
                cat_b.append(-1)
        for i, d in enumerate(dets):
            if self._det_visible(d) and d.p.dark_count_hz > 0:
                rates.append(d.p.dark_count_hz)
                cat_a.append(i)
                cat_b.append(-1)
        rates_arr = np.array(rates or [0.0], float)
        total = float(rates_arr.sum())
        alias = alias_table(rates_arr) if total > 0 else (np.ones(1), np.zeros(1, np.int64))
        tagger_of = np.array([self._tagger_names.index(d.tagger) for d in dets], np.int64)
        shift = np.array([d.p.cable_delay_ps + self.taggers[d.tagger].input_delay_ps.get(d.input, 0)
                          for d in dets], float)
        jitter = np.array([math.hypot(d.p.jitter_ps, self.taggers[d.tagger].p.jitter_ps) for d in dets])
        self._cache = (total * 1e-12, alias, np.array(cat_a or [-1], np.int64), np.array(cat_b or [-1], np.int64),
                       np.array([d.dead_time_ns * 1e3 for d in dets]),
                       np.array([d.p.afterpulse_probability for d in dets]),
                       np.array([d.p.afterpulse_delay_ns * 1e3 for d in dets]), jitter, shift, tagger_of,
                       np.array([d.input for d in dets], np.int16))
        self._dirty = False
        return self._cache

    def _step_drift(self, dt_s: float) -> None:
        for p in PARTIES:
            if self.fibre_drift[p] > 0:
                self._fibre_walk[p] += self._rng.normal(0.0, self.fibre_drift[p] * math.sqrt(dt_s), 3)

    def _catch_up(self) -> None:
        """Generate physics up to now with the settings in force until now (before a change applies)."""
        target = int(self.clock.now() * 1e12)
        if target > self._gen_true_ps and any(t.streaming for t in self.taggers.values()):
            self._generate_until(target)
        else:
            self._gen_true_ps = max(self._gen_true_ps, target)

    def _generate_until(self, true_ps: int) -> None:
        # ~500k events per batch keeps the per-batch Python and thread hand-off overhead negligible; 10–250 ms
        # keeps overflow detection and fibre drift fine-grained.
        rate_hz = self._tables()[0] * 1e12
        longest = 25 * self.batch_s
        batch_s = min(longest, max(self.batch_s, 5e5 / rate_hz if rate_hz > 0 else longest))
        batch_ps = int(batch_s * 1e12)
        while self._gen_true_ps < true_ps:
            t0 = self._gen_true_ps
            t1 = min(true_ps, t0 + batch_ps)
            self._step_drift((t1 - t0) * 1e-12)
            self._generate_batch(t0, t1)
            self._gen_true_ps = t1

    def _generate_batch(self, t0: int, t1: int) -> None:
        tables = self._tables()
        rate, dead = tables[0], tables[4]
        taggers = [self.taggers[n] for n in self._tagger_names]
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
        bufs = self.__dict__.setdefault("_bufs", {})
        buf = bufs.get(slot)
        if buf is None or buf[0].size < cap:
            buf = (np.empty(cap, np.int64), np.empty(cap, np.int16), np.empty(cap, np.uint8))
            bufs[slot] = buf
        return buf

    # -- tagger side -----------------------------------------------------------------------------------------
    def start_stream(self, tagger: str, lossless: bool = False) -> None:
        with self._lock:
            self._catch_up()
            tg = self.taggers[tagger]
            tg.streaming = True
            tg.lossless = lossless
            tg.pend_t, tg.pend_ch, tg.gaps = [], [], []
            tg.t_read_ps = tg.tagger_time(self._gen_true_ps)

    def stop_stream(self, tagger: str) -> None:
        with self._lock:
            self.taggers[tagger].streaming = False

    def read_tags(self, tagger: str) -> TagChunk:
        """Tags of ``tagger`` from its previous read up to the tagger time of the simulated now."""
        with self._lock:
            tg = self.taggers[tagger]
            if not tg.streaming:
                t = tg.t_read_ps
                return TagChunk(np.zeros(0, np.int64), np.zeros(0, np.int16), t, t)
            now_true = int(self.clock.now() * 1e12)
            t_stop = tg.tagger_time(now_true)
            if self.clock.realtime and not tg.lossless and now_true - self._gen_true_ps > self.max_backlog_s * 1e12:
                # The reader fell behind real time: like a real tagger's full buffer, the excess is lost and
                # reported as an overflow gap (excluded from exposure) instead of growing every next read.
                skip_to = now_true - int(self.max_backlog_s * 1e12)
                for other in self.taggers.values():
                    if other.streaming:
                        gap0 = other.tagger_time(self._gen_true_ps)
                        other.pend_t = [t[t < gap0] for t in other.pend_t]
                        other.pend_ch = [c[: t.size] for c, t in zip(other.pend_ch, other.pend_t, strict=True)]
                        other.gaps.append((gap0, other.tagger_time(skip_to)))
                        other.overflows += 1
                self._gen_true_ps = skip_to
                self._last_click[:] = -1e30
                self._ap_pending[:] = np.inf
            _, _, _, _, _, _, _, jitter, shift, _, _ = self._tables()
            margin = int(100_000 + 8 * (jitter.max() if jitter.size else 0) + max(0.0, -shift.min(initial=0)))
            # Generate far enough that every tag with tagger time < t_stop exists already.
            self._generate_until(now_true + margin)
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

    # -- convenience for tests and scripts -----------------------------------------------------------------
    def detector_index(self) -> dict[str, int]:
        return {n: i for i, n in enumerate(self._det_names)}
