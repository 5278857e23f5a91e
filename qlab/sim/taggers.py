"""State of one simulated time tagger (or coincidence counter): input delays and trigger levels, its own
clock (offset, drift), and what its stream holds between reads. Times in ps."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from qlab.config.schema import TaggerSim


@dataclass
class TaggerState:
    name: str
    p: TaggerSim
    input_delay_ps: dict[int, int] = field(default_factory=dict)
    trigger_v: dict[int, float] = field(default_factory=dict)
    streaming: bool = False
    lossless: bool = False  # a device that counts on board (coincidence counter): never loses data to a slow reader
    t_read_ps: int = 0  # tagger time up to which tags were handed out
    pend_t: list[np.ndarray] = field(default_factory=list)
    pend_ch: list[np.ndarray] = field(default_factory=list)
    gaps: list[tuple[int, int]] = field(default_factory=list)
    overflows: int = 0

    @property
    def scale(self) -> float:
        return 1.0 + self.p.drift_ppm * 1e-6

    def tagger_time(self, true_ps: float) -> int:
        """This tagger's clock reading (ps) at true time ``true_ps``."""
        return int(round(true_ps * self.scale)) + self.p.clock_offset_ps
