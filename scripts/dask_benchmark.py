#!/usr/bin/env python3
"""Wall time of one file-backed analysis (singles, coincidences and accidentals of 8 channels with delays) of a
10^8-tag run file: serial, on 2 local worker processes, and on a Dask distributed cluster of 2 single-threaded
worker processes (a ``LocalCluster`` on loopback, or ``--scheduler tcp://HOST:8786``). Checks that all three
give identical counts. Needs the extra: ``pip install 'qlab[cluster]'``.

    python scripts/dask_benchmark.py [--tags 100000000] [--file run.h5] [--scheduler tcp://HOST:8786] [--json]

Each wall time is the best of ``--repeats`` runs after one warm-up (worker start, imports and compiled
kernels are then in place, as on a running cluster); the serial time is the same-run reference.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import numpy as np


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tags", type=int, default=100_000_000, help="tags in the generated file (default 10^8)")
    ap.add_argument("--file", help="analyse this run file instead of generating one")
    ap.add_argument("--scheduler", help="a running Dask scheduler (default: a LocalCluster of 2 processes)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    try:
        import distributed
    except ImportError:
        print("error: dask.distributed is not installed: pip install 'qlab[cluster]'", file=sys.stderr)
        return 2
    from qlab.analysis.parallel_file import AnalysisSpec, count_file, dask_mapper, local_mapper
    from qlab.bench import best_seconds, write_repeated_run_file

    channels = tuple(range(1, 9))
    spec = AnalysisSpec(channels, 2000, tuple((c, 1000 * c) for c in channels), 50_000)
    with tempfile.TemporaryDirectory() as d:
        path = args.file or os.path.join(d, "dask_bench.h5")
        if not args.file:
            print(f"writing a {args.tags:.3g}-tag run file ...", file=sys.stderr)
            write_repeated_run_file(path, args.tags)
        results, seconds = {}, {}

        def measure(name: str, mapper) -> None:
            results[name] = count_file(path, spec, mapper)  # warm-up
            seconds[name] = best_seconds(lambda: count_file(path, spec, mapper), args.repeats)

        # The local runs fork their workers, so they go first: a process running the Dask client's threads
        # must not fork.
        measure("serial", local_mapper(1))
        measure("local_2_processes", local_mapper(2, "fork"))
        cluster = None
        if args.scheduler:
            client = distributed.Client(args.scheduler, timeout=60)
        else:
            cluster = distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                               dashboard_address=None, host="127.0.0.1")
            client = distributed.Client(cluster, timeout=60)
        try:
            measure("dask_2_workers", dask_mapper(client))
        finally:
            client.close()
            if cluster is not None:
                cluster.close(timeout=30)
        ref = results["serial"].counts
        for name, r in results.items():
            for field in ("singles", "coincidences", "accidentals"):
                if not np.array_equal(getattr(r.counts, field), getattr(ref, field)):
                    print(f"error: {name} {field} differ from the serial pass", file=sys.stderr)
                    return 1
        n = int(ref.tags)
        fig = {"tags": n,
               **{f"{k}_seconds": round(v, 3) for k, v in seconds.items()},
               **{f"{k}_vs_serial": round(seconds["serial"] / v, 3) for k, v in seconds.items() if k != "serial"},
               "identical_counts": True}
    if args.json:
        print(json.dumps(fig))
    else:
        print(f"{n:.3g} tags, identical counts on every path")
        for k, v in seconds.items():
            print(f"  {k:20s} {v:7.2f} s  {n / v / 1e6:6.0f} M tags/s  {seconds['serial'] / v:5.2f}x serial")
    return 0


if __name__ == "__main__":
    sys.exit(main())
