"""GUI panels built from the settings tables show the instrument's actual values (offscreen, pytest-qt)."""

from __future__ import annotations

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pyqtgraph")

from PySide6.QtCore import QSettings  # noqa: E402

from qlab.procedures.delays import DelaysProcedure  # noqa: E402
from qlab.procedures.engine import RunEngine  # noqa: E402
from tests.simlab_helpers import ideal_fibres, two_taggers  # noqa: E402

POLL_S = 0.5  # the window's poller period


def _spy_writes(panel) -> list:
    sent: list = []
    original = panel.submit
    panel.submit = lambda method, *a, **k: (sent.append((method, a)), original(method, *a, **k))
    return sent


def test_every_tagger_panel_shows_the_delays_the_procedure_applied(qtbot, make_lab) -> None:
    """Panels for both taggers of a two-tagger lab follow delays a script sets on each (through the settings
    cache), and no editor writes the values back."""
    from qlab.gui.panels import make_panel
    from qlab.gui.workers import Bridge

    lab = make_lab(lambda c: (ideal_fibres(c), two_taggers(c)), seed=11)
    bridge = Bridge()
    wired: dict[str, dict[int, str]] = {}
    for role, (tagger, ch) in lab.roles().items():
        wired.setdefault(tagger, {})[ch] = role
    panels = {name: make_panel(lab[name], bridge, wired[name]) for name in lab.names("tagger")}
    for p in panels.values():
        qtbot.addWidget(p)
    assert set(panels) == {"tagger", "tagger_bob"}
    sent = {name: _spy_writes(p) for name, p in panels.items()}
    applied: dict[str, dict[int, int]] = {}
    for name in panels:
        for ch in wired[name]:
            lab[name].set_delay(ch, 1000 * ch)  # a script sets delays on every tagger
        applied[name] = {ch: 1000 * ch for ch in wired[name]}
    for name, p in panels.items():
        qtbot.waitUntil(lambda p=p, name=name: all(p.editors[f"delay:{ch}"].value() == d
                                                   for ch, d in applied[name].items()), timeout=5000)
    snap = lab.snapshot()
    for name, delays in applied.items():
        for ch, d in delays.items():
            assert snap[name][f"delay_ch{ch}"]["value"] == d
    assert all(not s for s in sent.values())
    for p in panels.values():
        p.detach()


def test_delays_procedure_updates_the_tagger_panel_and_snapshot(qtbot, make_lab) -> None:
    from qlab.gui.panels import make_panel
    from qlab.gui.workers import Bridge

    lab = make_lab(ideal_fibres, seed=12)  # no delays configured: the panel starts at 0 ps
    bridge = Bridge()
    wired = {ch: role for role, (_, ch) in lab.roles().items()}
    panels = [make_panel(lab[name], bridge, wired) for name in lab.names("tagger")]
    assert panels
    for p in panels:
        qtbot.addWidget(p)
    lab["tagger"].call("read_settings")  # what a poll does: every editor gets the device's value
    for p in panels:
        qtbot.waitUntil(lambda p=p: p.settings_loaded, timeout=5000)
        assert p.editors["delay:1"].value() == 0
    sent = [_spy_writes(p) for p in panels]
    result = RunEngine(lab).run(DelaysProcedure(integration_s=0.5), record=False)
    applied = {int(k): v for k, v in result["applied_input_delays_ps"].items()}
    assert applied[1] > 10_000  # alice.H has the shortest cable, so the largest compensation
    for p in panels:
        qtbot.waitUntil(lambda p=p: all(p.editors[f"delay:{ch}"].value() == d for ch, d in applied.items()),
                        timeout=5000)
    snap = lab.snapshot()
    assert {ch: snap["tagger"][f"delay_ch{ch}"]["value"] for ch in applied} == applied
    assert all(not s for s in sent)
    for p in panels:
        p.detach()


@pytest.fixture
def window(qtbot, make_lab, tmp_path):
    from qlab.gui.main_window import MainWindow

    lab = make_lab(ideal_fibres, seed=13, realtime=True)
    w = MainWindow(lab, QSettings(str(tmp_path / "gui.ini"), QSettings.IniFormat))
    qtbot.addWidget(w)
    w.show()
    yield w
    w.close()


def test_pump_panel_shows_the_actual_current_and_follows_a_script(window, qtbot) -> None:
    panel = window.panels["pump"]
    current = panel.editors["current"]
    qtbot.waitUntil(lambda: panel.settings_loaded, timeout=10_000)
    assert current.value() == pytest.approx(0.12)  # the config's 120 mA, not an editor default
    sent = _spy_writes(panel)
    window.lab["pump"].set_current(0.15)  # from a script, not the panel
    qtbot.waitUntil(lambda: current.value() == pytest.approx(0.15), timeout=int(POLL_S * 1000))
    # Changed behind the cache (the driver's raw setter): the next poll reads it back.
    window.lab["pump"].call(lambda inst: inst._set_current(0.14))
    qtbot.waitUntil(lambda: current.value() == pytest.approx(0.14), timeout=10_000)
    assert sent == []  # showing a value never writes it back
    assert window.lab["pump"].current_setpoint() == pytest.approx(0.14)


def test_editing_a_panel_writes_through_the_table_and_a_refused_value_is_undone(window, qtbot) -> None:
    panel = window.panels["pump"]
    current = panel.editors["current"]
    qtbot.waitUntil(lambda: panel.settings_loaded, timeout=10_000)
    current.setValue(0.1)  # a user edit: written on the pump's worker
    qtbot.waitUntil(lambda: window.lab["pump"].cache.get("current_set").value == pytest.approx(0.1), timeout=5000)
    assert window.lab["pump"].current_setpoint() == pytest.approx(0.1)
    window.lab["pump"].instrument.limits._limits["current_a"].max = 0.05  # tighten the envelope
    current.setValue(0.11)
    qtbot.waitUntil(lambda: "outside the configured limits" in window.log.toPlainText(), timeout=5000)
    qtbot.waitUntil(lambda: current.value() == pytest.approx(0.1), timeout=5000)  # back to the device's value
    assert window.lab["pump"].current_setpoint() == pytest.approx(0.1)


def test_panels_for_every_kind_come_from_the_tables(window) -> None:
    p = window.panels
    assert {"current", "temperature"} <= set(p["pump"].editors)
    assert {"efficiency", "dead_time_ns"} <= set(p["alice_H"].editors)
    assert {f"delay:{ch}" for ch in range(1, 9)} <= set(p["tagger"].editors)
    assert set(p["alice_compensator"].targets) == {"qwp1", "hwp", "qwp2"}
