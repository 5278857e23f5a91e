"""Soak benchmark (not CI): a long realtime simulated run at >= 5 M tags/s recording to a run file.

    python scripts/soak.py                 # 10 minutes
    python scripts/soak.py --minutes 2.5 --pairs-per-mw 500000

The built-in simulated lab runs on a realtime clock with its source brightened so the tagger sees
>= 5 M tags/s; one streamed integration of the whole duration is recorded by the run engine. Every 10 s it
prints the process's RSS (must stay flat), the tags recorded so far and the rate. At the end it reports
dropped data (tagger overflow gaps, missed events, and how far recording lagged behind the tagger), and
reads the run file back: complete flag, tags and duration recorded.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent


def rss_mb() -> float:
    """Current resident set size of this process in MB (Linux /proc)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def soak(minutes: float, pairs_per_mw: float, data_dir: Path, report_every_s: float = 10.0) -> dict[str, Any]:
    from qlab.config import load_config
    from qlab.lab import Lab
    from qlab.procedures.engine import Procedure, RunContext, RunEngine
    from qlab.procedures.measure import integrate, light_on
    from qlab.storage.reader import RunReader

    cfg = yaml.safe_load((REPO / "instruments.yaml").read_text())
    cfg["simulation"]["realtime"] = True
    cfg["simulation"]["source"]["pairs_per_mw"] = pairs_per_mw
    path = data_dir / "soak.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    seconds = minutes * 60.0
    samples: list[dict[str, float]] = []

    class Soak(Procedure):
        name = "soak"

        def execute(self, ctx: RunContext) -> dict[str, Any]:
            light_on(ctx.lab)
            m = integrate(ctx, seconds)
            return {"tags": int(m.result.singles.sum()), "exposure_s": m.result.exposure_s,
                    "duration_s": m.result.duration_s}

    lab = Lab(load_config(path), seed=7, data_dir=data_dir).open()
    engine = RunEngine(lab)
    stop = threading.Event()
    t0 = time.monotonic()

    def monitor() -> None:
        while not stop.wait(report_every_s):
            runs = sorted((data_dir / "runs").glob("*.h5"))
            n = _tags_in(runs[-1]) if runs else 0
            t = time.monotonic() - t0
            rate = (n - samples[-1]["tags"]) / (t - samples[-1]["t_s"]) if samples else n / t
            samples.append({"t_s": t, "rss_mb": rss_mb(), "tags": n})
            print(f"{t:7.1f} s  RSS {samples[-1]['rss_mb']:7.1f} MB  recorded {n:>13,d} tags  "
                  f"{rate / 1e6:6.2f} M tags/s", flush=True)

    th = threading.Thread(target=monitor, daemon=True)
    th.start()
    try:
        res = engine.run(Soak())
    finally:
        stop.set()
        th.join(5)
        lab.close()
    wall = time.monotonic() - t0
    with RunReader(res["run_file"]) as r:
        summary = r.summary()
        gaps = r.gaps()
    lost_s = float((gaps[:, 1] - gaps[:, 0]).sum()) * 1e-12 if len(gaps) else 0.0
    rss = [s["rss_mb"] for s in samples]
    return {"minutes": minutes, "wall_s": wall, "tags": summary["tags"], "recorded_duration_s": summary["duration_s"],
            "complete": summary["complete"], "mean_rate_mtags_s": res["tags"] / max(res["duration_s"], 1e-9) / 1e6,
            "gaps": len(gaps), "gap_time_s": lost_s, "exposure_s": res["exposure_s"],
            "rss_mb_first": rss[0] if rss else None, "rss_mb_max": max(rss) if rss else None,
            "rss_mb_last": rss[-1] if rss else None, "run_file_gb": Path(res["run_file"]).stat().st_size / 1e9}


def _tags_in(path: Path) -> int:
    """Tags in a run file being written (SWMR read of the dataset's size)."""
    import h5py
    import hdf5plugin  # noqa: F401 - registers the compression filter

    try:
        with h5py.File(path, "r", swmr=True) as f:
            return int(f["photon_data/timestamps"].shape[0])
    except (OSError, KeyError):
        return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--pairs-per-mw", type=float, default=5.0e5, help="source brightness (built-in lab: 2e4)")
    p.add_argument("--data-dir", help="keep the run file here (default: a temporary directory, deleted)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = soak(args.minutes, args.pairs_per_mw, Path(args.data_dir or tmp))
    print()
    for k, v in out.items():
        print(f"{k:22s} {v}")
    dropped = out["gaps"]
    print(f"\ndropped chunks (tagger overflow gaps): {dropped}; run file complete: {out['complete']}; RSS "
          f"first/max/last {out['rss_mb_first']:.1f}/{out['rss_mb_max']:.1f}/{out['rss_mb_last']:.1f} MB")
    return 0 if out["complete"] and out["mean_rate_mtags_s"] >= 5.0 else 1


if __name__ == "__main__":
    sys.exit(main())
