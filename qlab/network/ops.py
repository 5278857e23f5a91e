"""Link operations on a node: the link state machine, its inputs, detector-drift flags and the alarm latch.

States (``STATES``): ``STARTING`` (node up, no session yet) → ``SYNCING`` (session, clock, no key yet) → ``UP``;
``DEGRADED`` (key still produced, but QBER above ``operations.qber_degraded`` until it falls below
``qber_ok``, key rate below ``slo.min_key_rate_bps``, a block aborted, or polarization being re-compensated);
``DOWN`` (no light: singles below ``light_lost_ratio`` × their baseline until back above ``light_back_ratio``;
no classical session for ``channel_lost_s``; a block without coincidences; the tagger faulted);
``RECOVERING`` (the causes of DOWN are gone, no key committed since); ``ALARM`` (an unexplained QBER
excursion: never cleared by the node itself, only by ``clear_alarm`` from an operator; latched in
``alarm.json`` so a restart keeps it).

``LinkMonitor`` gets the node's events (``rates`` every second, ``block``, ``session``, ``session_ended``,
``clock_acquired``, ``compensation``) and a periodic ``tick``; every state change is handed to ``emit`` as a
``state`` event (time, from, to, reason): the run file, the log and the listeners see it.
"""

from __future__ import annotations

import contextlib
import json
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qlab.network.config import OperationsSection, SloSection

STATES = ("STARTING", "SYNCING", "UP", "DEGRADED", "DOWN", "RECOVERING", "ALARM")
PRODUCING = ("UP", "DEGRADED")
PORT_NAMES = ("H", "V", "D", "A")
BASELINE_MIN_S = 5.0  # seconds of singles before a baseline is trusted
COMMIT_SLACK_S = 1.0  # a block's data ends at most about this long before it is committed (processing)


