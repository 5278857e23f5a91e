"""The GUI as lab users meet it (issue 19): nothing changes by accident, closing during a run is clean, the live
view says when it is paused, errors show where the user looks, displays without data say so (pytest-qt)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pyqtgraph")

from PySide6.QtCore import QPoint, QPointF, QSettings, Qt  # noqa: E402
from PySide6.QtGui import QWheelEvent  # noqa: E402
from PySide6.QtWidgets import QApplication, QCheckBox, QComboBox, QDockWidget, QPushButton  # noqa: E402

from tests.simlab_helpers import calibrated_delays, ideal_fibres  # noqa: E402


def _cfg(c) -> None:
    ideal_fibres(c)
    calibrated_delays(c)


def _open(qtbot, lab, tmp_path, size=(1200, 800)):
    from qlab.gui.main_window import MainWindow

    w = MainWindow(lab, QSettings(str(tmp_path / "gui.ini"), QSettings.IniFormat))
    w.confirm_close = lambda: True  # the "abort and close?" dialog, answered
    qtbot.addWidget(w)
    w.resize(*size)
    w.show()
    return w


@pytest.fixture
def window(qtbot, make_lab, tmp_path):
    lab = make_lab(_cfg, seed=21, realtime=True)
    lab["pump"].set_output(True)
    w = _open(qtbot, lab, tmp_path)
    yield w
    w.close()


def _wheel(widget, steps: int = 3) -> None:
    for _ in range(steps):
        ev = QWheelEvent(QPointF(widget.width() / 2, widget.height() / 2), QPointF(widget.mapToGlobal(QPoint(5, 5))),
                         QPoint(0, 0), QPoint(0, -120), Qt.NoButton, Qt.NoModifier, Qt.NoScrollPhase, False)
        QApplication.sendEvent(widget, ev)


def test_wheel_over_an_unfocused_spin_box_changes_nothing_on_the_instrument(window, qtbot) -> None:
    panel = window.panels["alice_H"]
    qtbot.waitUntil(lambda: panel.settings_loaded, timeout=10_000)
    editor = panel.editors["efficiency"]
    det = window.lab["alice_H"]
    before_inst = det.call("read_settings")["efficiency"][0]
    before_editor = editor.value()
    sent: list = []
    original = panel.submit
    panel.submit = lambda method, *a, **k: (sent.append((method, a)), original(method, *a, **k))
    assert not editor.hasFocus()
    _wheel(editor, 5)  # the user scrolls the Instruments dock across the spin box
    qtbot.wait(700)  # a poll period: any write would have reached the instrument
    assert editor.value() == before_editor
    assert sent == []
    assert det.call("read_settings")["efficiency"][0] == pytest.approx(before_inst)
    # Once the user clicked into the box the wheel is an intended edit and is sent.
    editor.setFocus()
    qtbot.waitUntil(editor.hasFocus, timeout=2000)
    _wheel(editor, 1)
    assert editor.value() != before_editor
    qtbot.waitUntil(lambda: bool(sent), timeout=2000)


def test_closing_during_a_procedure_aborts_cleanly(window, qtbot, tmp_path) -> None:
    """In-process: the window closes only after the procedure's finally-path (lasers off, file closed)."""
    from qlab.cli import main as cli_main
    from qlab.storage.reader import RunReader

    window.proc_combo.setCurrentText("chsh")
    window.param_edits["integration_s"].setText("5")
    window.run_procedure()
    qtbot.waitUntil(lambda: window.progress.value() > 0, timeout=15_000)
    window.close()
    assert window.isVisible()  # not yet: the procedure is being aborted first
    qtbot.waitUntil(lambda: not window.isVisible(), timeout=20_000)
    assert not window.runner.busy
    assert not window.lab.sim.lasers["pump"]["on"]
    runs = sorted((window.lab.data_dir / "runs").glob("*-chsh.h5"))
    assert runs
    with RunReader(runs[-1]) as r:
        assert not r.complete
        assert any(x["name"] == "error" for x in r.results())
    assert cli_main(["info", str(runs[-1])]) == 0
    assert "Signal source has been deleted" not in window.log.toPlainText()


