"""The desktop GUI on the simulated lab, offscreen (pytest-qt)."""

from __future__ import annotations

import re

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pyqtgraph")

from PySide6.QtCore import QSettings, Qt  # noqa: E402
from PySide6.QtWidgets import QDockWidget  # noqa: E402

from tests.simlab_helpers import calibrated_delays, ideal_fibres  # noqa: E402


def _cfg(c) -> None:
    ideal_fibres(c)
    calibrated_delays(c)
    c["instruments"]["bob_analyzer"]["timeout_s"] = 0.5


@pytest.fixture
def window(qtbot, make_lab, tmp_path):
    from qlab.gui.main_window import MainWindow

    lab = make_lab(_cfg, seed=5, realtime=True)
    lab["pump"].set_output(True)
    settings = QSettings(str(tmp_path / "gui.ini"), QSettings.IniFormat)
    w = MainWindow(lab, settings)
    qtbot.addWidget(w)
    w.resize(1200, 800)
    w.show()
    yield w
    w.close()


def _hh(w) -> float:
    return w.latest.coincidence_rates["alice.H|bob.H"]


def test_rates_appear_and_laser_state_is_shown(window, qtbot) -> None:
    qtbot.waitUntil(lambda: window.latest is not None and window.latest.rates["alice.H"] > 1000, timeout=10_000)
    qtbot.waitUntil(lambda: "pump ON" in window.laser_label.text(), timeout=5000)
    qtbot.waitUntil(lambda: window.frames_drawn > 3, timeout=5000)
    assert window.latest.visibility["HV"] > 0.9


def test_moving_a_controller_changes_the_coincidence_rate(window, qtbot) -> None:
    qtbot.waitUntil(lambda: window.latest is not None and window.latest.exposure_s > 0.9, timeout=10_000)
    before = _hh(window)
    assert before > 1000
    window.panels["bob_analyzer"].targets["hwp"].setValue(45.0)  # analyzer turned by 90°: H↔V
    window.findChild(type(window.run_btn), "bob_analyzer_hwp_move").click()
    qtbot.waitUntil(lambda: _hh(window) < 0.2 * before, timeout=10_000)


def test_run_chsh_from_the_gui(window, qtbot) -> None:
    window.proc_combo.setCurrentText("chsh")
    window.param_edits["integration_s"].setText("0.2")
    window.param_edits["measure_visibility"].setText("false")
    qtbot.mouseClick(window.run_btn, Qt.LeftButton)
    qtbot.waitUntil(lambda: "chsh finished" in window.results.toPlainText(), timeout=30_000)
    assert "S = 2." in window.results.toPlainText()
    assert window.run_btn.isEnabled() and not window.abort_btn.isEnabled()
    qtbot.waitUntil(lambda: window.acq.frames > 0 and not window.acq._pause.is_set(), timeout=5000)


def test_abort_a_run(window, qtbot) -> None:
    window.proc_combo.setCurrentText("chsh")
    window.param_edits["integration_s"].setText("5")
    qtbot.mouseClick(window.run_btn, Qt.LeftButton)
    qtbot.waitUntil(lambda: window.progress.value() > 0, timeout=10_000)
    qtbot.mouseClick(window.abort_btn, Qt.LeftButton)
    qtbot.waitUntil(lambda: "stopped" in window.results.toPlainText(), timeout=15_000)
    assert "Aborted" in window.results.toPlainText()
    assert not window.lab.sim.lasers["pump"]["on"]  # the finally-path switched the light off


def test_instrument_fault_reaches_the_log_and_lasers_go_off(window, qtbot) -> None:
    dev = window.lab.sim.device_sims["bob_analyzer"]
    dev.handle = lambda: dev.inbuf.clear()  # the controller stops answering
    window.findChild(type(window.run_btn), "bob_analyzer_hwp_move").click()
    # A move waits up to the mount's 10 s move-reply timeout before the silence counts as a fault.
    qtbot.waitUntil(lambda: "FAULT" in window.log.toPlainText(), timeout=25_000)
    assert "bob_analyzer" in window.log.toPlainText() and "lasers switched off" in window.log.toPlainText()
    assert not window.lab.sim.lasers["pump"]["on"]
    qtbot.waitUntil(lambda: "pump off" in window.laser_label.text(), timeout=5000)
    assert "FAULT" in window.conn_label.text()


