"""Text output for people: numbers with sensible digits, tables and progress.

Tables and progress bars use ``rich`` on a terminal; when the stream is not a terminal (a pipe, a log file,
a test) they are plain text lines, so output stays greppable. Machine output is ``--json`` (qlab.cli), never
this module.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO


def fmt(value: Any, unit: str = "", digits: int = 4) -> str:
    """``value`` for people: floats with ``digits`` significant digits (never ``0.000`` for a small non-zero
    number), ints as they are, None/NaN as an em dash; ``unit`` appended after a space."""
    if value is None or isinstance(value, float) and math.isnan(value):
        return "—"
    if isinstance(value, bool):
        text = "yes" if value else "no"
    elif isinstance(value, int):
        text = str(value)
    elif isinstance(value, float):
        text = f"{value:.{digits}g}" if value != 0 else "0"
        if "e" in text:  # 1.2e+07 -> 1.2e7, easier to read
            mant, exp = text.split("e")
            text = f"{mant}e{int(exp)}"
    elif isinstance(value, dict):
        text = ", ".join(f"{k} {fmt(v)}" for k, v in value.items())
    elif isinstance(value, list | tuple):
        text = ", ".join(fmt(v) for v in value)
    else:
        text = str(value)
    return f"{text} {unit}".rstrip() if unit and text != "—" else text


def si(value: float | None, unit: str, digits: int = 3) -> str:
    """``value`` with an SI prefix (k, M, G) and ``digits`` significant digits: 201234 Hz -> "201 kHz"."""
    if value is None or not math.isfinite(value):
        return "—"
    for factor, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{fmt(value / factor, digits=digits)} {prefix}{unit}"
    return fmt(value, unit, digits)


def percent(value: float | None, digits: int = 2) -> str:
    """A fraction as a percentage with fixed decimals (QBER, efficiencies); None -> em dash."""
    return "—" if value is None else f"{100 * value:.{digits}f} %"


def channel_key(key: Any) -> tuple[int, Any]:
    """Sort key putting numeric channel names in numeric order (2 before 10), others after, alphabetically."""
    try:
        return (0, int(key))
    except (TypeError, ValueError):
        return (1, str(key))


def is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def print_table(rows: Sequence[Sequence[Any]], headers: Sequence[str], title: str = "",
                stream: TextIO | None = None) -> None:
    """Rows of already formatted cells under ``headers``: a rich table on a terminal, aligned text otherwise.
    Columns whose cells all look numeric are right-aligned."""
    stream = stream or sys.stdout
    cells = [[str(c) for c in row] for row in rows]
    numeric = [bool(cells) and all(_looks_numeric(r[i]) for r in cells) for i in range(len(headers))]
    if is_terminal(stream):
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title or None, title_justify="left", header_style="bold")
        for i, h in enumerate(headers):
            table.add_column(h, justify="right" if numeric[i] else "left")
        for row in cells:
            table.add_row(*row)
        Console(file=stream).print(table)
        return
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def line(row: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if numeric[i] else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths,
                                                                                                  strict=True)))
    if title:
        stream.write(title + "\n")
    stream.write(line(headers).rstrip() + "\n")
    for row in cells:
        stream.write(line(row).rstrip() + "\n")


def _looks_numeric(cell: str) -> bool:
    return cell[:1].isdigit() or cell[:1] in "-+—." and cell[1:2].isdigit() or cell == "—"


def print_fields(fields: Sequence[tuple[str, str]], stream: TextIO | None = None) -> None:
    """``label  value`` lines with the labels aligned."""
    stream = stream or sys.stdout
    width = max((len(k) for k, _ in fields), default=0)
    for k, v in fields:
        stream.write(f"{k.ljust(width)}  {v}\n")


class Progress:
    """A progress callback ``(fraction 0..1, message)`` for the run engine.

    On a terminal (stderr) a rich progress bar with elapsed time, redrawn a few times a second so a long
    blocking step still shows time passing; otherwise one plain line per 10 % or per new step message, so
    logs stay short. Use as a context manager (the bar is removed/finished on exit).
    """

    def __init__(self, stream: TextIO | None = None, tty: bool | None = None):
        self.stream = stream or sys.stderr
        self.tty = is_terminal(self.stream) if tty is None else tty
        self._last_fraction = -1.0
        self._last_step = ""
        self._started = time.monotonic()
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> Progress:
        if self.tty:
            from rich.console import Console
            from rich.progress import BarColumn, TaskProgressColumn, TextColumn, TimeElapsedColumn
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                                     TimeElapsedColumn(), console=Console(file=self.stream), transient=False,
                                     refresh_per_second=4)
            self._bar.start()
            self._task = self._bar.add_task("starting", total=1.0)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def __call__(self, fraction: float, message: str) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=fraction, description=message[:60])
            return
        step = message.split(":", 1)[0]
        if fraction - self._last_fraction >= 0.1 or fraction >= 1.0 or step != self._last_step:
            self._last_fraction, self._last_step = fraction, step
            elapsed = time.monotonic() - self._started
            self.stream.write(f"{100 * fraction:5.1f}% {elapsed:6.1f} s  {message}\n")
            self.stream.flush()
