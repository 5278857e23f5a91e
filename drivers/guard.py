"""Shared defences of drivers against faulty devices: malformed replies become ProtocolError, a tag stream that
stops advancing becomes InstrumentTimeout. Every error names the instrument."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from qlab.errors import InstrumentTimeout, ProtocolError, QlabError

# What parsing a malformed reply raises in plain Python / NumPy / struct / json (JSONDecodeError and
# UnicodeDecodeError are ValueErrors).
PARSE_ERRORS = (ValueError, IndexError, KeyError, TypeError, AttributeError, OverflowError, struct.error,
                ZeroDivisionError)


@contextmanager
def parse_errors(instrument: str, what: str) -> Iterator[None]:
    """Turn a parsing failure inside the block into ProtocolError(instrument, "what: ..."); qlab's own errors
    pass through unchanged."""
    try:
        yield
    except QlabError:
        raise
    except PARSE_ERRORS as exc:
        raise ProtocolError(instrument, f"{what}: malformed reply ({type(exc).__name__}: {exc})") from None


class RegisterMap(dict):
    """{register address: value} of a device reply; a register the reply lacks is a ProtocolError, not a KeyError."""

    def __init__(self, instrument: str, values: dict[int, int]):
        super().__init__(values)
        self.instrument = instrument

    def __missing__(self, key: Any) -> int:
        raise ProtocolError(self.instrument, f"the reply lacks register {key} (it has {sorted(self)})")


class StreamWatch:
    """Raises InstrumentTimeout when a tag stream's device time has not advanced for ``stall_s`` seconds of
    ``clock`` (a device that stopped delivering: a bounded wait, never a hang)."""

    def __init__(self, instrument: str, clock: Any, stall_s: float):
        self.instrument, self.clock, self.stall_s = instrument, clock, stall_s
        self._last = clock.now()

    def reset(self) -> None:
        self._last = self.clock.now()

    def update(self, advanced: bool) -> None:
        now = self.clock.now()
        if advanced:
            self._last = now
        elif now - self._last > self.stall_s:
            raise InstrumentTimeout(self.instrument, f"the timestamp stream has not advanced for "
                                                     f"{now - self._last:.3g} s (limit {self.stall_s:g} s): the "
                                                     "device stopped delivering data")
