"""The qlab main window: live plots, instrument panels, procedures, log, laser status always visible."""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QSettings, Qt, QTimer
from PySide6.QtWidgets import (
    QComboBox,
    QDockWidget,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMainWindow,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QToolBar,
    QVBoxLayout,
    QWidget,
)
from qlab.gui.live import LiveFrame
from qlab.gui.panels import InstrumentPanel, PanelStack, make_panel
from qlab.gui.workers import AcquisitionWorker, Bridge, ProcedureRunner

from qlab.lab import Lab
from qlab.procedures import PROCEDURES
from qlab.procedures.engine import RunEngine

COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
HISTORY_S = 60.0


class MainWindow(QMainWindow):
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
        self.frames_drawn = 0
        self._history: deque[tuple[float, dict[str, float]]] = deque()
        self._build_plots()
        self._build_docks()
        self._build_toolbar()
        self._build_status()
        self._connect()
        self._restore()
        self._stop_poll = threading.Event()
        self._poller = threading.Thread(target=self._poll_instruments, name="qlab-poller", daemon=True)
        self.draw_timer = QTimer(self)
        self.draw_timer.timeout.connect(self._draw)
        self.draw_timer.start(40)  # 25 frames/s at most; drawing only, never I/O
        self.acq.start()
        self._poller.start()
        lab.fault_listeners.append(lambda ev: self.bridge.fault.emit(ev))

    # -- construction --------------------------------------------------------------------------------------
    def _build_plots(self) -> None:
        central = QWidget()
        grid = QGridLayout(central)
        self.rates_plot = pg.PlotWidget(title="count rate per detector (Hz)")
        self.rates_plot.addLegend(offset=(5, 5))
        self.rates_plot.setLabel("bottom", "time", "s")
        roles = sorted(self.acq.analyzer.roles)
        self.rate_curves = {r: self.rates_plot.plot(pen=pg.mkPen(COLORS[i % 8], width=2), name=r)
                            for i, r in enumerate(roles)}
        self.coinc_plot = pg.PlotWidget(title="coincidences (Hz)")  # red bars: accidentals
        self.coinc_bars = pg.BarGraphItem(x=[], height=[], width=0.7, brush="#1f77b4")
        self.acc_bars = pg.BarGraphItem(x=[], height=[], width=0.35, brush="#d62728")
        n_pairs = sum(r.startswith("alice") for r in roles) * sum(r.startswith("bob") for r in roles)
        self.coinc_plot.setMouseEnabled(x=False, y=True)
        self.coinc_plot.setXRange(-0.6, n_pairs - 0.4, padding=0)
        self.coinc_plot.addItem(self.coinc_bars)
        self.coinc_plot.addItem(self.acc_bars)
        self.hist_plot = pg.PlotWidget(title="time-difference histogram")
        self.hist_plot.setLabel("bottom", "Δt", "ps")
        self.hist_curve = self.hist_plot.plot(stepMode="center", fillLevel=0, brush=(31, 119, 180, 90))
        grid.addWidget(self.rates_plot, 0, 0, 1, 2)
        grid.setColumnStretch(0, 1)
        grid.setColumnStretch(1, 1)
        for w in (self.coinc_plot, self.hist_plot):
            w.setMinimumWidth(200)
        grid.addWidget(self.coinc_plot, 1, 0)
        grid.addWidget(self.hist_plot, 1, 1)
        stats = QWidget()
        sl = QHBoxLayout(stats)
        self.bell_box = QGroupBox("CHSH / visibility (current analyzer settings)")
        bf = QFormLayout(self.bell_box)
        self.s_label, self.vis_label = QLabel("—"), QLabel("—")
        self.s_label.setObjectName("chsh_S")
        bf.addRow("S", self.s_label)
        bf.addRow("visibility", self.vis_label)
        self.qkd_box = QGroupBox("QKD (BBM92, live estimate)")
        qf = QFormLayout(self.qkd_box)
        self.sifted_label, self.qber_label, self.skr_label = QLabel("—"), QLabel("—"), QLabel("—")
        self.abort_label = QLabel("—")
        qf.addRow("sifted rate", self.sifted_label)
        qf.addRow("QBER Z / X", self.qber_label)
        qf.addRow("secret key rate", self.skr_label)
        qf.addRow("state", self.abort_label)
        sl.addWidget(self.bell_box)
        sl.addWidget(self.qkd_box)
        grid.addWidget(stats, 2, 0, 1, 2)
        self.setCentralWidget(central)

    def _build_docks(self) -> None:
        roles_by_input: dict[str, dict[int, str]] = {}
        for role, (tg, ch) in self.lab.roles().items():
            roles_by_input.setdefault(tg, {})[ch] = role
        self.panels: dict[str, InstrumentPanel] = {}
        for name, h in self.lab.handles.items():
            self.panels[name] = make_panel(h, self.bridge, roles_by_input.get(name, {}))
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(PanelStack(list(self.panels.values())))
        self._dock("Instruments", scroll, Qt.LeftDockWidgetArea)

        proc = QWidget()
        pl = QVBoxLayout(proc)
        self.proc_combo = QComboBox()
        self.proc_combo.setObjectName("procedure_combo")
        self.proc_combo.addItems(sorted(PROCEDURES))
        pl.addWidget(self.proc_combo)
        self.param_form = QFormLayout()
        pl.addLayout(self.param_form)
        self.param_edits: dict[str, QLineEdit] = {}
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
        pl.addWidget(self.progress)
        pl.addWidget(self.progress_label)
        self.results = QPlainTextEdit()
        self.results.setReadOnly(True)
        self.results.setObjectName("results")
        pl.addWidget(self.results)
        self._dock("Procedures", proc, Qt.RightDockWidgetArea)

        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setObjectName("log")
        self._dock("Log", self.log, Qt.BottomDockWidgetArea)

    def _dock(self, title: str, widget: QWidget, area) -> QDockWidget:
        d = QDockWidget(title, self)
        d.setObjectName(f"dock_{title.lower()}")
        d.setWidget(widget)
        self.addDockWidget(area, d)
        return d

    def _build_toolbar(self) -> None:
        tb = QToolBar("Live")
        tb.setObjectName("toolbar_live")
        self.addToolBar(tb)
        self.mode_combo = QComboBox()
        self.mode_combo.setObjectName("mode_combo")
        self.mode_combo.addItems(["realtime", "accumulate"])
        tb.addWidget(QLabel(" mode "))
        tb.addWidget(self.mode_combo)
        self.reset_btn = QPushButton("Reset")
        tb.addWidget(self.reset_btn)
        roles = sorted(self.acq.analyzer.roles)
        self.hist_a, self.hist_b = QComboBox(), QComboBox()
        self.hist_a.addItems(roles)
        self.hist_b.addItems(roles)
        self.hist_a.setCurrentText(self.acq.analyzer.hist_pair[0])
        self.hist_b.setCurrentText(self.acq.analyzer.hist_pair[1])
        tb.addWidget(QLabel(" histogram "))
        tb.addWidget(self.hist_a)
        tb.addWidget(self.hist_b)
        self.record_btn = QPushButton("Record")
        self.record_btn.setCheckable(True)
        self.record_btn.setObjectName("record_button")
        tb.addWidget(self.record_btn)

    def _build_status(self) -> None:
        self.laser_label = QLabel("laser: ?")
        self.laser_label.setObjectName("laser_status")
        self.conn_label = QLabel(f"{len(self.lab.handles)} instruments connected")
        self.rec_label = QLabel("")
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
        b.recording.connect(lambda p: self.rec_label.setText(f"● recording {p}" if p else ""))
        b.instrument_state.connect(self._on_state)
        self.proc_combo.currentTextChanged.connect(self._show_params)
        self.run_btn.clicked.connect(self.run_procedure)
        self.abort_btn.clicked.connect(self.runner.abort)
        self.mode_combo.currentTextChanged.connect(lambda m: self.acq.command(lambda a: a.set_mode(m)))
        self.reset_btn.clicked.connect(self.reset_live)
        self.hist_a.currentTextChanged.connect(self._hist_pair)
        self.hist_b.currentTextChanged.connect(self._hist_pair)
        self.record_btn.toggled.connect(self._toggle_record)

    # -- persistence -----------------------------------------------------------------------------------------
    def _restore(self) -> None:
        geo = self.settings.value("geometry")
        if geo is not None:
            self.restoreGeometry(geo)
        state = self.settings.value("state")
        if state is not None:
            self.restoreState(state)
        self.mode_combo.setCurrentText(str(self.settings.value("mode", "realtime")))
        self.proc_combo.setCurrentText(str(self.settings.value("procedure", "chsh")))
        self._show_params(self.proc_combo.currentText())

    def save_settings(self) -> None:
        self.settings.setValue("geometry", self.saveGeometry())
        self.settings.setValue("state", self.saveState())
        self.settings.setValue("mode", self.mode_combo.currentText())
        self.settings.setValue("procedure", self.proc_combo.currentText())
        for k, e in self.param_edits.items():
            self.settings.setValue(f"params/{self.proc_combo.currentText()}/{k}", e.text())
        self.settings.sync()

    # -- actions ---------------------------------------------------------------------------------------------
    def _show_params(self, name: str) -> None:
        while self.param_form.rowCount():
            self.param_form.removeRow(0)
        self.param_edits = {}
        for k, p in PROCEDURES[name].params.items():
            e = QLineEdit(str(self.settings.value(f"params/{name}/{k}", p.default)))
            e.setObjectName(f"param_{k}")
            e.setToolTip(p.help)
            self.param_edits[k] = e
            self.param_form.addRow(f"{k} ({p.unit})" if p.unit else k, e)

    def run_procedure(self) -> None:
        name = self.proc_combo.currentText()
        params = {k: e.text() for k, e in self.param_edits.items()}
        try:
            self.runner.start(name, params)
        except Exception as exc:  # noqa: BLE001 - shown to the user
            self.log_message("error", f"{name}: {exc}")
            return
        self.run_btn.setEnabled(False)
        self.abort_btn.setEnabled(True)
        self.progress.setValue(0)
        self.results.setPlainText(f"{name} running ...")

    def reset_live(self) -> None:
        self._history.clear()
        self.acq.command(lambda a: a.reset())

    def _hist_pair(self) -> None:
        a, b = self.hist_a.currentText(), self.hist_b.currentText()
        if a and b and a != b:
            self.acq.command(lambda an: an.set_hist_pair(a, b))

    def _toggle_record(self, on: bool) -> None:
        if on:
            path = RunEngine(self.lab).new_run_path("live")
            threading.Thread(target=self.acq.start_recording, args=(path,), daemon=True).start()
        else:
            threading.Thread(target=self.acq.stop_recording, daemon=True).start()

    def log_message(self, level: str, text: str) -> None:
        self.log.appendPlainText(f"{time.strftime('%H:%M:%S')} {level.upper():7s} {text}")

    # -- signal handlers (GUI thread) ------------------------------------------------------------------------
    def _on_frame(self, frame: LiveFrame) -> None:
        self.latest = frame
        t = time.monotonic()
        self._history.append((t, frame.rates))
        while self._history and t - self._history[0][0] > HISTORY_S:
            self._history.popleft()

    def _draw(self) -> None:
        f = self.latest
        if f is None:
            return
        if self._history:
            t0 = self._history[-1][0]
            ts = np.array([t - t0 for t, _ in self._history])
            for role, curve in self.rate_curves.items():
                curve.setData(ts, np.array([r.get(role, np.nan) for _, r in self._history]))
        keys = list(f.coincidence_rates)
        x = np.arange(len(keys))
        self.coinc_bars.setOpts(x=x, height=np.nan_to_num([f.coincidence_rates[k] for k in keys]))
        self.acc_bars.setOpts(x=x + 0.2, height=np.nan_to_num([f.accidental_rates[k] for k in keys]))
        ax = self.coinc_plot.getAxis("bottom")
        ax.setTicks([[(i, k.replace("alice.", "").replace("|bob.", "")) for i, k in enumerate(keys)]])
        edges = np.append(f.hist_centers_ps - 50, f.hist_centers_ps[-1] + 50)
        self.hist_curve.setData(edges, f.hist_counts)
        self.hist_plot.setTitle(f"Δt {f.hist_pair[1]} − {f.hist_pair[0]}")
        if f.chsh is not None:
            self.s_label.setText(f"{f.chsh['S']:.3f} ± {f.chsh['S_err']:.3f}")
        v = f.visibility
        self.vis_label.setText("  ".join(f"{b} {v[b]:.3f} ± {v[b + '_err']:.3f}" for b in ("HV", "DA") if b in v))
        q = f.qkd
        if q:
            self.sifted_label.setText(f"Z {q['sifted_rate_Z']:.0f} /s, X {q['sifted_rate_X']:.0f} /s")
            fmt = lambda x: "—" if x is None else f"{100 * x:.2f} %"  # noqa: E731
            self.qber_label.setText(f"{fmt(q['qber_Z'])} / {fmt(q['qber_X'])}")
            self.skr_label.setText(f"{q['secret_key_rate_bps']:.0f} bit/s (asymptotic)")
            self.abort_label.setText("ABORT: QBER above 11 %" if q["aborted"] else "key possible")
        self.frames_drawn += 1

    def _on_progress(self, fraction: float, message: str) -> None:
        self.progress.setValue(int(1000 * fraction))
        self.progress_label.setText(message)

    def _on_finished(self, name: str, results: Any) -> None:
        self.run_btn.setEnabled(True)
        self.abort_btn.setEnabled(False)
        summary = PROCEDURES[name]().summary(results)
        self.results.setPlainText(f"{name} finished\n{summary}\nrun file: {results.get('run_file')}")

    def _on_failed(self, name: str, text: str) -> None:
        self.run_btn.setEnabled(True)
        self.abort_btn.setEnabled(False)
        self.results.setPlainText(f"{name} stopped: {text}")
        self.log_message("error", f"{name} stopped: {text} (lasers switched off)")

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
            lasers = {**self._laser_cache, name: state["output"]}
            text = ", ".join(f"{n} {'ON' if on else 'off'}" for n, on in lasers.items())
            self.laser_label.setText(f"laser: {text}" + (f" — INTERLOCK {', '.join(trips)}" if trips else ""))
            self.laser_label.setStyleSheet("color: #c00; font-weight: bold" if state["output"] or trips else "")
            self._laser_cache[name] = state["output"]

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

    def shutdown(self) -> None:
        self.save_settings()
        self.draw_timer.stop()
        self._stop_poll.set()
        for panel in self.panels.values():
            panel.detach()
        self.runner.abort()
        self.acq.stop()
        self._poller.join(5)

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt API
        self.shutdown()
        super().closeEvent(event)
