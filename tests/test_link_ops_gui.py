"""Issue 17: the GUI link view polls a node's endpoint in a worker thread and shows state, key rate and events."""

from __future__ import annotations

import threading

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pyqtgraph")

from qlab.gui.link_view import LinkPoller, LinkView  # noqa: E402

from qlab.network.telemetry import LinkMetrics, NodeHttpServer  # noqa: E402


def test_link_view_shows_a_nodes_state_without_io_on_the_gui_thread(qtbot) -> None:  # noqa: ANN001
    metrics = LinkMetrics("alice", "bob")
    metrics.on_event("state", {"time": 1.0, "from": "SYNCING", "to": "ALARM", "reason": "QBER in both bases"})
    metrics.on_event("rates", {"time": 2.0, "singles_hz": {"H": 1.0, "V": 1.0, "D": 1.0, "A": 1.0}})
    metrics.on_event("block", {"time": 3.0, "block": 7, "committed": True, "duration_s": 4.0, "secret_bits": 4000,
                               "qber": {"Z": 0.02, "X": 0.03}, "sifted": {"Z": 10, "X": 10}})
    metrics.on_event("rates", {"time": 4.0, "singles_hz": {"H": 1.0, "V": 1.0, "D": 1.0, "A": 1.0}})
    status = {"node": "alice", "peer": "bob", "state": "ALARM", "blocks_committed": 1,
              "store": [{"block": 7, "bits": 4000, "paired": True}],
              "link": {"reason": "QBER in both bases", "alarm": {"reason": "QBER in both bases"}}}
    srv = NodeHttpServer(metrics, lambda: status, lambda who: (200, {"cleared": True})).start()
    polled_in: list[str] = []
    poller = LinkPoller(lambda: srv.url)
    original = poller.poll_once

    def recording() -> dict:
        polled_in.append(threading.current_thread().name)
        return original()

    poller.poll_once = recording
    win = LinkView(poller)
    qtbot.addWidget(win)
    try:
        poller.start()
        qtbot.waitUntil(lambda: "ALARM" in win.state_label.text(), timeout=10000)
        assert "4000 bits" in win.store_label.text()
        assert win.clear_button.isEnabled()
        assert "1000 bit/s" in win.rate_label.text()
        assert win.events.count() >= 2
        assert polled_in and set(polled_in) == {"link-poller"}  # never the GUI thread
    finally:
        poller.stop()
        srv.stop()
