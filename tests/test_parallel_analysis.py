"""Segmented file analysis (qlab.analysis.parallel_file) equals the serial streaming pass for any segment length,
for run files and PTU files, with delays far larger than the segments and pairs straddling every boundary."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qlab.analysis.offline import analyze_file
from qlab.analysis.parallel_file import AnalysisSpec, count_file, local_mapper
from qlab.storage.ptu import write_ptu_t2
from qlab.storage.runfile import RunFile
from qlab.stream.coincidence import NFoldCounter
from qlab.stream.histogram import cross_correlation
from qlab.types import TagChunk

ROLES = "alice.H=0,alice.V=1,alice.D=2,alice.A=3,bob.H=4,bob.V=5,bob.D=6,bob.A=7"
DELAY_PS = 60_000  # bob's detectors see the pair partner 60 ns later: far more than a few tags of a segment


def pair_stream(n_pairs: int = 3000, seed: int = 4) -> TagChunk:
    """Photon pairs (alice then bob, DELAY_PS later, 300 ps jitter) every ~20 ns, so each pair straddles many
    tags, plus uncorrelated noise on every channel; time-ordered."""
    rng = np.random.default_rng(seed)
    t_pair = np.cumsum(rng.integers(5_000, 35_000, n_pairs)).astype(np.int64) + 100_000
    a = rng.integers(0, 4, n_pairs)
    b = np.where(rng.random(n_pairs) < 0.6, a, rng.integers(0, 4, n_pairs)) + 4  # every pair of channels correlates
    tb = t_pair + DELAY_PS + rng.integers(-300, 300, n_pairs)
    noise_t = rng.integers(0, int(t_pair[-1]), n_pairs // 2)
    noise_c = rng.integers(0, 8, n_pairs // 2)
    t = np.concatenate([t_pair, tb, noise_t]).astype(np.int64)
    c = np.concatenate([a, b, noise_c]).astype(np.int16)
    order = np.argsort(t, kind="stable")
    return TagChunk(t[order], c[order], int(t.min()), int(t.max()) + 1)


@pytest.fixture(scope="module")
def run_file(tmp_path_factory) -> str:
    chunk = pair_stream()
    path = str(tmp_path_factory.mktemp("par") / "pairs.h5")
    # two appends with a gap between and one inside the second: tags inside a gap are excluded
    t, c = chunk.timestamps, chunk.channels
    half = t.size // 2
    mid = int(t[half])
    gaps = np.array([[mid + 1_000, mid + 3_000]], np.int64)
    with RunFile(path, taggers=["tagger"], procedure="test") as rf:
        rf.append_tags(TagChunk(t[:half], c[:half], int(t[0]), mid))
        rf.append_tags(TagChunk(t[half:], c[half:], mid, int(t[-1]) + 1, gaps))
    return path


def _same(a: dict, b: dict) -> None:
    for key in ("singles", "coincidences", "accidentals", "nfold", "channel_events", "delays_ps", "sifted", "qber",
                "duration_s", "exposure_s"):
        assert a.get(key) == b.get(key), key


@pytest.mark.parametrize("segment_tags", [1, 7, 333, 10**7])
def test_run_file_segments_equal_serial(run_file, segment_tags) -> None:
    kw = dict(roles=ROLES, window_ps=2000, accidentals_offset_ps=25_000, find=True, check_file=False)
    serial = analyze_file(run_file, parallel=False, **kw)
    seg = analyze_file(run_file, workers=1, segment_tags=segment_tags, **kw)
    _same(serial, seg)
    assert sum(seg["coincidences"].values()) > 2000  # the 60 ns delay was found and used
    assert 0 < sum(seg["accidentals"].values()) < sum(seg["coincidences"].values()) / 5


def test_find_delays_and_two_processes(run_file) -> None:
    kw = dict(roles=ROLES, window_ps=2000, find=True, check_file=False)
    serial = analyze_file(run_file, parallel=False, **kw)
    seg = analyze_file(run_file, workers=2, segment_tags=1500, **kw)
    _same(serial, seg)
    assert abs(float(seg["delays_ps"]["4"]) - DELAY_PS) < 200
    assert seg["sifted"]["Z"] > 1000 and seg["qber"]["Z"] < 0.4


def test_nfold_and_histogram_segments(run_file) -> None:
    from qlab.storage.reader import RunReader

    with RunReader(run_file) as r:
        whole = r.read_all()
    delays = {4: DELAY_PS, 5: DELAY_PS}
    groups = [[0, 4], [1, 5, 4], [4, 0]]
    nf = NFoldCounter(groups, 2000, delays)
    nf.process(whole, final=True)
    hist = cross_correlation(whole, 0, [4, 5], 80_000, 500, delays)
    spec = AnalysisSpec((0, 1, 4, 5), 2000, tuple(sorted(delays.items())), 0,
                        tuple(tuple(g) for g in groups), (0, (4, 5), 80_000, 500))
    for seg in (3, 2000, 10**7):
        fc = count_file(run_file, spec, local_mapper(1), seg)
        assert np.array_equal(fc.counts.nfold, nf.counts), seg
        assert np.array_equal(fc.counts.histogram[1], hist[4].counts)
        assert np.array_equal(fc.counts.histogram[2], hist[5].counts)
    assert nf.counts[0] > 300 and nf.counts[1] > 0


@pytest.mark.parametrize("segment_tags", [1, 97, 4000, 10**7])
def test_ptu_segments_equal_serial(tmp_path, segment_tags) -> None:
    chunk = pair_stream(2000, seed=9)
    # 2^25 ps wraps every 33.5 us: the file has many overflow records, segments start between them
    t = chunk.timestamps * 40
    path = tmp_path / "pairs.ptu"
    write_ptu_t2(path, t, chunk.channels)
    kw = dict(roles=ROLES, window_ps=40_000, accidentals_offset_ps=200_000, check_file=False)
    serial = analyze_file(path, parallel=False, **kw)
    seg = analyze_file(path, workers=1, segment_tags=segment_tags, **kw)
    _same(serial, seg)
    assert seg["duration_s"] > 0 and sum(seg["singles"].values()) == len(chunk)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 5000), rate_ps=st.integers(200, 60_000), seed=st.integers(0, 2**32 - 1),
       acc_off=st.sampled_from([7000, -9000, 50_000]), cut=st.integers(0, 5000))
def test_accidentals_kernel_equals_the_full_walk(n, rate_ps, seed, acc_off, cut) -> None:
    """The flagged-candidate kernel (blocks of FLAG_BLOCK tags) against walking every tag back the whole reach,
    on streams long enough to span several blocks, with a chunk boundary anywhere."""
    from qlab.stream.coincidence import CoincidenceCounter
    from qlab.stream.kernels import count_chunk

    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.exponential(rate_ps, n).astype(np.int64))
    c = rng.integers(0, 5, n).astype(np.int16)  # channel 4 is not counted
    channels, delays = [0, 1, 2, 3], {1: 3000, 2: -2500}
    cc = CoincidenceCounter(channels, 1500, delays, acc_off)
    cut = min(cut, n)
    cc.process(TagChunk(t[:cut], c[:cut], 0, 1))
    cc.process(TagChunk(t[cut:], c[cut:], 0, 1))
    s, co, ac = np.zeros(4, np.int64), np.zeros((4, 4), np.int64), np.zeros((4, 4), np.int64)
    count_chunk(np.zeros(0, np.int64), np.zeros(0, np.int16), t, c, cc.lut, cc.delay, cc.half, cc.acc_off,
                cc.far_hi, s, co, ac)
    assert np.array_equal(cc.total.singles, s)
    assert np.array_equal(cc.total.coincidences, co)
    assert np.array_equal(cc.total.accidentals, ac)


def test_a_killed_writers_pending_tags_are_counted_by_the_segments_too(tmp_path) -> None:
    chunk = pair_stream(n_pairs=30_000, seed=9)  # 75 000 tags: one whole HDF5 chunk and a pending partial one
    path = str(tmp_path / "killed.h5")
    rf = RunFile(path, taggers=["tagger"], procedure="test")
    rf.append_tags(chunk)  # flushed: the partial chunk goes to /user/qlab/pending_*
    rf.f.close()  # the writer dies here: no finish, no close, nothing moved into place
    kw = dict(roles=ROLES, window_ps=2000, accidentals_offset_ps=25_000, find=True, check_file=False)
    serial = analyze_file(path, parallel=False, **kw)
    assert sum(serial["singles"].values()) == len(chunk)
    for workers, segment_tags in ((1, 7_777), (2, 20_000)):
        _same(serial, analyze_file(path, workers=workers, segment_tags=segment_tags, **kw))
