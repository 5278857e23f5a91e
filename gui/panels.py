"""Instrument control panels, built from each instrument's kind. Every action is submitted to the
instrument's worker (``handle.submit``), so the GUI thread never waits; errors go to the log pane."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtWidgets import (
    QCheckBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)
from qlab.gui.workers import Bridge

from qlab.instruments.handle import InstrumentHandle


def _spin(lo: float | None, hi: float | None, value: float, decimals: int, step: float, suffix: str) -> QDoubleSpinBox:
    s = QDoubleSpinBox()
    s.setDecimals(decimals)
    s.setRange(-1e9 if lo is None else lo, 1e9 if hi is None else hi)
    s.setSingleStep(step)
    s.setValue(value)
    s.setSuffix(f" {suffix}" if suffix else "")
    s.setKeyboardTracking(False)
    return s


class InstrumentPanel(QGroupBox):
    def __init__(self, handle: InstrumentHandle, bridge: Bridge):
        super().__init__(f"{handle.name} — {handle.instrument.model}")
        self.handle = handle
        self.bridge = bridge
        self.setObjectName(f"panel_{handle.name}")
        self.form = QFormLayout(self)
        self.status = QLabel("connected")
        self.form.addRow("status", self.status)

    def submit(self, method: str | Callable, *args: Any, done: Callable[[Any], None] | None = None) -> None:
        fut = self.handle.submit(method, *args)
        name = method if isinstance(method, str) else getattr(method, "__name__", "call")

        def finished(f) -> None:
            exc = f.exception()
            if exc is not None:
                self.bridge.message.emit("error", f"{self.handle.name}.{name}: {exc}")
            elif done is not None:
                self.bridge.instrument_state.emit(self.handle.name, {"_callback": done, "value": f.result()})
            self.bridge.instrument_state.emit(self.handle.name, {"_refresh": True})

        fut.add_done_callback(finished)

    def update_state(self, state: dict[str, Any]) -> None:  # noqa: B027 - kinds override
        pass

    def poll(self) -> dict[str, Any]:
        """Runs on the poller thread (through the handle): read what the panel shows."""
        return {}


class SettingsPanel(InstrumentPanel):
    """A panel whose editors start from the instrument's current settings. Those are read on the poller
    thread (the GUI thread never waits on an instrument); editors stay disabled until they arrive and are
    filled with their signals blocked, so loading them sends nothing back."""

    def __init__(self, handle: InstrumentHandle, bridge: Bridge):
        super().__init__(handle, bridge)
        self.editors: dict[str, QDoubleSpinBox] = {}
        self.settings_loaded = False

    def add_editor(self, key: str, editor: QDoubleSpinBox) -> QDoubleSpinBox:
        editor.setEnabled(False)
        self.editors[key] = editor
        return editor

    def read_settings(self) -> dict[str, float]:
        """Runs on the poller thread: current value of every editor's setting."""
        return {}

    def poll(self) -> dict[str, Any]:
        return {} if self.settings_loaded else {"settings": self.read_settings()}

    def update_state(self, s: dict[str, Any]) -> None:
        for key, v in s.get("settings", {}).items():
            editor = self.editors[key]
            editor.blockSignals(True)
            editor.setValue(v)
            editor.blockSignals(False)
            editor.setEnabled(True)
        if "settings" in s:
            self.settings_loaded = True


