"""Typed editors for procedure parameters: a check box for booleans, a drop-down for choices, a line edit with
the unit shown once beside it for numbers and text; each field shows its own error.

Every editor exposes its value as text (``text()`` / ``setText()``), the form ``Param.coerce`` takes, so the
window stores and restores all of them the same way.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtWidgets import QCheckBox, QComboBox, QHBoxLayout, QLabel, QLineEdit, QWidget

from qlab.errors import QlabError
from qlab.procedures.engine import Param

# Parameters whose values form a closed set. The procedures declare them only in their help text; a
# ``choices`` attribute on Param (if the engine grows one) takes precedence.
KNOWN_CHOICES: dict[tuple[str, str], list[str]] = {
    ("qkd", "protocol"): ["bbm92", "bb84"],
    ("qkd", "auth"): ["hmac", "wegman-carter"],
    ("tomography", "measurements"): ["16", "36"],
}

ERROR_STYLE = "border: 2px solid #c00; background: #fee;"


class ParamCheck(QCheckBox):
    """A boolean parameter; ``text()`` is "true"/"false" (the box's label stays empty: the form labels it)."""

    def text(self) -> str:  # noqa: D102 - see class docstring
        return "true" if self.isChecked() else "false"

    def setText(self, value: str) -> None:  # noqa: N802 - Qt API
        self.setChecked(str(value).strip().lower() in ("1", "true", "yes", "on"))


class ParamChoice(QComboBox):
    """A parameter with a closed set of values; ``text()`` is the chosen value."""

    def text(self) -> str:  # noqa: D102
        return self.currentText()

    def setText(self, value: str) -> None:  # noqa: N802 - Qt API
        i = self.findText(str(value))
        if i >= 0:
            self.setCurrentIndex(i)


def choices_of(procedure: str, name: str, param: Param) -> list[str] | None:
    declared = getattr(param, "choices", None)
    if declared:
        return [str(c) for c in declared]
    return KNOWN_CHOICES.get((procedure, name))


def make_editor(procedure: str, name: str, param: Param, value: str) -> tuple[QWidget, QWidget]:
    """(editor with text()/setText(), the widget to put in the form: the editor plus its unit label)."""
    choices = choices_of(procedure, name, param)
    editor: QWidget
    if isinstance(param.default, bool):
        editor = ParamCheck()
    elif choices:
        editor = ParamChoice()
        editor.addItems(choices)
    else:
        editor = QLineEdit()
    editor.setText(value)
    editor.setObjectName(f"param_{name}")
    tip = param.help
    if param.minimum is not None or param.maximum is not None:
        tip += f" (range {param.minimum} … {param.maximum} {param.unit})".rstrip()
    editor.setToolTip(tip)
    if not param.unit:
        return editor, editor
    row = QWidget()
    lay = QHBoxLayout(row)
    lay.setContentsMargins(0, 0, 0, 0)
    lay.addWidget(editor, 1)
    lay.addWidget(QLabel(param.unit))
    return editor, row


def check_values(params: dict[str, Param], texts: dict[str, str]) -> dict[str, str]:
    """name -> error text for every value ``Param.coerce`` refuses (empty when all are valid)."""
    errors: dict[str, str] = {}
    for name, p in params.items():
        try:
            p.coerce(name, texts.get(name, p.default))
        except QlabError as exc:
            errors[name] = str(exc)
    return errors


def mark(editor: Any, error: str | None) -> None:
    """Show ``error`` at the field (red frame, tooltip) or clear it."""
    if error is None:
        editor.setStyleSheet("")
        editor.setProperty("param_error", None)
        editor.setToolTip(editor.property("help_tip") or editor.toolTip())
        return
    if editor.property("help_tip") is None:
        editor.setProperty("help_tip", editor.toolTip())
    editor.setProperty("param_error", error)
    editor.setStyleSheet(ERROR_STYLE)
    editor.setToolTip(error)
