"""Degraded-link scenarios: a YAML timeline of events the emulator applies to the running network.

File format (validated; errors name file, line and key)::

    scenario:
      name: fibre cut
      duration_s: 60                 # how long `qlab network demo --scenario` runs after the link is up
    events:
      - at_s: 15                     # seconds after the scenario starts
        fibre_cut: {duration_s: 10}
      - at_s: 40
        polarization_rotate: {angle_deg: 40, axis: [0, 0, 1], over_s: 2}

Events (exactly one per entry, besides ``at_s``):

- ``fibre_cut: {duration_s}`` — no photon reaches the far node for that long;
- ``loss_step: {db, duration_s?}`` — extra link loss (dB), until ``duration_s`` ends (or for good);
- ``loss_ramp: {db_per_s, duration_s, hold_s?}`` — loss growing linearly, held ``hold_s`` at its peak (default:
  for good), then removed;
- ``polarization_drift: {rad_per_sqrt_s, duration_s?}`` — the fibre's random-walk rate (back to 0 afterwards);
- ``polarization_rotate: {angle_deg, axis?, over_s?}`` — a burst: the fibre's polarization turned by
  ``angle_deg`` on the Poincaré sphere about ``axis`` (σx, σy, σz components; default [0, 0, 1]) over ``over_s``;
- ``detector: {name, efficiency_scale?, dark_count_hz?, duration_s?}`` — one detector's efficiency (relative
  to its configured value) or dark-count rate;
- ``source_power: {scale, duration_s?}`` — the pair rate relative to the configured source;
- ``eavesdropper: {duration_s}`` — intercept-resend in random bases on the link;
- ``classical_outage: {duration_s}`` — the classical channel between the nodes is cut (the emulator's TCP
  proxy between the nodes' endpoints drops every connection and refuses new ones);
- ``classical_latency: {ms, duration_s?}`` — added one-way latency on the classical channel.

The runner logs every applied change as a JSON line (wall ``time``, scenario ``t_s``, ``event``, ``phase``
start/end, ``index``) for the SLO report.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from qlab.config.loader import _describe
from qlab.config.yaml_lines import format_path, line_of, load_yaml_with_lines, read_text
from qlab.errors import ConfigError

RAMP_STEP_S = 0.5  # a loss ramp is applied in steps this long
ROTATE_STEPS_PER_S = 10


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FibreCut(_Strict):
    duration_s: float = Field(gt=0)


class LossStep(_Strict):
    db: float = Field(ge=0, le=100)
    duration_s: float | None = Field(default=None, gt=0)


class LossRamp(_Strict):
    db_per_s: float = Field(gt=0, le=100)
    duration_s: float = Field(gt=0)
    hold_s: float | None = Field(default=None, ge=0)


class PolarizationDrift(_Strict):
    rad_per_sqrt_s: float = Field(ge=0, le=10)
    duration_s: float | None = Field(default=None, gt=0)


class PolarizationRotate(_Strict):
    angle_deg: float = Field(ge=-720, le=720)
    axis: list[float] = Field(default=[0.0, 0.0, 1.0], min_length=3, max_length=3)
    over_s: float = Field(default=0.0, ge=0, le=600)

    @model_validator(mode="after")
    def _axis_nonzero(self) -> PolarizationRotate:
        if not any(self.axis):
            raise ValueError("axis must not be [0, 0, 0]")
        return self


class DetectorChange(_Strict):
    name: str
    efficiency_scale: float | None = Field(default=None, ge=0, le=2)
    dark_count_hz: float | None = Field(default=None, ge=0, le=1e7)
    duration_s: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _something(self) -> DetectorChange:
        if self.efficiency_scale is None and self.dark_count_hz is None:
            raise ValueError("give efficiency_scale or dark_count_hz")
        return self


class SourcePower(_Strict):
    scale: float = Field(ge=0, le=10)
    duration_s: float | None = Field(default=None, gt=0)


class Period(_Strict):
    duration_s: float = Field(gt=0)


class Latency(_Strict):
    ms: float = Field(gt=0, le=10_000)
    duration_s: float | None = Field(default=None, gt=0)


KINDS: dict[str, type[BaseModel]] = {
    "fibre_cut": FibreCut, "loss_step": LossStep, "loss_ramp": LossRamp, "polarization_drift": PolarizationDrift,
    "polarization_rotate": PolarizationRotate, "detector": DetectorChange, "source_power": SourcePower,
    "eavesdropper": Period, "classical_outage": Period, "classical_latency": Latency}
CLASSICAL = ("classical_outage", "classical_latency")


class Event(_Strict):
    at_s: float = Field(ge=0)
    fibre_cut: FibreCut | None = None
    loss_step: LossStep | None = None
    loss_ramp: LossRamp | None = None
    polarization_drift: PolarizationDrift | None = None
    polarization_rotate: PolarizationRotate | None = None
    detector: DetectorChange | None = None
    source_power: SourcePower | None = None
    eavesdropper: Period | None = None
    classical_outage: Period | None = None
    classical_latency: Latency | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Event:
        given = [k for k in KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"an event has at_s and exactly one of {sorted(KINDS)}; got {given or 'none'}")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in KINDS if getattr(self, k) is not None)

    @property
    def spec(self) -> Any:
        return getattr(self, self.kind)

    @property
    def end_s(self) -> float:
        """When the event's last change is applied (its start for a change that stays)."""
        s = self.spec
        if isinstance(s, LossRamp):
            return self.at_s + s.duration_s + (s.hold_s or 0.0)
        if isinstance(s, PolarizationRotate):
            return self.at_s + s.over_s
        return self.at_s + (getattr(s, "duration_s", None) or 0.0)


