#!/usr/bin/env python3
"""Render the main window during a live run on the simulated lab (offscreen) and save it as a PNG.

    .venv/bin/python scripts/gui_screenshot.py [--out docs/screenshot.png] [--size 1400x900] [--seconds 4]

With a display (e.g. ``Xvfb :99 &`` and ``DISPLAY=:99 QT_QPA_PLATFORM=xcb``) it grabs the real screen, window
decorations and all; otherwise it renders offscreen.

It calibrates delays and polarization first (scripted, fast simulated time), then opens the GUI on the
same calibration in real time, so the picture shows a working lab: the coincidence peak, visibilities,
QBER. The README shows the result.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="docs/screenshot.png")
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--size", default="1400x900", help="window size WIDTHxHEIGHT in pixels")
    args = ap.parse_args()
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication
    from qlab.gui.main_window import MainWindow

    from qlab.config import load_config
    from qlab.lab import Lab
    from qlab.procedures import PROCEDURES
    from qlab.procedures.engine import RunEngine

    data = Path(tempfile.mkdtemp())
    loaded = load_config(None)
    with Lab(loaded, data_dir=data) as lab:  # fast simulated time for the calibration
        for name in ("delays", "polarization"):
            RunEngine(lab).run(PROCEDURES[name](), record=False)
    app = QApplication(sys.argv[:1])
    lab = Lab(loaded, realtime=True, data_dir=data).open()
    lab["pump"].set_output(True)
    win = MainWindow(lab, QSettings(str(data / "gui.ini"), QSettings.IniFormat))
    width, height = (int(x) for x in args.size.lower().split("x"))
    win.resize(width, height)
    win.show()
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < args.seconds:
        app.processEvents()
        time.sleep(0.005)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    screen = app.primaryScreen()
    if os.environ.get("QT_QPA_PLATFORM") == "xcb" and screen is not None:  # the real screen, as a user sees it
        geo = win.frameGeometry()
        screen.grabWindow(0, geo.x(), geo.y(), geo.width(), geo.height()).save(str(out))
    else:
        win.grab().save(str(out))
    print(out)
    win.confirm_close = lambda: True
    win.close()
    win.deleteLater()
    app.processEvents()
    lab.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
