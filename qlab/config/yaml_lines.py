"""Load YAML while remembering the line of every key, so errors can point at it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from qlab.errors import ConfigError

KeyPath = tuple[str | int, ...]


def load_yaml_with_lines(text: str, source: str) -> tuple[Any, dict[KeyPath, int]]:
    """Parse YAML text. Returns (data, lines) where ``lines`` maps key paths to 1-based line numbers.

    Raises ConfigError naming ``source`` and the line for syntax errors and duplicate keys.
    """
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(source, [(line, "", f"YAML syntax error: {problem}")]) from None
    lines: dict[KeyPath, int] = {}
    if node is None:
        return {}, lines
    constructor = yaml.SafeLoader("")
    problems: list[tuple[int | None, str, str]] = []
    data = _build(node, (), lines, constructor, problems)
    if problems:
        raise ConfigError(source, problems)
    return data, lines


def _build(node: yaml.Node, path: KeyPath, lines: dict[KeyPath, int], constructor: yaml.SafeLoader,
           problems: list) -> Any:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = constructor.construct_object(key_node, deep=True)
            if isinstance(key, int | float | bool):
                key = key if isinstance(key, int) and not isinstance(key, bool) else str(key)
            child = (*path, key)
            if key in out:
                problems.append((key_node.start_mark.line + 1, format_path(child), "duplicate key"))
            lines[child] = key_node.start_mark.line + 1
            out[key] = _build(value_node, child, lines, constructor, problems)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, (*path, i), lines, constructor, problems) for i, item in enumerate(node.value)]
    return constructor.construct_object(node, deep=True)


def format_path(path: KeyPath) -> str:
    """Render a key path the way a user would write it: ``instruments.pump.limits.current_a``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def line_of(lines: dict[KeyPath, int], path: KeyPath) -> int | None:
    """Line of the longest prefix of ``path`` that exists in the file."""
    for n in range(len(path), -1, -1):
        if path[:n] in lines:
            return lines[path[:n]]
    return None


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), [(None, "", f"cannot read file: {exc.strerror}")]) from None
