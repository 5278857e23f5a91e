"""Run files: bit-exact round trip, live reading, crash safety, Photon-HDF5 and PTU import."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from qlab.errors import FileFormatError
from qlab.storage.ptu import iter_ptu_t2, write_ptu_t2
from qlab.storage.reader import RunReader
from qlab.storage.runfile import RunFile
from qlab.types import TagChunk
from tests.conftest import REPO


def _random_chunks(n_chunks: int = 5, size: int = 20_000, seed: int = 0) -> list[TagChunk]:
    rng = np.random.default_rng(seed)
    t, out = 0, []
    for _ in range(n_chunks):
        ts = t + np.cumsum(rng.integers(1, 10**6, size))
        out.append(TagChunk(ts.astype(np.int64), rng.integers(1, 9, size).astype(np.int16), t, int(ts[-1]) + 1))
        t = int(ts[-1]) + 1
    return out


def test_round_trip_of_a_simulated_run_is_bit_exact(make_lab, tmp_path: Path) -> None:
    lab = make_lab(seed=3)
    lab["pump"].set_output(True)
    chunks = [lab["tagger"].acquire(0.2) for _ in range(3)]
    path = tmp_path / "run.h5"
    with RunFile(path, taggers=["tagger"], procedure="test", parameters={"x": 1},
                 config_text=lab.loaded.text) as rf:
        for ch in chunks:
            rf.append_tags(ch)
        rf.log_settings("pump", lab["pump"].snapshot())
        rf.add_result("chsh", {"S": 2.7})
        rf.finish()
    with RunReader(path) as r:
        back = r.read_all()
        whole = TagChunk.concatenate(chunks)
        assert np.array_equal(back.timestamps, whole.timestamps)
        assert np.array_equal(back.channels, whole.channels)
        assert r.complete
        assert r.metadata()["parameters"] == {"x": 1}
        assert r.metadata()["config_text"] == lab.loaded.text
        assert r.settings_log()[0]["settings"]["current_set"] == {"value": 0.12, "unit": "A"}
        assert r.results() and r.results()[0]["data"] == {"S": 2.7}
        assert r.duration_s() == pytest.approx(0.6, rel=0.05)
        small = list(r.iter_chunks(chunk_tags=1000))
        assert sum(len(c) for c in small) == len(whole) and max(len(c) for c in small) == 1000


def test_plain_h5py_reads_photon_hdf5_layout(tmp_path: Path) -> None:
    path = tmp_path / "run.h5"
    chunks = _random_chunks(2)
    with RunFile(path, taggers=["tagger"]) as rf:
        for c in chunks:
            rf.append_tags(c)
        rf.finish()
    import hdf5plugin  # noqa: F401

    with h5py.File(path, "r") as f:
        assert f.attrs["format_name"] in (b"Photon-HDF5", "Photon-HDF5")
        assert f["photon_data/timestamps"].dtype == np.int64
        assert f["photon_data/timestamps_specs/timestamps_unit"][()] == 1e-12
        assert np.array_equal(f["photon_data/timestamps"][:], np.concatenate([c.timestamps for c in chunks]))
        assert np.array_equal(f["photon_data/detectors"][:], np.concatenate([c.channels for c in chunks]))


def test_whole_chunks_are_delta_coded_and_read_by_plain_h5py_near_the_entropy_bound(tmp_path: Path) -> None:
    import blosc2
    import hdf5plugin  # noqa: F401

    from qlab.storage.runfile import CHUNK_TAGS

    rng = np.random.default_rng(7)
    rate_hz, n = 2e6, 5 * CHUNK_TAGS + 1234  # Poisson arrivals at 1 ps, 8 equiprobable channels
    ts = np.cumsum(rng.exponential(1e12 / rate_hz, n)).astype(np.int64)
    ch = rng.integers(0, 8, n).astype(np.int16)
    path = tmp_path / "run.h5"
    with RunFile(path, taggers=["tagger"]) as rf:
        for k in range(0, n, 20_000):  # live-sized appends
            rf.append_tags(TagChunk(ts[k:k + 20_000], ch[k:k + 20_000], 0, 0), flush=False)
        rf.finish()
    with h5py.File(path, "r") as f:
        t_ds, c_ds = f["photon_data/timestamps"], f["photon_data/detectors"]
        assert np.array_equal(t_ds[:], ts) and np.array_equal(c_ds[:], ch)
        frame = blosc2.schunk_from_cframe(t_ds.id.read_direct_chunk((0,))[1])
        assert blosc2.Filter.BYTEDELTA in frame.cparams.filters
        stored = t_ds.id.get_storage_size() + c_ds.id.get_storage_size()
    bound = (np.log2(np.e * 1e12 / rate_hz) + 3) / 8  # bytes/tag: exponential gaps at 1 ps + 3 bits of channel
    assert stored / n < 1.1 * bound, (stored / n, bound)


def test_phconvert_loads_the_raw_tags(tmp_path: Path) -> None:
    pytest.importorskip("phconvert")
    import hdf5plugin

    path = tmp_path / "run.h5"
    chunks = _random_chunks(5)  # whole chunks (shuffle + bytedelta, written directly) and a partial one
    with RunFile(path, taggers=["tagger"]) as rf:
        for c in chunks:
            rf.append_tags(c)
        rf.finish()
    np.save(tmp_path / "expected.npy", np.concatenate([c.timestamps for c in chunks]))
    # phconvert's own loader runs its validator (including the verbatim node descriptions). It reads through
    # PyTables' HDF5, which finds the bitshuffle filter via HDF5_PLUGIN_PATH, as any non-h5py tool would.
    script = (
        "import sys, numpy as np, phconvert as phc\n"
        "h5 = phc.hdf5.load_photon_hdf5(sys.argv[1], require_setup=False)\n"
        "root = getattr(h5, 'root', h5)\n"
        "ok = np.array_equal(root.photon_data.timestamps.read(), np.load(sys.argv[2]))\n"
        "print('OK' if ok else 'MISMATCH')\n")
    env = {**os.environ, "HDF5_PLUGIN_PATH": hdf5plugin.PLUGIN_PATH}
    out = subprocess.run([sys.executable, "-c", script, str(path), str(tmp_path / "expected.npy")],
                         capture_output=True, text=True, env=env)
    assert out.stdout.strip().endswith("OK"), out.stderr[-2000:]


def _start_writer(path: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "tests.writer_process", str(path)], cwd=REPO, env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def test_live_read_while_recording(tmp_path: Path) -> None:
    path = tmp_path / "live.h5"
    proc = _start_writer(path)
    try:
        seen = []
        for _ in range(3):
            flushed = int(proc.stdout.readline())
            with RunReader(path) as r:
                seen.append(r.n_tags())
                assert not r.complete
                assert r.settings_log()[0]["instrument"] == "pump"
            assert seen[-1] == flushed
            proc.stdin.write("more\n")
            proc.stdin.flush()
        proc.stdin.write("finish\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip().isdigit()
        assert proc.stdout.readline().strip() == "finished"
        assert seen == sorted(seen) and seen[0] < seen[-1]
        with RunReader(path) as r:
            assert r.complete
    finally:
        proc.kill()
        proc.wait()


def test_kill_9_leaves_a_readable_file_with_every_flushed_chunk(tmp_path: Path) -> None:
    path = tmp_path / "killed.h5"
    proc = _start_writer(path)
    flushed = 0
    for _ in range(4):
        flushed = int(proc.stdout.readline())
        proc.stdin.write("more\n")
        proc.stdin.flush()
    flushed = int(proc.stdout.readline())
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with RunReader(path) as r:
        assert r.n_tags() >= flushed
        t = r.read_all().timestamps
        assert t.size == r.n_tags() and np.all(np.diff(t) > 0)
        assert not r.complete  # never marked complete: the run did not finish


def test_bad_files_are_named(tmp_path: Path) -> None:
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    with pytest.raises(FileFormatError, match="junk.h5"):
        RunReader(junk)
    plain = tmp_path / "plain.h5"
    with h5py.File(plain, "w") as f:
        f["x"] = 1
    with pytest.raises(FileFormatError, match="Photon-HDF5"):
        RunReader(plain)
    from qlab.analysis.offline import open_stream

    other = tmp_path / "notes.txt"
    other.write_text("hello")
    with pytest.raises(FileFormatError, match="unknown format"):
        open_stream(other)


def test_ptu_t2_import_matches_ptufile_record_for_record(tmp_path: Path) -> None:
    import ptufile

    rng = np.random.default_rng(2)
    n = 30_000
    # Gaps far above 2^25 units force overflow records, some carrying several overflows.
    t = np.cumsum(rng.integers(1, 3 * 2**25, n)).astype(np.int64)
    ch = rng.integers(0, 8, n)
    path = tmp_path / "gen.ptu"
    write_ptu_t2(path, t, ch, resolution_s=1e-12)
    with ptufile.PtuFile(path) as f:
        dec = f.decode_records()
        photons = dec[dec["channel"] >= 0]
        assert f.number_records > n  # overflow records are present
    ours = TagChunk.concatenate(list(iter_ptu_t2(path, chunk_records=4096)))
    assert np.array_equal(ours.timestamps, photons["time"].astype(np.int64))
    assert np.array_equal(ours.channels, photons["channel"])
    assert np.array_equal(ours.timestamps, t) and np.array_equal(ours.channels, ch)


def test_ptu_wrong_record_type_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "t3.ptu"
    write_ptu_t2(path, np.arange(10), np.zeros(10, int), record_type=0x00010303)  # a T3 record type
    with pytest.raises(FileFormatError, match="t3.ptu"):
        list(iter_ptu_t2(path))


def test_cli_info_json(tmp_path: Path) -> None:
    path = tmp_path / "run.h5"
    with RunFile(path, taggers=["tagger"], procedure="demo") as rf:
        rf.append_tags(_random_chunks(1)[0])
        rf.finish()
    out = subprocess.run([sys.executable, "-m", "qlab.cli", "info", str(path), "--json"], capture_output=True,
                         text=True, cwd=REPO, check=True)
    info = json.loads(out.stdout)
    assert info["complete"] and info["procedure"] == "demo" and info["tags"]["photon_data"] == 20_000


def test_read_range_decodes_raw_chunks_exactly_and_falls_back_for_other_filters(tmp_path: Path,
                                                                                monkeypatch) -> None:
    import hdf5plugin

    from qlab.storage.chunk_codec import read_range, write_whole_chunks

    rng = np.random.default_rng(3)
    values = np.cumsum(rng.integers(1, 10**6, 3 * 1000 + 321)).astype(np.int64)
    with h5py.File(tmp_path / "r.h5", "w") as f:
        direct = f.create_dataset("direct", shape=values.shape, dtype=np.int64, chunks=(1000,),
                                  **hdf5plugin.Blosc2(cname="zstd", clevel=1, filters=hdf5plugin.Blosc2.SHUFFLE))
        done = write_whole_chunks(direct, 0, values, delta=True)
        direct[done:] = values[done:]  # the partial last chunk through the filter
        f.create_dataset("gzip", data=values, chunks=(1000,), compression="gzip")
        with pytest.raises(ValueError, match="multiple of the chunk length"):
            write_whole_chunks(direct, 10, values, delta=True)
    sliced: list[str] = []
    getitem = h5py.Dataset.__getitem__

    def spy(ds, key):
        sliced.append(ds.name)
        return getitem(ds, key)

    monkeypatch.setattr(h5py.Dataset, "__getitem__", spy)
    with h5py.File(tmp_path / "r.h5", "r") as f:
        buffer = np.empty(len(values) + 10, np.int64)
        assert np.shares_memory(read_range(f["direct"], 5, 2500, buffer), buffer)
        for name in ("direct", "gzip"):
            for a, b in [(0, len(values)), (999, 1001), (1500, 3200), (3100, 10**9), (-5, 3), (7, 7)]:
                lo, hi = max(a, 0), min(b, len(values))
                assert np.array_equal(read_range(f[name], a, b), values[lo:max(lo, hi)]), (name, a, b)
    # The Blosc2 dataset (whole chunks from qlab, the last one from the filter) went through HDF5's read path
    # only for the empty range (7, 7); the gzip one always did.
    assert sliced.count("/direct") == 1 and sliced.count("/gzip") == 6


FAULTS_SCRIPT = """
import resource, sys
import h5py, hdf5plugin, numpy as np
from qlab.analysis.allocator import freed_memory_reused
from qlab.storage.chunk_codec import read_range, write_whole_chunks

