"""Read a run file once in a child process with a time limit before trusting it in this one.

The HDF5 library can loop forever or crash on some damaged files (a corrupt B-tree or object header), and
neither can be interrupted from Python. ``check_run_file`` therefore reads the file in a child
(``python -m qlab.storage.probe FILE``): its structure, metadata, logs and, for files up to FULL_READ_BYTES,
every tag chunk; larger files get their first and last chunks read. A child that hangs is killed after the
time limit, one that crashes is reported by its exit signal, and either way the caller gets a FileFormatError.

Child protocol: the last stdout line is JSON ``{"ok": true}`` or ``{"ok": false, "error": MESSAGE}``;
exit code 0 (readable), 1 (FileFormatError), 2 (an unexpected exception: a qlab bug, traceback on stderr).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import traceback
from pathlib import Path

from qlab.errors import FileFormatError

BASE_TIMEOUT_S = 8.0  # a healthy small file is read in well under a second; 8 s + start-up stays <= 10 s
READ_BYTES_PER_S = 100e6  # extra time granted per byte of a large file (a slow disk still manages this)
FULL_READ_BYTES = 256 << 20  # files up to this size have every tag chunk read by the probe
PROBE_CHUNK_TAGS = 1 << 20
EXIT_OK, EXIT_BAD_FILE, EXIT_BUG = 0, 1, 2


def time_limit_s(path: str | Path) -> float:
    """The child's time limit for ``path`` (s): BASE_TIMEOUT_S, plus read time of the part it reads."""
    try:
        size = os.path.getsize(path)
    except OSError:
        size = 0
    return BASE_TIMEOUT_S + min(size, FULL_READ_BYTES) / READ_BYTES_PER_S


def check_run_file(path: str | Path, timeout_s: float | None = None) -> None:
    """Read ``path`` in a child process. Raises FileFormatError (naming the file) if it is not a readable run
    or Photon-HDF5 file, crashes the HDF5 library, or cannot be read within the time limit."""
    p = Path(path)
    if not p.is_file():
        raise FileFormatError(str(p), "no such file" if not p.exists() else "not a regular file")
    limit = time_limit_s(p) if timeout_s is None else timeout_s
    try:
        proc = subprocess.run([sys.executable, "-m", "qlab.storage.probe", str(p)], capture_output=True,
                              text=True, timeout=limit, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:  # subprocess.run kills the child before raising
        raise FileFormatError(str(p), f"the HDF5 library did not finish reading the file within {limit:.0f} s "
                                      "(damaged file structure)") from None
    verdict = _last_json_line(proc.stdout)
    if proc.returncode == EXIT_OK and verdict.get("ok"):
        return
    if proc.returncode == EXIT_BAD_FILE and "error" in verdict:
        raise FileFormatError(str(p), str(verdict["error"]))
    if proc.returncode < 0:
        raise FileFormatError(str(p), f"the HDF5 library crashed reading the file (signal {-proc.returncode}); "
                                      "the file is damaged")
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    raise FileFormatError(str(p), f"unreadable (probe exit {proc.returncode}: {tail[:200]})")


def _last_json_line(text: str) -> dict:
    for line in reversed(text.strip().splitlines()):
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            continue
        return value if isinstance(value, dict) else {}
    return {}


def open_checked(path: str | Path, timeout_s: float | None = None):  # -> RunReader (import kept lazy)
    """A RunReader on ``path`` after ``check_run_file`` found it readable. Raises FileFormatError."""
    from qlab.storage.reader import RunReader

    check_run_file(path, timeout_s)
    return RunReader(path)


def read_everything(path: str | Path) -> None:
    """What the child does: every read qlab info / qlab analyze make, and the tag data. Raises FileFormatError."""
    from qlab.storage.reader import RunReader

    full = os.path.getsize(path) <= FULL_READ_BYTES
    with RunReader(path) as r:
        r.summary()
        r.settings_log()
        for g in range(len(r.groups)):
            n = r.n_tags(g)
            if full or n <= 2 * PROBE_CHUNK_TAGS:
                for _ in r.iter_chunks(g, PROBE_CHUNK_TAGS):
                    pass
            else:  # first and last chunk: the chunk index is walked to both ends
                ds = r.f[r.groups[g]]["timestamps"]
                try:
                    ds[:PROBE_CHUNK_TAGS], ds[n - PROBE_CHUNK_TAGS:]
                except (OSError, RuntimeError, ValueError) as exc:
                    raise FileFormatError(str(path), f"damaged tag data: {exc}") from None


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m qlab.storage.probe FILE", file=sys.stderr)
        return EXIT_BUG
    try:
        read_everything(args[0])
    except FileFormatError as exc:
        print(json.dumps({"ok": False, "error": str(exc).removeprefix(f"{args[0]}: ")}))
        return EXIT_BAD_FILE
    except Exception:  # noqa: BLE001 - a reader bug: say so distinctly from a damaged file
        traceback.print_exc()
        return EXIT_BUG
    print(json.dumps({"ok": True}))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
