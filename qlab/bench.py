"""`qlab bench`: throughput of the hot paths, each with a reference measured in the same run.

Printed to stdout as a table with units (progress on stderr); ``--json`` returns the figures instead. Tests
never assert these numbers.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from qlab.console import fmt, print_table


def best_seconds(fn: Callable[[], Any], repeat: int = 3) -> float:
    """The shortest wall time of ``repeat`` calls of ``fn`` (s)."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def simulated_stream(seconds: float, seed: int = 7):
    """Tags of the default BBM92 lab (8 detectors, realistic rates, delays calibrated), merged stream."""
    from qlab.config import load_config
    from qlab.lab import Lab

    with tempfile.TemporaryDirectory() as d, Lab(load_config(None), seed=seed, apply_calibrations=False,
                                                 data_dir=d) as lab:
        lab["pump"].set_output(True)
        chunk = lab["tagger"].acquire(seconds)
    return chunk


def bench_coincidence(quick: bool) -> dict[str, float]:
    from qlab.stream.coincidence import CoincidenceCounter
    from qlab.types import TagChunk

    base = simulated_stream(2.0 if quick else 4.0)
    reps = 4 if quick else 12
    # Repeat the recorded stream end to end (shifted in time) to get a long input at realistic rates.
    span = base.t_stop_ps - base.t_start_ps
    t = np.concatenate([base.timestamps + k * span for k in range(reps)])
    c = np.tile(base.channels, reps)
    channels = list(range(1, 9))
    delays = {ch: 1000 * ch for ch in channels}
    chunk_tags = 1 << 20

    def run(accidentals_offset_ps: int = 0) -> None:
        cc = CoincidenceCounter(channels, 2000, delays, accidentals_offset_ps)
        for k in range(0, t.size, chunk_tags):
            cc.process(TagChunk(t[k:k + chunk_tags], c[k:k + chunk_tags], 0, 1))

    run()  # compile / warm caches
    dt = best_seconds(run)
    dt_acc = best_seconds(lambda: run(50_000))
    dst = np.empty_like(t)
    dt_copy = best_seconds(lambda: np.copyto(dst, t))

    def numpy_baseline() -> None:
        # Reference NumPy implementation: for each tag, count partners within ±1 ns via searchsorted.
        lo = np.searchsorted(t, t - 1000, "left")
        hi = np.searchsorted(t, t + 1000, "right")
        np.bincount(c, minlength=9)
        (hi - lo - 1).sum()

    dt_np = best_seconds(numpy_baseline)
    n = t.size
    return {"coincidence_mtags_s": n / dt / 1e6, "copy_mtags_s": n / dt_copy / 1e6,
            "coincidence_with_accidentals_mtags_s": n / dt_acc / 1e6, "coincidence_accidentals_vs_plain": dt / dt_acc,
            "coincidence_vs_copy": dt_copy / dt, "numpy_baseline_mtags_s": n / dt_np / 1e6,
            "coincidence_input_tags": n, "coincidence_rate_mcps": n / (reps * span * 1e-12) / 1e6}


def bench_simulator(quick: bool) -> dict[str, float]:
    """Tag generation of the simulated lab (physics through sorted per-tagger streams), 8-detector BBM92."""
    from qlab.config import load_config
    from qlab.instruments.factory import create_simulation

    seconds = 1.0 if quick else 3.0
    sim = create_simulation(load_config(None), realtime=False, seed=3).lab
    sim.set_laser("pump", on=True, current_a=0.2)
    sim.start_stream("tagger")
    sim.clock.sleep(0.05)
    sim.read_tags("tagger")  # compile
    best, n = float("inf"), 0
    for _ in range(5):  # best of five: shared machines steal CPU in bursts
        sim.clock.sleep(seconds)
        t0 = time.perf_counter()
        chunk = sim.read_tags("tagger")
        best = min(best, time.perf_counter() - t0)
        n = len(chunk)
    dst = np.empty_like(chunk.timestamps)
    dt_copy = best_seconds(lambda: np.copyto(dst, chunk.timestamps))
    return {"sim_generation_mtags_s": n / best / 1e6, "sim_generation_vs_copy": dt_copy / best,
            "sim_tag_rate_mcps": n / seconds / 1e6}


