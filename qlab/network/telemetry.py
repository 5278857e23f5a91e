"""A node's live telemetry: Prometheus metrics (``qlab_link_*``) and a small HTTP endpoint on loopback.

``LinkMetrics`` turns the node's events into gauges and counters in its own ``CollectorRegistry`` (names in
snake case, base unit last, counters ``_total``; labels per basis/port/state, never per event) and keeps a
per-second timeline for the GUI. ``NodeHttpServer`` serves, on 127.0.0.1 only:

- ``GET /metrics``: the Prometheus text format;
- ``GET /status``: the node's status (what ``status.json`` holds, plus the link state);
- ``GET /timeline?since=T``: per-second samples (time, state, singles, QBER, key rates, key store level);
- ``GET /events?since=N``: the node's events from sequence number N (state changes, blocks, alarms ...);
- ``POST /clear-alarm``: the operator's command that clears a latched ALARM (409 when the node cannot).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import deque
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from qlab.network.ops import PORT_NAMES, STATES

BASES = ("Z", "X")
TIMELINE_LEN = 3600  # one hour of per-second samples
EVENTS_KEPT = 2000  # the most recent events /events can serve


class LinkMetrics:
    def __init__(self, node: str, peer: str):
        self.registry = CollectorRegistry(auto_describe=True)
        r, lbl = self.registry, ["peer"]
        self.peer = peer
        self.state = Gauge("qlab_link_state", "1 for the link's current state, 0 for the others", ["peer", "state"],
                           registry=r)
        self.singles = Gauge("qlab_link_singles_rate_hertz", "singles rate per detector port (last second)",
                             ["peer", "port"], registry=r)
        self.coinc = Gauge("qlab_link_coincidence_rate_hertz", "coincidence rate of the last block", lbl, registry=r)
        self.sifted = Gauge("qlab_link_sifted_rate_hertz", "sifted events per second of the last block per basis",
                            ["peer", "basis"], registry=r)
        self.qber = Gauge("qlab_link_qber_ratio", "quantum bit error ratio of the last block per basis",
                          ["peer", "basis"], registry=r)
        self.vis = Gauge("qlab_link_visibility_ratio", "visibility (1 - 2 QBER) of the last block per basis",
                         ["peer", "basis"], registry=r)
        self.block_bits = Gauge("qlab_link_block_secret_bits", "secret bits of the last block (0 if aborted)", lbl,
                                registry=r)
        self.key_rate = Gauge("qlab_link_secret_key_rate_bits_per_second",
                              "net secret key rate of the last block (after authentication cost)", lbl, registry=r)
        self.auth_bits = Gauge("qlab_link_block_auth_consumed_bits", "key spent on the last block's authentication",
                               lbl, registry=r)
        self.residual = Gauge("qlab_link_clock_offset_residual_seconds", "clock tracker residual of the last block",
                              lbl, registry=r)
        self.offset = Gauge("qlab_link_clock_offset_seconds", "t_peer - t_alice clock offset (Alice's model)", lbl,
                            registry=r)
        self.store = Gauge("qlab_link_key_store_bits", "usable key in the node's store (paired blocks)", lbl,
                           registry=r)
        self.drift = Gauge("qlab_link_detector_singles_share_ratio",
                           "a port's share of the singles relative to its baseline (1 = unchanged)", ["peer", "port"],
                           registry=r)
        self.committed = Counter("qlab_link_committed_bits", "committed net secret bits", lbl, registry=r)
        self.blocks = Counter("qlab_link_blocks", "blocks by result", ["peer", "result"], registry=r)
        self.transitions = Counter("qlab_link_state_transitions", "link state changes", lbl, registry=r)
        self.compensations = Counter("qlab_link_compensations", "polarization re-compensations", lbl, registry=r)
        self.comp_seconds = Counter("qlab_link_compensation_seconds", "time spent re-compensating", lbl, registry=r)
        self.alarms = Counter("qlab_link_alarms", "alarms raised", lbl, registry=r)
        for s in STATES:
            self.state.labels(peer, s).set(0)
        self.state.labels(peer, "STARTING").set(1)
        for res in ("committed", "aborted"):
            self.blocks.labels(peer, res)
        for c in (self.committed, self.transitions, self.compensations, self.comp_seconds, self.alarms):
            c.labels(peer)
        self._lock = threading.Lock()
        self.current_state = "STARTING"
        self.last: dict[str, Any] = {"qber_z": None, "qber_x": None, "key_rate_bps": 0.0, "store_bits": 0}
        self.timeline: deque[dict[str, Any]] = deque(maxlen=TIMELINE_LEN)
        self.events: deque[dict[str, Any]] = deque(maxlen=EVENTS_KEPT)
        self._next_seq = 0  # sequence numbers only go up, however many events have been dropped

    def on_event(self, kind: str, data: dict[str, Any]) -> None:
        p = self.peer
        with self._lock:
            if kind != "rates":
                self.events.append({"seq": self._next_seq, "time": data.get("time", time.time()), "kind": kind,
                                    **{k: v for k, v in data.items() if k != "time"}})
                self._next_seq += 1
            if kind == "rates":
                singles = data.get("singles_hz", {})
                for port in PORT_NAMES:
                    self.singles.labels(p, port).set(float(singles.get(port, 0.0)))
                self.timeline.append({"time": data.get("time", time.time()), "state": self.current_state,
                                      "singles_hz": float(sum(singles.values())), **self.last})
            elif kind == "state":
                for s in STATES:
                    self.state.labels(p, s).set(1 if s == data["to"] else 0)
                self.current_state = data["to"]
                self.transitions.labels(p).inc()
            elif kind == "block":
                self._block(data)
            elif kind == "compensation" and data.get("phase") == "start":
                self.compensations.labels(p).inc()
            elif kind == "compensation":
                self.comp_seconds.labels(p).inc(float(data.get("duration_s") or 0.0))
            elif kind == "alarm":
                self.alarms.labels(p).inc()
            elif kind in ("detector_drift", "detector_drift_cleared"):
                self.drift.labels(p, data["port"]).set(float(data.get("share_ratio", 1.0)))
            elif kind == "clock_acquired":
                self.offset.labels(p).set(float(data["offset_ps"]) * 1e-12)

    def _block(self, rec: dict[str, Any]) -> None:
        p = self.peer
        dur = float(rec.get("duration_s") or 1.0)
        bits = int(rec.get("secret_bits") or 0)
        for b in BASES:
            q = (rec.get("qber") or {}).get(b)
            if q is not None:
                self.qber.labels(p, b).set(q)
                self.vis.labels(p, b).set(1 - 2 * q)
            self.sifted.labels(p, b).set(int((rec.get("sifted") or {}).get(b) or 0) / dur)
        if rec.get("coincidence_rate_hz") is not None:
            self.coinc.labels(p).set(float(rec["coincidence_rate_hz"]))
        self.block_bits.labels(p).set(bits)
        self.key_rate.labels(p).set(bits / dur)
        self.auth_bits.labels(p).set(int(rec.get("auth_consumed_bits") or 0))
        if rec.get("clock_residual_ps") is not None:
            self.residual.labels(p).set(float(rec["clock_residual_ps"]) * 1e-12)
        if (rec.get("clock") or {}).get("offset_ps") is not None:
            self.offset.labels(p).set(float(rec["clock"]["offset_ps"]) * 1e-12)
        self.blocks.labels(p, "committed" if rec.get("committed") else "aborted").inc()
        if rec.get("committed"):
            self.committed.labels(p).inc(bits)
        q = rec.get("qber") or {}
        self.last.update({"qber_z": q.get("Z"), "qber_x": q.get("X"), "key_rate_bps": bits / dur,
                          "block": rec.get("block")})

    def set_store_bits(self, bits: int) -> None:
        self.store.labels(self.peer).set(bits)
        with self._lock:
            self.last["store_bits"] = int(bits)

    def text(self) -> bytes:
        return generate_latest(self.registry)

    def timeline_since(self, t: float) -> list[dict[str, Any]]:
        with self._lock:
            return [s for s in self.timeline if s["time"] > t]

    def events_since(self, seq: int) -> list[dict[str, Any]]:
        with self._lock:
            return [e for e in self.events if e["seq"] >= seq]


class NodeHttpServer:
    """The node's loopback HTTP endpoint (threads; ``stop()`` closes it)."""

    def __init__(self, metrics: LinkMetrics, status: Callable[[], dict[str, Any]],
                 clear_alarm: Callable[[str], tuple[int, dict[str, Any]]], host: str = "127.0.0.1", port: int = 0):
        handler = _handler(metrics, status, clear_alarm)
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self.host, self.port = self.httpd.server_address[:2]
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="node-http", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> NodeHttpServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(2)


