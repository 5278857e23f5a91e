"""Instrument control panels, built from each kind's settings table (qlab/settings_spec.py).

One generic builder makes an editor or readout per setting (per input or axis for indexed ones); kinds add
only their extras (emission buttons, jog/home, live counts). Editors show the instrument's settings cache:
every set (from a panel, a script or a procedure) and every poll updates the cache, whose listener reaches
the GUI thread through a Qt signal; editors are filled with their signals blocked, so showing a value
never writes it back. Every action is submitted to the instrument's worker (``handle.submit``), so the GUI
thread never waits on an instrument; errors go to the log pane.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QSize, Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)
from qlab.gui.workers import Bridge

from qlab.instruments.cache import CachedValue
from qlab.instruments.handle import InstrumentHandle
from qlab.instruments.settings import Setting


class SettingSpinBox(QDoubleSpinBox):
    """A spin box for a live instrument setting: the mouse wheel never changes it unless the user clicked
    into it first (scrolling the Instruments dock over it scrolls the dock and sends nothing)."""

    def __init__(self) -> None:
        super().__init__()
        self.setFocusPolicy(Qt.StrongFocus)  # not Qt.WheelFocus: the wheel alone never focuses it

    def wheelEvent(self, event) -> None:  # noqa: N802 - Qt API
        if self.hasFocus():
            super().wheelEvent(event)
        else:
            event.ignore()  # the scroll area underneath scrolls instead


def _spin(lo: float | None, hi: float | None, decimals: int, step: float, suffix: str) -> QDoubleSpinBox:
    s = SettingSpinBox()
    s.setDecimals(decimals)
    s.setRange(-1e9 if lo is None else lo, 1e9 if hi is None else hi)
    s.setSingleStep(step)
    s.setSuffix(f" {suffix}" if suffix else "")
    s.setKeyboardTracking(False)
    return s


def _fmt(v: Any, setting: Setting) -> str:
    spec = setting.spec
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int | float) and spec.gui is not None:
        return f"{v:.{spec.gui.decimals}f} {spec.unit}".rstrip()
    return f"{v} {spec.unit}".rstrip()


class _CacheSignal(QObject):
    """Carries cache changes from an instrument worker to the GUI thread (queued connection)."""

    changed = Signal(object)  # {entry: CachedValue}


class InstrumentPanel(QGroupBox):
    """Editors and readouts for every setting of the instrument's table that has a GUI hint.

    ``editors`` maps ``name`` (or ``name:index`` for per-input/per-axis settings) to its widget;
    ``settings_loaded`` turns True once every editor has shown a value from the instrument.
    """

    def __init__(self, handle: InstrumentHandle, bridge: Bridge, wired: dict[int, str] | None = None):
        super().__init__(f"{handle.name} — {handle.instrument.model}")
        self.handle = handle
        self.bridge = bridge
        self.wired = dict(wired or {})
        self.setObjectName(f"panel_{handle.name}")
        self.form = QFormLayout(self)
        self.status = QLabel("connected")
        self.form.addRow("status", self.status)
        self.editors: dict[str, QWidget] = {}
        self.readouts: dict[str, QLabel] = {}
        self.targets: dict[Any, QDoubleSpinBox] = {}  # button-applied settings (controller axes): index -> target
        self._fill: dict[str, list[Callable[[Any], None]]] = {}  # cache entry -> widget updaters
        self._waiting: set[str] = set()  # editor keys still without a value from the instrument
        self.settings_loaded = False
        self._build_settings()
        self._signal = _CacheSignal(self)
        self._signal.changed.connect(self._on_cache)
        self._listener = self._forward
        handle.cache.add_listener(self._listener)
        self._on_cache(handle.cache.values())  # what is already known (open, apply_settings); no device I/O

    # -- building from the table ---------------------------------------------------------------------------
    def _build_settings(self) -> None:
        inst = self.handle.instrument
        table = [s for s in inst.settings_table() if s.spec.gui is not None]
        for s in (s for s in table if s.spec.index is None):
            self.form.addRow(f"{s.spec.gui.label or s.name}", self._widget(s, None))
        by_input = [s for s in table if s.spec.index == "input"]
        for ch in sorted(self.wired) if by_input else []:
            self.form.addRow(f"in {ch} ({self.wired[ch]})", self._row([self._widget(s, ch) for s in by_input]))
        by_axis = [s for s in table if s.spec.index == "axis"]
        for ax in inst.axes() if by_axis else []:
            self.form.addRow(str(ax), self._row([self._widget(s, ax) for s in by_axis]))
            extras = self.axis_extras(ax)
            if extras:  # a second line keeps the panel narrow enough for a 1024 px wide window
                self.form.addRow("", self._row(extras))

    @staticmethod
    def _row(widgets: list[QWidget]) -> QWidget:
        box = QWidget()
        lay = QHBoxLayout(box)
        lay.setContentsMargins(0, 0, 0, 0)
        for w in widgets:
            lay.addWidget(w)
        return box

    def _widget(self, s: Setting, index: Any) -> QWidget:
        spec, hint = s.spec, s.spec.gui
        assert hint is not None
        entry = spec.entry(index)
        key = spec.name if index is None else f"{spec.name}:{index}"
        inst = self.handle.instrument
        can_write = spec.writable and (spec.write_capability is None or spec.write_capability in inst.capabilities)
        if hint.widget == "readout" or not can_write and hint.widget != "check":
            label = QLabel("—")
            label.setObjectName(f"{self.handle.name}_{key.replace(':', '_')}")
            self.readouts[entry] = label
            self._on(entry, lambda v: label.setText(_fmt(v, s)))
            return label
        if hint.widget == "check":
            box = QCheckBox(hint.label or spec.name)
            box.setEnabled(False)
            self._editor(key, entry, box, box.setChecked, enable=can_write)
            box.toggled.connect(lambda on: self.write(spec.name, bool(on), index))
            return box
        lo, hi = inst.limits.bounds(spec.limit) if spec.limit else (None, None)
        editor = _spin(hint.low if lo is None else lo, hint.high if hi is None else hi, hint.decimals, hint.step,
                       spec.unit)
        editor.setObjectName(f"{self.handle.name}_{key.replace(':', '_')}")
        if hint.apply == "button":  # actual value beside a target the user sets; only the button writes
            actual = QLabel("—")
            self.readouts[entry] = actual
            self._on(entry, lambda v: actual.setText(_fmt(v, s)))
            editor.setObjectName(f"{self.handle.name}_{index}_target")
            self.targets[index] = editor
            self._editor(key, entry, editor, editor.setValue, once=True)
            button = QPushButton(hint.button)
            button.setObjectName(f"{self.handle.name}_{index}_{hint.button.lower()}")
            button.clicked.connect(lambda _=False: self.write(spec.name, spec.type(editor.value()), index))
            return self._row([actual, editor, button])
        self._editor(key, entry, editor, editor.setValue)
        editor.valueChanged.connect(lambda v: self.write(spec.name, spec.type(v), index))
        return editor

    def _editor(self, key: str, entry: str, widget: QWidget, setter: Callable[[Any], None], *,
                enable: bool = True, once: bool = False) -> None:
        """Register an editor filled from cache ``entry`` with its signals blocked (so filling sends nothing)."""
        widget.setEnabled(False)
        self.editors[key] = widget
        self._waiting.add(key)
        filled = [False]

        def fill(v: Any) -> None:
            if once and filled[0]:
                return
            filled[0] = True
            widget.blockSignals(True)
            try:
                setter(v)
            finally:
                widget.blockSignals(False)
            widget.setEnabled(enable)
            self._waiting.discard(key)

        self._on(entry, fill)

    def _on(self, entry: str, fn: Callable[[Any], None]) -> None:
        self._fill.setdefault(entry, []).append(fn)

    def axis_extras(self, axis: Any) -> list[QWidget]:
        """Kind-specific widgets appended to an axis row (controllers: jog and home)."""
        return []

    # -- cache -> widgets (GUI thread) ---------------------------------------------------------------------
    def _on_cache(self, changes: dict[str, CachedValue]) -> None:
        for entry, cached in changes.items():
            for fn in self._fill.get(entry, ()):
                fn(cached.value)
        if not self._waiting:
            self.settings_loaded = True
        self.on_settings(changes)

    def on_settings(self, changes: dict[str, CachedValue]) -> None:  # noqa: B027 - kinds override
        """Kinds react to cache changes beyond the generic widgets (GUI thread)."""

    def _forward(self, _name: str, changes: dict[str, CachedValue]) -> None:
        """Cache listener (instrument worker thread): hand the changes to the GUI thread."""
        with contextlib.suppress(RuntimeError):  # the panel was deleted before it was detached
            self._signal.changed.emit(changes)

    def detach(self) -> None:
        """Stop listening to the instrument's cache (the window is closing; the lab may live on)."""
        self.handle.cache.remove_listener(self._listener)

    # -- actions ---------------------------------------------------------------------------------------------
    def write(self, name: str, value: Any, index: Any = None) -> None:
        """Write one setting of the table on the instrument's worker (checked there against its limits)."""
        self.submit("write_setting", name, value, index)

    def submit(self, method: str | Callable, *args: Any, done: Callable[[Any], None] | None = None) -> None:
        fut = self.handle.submit(method, *args)
        name = method if isinstance(method, str) else getattr(method, "__name__", "call")

        def finished(f) -> None:
            exc = f.exception()
            if exc is not None:
                self.bridge.message.emit("error", f"{self.handle.name}.{name}: {exc}")
                # The editor shows the refused value: put the instrument's own values back.
                with contextlib.suppress(RuntimeError):  # the panel was deleted (window closed) meanwhile
                    self._signal.changed.emit(self.handle.cache.values())
            elif done is not None:
                self.bridge.instrument_state.emit(self.handle.name, {"_callback": done, "value": f.result()})
            self.bridge.instrument_state.emit(self.handle.name, {"_refresh": True})

        fut.add_done_callback(finished)

    # -- polling (instrument worker, via the window's poller thread) ---------------------------------------
    def poll(self) -> dict[str, Any]:
        """Runs on the instrument's worker: read back every setting of the table (which refreshes the cache,
        and through it the widgets). Kinds return extra state for ``update_state``."""
        self.handle.instrument.read_settings()
        return {}

    def update_state(self, state: dict[str, Any]) -> None:  # noqa: B027 - kinds override
        """Extra state returned by ``poll`` (GUI thread)."""


