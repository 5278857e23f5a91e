"""Test rig for fault tests: a served DLC pro simulator in a subprocess, a TCP proxy that can stop
forwarding, and a lab config whose pump is that DLC pro (the rest simulated in process).

Everything listens on 127.0.0.1 only; every process and thread is bounded in time and cleaned up by its
context manager.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent


def qlab_env(data_dir: Path) -> dict[str, str]:
    env = dict(os.environ, QLAB_DATA_DIR=str(data_dir), PYTHONUNBUFFERED="1")
    env.pop("QLAB_CONFIG", None)
    return env


@contextmanager
def served_dlcpro(timeout_s: float = 30.0) -> Iterator[tuple[subprocess.Popen, int]]:
    """``qlab sim serve dlcpro --tcp 0`` in a subprocess: (process, port). Killed on exit."""
    proc = subprocess.Popen([sys.executable, "-m", "qlab.cli", "sim", "serve", "dlcpro", "--tcp", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=REPO)
    try:
        deadline = time.monotonic() + timeout_s
        line = ""
        while time.monotonic() < deadline and not line:
            line = proc.stdout.readline().strip() if proc.stdout else ""
            if proc.poll() is not None:
                break
        if not line.startswith("127.0.0.1:"):
            raise RuntimeError(f"dlcpro simulator did not start: {line!r}")
        yield proc, int(line.rpartition(":")[2])
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


class HangingProxy:
    """Forwards 127.0.0.1:``port`` to ``target_port`` until ``hang()``; then it silently drops everything
    in both directions (a link that hangs, not one that closes)."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.srv = socket.create_server(("127.0.0.1", 0))
        self.srv.settimeout(0.2)
        self.port = self.srv.getsockname()[1]
        self.hanging = threading.Event()
        self.stop = threading.Event()
        self.hung_at: float | None = None
        self._socks: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def hang(self) -> None:
        self.hung_at = time.monotonic()
        self.hanging.set()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                client, _ = self.srv.accept()
            except (TimeoutError, OSError):
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            self._socks += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        src.settimeout(0.1)
        while not self.stop.is_set():
            try:
                data = src.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            if not self.hanging.is_set():
                try:
                    dst.sendall(data)
                except OSError:
                    return

    def close(self) -> None:
        self.stop.set()
        self.srv.close()
        for s in self._socks:
            with suppress(OSError):
                s.close()
        self._thread.join(2)


def dlcpro_pump_config(path: Path, port: int, realtime: bool = False) -> Path:
    """The built-in lab with its pump replaced by a DLC pro at 127.0.0.1:``port``."""
    cfg = yaml.safe_load((REPO / "instruments.yaml").read_text())
    cfg["instruments"]["pump"].update(driver="toptica.dlcpro", backend=f"127.0.0.1:{port}", sim={},
                                      settings={"current_a": 0.12, "temperature_c": 25.0})
    if realtime:
        cfg.setdefault("simulation", {})["realtime"] = True
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def start_run(config: Path, data_dir: Path, *args: str) -> subprocess.Popen:
    """``qlab run ARGS --config CONFIG`` in a subprocess (stderr captured)."""
    return subprocess.Popen([sys.executable, "-m", "qlab.cli", "run", *args, "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                            env=qlab_env(data_dir), start_new_session=True)


def wait_for_tags(data_dir: Path, min_tags: int = 1, timeout_s: float = 60.0) -> Path:
    """Wait until a run file under ``data_dir`` holds at least ``min_tags`` tags (a run is integrating);
    returns its path. Raises TimeoutError."""
    from qlab.errors import FileFormatError
    from qlab.storage.reader import RunReader

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for f in sorted((data_dir / "runs").glob("*.h5")) if (data_dir / "runs").exists() else []:
            try:
                with RunReader(f) as r:  # counts the partial chunk the writer flushed too
                    n = r.n_tags()
            except (OSError, KeyError, FileFormatError):
                continue
            if n >= min_tags:
                return f
        time.sleep(0.05)
    raise TimeoutError(f"no run file with {min_tags} tags under {data_dir} within {timeout_s} s")


def wait_exit(proc: subprocess.Popen, timeout_s: float) -> tuple[int | None, float, str]:
    """Wait for ``proc`` to exit (killing its group after ``timeout_s``): (returncode or None if it had to
    be killed, monotonic time of exit, stderr)."""
    deadline = time.monotonic() + timeout_s
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    t_exit = time.monotonic()
    rc = proc.poll()
    if rc is None:
        os.killpg(proc.pid, signal.SIGKILL)
    _, err = proc.communicate(timeout=10)
    return rc, t_exit, err
