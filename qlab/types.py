"""Data types shared by every layer (instruments, stream, storage, sim, analysis).

A leaf module: it imports nothing from qlab, so every package can import it downward.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class TagChunk:
    """Time-ordered tags from one tagger.

    ``timestamps`` int64 ps; ``channels`` int16 input numbers; ``t_start_ps``/``t_stop_ps`` the tagger-time
    interval the chunk covers; ``gaps`` (N, 2) int64 ps intervals lost to overflow or missed events, which
    analysis excludes from coincidences and exposure; ``missed_events`` the count the device reported.
    """

    timestamps: np.ndarray
    channels: np.ndarray
    t_start_ps: int
    t_stop_ps: int
    gaps: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int64))
    missed_events: int = 0

    def __len__(self) -> int:
        return int(self.timestamps.size)

    @property
    def duration_s(self) -> float:
        return (self.t_stop_ps - self.t_start_ps) * 1e-12

    @property
    def exposure_s(self) -> float:
        """Covered time minus the gaps, in s."""
        lost = int((self.gaps[:, 1] - self.gaps[:, 0]).sum()) if len(self.gaps) else 0
        return (self.t_stop_ps - self.t_start_ps - lost) * 1e-12

    @staticmethod
    def concatenate(chunks: list[TagChunk]) -> TagChunk:
        if not chunks:
            return TagChunk(np.zeros(0, np.int64), np.zeros(0, np.int16), 0, 0)
        return TagChunk(np.concatenate([c.timestamps for c in chunks]),
                        np.concatenate([c.channels for c in chunks]),
                        chunks[0].t_start_ps, chunks[-1].t_stop_ps,
                        np.concatenate([c.gaps for c in chunks]).reshape(-1, 2),
                        sum(c.missed_events for c in chunks))


@dataclass(frozen=True)
class Identification:
    """Who a device says it is: ``identify()`` of every driver returns one.

    ``serial`` and ``firmware`` are empty where the device does not report them; ``details`` holds further
    facts a model reports (inputs, resolution, channel); ``text`` is the device's own identification line
    (a SCPI ``*IDN?`` reply) when it has one. ``str()`` gives a readable one-line form, and the object
    compares equal to that string and supports ``in`` / ``startswith`` on it, so callers that treated the
    identification as text keep working.
    """

    vendor: str
    model: str
    serial: str = ""
    firmware: str = ""
    details: str = ""
    text: str = ""

    @classmethod
    def from_idn(cls, idn: str, details: str = "") -> Identification:
        """Parse a SCPI ``*IDN?`` reply ``vendor,model,serial,firmware`` (missing fields stay empty)."""
        fields = [f.strip() for f in idn.strip().split(",", 3)]
        fields += [""] * (4 - len(fields))
        return cls(fields[0], fields[1], fields[2], fields[3], details=details, text=idn.strip())

    def __str__(self) -> str:
        if self.text:
            return f"{self.text} ({self.details})" if self.details else self.text
        line = " ".join(p for p in (self.vendor, self.model) if p)
        if self.serial:
            line += f" serial {self.serial}"
        if self.firmware:
            line += f" firmware {self.firmware}"
        return f"{line} ({self.details})" if self.details else line

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            return str(self) == other
        if isinstance(other, Identification):
            return (self.vendor, self.model, self.serial, self.firmware, self.details, self.text) == (
                other.vendor, other.model, other.serial, other.firmware, other.details, other.text)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(str(self))

    def __contains__(self, text: str) -> bool:
        return text in str(self)

    def startswith(self, prefix: str | tuple[str, ...]) -> bool:
        return str(self).startswith(prefix)
