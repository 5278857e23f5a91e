"""Shared measurement steps of procedures: light on, integrate, record, count by role."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from qlab.errors import QlabError
from qlab.lab import Lab
from qlab.procedures.engine import RunContext
from qlab.stream.coincidence import CoincidenceCounter, CoincidenceResult
from qlab.types import TagChunk


def single_tagger(lab: Lab) -> str:
    taggers = lab.names("tagger")
    if len(taggers) != 1:
        raise QlabError(f"this procedure needs the single-tagger layout; the lab has taggers {taggers}. "
                        "Two-tagger runs need clock synchronisation first (qlab.stream.clocksync).")
    return taggers[0]


def role_channels(lab: Lab) -> dict[str, int]:
    """role -> input channel of the lab's (single) tagger."""
    tagger = single_tagger(lab)
    return {role: ch for role, (tg, ch) in lab.roles().items() if tg == tagger}


def light_on(lab: Lab) -> None:
    for name in lab.names("laser"):
        if not lab[name].output():
            lab[name].set_output(True)


def light_off(lab: Lab) -> None:
    lab.lasers_off()


@dataclass
class Measurement:
    """One integration's counts; ``chunk`` holds its tags only when asked for (``keep_chunk``, ``secret``)."""

    chunk: TagChunk | None
    result: CoincidenceResult
    roles: dict[str, int]

    def coinc(self, role_a: str, role_b: str) -> int:
        return self.result.pair(self.roles[role_a], self.roles[role_b])

    def acc(self, role_a: str, role_b: str) -> int:
        return self.result.accidental_pair(self.roles[role_a], self.roles[role_b])


def integrate(ctx: RunContext, duration_s: float, keep_events: bool = False,
              delays_ps: dict[int, int] | None = None, secret: bool = False, keep_chunk: bool = False
              ) -> Measurement:
    """Acquire ``duration_s`` s of tags, streamed: each chunk the tagger delivers (every poll interval,
    ~50 ms) is counted (singles, coincidences, accidentals; exact across chunk boundaries) and appended to
    the run file at once (flushed at least every 0.5 s), then dropped, so memory stays flat whatever the
    duration and a killed process loses at most the last second of tags. The abort flag is checked between
    reads: an abort or a watchdog fault stops the integration within one read (AbortedError /
    InstrumentFault).

    ``keep_chunk``: also return all tags in ``Measurement.chunk`` (memory grows with the duration; the
    delays scan needs them). ``secret``: the tags are raw data of a key run; the run file then only counts
    them (duration, gaps and the number of tags withheld), since anyone holding them could rebuild the key,
    and the chunk is kept for distillation: a key block is bounded by design (``integration_s`` of one
    block, at most 3600 s).
    Delays are applied by the tagger itself (calibration records set its input delays), so counting uses
    ``delays_ps`` only when given (offline re-analysis).
    """
    lab = ctx.lab
    tagger = single_tagger(lab)
    handle = lab[tagger]
    inst = handle.instrument
    poll_s = float(getattr(inst, "poll_interval_s", 0.05))
    roles = role_channels(lab)
    a = lab.config.analysis
    counter = CoincidenceCounter(sorted(roles.values()), a.window_ps, delays_ps, a.accidentals_offset_ps,
                                 keep_events)
    kept: list[TagChunk] = []
    keep = keep_chunk or secret
    runfile = ctx.runfile

    def consume(chunk: TagChunk) -> None:
        counter.process(chunk)
        if runfile is not None:
            if secret:
                runfile.withhold_tags(chunk, tagger, flush=False)
            else:
                runfile.append_tags(chunk, tagger, flush=False)
        if keep:
            kept.append(chunk)

    ctx.check_abort()
    handle.call("read_chunk")  # discard what accumulated before this request: counts reflect current settings
    ctx.note_acquisition()
    clock = inst.clock
    t_read = clock.now()
    t_first: int | None = None
    covered_ps = 0
    want_ps = duration_s * 1e12
    previous: TagChunk | None = None
    try:
        while covered_ps < want_ps:
            ctx.check_abort()
            # Reads at a steady cadence: the time spent counting and writing counts towards the next poll (on
            # a fast simulated clock that time is zero, so the reads are exactly as before).
            clock.sleep(min(poll_s - (clock.now() - t_read), max((want_ps - covered_ps) * 1e-12, 1e-6)))
            t_read = clock.now()
            pending = handle.submit("read_chunk")
            if previous is not None:  # count and write the last chunk while the tagger delivers the next
                consume(previous)
                previous = None
            chunk = handle.wait(pending)
            if chunk.t_stop_ps <= chunk.t_start_ps:
                continue
            if t_first is None:
                t_first = chunk.t_start_ps
            covered_ps = chunk.t_stop_ps - t_first
            previous = chunk
    except BaseException:
        # On an abort or fault, what the tagger delivered is still recorded (best effort: the stop matters more).
        if previous is not None:
            with contextlib.suppress(Exception):
                consume(previous)
        raise
    if previous is not None:
        consume(previous)
    if runfile is not None:
        runfile.f.flush()
    return Measurement(TagChunk.concatenate(kept) if keep else None, counter.total, roles)
