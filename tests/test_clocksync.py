"""Two independent taggers: the offset and drift are present in the raw streams and are recovered."""

from __future__ import annotations

import numpy as np
import pytest

from qlab.errors import AnalysisError
from qlab.stream.clocksync import ClockTracker, find_clock_offset
from tests.simlab_helpers import BOB_DRIFT_PPM, BOB_OFFSET_PS, two_taggers


def _streams(lab, seconds: float):
    for name in ("tagger", "tagger_bob"):
        lab[name].start_stream()
    lab.sim.clock.sleep(seconds)
    return lab["tagger"].read_chunk(), lab["tagger_bob"].read_chunk()


def test_offset_and_drift_are_in_the_raw_streams_and_recovered(make_lab) -> None:
    lab = make_lab(two_taggers, seed=21)
    lab["pump"].set_output(True)
    alice, bob = _streams(lab, 1.0)
    # Present in the raw data: Bob's tagger starts its clock 0.123 s "later".
    assert abs(bob.t_start_ps - alice.t_start_ps - BOB_OFFSET_PS) < 1e9
    sync = find_clock_offset(alice, bob)
    assert abs(sync.offset_ps - BOB_OFFSET_PS) <= 100, sync
    assert abs(sync.drift_ppm - BOB_DRIFT_PPM) < 0.01, sync
    assert sync.significance > 50 and sync.pairs > 10_000
    # Mapping Bob's tags into Alice's frame lines the pairs up within the jitter.
    mapped = sync.bob_to_alice(bob.timestamps)
    lo = np.searchsorted(mapped, alice.timestamps - 1500)
    hi = np.searchsorted(mapped, alice.timestamps + 1500)
    assert (hi - lo).sum() > 0.9 * sync.pairs
    # The servo keeps following the clock in later chunks.
    tracker = ClockTracker(sync)
    for _ in range(5):
        lab.sim.clock.sleep(0.2)
        tracker.update(lab["tagger"].read_chunk(), lab["tagger_bob"].read_chunk())
    assert abs(tracker.offset_ps - BOB_OFFSET_PS) <= 100
    assert len(tracker.history) == 5


def test_no_significant_peak_is_refused(make_lab) -> None:
    lab = make_lab(two_taggers, seed=22)
    lab.lasers_off()  # dark counts only: nothing correlates the two taggers
    alice, bob = _streams(lab, 1.0)
    assert len(alice) > 100 and len(bob) > 100
    with pytest.raises(AnalysisError, match="no significant clock-offset peak"):
        find_clock_offset(alice, bob)
