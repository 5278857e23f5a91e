"""A network node: one OS process with its own instruments, its own key store and run file, and one
authenticated classical channel to its peer.

The node opens only its own instruments (``backend:`` addresses of the emulator or of hardware; never a
simulation: ``lab.sim is None`` is checked), reads its tagger continuously into a click buffer, and runs the
link (``qlab.network.link``) over TCP: the ``alice`` node listens on its endpoint, the ``bob`` node connects
(retrying with backoff). A failed session — connection lost, block aborted — is followed by a new one; the key
store reconciles unpaired blocks at its start. ``status.json`` (atomically replaced) and the run file carry
what the node reports; ``Node.listeners`` receive every event (``kind``, data): the hook for telemetry.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import queue
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from qlab.config import load_config
from qlab.errors import QlabError
from qlab.lab import Lab
from qlab.network.config import NetworkDescription
from qlab.network.keys import LinkKeyStore
from qlab.network.link import CountingPipe, LinkSession, LinkState, SessionEnded
from qlab.network.ops import LinkMonitor
from qlab.network.telemetry import LinkMetrics, NodeHttpServer
from qlab.network.timing import ClickBuffer
from qlab.qkd.auth import AuthenticationError
from qlab.qkd.bbm92 import PORTS, QkdParams
from qlab.qkd.channel import AuthenticatedChannel, SocketPipe
from qlab.qkd.keystore import lab_authenticators
from qlab.storage.runfile import RunFile
from qlab.transport.listen import accepted
from qlab.transport.tcp import parse_host_port

log = logging.getLogger(__name__)

READ_PERIOD_S = 0.05
BACKOFF_S = (0.2, 5.0)  # first and longest wait between connection attempts (capped by operations.probe_period_s)
FAST_LIGHT_S = 0.25  # the light check's window (DOWN on a fibre cut within a second)
TICK_S = 0.5  # the link state machine re-evaluates time-based conditions this often
MIN_PROBE_COINCIDENCES = 200  # fewer in a compensation probe: not enough light to judge (no alarm)


def sim_modules_loaded() -> list[str]:
    """qlab.sim modules imported in this process (a node must have none: it reaches devices by transports)."""
    return sorted(m for m in sys.modules if m == "qlab.sim" or m.startswith("qlab.sim."))


def provision_pair_keys(keys_dir: Path, mode: str) -> tuple[Any, Any]:
    """(Alice's, Bob's) authenticators of the node pair's pre-shared keys (created on first use under a file
    lock, owner-only). On separate sites the files are carried over a trusted path once."""
    keys_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(keys_dir, 0o700)
    with open(os.open(keys_dir / ".lock", os.O_WRONLY | os.O_CREAT, 0o600), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            a, b, _ = lab_authenticators(keys_dir, mode)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return a, b


class Compensator:
    """The node's polarization compensator (a controller in the ``compensator`` stage), moved within its limits."""

    def __init__(self, lab: Lab, name: str, party: str, state: str):
        from qlab.network.compensation import CompensatorModel
        from qlab.optics import axis_retardance

        self.handle = lab[name]
        self.name = name
        inst = lab.config.instruments[name]
        self.axes = list(inst.axes)
        lim = inst.limits.get("position_deg")
        self.lo = -360.0 if lim is None or lim.min is None else lim.min
        self.hi = 720.0 if lim is None or lim.max is None else lim.max
        self.model = CompensatorModel({a: (axis_retardance(ax), ax.zero_deg) for a, ax in inst.axes.items()},
                                      party, state)

    def setting(self) -> dict[str, float]:
        pos = self.handle.call("positions")
        return {a: float(pos[a]) for a in self.axes}

    def bounded(self, setting: dict[str, float]) -> dict[str, float]:
        """Each angle moved by whole half turns (a wave plate's period) into the stage's limits."""
        out = {}
        for a, v in setting.items():
            while v > self.hi:
                v -= 180.0
            while v < self.lo:
                v += 180.0
            out[a] = v
        return out

    def move(self, setting: dict[str, float]) -> None:
        for a, v in self.bounded(setting).items():
            self.handle.call("move_absolute", v, axis=a, timeout=15)


