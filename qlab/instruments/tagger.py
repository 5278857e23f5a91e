"""Abstract time tagger and the chunk of tags it hands out."""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qlab.instruments.base import value
from qlab.instruments.inputs import InputInstrument


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


class TimeTagger(InputInstrument):
    kind = "tagger"
    poll_interval_s = 0.05

    def set_trigger_level(self, channel: int, level_v: float) -> None:
        self._require_open()
        self._check_channel(channel)
        self._set_trigger_level(channel, self.limits.check("trigger_level_v", level_v))

    def acquire(self, duration_s: float) -> TagChunk:
        """Stream for ``duration_s`` seconds of tagger time and return everything in one chunk.

        Data already buffered before the call are discarded, so the chunk reflects current settings.
        """
        self._require_open()
        self.read_chunk()  # flush what accumulated before this request
        chunks: list[TagChunk] = []
        covered = 0
        while covered < duration_s * 1e12:
            self.clock.sleep(min(self.poll_interval_s, max(duration_s - covered * 1e-12, 1e-6)))
            chunk = self.read_chunk()
            if chunk.t_stop_ps > chunk.t_start_ps:
                chunks.append(chunk)
                covered = chunks[-1].t_stop_ps - chunks[0].t_start_ps
        return TagChunk.concatenate(chunks)

    def apply_settings(self, settings: dict[str, Any]) -> None:
        for key, v in settings.items():
            if key == "delays_ps":
                self._apply_delays(v)
            elif key == "trigger_levels_v":
                for ch, lv in dict(v).items():
                    self.set_trigger_level(int(ch), float(lv))
            else:
                super().apply_settings({key: v})

    def snapshot(self) -> dict[str, dict[str, Any]]:
        snap: dict[str, dict[str, Any]] = {}
        for ch in self.channels():
            snap[f"delay_ch{ch}"] = value(self.delay(ch), "ps")
            snap[f"trigger_level_ch{ch}"] = value(self.trigger_level(ch), "V")
        return snap

    @abstractmethod
    def _set_trigger_level(self, channel: int, level_v: float) -> None: ...

    @abstractmethod
    def trigger_level(self, channel: int) -> float: ...

    @abstractmethod
    def start_stream(self, channels: list[int] | None = None) -> None: ...

    @abstractmethod
    def stop_stream(self) -> None: ...

    @abstractmethod
    def read_chunk(self) -> TagChunk:
        """Tags accumulated since the previous call (empty chunk if none)."""