class LaserPanel(InstrumentPanel):
    """Extras: emission buttons and an on/off + protection line (the status bar shows it too)."""

    def _build_settings(self) -> None:
        self.on_btn, self.off_btn = QPushButton("Emission ON"), QPushButton("Emission OFF")
        self.on_btn.setObjectName(f"{self.handle.name}_on")
        self.off_btn.setObjectName(f"{self.handle.name}_off")
        self.form.addRow(self._row([self.on_btn, self.off_btn]))
        self.on_btn.clicked.connect(lambda: self.submit("set_output", True))
        self.off_btn.clicked.connect(lambda: self.submit("set_output", False))
        self.emission = QLabel("—")
        self.emission.setObjectName(f"{self.handle.name}_emission")
        self.form.addRow("emission", self.emission)
        super()._build_settings()

    def on_settings(self, changes: dict[str, CachedValue]) -> None:
        values = self.handle.cache.values()
        if "output" not in values:
            return
        trips = [e.removeprefix("protection_") for e, c in values.items() if e.startswith("protection_") and c.value]
        self.emission.setText(("ON" if values["output"].value else "off")
                              + (f", TRIPPED: {', '.join(trips)}" if trips else ""))

    def poll(self) -> dict[str, Any]:
        read = self.handle.instrument.read_settings()
        return {"output": read["output"][0],
                "protection": {e.removeprefix("protection_"): v for e, (v, _) in read.items()
                               if e.startswith("protection_")}}