class LinkControl:
    """What the link session asks of the node's operations: the alarm latch, when to re-acquire the clock or
    re-compensate, and the compensation search itself (on the node holding the compensator)."""

    def __init__(self, node: Node):
        self.node = node
        self.ops = node.desc.config.operations
        self.monitor = node.monitor
        self.compensator: Compensator | None = None
        holder = [n for n in (node.name, node.peer) if node.desc.compensator_of(n)]
        self.compensator_role = node.desc.config.nodes[holder[0]].role if holder else None
        self.anti_correlated = node.desc.config.source.state == "psi_minus"

    def alarm(self) -> str | None:
        a = self.monitor.alarm
        return None if a is None else str(a.get("reason"))

    def peer_alarm(self, reason: str | None) -> None:
        """Bob mirrors the coordinating node's alarm (raised and cleared there)."""
        a = self.monitor.alarm
        if reason and a is None:
            self.monitor.raise_alarm(f"peer {self.node.peer}: {reason}", {"mirrored": True})
        elif not reason and a is not None and a.get("mirrored"):
            self.monitor.clear_alarm(f"peer {self.node.peer}")

    def clock_stale(self, st: LinkState) -> str:
        if st.clock is None:
            return ""
        gap = time.monotonic() - st.clock_updated_at
        if gap > self.ops.clock_reacquire_gap_s:
            return f"no clock update for {gap:.0f} s"
        r = st.clock.last_residual_ps
        if r is not None and abs(r) > self.ops.clock_max_residual_ps:
            st.clock.last_residual_ps = None
            return f"tracker residual {r:.0f} ps above {self.ops.clock_max_residual_ps:g} ps"
        return ""

    def needs_compensation(self, stats: Any) -> str:
        if self.compensator_role is None:
            return ""
        q = {"Z": stats.qber_z, "X": stats.qber_x}
        if any(v is None for v in q.values()) or stats.sifted_z + stats.sifted_x < MIN_PROBE_COINCIDENCES:
            return ""  # no light to judge by: that is an outage, not drift
        if max(q.values()) > self.ops.recompensate_qber:
            return f"QBER Z {q['Z']:.3f} X {q['X']:.3f} above {self.ops.recompensate_qber}"
        return ""

    def search(self, probe: Callable[[], Any]) -> dict[str, Any]:
        """Bounded search: the live QBER now, then the model's proposals from it, then a coordinate search."""
        from qlab.network.compensation import coordinate_search

        comp = self.compensator
        ops = self.ops
        if comp is None:
            return {"success": False, "error": f"{self.node.name} has no compensator"}
        trials: list[dict[str, Any]] = []

        def measure(setting: dict[str, float]) -> Any:
            comp.move(setting)
            r = probe()
            trials.append({"setting": comp.bounded(setting), **r.as_dict()})
            return r

        start = comp.setting()
        best_set, best = start, probe()
        trials.append({"setting": start, **best.as_dict()})
        if best.worst > ops.resume_qber and best.coincidences >= MIN_PROBE_COINCIDENCES:
            try:
                proposals = comp.model.candidates(best.counts, start)[:3]
            except ValueError:
                proposals = []
            for cand in proposals:
                if len(trials) >= ops.compensation_max_trials:
                    break
                r = measure(cand)
                if r.cost < best.cost:
                    best_set, best = cand, r
                if best.worst <= ops.resume_qber:
                    break
        qz, qx = best.qber_z, best.qber_x
        if (qz is not None and qx is not None and min(qz, qx) >= ops.alarm_qber
                and best.coincidences >= MIN_PROBE_COINCIDENCES):
            # Even the settings that undo the fitted fibre rotation leave both bases this bad: no polarization
            # error explains it. Stop here (the coordinator raises the ALARM) rather than search on.
            comp.move(start)  # the setting that worked before the excursion
            return {"success": False, "unexplained": True, "trials": len(trials), "setting": comp.bounded(start),
                    "best": best.as_dict(), "start": trials[0]}
        if best.worst > ops.resume_qber and len(trials) < ops.compensation_max_trials:
            comp.move(best_set)
            res = coordinate_search(best_set, measure, ops.compensation_step_deg / 2,
                                    ops.compensation_max_trials - len(trials), ops.resume_qber,
                                    should_stop=self.node.stop_event.is_set, restore=comp.move)
            best_set, best = res.best_setting, res.best
        elif trials[-1]["setting"] != comp.bounded(best_set):
            comp.move(best_set)
        return {"success": best.worst <= ops.resume_qber, "trials": len(trials), "setting": comp.bounded(best_set),
                "best": best.as_dict(), "start": trials[0]}

    def judge_compensation(self, result: dict[str, Any]) -> None:
        """After a compensation: QBER still above ``alarm_qber`` in both bases, with light, is not drift."""
        best = result.get("best") or {}
        qz, qx = best.get("qber_z"), best.get("qber_x")
        if result.get("success") or qz is None or qx is None:
            return
        if best.get("coincidences", 0) >= MIN_PROBE_COINCIDENCES and min(qz, qx) >= self.ops.alarm_qber:
            self.monitor.raise_alarm(f"QBER Z {qz:.3f} X {qx:.3f} in both bases after re-compensation "
                                     f"(alarm at {self.ops.alarm_qber}): channel may be attacked",
                                     {"qber_z": qz, "qber_x": qx})


