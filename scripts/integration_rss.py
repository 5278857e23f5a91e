"""Peak RSS of one streamed integration, to show memory stays flat whatever ``integration_s`` is.

    python scripts/integration_rss.py 10 120          # one subprocess per duration, prints a table
    python scripts/integration_rss.py --one 120 --json  # (internal) one measurement in this process

Each measurement runs in a fresh process: the built-in simulated lab (fast simulated clock), lasers on,
``integrate(ctx, seconds)`` recording every chunk to a run file, then ``ru_maxrss``. Not a CI test;
tests/test_streaming.py asserts the ratio of a short pair.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def measure(seconds: float, data_dir: Path, rate_boost: float = 1.0) -> dict[str, Any]:
    from qlab.lab import Lab
    from qlab.procedures.engine import Procedure, RunContext, RunEngine
    from qlab.procedures.measure import integrate, light_on

    class Integrate(Procedure):
        name = "integrate"

        def execute(self, ctx: RunContext) -> dict[str, Any]:
            light_on(ctx.lab)
            m = integrate(ctx, seconds)
            return {"singles": m.result.singles.sum(), "exposure_s": m.result.exposure_s}

    lab = Lab.from_config(None, seed=5, data_dir=data_dir).open()
    try:
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t0 = time.monotonic()
        res = RunEngine(lab).run(Integrate())
        wall = time.monotonic() - t0
    finally:
        lab.close()
    return {"integration_s": seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "rss_before_mb": rss0 / 1024, "tags": int(res["singles"]), "wall_s": wall,
            "run_file_mb": Path(res["run_file"]).stat().st_size / 1e6}


def measure_in_subprocess(seconds: float, timeout_s: float = 900) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, "--one", str(seconds)], capture_output=True, text=True,
                         timeout=timeout_s, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("durations", nargs="*", type=float, default=[10.0, 120.0])
    p.add_argument("--one", type=float, help="measure one duration in this process and print JSON")
    args = p.parse_args()
    if args.one is not None:
        with tempfile.TemporaryDirectory() as d:
            print(json.dumps(measure(args.one, Path(d))))
        return 0
    rows = [measure_in_subprocess(s) for s in args.durations]
    for r in rows:
        print(f"{r['integration_s']:8.1f} s  peak RSS {r['peak_rss_mb']:7.1f} MB  tags {r['tags']:>11,d}  "
              f"wall {r['wall_s']:6.1f} s  file {r['run_file_mb']:7.1f} MB")
    if len(rows) > 1:
        print(f"peak RSS ratio longest/shortest: {rows[-1]['peak_rss_mb'] / rows[0]['peak_rss_mb']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