class LaserPanel(InstrumentPanel):
    def __init__(self, handle: InstrumentHandle, bridge: Bridge):
        super().__init__(handle, bridge)
        lim = handle.instrument.limits
        lo, hi = lim.bounds("current_a")
        self.on_btn, self.off_btn = QPushButton("Emission ON"), QPushButton("Emission OFF")
        self.on_btn.setObjectName(f"{handle.name}_on")
        self.off_btn.setObjectName(f"{handle.name}_off")
        row = QHBoxLayout()
        row.addWidget(self.on_btn)
        row.addWidget(self.off_btn)
        self.form.addRow(row)
        self.current = _spin(lo or 0.0, hi, 0.1, 4, 0.005, "A")
        self.current.setObjectName(f"{handle.name}_current")
        set_btn = QPushButton("Set")
        r2 = QHBoxLayout()
        r2.addWidget(self.current)
        r2.addWidget(set_btn)
        self.form.addRow(f"current (limit {lo}–{hi} A)", r2)
        self.readout = QLabel("—")
        self.form.addRow("measured", self.readout)
        self.on_btn.clicked.connect(lambda: self.submit("set_output", True))
        self.off_btn.clicked.connect(lambda: self.submit("set_output", False))
        set_btn.clicked.connect(lambda: self.submit("set_current", self.current.value()))

    def poll(self) -> dict[str, Any]:
        inst = self.handle.instrument
        return {"output": inst.output(), "protection": inst.protection(), "current": inst.measured_current(),
                "power": inst.measured_power()}

    def update_state(self, s: dict[str, Any]) -> None:
        if "output" in s:
            trips = [k for k, v in s["protection"].items() if v]
            self.readout.setText(f"{'ON' if s['output'] else 'off'}, {s['current'] * 1e3:.1f} mA, "
                                 f"{s['power']:.2f} mW" + (f", TRIPPED: {', '.join(trips)}" if trips else ""))


class DetectorPanel(SettingsPanel):
    def __init__(self, handle: InstrumentHandle, bridge: Bridge):
        super().__init__(handle, bridge)
        caps = handle.instrument.capabilities
        self.enabled = QCheckBox("enabled")
        self.enabled.setChecked(True)
        self.enabled.setEnabled("enable" in caps)
        self.enabled.toggled.connect(lambda on: self.submit("set_enabled", on))
        self.form.addRow(self.enabled)
        if "efficiency" in caps:
            self.eff = self.add_editor("efficiency", _spin(0, 1, 0.0, 3, 0.01, ""))
            self.eff.valueChanged.connect(lambda v: self.submit("set_efficiency", v))
            self.form.addRow("efficiency", self.eff)
        if "dead_time" in caps:
            self.dead = self.add_editor("dead_time_ns", _spin(0, 1e6, 0.0, 1, 1, "ns"))
            self.dead.valueChanged.connect(lambda v: self.submit("set_dead_time", v))
            self.form.addRow("dead time", self.dead)
        if "gate" in caps:
            self.gate = QCheckBox("gate closed")
            self.gate.toggled.connect(lambda on: self.submit("set_gate", on))
            self.form.addRow(self.gate)

    def read_settings(self) -> dict[str, float]:
        inst = self.handle.instrument
        return {key: getattr(inst, key)() for key in self.editors}


class ControllerPanel(InstrumentPanel):
    def __init__(self, handle: InstrumentHandle, bridge: Bridge):
        super().__init__(handle, bridge)
        lo, hi = handle.instrument.limits.bounds("position_deg")
        self.positions: dict[str, QLabel] = {}
        self.targets: dict[str, QDoubleSpinBox] = {}
        for ax in handle.instrument.axes():
            box = QWidget()
            lay = QHBoxLayout(box)
            lay.setContentsMargins(0, 0, 0, 0)
            pos = QLabel("—")
            target = _spin(lo, hi, 0.0, 2, 1.0, "°")
            target.setObjectName(f"{handle.name}_{ax}_target")
            move = QPushButton("Move")
            move.setObjectName(f"{handle.name}_{ax}_move")
            jog_m, jog_p, home = QPushButton("−5°"), QPushButton("+5°"), QPushButton("Home")
            for w in (pos, target, move, jog_m, jog_p, home):
                lay.addWidget(w)
            move.clicked.connect(lambda _=False, a=ax, t=target: self.submit("move_absolute", t.value(), a))
            jog_m.clicked.connect(lambda _=False, a=ax: self.submit("move_relative", -5.0, a))
            jog_p.clicked.connect(lambda _=False, a=ax: self.submit("move_relative", 5.0, a))
            home.clicked.connect(lambda _=False, a=ax: self.submit("home", a))
            self.positions[ax], self.targets[ax] = pos, target
            self.form.addRow(ax, box)

    def poll(self) -> dict[str, Any]:
        return {"positions": self.handle.instrument.positions()}

    def update_state(self, s: dict[str, Any]) -> None:
        for ax, p in s.get("positions", {}).items():
            self.positions[ax].setText(f"{p:7.2f}°")


