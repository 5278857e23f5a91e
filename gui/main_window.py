"""The qlab main window: live plots, instrument panels, procedures, log, laser status always visible."""

from __future__ import annotations

import json
import math
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QSettings, QSize, Qt, QTimer
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QApplication,
    QCheckBox,
    QComboBox,
    QDockWidget,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QMessageBox,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QToolBar,
    QVBoxLayout,
    QWidget,
)
from qlab.gui.live import LiveFrame
from qlab.gui.panels import FitWidthScrollArea, InstrumentPanel, PanelStack, make_panel
from qlab.gui.params import check_values, make_editor, mark
from qlab.gui.runs import RunBrowser
from qlab.gui.workers import AcquisitionWorker, Bridge, ProcedureRunner

from qlab.lab import Lab
from qlab.procedures import PROCEDURES
from qlab.procedures.engine import RunEngine

COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
HISTORY_S = 60.0
RATES_TITLE = "singles (Hz)"
CLOSE_ABORT_TIMEOUT_S = 10.0  # closing: wait this long for an aborted procedure's finally-path, then go anyway
HELP_TEXT = """<b>qlab</b> — live view of the lab's detectors and procedures.<br><br>
<b>First steps</b>: switch the pump on (Instruments), run <i>delays</i> (Procedures) so coincidences fall
inside the window, then <i>polarization</i>, then <i>chsh</i> or <i>qkd</i>.<br><br>
<b>Shortcuts</b>: Ctrl+R run, Ctrl+. abort, Ctrl+S export live data, Ctrl+Q quit.<br>
Closed panes come back from the <i>View</i> menu. Spin boxes change an instrument only after a click into
them (the mouse wheel over an unfocused box scrolls the pane)."""


def _short_pair(key: str) -> str:
    """``alice.H|bob.V`` -> ``HV`` (Alice's port, then Bob's): 16 labels that fit under narrow bars."""
    a, b = key.split("|")
    return a.split(".")[-1] + b.split(".")[-1]


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


class _LogView(QPlainTextEdit):
    """The log pane: a strip under the plots by default (QPlainTextEdit's own size hint takes a third)."""

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt API
        return QSize(600, 90)


