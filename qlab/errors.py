"""Typed errors. Every message names the file, key, instrument or value at fault."""

from __future__ import annotations


class QlabError(Exception):
    """Base class of every error qlab raises on purpose."""


class ConfigError(QlabError):
    """A lab description (instruments.yaml) is invalid.

    ``problems`` lists (line, key path, message) triples so tools can point at each one.
    """

    def __init__(self, path: str, problems: list[tuple[int | None, str, str]]):
        self.path = path
        self.problems = problems
        lines = []
        for line, key, msg in problems:
            where = f"{path}:{line}" if line else path
            lines.append(f"{where}: {key}: {msg}" if key else f"{where}: {msg}")
        super().__init__("\n".join(lines))


class InstrumentError(QlabError):
    """An instrument reported an error or behaved unexpectedly."""

    def __init__(self, instrument: str, message: str):
        self.instrument = instrument
        super().__init__(f"{instrument}: {message}")


class LimitError(InstrumentError):
    """A requested setpoint is outside the limits configured for the instrument. Nothing was sent."""

    def __init__(self, instrument: str, quantity: str, value: float, low: float | None, high: float | None,
                 unit: str):
        self.quantity, self.value, self.low, self.high = quantity, value, low, high
        rng = f"[{'-inf' if low is None else low}, {'inf' if high is None else high}] {unit}"
        super().__init__(instrument, f"{quantity} = {value} {unit} is outside the configured limits {rng}; "
                                     "nothing was sent")


class InstrumentTimeout(InstrumentError):
    """The instrument did not answer within its transport timeout."""


class InstrumentDisconnected(InstrumentError, ConnectionError):
    """The link to the instrument broke (connection reset or closed, device unplugged). Also an OSError, so code
    that treats any OSError from an instrument as a communication fault sees it too."""


class ProtocolError(InstrumentError):
    """The instrument answered with something the driver cannot parse, or reported a command error."""


class InterlockError(InstrumentError):
    """A laser's interlock, key lock or protection circuit is tripped."""


class NotBuiltError(QlabError):
    """A command or feature that lands with a later issue."""


class AbortedError(QlabError):
    """A procedure was aborted by its user."""


class AnalysisError(QlabError):
    """The data do not support the requested analysis (e.g. no significant correlation peak)."""


class FileFormatError(QlabError):
    """A data file is truncated, corrupt or of an unknown format."""

    def __init__(self, path: str, message: str):
        self.path = path
        super().__init__(f"{path}: {message}")
