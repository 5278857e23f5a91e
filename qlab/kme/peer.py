"""The link between the two KMEs of a QKD link: request/response messages over an authenticated channel.

Interface (``PeerLink``): ``request(message) -> reply`` sends one JSON-able dict to the peer KME and returns
its reply dict, raising ``PeerUnavailable`` if the peer cannot be reached or the exchange fails
authentication (the caller then treats the outcome as unknown). The receiving side hands each message to a
handler ``(message) -> reply`` (``KeyManager.handle_peer``). Implementations here: ``TcpPeerLink`` with
``PeerServer`` (loopback or LAN TCP, one qlab AuthenticatedChannel session per connection: fresh nonces,
sequence numbers, HMAC-SHA256 tags under a pre-shared key, so replayed, reordered or forged messages are
refused) and ``LoopbackPeerLink`` (in-process, for unit use). A node can carry the same messages on its
classical channel by implementing ``request`` over it.

Wire format (inside the channel's authenticated frames): the client sends kind ``"kme"`` with header
``{"msg": MESSAGE}``; the server answers kind ``"kme-reply"`` with ``{"msg": REPLY}``. Messages:

- ``{"op": "reserve", "master_SAE_ID", "slave_SAE_ID", "keys": [{"key_ID", "ranges": [[block_id_hex,
  bit_offset, bit_length], ...]}, ...]}`` -> ``{"ok": true}`` or ``{"ok": false, "error": TEXT}`` (the
  receiver reserved all keys' ranges durably, or none);
- ``{"op": "release", "key_IDs": [...], "ranges": {key_ID: [[block_id_hex, bit_offset, bit_length], ...]}}``
  -> ``{"ok": true, "released": [...], "delivered": [...]}`` (the receiver withdraws the IDs; their ranges
  stay used, and ranges of IDs it never reserved are marked discarded, so released bits are never delivered
  under another ID and both used maps stay the same);
- ``{"op": "ping"}`` -> ``{"ok": true, "kme_id": ID}``.
"""

from __future__ import annotations

import contextlib
import os
import socket
import socketserver
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from qlab.errors import QlabError
from qlab.qkd.auth import AuthenticationError, HmacAuth
from qlab.qkd.channel import AuthenticatedChannel, SocketPipe
from qlab.storage.secret import create_secret_file, is_private

Handler = Callable[[dict[str, Any]], dict[str, Any]]


class PeerUnavailable(QlabError):
    """The peer KME could not be reached or the exchange failed; the request's outcome is unknown."""


class PeerLink(Protocol):
    def request(self, message: dict[str, Any]) -> dict[str, Any]:
        """Send ``message`` to the peer KME and return its reply. Raises PeerUnavailable."""
        ...

    def close(self) -> None: ...


class LoopbackPeerLink:
    """In-process link straight to the peer's handler (both KMEs in one process)."""

    def __init__(self, handler: Handler | None = None):
        self.handler = handler

    def request(self, message: dict[str, Any]) -> dict[str, Any]:
        if self.handler is None:
            raise PeerUnavailable("loopback peer not connected")
        return self.handler(message)

    def close(self) -> None:
        pass


def load_psk(path: str | Path, create: bool = False) -> bytes:
    """The link's pre-shared HMAC key from an owner-only file (created with 32 random bytes if ``create`` and
    missing). Raises PeerUnavailable for a missing, short or group/world-readable file."""
    p = Path(path)
    if create and not p.exists():
        create_secret_file(p, exclusive=True)
        with open(p, "wb") as f:
            f.write(os.urandom(32))
    try:
        key = p.read_bytes()
    except OSError as exc:
        raise PeerUnavailable(f"{p}: cannot read the KME link key ({exc.strerror})") from None
    if not is_private(p):
        raise PeerUnavailable(f"{p}: the KME link key must be readable by its owner only (chmod 600)")
    if len(key) < 16:
        raise PeerUnavailable(f"{p}: the KME link key needs at least 16 bytes")
    return key


class TcpPeerLink:
    """Client end: one authenticated session per TCP connection, reconnected on the next request after any
    failure. Thread-safe (requests are serialised)."""

    def __init__(self, host: str, port: int, psk: bytes, timeout_s: float = 10.0):
        self.host, self.port, self.psk, self.timeout_s = host, port, psk, timeout_s
        self._lock = threading.Lock()
        self._ch: AuthenticatedChannel | None = None

    def _channel(self) -> AuthenticatedChannel:
        if self._ch is None:
            pipe = SocketPipe.connect(self.host, self.port, self.timeout_s)
            pipe.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # small request/reply frames
            ch = AuthenticatedChannel(pipe, HmacAuth(self.psk), "alice")
            ch.open()
            self._ch = ch
        return self._ch

    def request(self, message: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            for attempt in (0, 1):  # a stale connection (peer restarted) gets one fresh try
                fresh = self._ch is None
                try:
                    ch = self._channel()
                    ch.send("kme", {"msg": message})
                    header, _ = ch.recv("kme-reply")
                    return header["msg"]
                except (OSError, AuthenticationError, KeyError) as exc:
                    self._drop()
                    if fresh or attempt:
                        raise PeerUnavailable(f"peer KME at {self.host}:{self.port}: {exc}") from None
            raise AssertionError("unreachable")

    def _drop(self) -> None:
        if self._ch is not None:
            with contextlib.suppress(OSError):
                self._ch.pipe.close()
            self._ch = None

    def close(self) -> None:
        with self._lock:
            self._drop()


class PeerServer:
    """Server end: accepts the peer KME's connections and answers each message with ``handler``."""

    def __init__(self, handler: Handler, host: str, port: int, psk: bytes, timeout_s: float = 300.0):
        outer = self

        class _Conn(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                ch = AuthenticatedChannel(SocketPipe(self.request, timeout_s), HmacAuth(psk), "bob")
                with outer._conn_lock:
                    outer._conns.add(self.request)
                try:
                    while not outer._stopping:
                        header, _ = ch.recv("kme")
                        ch.send("kme-reply", {"msg": outer.handler(header["msg"])})
                except (OSError, AuthenticationError, KeyError, TypeError):
                    pass  # closed, timed out or not authentic: drop the connection, the client reconnects
                finally:
                    with outer._conn_lock:
                        outer._conns.discard(self.request)

        class _Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.handler = handler
        self._stopping = False
        self._conns: set[socket.socket] = set()
        self._conn_lock = threading.Lock()
        self._server = _Server((host, port), _Conn)
        self.address: tuple[str, int] = self._server.server_address[:2]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="kme-peer-server", daemon=True)

    def start(self) -> PeerServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping = True
        self._server.shutdown()
        self._server.server_close()
        with self._conn_lock:
            for conn in list(self._conns):
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=5)


