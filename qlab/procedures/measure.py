"""Shared measurement steps of procedures: light on, integrate, record, count by role."""

from __future__ import annotations

from dataclasses import dataclass

from qlab.errors import QlabError
from qlab.lab import Lab
from qlab.procedures.engine import RunContext
from qlab.stream.coincidence import CoincidenceResult, count
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
    chunk: TagChunk
    result: CoincidenceResult
    roles: dict[str, int]

    def coinc(self, role_a: str, role_b: str) -> int:
        return self.result.pair(self.roles[role_a], self.roles[role_b])

    def acc(self, role_a: str, role_b: str) -> int:
        return self.result.accidental_pair(self.roles[role_a], self.roles[role_b])


def integrate(ctx: RunContext, duration_s: float, keep_events: bool = False,
              delays_ps: dict[int, int] | None = None, secret: bool = False) -> Measurement:
    """Acquire ``duration_s`` of tags, append them to the run file, count singles/coincidences/accidentals.

    ``secret``: the tags are raw data of a key run; the run file then only counts them (duration, gaps and
    the number of tags withheld), since anyone holding them could rebuild the key.
    Delays are applied by the tagger itself (calibration records set its input delays), so counting uses
    ``delays_ps`` only when given (offline re-analysis).
    """
    lab = ctx.lab
    tagger = single_tagger(lab)
    chunk = lab[tagger].acquire(duration_s)
    ctx.note_acquisition()
    if ctx.runfile is not None:
        if secret:
            ctx.runfile.withhold_tags(chunk, tagger)
        else:
            ctx.runfile.append_tags(chunk, tagger)
    roles = role_channels(lab)
    a = lab.config.analysis
    result = count(chunk, sorted(roles.values()), a.window_ps, delays_ps, a.accidentals_offset_ps, keep_events)
    return Measurement(chunk, result, roles)
