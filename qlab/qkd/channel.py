"""The authenticated classical channel between Alice's and Bob's post-processing.

Every message carries a sequence number and an HMAC-SHA256 tag over (direction, sequence, kind, header,
payload) under a pre-shared key. A tampered, replayed, reordered or unexpected message raises
``AuthenticationError``; the session then aborts and outputs no key. Transports: an in-process pipe
(threads) and a TCP socket (two processes), both carrying length-prefixed frames.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import queue
import socket
import struct
from typing import Any

from qlab.errors import QlabError

TAG_BYTES = 32


class AuthenticationError(QlabError):
    """A classical message failed authentication or arrived out of order: the session aborts."""


class QueuePipe:
    """One end of an in-process duplex pipe."""

    def __init__(self, inbox: queue.Queue, outbox: queue.Queue, timeout_s: float = 60.0):
        self.inbox, self.outbox, self.timeout_s = inbox, outbox, timeout_s
        self.tamper = None  # tests: a function frame -> frame applied to outgoing frames

    @staticmethod
    def pair(timeout_s: float = 60.0) -> tuple[QueuePipe, QueuePipe]:
        a, b = queue.Queue(), queue.Queue()
        return QueuePipe(a, b, timeout_s), QueuePipe(b, a, timeout_s)

    def send_frame(self, frame: bytes) -> None:
        self.outbox.put(self.tamper(frame) if self.tamper else frame)

    def recv_frame(self) -> bytes:
        try:
            return self.inbox.get(timeout=self.timeout_s)
        except queue.Empty:
            raise AuthenticationError(f"no message from the other party within {self.timeout_s} s") from None

    def close(self) -> None:
        pass


class SocketPipe:
    """Length-prefixed frames over a connected TCP socket."""

    def __init__(self, sock: socket.socket, timeout_s: float = 60.0):
        self.sock = sock
        self.sock.settimeout(timeout_s)
        self.tamper = None

    @staticmethod
    def connect(host: str, port: int, timeout_s: float = 60.0) -> SocketPipe:
        return SocketPipe(socket.create_connection((host, port), timeout=timeout_s), timeout_s)

    def send_frame(self, frame: bytes) -> None:
        frame = self.tamper(frame) if self.tamper else frame
        self.sock.sendall(struct.pack("<Q", len(frame)) + frame)

    def _exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            try:
                part = self.sock.recv(n - len(buf))
            except TimeoutError:
                raise AuthenticationError("the other party stopped answering") from None
            if not part:
                raise AuthenticationError("the other party closed the channel")
            buf += part
        return bytes(buf)

    def recv_frame(self) -> bytes:
        (n,) = struct.unpack("<Q", self._exact(8))
        return self._exact(n)

    def close(self) -> None:
        self.sock.close()


class AuthenticatedChannel:
    """Alice's or Bob's end. ``send``/``recv`` exchange (kind, header dict, payload bytes)."""

    def __init__(self, pipe: Any, key: bytes, role: str):
        if len(key) < 16:
            raise ValueError("the pre-shared authentication key needs at least 16 bytes")
        if role not in ("alice", "bob"):
            raise ValueError(role)
        self.pipe, self._key, self.role = pipe, key, role
        self._peer = "bob" if role == "alice" else "alice"
        self._send_seq = 0
        self._recv_seq = 0
        self.messages_sent = 0
        self.bytes_sent = 0

    def _tag(self, direction: str, body: bytes) -> bytes:
        return hmac.new(self._key, direction.encode() + body, hashlib.sha256).digest()

    def send(self, kind: str, header: dict[str, Any] | None = None, payload: bytes = b"") -> None:
        head = json.dumps({"kind": kind, **(header or {})}, separators=(",", ":")).encode()
        body = struct.pack("<QI", self._send_seq, len(head)) + head + payload
        frame = body + self._tag(f"{self.role}->{self._peer}", body)
        self.pipe.send_frame(frame)
        self._send_seq += 1
        self.messages_sent += 1
        self.bytes_sent += len(frame)

    def recv(self, kind: str) -> tuple[dict[str, Any], bytes]:
        frame = self.pipe.recv_frame()
        if len(frame) < 12 + TAG_BYTES:
            raise AuthenticationError("truncated message")
        body, tag = frame[:-TAG_BYTES], frame[-TAG_BYTES:]
        if not hmac.compare_digest(tag, self._tag(f"{self._peer}->{self.role}", body)):
            raise AuthenticationError("message authentication failed (tampered or wrong key)")
        seq, hlen = struct.unpack("<QI", body[:12])
        if seq != self._recv_seq:
            raise AuthenticationError(f"message out of order or replayed (sequence {seq}, expected "
                                      f"{self._recv_seq})")
        self._recv_seq += 1
        header = json.loads(body[12:12 + hlen])
        if header.get("kind") != kind:
            if header.get("kind") == "abort":
                raise AuthenticationError(f"the other party aborted: {header.get('reason')}")
            raise AuthenticationError(f"expected a {kind!r} message, got {header.get('kind')!r}")
        return header, body[12 + hlen:]

    def abort(self, reason: str) -> None:
        with contextlib.suppress(Exception):  # the session is over either way
            self.send("abort", {"reason": reason})
