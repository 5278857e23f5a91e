"""Link view: a running network node's link state, key rate and QBER timelines, key store level and events.

``qlab gui --node NAME [--config network.yaml]`` finds the node's loopback endpoint (its ``metrics_port`` in the
network description, else the ``http`` entry of its ``status.json``); ``qlab gui --endpoint http://HOST:PORT``
attaches to one directly. A worker thread polls ``/status``, ``/timeline`` and ``/events`` once a second and
hands the answers to the GUI thread through a queued Qt signal: the GUI thread does no I/O at all (no
instrument, no socket, no file). "Clear alarm" posts ``/clear-alarm`` from a worker thread too.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QListWidget,
    QMainWindow,
    QMessageBox,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

POLL_S = 1.0
STATE_COLOURS = {"UP": "#2ca02c", "DEGRADED": "#bcbd22", "SYNCING": "#17becf", "STARTING": "#7f7f7f",
                 "RECOVERING": "#ff7f0e", "DOWN": "#d62728", "ALARM": "#9467bd"}


def endpoint_of(node: str, config: str | None) -> Callable[[], str | None]:
    """A function giving the node's endpoint URL (None while unknown): its fixed ``metrics_port`` or what its
    ``status.json`` says (read in the worker thread, as the node may start later)."""
    from qlab.network.cli import default_network_config
    from qlab.network.config import load_network

    desc = load_network(default_network_config(config))
    if node not in desc.config.nodes:
        from qlab.errors import QlabError

        raise QlabError(f"no node {node!r} in {desc.path}; nodes are {sorted(desc.config.nodes)}")
    port = desc.config.nodes[node].metrics_port
    if port:
        return lambda: f"http://127.0.0.1:{port}"
    status = desc.data_dir / node / "status.json"

    def from_status() -> str | None:
        try:
            return (json.loads(Path(status).read_text()).get("http") or {}).get("url")
        except (OSError, ValueError):
            return None

    return from_status


def _get(url: str, timeout: float = 2.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


class _Bridge(QObject):
    polled = Signal(object)  # {"status", "timeline", "events"} or {"error"}
    answered = Signal(object)  # the answer to an operator command


class LinkPoller:
    """Polls the node's endpoint in a daemon thread; results arrive on ``bridge.polled`` (queued to the GUI)."""

    def __init__(self, endpoint: Callable[[], str | None]):
        self.endpoint = endpoint
        self.bridge = _Bridge()
        self.stop_event = threading.Event()
        self.since_t = 0.0
        self.since_seq = 0
        self.thread = threading.Thread(target=self._run, name="link-poller", daemon=True)

    def start(self) -> LinkPoller:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(3)

    def poll_once(self) -> dict[str, Any]:
        url = self.endpoint()
        if url is None:
            return {"error": "the node's endpoint is not known yet (is the node running?)"}
        try:
            status = _get(f"{url}/status")
            timeline = _get(f"{url}/timeline?since={self.since_t}")
            events = _get(f"{url}/events?since={self.since_seq}")
        except (OSError, ValueError, urllib.error.URLError) as exc:
            return {"error": f"{url}: {exc}"}
        if timeline:
            self.since_t = timeline[-1]["time"]
        if events:
            self.since_seq = events[-1]["seq"] + 1
        return {"url": url, "status": status, "timeline": timeline, "events": events}

    def _run(self) -> None:
        while not self.stop_event.is_set():
            self.bridge.polled.emit(self.poll_once())
            self.stop_event.wait(POLL_S)

    def clear_alarm(self) -> None:
        def post() -> None:
            url = self.endpoint()
            try:
                req = urllib.request.Request(f"{url}/clear-alarm?operator=gui", method="POST")
                with urllib.request.urlopen(req, timeout=5) as resp:
                    answer = json.loads(resp.read())
            except urllib.error.HTTPError as exc:
                answer = json.loads(exc.read() or b"{}")
            except (OSError, ValueError) as exc:
                answer = {"cleared": False, "message": str(exc)}
            self.bridge.answered.emit(answer)

        threading.Thread(target=post, name="clear-alarm", daemon=True).start()