def _handler(metrics: LinkMetrics, status: Callable[[], dict[str, Any]],
             clear_alarm: Callable[[str], tuple[int, dict[str, Any]]]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_: Any) -> None:  # scrapes every few seconds would flood the node's log
            pass

        def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _json(self, code: int, obj: Any) -> None:
            self._send(code, json.dumps(obj, default=str).encode())

        def do_GET(self) -> None:  # noqa: N802 - the http.server name
            url = urlparse(self.path)
            q = parse_qs(url.query)
            try:
                if url.path == "/metrics":
                    self._send(200, metrics.text(), CONTENT_TYPE_LATEST)
                elif url.path == "/status":
                    self._json(200, status())
                elif url.path == "/timeline":
                    self._json(200, metrics.timeline_since(float(q.get("since", ["0"])[0])))
                elif url.path == "/events":
                    self._json(200, metrics.events_since(int(q.get("since", ["0"])[0])))
                else:
                    self._json(404, {"error": f"no {url.path}; try /metrics, /status, /timeline, /events"})
            except ValueError as exc:
                self._json(400, {"error": str(exc)})

        def do_POST(self) -> None:  # noqa: N802
            url = urlparse(self.path)
            if url.path != "/clear-alarm":
                self._json(404, {"error": f"no {url.path}; POST /clear-alarm"})
                return
            who = parse_qs(url.query).get("operator", ["operator"])[0][:80]
            code, body = clear_alarm(who)
            self._json(code, body)

    return Handler
