#!/usr/bin/env python3
"""A scripted calibration run: the same engine and procedures as `qlab run`, chained in one run file.

    python scripts/calibrate.py [--config instruments.yaml] [--integration-s 1.0] [--skip tomography]

Prints each step's summary and ends with the run file's path. Ctrl-C aborts safely (lasers off, file closed).
"""

from __future__ import annotations

import argparse
import signal
import sys

from qlab.lab import Lab
from qlab.procedures import PROCEDURES
from qlab.procedures.engine import RunEngine
from qlab.storage.runfile import RunFile

STEPS = ["delays", "darkcounts", "polarization", "chsh", "tomography"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config")
    ap.add_argument("--integration-s", type=float, default=1.0)
    ap.add_argument("--skip", action="append", default=[], choices=STEPS)
    args = ap.parse_args()
    with Lab.from_config(args.config) as lab:
        engine = RunEngine(lab, progress=lambda f, m: print(f"  {100 * f:5.1f}% {m}", file=sys.stderr))
        signal.signal(signal.SIGINT, lambda *_: engine.abort())
        path = engine.new_run_path("calibration")
        with RunFile(path, taggers=lab.names("tagger"), procedure="calibration",
                     parameters=vars(args), config_text=lab.loaded.text, config_path=lab.loaded.path) as rf:
            for name in STEPS:
                if name in args.skip:
                    continue
                values = {"integration_s": args.integration_s} if "integration_s" in PROCEDURES[name].params else {}
                proc = PROCEDURES[name](**values)
                print(f"{proc.title} ...", flush=True)
                results = engine.run(proc, runfile=rf)
                print(f"  {proc.summary(results)}", flush=True)
            rf.finish()
    print(f"run file: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