class MainWindow(QMainWindow):
    """The main window. ``confirm_close`` (no arguments -> bool) is asked before closing during a run; tests
    replace it to answer automatically."""

    def __init__(self, lab: Lab, settings: QSettings | None = None, poll_s: float = 0.05):
        super().__init__()
        self.lab = lab
        self.settings = settings or QSettings("qlab", "qlab")
        self.setWindowTitle(f"qlab — {lab.config.lab.name}")
        self.setObjectName("qlab_main")
        self.bridge = Bridge()
        self.acq = AcquisitionWorker(lab, self.bridge, poll_s)
        self.runner = ProcedureRunner(lab, self.bridge, self.acq)
        self.latest: LiveFrame | None = None
        self._laser_cache: dict[str, bool] = {}
        self.frames_drawn = 0  # redraws (timer-driven, with or without new data)
        self.data_updates_drawn = 0  # redraws that showed a frame with tags not shown before
        self._drawn_seq = 0
        self.live_paused_by: str | None = None  # procedure using the tagger while the live view waits
        self._history: deque[tuple[float, dict[str, float]]] = deque()
        self._progress_floor = 0
        self._closing = False
        self._shut_down = False
        self._shown_once = False
        self.confirm_close = self._ask_close
        self.docks: dict[str, QDockWidget] = {}
        self._build_plots()
        self._build_docks()
        self._build_toolbar()
        self._build_menus()
        self._build_status()
        self._connect()
        self.restored_geometry = False
        self._restore()
        self._stop_poll = threading.Event()
        self._poller = threading.Thread(target=self._poll_instruments, name="qlab-poller", daemon=True)
        self.draw_timer = QTimer(self)
        self.draw_timer.timeout.connect(self._draw)
        self.draw_timer.start(40)  # 25 frames/s at most; drawing only, never I/O
        self.acq.start()
        self._poller.start()
        lab.fault_listeners.append(lambda ev: self.bridge.fault.emit(ev))
        self.runs.refresh()
        threading.Thread(target=self._check_calibration, name="qlab-calcheck", daemon=True).start()

    # -- construction --------------------------------------------------------------------------------------
    def _build_plots(self) -> None:
        central = QWidget()
        grid = QGridLayout(central)
        self.rates_plot = pg.PlotWidget()  # titles only when paused: narrow windows clip them
        self.rates_plot.setLabel("left", RATES_TITLE)
        self.rates_plot.setLabel("bottom", "time", "s")
        self.rates_plot.setLimits(yMin=0)
        roles = sorted(self.acq.analyzer.roles)
        self.rate_curves = {r: self.rates_plot.plot(pen=pg.mkPen(COLORS[i % 8], width=2), name=r)
                            for i, r in enumerate(roles)}
        # Numeric counters beside the plot; they are the legend too (a legend inside the plot hid curves).
        self.counters_box = QGroupBox("rates (Hz)")
        self.counters_box.setObjectName("counters")
        cf = QGridLayout(self.counters_box)
        cf.setVerticalSpacing(2)
        self.counter_labels: dict[str, QLabel] = {}
        for i, r in enumerate(roles):
            name = QLabel(f"<span style='color:{COLORS[i % 8]}'>■</span> {r}")
            value = QLabel("—")
            value.setAlignment(Qt.AlignRight | Qt.AlignVCenter)
            value.setMinimumWidth(64)
            value.setObjectName(f"counter_{r}")
            cf.addWidget(name, i, 0)
            cf.addWidget(value, i, 1)
            self.counter_labels[r] = value
        self.coinc_total_label = QLabel("—")
        self.coinc_total_label.setObjectName("counter_coincidences")
        cf.addWidget(QLabel("coinc."), len(roles), 0)
        cf.addWidget(self.coinc_total_label, len(roles), 1)
        self.elapsed_label = QLabel("")
        self.elapsed_label.setObjectName("elapsed")
        cf.addWidget(self.elapsed_label, len(roles) + 1, 0, 1, 2)
        cf.setRowStretch(len(roles) + 2, 1)
        self.counters_box.setSizePolicy(QSizePolicy.Fixed, QSizePolicy.Minimum)
        self.coinc_plot = pg.PlotWidget()
        self.coinc_plot.setLabel("left", "coincidences (Hz)")
        self.coinc_plot.setToolTip("blue: coincidences, red: accidentals (Hz)")
        self.coinc_bars = pg.BarGraphItem(x=[], height=[], width=0.7, brush="#1f77b4")
        self.acc_bars = pg.BarGraphItem(x=[], height=[], width=0.35, brush="#d62728")
        n_pairs = sum(r.startswith("alice") for r in roles) * sum(r.startswith("bob") for r in roles)
        self.coinc_plot.setMouseEnabled(x=False, y=True)
        self.coinc_plot.setXRange(-0.6, n_pairs - 0.4, padding=0)
        self.coinc_plot.setLimits(yMin=0)
        self.coinc_plot.addItem(self.coinc_bars)
        self.coinc_plot.addItem(self.acc_bars)
        self.hist_plot = pg.PlotWidget()
        self.hist_plot.setLabel("bottom", "Δt", "ps")
        self.hist_plot.getAxis("bottom").enableAutoSIPrefix(False)  # ps stay ps (not "kps")
        self.hist_plot.setLabel("left", "counts")
        self.hist_plot.setLimits(yMin=0)
        self.hist_curve = self.hist_plot.plot(stepMode="center", fillLevel=0, brush=(31, 119, 180, 90))
        grid.addWidget(self.rates_plot, 0, 0, 1, 2)
        grid.addWidget(self.counters_box, 0, 2)
        grid.setColumnStretch(0, 1)
        grid.setColumnStretch(1, 1)
        for w in (self.coinc_plot, self.hist_plot):
            w.setMinimumWidth(200)
        grid.addWidget(self.coinc_plot, 1, 0)
        grid.addWidget(self.hist_plot, 1, 1, 1, 2)
        stats = QWidget()
        sl = QHBoxLayout(stats)
        sl.setContentsMargins(0, 0, 0, 0)
        # With H/V and D/A detectors at fixed analyzers this is S for a = H/V, a' = D/A and Bob's analyzer
        # wherever it stands: ≤ 2 by construction unless Bob's analyzer is at 22.5° — not a Bell test.
        self.bell_box = QGroupBox("S, fixed analyzers")
        self.bell_box.setToolTip("S from the four detector pairs at the analyzers' current angles; the chsh "
                                 "procedure turns the analyzers to the CHSH angles for a Bell test")
        bf = QFormLayout(self.bell_box)
        self.s_label, self.vis_label, self.vis_da_label = QLabel("—"), QLabel("—"), QLabel("—")
        self.s_label.setObjectName("chsh_S")
        self.vis_label.setObjectName("visibility")
        bf.addRow("S", self.s_label)
        bf.addRow("V (H/V)", self.vis_label)
        bf.addRow("V (D/A)", self.vis_da_label)
        self.qkd_box = QGroupBox("QKD (BBM92, asymptotic)")
        qf = QFormLayout(self.qkd_box)
        self.sifted_label, self.qber_label, self.skr_label = QLabel("—"), QLabel("—"), QLabel("—")
        self.abort_label = QLabel("—")
        self.abort_label.setObjectName("qkd_state")
        qf.addRow("sifted Z/X", self.sifted_label)
        qf.addRow("QBER Z/X", self.qber_label)
        qf.addRow("key rate", self.skr_label)
        qf.addRow("state", self.abort_label)
        sl.addWidget(self.bell_box)
        sl.addWidget(self.qkd_box)
        grid.addWidget(stats, 2, 0, 1, 3)
        grid.setRowStretch(0, 3)
        grid.setRowStretch(1, 3)
        central.setMinimumSize(380, 330)
        self.setCentralWidget(central)

    def _build_docks(self) -> None:
        roles_by_input: dict[str, dict[int, str]] = {}
        for role, (tg, ch) in self.lab.roles().items():
            roles_by_input.setdefault(tg, {})[ch] = role
        self.panels: dict[str, InstrumentPanel] = {}
        for name, h in self.lab.handles.items():
            self.panels[name] = make_panel(h, self.bridge, roles_by_input.get(name, {}))
        scroll = FitWidthScrollArea(PanelStack(list(self.panels.values())))
        scroll.setObjectName("instrument_scroll")
        self.instrument_scroll = scroll
        self._dock("Instruments", scroll, Qt.LeftDockWidgetArea)

        proc = QWidget()
        pl = QVBoxLayout(proc)
        self.proc_combo = QComboBox()
        self.proc_combo.setObjectName("procedure_combo")
        self.proc_combo.addItems(sorted(PROCEDURES))
        pl.addWidget(self.proc_combo)
        self.proc_help = QLabel("")
        self.proc_help.setWordWrap(True)
        pl.addWidget(self.proc_help)
        self.param_form = QFormLayout()
        pl.addLayout(self.param_form)
        self.param_edits: dict[str, Any] = {}  # name -> editor with text()/setText() (qlab.gui.params)
        self.param_error = QLabel("")
        self.param_error.setObjectName("param_error")
        self.param_error.setWordWrap(True)
        self.param_error.setStyleSheet("color: #c00; font-weight: bold")
        self.param_error.hide()
        pl.addWidget(self.param_error)
        row = QHBoxLayout()
        self.run_btn, self.abort_btn = QPushButton("Run"), QPushButton("Abort")
        self.run_btn.setObjectName("run_button")
        self.abort_btn.setObjectName("abort_button")
        self.abort_btn.setEnabled(False)
        row.addWidget(self.run_btn)
        row.addWidget(self.abort_btn)
        pl.addLayout(row)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress_label = QLabel("")
        self.progress_label.setWordWrap(True)
        pl.addWidget(self.progress)
        pl.addWidget(self.progress_label)
        self.calib_hint = QLabel("")
        self.calib_hint.setObjectName("calibration_hint")
        self.calib_hint.setWordWrap(True)
        self.calib_hint.setStyleSheet("background: #fff4c2; padding: 4px")
        self.calib_hint.hide()
        pl.addWidget(self.calib_hint)
        self.results = QPlainTextEdit()
        self.results.setReadOnly(True)
        self.results.setObjectName("results")
        pl.addWidget(self.results, 1)
        proc.setMinimumWidth(240)
        self._dock("Procedures", proc, Qt.RightDockWidgetArea)

        self.log = _LogView()
        self.log.setReadOnly(True)
        self.log.setObjectName("log")
        log_dock = self._dock("Log", self.log, Qt.BottomDockWidgetArea)
        # Side docks take the full height; the log sits under the plots only.
        self.setCorner(Qt.BottomLeftCorner, Qt.LeftDockWidgetArea)
        self.setCorner(Qt.BottomRightCorner, Qt.RightDockWidgetArea)
        self.runs = RunBrowser(self.lab.data_dir / "runs")
        runs_dock = self._dock("Runs", self.runs, Qt.BottomDockWidgetArea)
        self.tabifyDockWidget(log_dock, runs_dock)
        log_dock.raise_()

    def _dock(self, title: str, widget: QWidget, area) -> QDockWidget:
        d = QDockWidget(title, self)
        d.setObjectName(f"dock_{title.lower()}")
        d.setWidget(widget)
        self.addDockWidget(area, d)
        self.docks[title] = d
        return d

    def _build_toolbar(self) -> None:
        tb = QToolBar("Live view")
        tb.setObjectName("toolbar_live")
        self.toolbar = tb
        self.addToolBar(tb)
        self.mode_combo = QComboBox()
        self.mode_combo.setObjectName("mode_combo")
        self.mode_combo.addItems(["realtime", "accumulate"])
        self.mode_combo.setToolTip("realtime: the last second; accumulate: everything since Reset (reset "
                                   "automatically when a laser is switched)")
        tb.addWidget(QLabel(" mode "))
        tb.addWidget(self.mode_combo)
        self.reset_btn = QPushButton("Reset")
        tb.addWidget(self.reset_btn)
        tb.addSeparator()
        an = self.acq.analyzer
        roles = sorted(an.roles)
        self.hist_a, self.hist_b = QComboBox(), QComboBox()
        self.hist_a.addItems(roles)
        self.hist_b.addItems(roles)
        self.hist_a.setCurrentText(an.hist_pair[0])
        self.hist_b.setCurrentText(an.hist_pair[1])
        tb.addWidget(QLabel(" Δt "))
        tb.addWidget(self.hist_a)
        tb.addWidget(self.hist_b)
        self.hist_bin = self._tool_spin("hist_bin_ps", 1, 100_000, an.hist_bin_ps, " ps bin", "histogram bin width")
        self.hist_range = self._tool_spin("hist_range_ps", 100, 10_000_000, an.hist_range_ps, " ps ±",
                                          "histogram range ± around zero")
        self.hist_log = QCheckBox("log")
        self.hist_log.setObjectName("hist_log")
        self.hist_log.setToolTip("logarithmic histogram counts")
        self.window_spin = self._tool_spin("window_ps", 1, 1_000_000, an.counter.window_ps, " ps window",
                                           "coincidence window of the live view (procedures use the lab's)")
        for w in (self.hist_bin, self.hist_range, self.hist_log, self.window_spin):
            tb.addWidget(w)
        tb.addSeparator()
        self.record_btn = QPushButton("● Record")
        self.record_btn.setCheckable(True)
        self.record_btn.setObjectName("record_button")
        self.record_btn.setToolTip("record the live tags to a run file (Ctrl+Shift+R)")
        tb.addWidget(self.record_btn)
        self.export_btn = QPushButton("Export…")
        self.export_btn.setObjectName("export_button")
        self.export_btn.setToolTip("save the live rates, coincidences and histogram as JSON (Ctrl+S)")
        tb.addWidget(self.export_btn)

    def _tool_spin(self, name: str, lo: int, hi: int, value: int, suffix: str, tip: str) -> QSpinBox:
        s = QSpinBox()
        s.setObjectName(name)
        s.setRange(lo, hi)
        s.setValue(int(value))
        s.setSuffix(suffix)
        s.setToolTip(tip)
        s.setKeyboardTracking(False)
        s.setFocusPolicy(Qt.StrongFocus)
        return s

    def _build_menus(self) -> None:
        mb = self.menuBar()
        file_menu = mb.addMenu("&File")
        self.export_action = self._action(file_menu, "&Export live data…", QKeySequence.Save, self.export_dialog)
        self.record_action = self._action(file_menu, "&Record live tags", "Ctrl+Shift+R",
                                          lambda: self.record_btn.toggle())
        file_menu.addSeparator()
        self._action(file_menu, "Show &runs", "Ctrl+B", lambda: self._show_dock("Runs", refresh=True))
        file_menu.addSeparator()
        self.quit_action = self._action(file_menu, "&Quit", QKeySequence.Quit, self.close)
        self.quit_action.setShortcut(QKeySequence("Ctrl+Q"))  # also where the platform has no Quit key
        run_menu = mb.addMenu("&Run")
        self._action(run_menu, "&Run procedure", "Ctrl+R", self.run_procedure)
        self._action(run_menu, "&Abort", "Ctrl+.", self.runner.abort)
        view = mb.addMenu("&View")
        for dock in self.docks.values():
            view.addAction(dock.toggleViewAction())
        view.addAction(self.toolbar.toggleViewAction())
        view.addSeparator()
        self._action(view, "Restore default &layout", None, self.default_layout)
        help_menu = mb.addMenu("&Help")
        self._action(help_menu, "&Getting started", QKeySequence.HelpContents,
                     lambda: QMessageBox.information(self, "qlab", HELP_TEXT))
        self._action(help_menu, "&About qlab", None,
                     lambda: QMessageBox.about(self, "About qlab", "qlab — quantum-networking lab control"))

    def _action(self, menu, text: str, shortcut, slot) -> QAction:
        a = QAction(text, self)
        if shortcut is not None:
            a.setShortcut(QKeySequence(shortcut))
        a.triggered.connect(lambda _=False: slot())
        menu.addAction(a)
        return a

    def _show_dock(self, title: str, refresh: bool = False) -> None:
        d = self.docks[title]
        d.show()
        d.raise_()
        if refresh and title == "Runs":
            self.runs.refresh()

    def default_layout(self) -> None:
        """Every pane back in its place and shown, with the docks at their preferred widths."""
        areas = {"Instruments": Qt.LeftDockWidgetArea, "Procedures": Qt.RightDockWidgetArea,
                 "Log": Qt.BottomDockWidgetArea, "Runs": Qt.BottomDockWidgetArea}
        for title, d in self.docks.items():
            d.setFloating(False)
            self.addDockWidget(areas[title], d)
            d.show()
        self.tabifyDockWidget(self.docks["Log"], self.docks["Runs"])
        self.docks["Log"].raise_()
        self.toolbar.show()
        self._fit_docks()

    def _fit_docks(self) -> None:
        """Give the side docks their preferred width again (a squeezed dock does not grow back by itself)."""
        side, widths = [], []
        for d in (self.docks["Instruments"], self.docks["Procedures"]):
            want = max(d.widget().minimumWidth(), min(d.widget().sizeHint().width(), 420))
            if d.isVisible() and not d.isFloating() and d.width() < want:
                side.append(d)
                widths.append(want)
        if side:
            self.resizeDocks(side, widths, Qt.Horizontal)
        log = self.docks["Log"]
        if log.isVisible() and not log.isFloating() and log.height() < 110:
            self.resizeDocks([log], [max(110, self.height() // 6)], Qt.Vertical)

    def _build_status(self) -> None:
        self.laser_label = QLabel("laser: ?")
        self.laser_label.setObjectName("laser_status")
        self.conn_label = QLabel(f"{len(self.lab.handles)} instruments connected")
        self.rec_label = QLabel("")
        self.rec_label.setObjectName("recording_status")
        for w in (self.laser_label, self.conn_label, self.rec_label):
            self.statusBar().addPermanentWidget(w)

    def _connect(self) -> None:
        b = self.bridge
        b.frame.connect(self._on_frame)
        b.message.connect(self.log_message)
        b.fault.connect(self._on_fault)
        b.progress.connect(self._on_progress)
        b.finished.connect(self._on_finished)
        b.failed.connect(self._on_failed)
        b.runner_done.connect(self._on_runner_done)
        b.live_paused.connect(self._on_live_paused)
        b.recording.connect(self._on_recording)
        b.instrument_state.connect(self._on_state)
        b.calibration.connect(self._on_calibration)
        self.proc_combo.currentTextChanged.connect(self._show_params)
        self.run_btn.clicked.connect(self.run_procedure)
        self.abort_btn.clicked.connect(self.runner.abort)
        self.mode_combo.currentTextChanged.connect(self._set_mode)
        self.reset_btn.clicked.connect(self.reset_live)
        self.hist_a.currentTextChanged.connect(self._hist_pair)
        self.hist_b.currentTextChanged.connect(self._hist_pair)
        self.hist_bin.valueChanged.connect(self._hist_binning)
        self.hist_range.valueChanged.connect(self._hist_binning)
        self.hist_log.toggled.connect(self._hist_log)
        self.window_spin.valueChanged.connect(self._coincidence_window)
        self.record_btn.toggled.connect(self._toggle_record)
        self.export_btn.clicked.connect(self.export_dialog)

    # -- persistence -----------------------------------------------------------------------------------------
    def _restore(self) -> None:
        geo = self.settings.value("geometry")
        if geo is not None:
            self.restored_geometry = bool(self.restoreGeometry(geo))
        state = self.settings.value("state")
        if state is not None:
            self.restoreState(state)
        self.mode_combo.setCurrentText(str(self.settings.value("mode", "realtime")))
        self.hist_log.setChecked(str(self.settings.value("hist_log", "false")).lower() == "true")
        self.proc_combo.setCurrentText(str(self.settings.value("procedure", "chsh")))
        self._show_params(self.proc_combo.currentText())

    def save_settings(self) -> None:
        self.settings.setValue("geometry", self.saveGeometry())
        self.settings.setValue("state", self.saveState())
        self.settings.setValue("mode", self.mode_combo.currentText())
        self.settings.setValue("hist_log", "true" if self.hist_log.isChecked() else "false")
        self.settings.setValue("procedure", self.proc_combo.currentText())
        for k, e in self.param_edits.items():
            self.settings.setValue(f"params/{self.proc_combo.currentText()}/{k}", e.text())
        self.settings.sync()

    # -- actions ---------------------------------------------------------------------------------------------
    def _show_params(self, name: str) -> None:
        while self.param_form.rowCount():
            self.param_form.removeRow(0)
        self.param_edits = {}
        self._show_param_error({})
        proc = PROCEDURES[name]
        self.proc_help.setText(proc.title or "")
        for k, p in proc.params.items():
            value = str(self.settings.value(f"params/{name}/{k}", p.default))
            editor, field = make_editor(name, k, p, value)
            self.param_edits[k] = editor
            self.param_form.addRow(k, field)

    def _show_param_error(self, errors: dict[str, str]) -> None:
        for k, e in self.param_edits.items():
            mark(e, errors.get(k))
        if errors:
            self.param_error.setText("\n".join(errors.values()))
            self.param_error.show()
        else:
            self.param_error.clear()
            self.param_error.hide()

    def run_procedure(self) -> None:
        """Start the chosen procedure; a refused parameter is shown at its field and above the Run button."""
        name = self.proc_combo.currentText()
        if self.runner.busy:
            self._show_param_error({"": "a procedure is already running"})
            return
        params = {k: e.text() for k, e in self.param_edits.items()}
        errors = check_values(PROCEDURES[name].params, params)
        if not errors:
            try:
                self.runner.start(name, params)
            except Exception as exc:  # noqa: BLE001 - shown to the user
                errors = {"": f"{name}: {exc}"}
        self._show_param_error(errors)
        if errors:
            self.log_message("error", "; ".join(errors.values()))
            if self.docks["Procedures"].isHidden():
                self.docks["Procedures"].show()
            return
        self.run_btn.setEnabled(False)
        self.abort_btn.setEnabled(True)
        self._progress_floor = 0
        self.progress.setValue(0)
        self.progress_label.setText(f"{name}: starting …")
        self.results.setPlainText(f"{name} running ...")

    def reset_live(self) -> None:
        self._history.clear()
        self.acq.command(lambda a: a.reset())

    def _set_mode(self, mode: str) -> None:
        self.acq.command(lambda a: (a.set_mode(mode), a.reset()))
        self.elapsed_label.setText("")

    def _hist_pair(self) -> None:
        a, b = self.hist_a.currentText(), self.hist_b.currentText()
        if a and b and a != b:
            self.acq.command(lambda an: an.set_hist_pair(a, b))

    def _hist_binning(self) -> None:
        bin_ps, range_ps = self.hist_bin.value(), self.hist_range.value()
        self.acq.command(lambda an: an.set_hist_binning(bin_ps, range_ps))

    def _hist_log(self, on: bool) -> None:
        self.hist_plot.setLimits(yMin=-1e300 if on else 0)  # log mode: the limit is in decades
        self.hist_plot.setLogMode(y=on)

    def _coincidence_window(self, window_ps: int) -> None:
        self.acq.command(lambda an: an.set_window(window_ps))

    def _toggle_record(self, on: bool) -> None:
        if on:
            path = RunEngine(self.lab).new_run_path("live")
            threading.Thread(target=self.acq.start_recording, args=(path,), daemon=True).start()
        else:
            threading.Thread(target=self.acq.stop_recording, daemon=True).start()

    def export_dialog(self) -> None:
        if self.latest is None:
            self.log_message("warning", "export: no live data yet")
            return
        default = str(self.lab.data_dir / f"live-{time.strftime('%Y%m%d-%H%M%S')}.json")
        path, _ = QFileDialog.getSaveFileName(self, "Export live data", default, "JSON (*.json)")
        if path:
            self.export_live(Path(path))

    def export_live(self, path: Path) -> None:
        """Write the latest live frame (rates Hz, coincidences Hz, histogram) as JSON, on a background thread."""
        f = self.latest
        if f is None:
            return
        data = {"time": f.wall_time, "mode": f.mode, "exposure_s": f.exposure_s, "singles_hz": f.rates,
                "coincidences_hz": f.coincidence_rates, "accidentals_hz": f.accidental_rates,
                "histogram": {"pair": list(f.hist_pair), "centers_ps": f.hist_centers_ps.tolist(),
                              "counts": f.hist_counts.tolist()},
                "chsh_fixed_analyzers": f.chsh, "visibility": f.visibility, "qkd": f.qkd}

        def write() -> None:
            try:
                path.write_text(json.dumps(data, indent=1, default=float), encoding="utf-8")
                self.bridge.message.emit("info", f"live data exported to {path}")
            except OSError as exc:
                self.bridge.message.emit("error", f"export to {path} failed: {exc}")

        threading.Thread(target=write, name="qlab-export", daemon=True).start()

    def log_message(self, level: str, text: str) -> None:
        self.log.appendPlainText(f"{time.strftime('%H:%M:%S')} {level.upper():7s} {text}")
        if level in ("error", "fault"):
            self.statusBar().showMessage(text, 10_000)  # visible even with the Log pane closed

    # -- signal handlers (GUI thread) ------------------------------------------------------------------------
    def _on_frame(self, frame: LiveFrame) -> None:
        self.latest = frame
        t = time.monotonic()
        self._history.append((t, frame.rates))
        while self._history and t - self._history[0][0] > HISTORY_S:
            self._history.popleft()

    def _on_live_paused(self, name: str) -> None:
        """A procedure took the tagger (``name``) or gave it back (""): the rate plot shows a gap, not a line."""
        self.live_paused_by = name or None
        self._history.append((time.monotonic(), {}))  # a NaN point: the curves break here
        self.rates_plot.setTitle(f"live view paused: {name} is using the tagger" if name else None, size="9pt",
                                 color="#fc0")

    def _draw(self) -> None:
        now = time.monotonic()
        if self._history:
            ts = np.array([t - now for t, _ in self._history])
            for role, curve in self.rate_curves.items():
                curve.setData(ts, np.array([r.get(role, np.nan) for _, r in self._history]), connect="finite")
            self.rates_plot.setXRange(-HISTORY_S, 0, padding=0)
        f = self.latest
        if f is None:
            return
        paused = self.live_paused_by is not None
        for role, label in self.counter_labels.items():
            r = f.rates.get(role, math.nan)
            label.setText("paused" if paused else ("—" if math.isnan(r) else f"{r:,.0f}"))
        total_c = sum(f.coincidence_rates.values())
        total_a = sum(f.accidental_rates.values())
        self.coinc_total_label.setText("—" if math.isnan(total_c) else f"{total_c:,.0f}")
        self.elapsed_label.setText(f"accumulated {f.exposure_s:.1f} s" if f.mode == "accumulate"
                                   else f"last {f.exposure_s:.1f} s")
        keys = list(f.coincidence_rates)
        x = np.arange(len(keys))
        self.coinc_bars.setOpts(x=x, height=np.nan_to_num([f.coincidence_rates[k] for k in keys]))
        self.acc_bars.setOpts(x=x + 0.2, height=np.nan_to_num([f.accidental_rates[k] for k in keys]))
        self.coinc_plot.getAxis("bottom").setTicks(self._coinc_ticks(keys))
        if len(f.hist_centers_ps):
            half = (f.hist_centers_ps[1] - f.hist_centers_ps[0]) / 2 if len(f.hist_centers_ps) > 1 else 50
            edges = np.append(f.hist_centers_ps - half, f.hist_centers_ps[-1] + half)
            counts = np.maximum(f.hist_counts, 0.5) if self.hist_log.isChecked() else f.hist_counts
            self.hist_curve.setData(edges, counts)
        self.hist_plot.setLabel("bottom", f"Δt {f.hist_pair[1]}−{f.hist_pair[0]}", "ps")
        self._draw_stats(f, total_c, total_a)
        self.frames_drawn += 1
        if f.seq != self._drawn_seq:
            self._drawn_seq = f.seq
            self.data_updates_drawn += int(f.new_tags > 0)

    def _coinc_ticks(self, keys: list[str]) -> list[list[tuple[float, str]]]:
        """One label per bar ("HV": Alice H, Bob V) when there is room, else one per Alice port group."""
        if not keys:
            return [[]]
        px_per_bar = self.coinc_plot.getViewBox().width() / len(keys)
        if px_per_bar >= 22:
            self.coinc_plot.setLabel("bottom", "Alice·Bob port")
            return [[(i, _short_pair(k)) for i, k in enumerate(keys)]]
        groups: dict[str, list[int]] = {}
        for i, k in enumerate(keys):
            groups.setdefault(k.split("|")[0].split(".")[-1], []).append(i)
        bob = "".join(_short_pair(keys[i])[1:] for i in next(iter(groups.values())))
        self.coinc_plot.setLabel("bottom", "Alice port")
        self.coinc_plot.setToolTip(f"bars per Alice port: Bob {bob}; blue coincidences, red accidentals (Hz)")
        return [[(sum(ix) / len(ix), a) for a, ix in groups.items()]]

    def _draw_stats(self, f: LiveFrame, total_c: float, total_a: float) -> None:
        """S, visibility and QKD labels; '—' with the reason when there are no usable coincidences."""
        n_c = total_c * f.exposure_s if f.exposure_s > 0 else 0.0
        n_a = total_a * f.exposure_s if f.exposure_s > 0 else 0.0
        reason = None
        if not n_c > 0:
            reason = "no coincidences"
        elif n_c <= n_a + 3 * math.sqrt(max(n_a, 1.0)):
            reason = "coincidences ≈ accidentals (run delays?)"
        self.s_label.setToolTip(reason or "")
        if reason is not None or f.chsh is None:
            self.s_label.setText(f"— ({reason})" if reason else "—")
        else:
            self.s_label.setText(f"{f.chsh['S']:.3f} ± {f.chsh['S_err']:.3f}")
        v = f.visibility
        for b, label in (("HV", self.vis_label), ("DA", self.vis_da_label)):
            label.setText("—" if reason or b not in v else f"{v[b]:.3f} ± {v[b + '_err']:.3f}")
        q = f.qkd
        if not q:
            return
        self.sifted_label.setText(f"{q['sifted_rate_Z']:.0f} / {q['sifted_rate_X']:.0f} /s")
        fmt = lambda x: "—" if x is None else f"{100 * x:.2f}"  # noqa: E731
        self.qber_label.setText(f"{fmt(q['qber_Z'])} / {fmt(q['qber_X'])} %")
        if q["qber_Z"] is None or q["qber_X"] is None or reason is not None:
            self.skr_label.setText("—")
            self.abort_label.setText("no estimate")
            self.abort_label.setToolTip(reason or "no coincidences in a basis")
            self.abort_label.setStyleSheet("")
            return
        self.skr_label.setText(f"{q['secret_key_rate_bps']:.0f} bit/s")
        self.abort_label.setToolTip("")
        self.abort_label.setText("QBER > 11 %: no key" if q["aborted"] else "key possible")
        self.abort_label.setStyleSheet("color: #c00" if q["aborted"] else "color: #070")

    def _on_progress(self, fraction: float, message: str) -> None:
        # Procedures may restart a sub-scan; the bar never goes backwards within one run.
        self._progress_floor = max(self._progress_floor, int(1000 * fraction))
        self.progress.setValue(self._progress_floor)
        self.progress_label.setText(message)

    def _on_finished(self, name: str, results: Any) -> None:
        self.run_btn.setEnabled(True)
        self.abort_btn.setEnabled(False)
        summary = PROCEDURES[name]().summary(results)
        warnings = results.get("warnings") or []
        text = f"{name} finished\n{summary}\nrun file: {results.get('run_file')}"
        if warnings:
            text += "\n\nWARNING: " + "\nWARNING: ".join(warnings)
            for w in warnings:
                self.log_message("warning", f"{name}: {w}")
        self.results.setPlainText(text)
        self.progress_label.setText(f"{name} done")
        if name == "delays":
            self.calib_hint.hide()
        self.runs.refresh()

    def _on_failed(self, name: str, text: str) -> None:
        self.run_btn.setEnabled(True)
        self.abort_btn.setEnabled(False)
        self.results.setPlainText(f"{name} stopped: {text}")
        aborted = text.startswith("AbortedError")
        self.progress_label.setText(f"{name} aborted" if aborted else f"{name} failed")
        # An abort the user asked for is not an error.
        self.log_message("info" if aborted else "error", f"{name} stopped: {text} (lasers switched off)")
        self.runs.refresh()

    def _on_runner_done(self) -> None:
        if self._closing:
            self.close()

    def _on_recording(self, info: Any) -> None:
        if not info:
            self.rec_label.setText("")
            self.rec_label.setStyleSheet("")
            return
        if isinstance(info, str):
            info = {"path": info, "seconds": 0.0, "bytes": 0}
        self.rec_label.setText(f"● recording {Path(info['path']).name} — {info['seconds']:.0f} s, "
                               f"{_fmt_bytes(info['bytes'])}")
        self.rec_label.setStyleSheet("color: #c00")

    def _on_calibration(self, has_delays: bool) -> None:
        if has_delays:
            return
        tagger = self.acq.tagger
        delays = [c.value for e, c in self.lab[tagger].cache.values().items() if e.startswith("delay")]
        if any(delays):
            return  # delays come from the lab file
        self.calib_hint.setText("No delay calibration yet: with the default cable delays the coincidences sit "
                                "outside the window. Switch the pump on and run <b>delays</b> first.")
        self.calib_hint.setTextFormat(Qt.RichText)
        self.calib_hint.show()

    def _check_calibration(self) -> None:
        """Background thread: does a delay calibration record exist? (reads the calibration file)"""
        try:
            has = self.lab.calibrations.latest("delays") is not None
        except Exception:  # noqa: BLE001 - a damaged store is reported when a procedure uses it
            has = True
        time.sleep(1.0)  # let the first poll fill the tagger's settings cache
        self.bridge.calibration.emit(has)

    def _on_fault(self, ev: dict) -> None:
        self.log_message("fault", f"{ev['instrument']}: {ev['message']} — lasers switched off"
                         + (f" except {ev['unreachable_lasers']}" if ev["unreachable_lasers"] else ""))
        self.conn_label.setText(f"FAULT: {ev['instrument']}")
        self.conn_label.setStyleSheet("color: red; font-weight: bold")

    def _on_state(self, name: str, state: dict) -> None:
        if "_callback" in state:
            state["_callback"](state["value"])
            return
        if "_refresh" in state:
            return
        panel = self.panels.get(name)
        if panel is not None:
            panel.update_state(state)
        if "output" in state:
            trips = [k for k, v in state["protection"].items() if v]
            previous = self._laser_cache.get(name)
            lasers = {**self._laser_cache, name: state["output"]}
            text = ", ".join(f"{n} {'ON' if on else 'off'}" for n, on in lasers.items())
            self.laser_label.setText(f"laser: {text}" + (f" — INTERLOCK {', '.join(trips)}" if trips else ""))
            self.laser_label.setStyleSheet("color: #c00; font-weight: bold" if state["output"] or trips else "")
            self._laser_cache[name] = state["output"]
            if previous is not None and previous != state["output"] and self.mode_combo.currentText() == "accumulate":
                # Accumulating across a laser switch would mix light and dark periods.
                self.reset_live()
                self.log_message("info", f"accumulation reset: {name} switched {'on' if state['output'] else 'off'}")

    def _poll_instruments(self) -> None:
        """Poller thread: reads what the panels show, through the instruments' own workers."""
        while not self._stop_poll.is_set():
            for name, panel in self.panels.items():
                if self._stop_poll.is_set():
                    return
                if self.lab.handles[name].faulted is not None:
                    continue
                try:
                    # On its worker: reads the settings back into the cache (whose listeners update the
                    # panel) and returns the kind's extra state.
                    state = self.lab[name].call(lambda _inst, p=panel: p.poll(), timeout=5)
                except Exception:  # noqa: BLE001 - a failing instrument is reported by the fault path
                    continue
                if state:
                    self.bridge.instrument_state.emit(name, state)
            self._stop_poll.wait(0.5)

    # -- closing ---------------------------------------------------------------------------------------------
    def _ask_close(self) -> bool:
        if QApplication.platformName() in ("offscreen", "minimal"):
            return True  # nobody could answer a dialog here: abort and close
        answer = QMessageBox.question(
            self, "Procedure running",
            f"{self.runner.name or 'A procedure'} is running. Abort it (lasers off, run file kept as "
            "incomplete) and close?", QMessageBox.Yes | QMessageBox.No, QMessageBox.No)
        return answer == QMessageBox.Yes

    def shutdown(self) -> None:
        if self._shut_down:
            return
        self._shut_down = True
        self.save_settings()
        self.draw_timer.stop()
        self._stop_poll.set()
        for panel in self.panels.values():
            panel.detach()
        self.runner.abort()
        self.runner.join(CLOSE_ABORT_TIMEOUT_S)
        self.acq.stop()
        self._poller.join(5)

    def _force_close(self) -> None:
        if self._closing and self.runner.busy:
            self.log_message("error", "the procedure did not stop in time; closing anyway")
            self.runner.join(0)
            self._closing = False
            self._force = True
            self.close()

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt API
        if self.runner.busy and self.runner.ending:
            self.runner.join(2.0)  # it has only signals left to send: nothing to ask about
        if self.runner.busy and not getattr(self, "_force", False):
            event.ignore()
            if self._closing:
                return  # already aborting; the runner's end closes the window
            if not self.confirm_close():
                return
            self._closing = True
            self.log_message("info", "closing: aborting the running procedure first")
            self.runner.abort()
            # Light off now, on the lasers' own workers; the procedure notices the abort after its current
            # acquisition and then closes its run file.
            threading.Thread(target=self.lab.lasers_off, name="qlab-lasers-off", daemon=True).start()
            QTimer.singleShot(int(CLOSE_ABORT_TIMEOUT_S * 1000), self._force_close)
            return
        self.shutdown()
        super().closeEvent(event)

    def showEvent(self, event) -> None:  # noqa: N802 - Qt API
        super().showEvent(event)
        if not self._shown_once:
            self._shown_once = True
            if self.settings.value("state") is None:  # first start: a log strip, not half the window
                QTimer.singleShot(0, lambda: self.resizeDocks([self.docks["Log"]], [max(110, self.height() // 6)],
                                                              Qt.Vertical))

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt API
        super().resizeEvent(event)
        grew = event.oldSize().width() > 0 and event.size().width() > event.oldSize().width()
        if grew and self.isVisible():
            self._fit_docks()
