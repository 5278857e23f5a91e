"""Text output of `qlab run/demo`, `qlab info` and `qlab analyze` for people (``--json`` is for programs).

Each prints a one-line summary first, then tables with units and sensible digits.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from qlab.console import channel_key, fmt, percent, print_fields, print_table, si

NOT_QLAB = "not a qlab run file; no completion flag"


def print_run_result(proc: Any, results: dict[str, Any], plob_bps: float | None) -> None:
    """The procedure's title and summary, the simulated channel's bound (if any) and the run file."""
    print(f"{proc.title}\n{proc.summary(results)}")
    if plob_bps is not None:
        print(f"simulated channel's PLOB bound (simulation truth, not measured): {plob_bps:.0f} bit/s")
    if "run_file" in results:
        print(f"run file: {display_path(results['run_file'])}")


def display_path(path: str) -> str:
    """``path`` relative to the working directory when it lies below it (shorter to read), else absolute."""
    p = Path(path).resolve()
    try:
        return str(p.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(p)


def result_summary(procedure: str | None, results: list[dict[str, Any]]) -> str:
    """The run's result in one line (several for the demo), from the procedure's own summary of its last
    result entry; explains what is missing when the run stopped early."""
    from qlab.procedures import PROCEDURES

    errors = [r["data"] for r in results if r["name"] == "error"]
    if errors:
        e = errors[-1]
        return f"stopped: {e.get('type', 'error')}: {e.get('error', '')}"
    own = [r["data"] for r in results if r["name"] == procedure]
    if procedure not in PROCEDURES or not own:
        return "no result recorded"
    try:
        text = PROCEDURES[procedure]().summary(own[-1])
        return "\n".join(line.strip() for line in text.splitlines() if line.strip())
    except (KeyError, TypeError, ValueError, IndexError) as exc:  # an older or foreign result layout
        return f"result recorded ({type(exc).__name__} while summarizing: {exc})"


def _start_time(value: Any) -> str:
    if isinstance(value, int | float):
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value))
    return "—" if value is None else str(value)


def print_info(summary: dict[str, Any], results: list[dict[str, Any]]) -> None:
    """`qlab info`: what the file is, whether it is complete, the run's result and the stored streams."""
    if summary.get("qlab"):
        status = "complete" if summary.get("complete") else "INCOMPLETE (the run stopped before it finished)"
        if summary.get("secret"):
            status += "; SECRET raw key-run data, keep owner-only"
    else:
        status = NOT_QLAB
    fields = [("file", str(summary.get("path"))), ("status", status)]
    if summary.get("qlab"):
        fields += [("procedure", str(summary.get("procedure"))),
                   ("started", _start_time(summary.get("start_time"))),
                   ("qlab version", str(summary.get("software_version"))),
                   ("result", result_summary(summary.get("procedure"), results).replace("\n", "\n" + " " * 14))]
    print_fields(fields)
    tags = summary.get("tags", {})
    if tags:
        withheld = summary.get("withheld_tags", {})
        secret_column = any(withheld.values())  # only key runs withhold tags
        rows = []
        for g, n in tags.items():
            duration = summary.get("duration_s", {}).get(g)
            rate = (n + withheld.get(g, 0)) / duration if duration else None  # withheld tags were detected too
            rows.append((g, f"{n:,}", fmt(duration, "s"), si(rate, "Hz"))
                        + ((f"{withheld.get(g, 0):,}",) if secret_column else ()))
        print()
        print_table(rows, ["stream", "tags", "duration", "mean rate"]
                    + (["withheld (secret key-run tags)"] if secret_column else []))
        total = sum(tags.values())
        if total:
            print(f"storage: {fmt(summary.get('bytes_per_tag'), 'bytes/tag', 3)}")
    if summary.get("qlab"):
        names = [r for r in summary.get("results", [])]
        print(f"results: {', '.join(names) if names else 'none'}; settings snapshots: "
              f"{summary.get('settings_entries', 0)}")


def print_analysis(r: dict[str, Any]) -> None:
    """`qlab analyze`: one summary line, then singles, coincidences and (for BBM92 roles) QBER tables."""
    coinc = r.get("coincidences", {})
    head = (f"{r['file']}: {sum(r.get('singles', {}).values()):,} singles, {sum(coinc.values()):,} coincidences "
            f"in {fmt(r.get('duration_s'), 's')} (window {r['window_ps']} ps)")
    if r.get("selection"):
        head += f"; {r['selection']}"
    print(head)
    if r.get("qber"):
        q = r["qber"]
        print(f"QBER Z {percent(q.get('Z'))}, X {percent(q.get('X'))}; sifted Z {r['sifted']['Z']}, "
              f"X {r['sifted']['X']}")
    if "secret_bits" in r:
        state = f"aborted: {r['abort_reason']}" if r.get("aborted") else f"{r['secret_bits']} secret bits"
        print(f"key (not stored): {state}")
    print()
    delays = r.get("delays_ps", {})
    singles = r.get("singles", {})
    roles_by_channel = sorted(((r.get("roles", {}).get(role), role) for role in singles),
                              key=lambda x: channel_key(x[0]))
    rows = [(role, "—" if ch is None else str(ch), f"{singles[role]:,}",
             fmt(delays.get(str(ch)), "ps", 5)) for ch, role in roles_by_channel]
    print_table(rows, ["role", "channel", "singles", "delay"])
    if coinc:
        acc = r.get("accidentals", {})
        print()
        print_table([(pair, f"{n:,}", f"{acc.get(pair, 0):,}") for pair, n in coinc.items()],
                    ["pair", "coincidences", "accidentals"])
    if r.get("nfold"):
        print()
        print_table([(g, f"{n:,}") for g, n in r["nfold"].items()], ["group", "n-fold coincidences"])
