"""Which device simulators exist in this process, so URLs and servers can reach them."""

from __future__ import annotations

import threading
import urllib.parse
import weakref
from typing import Any

from qlab.catalogue import sim_model

_labs: weakref.WeakSet = weakref.WeakSet()
_lock = threading.Lock()


def enable_sim_urls() -> None:
    """Register the ``qlabsim://`` pyserial URL handler (and so ``ASRLqlabsim://`` VISA resources).

    Called by the simulation side (a simulated lab, the factory building simulated instruments, `qlab sim
    serve`), so the transports need not know the simulation exists. Idempotent."""
    import qlab.sim.serial_url  # noqa: F401 - registers on import


def register_lab(lab: Any) -> None:
    """Make ``lab``'s device simulators reachable as ``qlabsim://MODEL/INSTRUMENT``."""
    enable_sim_urls()
    with _lock:
        _labs.add(lab)


def unregister_lab(lab: Any) -> None:
    """A closed lab's devices stop being reachable by URL (another lab may reuse the instrument names)."""
    with _lock:
        _labs.discard(lab)


def simulator_class(model: str) -> type:
    """The wire-protocol device simulator of a `qlab sim` model id. KeyError for an unknown model,
    ValueError for a model simulated only at the API level."""
    return sim_model(model).load_simulator()


def device_for_url(url: str) -> Any:
    """``qlabsim://MODEL[/INSTRUMENT][?axes=0,1]`` -> a device simulator. KeyError if the model or the
    running instrument is unknown, ValueError if the model has no wire-protocol simulator."""
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
