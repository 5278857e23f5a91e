"""Abstract time tagger."""

from __future__ import annotations

from abc import abstractmethod

from qlab.instruments.inputs import InputInstrument
from qlab.instruments.settings import bind
from qlab.types import TagChunk


class TimeTagger(InputInstrument):
    kind = "tagger"
    poll_interval_s = 0.05
    SETTINGS = bind("tagger", delay=("delay", "_set_delay"), trigger_level=("trigger_level", "_set_trigger_level"))

    def set_trigger_level(self, channel: int, level_v: float) -> None:
        """Discriminator level of input ``channel`` in V. Raises LimitError outside ``limits.trigger_level_v``,
        InstrumentError for an unknown channel, a closed instrument or a device refusal, ProtocolError on a malformed
        reply, InstrumentTimeout if the device does not answer."""
        self.write_setting("trigger_level", level_v, channel)

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
