"""The authenticated classical channel between Alice's and Bob's post-processing.

A session starts with both parties sending a fresh 16-byte nonce (``open``). Every later message carries a
sequence number and a tag over (protocol label, both nonces, direction, sequence, kind, header, payload),
so a message of an earlier session, a replayed, reordered, truncated or tampered one fails and raises
``AuthenticationError``; the session then aborts and outputs no key. The tag is made by an authenticator
(qlab.qkd.auth): HMAC-SHA256 under a pre-shared key (lab mode) or Wegman–Carter tags that consume key. With
Wegman–Carter, a chatty section (Cascade) may be ``deferred``: its messages carry no tag and one tag over
the section's whole transcript, in each direction, closes it (a tampered message then aborts the block at
the section's end, before any key exists). Transports: an in-process pipe (threads) and a TCP socket (two
processes), both carrying length-prefixed frames.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import socket
import struct
from collections.abc import Iterator
from typing import Any

from qlab.qkd.auth import AuthenticationError, Authenticator, HmacAuth

__all__ = ["AuthenticatedChannel", "AuthenticationError", "QueuePipe", "SocketPipe"]

HELLO = b"QLHELLO2"
NONCE_BYTES = 16
LABEL = b"qlab-qkd-session-2"
_SLOT = struct.Struct("<Q")
_HEAD = struct.Struct("<QI")  # sequence number, header length
MAX_FRAME_BYTES = 1 << 30  # far above any block's largest message (click times of one block)


_CLOSED = None  # end-of-pipe marker in a QueuePipe queue (frames are bytes)


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
            frame = self.inbox.get(timeout=self.timeout_s)
        except queue.Empty:
            raise AuthenticationError(f"no message from the other party within {self.timeout_s} s") from None
        if frame is _CLOSED:
            raise AuthenticationError("the other party closed the channel")
        return frame

    def close(self) -> None:
        """Tell the other end no more frames will come (its next receive fails at once)."""
        self.outbox.put(_CLOSED)


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
        if n > MAX_FRAME_BYTES:  # a forged length must not make the reader allocate or overflow
            raise AuthenticationError(f"the other party announced a {n}-byte message (at most {MAX_FRAME_BYTES})")
        return self._exact(n)

    def close(self) -> None:
        self.sock.close()


class AuthenticatedChannel:
    """Alice's or Bob's end. ``send``/``recv`` exchange (kind, header dict, payload bytes).

    ``auth`` is an Authenticator or the bytes of a pre-shared HMAC key (≥ 16 bytes)."""

    def __init__(self, pipe: Any, auth: bytes | Authenticator, role: str):
        if role not in ("alice", "bob"):
            raise ValueError(role)
        self.auth = auth if isinstance(auth, Authenticator) else HmacAuth(auth)
        self.pipe, self.role = pipe, role
        self._peer = "bob" if role == "alice" else "alice"
        self._nonce = os.urandom(NONCE_BYTES)
        self._peer_nonce: bytes | None = None
        self._hello_sent = False
        self._send_seq = 0
        self._recv_seq = 0
        self._deferred: tuple[list[bytes], list[bytes]] | None = None
        self.messages_sent = 0
        self.bytes_sent = 0

    # -- session -----------------------------------------------------------------------------------------
    def send_hello(self) -> None:
        """Send this party's fresh nonce (once per session)."""
        if not self._hello_sent:
            self._hello_sent = True
            self.pipe.send_frame(HELLO + bytes([self.auth.mode_id]) + self._nonce)

    def open(self) -> None:
        """Exchange nonces with the peer (idempotent; ``send``/``recv`` call it). The nonces are public; a
        nonce changed in transit makes the two parties' views of the session differ, so every tag fails."""
        self.send_hello()
        if self._peer_nonce is not None:
            return
        frame = self.pipe.recv_frame()
        if len(frame) != len(HELLO) + 1 + NONCE_BYTES or frame[:len(HELLO)] != HELLO:
            raise AuthenticationError("malformed session hello (not a qlab QKD peer, or tampered)")
        if frame[len(HELLO)] != self.auth.mode_id:
            raise AuthenticationError(f"the other party uses another authentication mode than {self.auth.mode}")
        self._peer_nonce = frame[len(HELLO) + 1:]

    def _context(self, sender: str) -> bytes:
        nonces = {self.role: self._nonce, self._peer: self._peer_nonce or b""}
        receiver = "bob" if sender == "alice" else "alice"
        return LABEL + nonces["alice"] + nonces["bob"] + f"{sender}->{receiver}".encode()

    # -- messages ----------------------------------------------------------------------------------------
    def send(self, kind: str, header: dict[str, Any] | None = None, payload: bytes = b"",
             _transcript: bytes = b"") -> None:
        self.open()
        head = json.dumps({"kind": kind, **(header or {})}, separators=(",", ":")).encode()
        body = _HEAD.pack(self._send_seq, len(head)) + head + payload
        if self._deferred is not None:
            self._deferred[0].append(body)
            frame = _SLOT.pack(0) + body
        else:
            slot, tag = self.auth.sign(self.role, self._context(self.role) + body + _transcript)
            frame = _SLOT.pack(slot) + body + tag
        self.pipe.send_frame(frame)
        self._send_seq += 1
        self.messages_sent += 1
        self.bytes_sent += len(frame)

    def recv(self, kind: str, _transcript: bytes = b"") -> tuple[dict[str, Any], bytes]:
        self.open()
        frame = self.pipe.recv_frame()
        deferred = self._deferred is not None
        tag_bytes = 0 if deferred else self.auth.tag_bytes
        if len(frame) < _SLOT.size + _HEAD.size + tag_bytes:
            raise AuthenticationError("truncated message")
        (slot,) = _SLOT.unpack(frame[:_SLOT.size])
        body = frame[_SLOT.size:len(frame) - tag_bytes]
        if deferred:
            self._deferred[1].append(body)
        else:
            self.auth.check(self._peer, slot, self._context(self._peer) + body + _transcript,
                            frame[len(frame) - tag_bytes:])
        seq, hlen = _HEAD.unpack(body[:_HEAD.size])
        if seq != self._recv_seq:
            raise AuthenticationError(f"message out of order or replayed (sequence {seq}, expected "
                                      f"{self._recv_seq})")
        self._recv_seq += 1
        try:
            header = json.loads(body[_HEAD.size:_HEAD.size + hlen])
        except (ValueError, RecursionError):  # RecursionError: deeply nested JSON (untagged deferred messages)
            raise AuthenticationError("malformed message header") from None
        if not isinstance(header, dict) or header.get("kind") != kind:
            got = header.get("kind") if isinstance(header, dict) else header
            if got == "abort":
                raise AuthenticationError(f"the other party aborted: {header.get('reason')}")
            raise AuthenticationError(f"expected a {kind!r} message, got {got!r}")
        return header, body[_HEAD.size + hlen:]

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """Messages inside carry no tag when the authenticator charges key per tag; on a clean exit each
        party sends one tag over the section's transcript (what it sent, then what it received) and checks
        the peer's against its own view. Raises AuthenticationError on any difference."""
        if not self.auth.defers or self._deferred is not None:
            yield
            return
        self.open()
        self._deferred = ([], [])
        try:
            yield
        except (ValueError, IndexError, KeyError, TypeError, OverflowError) as exc:
            # The section's messages are untagged until its transcript check: one its parser chokes on was
            # tampered with (or forged), which is an authentication failure, not a crash.
            self._deferred = None
            raise AuthenticationError(f"malformed message in a deferred section ({type(exc).__name__}: {exc})"
                                      ) from None
        except BaseException:
            self._deferred = None
            raise
        sent, received = self._deferred
        self._deferred = None
        self.send("transcript", {"sent": len(sent), "received": len(received)},
                  _transcript=_transcript(sent, received))
        try:
            self.recv("transcript", _transcript=_transcript(received, sent))
        except AuthenticationError as exc:
            raise AuthenticationError(f"transcript check failed: a message of the deferred section was "
                                      f"tampered, dropped or reordered ({exc})") from None

    def abort(self, reason: str) -> None:
        self._deferred = None
        try:
            self.send("abort", {"reason": reason})
        except Exception:  # noqa: BLE001 - the session is over either way
            # No authenticated word is possible (e.g. no Wegman-Carter pad left): closing the pipe ends the
            # peer's wait at once. An unauthenticated close can only make the peer abort, which anyone on the
            # wire can force anyway by dropping messages.
            with contextlib.suppress(Exception):
                self.pipe.close()


def _transcript(first: list[bytes], second: list[bytes]) -> bytes:
    """Unambiguous encoding of two message lists (length-prefixed bodies)."""
    parts = [struct.pack("<Q", len(first))]
    for b in first:
        parts += [struct.pack("<Q", len(b)), b]
    parts.append(struct.pack("<Q", len(second)))
    for b in second:
        parts += [struct.pack("<Q", len(b)), b]
    return b"".join(parts)
