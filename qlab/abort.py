"""The abort flag of the running procedure, visible to long computations without passing it around.

The run engine installs its ``AbortFlag`` while a procedure runs; long analysis loops (tomography fit,
Cascade, privacy amplification) call ``check_abort()`` between steps, so Ctrl-C, SIGTERM, the GUI's Abort or a
watchdog fault stop them within a fraction of a second. Outside a run ``check_abort`` does nothing.
Leaf module: imports only qlab.errors.
"""

from __future__ import annotations

import threading

from qlab.errors import AbortedError


class AbortFlag(threading.Event):
    """A threading.Event that also holds why it was set: ``reason`` is the exception a check raises (a
    watchdog's InstrumentFault), or None for a user abort (AbortedError)."""

    def __init__(self) -> None:
        super().__init__()
        self.reason: BaseException | None = None

    def set(self, reason: BaseException | None = None) -> None:  # type: ignore[override]
        if not self.is_set() and reason is not None:
            self.reason = reason  # the first reason wins: a fault that caused an abort stays its cause
        super().set()

    def clear(self) -> None:
        self.reason = None
        super().clear()

    def error(self) -> BaseException:
        """The exception a check raises now that the flag is set."""
        return self.reason if self.reason is not None else AbortedError("aborted by the user")

    def check(self) -> None:
        """Raise ``error()`` if the flag is set (AbortedError, or the fault that set it)."""
        if self.is_set():
            raise self.error()


_installed: list[AbortFlag] = []
_lock = threading.Lock()


def install(flag: AbortFlag) -> None:
    """Make ``flag`` the one ``check_abort`` looks at (the run engine, for the length of a run)."""
    with _lock:
        _installed.append(flag)


def uninstall(flag: AbortFlag) -> None:
    with _lock:
        if flag in _installed:
            _installed.remove(flag)


def check_abort() -> None:
    """Raise AbortedError (or the fault that aborted the run) if any installed run's flag is set; a no-op
    outside a run. Cheap: call it between iterations of long loops."""
    for flag in list(_installed):
        flag.check()