def test_layout_and_settings_restored(qtbot, make_lab, tmp_path) -> None:
    from qlab.gui.main_window import MainWindow

    settings = QSettings(str(tmp_path / "gui.ini"), QSettings.IniFormat)
    lab = make_lab(_cfg, seed=6, realtime=True)
    w = MainWindow(lab, settings)
    qtbot.addWidget(w)
    w.show()
    w.findChild(QDockWidget, "dock_log").hide()  # a layout change the user made
    w.mode_combo.setCurrentText("accumulate")
    w.proc_combo.setCurrentText("tomography")
    w.param_edits["integration_s"].setText("0.7")
    w.close()
    lab2 = make_lab(_cfg, seed=7, realtime=True)
    w2 = MainWindow(lab2, QSettings(str(tmp_path / "gui.ini"), QSettings.IniFormat))
    qtbot.addWidget(w2)
    w2.show()
    assert not w2.findChild(QDockWidget, "dock_log").isVisible()
    assert w2.findChild(QDockWidget, "dock_procedures").isVisible()
    assert w2.mode_combo.currentText() == "accumulate"
    assert w2.proc_combo.currentText() == "tomography"
    assert w2.param_edits["integration_s"].text() == "0.7"
    w2.close()


def test_coincidence_counter_gets_its_own_panel(qtbot, make_lab, tmp_path) -> None:
    """A lab with a Tausand Abacus: the GUI shows its counts, read on the poller thread."""
    from qlab.gui.main_window import MainWindow

    from tests.test_abacus import _abacus_lab

    lab = make_lab(_abacus_lab, seed=6, realtime=True)
    lab["pump"].set_output(True)
    w = MainWindow(lab, QSettings(str(tmp_path / "gui.ini"), QSettings.IniFormat))
    qtbot.addWidget(w)
    w.show()
    panel = w.panels["counter"]
    assert type(panel).__name__ == "CounterPanel"
    def singles_a() -> int:
        m = re.search(r"(?:^|\s)A (\d+)", panel.counts.text())
        return int(m.group(1)) if m else 0

    qtbot.waitUntil(lambda: singles_a() > 100, timeout=10_000)  # live counts from the simulated clicks
    assert "AC " in panel.counts.text()
    assert panel.settings_loaded and panel.editors["coincidence_window"].value() == 5000  # from the device
    w.close()


def test_panels_load_settings_off_the_gui_thread(window, qtbot) -> None:
    """Editors start disabled and are filled from the instrument by the poller, without echoing set_* calls."""
    panel = window.panels["tagger"]
    sent = []
    original = panel.submit
    panel.submit = lambda method, *a, **k: (sent.append(method), original(method, *a, **k))
    qtbot.waitUntil(lambda: panel.settings_loaded, timeout=10_000)
    editor = panel.editors["delay:2"]
    assert editor.isEnabled() and editor.value() == 18_900 - 1_200  # calibrated_delays: latest - cable
    assert sent == []
    editor.setValue(17_000)  # a user edit goes to the instrument through its worker
    qtbot.waitUntil(lambda: window.lab["tagger"].call("delay", 2) == 17_000, timeout=5000)


def test_redraws_without_new_data_are_not_counted_as_data_updates(window, qtbot) -> None:
    qtbot.waitUntil(lambda: window.data_updates_drawn > 2, timeout=10_000)
    assert window.latest.new_tags > 0 and window.latest.seq >= window.data_updates_drawn
    window.acq.pause()  # no new frames from here on
    qtbot.wait(200)  # frames already queued to the GUI thread land
    window._draw()
    updates, redraws = window.data_updates_drawn, window.frames_drawn
    qtbot.waitUntil(lambda: window.frames_drawn > redraws + 3, timeout=5000)
    assert window.data_updates_drawn == updates  # the timer redrew the same frame
    window.acq.resume()
    qtbot.waitUntil(lambda: window.data_updates_drawn > updates, timeout=10_000)


def test_a_slow_settings_snapshot_does_not_hold_the_lock_the_window_needs(qapp, make_lab, tmp_path,
                                                                          monkeypatch) -> None:
    import threading

    from qlab.gui.workers import AcquisitionWorker, Bridge

    lab = make_lab(_cfg, seed=5)
    acq = AcquisitionWorker(lab, Bridge())
    release = threading.Event()
    handle = lab["pump"]
    original = handle.call

    def slow_call(method, *a, **k):
        if method == "snapshot":
            release.wait(10)  # an instrument taking its time to answer
        return original(method, *a, **k)

    monkeypatch.setattr(handle, "call", slow_call)
    rec = threading.Thread(target=acq.start_recording, args=(tmp_path / "live.h5",))
    rec.start()
    try:
        cmd = threading.Thread(target=acq.command, args=(lambda analyzer: None,))  # what a GUI click does
        cmd.start()
        cmd.join(5)
        assert not cmd.is_alive()  # returned while the snapshot was still waiting
        assert rec.is_alive() and acq._runfile is None
    finally:
        release.set()
        rec.join(10)
    assert acq._runfile is not None
    acq.stop_recording()
    assert (tmp_path / "live.h5").exists()