class TaggerPanel(SettingsPanel):
    def __init__(self, handle: InstrumentHandle, bridge: Bridge, wired: dict[int, str]):
        super().__init__(handle, bridge)
        lo, hi = handle.instrument.limits.bounds("delay_ps")
        for ch, role in sorted(wired.items()):
            box = QWidget()
            lay = QHBoxLayout(box)
            lay.setContentsMargins(0, 0, 0, 0)
            delay = self.add_editor(f"delay:{ch}", _spin(lo, hi, 0.0, 0, 100, "ps"))
            level = self.add_editor(f"trigger_level:{ch}", _spin(-2.5, 2.5, 0.0, 3, 0.05, "V"))
            delay.valueChanged.connect(lambda v, c=ch: self.submit("set_delay", c, int(v)))
            level.valueChanged.connect(lambda v, c=ch: self.submit("set_trigger_level", c, v))
            lay.addWidget(delay)
            lay.addWidget(level)
            self.form.addRow(f"in {ch} ({role})", box)

    def read_settings(self) -> dict[str, float]:
        inst = self.handle.instrument
        out = {}
        for key in self.editors:
            what, ch = key.split(":")
            out[key] = float(getattr(inst, what)(int(ch)))
        return out


class CounterPanel(SettingsPanel):
    """A hardware coincidence counter: window setting and the latest period's counts."""

    def __init__(self, handle: InstrumentHandle, bridge: Bridge, wired: dict[int, str]):
        super().__init__(handle, bridge)
        lo, hi = handle.instrument.limits.bounds("coincidence_window_ps")
        window = self.add_editor("coincidence_window", _spin(lo if lo is not None else 1000,
                                                             hi if hi is not None else 50_000_000, 0.0, 0, 1000,
                                                             "ps"))
        window.valueChanged.connect(lambda v: self.submit("set_coincidence_window", int(v)))
        self.form.addRow("window", window)
        self.counts = QLabel("—")
        self.counts.setObjectName(f"{handle.name}_counts")
        self.form.addRow("counts", self.counts)
        self.wired = wired

    def read_settings(self) -> dict[str, float]:
        return {"coincidence_window": float(self.handle.instrument.coincidence_window())}

    def poll(self) -> dict[str, Any]:
        return {**super().poll(), "reading": self.handle.instrument.read(wait_new=False)}

    def update_state(self, s: dict[str, Any]) -> None:
        super().update_state(s)
        reading = s.get("reading")
        if reading is not None:
            self.counts.setText("  ".join(f"{k} {v}" for k, v in reading.counts.items()))


def make_panel(handle: InstrumentHandle, bridge: Bridge, wired: dict[int, str]) -> InstrumentPanel:
    kind = handle.kind
    if kind == "laser":
        return LaserPanel(handle, bridge)
    if kind == "detector":
        return DetectorPanel(handle, bridge)
    if kind == "polarization":
        return ControllerPanel(handle, bridge)
    if kind == "counter":
        return CounterPanel(handle, bridge, wired)
    return TaggerPanel(handle, bridge, wired)


class PanelStack(QWidget):
    def __init__(self, panels: list[InstrumentPanel]):
        super().__init__()
        lay = QVBoxLayout(self)
        for p in panels:
            lay.addWidget(p)
        lay.addStretch(1)