class LinkMonitor:
    """Thread-safe. ``emit(kind, data)`` records events (the node's ``emit``)."""

    def __init__(self, ops: OperationsSection, slo: SloSection, emit: Callable[[str, dict[str, Any]], None],
                 alarm_path: Path | None = None, clock: Callable[[], float] = time.time):
        self.ops = ops
        self.slo = slo
        self.emit = emit
        self.now = clock
        self.alarm_path = alarm_path
        self._lock = threading.RLock()
        self.state = "STARTING"
        self.reason = "node started"
        self.since = self.now()
        self.transitions: list[dict[str, Any]] = []
        # inputs
        self.singles_hz: dict[str, float] = {}
        self.baseline_total_hz: float | None = None
        self.baseline_share: dict[str, float] = {}
        self.baseline_s = 0.0
        self.light_ok: bool | None = None
        self.light_reason = ""
        self.session_up = False
        self.session_lost_at: float | None = self.now()
        self.session_lost_reason = "no session yet"
        self.fault = ""
        self.alarm: dict[str, Any] | None = self._load_alarm()
        self.compensating: dict[str, Any] | None = None
        self.committed_any = False
        self.down_since_commit = False
        self.block_down = ""
        self.dark = False  # DOWN for lack of light/coincidences: recovery needs a block of data taken after it
        self.recovering_since: float | None = None  # when the light came back (None: not seen by this node)
        self.block_aborted = ""
        self.qber_high = False
        self.low_rate = False
        self.last_block: dict[str, Any] | None = None
        self.baseline_sifted_hz: float | None = None
        self.detector_flags: dict[str, dict[str, Any]] = {}
        self.time_in_state: dict[str, float] = dict.fromkeys(STATES, 0.0)
        self.compensations = 0
        self.compensation_s = 0.0

    # -- alarm latch ------------------------------------------------------------------------------------------
    def _load_alarm(self) -> dict[str, Any] | None:
        if self.alarm_path is None or not self.alarm_path.exists():
            return None
        try:
            return json.loads(self.alarm_path.read_text())
        except (OSError, ValueError):
            return {"reason": "alarm file unreadable: treated as raised", "time": self.now()}

    def raise_alarm(self, reason: str, detail: dict[str, Any] | None = None) -> None:
        with self._lock:
            if self.alarm is not None:
                return
            self.alarm = {"reason": reason, "time": self.now(), **(detail or {})}
            if self.alarm_path is not None:
                tmp = self.alarm_path.with_suffix(".tmp")
                tmp.write_text(json.dumps(self.alarm))
                tmp.replace(self.alarm_path)
            self.emit("alarm", dict(self.alarm))
            self.evaluate()

    def clear_alarm(self, operator: str = "operator") -> bool:
        """The operator's command: returns whether an alarm was latched."""
        with self._lock:
            if self.alarm is None:
                return False
            old, self.alarm = self.alarm, None
            if self.alarm_path is not None:
                with contextlib.suppress(OSError):
                    self.alarm_path.unlink()
            self.emit("alarm_cleared", {"by": operator, "raised_at": old.get("time"), "reason": old.get("reason")})
            self.down_since_commit = True  # key resumes only after a fresh committed block
            self.evaluate()
            return True

    # -- events -----------------------------------------------------------------------------------------------
    def on_event(self, kind: str, data: dict[str, Any]) -> None:
        with self._lock:
            if kind == "rates":
                self._on_rates(data.get("singles_hz", {}))
            elif kind == "session":
                self.session_up, self.session_lost_at = True, None
            elif kind == "session_ended":
                if self.session_up or self.session_lost_at is None:
                    self.session_lost_at = self.now()
                self.session_up = False
                self.session_lost_reason = str(data.get("reason", ""))[:200]
            elif kind == "block":
                self._on_block(data)
            elif kind == "fault":
                self.fault = str(data.get("reason", "instrument fault"))
            elif kind == "compensation":
                self._on_compensation(data)
            else:
                return
            self.evaluate()

    def _on_rates(self, singles: dict[str, float]) -> None:
        self.singles_hz = {k: float(v) for k, v in singles.items()}
        total = sum(self.singles_hz.values())
        if self.baseline_total_hz is None or self.baseline_s < BASELINE_MIN_S:
            if self.state in ("STARTING", "SYNCING", "UP", "DEGRADED") and total > 0:
                n = self.baseline_s + 1
                self.baseline_total_hz = ((self.baseline_total_hz or 0.0) * self.baseline_s + total) / n
                for p in PORT_NAMES:
                    share = self.singles_hz.get(p, 0.0) / total
                    self.baseline_share[p] = (self.baseline_share.get(p, share) * self.baseline_s + share) / n
                self.baseline_s = n
            return
        self._light_check(total)
        if self.light_ok and self.state in PRODUCING:
            a = 1.0 - math.exp(-1.0 / self.ops.baseline_time_constant_s)  # slow: follows ageing, not events
            self.baseline_total_hz += a * (total - self.baseline_total_hz)
            self._detector_drift(total, a)

    def on_light(self, total_hz: float) -> None:
        """A fast singles check (the tagger reader calls it every fraction of a second): loss of light is
        detected well within a second, without waiting for the per-second rates."""
        with self._lock:
            if self.baseline_total_hz is not None and self.baseline_s >= BASELINE_MIN_S:
                before = self.light_ok
                self._light_check(total_hz)
                if self.light_ok != before:
                    self.evaluate()

    def _light_check(self, total: float) -> None:
        base = self.baseline_total_hz or 0.0
        ratio = total / base if base > 0 else 1.0
        if self.light_ok is not False and ratio < self.ops.light_lost_ratio:
            self.light_ok = False
            self.dark, self.recovering_since = True, None
            self.light_reason = f"no light: singles {total:.0f} Hz, {100 * ratio:.0f} % of the {base:.0f} Hz baseline"
        elif self.light_ok is not True and ratio > self.ops.light_back_ratio:
            if self.light_ok is False:
                self.block_down = ""  # that block was dark; the light is back now
                self.recovering_since = self.now()
            self.light_ok = True

    def _detector_drift(self, total: float, a: float) -> None:
        """One detector's share of the singles away from its baseline: efficiency drop or dark-count rise."""
        if total <= 0 or not all(self.baseline_share.get(p) for p in PORT_NAMES):
            return
        # Each port against the median of all ports (each relative to its own baseline share): one detector
        # changing stands out, a change common to all (loss, source power) does not.
        norm = {p: self.singles_hz.get(p, 0.0) / self.baseline_share[p] for p in PORT_NAMES}
        med = float(sorted(norm.values())[1:3][0] + sorted(norm.values())[1:3][1]) / 2
        if med <= 0:
            return
        for p in PORT_NAMES:
            base = self.baseline_share[p]
            ratio = norm[p] / med
            flag = self.detector_flags.get(p)
            if flag is None and abs(ratio - 1) > self.ops.detector_drift_ratio:
                kind = "efficiency drop" if ratio < 1 else "dark-count rise"
                self.detector_flags[p] = {"port": p, "ratio": ratio, "kind": kind, "since": self.now()}
                self.emit("detector_drift", {"port": p, "share_ratio": ratio, "kind": kind,
                                             "singles_hz": self.singles_hz.get(p, 0.0)})
            elif flag is not None and abs(ratio - 1) < self.ops.detector_clear_ratio:
                del self.detector_flags[p]
                self.emit("detector_drift_cleared", {"port": p, "share_ratio": ratio})
            elif flag is not None:
                flag["ratio"] = ratio
            if p not in self.detector_flags:
                self.baseline_share[p] = base + a * (self.singles_hz.get(p, 0.0) / total - base)

    def _on_block(self, rec: dict[str, Any]) -> None:
        self.last_block = rec
        dur = float(rec.get("duration_s") or 0.0) or 1.0
        sifted = rec.get("sifted") or {}
        sifted_hz = (int(sifted.get("Z") or 0) + int(sifted.get("X") or 0)) / dur
        q = [v for v in (rec.get("qber") or {}).values() if v is not None]
        worst = max(q) if q else None
        if rec.get("committed"):
            self.committed_any = True
            if self.dark:
                # A block whose data began before the light came back says nothing about the recovery (it may be
                # mostly from before the outage): the link stays RECOVERING until a block of fresh data commits.
                t_rec = float(rec.get("time") or self.now())
                self.block_down = ""
                if self.recovering_since is None:
                    # This node does not see the light itself: the first block with key again shows it was back
                    # at the latest when that block's data began.
                    self.recovering_since = t_rec - dur - COMMIT_SLACK_S
                    return
                if t_rec - dur - COMMIT_SLACK_S < self.recovering_since:
                    return
                self.dark, self.recovering_since = False, None
            self.down_since_commit = False
            self.block_down = self.block_aborted = ""
            if self.baseline_sifted_hz is None:
                self.baseline_sifted_hz = sifted_hz
            else:
                self.baseline_sifted_hz += 0.2 * (sifted_hz - self.baseline_sifted_hz)
            rate = float(rec.get("secret_bits", 0)) / dur
            self.low_rate = rate < self.slo.min_key_rate_bps
            if worst is not None:
                if worst > self.ops.qber_degraded:
                    self.qber_high = True
                elif worst < self.ops.qber_ok:
                    self.qber_high = False
            return
        base = self.baseline_sifted_hz
        if base and sifted_hz < self.ops.coincidence_lost_ratio * base:
            self.dark, self.recovering_since = True, None
            self.block_down = (f"block {rec.get('block')}: sifted rate {sifted_hz:.0f} Hz, "
                               f"{100 * sifted_hz / base:.0f} % of the {base:.0f} Hz baseline (no coincidences)")
        else:
            self.block_aborted = f"block {rec.get('block')} aborted: {rec.get('abort_reason') or '?'}"

    def _on_compensation(self, data: dict[str, Any]) -> None:
        if data.get("phase") == "start":
            self.compensating = {"since": self.now(), **data}
            self.compensations += 1
        elif self.compensating is not None:
            self.compensation_s += self.now() - self.compensating["since"]
            self.compensating = None
            if data.get("success"):
                self.qber_high = False

    # -- the state machine --------------------------------------------------------------------------------------
    def channel_ok(self) -> bool:
        return self.session_up or (self.session_lost_at is not None
                                   and self.now() - self.session_lost_at < self.ops.channel_lost_s
                                   and self.committed_any)

    def decide(self) -> tuple[str, str]:
        """(state, reason) from the current inputs, in order of precedence."""
        if self.alarm is not None:
            return "ALARM", f"{self.alarm.get('reason')} (operator must clear)"
        if self.fault:
            return "DOWN", f"instrument fault: {self.fault}"
        if self.light_ok is False:
            return "DOWN", self.light_reason
        if not self.channel_ok() and (self.committed_any or self.state not in ("STARTING", "SYNCING")):
            lost = self.session_lost_at
            ago = "" if lost is None else f" {self.now() - lost:.1f} s ago"
            return "DOWN", f"classical channel lost{ago}: {self.session_lost_reason}"
        if self.block_down:
            return "DOWN", self.block_down
        if self.down_since_commit:
            return "RECOVERING", "light and classical channel back; waiting for a committed block"
        if self.compensating is not None:
            return "DEGRADED", f"re-compensating polarization ({self.compensating.get('reason', '')})"
        if not self.committed_any:
            return ("SYNCING", "session open, no key yet") if self.session_up else ("STARTING", "no session yet")
        if self.block_aborted:
            return "DEGRADED", self.block_aborted
        if self.qber_high:
            q = (self.last_block or {}).get("qber", {})
            return "DEGRADED", f"QBER {_fmt_q(q)} above {self.ops.qber_degraded}"
        if self.low_rate:
            return "DEGRADED", f"net key rate below the {self.slo.min_key_rate_bps:g} bit/s target"
        b = self.last_block or {}
        return "UP", f"block {b.get('block')} committed, QBER {_fmt_q(b.get('qber', {}))}"

    def evaluate(self) -> str:
        with self._lock:
            state, reason = self.decide()
            if state != self.state:
                now = self.now()
                self.time_in_state[self.state] += now - self.since
                rec = {"time": now, "from": self.state, "to": state, "reason": reason,
                       "after_s": now - self.since}
                if state == "DOWN":
                    self.down_since_commit = True
                self.state, self.reason, self.since = state, reason, now
                self.transitions.append(rec)
                self.emit("state", rec)
            else:
                self.reason = reason
            return self.state

    def tick(self) -> str:
        return self.evaluate()

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            now = self.now()
            t = dict(self.time_in_state)
            t[self.state] += now - self.since
            return {"state": self.state, "reason": self.reason, "since": self.since, "alarm": self.alarm,
                    "light_ok": self.light_ok, "baseline_singles_hz": self.baseline_total_hz,
                    "session_up": self.session_up, "detector_flags": list(self.detector_flags.values()),
                    "compensating": self.compensating is not None, "compensations": self.compensations,
                    "compensation_s": self.compensation_s, "time_in_state_s": t,
                    "transitions": self.transitions[-20:]}


def _fmt_q(q: dict[str, Any]) -> str:
    return " ".join(f"{b} {v:.3f}" for b, v in q.items() if v is not None) or "-"
