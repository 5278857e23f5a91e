"""Procedures put back what they move: polarization-controller angles and laser output state.

A procedure whose purpose is to set something (a calibration) leaves that setting and restores the rest.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from qlab.errors import QlabError
from qlab.lab import Lab

log = logging.getLogger(__name__)


@contextmanager
def restoring(lab: Lab, stages: tuple[str, ...] = ("analyzer",), lasers: bool = True) -> Iterator[None]:
    """When the block ends, also on an error or abort, move every polarization controller of the optics
    ``stages`` (both parties) back to its angles (degrees) at entry and, with ``lasers``, switch every laser
    back to its output state at entry.

    A laser that was on is switched back on only after a clean finish: on an error or abort the run engine
    switches every laser off, and that safety rule wins. A failed restore is logged; after a clean finish
    it raises QlabError naming the instruments (on an error path the original error propagates)."""
    positions = {name: lab[name].positions() for stage in stages for party in ("alice", "bob")
                 for name in lab.controllers(party, stage)}
    outputs = {name: bool(lab[name].output()) for name in lab.names("laser")} if lasers else {}
    finished = False
    try:
        yield
        finished = True
    finally:
        failed = []
        for name, axes in positions.items():
            try:
                for axis, deg in axes.items():
                    lab[name].move_absolute(float(deg), axis)
            except Exception as exc:  # noqa: BLE001 - restore the others too
                failed.append(name)
                log.error("%s: could not restore its angles %s: %s", name, axes, exc)
        for name, was_on in outputs.items():
            if lab[name].faulted is not None:
                continue  # a faulted laser: the run engine switches it off and reports its state
            try:
                if not was_on and lab[name].output():
                    lab[name].set_output(False)
                elif was_on and finished and not lab[name].output():
                    lab[name].set_output(True)
            except Exception as exc:  # noqa: BLE001 - restore the others too
                failed.append(name)
                log.error("%s: could not restore its output state: %s", name, exc)
        if failed and finished:
            raise QlabError(f"could not restore the state of {sorted(set(failed))} after the procedure")