CLOSE_SCRIPT = textwrap.dedent("""
    import json, os, sys, time
    os.environ["QT_QPA_PLATFORM"] = "offscreen"
    from pathlib import Path
    from PySide6.QtCore import QSettings, QTimer
    from PySide6.QtWidgets import QApplication
    from qlab.gui.main_window import MainWindow
    from qlab.lab import Lab

    data = Path(sys.argv[1])
    app = QApplication([])
    lab = Lab.from_config(None, realtime=True, data_dir=data).open()
    win = MainWindow(lab, QSettings(str(data / "gui.ini"), QSettings.IniFormat))
    win.confirm_close = lambda: True
    win.show()
    win.proc_combo.setCurrentText("chsh")
    win.param_edits["integration_s"].setText("2")
    win.run_procedure()
    def close_when_running():
        if win.progress.value() > 0:
            print(json.dumps({"close_at": time.time()}), flush=True)
            win.close()
        else:
            QTimer.singleShot(50, close_when_running)
    QTimer.singleShot(50, close_when_running)
    app.exec()
    win.deleteLater()
    app.processEvents()
    lasers = {n: lab[n].call("read_settings")["output"][0] for n in lab.names("laser")}
    lab.close()
    print(json.dumps({"lasers": lasers}), flush=True)
""")


def test_closing_during_a_procedure_exits_the_process(tmp_path) -> None:
    """A separate process (as `qlab gui`): close during chsh -> lasers off, readable incomplete run file, exit."""
    from qlab.storage.reader import RunReader

    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    started = time.time()
    proc = subprocess.run([sys.executable, "-c", CLOSE_SCRIPT, str(tmp_path)], capture_output=True, text=True,
                          timeout=120, env=env)
    ended = time.time()
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    close_at = next(x["close_at"] for x in lines if "close_at" in x)
    lasers = next(x["lasers"] for x in lines if "lasers" in x)
    assert lasers and not any(lasers.values())
    for bad in ("Signal source has been deleted", "Traceback", "ring type"):
        assert bad not in proc.stderr, proc.stderr[-3000:]
    runs = sorted((tmp_path / "runs").glob("*-chsh.h5"))
    assert len(runs) == 1
    with RunReader(runs[0]) as r:
        assert not r.complete
    info = subprocess.run([sys.executable, "-m", "qlab.cli", "info", str(runs[0])], capture_output=True, text=True,
                          timeout=60)
    assert info.returncode == 0, info.stderr
    print(f"close -> process exit: {ended - close_at:.2f} s (whole run {ended - started:.1f} s)")
    assert close_at <= ended


def test_live_view_shows_paused_and_leaves_a_gap(window, qtbot) -> None:
    qtbot.waitUntil(lambda: window.latest is not None and window.frames_drawn > 3, timeout=10_000)
    window.proc_combo.setCurrentText("chsh")
    window.param_edits["integration_s"].setText("0.3")
    window.param_edits["measure_visibility"].setText("false")
    window.run_procedure()
    qtbot.waitUntil(lambda: window.live_paused_by == "chsh", timeout=10_000)
    assert "paused" in window.rates_plot.plotItem.titleLabel.text
    frames_at_pause = window.acq.frames
    qtbot.wait(400)
    assert window.acq.frames == frames_at_pause  # no data is invented while the tagger is busy
    assert any(not rates for _, rates in window._history)  # the break point
    qtbot.waitUntil(lambda: "chsh finished" in window.results.toPlainText(), timeout=30_000)
    qtbot.waitUntil(lambda: window.live_paused_by is None and window.acq.frames > frames_at_pause + 3,
                    timeout=10_000)
    title = window.rates_plot.plotItem.titleLabel
    assert not title.isVisible() or "paused" not in title.text
    qtbot.waitUntil(lambda: window.frames_drawn > 0, timeout=2000)
    _, ys = window.rate_curves["alice.H"].getData()
    assert ys is not None and np_isnan_any(ys)  # the paused span is a gap, not a flat line


def np_isnan_any(values) -> bool:
    return any(math.isnan(float(v)) for v in values)


