"""Accepting connections on a listening socket until told to stop."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator


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
