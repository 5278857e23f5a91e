"""Replay a recorded request/response transcript: byte-exact protocol tests without a device."""

from __future__ import annotations

from qlab.errors import ProtocolError
from qlab.transport.base import Transport


class TranscriptTransport(Transport):
    """Expects the driver to write exactly the recorded requests, and answers with the recorded replies.

    ``pairs`` is a list of (request bytes, reply bytes); a reply may be b"" for commands without one.
    """

    def __init__(self, name: str, pairs: list[tuple[bytes, bytes]], **kw):
        super().__init__(name, **kw)
        self.pairs = list(pairs)
        self._buf = bytearray()
        self.index = 0

    def _write(self, data: bytes) -> None:
        if self.index >= len(self.pairs):
            raise ProtocolError(self.name, f"unexpected extra write {data!r}")
        expected, reply = self.pairs[self.index]
        if data != expected:
            raise ProtocolError(self.name, f"write #{self.index}: expected {expected!r}, driver sent {data!r}")
        self.index += 1
        self._buf += reply

    def _read_until(self, terminator: bytes, timeout_s: float) -> bytes:
        i = self._buf.find(terminator)
        if i < 0:
            raise self.timeout_error(f"transcript has no more reply bytes (buffer {bytes(self._buf)!r})")
        out = bytes(self._buf[: i + len(terminator)])
        del self._buf[: i + len(terminator)]
        return out

    def _read_exact(self, n: int, timeout_s: float) -> bytes:
        if len(self._buf) < n:
            raise self.timeout_error(f"transcript has only {len(self._buf)} of {n} bytes")
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    @property
    def finished(self) -> bool:
        return self.index == len(self.pairs) and not self._buf


class ScriptedTransport(Transport):
    """Answers the n-th write with ``replies[n]`` whatever was written (b"" once the script runs out): feeds a
    driver arbitrary device replies (fuzzing, fault tests). A read the script cannot satisfy is an
    InstrumentTimeout, as with a silent device."""

    def __init__(self, name: str, replies: list[bytes], **kw):
        super().__init__(name, **kw)
        self.replies = list(replies)
        self._buf = bytearray()
        self.index = 0

    def _write(self, data: bytes) -> None:
        if self.index < len(self.replies):
            self._buf += self.replies[self.index]
        self.index += 1

    def _read_until(self, terminator: bytes, timeout_s: float) -> bytes:
        i = self._buf.find(terminator)
        if i < 0:
            raise self.timeout_error(f"script has no more reply bytes (buffer {bytes(self._buf[:80])!r})")
        out = bytes(self._buf[: i + len(terminator)])
        del self._buf[: i + len(terminator)]
        return out

    def _read_exact(self, n: int, timeout_s: float) -> bytes:
        if len(self._buf) < n:
            raise self.timeout_error(f"script has only {len(self._buf)} of {n} bytes")
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    def drain(self) -> bytes:
        stale = bytes(self._buf)
        self._buf.clear()
        return stale
