"""Load YAML while remembering the line of every key, so errors can point at it."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml

from qlab.errors import ConfigError

KeyPath = tuple[str | int, ...]

MAX_CONFIG_BYTES = 1 << 20  # a lab description is a few kB; anything near this is not one
MAX_NESTING = 32  # instruments.yaml nests 5 deep; deep nesting would exhaust the parser's recursion
# Aliases are allowed (yaml.dump writes them for repeated objects) but their expansion is bounded, so a
# "billion laughs" file stops after this many values instead of exhausting memory.
MAX_VALUES = 200_000


def load_yaml_with_lines(text: str, source: str) -> tuple[Any, dict[KeyPath, int]]:
    """Parse YAML text. Returns (data, lines) where ``lines`` maps key paths to 1-based line numbers.

    Raises ConfigError naming ``source`` and the line for syntax errors, merge keys (refused), alias
    expansion past MAX_VALUES values, nesting deeper than MAX_NESTING, non-scalar or duplicate keys
    (``1`` and ``'1'`` are the same key), and numbers that are not finite (``.nan``, ``.inf``).
    """
    lines: dict[KeyPath, int] = {}
    problems: list[tuple[int | None, str, str]] = []
    try:
        _check_events(text, source)
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        if node is None:
            return {}, lines
        data = _build(node, (), lines, yaml.SafeLoader(""), problems, [0], source)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(source, [(line, "", f"YAML syntax error: {problem}")]) from None
    if problems:
        raise ConfigError(source, problems)
    return data, lines


def _check_events(text: str, source: str) -> None:
    """One linear pass over the parser's events, before anything recursive or expanding runs."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        line = event.start_mark.line + 1
        if isinstance(event, yaml.ScalarEvent) and event.value == "<<" and event.style is None:
            raise ConfigError(source, [(line, "", "YAML merge keys (<<) are not allowed in a lab description")])
        if isinstance(event, yaml.MappingStartEvent | yaml.SequenceStartEvent):
            depth += 1
            if depth > MAX_NESTING:
                raise ConfigError(source, [(line, "", f"nesting deeper than {MAX_NESTING} levels")])
        elif isinstance(event, yaml.MappingEndEvent | yaml.SequenceEndEvent):
            depth -= 1


def _build(node: yaml.Node, path: KeyPath, lines: dict[KeyPath, int], constructor: yaml.SafeLoader,
           problems: list, count: list[int], source: str) -> Any:
    lines.setdefault(path, node.start_mark.line + 1)
    count[0] += 1
    if count[0] > MAX_VALUES:
        raise ConfigError(source, [(node.start_mark.line + 1, format_path(path),
                                    f"the file expands to more than {MAX_VALUES} values (YAML aliases)")])
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        seen: set[str] = set()
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                problems.append((key_node.start_mark.line + 1, format_path(path), "a key must be a plain value, "
                                 "not a list or mapping"))
                continue
            key = constructor.construct_object(key_node, deep=True)
            if isinstance(key, int | float | bool) or key is None:
                key = key if isinstance(key, int) and not isinstance(key, bool) else str(key)
            child = (*path, key)
            if str(key) in seen:
                problems.append((key_node.start_mark.line + 1, format_path(child), "duplicate key"))
            seen.add(str(key))
            lines[child] = key_node.start_mark.line + 1
            out[key] = _build(value_node, child, lines, constructor, problems, count, source)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, (*path, i), lines, constructor, problems, count, source)
                for i, item in enumerate(node.value)]
    value = constructor.construct_object(node, deep=True)
    if isinstance(value, float) and not math.isfinite(value):
        problems.append((node.start_mark.line + 1, format_path(path), f"{node.value} is not a finite number"))
    return value


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
    """The file as UTF-8 text. Raises ConfigError for unreadable, oversized or non-UTF-8 files."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(str(path), [(None, "", f"cannot read file: {exc.strerror}")]) from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(str(path), [(None, "", f"file is larger than {MAX_CONFIG_BYTES} bytes; "
                                                 "not a lab description")])
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(str(path), [(line, "", f"not UTF-8 text at byte {exc.start}")]) from None
