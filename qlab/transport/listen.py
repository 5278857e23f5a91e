"""Accepting connections on a listening socket until told to stop."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

from qlab.errors import QlabError


def accepted(srv: socket.socket, stop: threading.Event) -> Iterator[socket.socket]:
    """Connections accepted on ``srv`` until ``stop`` is set or the socket is closed. ``srv`` needs a timeout
    (e.g. 0.2 s): it is how often ``stop`` is looked at."""
    while not stop.is_set():
        try:
            conn, _ = srv.accept()
        except TimeoutError:
            continue
        except OSError:  # closed under us: the server is shutting down
            return
        yield conn


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free right now on ``host`` (another process may still take it later)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def free_port_pair(host: str, attempts: int = 50) -> int:
    """A port P with P + 1 also free on ``host`` right now (another process may still take them later), for
    devices that serve a second port at PORT + 1. Raises QlabError when none is found."""
    for _ in range(attempts):
        with socket.socket() as a, socket.socket() as b:
            a.bind((host, 0))
            port = a.getsockname()[1]
            if port >= 65535:
                continue
            try:
                b.bind((host, port + 1))
            except OSError:
                continue
            return port
    raise QlabError(f"no two consecutive free TCP ports on {host} after {attempts} attempts")
