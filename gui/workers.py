"""Background work of the GUI: live acquisition and procedure runs. Nothing here runs on the GUI thread.

Results cross to the GUI thread only through Qt signals of ``Bridge`` (queued connections), so the
window never waits on an instrument or a file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import traceback
from typing import Any

from PySide6.QtCore import QObject, Signal
from qlab.gui.live import LiveAnalyzer, LiveFrame

from qlab.lab import Lab
from qlab.procedures import PROCEDURES
from qlab.procedures.engine import RunEngine
from qlab.storage.runfile import RunFile

log = logging.getLogger(__name__)


class Bridge(QObject):
    frame = Signal(object)  # LiveFrame
    message = Signal(str, str)  # level, text
    fault = Signal(object)  # lab fault event dict
    progress = Signal(float, str)
    finished = Signal(str, object)  # procedure name, results (or None)
    failed = Signal(str, str)  # procedure name, error text
    recording = Signal(object)  # {"path", "seconds", "bytes"} while recording, None when it stops
    runner_done = Signal()  # the procedure thread has finished everything (after finished/failed)
    live_paused = Signal(str)  # procedure name while it uses the tagger, "" when the live view resumes
    calibration = Signal(bool)  # a delay calibration record exists
    instrument_state = Signal(str, object)  # instrument name, dict of state


class AcquisitionWorker:
    """Reads the tagger, analyses, hands frames to the GUI. Pauses while a procedure uses the tagger."""

    def __init__(self, lab: Lab, bridge: Bridge, poll_s: float = 0.05):
        self.lab = lab
        self.bridge = bridge
        self.poll_s = poll_s
        self.tagger = lab.names("tagger")[0]
        roles = {r: ch for r, (tg, ch) in lab.roles().items() if tg == self.tagger}
        a = lab.config.analysis
        self.analyzer = LiveAnalyzer(roles, a.window_ps, a.accidentals_offset_ps)
        self._stop = threading.Event()
        self._pause = threading.Event()
        self._idle = threading.Event()
        self._lock = threading.Lock()
        self._runfile: RunFile | None = None
        self._rec_opening = False  # a recording's file is being created (outside the lock)
        self._rec_started = self._rec_reported = 0.0
        self._commands: list = []
        self.thread = threading.Thread(target=self._run, name="qlab-acquisition", daemon=True)
        self.frames = 0

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(5)
        self.stop_recording()

    def pause(self) -> None:
        """Stop reading the tagger (a procedure needs it); returns once the loop is idle."""
        self._idle.clear()
        self._pause.set()
        self._idle.wait(5)

    def resume(self) -> None:
        # The realtime window restarts: frames from before the pause would otherwise be merged with new ones.
        self.command(lambda a: a.restart_window())
        self._pause.clear()

    def command(self, fn) -> None:
        """Run ``fn(analyzer)`` on the worker thread (mode changes, reset, histogram pair)."""
        with self._lock:
            self._commands.append(fn)

    def start_recording(self, path) -> None:
        """Create the run file and log every instrument's settings (up to 5 s each), then record the live
        stream into it. Runs off the GUI thread; the lock the GUI thread's commands take is held only to swap
        the file in, so a slow instrument never stalls the window."""
        with self._lock:
            if self._runfile is not None or self._rec_opening:
                return
            self._rec_opening = True
        try:
            rf = RunFile(path, taggers=[self.tagger], procedure="live", config_text=self.lab.loaded.text,
                         config_path=self.lab.loaded.path)
        except Exception as exc:  # noqa: BLE001 - reported in the window; nothing is recording
            with self._lock:
                self._rec_opening = False
            self.bridge.message.emit("error", f"recording not started: {exc}")
            return
        try:
            for name in self.lab.handles:
                rf.log_settings(name, self.lab[name].call("snapshot", timeout=5))
        except Exception as exc:  # noqa: BLE001 - recording goes on; the log says what is missing
            self.bridge.message.emit("warning", f"settings snapshot incomplete: {exc}")
        with self._lock:
            self._runfile, self._rec_opening = rf, False
        self._rec_started = time.monotonic()
        self._rec_reported = 0.0
        self.bridge.recording.emit({"path": str(path), "seconds": 0.0, "bytes": 0})

    def stop_recording(self) -> None:
        with self._lock:
            rf, self._runfile = self._runfile, None
        if rf is not None:
            rf.finish()
            self.bridge.recording.emit(None)
            self.bridge.message.emit("info", f"recording finished: {rf.path}")

    def _run(self) -> None:
        handle = self.lab[self.tagger]
        started = False
        pending = None  # the next read, already running on the tagger's worker while we analyse
        clock = self.lab.clock
        next_read = clock.now()
        while not self._stop.is_set():
            if self._pause.is_set():
                if pending is not None:
                    self._wait(pending)
                    pending = None
                started = False
                self._idle.set()
                time.sleep(0.02)
                continue
            try:
                with self._lock:
                    cmds, self._commands = self._commands, []
                for fn in cmds:
                    fn(self.analyzer)
                if not started:
                    handle.call("start_stream", timeout=10)
                    handle.call("read_chunk", timeout=10)  # discard what accumulated while paused
                    started = True
                # A read every poll_s (not poll_s after the analysis ends): the time spent analysing the
                # last chunk counts towards the wait, so fresh data reaches the window at 1/poll_s.
                clock.sleep(next_read - clock.now())
                next_read = clock.now() + self.poll_s
                current = pending
                pending = handle.submit("read_chunk")
                if current is not None:
                    self._analyse(current.result(timeout=10))
            except Exception as exc:  # noqa: BLE001 - report and keep the window alive
                pending = None
                self.bridge.message.emit("error", f"acquisition: {exc}")
                time.sleep(0.5)
        if pending is not None:
            self._wait(pending)

    @staticmethod
    def _wait(fut) -> None:
        with contextlib.suppress(Exception):  # the stream is being stopped anyway
            fut.result(timeout=10)

    def _analyse(self, chunk) -> None:
        with self._lock:
            if self._runfile is not None:
                self._runfile.append_tags(chunk, flush=False)  # flushed every FLUSH_INTERVAL_S, whole chunks
        frame: LiveFrame = self.analyzer.add(chunk)
        rf = self._runfile
        frame.recording = str(rf.path) if rf is not None else None
        now = time.monotonic()
        if rf is not None and now - self._rec_reported >= 1.0:  # size and duration, once a second
            self._rec_reported = now
            with contextlib.suppress(OSError):
                self.bridge.recording.emit({"path": str(rf.path), "seconds": now - self._rec_started,
                                            "bytes": os.path.getsize(rf.path)})
        self.frames += 1
        self.bridge.frame.emit(frame)


class ProcedureRunner:
    """Runs one procedure at a time on its own thread through the run engine."""

    def __init__(self, lab: Lab, bridge: Bridge, acquisition: AcquisitionWorker | None):
        self.lab = lab
        self.bridge = bridge
        self.acquisition = acquisition
        self.engine: RunEngine | None = None
        self.thread: threading.Thread | None = None
        self.name: str | None = None  # the running (or last) procedure
        self.ending = False  # the procedure has returned or raised; only signalling is left

    @property
    def busy(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def start(self, name: str, params: dict[str, Any]) -> None:
        if self.busy:
            raise RuntimeError("a procedure is already running")
        proc = PROCEDURES[name](**params)  # parameter errors surface here, on the caller's side
        self.engine = RunEngine(self.lab, progress=lambda f, m: self.bridge.progress.emit(f, m))
        self.thread = threading.Thread(target=self._run, args=(proc,), name=f"qlab-{name}", daemon=True)
        self.thread.start()

    def abort(self) -> None:
        if self.engine is not None:
            self.engine.abort()

    def join(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for the procedure thread (closing only); True when it has ended."""
        if self.thread is not None:
            self.thread.join(timeout_s)
        return not self.busy

    def _run(self, proc) -> None:
        self.name = proc.name
        self.ending = False
        if self.acquisition is not None:
            self.acquisition.pause()
            self.bridge.live_paused.emit(proc.name)
        try:
            self.bridge.message.emit("info", f"{proc.name}: started")
            results = self.engine.run(proc)
            self.ending = True  # before the GUI hears of it: a close from there finds nothing left to abort
            self.bridge.message.emit("info", f"{proc.name}: {proc.summary(results)}")
            self.bridge.finished.emit(proc.name, results)
        except BaseException as exc:  # noqa: BLE001 - everything is reported in the window
            self.ending = True
            log.debug("procedure failed: %s", traceback.format_exc())
            self.bridge.failed.emit(proc.name, f"{type(exc).__name__}: {exc}")
        finally:
            self.ending = True
            if self.acquisition is not None:
                self.acquisition.resume()
                self.bridge.live_paused.emit("")
            self.bridge.runner_done.emit()