def _stream_at(rate_mcps: float, tags: int, seed: int):
    """About ``tags`` tags of the default lab with the source scaled to ``rate_mcps`` M tags/s in total."""
    from qlab.config import load_config
    from qlab.lab import Lab

    loaded = load_config(None)
    base_rate = 0.41e6  # the default lab's total tag rate
    loaded.config.simulation.source.pairs_per_mw *= rate_mcps * 1e6 / base_rate
    with tempfile.TemporaryDirectory() as d, Lab(loaded, seed=seed, apply_calibrations=False, data_dir=d) as lab:
        lab["pump"].set_output(True)
        return lab["tagger"].acquire(tags / (rate_mcps * 1e6))


def _entropy_bound(chunk) -> float:
    """Bytes per tag a lossless code needs for Poisson arrival times at 1 ps plus the channel entropy."""
    n = len(chunk)
    rate = n / chunk.duration_s
    p = np.bincount(chunk.channels) / n
    p = p[p > 0]
    return (np.log2(np.e * 1e12 / rate) + float(-(p * np.log2(p)).sum())) / 8


def _write_run_file(path: str, chunk, step: int, flush_every: int = 1) -> None:
    from qlab.storage.runfile import RunFile
    from qlab.types import TagChunk

    with RunFile(path, taggers=["tagger"], procedure="bench") as rf:
        for i, k in enumerate(range(0, len(chunk), step)):
            rf.append_tags(TagChunk(chunk.timestamps[k:k + step], chunk.channels[k:k + step], 0, 1),
                           flush=(i % flush_every == flush_every - 1))
        rf.finish()


def bench_storage(quick: bool) -> dict[str, float]:
    """Run-file size against the entropy bound at several tag rates (0.4 = the default lab), write speed
    against a same-run memcpy, and live recording (20 000-tag appends, a flush every 0.5 s of data)."""
    rates = (0.4, 5.0) if quick else (0.4, 2.0, 5.0, 20.0)
    tags = 2_000_000 if quick else 8_000_000
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "bench.h5")
        for r in rates:
            chunk = _stream_at(r, tags, seed=11)
            n = len(chunk)
            dt = best_seconds(lambda chunk=chunk: _write_run_file(path, chunk, 1 << 20), 2)
            size = os.path.getsize(path)
            bound = _entropy_bound(chunk)
            key = f"{r:g}".replace(".", "p")
            out[f"storage_{key}mcps_bytes_per_tag"] = size / n
            out[f"storage_{key}mcps_entropy_bound"] = bound
            out[f"storage_{key}mcps_vs_entropy_bound"] = size / n / bound
            out[f"storage_{key}mcps_write_mtags_s"] = n / dt / 1e6
            if r == rates[0]:
                dst = np.empty_like(chunk.timestamps)
                dt_copy = best_seconds(lambda chunk=chunk, dst=dst: np.copyto(dst, chunk.timestamps))
                step = 20_000  # a live read every 50 ms at 0.4 Mcps; flushed every 10 reads
                _write_run_file(path, chunk, step, flush_every=max(1, int(0.5 * r * 1e6 / step)))
                out.update({"storage_bytes_per_tag": size / n, "storage_write_mtags_s": n / dt / 1e6,
                            "storage_write_vs_copy": dt_copy / dt, "storage_tag_rate_mcps": n / chunk.duration_s / 1e6,
                            "storage_entropy_bound_bytes_per_tag": bound, "storage_vs_entropy_bound": size / n / bound,
                            "storage_live_bytes_per_tag": os.path.getsize(path) / n,
                            "storage_live_vs_entropy_bound": os.path.getsize(path) / n / bound})
    return out


