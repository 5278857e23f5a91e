"""Shared fixtures: a seeded simulated lab in a temporary data directory, config variants."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO / "instruments.yaml"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--hardware", action="append", default=[], metavar="RESOURCE",
                     help="run hardware tests against RESOURCE (e.g. ell14=/dev/ttyUSB0)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--hardware"):
        return
    skip = pytest.mark.skip(reason="hardware test: pass --hardware MODEL=RESOURCE to run")
    for item in items:
        if "hardware" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "qlab-data"
    monkeypatch.setenv("QLAB_DATA_DIR", str(d))
    return d


def config_dict() -> dict[str, Any]:
    return yaml.safe_load(DEFAULT_CONFIG.read_text())


def write_config(path: Path, cfg: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@pytest.fixture
def make_lab(tmp_path: Path, data_dir: Path):
    """make_lab(modify=callable(cfg_dict), seed=..) -> an open Lab; closed at teardown."""
    from qlab.config import load_config
    from qlab.lab import Lab

    labs = []

    def _make(modify=None, seed: int | None = None, **kw: Any) -> Lab:
        cfg = config_dict()
        if modify is not None:
            modify(cfg)
        path = write_config(tmp_path / f"lab{len(labs)}.yaml", cfg)
        lab = Lab(load_config(path), seed=seed, data_dir=data_dir, **kw).open()
        labs.append(lab)
        return lab

    yield _make
    for lab in labs:
        lab.close()
