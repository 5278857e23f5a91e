"""Instrument watchdog: during a run, every instrument is health-checked on its own worker.

One watchdog thread per watched instrument submits a cheap query (the first readable entry of the
instrument's settings table) to the instrument's worker every ``period_s`` and waits at most ``timeout_s``
for it. A query that fails, or that does not finish in time because the worker is stuck in a call (a hung
link), is a fault: ``on_fault(InstrumentFault)`` is called once and that instrument is no longer watched.

Defaults (``policy_for``): lasers and interlocks every 0.2 s with a 0.4 s timeout, so a dead or hung
laser is reported within 0.6 s (the run then aborts within a tagger read); other instruments every 2 s,
timeout their transport timeout + 1 s (a move or a tagger read may legitimately take a while).
In-process simulated instruments on a fast (not realtime) simulated clock are not watched by default:
they cannot hang by themselves, and background queries would move simulated time and break
reproducible runs. ``watchdog_period_s`` in instruments.yaml overrides the period (0 switches the
watchdog off for that instrument), ``watchdog_timeout_s`` the timeout.

Reconnect (``reconnect: true``, default off): after a failed check the watchdog reopens the instrument's
transport with backoff (0.25 s doubling, within ``RECONNECT_WINDOW_S``). An instrument that comes back
within the window keeps being watched and the run goes on — except a laser: its state was unknown, so
the fault still aborts the run, and a laser that comes back is put in its safe state (output off).
Emission is never switched back on by the watchdog.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from qlab.errors import InstrumentError

if TYPE_CHECKING:
    from qlab.instruments.handle import InstrumentHandle

log = logging.getLogger(__name__)

SAFETY_KINDS = ("laser", "interlock")
RECONNECT_WINDOW_S = 5.0


class InstrumentFault(InstrumentError):
    """An instrument failed its health check, or stopped answering, while a run was going on."""

    def __init__(self, instrument: str, message: str, cause: BaseException | None = None):
        self.cause = cause
        super().__init__(instrument, message)


@dataclass(frozen=True)
class WatchPolicy:
    """How one instrument is watched: query every ``period_s`` s, fault if a query takes over ``timeout_s``
    s; ``reconnect``: try to reopen the link before (non-lasers) or after (lasers) declaring the fault."""

    period_s: float
    timeout_s: float
    reconnect: bool = False


def policy_for(kind: str, cfg: Any, in_process_fast_sim: bool) -> WatchPolicy | None:
    """The watch policy of an instrument of ``kind`` with config entry ``cfg`` (an InstrumentConfig);
    None when it is not watched."""
    period = getattr(cfg, "watchdog_period_s", None)
    timeout = getattr(cfg, "watchdog_timeout_s", None)
    reconnect = bool(getattr(cfg, "reconnect", False))
    if period is None and in_process_fast_sim:
        return None
    safety = kind in SAFETY_KINDS
    if period is None:
        period = 0.2 if safety else 2.0
    if period <= 0:
        return None
    if timeout is None:
        timeout = 0.4 if safety else float(getattr(cfg, "timeout_s", 2.0)) + 1.0
    return WatchPolicy(float(period), float(timeout), reconnect)


def health_query(instrument: Any) -> None:
    """Read one cheap entry of the instrument's settings table (updating its cache); the instrument's
    ``status()`` if the table has nothing readable. Raises what the driver raises."""
    for s in instrument.settings_table():
        if not s.spec.readable:
            continue
        if s.spec.index == "map":
            values = s.read(instrument)
            instrument.cache.update({s.spec.entry(k): (v, s.spec.unit) for k, v in values.items()}, "read")
            return
        indices = instrument.setting_indices(s)
        if not indices:
            continue
        index = indices[0]
        instrument.cache.update({s.spec.entry(index): (s.read(instrument, index), s.spec.unit)}, "read")
        return
    instrument.status()


def reopen(instrument: Any, make_transport: Callable[[], Any] | None) -> None:
    """Close the instrument's link and open it again (on its worker). Lasers are then put in their safe
    state: a reconnect never leaves emission on."""
    # The driver's own close hook (streams, SDK handles) and the link, without the safe-state round trip over
    # the broken link (the laser gets it after the reopen); either may fail: the old link is broken anyway.
    if instrument.is_open:
        with contextlib.suppress(Exception):
            instrument._close()
    if instrument.transport is not None and hasattr(instrument.transport, "close"):
        with contextlib.suppress(Exception):
            instrument.transport.close()
    instrument._is_open = False
    if make_transport is not None:
        instrument.transport = make_transport()
    instrument.open()  # a failed open closes the new link again
    if instrument.kind == "laser":
        instrument.safe_state()


class Watchdog:
    """Watches the handles given with their policies until ``stop()``.

    ``on_fault(fault)`` runs on the watchdog's thread of the faulted instrument, once per instrument.
    ``make_transport(name)`` builds a fresh link for reconnects (None: reopen on the same transport).
    """

    def __init__(self, handles: dict[str, InstrumentHandle], policies: dict[str, WatchPolicy],
                 on_fault: Callable[[InstrumentFault], None],
                 make_transport: Callable[[str], Callable[[], Any] | None] | None = None):
        self.handles = handles
        self.policies = policies
        self.on_fault = on_fault
        self.make_transport = make_transport
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.faults: list[InstrumentFault] = []
        self.reconnects: list[dict[str, Any]] = []

    def start(self) -> Watchdog:
        for name, policy in self.policies.items():
            th = threading.Thread(target=self._watch, args=(name, policy), name=f"watchdog-{name}", daemon=True)
            th.start()
            self._threads.append(th)
        return self

    def stop(self, timeout_s: float = 1.0) -> None:
        self._stop.set()
        deadline = time.monotonic() + timeout_s
        for th in self._threads:
            if th is not threading.current_thread():
                th.join(max(0.0, deadline - time.monotonic()))

    def _check(self, handle: InstrumentHandle, policy: WatchPolicy) -> InstrumentFault | None:
        """One health check; the fault it found, or None."""
        started = time.monotonic()
        fut = handle.submit(health_query)
        try:
            fut.result(policy.timeout_s)
            return None
        except FutureTimeout:
            busy = handle.busy_for_s()
            what = f"busy in {handle.current_call!r} for {busy:.1f} s" if busy else "queue not served"
            fault = InstrumentFault(handle.name, f"not answering: health check unanswered after "
                                                 f"{time.monotonic() - started:.2f} s ({what})")
            handle.mark_hung(fault)
            return fault
        except Exception as exc:  # noqa: BLE001 - any failure of the query is the instrument's fault
            return InstrumentFault(handle.name, f"health check failed: {exc}", exc)

    def _reconnect(self, handle: InstrumentHandle) -> bool:
        make = self.make_transport(handle.name) if self.make_transport is not None else None
        delay, deadline = 0.25, time.monotonic() + RECONNECT_WINDOW_S
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                handle.submit(reopen, make).result(max(0.1, deadline - time.monotonic()))
                handle.faulted = handle.hung = None  # the link works again: its next failure is a new fault
                self.reconnects.append({"time": time.time(), "instrument": handle.name})
                log.warning("%s: reconnected", handle.name)
                return True
            except Exception as exc:  # noqa: BLE001 - retry with backoff
                log.info("%s: reconnect failed: %s", handle.name, exc)
            self._stop.wait(delay)
            delay = min(2 * delay, 2.0)
        return False

    def _watch(self, name: str, policy: WatchPolicy) -> None:
        handle = self.handles[name]
        while not self._stop.wait(policy.period_s):
            fault = self._check(handle, policy)
            if fault is None or self._stop.is_set():
                continue
            if policy.reconnect and handle.kind not in SAFETY_KINDS and self._reconnect(handle):
                continue  # a non-emitting instrument came back: keep watching, the run goes on
            self.faults.append(fault)
            try:
                self.on_fault(fault)
            except Exception:  # noqa: BLE001 - the watchdog must not die silently
                log.exception("%s: fault handler failed", name)
            if policy.reconnect and handle.kind in SAFETY_KINDS:
                self._reconnect(handle)  # reopen and put in safe state (output off), never back on
            return
