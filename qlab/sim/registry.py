"""Which device simulators exist in this process, so URLs and servers can reach them."""

from __future__ import annotations

import threading
import urllib.parse
import weakref
from typing import Any

from qlab.instruments.registry import SIM_MODELS

_labs: weakref.WeakSet = weakref.WeakSet()
_lock = threading.Lock()


def register_lab(lab: Any) -> None:
    with _lock:
        _labs.add(lab)


def unregister_lab(lab: Any) -> None:
    """A closed lab's devices stop being reachable by URL (another lab may reuse the instrument names)."""
    with _lock:
        _labs.discard(lab)


def simulator_class(model: str) -> type:
    entry = SIM_MODELS.get(model)
    if entry is None:
        raise KeyError(f"unknown simulated model {model!r}; known: {sorted(SIM_MODELS)}")
    cls = entry.load()
    sim_cls = getattr(cls, "simulator_class", None)
    if sim_cls is None:
        raise ValueError(f"{model} has no wire-protocol simulator (it is simulated at the API level)")
    return sim_cls


def device_for_url(url: str) -> Any:
    """``qlabsim://MODEL[/INSTRUMENT][?axes=0,1]`` -> a device simulator."""
    parts = urllib.parse.urlsplit(url)
    model = parts.netloc.lower()
    inst = parts.path.strip("/")
    sim_cls = simulator_class(model)
    if inst:
        with _lock:
            for lab in list(_labs):
                dev = lab.device_sims.get(inst)
                if dev is not None and isinstance(dev, sim_cls):
                    return dev
        raise KeyError(f"no running simulated instrument {inst!r} of model {model}")
    query = urllib.parse.parse_qs(parts.query)
    options: dict[str, Any] = {}
    if "axes" in query:
        options["axes"] = {a: {"address": int(a, 16)} for a in query["axes"][0].split(",")}
    return sim_cls(None, model, options)
