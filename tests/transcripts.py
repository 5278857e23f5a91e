"""Turning a transport's traffic log into (request, reply) pairs, for transcript comparisons."""

from __future__ import annotations


def pairs_from_log(log: list[tuple[str, bytes]]) -> list[tuple[bytes, bytes]]:
    """Group a transport log into (bytes written, bytes read until the next write)."""
    out: list[list[bytes]] = []
    for kind, data in log:
        if kind == "w":
            out.append([data, b""])
        elif out:
            out[-1][1] += data
    return [(w, r) for w, r in out]