def bench_qkd(quick: bool) -> dict[str, float]:
    """Cascade (two parties, in-process channel) at Q = 1..5 %, and Toeplitz privacy amplification."""
    import threading

    from qlab.qkd.cascade import cascade_alice, cascade_bob, efficiency
    from qlab.qkd.channel import AuthenticatedChannel, QueuePipe
    from qlab.qkd.toeplitz import toeplitz_hash

    rng = np.random.default_rng(5)
    out: dict[str, float] = {}

    def run(n: int, q: float, trial: int) -> tuple[float, float]:
        """(efficiency, seconds) of one two-party Cascade on an n-bit block at error rate q."""
        a = rng.integers(0, 2, n, dtype=np.uint8)
        e = (rng.random(n) < q).astype(np.uint8)
        pa, pb = QueuePipe.pair()
        ca, cb = AuthenticatedChannel(pa, b"k" * 32, "alice"), AuthenticatedChannel(pb, b"k" * 32, "bob")
        th = threading.Thread(target=cascade_alice, args=(a, ca))
        t0 = time.perf_counter()
        th.start()
        _, st = cascade_bob(a ^ e, cb, q, seed=trial)
        th.join()
        return efficiency(st.leaked_bits, n, float(e.mean())), time.perf_counter() - t0

    run(10_000, 0.02, 0)  # load the compiled kernels
    n = 10_000 if quick else 100_000
    total_bits, total_time = 0, 0.0
    for q in (0.01, 0.02, 0.03, 0.05):
        fs = []
        for trial in range(3 if quick else 5):
            f, dt = run(n, q, trial)
            fs.append(f)
            total_bits, total_time = total_bits + n, total_time + dt
        out[f"cascade_f_q{int(q * 100)}pct_n{n}"] = float(np.mean(fs))
    out["cascade_kbit_s"] = total_bits / total_time / 1e3
    big = 10**5 if quick else 10**6
    runs = [run(big, 0.02, trial) for trial in range(3)]
    out[f"cascade_f_q2pct_n{big}"] = float(np.mean([f for f, _ in runs]))
    out[f"cascade_mbit_s_n{big}"] = big / min(dt for _, dt in runs) / 1e6
    n_pa = 10**6 if quick else 10**7
    x = rng.integers(0, 2, n_pa, dtype=np.uint8)
    seed = rng.integers(0, 2, n_pa + n_pa // 2 - 1, dtype=np.uint8)
    dt = best_seconds(lambda: toeplitz_hash(x, seed, n_pa // 2), 2)
    dst = np.empty_like(x)
    dt_copy = best_seconds(lambda: np.copyto(dst, x))
    out["pa_input_bits"] = n_pa
    out["pa_mbit_s"] = n_pa / dt / 1e6
    out["pa_vs_copy"] = dt_copy / dt
    return out


def write_repeated_run_file(path: str, n_tags: int, seed: int = 7) -> int:
    """A run file of at least ``n_tags`` tags at the lab's rates: a simulated 4 s stream repeated end to end
    (shifted in time). Returns the number of tags written."""
    from qlab.storage.runfile import RunFile
    from qlab.types import TagChunk

    base = simulated_stream(4.0, seed=seed)
    span = base.t_stop_ps - base.t_start_ps
    n = 0
    with RunFile(path, taggers=["tagger"], procedure="bench") as rf:
        k = 0
        while n < n_tags:
            t = base.timestamps + k * span
            edges = [*range(0, t.size, 1 << 22), t.size]
            for a, b in zip(edges[:-1], edges[1:], strict=False):  # each piece spans up to the next one's start
                t0 = base.t_start_ps + k * span if a == 0 else int(t[a])
                t1 = base.t_stop_ps + k * span if b == t.size else int(t[b])
                rf.append_tags(TagChunk(t[a:b], base.channels[a:b], t0, t1), flush=False)
            n += t.size
            k += 1
    return n


def _analysis_timings(path: str) -> dict[int, float]:
    """Best-of-3 wall times of the file-backed analysis of ``path`` on 1 and 2 forked worker processes."""
    from qlab.analysis.parallel_file import AnalysisSpec, count_file, local_mapper

    channels = tuple(range(1, 9))
    spec = AnalysisSpec(channels, 2000, tuple((c, 1000 * c) for c in channels), 50_000)
    count_file(path, spec, local_mapper(1))  # compile, warm the page cache
    return {w: best_seconds(lambda w=w: count_file(path, spec, local_mapper(w, "fork")), 3) for w in (1, 2)}


def bench_analysis(quick: bool) -> dict[str, float]:
    """File-backed segmented analysis (singles, coincidences, accidentals of 8 channels) on 1 and 2 local
    worker processes, each run including the worker start, as `qlab analyze --workers N` does it. Measured in
    a freshly spawned interpreter: the CLI forks its workers from a small, single-threaded process, while this
    one holds the earlier benchmarks' memory (a larger fork) and may hold the simulator's idle thread."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "analysis.h5")
        n = write_repeated_run_file(path, 10_000_000 if quick else 100_000_000)
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            dt = pool.submit(_analysis_timings, path).result()
    return {"analysis_workers_1_mtags_s": n / dt[1] / 1e6, "analysis_workers_2_mtags_s": n / dt[2] / 1e6,
            "analysis_scaling_2_workers": dt[1] / dt[2], "analysis_input_tags": n}


def _pa_child(n: int, conn: Any) -> None:
    """Send (seconds to hash an n-bit block to n/2 bits, this process's peak resident size in bytes)."""
    import resource

    from qlab.qkd.toeplitz import toeplitz_hash

    rng = np.random.default_rng(1)
    x = rng.integers(0, 2, n, dtype=np.uint8)
    seed = rng.integers(0, 2, n + n // 2 - 1, dtype=np.uint8)
    t0 = time.perf_counter()
    toeplitz_hash(x, seed, n // 2)
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    conn.send((time.perf_counter() - t0, maxrss if sys.platform == "darwin" else maxrss * 1024))  # Linux: KiB


def bench_pa(quick: bool) -> dict[str, float]:
    """Toeplitz privacy amplification of one block (10^8 bits; 10^7 with --quick) to half its length, its
    peak memory (the maximum resident size of a freshly spawned interpreter doing only this, so the figure
    is the hash's and its inputs', about 0.1 GB of it the interpreter), and one real FFT of the same length
    for reference. A hash that has not finished in 30 min is stopped and reported as NaN."""
    import multiprocessing

    from scipy import fft

    n = 10**7 if quick else 10**8
    tag = f"1e{len(str(n)) - 1}"
    ctx = multiprocessing.get_context("spawn")
    here, there = ctx.Pipe()
    child = ctx.Process(target=_pa_child, args=(n, there), daemon=True)
    child.start()
    dt, peak_bytes = here.recv() if here.poll(1800) else (float("nan"), float("nan"))
    if child.is_alive():
        child.join(60)
    if child.is_alive():
        child.kill()
        child.join(10)
    x = np.random.default_rng(2).random(n)
    dt_fft = best_seconds(lambda: fft.rfft(x, workers=-1), 2)
    return {f"pa_seconds_{tag}": dt, f"fft_seconds_{tag}": dt_fft, f"pa_vs_fft_{tag}": dt / dt_fft,
            f"pa_peak_gb_{tag}": peak_bytes / 1e9}


BENCHMARKS: dict[str, Callable[[bool], dict[str, float]]] = {
    "coincidence": bench_coincidence, "simulator": bench_simulator, "storage": bench_storage, "qkd": bench_qkd,
    "analysis": bench_analysis, "pa": bench_pa}


# Units and meanings of the result keys, by suffix (longest match first).
UNITS: list[tuple[str, str]] = [
    ("_vs_copy", "× memcpy speed"), ("_mtags_s", "Mtags/s"), ("_mbit_s", "Mbit/s"), ("_kbit_s", "kbit/s"),
    ("_mcps", "Mcounts/s"), ("_bytes_per_tag", "bytes/tag"), ("_input_tags", "tags"), ("_input_bits", "bits"),
    ("_vs_plain", "× plain path"), ("_scaling_2_workers", "× 1 worker"), ("_seconds", "s"), ("_peak_gb", "GB"),
    ("_vs_fft", "× one FFT"),
]


def unit_of(key: str) -> str:
    """The unit of a result key; Cascade's ``cascade_f_*`` are efficiencies f (leaked / Shannon limit)."""
    if key.startswith("cascade_f_"):
        return "f (1 = Shannon limit)"
    for suffix, unit in UNITS:
        if key.endswith(suffix) or f"{suffix}_" in key:
            return unit
    return ""


def run_benchmarks(quick: bool = False, only: list[str] | None = None, table: bool = False) -> dict[str, float]:
    """Run the benchmarks (all, or the names in ``only``); ``table``: print the results on stdout.
    Raises QlabError for an unknown name in ``only``."""
    from qlab.errors import QlabError

    unknown = sorted(set(only or []) - set(BENCHMARKS))
    if unknown:
        raise QlabError(f"unknown benchmark(s) {', '.join(unknown)}; valid: {', '.join(BENCHMARKS)}")
    results: dict[str, float] = {}
    rows: list[tuple[str, str, str, str]] = []
    for name, fn in BENCHMARKS.items():
        if only and name not in only:
            continue
        print(f"running {name} ...", file=sys.stderr)
        r = fn(quick)
        for k, v in r.items():
            rows.append((name, k, fmt(v, digits=4), unit_of(k)))
        results.update(r)
    if table:
        print_table(rows, ["benchmark", "figure", "value", "unit"])
    return results
