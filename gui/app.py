"""`qlab gui`: open the main window on the configured lab (the simulated lab in real time by default)."""

from __future__ import annotations

import sys

from qlab.gui.platform_check import qt_platform_ready

from qlab.lab import Lab


def main(config: str | None = None, quit_after_s: float | None = None, offscreen: bool = False) -> int:
    """Run the GUI; returns the exit code (2 when Qt's platform plugin cannot load: the message says what to
    install)."""
    if not qt_platform_ready("qlab gui", offscreen):
        return 2
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication
    from qlab.gui.main_window import MainWindow

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setOrganizationName("qlab")
    app.setApplicationName("qlab")
    lab = Lab.from_config(config, realtime=True).open()
    try:
        win = MainWindow(lab)
        if not win.restored_geometry:  # a saved window size wins over the default
            win.resize(1400, 900)
        win.show()
        if quit_after_s is not None:
            QTimer.singleShot(int(quit_after_s * 1000), win.close)
        code = app.exec()
        # Delete the window (and its plots) while Qt is alive: leaving it to interpreter shutdown crashes.
        win.deleteLater()
        app.processEvents()
        return code
    finally:
        lab.close()
