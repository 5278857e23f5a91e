"""Run the mutated-config and damaged-file corpora through the real `qlab` command and count the outcomes.

    python scripts/input_corpora.py [--out DIR] [--timeout-s 30] [--configs 300]

Each input runs in its own `qlab` process with a time limit: `qlab config check FILE` for every mutated
lab description, `qlab info FILE` and `qlab analyze FILE` for every damaged run / PTU file. An outcome is
"ok" (exit 0), "clean error" (non-zero exit, no Python traceback on stderr), "traceback" or "hang" (killed at
the time limit). Prints one JSON object with the counts, the slowest input and every traceback / hang.
Not part of CI (a few minutes on two cores); tests/test_config_corpus.py and tests/test_damaged_files.py run
the same corpora in process.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.corpora import damaged_files, mutated_configs  # noqa: E402


def _run(argv: list[str], timeout_s: float) -> tuple[str, float, str]:
    t0 = time.monotonic()
    try:
        proc = subprocess.run([sys.executable, "-m", "qlab.cli", *argv], capture_output=True, text=True,
                              timeout=timeout_s, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return "hang", time.monotonic() - t0, ""
    dt = time.monotonic() - t0
    if "Traceback (most recent call last)" in proc.stderr:
        return "traceback", dt, proc.stderr.strip().splitlines()[-1]
    return ("ok" if proc.returncode == 0 else "clean error"), dt, ""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, help="where to write the corpora (default: a temporary directory)")
    ap.add_argument("--timeout-s", type=float, default=30.0)
    ap.add_argument("--configs", type=int, default=300)
    args = ap.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="qlab-corpora-"))
    report: dict = {"out": str(out)}
    for name, cases, commands in (
        ("mutated_configs", _write_configs(out / "configs", args.configs), [["config", "check"]]),
        ("damaged_files", damaged_files(out / "files"), [["info"], ["analyze"]]),
    ):
        counts: Counter = Counter()
        problems, slowest = [], (0.0, "")
        for label, path in cases:
            for cmd in commands:
                outcome, dt, last = _run([*cmd, str(path)], args.timeout_s)
                counts[outcome] += 1
                slowest = max(slowest, (dt, f"{' '.join(cmd)} {label}"))
                if outcome in ("traceback", "hang"):
                    problems.append(f"{' '.join(cmd)} {label}: {outcome} {last}")
        report[name] = {"inputs": len(cases), "runs": sum(counts.values()), **counts,
                        "slowest_s": round(slowest[0], 2), "slowest": slowest[1], "problems": problems}
    print(json.dumps(report, indent=2))
    return 0 if not any(report[k]["problems"] for k in ("mutated_configs", "damaged_files")) else 1


def _write_configs(out: Path, n: int) -> list[tuple[str, Path]]:
    out.mkdir(parents=True, exist_ok=True)
    cases = []
    for label, text in mutated_configs(n):
        p = out / f"{label}.yaml"
        p.write_text(text, encoding="utf-8")
        cases.append((label, p))
    return cases


if __name__ == "__main__":
    sys.exit(main())
