"""One classical session of the link between two nodes: reconcile key stores, acquire the clocks, run blocks.

A session is one TCP connection carrying one ``AuthenticatedChannel`` (fresh nonces, HMAC or Wegman–Carter
tags). Alice (the node with role ``alice``) leads; both sides run ``LinkSession.run`` and it returns when the
connection fails or a block aborts (the channel may then be out of step: the node starts a new session).

Messages (all authenticated):
1. both: ``hello`` {node, next_block, unpaired}; both: ``holds`` {blocks of the peer's unpaired list held here};
   each side then keeps the unpaired blocks the peer holds and drops the others (``LinkKeyStore.settle``).
2. clock acquisition (when Alice has no model): Alice ``next`` {op: sync, duration_s}; Bob ``sync_tags`` with
   the raw times of his clicks over that span (a subset in time; no ports); Alice fits offset and drift.
3. per block: Alice ``next`` {op: block, block, b0, b1 (the interval in Bob's tagger time), unpaired}; Bob reserves the
   block number durably, waits for his clicks to cover it, ``ready`` {unpaired, holds}; Alice ``go`` {holds};
   then the BBM92 parties of ``qlab.qkd.bbm92`` run on the channel, each with only its own clicks (Alice's
   times mapped into Bob's frame by her clock model). Keys reach the key store only through the parties'
   key sinks, after both confirmed.
Block numbers: the larger of the two ``next_block`` values, then +1 per block; reserved before use, never
reused. Times in ps.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from qlab.errors import AnalysisError, QlabError
from qlab.network.keys import LinkKeyStore
from qlab.network.timing import ClickBuffer, LinkClock
from qlab.qkd.bbm92 import Alice, Bob, QkdParams
from qlab.qkd.channel import AuthenticatedChannel

log = logging.getLogger(__name__)

EDGE_PS = 20_000  # Bob's interval is widened by this much at both ends (clock model error, jitter)
SETTLE_S = 0.3  # data newer than this may still be in flight from the tagger
SYNC_MARGIN_PS = 50_000_000_000  # 50 ms: clock offsets up to a few tens of ms are found from one sync span


class SessionEnded(QlabError):
    """The session cannot continue (connection lost, block aborted, peer misbehaved)."""


class CountingPipe:
    """A frame pipe that counts the bytes it carries (classical traffic)."""

    def __init__(self, pipe: Any):
        self.pipe = pipe
        self.sent = 0
        self.received = 0

    def send_frame(self, frame: bytes) -> None:
        self.pipe.send_frame(frame)
        self.sent += len(frame) + 8

    def recv_frame(self) -> bytes:
        frame = self.pipe.recv_frame()
        self.received += len(frame) + 8
        return frame

    def close(self) -> None:
        self.pipe.close()


class LinkState:
    """What outlives a session on a node: the clock model (Alice), the last block's end, counters."""

    def __init__(self) -> None:
        self.clock: LinkClock | None = None
        self.next_a0_ps: float | None = None  # Alice: where the next block starts (her tagger time)
        self.blocks_committed = 0
        self.blocks_aborted = 0
        self.secret_bits = 0
        self.first_commit_at: float | None = None
        self.peer_clock: dict | None = None  # Bob: Alice's clock model as she last sent it
        self.clock_updated_at = 0.0  # monotonic time of the clock's last acquisition or tracker update
        self.skip_to_now = False  # Alice: the next block starts at the newest data (after an abort, a hold ...)
        self.pending_compensation: str = ""  # Alice: re-compensate polarization before the next block (why)


