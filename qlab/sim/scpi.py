"""SCPI parsing for device simulators: long/short header forms, optional nodes, an error queue."""

from __future__ import annotations

import re
from collections.abc import Callable

Handler = Callable[[list[str]], str | None]

ERR_UNDEFINED_HEADER = '-113,"Undefined header"'
ERR_ILLEGAL_PARAM = '-224,"Illegal parameter value"'
ERR_DATA_RANGE = '-222,"Data out of range"'
ERR_SETTINGS_CONFLICT = '-221,"Settings conflict"'
ERR_DATA_TYPE = '-104,"Data type error"'
ERR_DEVICE_FAULT = '-300,"Device-specific error; hardware fault (simulated)"'


def _node_regex(node: str) -> str:
    optional = node.startswith("[") and node.endswith("]")
    node = node.strip("[]")
    m = re.fullmatch(r"([A-Z_*]+)([a-z_]*)(\d?)", node)
    if m is None:
        raise ValueError(node)
    short, rest, suffix = m.groups()
    body = re.escape(short) + (f"(?:{re.escape(rest.upper())})?" if rest else "")
    body += f"(?:{suffix})?" if suffix == "1" else (suffix or "")
    return f"(?::{body})?" if optional else f":{body}"


class ScpiParser:
    """Register patterns like ``SOURce[1]:CURRent[:LEVel]?`` and dispatch parsed lines to handlers."""

    def __init__(self) -> None:
        self._routes: list[tuple[re.Pattern, Handler]] = []
        self.errors: list[str] = []
        self.fault_error: str | None = None  # set: every setting is refused with this error (fault injection)

    def route(self, pattern: str, handler: Handler) -> None:
        query = pattern.endswith("?")
        nodes = re.findall(r"\[?:?[A-Za-z_*]+\d?\]?", pattern.rstrip("?"))
        rx = "".join(_node_regex(n.replace(":", "")) if not n.startswith("[")
                     else _node_regex("[" + n.strip("[]:") + "]") for n in nodes)
        if pattern.startswith("*"):
            rx = re.escape(pattern.rstrip("?"))
        else:
            rx = rx.lstrip(":") if not rx.startswith("(?:") else rx
        self._routes.append((re.compile(f"^:?{rx}{'[?]' if query else ''}$", re.IGNORECASE), handler))

    def push_error(self, err: str) -> None:
        if len(self.errors) < 30:
            self.errors.append(err)

    def pop_error(self) -> str:
        return self.errors.pop(0) if self.errors else '+0,"No error"'

    def execute(self, line: str) -> list[str]:
        """Run one line (commands separated by ';'); returns the reply strings of its queries."""
        out: list[str] = []
        for part in line.strip().split(";"):
            part = part.strip()
            if not part:
                continue
            header, _, args = part.partition(" ")
            params = [a.strip() for a in args.split(",")] if args.strip() else []
            if self.fault_error is not None and not header.endswith("?") and not header.startswith("*"):
                self.push_error(self.fault_error)  # a faulted device refuses settings; queries still answer
                continue
            for rx, handler in self._routes:
                if rx.match(header):
                    try:
                        reply = handler(params)
                    except (ValueError, IndexError):
                        self.push_error(ERR_DATA_TYPE)
                        reply = None
                    if reply is not None:
                        out.append(reply)
                    break
            else:
                self.push_error(ERR_UNDEFINED_HEADER)
        return out


def parse_bool(text: str) -> bool:
    t = text.strip().upper()
    if t in ("ON", "1", "TRUE"):
        return True
    if t in ("OFF", "0", "FALSE"):
        return False
    raise ValueError(text)


def parse_number(text: str, unit: str = "") -> float:
    t = text.strip()
    if unit and t.upper().endswith(unit.upper()):
        t = t[: -len(unit)]
    return float(t)


def handle_scpi_lines(device, parser: ScpiParser, terminator: bytes = b"\n") -> None:
    """Run every complete line in ``device.inbuf`` through ``parser``; each query's answer is one line. While the
    device has a ``device-error`` fault, settings are refused through the error queue."""
    parser.fault_error = ERR_DEVICE_FAULT if getattr(device, "device_error_active", False) else None
    while (i := device.inbuf.find(terminator)) >= 0:
        line = bytes(device.inbuf[:i]).decode("ascii", "replace").strip()
        del device.inbuf[: i + len(terminator)]
        for reply in parser.execute(line):
            device.reply(reply.encode() + terminator)
