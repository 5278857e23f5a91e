"""Message authenticators of the QKD classical channel: HMAC-SHA256 under a pre-shared key (lab mode) and
Wegman–Carter tags that consume key (information-theoretic). The channel (qlab.qkd.channel) binds both
parties' session nonces into the data every tag covers; an authenticator only tags and checks bytes.
"""

from __future__ import annotations

import hashlib
import hmac
from abc import ABC, abstractmethod

from qlab.errors import QlabError
from qlab.qkd.wegman_carter import PAD_BYTES, AuthKeyPool, PoolExhausted, wc_tag


class AuthenticationError(QlabError):
    """A classical message failed authentication or arrived out of order: the session aborts."""


class Authenticator(ABC):
    mode: str = ""
    mode_id: int = 0
    tag_bytes: int = 0
    #: True if a section of many messages may be covered by one tag over its whole transcript (worth it
    #: when every tag costs key).
    defers: bool = False
    pad_bytes: int = 0  # key consumed per tag

    def __init__(self) -> None:
        self.tags_sent = 0
        self.tags_checked = 0  # the peer's tags that passed
        self.consumed_bits = 0  # key spent on tags this party sent

    @abstractmethod
    def sign(self, sender: str, data: bytes) -> tuple[int, bytes]:
        """(pad slot, tag) of ``data`` sent by ``sender``. Raises AuthenticationError if no key is left."""

    @abstractmethod
    def check(self, sender: str, slot: int, data: bytes, tag: bytes) -> None:
        """Raise AuthenticationError unless ``tag`` authenticates ``data`` from ``sender``."""


class HmacAuth(Authenticator):
    """HMAC-SHA256 under a pre-shared key: computationally secure, consumes no key (lab mode)."""

    mode, mode_id, tag_bytes = "hmac", 1, 32

    def __init__(self, key: bytes):
        super().__init__()
        if len(key) < 16:
            raise ValueError("the pre-shared authentication key needs at least 16 bytes")
        self._key = bytes(key)

    def sign(self, sender: str, data: bytes) -> tuple[int, bytes]:
        self.tags_sent += 1
        return 0, hmac.new(self._key, data, hashlib.sha256).digest()

    def check(self, sender: str, slot: int, data: bytes, tag: bytes) -> None:
        if not hmac.compare_digest(tag, hmac.new(self._key, data, hashlib.sha256).digest()):
            raise AuthenticationError("message authentication failed (tampered or wrong key)")
        self.tags_checked += 1


class WegmanCarterAuth(Authenticator):
    """Polynomial hash over GF(2^127 - 1) plus a one-time pad from the party's key pool; each tag sent
    consumes PAD_BYTES of pool key."""

    mode, mode_id, tag_bytes, defers, pad_bytes = "wegman-carter", 2, 16, True, PAD_BYTES

    def __init__(self, pool: AuthKeyPool):
        super().__init__()
        self.pool = pool

    def sign(self, sender: str, data: bytes) -> tuple[int, bytes]:
        try:
            slot, pad = self.pool.take(sender)
        except PoolExhausted as exc:
            raise AuthenticationError(str(exc)) from None
        self.tags_sent += 1
        self.consumed_bits += 8 * PAD_BYTES
        return slot, wc_tag(self.pool.k, pad, data)

    def check(self, sender: str, slot: int, data: bytes, tag: bytes) -> None:
        try:
            pad = self.pool.pad_for(sender, slot)
        except (PoolExhausted, ValueError) as exc:
            raise AuthenticationError(f"message authentication failed: {exc}") from None
        if not hmac.compare_digest(tag, wc_tag(self.pool.k, pad, data)):
            raise AuthenticationError("message authentication failed (tampered or wrong key)")
        self.tags_checked += 1
