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
from qlab.network.timing import ClickBuffer
from qlab.qkd.auth import AuthenticationError
from qlab.qkd.bbm92 import PORTS, QkdParams
from qlab.qkd.channel import AuthenticatedChannel, SocketPipe
from qlab.qkd.keystore import lab_authenticators
from qlab.storage.runfile import RunFile
from qlab.transport.tcp import parse_host_port

log = logging.getLogger(__name__)

READ_PERIOD_S = 0.05
BACKOFF_S = (0.2, 5.0)  # first and longest wait between connection attempts


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
        self.started_at = time.time()
        self.last_error = ""
        self.events: list[dict[str, Any]] = []
        self._threads: list[threading.Thread] = []
        self._current_sock: socket.socket | None = None

    # -- events ------------------------------------------------------------------------------------------------
    def emit(self, kind: str, data: dict[str, Any]) -> None:
        """Record an event in the run file and hand it to every listener (telemetry hook)."""
        rec = {"time": time.time(), "kind": kind, **data}
        if kind != "rates":
            self.events.append(rec)
            log.info("%s: %s %s", self.name, kind, json.dumps(data, default=str)[:300])
        with self._rf_lock:
            if self.run_file is not None and not self.run_file.closed:
                self.run_file.add_result(kind, data)
        for listener in list(self.listeners):
            with contextlib.suppress(Exception):
                listener(kind, data)
        if kind in ("block", "reconcile", "clock_acquired", "session"):
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
        return lab

    def _reader(self) -> None:
        assert self.lab is not None
        tagger = self.desc.tagger_of(self.name)
        handle = self.lab[tagger]
        lut = np.full(512, 255, np.uint8)
        for role, (_, inp) in self.lab.roles().items():
            lut[inp + 256] = PORTS[role.split(".")[1]]
        last_rate = time.monotonic()
        counts0 = self.clicks.counts_by_port.copy()
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
                if now - last_rate >= 1.0:
                    c = self.clicks.counts_by_port
                    self.emit("rates", {"singles_hz": {p: float(c[i] - counts0[i]) / (now - last_rate)
                                                       for p, i in PORTS.items()}})
                    counts0, last_rate = c.copy(), now
                self.stop_event.wait(READ_PERIOD_S)
        except Exception as exc:  # noqa: BLE001 - the node cannot run without its tagger: stop it, say why
            self.last_error = f"tagger reader: {type(exc).__name__}: {exc}"
            log.error("%s: %s", self.name, self.last_error)
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
                              self.km.sync_duration_s, self.state, self.emit, self.stop_event.is_set)
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
            while not self.stop_event.is_set():
                try:
                    conn, _ = srv.accept()
                except TimeoutError:
                    continue
                except OSError:
                    return
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
        wait = BACKOFF_S[0]
        while not self.stop_event.is_set():
            try:
                sock = socket.create_connection((host, port), timeout=2.0)
            except OSError as exc:
                self.last_error = f"connect {host}:{port}: {exc}"
                self.stop_event.wait(wait)
                wait = min(BACKOFF_S[1], 2 * wait)
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._current_sock = sock
            started = time.monotonic()
            self._session(sock)
            self._current_sock = None
            if time.monotonic() - started > 5:
                wait = BACKOFF_S[0]  # the session ran: start backing off afresh
            self.stop_event.wait(wait)
            wait = min(BACKOFF_S[1], 2 * wait)

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
                "sim_modules": sim_modules_loaded(), "time": time.time()}

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

    # -- lifecycle -----------------------------------------------------------------------------------------------
    def run(self, duration_s: float | None = None) -> dict[str, Any]:
        """Open the instruments, run the link until stopped (SIGTERM/SIGINT, ``stop_event``, ``duration_s``)."""
        self.open_lab()
        tagger = self.desc.tagger_of(self.name)
        runs = self.dir / "runs"
        runs.mkdir(parents=True, exist_ok=True)
        self.run_file = RunFile(runs / time.strftime(f"%Y%m%d-%H%M%S-{self.name}-link.h5"), taggers=[tagger],
                                procedure="network-link", config_text=self.desc.text, config_path=self.desc.path,
                                parameters={"node": self.name, "peer": self.peer,
                                            "key_management": self.km.model_dump()})
        self.write_status()
        workers = [threading.Thread(target=self._reader, name=f"{self.name}-reader", daemon=True),
                   threading.Thread(target=self._serve if self.role == "alice" else self._connect,
                                    name=f"{self.name}-link", daemon=True)]
        for t in workers:
            t.start()
        deadline = None if duration_s is None else time.monotonic() + duration_s
        try:
            self._start_kme()
            while not self.stop_event.wait(1.0):
                self.write_status()
                if deadline is not None and time.monotonic() > deadline:
                    break
        finally:
            self._stop_kme()
            self.stop_event.set()
            sock = self._current_sock
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            for t in workers:
                t.join(10)
            self.write_status()
            with self._rf_lock:
                if self.run_file is not None:
                    self.run_file.add_result("summary", {k: v for k, v in self.status().items() if k != "store"})
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