class Node:
    #: ``qlab node --kme HOST:PORT``: serve the node's ETSI GS QKD 014 KME there ("" = the kme section's listen)
    kme_listen: str | None = None
    kme: Any = None  # the running qlab.network.kme_node.NodeKme

    def __init__(self, desc: NetworkDescription, name: str, backends: dict[str, str] | None = None,
                 peer_address: str | None = None, data_dir: str | Path | None = None):
        if name not in desc.config.nodes:
            raise QlabError(f"no node {name!r} in {desc.path}; nodes are {sorted(desc.config.nodes)}")
        self.desc = desc
        self.name = name
        self.peer = desc.peer_of(name)
        self.sec = desc.config.nodes[name]
        self.role = self.sec.role
        self.km = desc.config.key_management
        self.backends = backends or {}
        self.lab_text = yaml.safe_dump(desc.lab_dict(name, self.backends), sort_keys=False)  # ConfigError first
        self.dir = Path(data_dir) if data_dir is not None else desc.data_dir / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.peer_address = peer_address or desc.config.nodes[self.peer].endpoint
        self.stop_event = threading.Event()
        self.listeners: list[Callable[[str, dict[str, Any]], None]] = []
        self.state = LinkState()
        self.clicks = ClickBuffer(retention_s=3 * self.km.block_duration_s + 20)
        self.store = LinkKeyStore(self.dir / "keys", self.peer)
        self.params = QkdParams(window_ps=self.km.window_ps, sample_fraction=self.km.sample_fraction,
                                qber_tol=self.km.qber_tol, eps_sec=self.km.eps_sec, eps_cor=self.km.eps_cor)
        self.lab: Lab | None = None
        self.run_file: RunFile | None = None
        self._rf_lock = threading.Lock()
        self.bytes_sent = 0
        self.bytes_received = 0
        self.sessions = 0
        self.sessions_opened = 0  # sessions that got past the hello (the peer answered)
        self.started_at = time.time()
        self.last_error = ""
        self._threads: list[threading.Thread] = []
        self._current_sock: socket.socket | None = None
        self.monitor = LinkMonitor(desc.config.operations, desc.config.slo, self.emit,
                                   alarm_path=self.dir / "alarm.json")
        self.metrics = LinkMetrics(name, self.peer)
        self.listeners += [self.metrics.on_event, self.monitor.on_event]
        self.control = LinkControl(self)
        self.http: NodeHttpServer | None = None

    # -- events ------------------------------------------------------------------------------------------------
    def emit(self, kind: str, data: dict[str, Any]) -> None:
        """Record an event in the run file and hand it to every listener (telemetry hook)."""
        if kind != "rates":
            log.info("%s: %s %s", self.name, kind, json.dumps(data, default=str)[:300])
        with self._rf_lock:
            if self.run_file is not None and not self.run_file.closed:
                self.run_file.add_result(kind, data)
        if kind == "session":
            self.sessions_opened += 1
        for listener in list(self.listeners):
            with contextlib.suppress(Exception):
                listener(kind, data)
        if kind in ("block", "reconcile", "clock_acquired", "session", "state", "alarm", "alarm_cleared"):
            self.write_status()

    # -- instruments ---------------------------------------------------------------------------------------------
    def open_lab(self) -> Lab:
        loaded = load_config(str(self.dir / f"{self.name}-instruments.yaml"), text=self.lab_text)
        lab = Lab(loaded, data_dir=self.dir, apply_calibrations=False).open()
        if lab.sim is not None:
            lab.close()
            raise QlabError(f"node {self.name}: its lab holds a simulation; a node reaches devices only through "
                            "their transports (backend addresses)")
        self.lab = lab
        for laser in lab.names("laser"):
            lab[laser].call("set_output", True)
        comp = self.desc.compensator_of(self.name)
        if comp is not None:
            self.control.compensator = Compensator(lab, comp, self.role, self.desc.config.source.state)
        return lab

    def _reader(self) -> None:
        assert self.lab is not None
        tagger = self.desc.tagger_of(self.name)
        handle = self.lab[tagger]
        lut = np.full(512, 255, np.uint8)
        for role, (_, inp) in self.lab.roles().items():
            lut[inp + 256] = PORTS[role.split(".")[1]]
        last_rate = last_fast = time.monotonic()
        counts0 = self.clicks.counts_by_port.copy()
        fast0 = self.clicks.total_clicks
        try:
            handle.call("start_stream")
            while not self.stop_event.is_set():
                chunk = handle.call("read_chunk", timeout=10)
                if chunk.t_stop_ps > chunk.t_start_ps:
                    ports = lut[chunk.channels.astype(np.int64) + 256]
                    sel = ports != 255
                    self.clicks.append(chunk.timestamps[sel], ports[sel], chunk.t_stop_ps, chunk.t_start_ps)
                    with self._rf_lock:
                        if self.run_file is not None and not self.run_file.closed:
                            self.run_file.withhold_tags(chunk, tagger)  # duration and gaps, never tags
                now = time.monotonic()
                if now - last_fast >= FAST_LIGHT_S:
                    self.monitor.on_light((self.clicks.total_clicks - fast0) / (now - last_fast))
                    fast0, last_fast = self.clicks.total_clicks, now
                if now - last_rate >= 1.0:
                    c = self.clicks.counts_by_port
                    self.emit("rates", {"time": time.time(), "state": self.monitor.state,
                                        "key_store_bits": self.metrics.last.get("store_bits", 0),
                                        "singles_hz": {p: float(c[i] - counts0[i]) / (now - last_rate)
                                                       for p, i in PORTS.items()}})
                    counts0, last_rate = c.copy(), now
                self.stop_event.wait(READ_PERIOD_S)
        except Exception as exc:  # noqa: BLE001 - the node cannot run without its tagger: stop it, say why
            self.last_error = f"tagger reader: {type(exc).__name__}: {exc}"
            log.error("%s: %s", self.name, self.last_error)
            self.emit("fault", {"reason": self.last_error})
            self.stop_event.set()

    # -- the link ------------------------------------------------------------------------------------------------
    def _authenticator(self) -> Any:
        pair = "-".join(sorted([self.name, self.peer]))
        a, b = provision_pair_keys(self.desc.data_dir / self.km.keys_dir / pair, self.km.auth)
        return a if self.role == "alice" else b

    def _session(self, sock: socket.socket) -> None:
        timeout = 2 * self.km.block_duration_s + 20
        pipe = CountingPipe(SocketPipe(sock, timeout_s=timeout))
        ch = AuthenticatedChannel(pipe, self._authenticator(), self.role)
        self.sessions += 1
        session = LinkSession(self.role, ch, self.store, self.clicks, self.params, self.km.block_duration_s,
                              self.km.sync_duration_s, self.state, self.emit, self.stop_event.is_set, self.control)
        try:
            session.run(self.name)
        except (SessionEnded, AuthenticationError, OSError) as exc:
            self.last_error = str(exc)
            if not self.stop_event.is_set():
                self.emit("session_ended", {"reason": str(exc)})
        finally:
            self.bytes_sent += pipe.sent
            self.bytes_received += pipe.received
            with contextlib.suppress(OSError):
                sock.close()

    def _serve(self) -> None:
        """Alice: accept the peer's connections; a new connection replaces the current one."""
        host, port = parse_host_port(self.sec.endpoint, 0)
        srv = socket.create_server((host, port), reuse_port=False)
        srv.settimeout(0.2)
        conns: queue.Queue[socket.socket] = queue.Queue()

        def accept() -> None:
            for conn in accepted(srv, self.stop_event):
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                cur = self._current_sock
                if cur is not None:  # the peer reconnected: the old session is dead
                    with contextlib.suppress(OSError):
                        cur.shutdown(socket.SHUT_RDWR)
                conns.put(conn)

        t = threading.Thread(target=accept, name=f"{self.name}-accept", daemon=True)
        t.start()
        try:
            while not self.stop_event.is_set():
                try:
                    conn = conns.get(timeout=0.2)
                except queue.Empty:
                    continue
                self._current_sock = conn
                self._session(conn)
                self._current_sock = None
        finally:
            srv.close()
            t.join(2)

    def _connect(self) -> None:
        """Bob: connect to the peer, retrying with exponential backoff."""
        host, port = parse_host_port(self.peer_address, 0)
        longest = min(BACKOFF_S[1], self.desc.config.operations.probe_period_s)
        wait = BACKOFF_S[0]
        while not self.stop_event.is_set():
            try:
                sock = socket.create_connection((host, port), timeout=2.0)
            except OSError as exc:
                self.last_error = f"connect {host}:{port}: {exc}"
                self.stop_event.wait(wait)
                wait = min(longest, 2 * wait)
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._current_sock = sock
            started = time.monotonic()
            sessions = self.sessions_opened
            self._session(sock)
            self._current_sock = None
            if time.monotonic() - started > 5 or self.sessions_opened > sessions:
                wait = BACKOFF_S[0]  # the session ran: start backing off afresh
            self.stop_event.wait(wait)
            wait = min(longest, 2 * wait)

    # -- status --------------------------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        st = self.state
        clock = None
        if st.clock is not None:
            e = st.clock.estimate()
            clock = {"offset_ps": e.offset_ps, "at_alice_ps": e.at_alice_ps, "drift_ppm": e.drift_ppm,
                     "residual_ps": e.residual_ps}
        if clock is None and st.peer_clock is not None:
            clock = {**st.peer_clock, "from_peer": True}
        blocks = self.store.blocks()
        return {"node": self.name, "role": self.role, "peer": self.peer, "pid": os.getpid(),
                "started_at": self.started_at, "first_commit_at": st.first_commit_at,
                "blocks_committed": st.blocks_committed, "blocks_aborted": st.blocks_aborted,
                "secret_bits": st.secret_bits, "sessions": self.sessions,
                "store": [{"block": b.block, "bits": b.bits, "paired": b.paired} for b in blocks],
                "next_block": self.store.next_block, "clock": clock,
                "bytes_sent": self.bytes_sent, "bytes_received": self.bytes_received,
                "clicks": self.clicks.total_clicks, "last_error": self.last_error,
                "sim_modules": sim_modules_loaded(), "time": time.time(),
                "link": {k: v for k, v in self.monitor.snapshot().items() if k != "transitions"},
                "state": self.monitor.state, "http": None if self.http is None else
                {"host": self.http.host, "port": self.http.port, "url": self.http.url}}

    def write_status(self) -> None:
        path = self.dir / "status.json"
        tmp = path.with_name("status.json.tmp")
        tmp.write_text(json.dumps(self.status(), default=str))
        tmp.replace(path)

    # -- key delivery (ETSI GS QKD 014) ------------------------------------------------------------------------
    def _start_kme(self) -> None:
        if self.kme_listen is None:
            return
        from qlab.network.kme_node import NodeKme

        self.kme = NodeKme(self.desc, self.name, self.store, self.kme_listen or None).start()
        self.emit("kme", {"kme_id": self.kme.config.kme_id, "url": self.kme.url})

    def _stop_kme(self) -> None:
        if self.kme is not None:
            self.kme.stop()

    def clear_alarm(self, operator: str) -> tuple[int, dict[str, Any]]:
        """The operator's command (HTTP ``POST /clear-alarm``): (HTTP code, answer)."""
        alarm = self.monitor.alarm
        if alarm is None:
            return 200, {"cleared": False, "state": self.monitor.state, "message": "no alarm latched"}
        if alarm.get("mirrored"):
            return 409, {"cleared": False, "state": self.monitor.state,
                         "message": f"this alarm is {self.peer}'s (the coordinating node): clear it there"}
        self.monitor.clear_alarm(operator)
        log.warning("%s: alarm cleared by %s", self.name, operator)
        return 200, {"cleared": True, "state": self.monitor.state}

    # -- lifecycle -----------------------------------------------------------------------------------------------
    def run(self, duration_s: float | None = None) -> dict[str, Any]:
        """Open the instruments, run the link until stopped (SIGTERM/SIGINT, ``stop_event``, ``duration_s``)."""
        self.open_lab()
        # Everything after the lab is open runs under the finally: a failing start (a metrics port in use, an
        # unwritable run file) still closes the lab, which switches the lasers off.
        workers: list[threading.Thread] = []
        try:
            tagger = self.desc.tagger_of(self.name)
            runs = self.dir / "runs"
            runs.mkdir(parents=True, exist_ok=True)
            self.run_file = RunFile(runs / time.strftime(f"%Y%m%d-%H%M%S-{self.name}-link.h5"), taggers=[tagger],
                                    procedure="network-link", config_text=self.desc.text, config_path=self.desc.path,
                                    parameters={"node": self.name, "peer": self.peer,
                                                "key_management": self.km.model_dump()})
            self.run_file.add_result("link_start", {"time": time.time(), "state": self.monitor.state,
                                                    "reason": self.monitor.reason, "node": self.name, "role": self.role,
                                                    "block_duration_s": self.km.block_duration_s})
            self.http = NodeHttpServer(self.metrics, self.status, self.clear_alarm,
                                       port=self.sec.metrics_port).start()
            log.info("%s: metrics and status on %s (/metrics, /status, /timeline, /events, POST /clear-alarm)",
                     self.name, self.http.url)
            if self.monitor.alarm is not None:  # latched before a restart
                self.monitor.evaluate()
            self.write_status()
            workers += [threading.Thread(target=self._reader, name=f"{self.name}-reader", daemon=True),
                        threading.Thread(target=self._serve if self.role == "alice" else self._connect,
                                         name=f"{self.name}-link", daemon=True)]
            for t in workers:
                t.start()
            deadline = None if duration_s is None else time.monotonic() + duration_s
            last_status = 0.0
            self._start_kme()
            while not self.stop_event.wait(TICK_S):
                self.monitor.tick()
                self.metrics.set_store_bits(sum(b.bits for b in self.store.blocks() if b.paired))
                if time.monotonic() - last_status >= 1.0:
                    self.write_status()
                    last_status = time.monotonic()
                if deadline is not None and time.monotonic() > deadline:
                    break
        finally:
            self._stop_kme()
            self.stop_event.set()
            if self.http is not None:
                self.http.stop()
            sock = self._current_sock
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            for t in workers:
                if t.ident is not None:  # started
                    t.join(10)
            self.write_status()
            with self._rf_lock:
                if self.run_file is not None:
                    self.run_file.add_result("summary", {k: v for k, v in self.status().items() if k != "store"})
                    self.run_file.add_result("link_end", {"time": time.time(), "state": self.monitor.state})
                    self.run_file.finish()
            if self.lab is not None:
                self.lab.close()
        return self.status()


