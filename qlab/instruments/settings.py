"""A kind's settings table bound to code: each spec of ``qlab.settings_spec`` with its getter and setter.

Getters and setters are method names of the instrument or callables taking it first. Indexed settings
(``input``/``axis``) take the index before the value: ``getter(inst, index)``, ``setter(inst, index, value)``.
A ``map`` getter returns ``{label: value}`` in one call. The setter is the driver's raw operation; the
instrument's ``write_setting`` checks open state, capability, index, type and limits before calling it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from qlab.settings_spec import SettingSpec, specs_of

Accessor = str | Callable[..., Any] | None


@dataclass(frozen=True)
class Setting:
    """One bound setting: its declarative ``spec`` plus how to read and write it."""

    spec: SettingSpec
    getter: Accessor = None
    setter: Accessor = None

    @property
    def name(self) -> str:
        return self.spec.name

    def read(self, inst: Any, index: Any = None) -> Any:
        fn = _resolve(inst, self.getter)
        return fn() if self.spec.index in (None, "map") else fn(index)

    def write(self, inst: Any, value: Any, index: Any = None) -> None:
        fn = _resolve(inst, self.setter)
        if self.spec.index is None:
            fn(value)
        else:
            fn(index, value)


def _resolve(inst: Any, accessor: Accessor) -> Callable[..., Any]:
    if accessor is None:
        raise TypeError("setting has no accessor for this operation")
    if isinstance(accessor, str):
        return getattr(inst, accessor)
    return lambda *a: accessor(inst, *a)


def bind(kind: str, **accessors: tuple[Accessor, Accessor]) -> dict[str, Setting]:
    """Bind every spec of ``kind``'s table to ``name=(getter, setter)``.

    Raises TypeError at import time if a spec is left unbound, a binding names no spec, or a readable
    (writable) spec lacks its getter (setter) — a table and its code cannot drift apart silently.
    """
    specs = {s.name: s for s in specs_of(kind)}
    if set(specs) != set(accessors):
        raise TypeError(f"{kind} settings: table has {sorted(specs)}, bindings have {sorted(accessors)}")
    out: dict[str, Setting] = {}
    for name, spec in specs.items():
        getter, setter = accessors[name]
        if spec.readable and getter is None or spec.writable and setter is None:
            raise TypeError(f"{kind} setting {name}: readable={spec.readable} writable={spec.writable} "
                            f"but getter={getter!r} setter={setter!r}")
        out[name] = Setting(spec, getter, setter)
    return out