def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

values = np.cumsum(np.random.default_rng(1).integers(1, 10**6, 40 * 65536)).astype(np.int64)
with h5py.File(sys.argv[1], "w") as f:
    ds = f.create_dataset("t", shape=values.shape, dtype=np.int64, chunks=(65536,),
                          **hdf5plugin.Blosc2(cname="zstd", clevel=1, filters=1))
    write_whole_chunks(ds, 0, values, delta=True)
with h5py.File(sys.argv[1], "r") as f:
    ds = f["t"]
    buf = np.empty(values.size, np.int64)
    read_range(ds, 0, values.size, buf)
    f0 = faults()
    assert np.array_equal(read_range(ds, 0, values.size, buf), values)
    plain = faults() - f0
    with freed_memory_reused():
        read_range(ds, 0, values.size, buf)
        f0 = faults()
        assert np.array_equal(read_range(ds, 0, values.size, buf), values)
        reused = faults() - f0
print(plain, reused)
"""


@pytest.mark.skipif(__import__("platform").libc_ver()[0] != "glibc", reason="glibc's malloc tuning")
def test_segment_reads_on_an_eagerly_trimming_allocator_keep_their_pages(tmp_path: Path) -> None:
    # Dask workers run with MALLOC_TRIM_THRESHOLD_=65536: without freed_memory_reused every chunk decode
    # faulted a fresh 512 KiB buffer in (~129 page faults per chunk).
    env = {**os.environ, "MALLOC_TRIM_THRESHOLD_": "65536", "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", FAULTS_SCRIPT, str(tmp_path / "f.h5")], capture_output=True,
                         text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    plain, reused = map(int, out.stdout.split())
    assert plain > 40 * 64  # the eager allocator: pages of every chunk's decode buffer faulted in again
    assert reused < plain / 4, (plain, reused)