def run_node(desc: NetworkDescription, name: str, devices_json: str | Path | None = None,
             peer_address: str | None = None, duration_s: float | None = None,
             data_dir: str | Path | None = None, kme: str | None = None) -> int:
    """``qlab node NAME``: run until SIGTERM/SIGINT or ``duration_s``; ``kme``: serve the node's KME at this
    HOST:PORT ("" = its ``kme.listen``). Raises QlabError on bad input."""
    backends: dict[str, str] = {}
    if devices_json is not None:
        try:
            backends = json.loads(Path(devices_json).read_text())["devices"]
        except (OSError, ValueError, KeyError) as exc:
            raise QlabError(f"{devices_json}: not an emulator address file ({exc})") from None
        backends = {k: (v["backend"] if isinstance(v, dict) else v) for k, v in backends.items()}
    node = Node(desc, name, backends, peer_address, data_dir)
    if kme is not None:
        from qlab.network.kme_node import node_kme_config

        node_kme_config(desc, name, node.store.dir, kme or None)  # missing section or certificates: fail now
        node.kme_listen = kme
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: node.stop_event.set())
    status = node.run(duration_s)
    print(json.dumps({k: v for k, v in status.items() if k != "store"}, default=str))
    return 0


def clear_alarm(desc: NetworkDescription, name: str, data_dir: str | Path | None = None,
                operator: str | None = None) -> dict[str, Any]:
    """``qlab node NAME --clear-alarm``: ask the running node (its loopback endpoint from status.json) to clear
    its latched ALARM. Raises QlabError when the node is not running or cannot be reached."""
    import urllib.error
    import urllib.parse
    import urllib.request

    if name not in desc.config.nodes:
        raise QlabError(f"no node {name!r} in {desc.path}; nodes are {sorted(desc.config.nodes)}")
    path = (Path(data_dir) if data_dir is not None else desc.data_dir / name) / "status.json"
    try:
        http = json.loads(path.read_text()).get("http") or {}
    except (OSError, ValueError) as exc:
        raise QlabError(f"node {name}: no status at {path} ({exc}); is it running?") from None
    if not http.get("url"):
        raise QlabError(f"node {name}: {path} names no endpoint; is it running?")
    who = operator or os.environ.get("USER", "operator")
    req = urllib.request.Request(f"{http['url']}/clear-alarm?operator={urllib.parse.quote(who)}", method="POST")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return json.loads(exc.read() or b"{}") or {"cleared": False, "message": str(exc)}
    except OSError as exc:
        raise QlabError(f"node {name}: cannot reach {http['url']} ({exc}); is it running?") from None