class LinkView(QMainWindow):
    """The window; ``apply(poll)`` updates it from one poll (GUI thread only)."""

    def __init__(self, poller: LinkPoller, title: str = "qlab link"):
        super().__init__()
        import pyqtgraph as pg

        self.poller = poller
        self.setWindowTitle(title)
        central = QWidget()
        lay = QVBoxLayout(central)
        top = QHBoxLayout()
        self.state_label = QLabel("state: -")
        self.state_label.setStyleSheet("font-size: 20px; font-weight: bold; padding: 4px;")
        self.reason_label = QLabel("")
        self.reason_label.setWordWrap(True)
        self.store_label = QLabel("key store: -")
        self.rate_label = QLabel("net key rate: -")
        self.clear_button = QPushButton("Clear alarm")
        self.clear_button.setEnabled(False)
        self.clear_button.clicked.connect(self._clear)
        for w in (self.state_label, self.reason_label, self.store_label, self.rate_label, self.clear_button):
            top.addWidget(w)
        top.setStretch(1, 1)
        lay.addLayout(top)
        self.rate_plot = pg.PlotWidget(title="net secret key rate (bit/s)")
        self.qber_plot = pg.PlotWidget(title="QBER per basis")
        self.qber_plot.addLegend()
        self.rate_curve = self.rate_plot.plot(pen=pg.mkPen("#1f77b4", width=2))
        self.qz_curve = self.qber_plot.plot(pen=pg.mkPen("#d62728", width=2), name="Z")
        self.qx_curve = self.qber_plot.plot(pen=pg.mkPen("#9467bd", width=2), name="X")
        for p in (self.rate_plot, self.qber_plot):
            p.setLabel("bottom", "time (s)")
            lay.addWidget(p, 2)
        self.events = QListWidget()
        lay.addWidget(QLabel("events"))
        lay.addWidget(self.events, 1)
        self.setCentralWidget(central)
        self.samples: list[dict[str, Any]] = []
        self.t0: float | None = None
        self.last_state = "-"
        poller.bridge.polled.connect(self.apply, Qt.ConnectionType.QueuedConnection)
        poller.bridge.answered.connect(self._answered, Qt.ConnectionType.QueuedConnection)

    def apply(self, poll: dict[str, Any]) -> None:
        if "error" in poll:
            self.reason_label.setText(poll["error"])
            return
        st = poll["status"]
        link = st.get("link") or {}
        state = st.get("state", "-")
        self.last_state = state
        self.state_label.setText(f"{st.get('node')} → {st.get('peer')}: {state}")
        self.state_label.setStyleSheet(f"font-size: 20px; font-weight: bold; padding: 4px; color: white; "
                                       f"background: {STATE_COLOURS.get(state, '#444')};")
        self.reason_label.setText(str(link.get("reason", "")))
        bits = sum(b["bits"] for b in st.get("store", []) if b.get("paired"))
        self.store_label.setText(f"key store: {bits} bits in {st.get('blocks_committed', 0)} blocks")
        self.clear_button.setEnabled(link.get("alarm") is not None)
        self.samples.extend(poll["timeline"])
        del self.samples[:-3600]
        if self.samples:
            if self.t0 is None:
                self.t0 = self.samples[0]["time"]
            t = [s["time"] - self.t0 for s in self.samples]
            self.rate_curve.setData(t, [s.get("key_rate_bps") or 0.0 for s in self.samples])
            qz = [(ti, s["qber_z"]) for ti, s in zip(t, self.samples, strict=True) if s.get("qber_z") is not None]
            qx = [(ti, s["qber_x"]) for ti, s in zip(t, self.samples, strict=True) if s.get("qber_x") is not None]
            self.qz_curve.setData(*zip(*qz, strict=True)) if qz else None
            self.qx_curve.setData(*zip(*qx, strict=True)) if qx else None
            self.rate_label.setText(f"net key rate: {self.samples[-1].get('key_rate_bps') or 0:.0f} bit/s")
        for e in poll["events"]:
            if e.get("kind") in ("rates",):
                continue
            when = time.strftime("%H:%M:%S", time.localtime(e.get("time", 0)))
            text = e.get("reason") or e.get("to") or e.get("abort_reason") or ""
            if e.get("kind") == "state":
                text = f"{e.get('from')} → {e.get('to')}: {e.get('reason')}"
            elif e.get("kind") == "block":
                text = f"block {e.get('block')} {'committed' if e.get('committed') else 'aborted'}, " \
                       f"{e.get('secret_bits', 0)} bits"
            self.events.insertItem(0, f"{when}  {e.get('kind')}: {text}")
        while self.events.count() > 500:
            self.events.takeItem(self.events.count() - 1)

    def _clear(self) -> None:
        self.poller.clear_alarm()

    def _answered(self, answer: dict[str, Any]) -> None:
        QMessageBox.information(self, "clear alarm", json.dumps(answer, indent=1))

    def closeEvent(self, event: Any) -> None:  # noqa: N802 - Qt's name
        self.poller.stop()
        super().closeEvent(event)


def main(node: str | None = None, config: str | None = None, endpoint: str | None = None,
         quit_after_s: float | None = None, offscreen: bool = False) -> int:
    """``qlab gui --node NAME`` / ``--endpoint URL``; returns the exit code (2 when Qt's platform plugin
    cannot load: the message says what to install). Raises QlabError for an unknown node."""
    from qlab.gui.platform_check import qt_platform_ready

    if not qt_platform_ready("qlab gui", offscreen):
        return 2
    from PySide6.QtWidgets import QApplication

    find = (lambda: endpoint.rstrip("/")) if endpoint else endpoint_of(node or "", config)
    app = QApplication.instance() or QApplication(sys.argv[:1])
    poller = LinkPoller(find)
    win = LinkView(poller, f"qlab link view: {node or endpoint}")
    win.resize(1000, 800)
    win.show()
    poller.start()
    if quit_after_s is not None:
        QTimer.singleShot(int(quit_after_s * 1000), win.close)
    code = app.exec()
    poller.stop()
    win.deleteLater()
    app.processEvents()
    return code