class ScenarioHeader(_Strict):
    name: str = "scenario"
    description: str = ""
    duration_s: float | None = Field(default=None, gt=0, le=86400)


class ScenarioFile(_Strict):
    scenario: ScenarioHeader = ScenarioHeader()
    events: list[Event] = Field(default_factory=list)


@dataclass
class Scenario:
    header: ScenarioHeader
    events: list[Event]
    path: str

    @property
    def duration_s(self) -> float:
        """The header's duration, else 20 s after the last event's end."""
        if self.header.duration_s is not None:
            return self.header.duration_s
        return max((e.end_s for e in self.events), default=0.0) + 20.0

    @property
    def classical(self) -> bool:
        return any(e.kind in CLASSICAL for e in self.events)


def load_scenario(path: str | Path, detectors: list[str] | None = None) -> Scenario:
    """Read and validate a scenario file. ``detectors``: the known detector names (checked when given).
    Raises ConfigError listing every problem with file, line and key."""
    source = str(path)
    data, lines = load_yaml_with_lines(read_text(Path(path)), source)
    if not isinstance(data, dict):
        raise ConfigError(source, [(1, "", "expected a mapping with 'scenario' and 'events'")])
    try:
        sf = ScenarioFile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, [_describe(err, lines) for err in exc.errors()]) from None
    problems = []
    for i, ev in enumerate(sf.events):
        if ev.kind == "detector" and detectors is not None and ev.detector.name not in detectors:
            key = ("events", i, "detector", "name")
            problems.append((line_of(lines, key), format_path(key),
                             f"unknown detector {ev.detector.name!r}; detectors are {sorted(detectors)}"))
    if problems:
        raise ConfigError(source, problems)
    return Scenario(sf.scenario, sorted(sf.events, key=lambda e: e.at_s), source)


@dataclass
class Action:
    t_s: float
    apply: Callable[[], None]
    record: dict[str, Any]


