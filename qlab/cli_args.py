"""Argument types and help texts of the `qlab` command: values are checked while parsing, so a bad value is
one line on stderr and exit code 2 (argparse's usage error), before any instrument or file is touched."""

from __future__ import annotations

import argparse
import math
import socket
import textwrap
from typing import Any

from qlab.console import fmt

# Coincidence windows beyond 1 ms are not coincidences any more; below 1 ps is below every tagger's bin.
WINDOW_PS_RANGE = (1, 1_000_000_000)
# Tagger inputs: Swabian uses ±1..18 (negative = falling edge), PTU 0-based; the analysis core indexes -256..255.
CHANNEL_RANGE = (-256, 255)


def window_ps(text: str) -> int:
    """A coincidence window in ps: an integer (or integral float like 2e3) in WINDOW_PS_RANGE."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of picoseconds, got {text!r}") from None
    lo, hi = WINDOW_PS_RANGE
    if not math.isfinite(value) or value != int(value) or not lo <= value <= hi:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of picoseconds in [{lo}, {hi:.0e}]")
    return int(value)


def roles(text: str) -> dict[str, int]:
    """``ROLE=CHANNEL,...``: every role once, every channel once, channels in CHANNEL_RANGE."""
    out: dict[str, int] = {}
    for item in text.split(","):
        role, sep, ch = item.strip().partition("=")
        role = role.strip()
        if not sep or not role:
            raise argparse.ArgumentTypeError(f"expected ROLE=CHANNEL, got {item.strip()!r}")
        try:
            channel = int(ch)
        except ValueError:
            raise argparse.ArgumentTypeError(f"channel of {role} must be an integer, got {ch.strip()!r}") from None
        lo, hi = CHANNEL_RANGE
        if not lo <= channel <= hi:
            raise argparse.ArgumentTypeError(f"{role}={channel}: no tagger has input {channel} "
                                             f"(inputs are in [{lo}, {hi}])")
        if role in out:
            raise argparse.ArgumentTypeError(f"role {role} given twice")
        other = next((r for r, c in out.items() if c == channel), None)
        if other is not None:
            raise argparse.ArgumentTypeError(f"{other} and {role} both map to channel {channel}")
        out[role] = channel
    return out


def tcp_port(text: str) -> int:
    """A loopback TCP port in 1..65535 that nothing is listening on yet, or 0: the system picks a free one
    (the chosen port is printed on stdout)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if port == 0:
        return 0
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is outside 1..65535 (0: any free port)")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError as exc:
            raise argparse.ArgumentTypeError(f"port {port} on 127.0.0.1 is not free ({exc.strerror})") from None
    return port


def positive_seconds(text: str) -> float:
    """A finite duration in seconds, > 0 and at most one hour."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not math.isfinite(value) or not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"{text} s is outside (0, 3600] s")
    return value


def seed(text: str) -> int:
    """A simulation seed: an integer in [0, 2**63)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer seed, got {text!r}") from None
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"seed {value} is outside [0, 2**63)")
    return value


def procedures_help() -> str:
    """Every procedure with its parameters (default, unit, allowed range, meaning), for `qlab run --help`."""
    from qlab.procedures import PROCEDURES

    lines = ["procedures and their parameters (set with -p KEY=VALUE):"]
    for name, proc in sorted(PROCEDURES.items()):
        lines.append(f"  {name}: {proc.title}")
        for key, p in proc.params.items():
            lines.append(f"    {key} = {fmt(p.default, p.unit)}{_range_text(p)}")
            lines += textwrap.wrap(p.help, 100, initial_indent=" " * 8, subsequent_indent=" " * 8)
    return "\n".join(lines)


def _range_text(p: Any) -> str:
    if p.minimum is None and p.maximum is None:
        return ""
    lo = "-inf" if p.minimum is None else fmt(float(p.minimum))
    hi = "inf" if p.maximum is None else fmt(float(p.maximum))
    return f"   (range {lo} .. {hi}{' ' + p.unit if p.unit else ''})"
