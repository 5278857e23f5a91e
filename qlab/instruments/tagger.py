"""Abstract time tagger."""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

from qlab.instruments.base import value
from qlab.instruments.inputs import InputInstrument
from qlab.types import TagChunk


class TimeTagger(InputInstrument):
    kind = "tagger"
    poll_interval_s = 0.05

    def set_trigger_level(self, channel: int, level_v: float) -> None:
        """Discriminator level of input ``channel`` in V. Raises LimitError outside ``limits.trigger_level_v``,
        InstrumentError for an unknown channel, a closed instrument or a device refusal, ProtocolError on a malformed
        reply, InstrumentTimeout if the device does not answer."""
        self._require_open()
        self._check_channel(channel)
        self._set_trigger_level(channel, self.limits.check("trigger_level_v", level_v))

    def acquire(self, duration_s: float) -> TagChunk:
        """Stream for ``duration_s`` seconds of tagger time and return everything in one chunk.

        Data already buffered before the call are discarded, so the chunk reflects current settings.
        Timestamps int64 ps. Raises InstrumentError if not open or the device reports an error, ProtocolError
        on a corrupt stream, InstrumentTimeout if the device does not answer.
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
        """Apply instruments.yaml ``settings``: delays_ps ({input: ps}) and trigger_levels_v ({input: V}). Raises
        InstrumentError for any other key, and what the setters raise."""
        for key, v in settings.items():
            if key == "delays_ps":
                self._apply_delays(v)
            elif key == "trigger_levels_v":
                for ch, lv in dict(v).items():
                    self.set_trigger_level(int(ch), float(lv))
            else:
                super().apply_settings({key: v})

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Delay (ps) and trigger level (V) of every input. Raises ProtocolError on a malformed reply,
        InstrumentTimeout if the device does not answer."""
        snap: dict[str, dict[str, Any]] = {}
        for ch in self.channels():
            snap[f"delay_ch{ch}"] = value(self.delay(ch), "ps")
            snap[f"trigger_level_ch{ch}"] = value(self.trigger_level(ch), "V")
        return snap

    @abstractmethod
    def _set_trigger_level(self, channel: int, level_v: float) -> None: ...

    @abstractmethod
    def trigger_level(self, channel: int) -> float:
        """Discriminator level of input ``channel`` in V. Raises ProtocolError on a malformed reply, InstrumentTimeout
        if the device does not answer."""

    @abstractmethod
    def start_stream(self, channels: list[int] | None = None) -> None:
        """Start streaming the timestamps of ``channels`` (None: all inputs). Raises InstrumentError if not open or
        the device refuses."""

    @abstractmethod
    def stop_stream(self) -> None:
        """Stop streaming; nothing happens when not streaming. Raises InstrumentError if the device refuses."""

    @abstractmethod
    def read_chunk(self) -> TagChunk:
        """Tags accumulated since the previous call (empty chunk if none): int64 ps timestamps, 1-based inputs. Raises
        InstrumentError if not open or the device reports an error, ProtocolError on a corrupt stream,
        InstrumentTimeout if the device does not answer."""
