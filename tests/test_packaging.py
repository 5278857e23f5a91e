"""The explicit package list in pyproject.toml must name every package in the tree."""

from __future__ import annotations

import tomllib

from tests.conftest import REPO


def test_every_package_is_listed() -> None:
    py = tomllib.loads((REPO / "pyproject.toml").read_text())
    listed = set(py["tool"]["setuptools"]["packages"])
    mapping = py["tool"]["setuptools"]["package-dir"]
    found = set()
    for name, root in mapping.items():
        base = REPO / root
        for init in base.rglob("__init__.py"):
            rel = init.parent.relative_to(base)
            found.add(".".join([name, *rel.parts]) if rel.parts else name)
    assert found - {"qlab.data"} <= listed, sorted(found - listed)


def test_drivers_and_gui_import_under_qlab() -> None:
    import qlab.drivers.thorlabs.ell14 as ell14
    import qlab.gui

    assert ell14.ELL14.model == "Thorlabs ELL14"
    assert qlab.gui.__name__ == "qlab.gui"
