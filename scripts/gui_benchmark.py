#!/usr/bin/env python3
"""GUI responsiveness with the simulator pushing ~20 M tags/s: frames drawn per second and the longest
time the GUI thread was blocked (from a 5 ms heartbeat timer). Offscreen; prints its figures.

    python scripts/gui_benchmark.py [--seconds 10] [--pairs-per-mw 1.0e6]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import yaml

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--pairs-per-mw", type=float, default=1.0e6)
    args = ap.parse_args()
    from PySide6.QtCore import QSettings, QTimer
    from PySide6.QtWidgets import QApplication
    from qlab.gui.main_window import MainWindow

    from qlab.config import builtin_config_path, load_config
    from qlab.lab import Lab

    cfg = yaml.safe_load(builtin_config_path().read_text())
    cfg["simulation"]["source"]["pairs_per_mw"] = args.pairs_per_mw
    tmp = Path(tempfile.mkdtemp())
    (tmp / "lab.yaml").write_text(yaml.safe_dump(cfg))
    app = QApplication(sys.argv[:1])
    lab = Lab(load_config(tmp / "lab.yaml"), realtime=True, data_dir=tmp).open()
    lab["pump"].set_output(True)
    win = MainWindow(lab, QSettings(str(tmp / "gui.ini"), QSettings.IniFormat))
    win.resize(1400, 900)
    win.show()
    beats: list[float] = []
    heart = QTimer()
    heart.timeout.connect(lambda: beats.append(time.perf_counter()))
    heart.start(5)
    t_end = time.perf_counter() + 2.0  # warm-up: JIT compilation and first frames
    while time.perf_counter() < t_end:
        app.processEvents()
    beats.clear()
    d0, f0 = win.frames_drawn, win.acq.frames
    tags0 = win.acq.analyzer.counter.total.singles.sum()
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < args.seconds:
        app.processEvents()
        time.sleep(0.001)
    dt = time.perf_counter() - t0
    gaps = [b - a for a, b in zip(beats[:-1], beats[1:], strict=False)]
    tags = win.acq.analyzer.counter.total.singles.sum() - tags0
    print(f"tag rate analysed      {tags / dt / 1e6:8.2f} M tags/s")
    print(f"frames drawn           {(win.frames_drawn - d0) / dt:8.1f} /s   (target >= 20)")
    print(f"acquisition frames     {(win.acq.frames - f0) / dt:8.1f} /s")
    print(f"longest GUI-thread gap {1e3 * max(gaps):8.1f} ms  (target < 50; heartbeat 5 ms)")
    if win.log.toPlainText():
        print("log:", win.log.toPlainText()[-800:])
    print(f"99th percentile gap    {1e3 * sorted(gaps)[int(0.99 * len(gaps))]:8.1f} ms")
    win.close()
    win.deleteLater()
    app.processEvents()
    lab.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
