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