class LinkSession:
    def __init__(self, role: str, channel: AuthenticatedChannel, store: LinkKeyStore, clicks: ClickBuffer,
                 params: QkdParams, block_duration_s: float, sync_duration_s: float, state: LinkState,
                 emit: Callable[[str, dict[str, Any]], None], stop: Callable[[], bool], control: Any = None):
        self.role = role
        self.control = control  # qlab.network.node.LinkControl: thresholds, alarm latch, compensator (or None)
        self.ch = channel
        self.store = store
        self.clicks = clicks
        self.p = params
        self.block_ps = int(block_duration_s * 1e12)
        self.sync_ps = int(sync_duration_s * 1e12)
        self.state = state
        self.emit = emit
        self.stop = stop
        self.peer_next = 1
        self.peer_clicks_from = 0.0
        self._refill: list[int] = []
        self.watch_refills()

    def watch_refills(self) -> None:
        """Record what the parties append to the Wegman–Carter pool at commit (the key sink runs right after)."""
        pool = getattr(self.ch.auth, "pool", None)
        if pool is None:
            return
        original = pool.refill

        def refill(pads: dict[str, bytes]) -> None:
            original(pads)
            self._refill = [len(pads.get("alice", b"")), len(pads.get("bob", b""))]

        pool.refill = refill

    def take_refill(self) -> list[int]:
        out, self._refill = self._refill, []
        return out

    # -- helpers -------------------------------------------------------------------------------------------------
    def _wait_covered(self, t_ps: float, timeout_s: float) -> None:
        """Until the local clicks reach ``t_ps`` (tagger time) plus the settling margin; raises SessionEnded."""
        deadline = time.monotonic() + timeout_s
        while self.clicks.covered_ps < t_ps + SETTLE_S * 1e12:
            if self.stop():
                raise SessionEnded("node stopping")
            if time.monotonic() > deadline:
                raise SessionEnded(f"the tagger's data did not reach {t_ps * 1e-12:.3f} s within {timeout_s:.0f} s")
            time.sleep(0.05)

    def _wait_started(self, span_ps: float, timeout_s: float) -> None:
        """Until the local clicks cover ``span_ps`` since the stream started; raises SessionEnded."""
        deadline = time.monotonic() + timeout_s
        while self.clicks.start_ps < 0 or self.clicks.covered_ps - self.clicks.start_ps < span_ps + SETTLE_S * 1e12:
            if self.stop():
                raise SessionEnded("node stopping")
            if time.monotonic() > deadline:
                raise SessionEnded(f"the tagger delivered no data for {timeout_s:.0f} s")
            time.sleep(0.05)

    def _start_block_accounting(self) -> None:
        """Both sides count a block's authentication tags from the same message on (Alice before sending her
        ``next``, Bob before receiving it): the parties refill exactly what the block's tags consumed."""
        auth = self.ch.auth
        auth.tags_sent = auth.tags_checked = 0

    def _undo_refill(self, block: int) -> None:
        """A dropped block's Wegman–Carter refill (at the pool's tail, unused yet) is removed again, so the two
        parties' pools stay identical."""
        pool = getattr(self.ch.auth, "pool", None)
        refill = self.store.refills.get(block)
        if pool is None or not refill:
            return
        for role, n in zip(("alice", "bob"), refill, strict=True):
            if n:
                del pool.pads[role][-n:]
        pool._save()  # noqa: SLF001 - the pool's own atomic owner-only rewrite

    def _reconcile_answer(self, asked: list[int], answer: list[int]) -> None:
        refills = {b: self.store.refills.get(b) for b in asked}
        paired, dropped = self.store.settle(answer, asked)
        for b in dropped:
            self.store.refills[b] = refills.get(b) or []
            self._undo_refill(b)
        if paired or dropped:
            self.emit("reconcile", {"paired": paired, "dropped": dropped})

    # -- the session ---------------------------------------------------------------------------------------------
    def run(self, node: str) -> None:
        """Run until the connection fails or a block aborts (SessionEnded or AuthenticationError)."""
        self._wait_started(0, 30)
        mine = self.store.unpaired()
        self.ch.send("hello", {"node": node, "next_block": self.store.next_block, "unpaired": mine,
                               "clicks_from": self.clicks.start_ps})
        hdr, _ = self.ch.recv("hello")
        self.peer_next = int(hdr["next_block"])
        self.peer_clicks_from = float(hdr["clicks_from"])
        self.ch.send("holds", {"blocks": self.store.holds([int(b) for b in hdr["unpaired"]])})
        ans, _ = self.ch.recv("holds")
        self._reconcile_answer(mine, [int(b) for b in ans["blocks"]])
        self.emit("session", {"peer": hdr["node"], "peer_next_block": self.peer_next})
        if self.role == "alice":
            self._alice_loop()
        else:
            self._bob_loop()

    # -- Alice ---------------------------------------------------------------------------------------------------
    def _alice_acquire(self) -> None:
        self.ch.send("next", {"op": "sync", "duration_s": self.sync_ps * 1e-12})
        hdr, payload = self.ch.recv("sync_tags")
        bob_t = np.frombuffer(payload, np.int64)
        b0, b1 = int(hdr["t0"]), int(hdr["t1"])
        # Alice's clicks over Bob's span (same numbers: the clocks differ by far less than the span) plus a margin.
        self._wait_covered(b1 + SYNC_MARGIN_PS, 10.0)
        alice_t, _ = self.clicks.span(b0 - SYNC_MARGIN_PS, b1 + SYNC_MARGIN_PS)
        try:
            self.state.clock = LinkClock.acquire(alice_t, bob_t, self.p.window_ps)
        except AnalysisError as exc:
            raise SessionEnded(f"clock acquisition failed: {exc}") from None
        self.state.clock_updated_at = time.monotonic()
        est = self.state.clock.estimate()
        self.emit("clock_acquired", {"offset_ps": est.offset_ps, "at_alice_ps": est.at_alice_ps,
                                     "drift_ppm": est.drift_ppm, "pairs": self.state.clock.sync.pairs,
                                     "significance": self.state.clock.sync.significance,
                                     "residual_rms_ps": self.state.clock.sync.residual_rms_ps,
                                     "peer_tags_published": int(bob_t.size)})

    def _alice_loop(self) -> None:
        st = self.state
        if st.clock is None:
            self._alice_acquire()
        next_block = max(self.store.next_block, self.peer_next)
        while not self.stop():
            ctl = self.control
            if ctl is not None:
                alarm = ctl.alarm()
                if alarm is not None:  # no key while an alarm is latched: tell the peer, wait for the operator
                    self.ch.send("next", {"op": "hold", "alarm": alarm})
                    st.skip_to_now = True
                    self._sleep(ctl.ops.probe_period_s)
                    continue
                why = ctl.clock_stale(st)
                if why:
                    self.emit("clock_reacquire", {"reason": why})
                    self._alice_acquire()
                    st.skip_to_now = True
                if st.pending_compensation:
                    self._compensate(st.pending_compensation)
                    continue
            a0 = st.next_a0_ps if st.next_a0_ps is not None else self.clicks.covered_ps - SETTLE_S * 1e12
            if st.skip_to_now:  # the data since then is of no use (aborted, disclosed in probes, or held)
                a0 = max(a0, self.clicks.covered_ps - SETTLE_S * 1e12)
                st.skip_to_now = False
            # Both nodes must still hold (or already hold, after a restart) the block's clicks.
            bob_from = self.peer_clicks_from - st.clock.model(self.peer_clicks_from)
            a0 = max(a0, self.clicks.start_ps + 1e9, bob_from + 1e9)
            a1 = a0 + self.block_ps
            self._wait_covered(a1, self.block_ps * 1e-12 + 30)
            block = max(next_block, self.store.next_block)
            self.store.reserve(block)
            next_block = block + 1
            clock = st.clock
            assert clock is not None
            b0, b1 = float(a0 + clock.model(a0)), float(a1 + clock.model(a1))
            mine = self.store.unpaired()
            est = clock.estimate()
            self._start_block_accounting()
            self.ch.send("next", {"op": "block", "block": block, "b0": b0, "b1": b1, "unpaired": mine, "alarm": None,
                                  "clock": {"offset_ps": est.offset_ps, "at_alice_ps": est.at_alice_ps,
                                            "drift_ppm": est.drift_ppm, "residual_ps": est.residual_ps}})
            hdr, _ = self.ch.recv("ready")
            self._reconcile_answer(mine, [int(b) for b in hdr["holds"]])
            self.ch.send("go", {"holds": self.store.holds([int(b) for b in hdr["unpaired"]])})
            if hdr.get("refused"):
                raise SessionEnded(f"the peer refused block {block}: {hdr['refused']}")
            st.next_a0_ps = a1
            t_a, ports = self.clicks.span(a0, a1)
            party = Alice(clock.to_bob(t_a), ports, self.ch, self.p)
            committed: list[int] = []

            def sink(bits: np.ndarray, _rid: bytes, b: int = block, out: list[int] = committed) -> None:
                self.store.commit(b, bits, paired=True, refill=self.take_refill())  # Bob acknowledged
                out.append(int(bits.size))

            party.key_sink = sink
            stats = party.run()
            residual = None
            peer_t = getattr(party, "peer_times", None)
            if peer_t is not None:
                residual = clock.update(t_a, np.asarray(peer_t, np.int64))
                if residual is not None:
                    st.clock_updated_at = time.monotonic()
            self._record(block, stats, (a1 - a0) * 1e-12, committed, residual, getattr(party, "matched", None))
            if self.control is not None:
                why = self.control.needs_compensation(stats)
                if why:
                    st.pending_compensation = why
            if not committed:
                st.skip_to_now = True
                raise SessionEnded(f"block {block} ended without a key: {stats.abort_reason}")

    # -- Bob -----------------------------------------------------------------------------------------------------
    def _bob_loop(self) -> None:
        while not self.stop():
            self._start_block_accounting()
            hdr, _ = self.ch.recv("next")
            if self.control is not None and hdr["op"] in ("hold", "compensate", "block"):
                self.control.peer_alarm(hdr.get("alarm"))
            if hdr["op"] == "hold":
                continue
            if hdr["op"] == "compensate":
                self._compensation_responder(hdr)
                continue
            if hdr["op"] == "sync":
                span = int(float(hdr["duration_s"]) * 1e12)
                self._wait_started(span, span * 1e-12 + 10)
                t1 = self.clicks.covered_ps - SETTLE_S * 1e12
                t0 = t1 - span
                bob_t, _ = self.clicks.span(t0, t1)
                self.ch.send("sync_tags", {"t0": int(t0), "t1": int(t1)}, bob_t.astype(np.int64).tobytes())
                continue
            block, b0, b1 = int(hdr["block"]), float(hdr["b0"]), float(hdr["b1"])
            self.state.peer_clock = hdr.get("clock")  # Alice's model, for Bob's report
            refused = ""
            try:
                self.store.reserve(block)
            except ValueError as exc:
                refused = str(exc)
            mine = self.store.unpaired()
            if not refused:
                self._wait_covered(b1 + EDGE_PS, self.block_ps * 1e-12 + 30)
            self.ch.send("ready", {"unpaired": mine, "holds": self.store.holds([int(b) for b in hdr["unpaired"]]),
                                   "refused": refused})
            ans, _ = self.ch.recv("go")
            self._reconcile_answer(mine, [int(b) for b in ans["holds"]])
            if refused:
                raise SessionEnded(f"refused block {block}: {refused}")
            t_b, ports = self.clicks.span(b0 - EDGE_PS, b1 + EDGE_PS)
            party = Bob(t_b, ports, self.ch, self.p)
            committed: list[int] = []

            def sink(bits: np.ndarray, _rid: bytes, b: int = block, out: list[int] = committed) -> None:
                self.store.commit(b, bits, paired=False, refill=self.take_refill())  # paired when Alice holds it
                out.append(int(bits.size))

            party.key_sink = sink
            stats = party.run()
            self._record(block, stats, (b1 - b0) * 1e-12, committed, None, None)
            if not committed:
                raise SessionEnded(f"block {block} ended without a key: {stats.abort_reason}")

    # -- polarization re-compensation (live probes) ------------------------------------------------------------
    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self.stop() and time.monotonic() < end:
            time.sleep(0.05)

    def _compensate(self, reason: str) -> None:
        """Alice: run a re-compensation with the peer (the node holding the compensator searches, the other
        answers probes); then raise the ALARM if the QBER cannot be brought down in either basis."""
        st, ctl = self.state, self.control
        searcher = ctl.compensator_role
        started = time.monotonic()
        self.emit("compensation", {"phase": "start", "reason": reason, "searcher": searcher})
        self.ch.send("next", {"op": "compensate", "reason": reason, "searcher": searcher, "alarm": None})
        if searcher == self.role:
            result = ctl.search(self._probe_as_searcher)
            self.ch.send("probe", {"done": True, "result": result})
        else:
            result = self._answer_probes()
        st.pending_compensation = ""
        st.skip_to_now = True  # the probes disclosed bits: the next block starts after them
        result["duration_s"] = time.monotonic() - started
        self.emit("compensation", {"phase": "end", **result})
        ctl.judge_compensation(result)

    def _compensation_responder(self, hdr: dict) -> None:
        """Bob's side of ``_compensate``."""
        ctl = self.control
        started = time.monotonic()
        if ctl is not None:
            self.emit("compensation", {"phase": "start", "reason": hdr.get("reason", ""),
                                       "searcher": hdr.get("searcher")})
        if hdr.get("searcher") == self.role:
            if ctl is None or ctl.compensator is None:
                result = {"success": False, "error": f"{self.role} has no compensator"}
            else:
                result = ctl.search(self._probe_as_searcher)
            self.ch.send("probe", {"done": True, "result": result})
        else:
            result = self._answer_probes()
        if ctl is not None:
            self.emit("compensation", {"phase": "end", **result, "duration_s": time.monotonic() - started})

    def _probe_span(self) -> tuple[float, float]:
        """A probe span of the searcher's own clicks starting after the compensator's last move (tagger time)."""
        probe_ps = self.control.ops.compensation_probe_s * 1e12
        t0 = self.clicks.covered_ps + 0.2e12  # data after the move: the stream is read every ~50 ms
        self._wait_covered(t0 + probe_ps, probe_ps * 1e-12 + 10)
        return t0, t0 + probe_ps

    def _probe_as_searcher(self) -> Any:
        """Probe the live QBER at the compensator's current setting (both nodes' clicks of one span)."""
        from qlab.network.compensation import probe_qber

        t0, t1 = self._probe_span()
        if self.role == "bob":
            b0, b1 = t0, t1
        else:
            clock = self.state.clock
            b0, b1 = float(t0 + clock.model(t0)), float(t1 + clock.model(t1))
        self.ch.send("probe", {"b0": b0, "b1": b1})
        hdr, payload = self.ch.recv("probe_tags")
        n = int(hdr["n"])
        peer_t = np.frombuffer(payload[:8 * n], np.int64)
        peer_p = np.frombuffer(payload[8 * n:], np.uint8)
        if self.role == "bob":
            t_b, p_b = self.clicks.span(b0, b1)
            t_a, p_a = peer_t, peer_p
        else:
            ta, p_a = self.clicks.span(t0 - EDGE_PS, t1 + EDGE_PS)
            t_a = self.state.clock.to_bob(ta)
            t_b, p_b = peer_t, peer_p
        return probe_qber(t_b, p_b, t_a, p_a, self.p.window_ps, self.control.anti_correlated)

    def _answer_probes(self) -> dict:
        """Answer the searcher's probes with this node's clicks of each span (in Bob's frame) until done."""
        while True:
            hdr, _ = self.ch.recv("probe")
            if hdr.get("done"):
                return dict(hdr.get("result") or {})
            b0, b1 = float(hdr["b0"]), float(hdr["b1"])
            if self.role == "bob":
                self._wait_covered(b1 + EDGE_PS, 15)
                t, p = self.clicks.span(b0 - EDGE_PS, b1 + EDGE_PS)
            else:
                clock = self.state.clock
                a0, a1 = b0 - float(clock.model(b0)), b1 - float(clock.model(b1))
                self._wait_covered(a1 + EDGE_PS, 15)
                ta, p = self.clicks.span(a0 - EDGE_PS, a1 + EDGE_PS)
                t = clock.to_bob(ta)
            self.ch.send("probe_tags", {"n": int(t.size)}, t.astype(np.int64).tobytes() + p.astype(np.uint8).tobytes())

    # -- results -------------------------------------------------------------------------------------------------
    def _record(self, block: int, stats: Any, duration_s: float, committed: list[int], residual: float | None,
                matched: int | None) -> None:
        st = self.state
        if committed:
            st.blocks_committed += 1
            st.secret_bits += committed[0]
            if st.first_commit_at is None:
                st.first_commit_at = time.time()
        else:
            st.blocks_aborted += 1
        q = {"Z": stats.qber_z, "X": stats.qber_x}
        rec = {"time": time.time(), "block": block, "committed": bool(committed), "duration_s": duration_s,
               "secret_bits": committed[0] if committed else 0, "qber": q,
               "visibility": {b: (None if v is None else 1 - 2 * v) for b, v in q.items()},
               "sifted": {"Z": stats.sifted_z, "X": stats.sifted_x},
               "coincidence_rate_hz": None if matched is None else matched / duration_s,
               "clock_residual_ps": residual, "abort_reason": stats.abort_reason,
               "auth_consumed_bits": stats.auth_consumed_bits, "multi_click_events": stats.multi_click_events,
               "sifted_rate_hz": {"Z": stats.sifted_z / duration_s, "X": stats.sifted_x / duration_s},
               # committed bits are net: the Wegman–Carter pads refilled from the block are already taken out
               "net_key_rate_bps": (committed[0] if committed else 0) / duration_s}
        if st.clock is not None:
            est = st.clock.estimate()
            rec["clock"] = {"offset_ps": est.offset_ps, "at_alice_ps": est.at_alice_ps, "drift_ppm": est.drift_ppm}
        self.emit("block", rec)