class DetectorPanel(InstrumentPanel):
    """Entirely from the detector table (enabled, efficiency, dead time, bias, gate as the model has them)."""


class TaggerPanel(InstrumentPanel):
    """Entirely from the tagger table: delay and trigger level of each wired input."""


class ControllerPanel(InstrumentPanel):
    """Extras: jog ±5° and home beside each axis's position/target/Move row."""

    def axis_extras(self, axis: Any) -> list[QWidget]:
        jog_m, jog_p, home = QPushButton("−5°"), QPushButton("+5°"), QPushButton("Home")
        jog_m.clicked.connect(lambda _=False: self.submit("move_relative", -5.0, axis))
        jog_p.clicked.connect(lambda _=False: self.submit("move_relative", 5.0, axis))
        home.clicked.connect(lambda _=False: self.submit("home", axis))
        return [jog_m, jog_p, home]


class CounterPanel(InstrumentPanel):
    """A hardware coincidence counter: its table (window, sampling, delays) plus the latest period's counts."""

    def _build_settings(self) -> None:
        super()._build_settings()
        self.counts = QLabel("—")
        self.counts.setObjectName(f"{self.handle.name}_counts")
        self.form.addRow("counts", self.counts)

    def poll(self) -> dict[str, Any]:
        return {**super().poll(), "reading": self.handle.instrument.read(wait_new=False)}

    def update_state(self, s: dict[str, Any]) -> None:
        reading = s.get("reading")
        if reading is not None:
            self.counts.setText("  ".join(f"{k} {v}" for k, v in reading.counts.items()))


PANELS: dict[str, type[InstrumentPanel]] = {"laser": LaserPanel, "detector": DetectorPanel,
                                            "polarization": ControllerPanel, "counter": CounterPanel,
                                            "tagger": TaggerPanel}


def make_panel(handle: InstrumentHandle, bridge: Bridge, wired: dict[int, str]) -> InstrumentPanel:
    return PANELS.get(handle.kind, InstrumentPanel)(handle, bridge, wired)


class FitWidthScrollArea(QScrollArea):
    """A vertical scroll area as wide as its content needs: no horizontal scrollbar, nothing cut off."""

    def __init__(self, widget: QWidget):
        super().__init__()
        self.setWidgetResizable(True)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self.setWidget(widget)

    def _extra(self) -> int:
        return self.verticalScrollBar().sizeHint().width() + 2 * self.frameWidth() + 2

    def minimumSizeHint(self) -> QSize:  # noqa: N802 - Qt API
        return QSize(self.widget().minimumSizeHint().width() + self._extra(), 120)

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt API
        return QSize(self.widget().sizeHint().width() + self._extra(), 600)


class PanelStack(QWidget):
    def __init__(self, panels: list[InstrumentPanel]):
        super().__init__()
        lay = QVBoxLayout(self)
        for p in panels:
            lay.addWidget(p)
        lay.addStretch(1)
