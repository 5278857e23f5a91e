"""Run browser: the lab's past run files with their procedure, status, parameters and results.

Files are read on a background thread (``RunReader.summary`` plus the results log); the list reaches the
GUI thread through a Qt signal, so the window never waits on a file.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QSize, Qt, Signal
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

MAX_RUNS = 200  # newest first; older runs stay on disk, `qlab info` reads them


def read_run(path: Path) -> dict[str, Any]:
    """Summary, parameters and results of one run file; ``{"path", "error"}`` when it cannot be read."""
    from qlab.storage.reader import RunReader

    try:
        with RunReader(path) as r:
            summary = r.summary()
            summary["parameters"] = r.metadata().get("parameters", {})
            summary["result_data"] = {x["name"]: x["data"] for x in r.results() if x["name"] != "simulation_truth"}
            return summary
    except Exception as exc:  # noqa: BLE001 - a damaged file is listed with its error
        return {"path": str(path), "error": f"{type(exc).__name__}: {exc}"}


def list_runs(runs_dir: Path, limit: int = MAX_RUNS) -> list[dict[str, Any]]:
    files = sorted(runs_dir.glob("*.h5"), key=lambda p: p.stat().st_mtime, reverse=True)[:limit]
    return [read_run(p) for p in files]


class _Loaded(QObject):
    runs = Signal(object)


class RunBrowser(QWidget):
    """List of past runs (newest first); selecting one shows its parameters and results."""

    def __init__(self, runs_dir: Path):
        super().__init__()
        self.runs_dir = Path(runs_dir)
        self.runs: list[dict[str, Any]] = []
        self._loaded = _Loaded(self)
        self._loaded.runs.connect(self._show)
        self.tree = QTreeWidget()
        self.tree.setObjectName("run_list")
        self.tree.setHeaderLabels(["run", "procedure", "status", "duration"])
        self.tree.setRootIsDecorated(False)
        self.tree.currentItemChanged.connect(self._select)
        self.detail = QPlainTextEdit()
        self.detail.setReadOnly(True)
        self.detail.setObjectName("run_detail")
        for w in (self.tree, self.detail):
            w.setMinimumHeight(40)
        self.refresh_btn = QPushButton("Refresh")
        self.refresh_btn.clicked.connect(self.refresh)
        self.status = QLabel(f"runs in {self.runs_dir}")
        self.status.setWordWrap(True)
        split = QSplitter(Qt.Horizontal)  # side by side: the pane stays a low strip under the plots
        split.addWidget(self.tree)
        split.addWidget(self.detail)
        lay = QVBoxLayout(self)
        top = QHBoxLayout()
        top.addWidget(self.status, 1)
        top.addWidget(self.refresh_btn)
        lay.addLayout(top)
        lay.addWidget(split, 1)

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt API
        return QSize(600, 90)  # tabbed with the log: a strip under the plots

    def refresh(self) -> None:
        """Re-read the run directory on a background thread."""
        self.status.setText("reading runs …")
        threading.Thread(target=lambda: self._loaded.runs.emit(list_runs(self.runs_dir) if self.runs_dir.is_dir()
                                                               else []), name="qlab-runs", daemon=True).start()

    def _show(self, runs: list[dict[str, Any]]) -> None:
        self.runs = runs
        self.tree.clear()
        for r in runs:
            if "error" in r:
                cols = [Path(r["path"]).name, "?", "unreadable", ""]
            else:
                dur = max(r["duration_s"].values(), default=0.0)
                cols = [Path(r["path"]).name, str(r["procedure"]),
                        "complete" if r["complete"] else "incomplete", f"{dur:.1f} s"]
            self.tree.addTopLevelItem(QTreeWidgetItem(cols))
        self.status.setText(f"{len(runs)} runs in {self.runs_dir}")

    def _select(self, item: QTreeWidgetItem | None, _prev: Any = None) -> None:
        if item is None:
            return
        r = self.runs[self.tree.indexOfTopLevelItem(item)]
        if "error" in r:
            self.detail.setPlainText(f"{r['path']}\n{r['error']}")
            return
        lines = [r["path"], f"procedure {r['procedure']}, started {r['start_time']}, "
                 f"{'complete' if r['complete'] else 'incomplete (stopped or aborted)'}",
                 "parameters: " + ", ".join(f"{k}={v}" for k, v in r["parameters"].items())]
        for name, data in r["result_data"].items():
            scalars = {k: v for k, v in data.items() if not isinstance(v, dict | list)}
            lines.append(f"{name}: " + json.dumps(scalars, default=str))
        self.detail.setPlainText("\n".join(lines))
