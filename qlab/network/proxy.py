"""A TCP proxy between two nodes' classical endpoints that can cut the connection (tests, demos, scenarios).

``TcpProxy(target_host, target_port).start()`` listens on an ephemeral loopback port and forwards every
connection to the target. ``outage(seconds)`` closes every open connection at once and refuses new ones until
the outage ends, like a broken fibre or router; ``set_latency(seconds)`` delays what it forwards. Threads only;
``stop()`` closes everything.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time

from qlab.transport.listen import accepted

LOOPBACK = "127.0.0.1"


class TcpProxy:
    def __init__(self, target_host: str, target_port: int, host: str = LOOPBACK, port: int = 0):
        self.target = (target_host, target_port)
        self._srv = socket.create_server((host, port))
        self._srv.settimeout(0.2)
        self.host, self.port = self._srv.getsockname()[:2]
        self._stop = threading.Event()
        self._down_until = 0.0
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._threads: list[threading.Thread] = []
        self.bytes_forwarded = 0
        self.connections = 0
        self.latency_s = 0.0  # added before forwarding each chunk, in both directions (scenarios)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> TcpProxy:
        t = threading.Thread(target=self._accept, name="tcp-proxy", daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def outage(self, seconds: float) -> None:
        """Cut every connection now and refuse new ones for ``seconds``."""
        with self._lock:
            self._down_until = time.monotonic() + seconds
            pairs, self._pairs = self._pairs, []
        for a, b in pairs:
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    s.close()

    def set_latency(self, seconds: float) -> None:
        """Delay every forwarded chunk by ``seconds`` (0 = none)."""
        self.latency_s = max(0.0, float(seconds))

    @property
    def down(self) -> bool:
        return time.monotonic() < self._down_until

    def stop(self) -> None:
        self._stop.set()
        self.outage(0)
        with contextlib.suppress(OSError):
            self._srv.close()
        for t in self._threads:
            t.join(2)

    def _accept(self) -> None:
        for client in accepted(self._srv, self._stop):
            if self.down:
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=2.0)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            client.settimeout(None)
            with self._lock:
                self._pairs.append((client, upstream))
                self.connections += 1
            for src, dst in ((client, upstream), (upstream, client)):
                t = threading.Thread(target=self._pump, args=(src, dst), daemon=True)
                t.start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if self.latency_s > 0:
                    time.sleep(self.latency_s)
                dst.sendall(data)
                self.bytes_forwarded += len(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