def plan(scenario: Scenario, physics: Any, proxy: Any) -> list[Action]:
    """The timeline as primitive actions on ``physics`` (qlab.sim.network_physics.NetworkPhysics) and ``proxy``
    (qlab.network.proxy.TcpProxy, or None without classical events), in time order."""
    out: list[Action] = []

    def add(t: float, fn: Callable[[], None], i: int, ev: Event, phase: str, **extra: Any) -> None:
        out.append(Action(t, fn, {"index": i, "event": ev.kind, "phase": phase, **extra}))

    loss = {"step": 0.0, "ramp": 0.0}

    def set_loss(part: str, db: float) -> Callable[[], None]:
        def fn() -> None:
            loss[part] = db
            physics.set_extra_loss_db(loss["step"] + loss["ramp"])
        return fn

    for i, ev in enumerate(scenario.events):
        s, t = ev.spec, ev.at_s
        if ev.kind == "fibre_cut":
            add(t, lambda: physics.set_cut(True), i, ev, "start", duration_s=s.duration_s)
            add(t + s.duration_s, lambda: physics.set_cut(False), i, ev, "end")
        elif ev.kind == "loss_step":
            add(t, set_loss("step", s.db), i, ev, "start", db=s.db)
            if s.duration_s:
                add(t + s.duration_s, set_loss("step", 0.0), i, ev, "end")
        elif ev.kind == "loss_ramp":
            n = max(1, math.ceil(s.duration_s / RAMP_STEP_S))
            add(t, set_loss("ramp", 0.0), i, ev, "start", db_per_s=s.db_per_s)
            for k in range(1, n + 1):
                dt = min(s.duration_s, k * RAMP_STEP_S)
                add(t + dt, set_loss("ramp", s.db_per_s * dt), i, ev, "step", db=s.db_per_s * dt)
            if s.hold_s is not None:
                add(t + s.duration_s + s.hold_s, set_loss("ramp", 0.0), i, ev, "end")
        elif ev.kind == "polarization_drift":
            add(t, lambda r=s.rad_per_sqrt_s: physics.set_drift_rate(r), i, ev, "start",
                rad_per_sqrt_s=s.rad_per_sqrt_s)
            if s.duration_s:
                add(t + s.duration_s, lambda: physics.set_drift_rate(0.0), i, ev, "end")
        elif ev.kind == "polarization_rotate":
            steps = max(1, math.ceil(s.over_s * ROTATE_STEPS_PER_S))
            angle = math.radians(s.angle_deg) / steps
            for k in range(steps):
                add(t + s.over_s * k / steps, lambda a=angle, ax=s.axis: physics.rotate(ax, a), i, ev,
                    "start" if k == 0 else "step", angle_deg=s.angle_deg, axis=s.axis)
            add(t + s.over_s, lambda: None, i, ev, "end")
        elif ev.kind == "detector":
            add(t, lambda s=s: physics.set_detector(s.name, s.efficiency_scale, s.dark_count_hz), i, ev, "start",
                name=s.name, efficiency_scale=s.efficiency_scale, dark_count_hz=s.dark_count_hz)
            if s.duration_s:
                base_dark = physics.sim.detectors[s.name].p.dark_count_hz
                add(t + s.duration_s, lambda s=s, d=base_dark: physics.set_detector(
                    s.name, 1.0 if s.efficiency_scale is not None else None,
                    d if s.dark_count_hz is not None else None), i, ev, "end")
        elif ev.kind == "source_power":
            add(t, lambda x=s.scale: physics.set_source_scale(x), i, ev, "start", scale=s.scale)
            if s.duration_s:
                add(t + s.duration_s, lambda: physics.set_source_scale(1.0), i, ev, "end")
        elif ev.kind == "eavesdropper":
            add(t, lambda: physics.set_eavesdropper(True), i, ev, "start", duration_s=s.duration_s)
            add(t + s.duration_s, lambda: physics.set_eavesdropper(False), i, ev, "end")
        elif ev.kind == "classical_outage":
            add(t, lambda d=s.duration_s: proxy.outage(d), i, ev, "start", duration_s=s.duration_s)
            add(t + s.duration_s, lambda: None, i, ev, "end")
        elif ev.kind == "classical_latency":
            add(t, lambda ms=s.ms: proxy.set_latency(ms * 1e-3), i, ev, "start", ms=s.ms)
            if s.duration_s:
                add(t + s.duration_s, lambda: proxy.set_latency(0.0), i, ev, "end")
    out.sort(key=lambda a: a.t_s)
    return out


class ScenarioRunner:
    """Applies a plan in real time from ``start()`` (a thread); each applied action is a JSON line in ``log``."""

    def __init__(self, actions: list[Action], log_path: Path | None, print_fn: Any = print):
        self.actions = actions
        self.log_path = log_path
        self.print = print_fn
        self.stop_event = threading.Event()
        self.t0: float | None = None
        self.thread = threading.Thread(target=self._run, name="scenario", daemon=True)
        self.errors: list[str] = []

    def start(self) -> None:
        self.t0 = time.time()
        self._log({"time": self.t0, "t_s": 0.0, "event": "scenario", "phase": "start"})
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        if self.thread.is_alive():
            self.thread.join(2)

    def _log(self, rec: dict[str, Any]) -> None:
        if self.log_path is not None:
            with open(self.log_path, "a") as f:
                f.write(json.dumps(rec) + "\n")

    def _run(self) -> None:
        assert self.t0 is not None
        for a in self.actions:
            if self.stop_event.wait(max(0.0, self.t0 + a.t_s - time.time())):
                return
            try:
                a.apply()
            except Exception as exc:  # noqa: BLE001 - a bad action is reported, the timeline goes on
                self.errors.append(f"{a.record}: {exc}")
                self.print(f"scenario: {a.record['event']} failed: {exc}")
                continue
            rec = {"time": time.time(), "t_s": a.t_s, **a.record}
            self._log(rec)
            if a.record["phase"] in ("start", "end"):
                self.print(f"scenario t={a.t_s:6.1f} s: {a.record['event']} {a.record['phase']}")
        self._log({"time": time.time(), "t_s": time.time() - self.t0, "event": "scenario", "phase": "end"})


def read_event_log(path: str | Path) -> list[dict[str, Any]]:
    """The runner's JSON lines (torn last line ignored)."""
    out = []
    for line in Path(path).read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out