def test_bad_parameter_is_shown_in_the_procedures_pane(window, qtbot) -> None:
    window.findChild(QDockWidget, "dock_log").hide()  # the user closed the log
    window.proc_combo.setCurrentText("chsh")
    window.param_edits["integration_s"].setText("fast")
    window.run_procedure()
    assert not window.runner.busy
    assert window.param_error.isVisible()
    assert "integration_s" in window.param_error.text()
    assert window.param_edits["integration_s"].property("param_error")
    window.param_edits["integration_s"].setText("99999")  # above the 3600 s maximum
    window.run_procedure()
    assert "outside" in window.param_error.text() and not window.runner.busy
    window.param_edits["integration_s"].setText("0.2")
    window.run_procedure()
    assert not window.param_error.isVisible() and not window.param_edits["integration_s"].property("param_error")
    window.abort_btn.click()
    qtbot.waitUntil(lambda: not window.runner.busy, timeout=20_000)


def test_typed_parameter_inputs(window) -> None:
    window.proc_combo.setCurrentText("chsh")
    assert isinstance(window.param_edits["measure_visibility"], QCheckBox)
    window.param_edits["measure_visibility"].setText("false")
    assert window.param_edits["measure_visibility"].text() == "false"
    window.proc_combo.setCurrentText("qkd")
    proto = window.param_edits["protocol"]
    assert isinstance(proto, QComboBox) and {proto.itemText(i) for i in range(proto.count())} == {"bbm92", "bb84"}
    labels = [window.param_form.itemAt(i, window.param_form.ItemRole.LabelRole).widget().text()
              for i in range(window.param_form.rowCount())]
    assert "integration_s" in labels and not any("(" in x for x in labels)  # the unit sits beside the field


def test_menus_shortcuts_and_reopening_docks(window, qtbot) -> None:
    titles = [a.text().replace("&", "") for a in window.menuBar().actions()]
    assert {"File", "View", "Help"} <= set(titles)
    assert window.quit_action.shortcut().toString() == "Ctrl+Q"
    log = window.findChild(QDockWidget, "dock_log")
    log.hide()
    log.toggleViewAction().trigger()  # View > Log
    assert log.isVisible()
    assert window.findChild(QPushButton, "export_button").isVisible()


def test_no_data_is_not_shown_as_a_result(qtbot, make_lab, tmp_path) -> None:
    """Pump off: no S ± 2, no QKD "ABORT" — the labels say there are no coincidences."""
    lab = make_lab(_cfg, seed=22, realtime=True)
    w = _open(qtbot, lab, tmp_path)
    try:
        qtbot.waitUntil(lambda: w.frames_drawn > 5 and w.latest.exposure_s > 0.5, timeout=10_000)
        assert "±" not in w.s_label.text() and "—" in w.s_label.text()
        assert "ABORT" not in w.abort_label.text().upper()
        assert "fixed analyzers" in w.bell_box.title()
    finally:
        w.close()


def test_progress_never_goes_backwards_and_abort_is_info(window) -> None:
    window._on_progress(0.5, "sweep 1")
    window._on_progress(0.2, "sweep 2")
    assert window.progress.value() == 500 and window.progress_label.text() == "sweep 2"
    window._on_failed("chsh", "AbortedError: aborted by the user")
    assert " INFO " in window.log.toPlainText().splitlines()[-1]


def test_accumulate_resets_when_the_laser_switches(window, qtbot) -> None:
    window.mode_combo.setCurrentText("accumulate")
    qtbot.waitUntil(lambda: window.latest is not None and window.latest.mode == "accumulate"
                    and window.latest.exposure_s > 1.0, timeout=10_000)
    assert "accumulated" in window.elapsed_label.text()
    window.lab["pump"].set_output(False)
    qtbot.waitUntil(lambda: "accumulation reset" in window.log.toPlainText(), timeout=5000)
    qtbot.waitUntil(lambda: window.latest.exposure_s < 1.0, timeout=5000)


def test_histogram_controls_reach_the_live_analysis(window, qtbot) -> None:
    window.hist_bin.setValue(50)
    window.hist_range.setValue(2000)
    window.window_spin.setValue(700)
    qtbot.waitUntil(lambda: window.latest is not None and len(window.latest.hist_counts) == 80, timeout=10_000)
    assert window.acq.analyzer.counter.window_ps == 700
    window.hist_log.setChecked(True)
    assert window.hist_plot.plotItem.ctrl.logYCheck.isChecked()


@pytest.mark.parametrize("size", [(1400, 900), (1024, 700)])
def test_layout_fits_without_clipping(qtbot, make_lab, tmp_path, size) -> None:
    lab = make_lab(_cfg, seed=23, realtime=True)
    w = _open(qtbot, lab, tmp_path, size)
    try:
        qtbot.waitUntil(lambda: w.panels["pump"].settings_loaded, timeout=10_000)
        qtbot.wait(100)
        scroll = w.instrument_scroll
        assert not scroll.horizontalScrollBar().isVisible()
        view_w = scroll.viewport().width()
        for name in ("pump_off", "alice_analyzer_hwp_move"):
            b = w.findChild(QPushButton, name)
            assert b is not None, name
            right = b.mapTo(scroll.viewport(), QPoint(b.width(), 0)).x()
            assert right <= view_w, (name, right, view_w)
        homes = [b for b in w.findChildren(QPushButton) if b.text() == "Home"]
        assert homes and all(b.mapTo(scroll.viewport(), QPoint(b.width(), 0)).x() <= view_w for b in homes)
        off = w.findChild(QPushButton, "pump_off")
        assert not off.visibleRegion().isEmpty()  # Emission OFF in view without scrolling
        assert w.coinc_plot.getViewBox().viewRange()[1][0] >= 0  # no negative counts on an empty plot
    finally:
        w.close()


def test_window_size_is_restored(qtbot, make_lab, tmp_path) -> None:
    from qlab.gui.main_window import MainWindow

    lab = make_lab(_cfg, seed=24, realtime=True)
    w = _open(qtbot, lab, tmp_path, (1100, 720))
    w.close()
    w2 = MainWindow(make_lab(_cfg, seed=25, realtime=True), QSettings(str(tmp_path / "gui.ini"), QSettings.IniFormat))
    qtbot.addWidget(w2)
    try:
        assert w2.restored_geometry
        assert w2.height() == 720
        screen_w = w2.screen().availableGeometry().width()  # Qt fits a restored window into the screen
        assert w2.width() == 1100 or w2.width() >= min(1100, screen_w) - 10
    finally:
        w2.close()


def test_run_browser_lists_runs_with_parameters_and_results(make_lab, qtbot, tmp_path) -> None:
    from qlab.gui.runs import RunBrowser

    from qlab.procedures.darkcounts import DarkCountsProcedure
    from qlab.procedures.engine import RunEngine

    lab = make_lab(_cfg, seed=26)
    RunEngine(lab).run(DarkCountsProcedure(integration_s=0.1))
    browser = RunBrowser(Path(lab.data_dir) / "runs")
    qtbot.addWidget(browser)
    browser.refresh()
    qtbot.waitUntil(lambda: browser.tree.topLevelItemCount() == 1, timeout=10_000)
    item = browser.tree.topLevelItem(0)
    assert item.text(1) == "darkcounts" and item.text(2) == "complete"
    browser.tree.setCurrentItem(item)
    assert "integration_s=0.1" in browser.detail.toPlainText() and "darkcounts:" in browser.detail.toPlainText()


def test_platform_check_names_the_packages_to_install(monkeypatch, capsys) -> None:
    from qlab.gui import app, platform_check

    assert platform_check.check_qt_platform({"QT_QPA_PLATFORM": "offscreen"}).ok
    no_display = platform_check.check_qt_platform({})
    assert not no_display.ok and "--offscreen" in no_display.message
    monkeypatch.setattr(platform_check, "_loads", lambda so: so not in ("libxcb-icccm.so.4", "libxcb-keysyms.so.1"))
    r = platform_check.check_qt_platform({"DISPLAY": ":0"})
    assert not r.ok and r.packages == ["libxcb-icccm4", "libxcb-keysyms1"]
    assert "apt-get install -y libxcb-icccm4 libxcb-keysyms1" in r.message
    # `qlab gui` stops before creating the QApplication (exit 2), with the message on stderr.
    monkeypatch.setattr(platform_check, "check_qt_platform", lambda: r)
    monkeypatch.delenv("QT_QPA_PLATFORM", raising=False)
    assert app.main(None) == 2
    assert "libxcb-keysyms1" in capsys.readouterr().err
    # The link view of a network node (`qlab gui --node NAME`) checks the same way before Qt starts.
    from qlab.gui import link_view

    assert link_view.main(endpoint="http://127.0.0.1:9") == 2
    assert "libxcb-keysyms1" in capsys.readouterr().err
