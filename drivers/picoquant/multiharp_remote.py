"""The PicoQuant drivers on a simulated mhlib / hhlib served by another process (the network emulator or a
``LabServer``) over ``qlab.transport.sdk_rpc``. ``RemotePicoQuantLib`` stands in for the ctypes library: each
``MH_*`` / ``HH_*`` call is sent with its by-value arguments, its ``ctypes.byref`` outputs and its buffers
described by type and length, and the values the served library wrote are copied back into the caller's ctypes
objects. Simulation only; imports nothing of qlab.sim.

Config block::

    tagger:
      driver: picoquant.multiharp      # or picoquant.hydraharp
      backend: "sdk+tcp://127.0.0.1:PORT"
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np
from qlab.drivers.picoquant.multiharp import PicoQuantHydraHarp, PicoQuantMultiHarp

from qlab.transport.sdk_rpc import SdkRpcClient


def build_remote_multiharp(name: str, limits: Any, cfg: Any, options: dict[str, Any]) -> PicoQuantMultiHarp:
    """A MultiHarp driver on the simulated mhlib served at ``cfg.backend`` (``sdk+tcp://HOST:PORT``)."""
    lib = RemotePicoQuantLib(SdkRpcClient(name, cfg.backend, cfg.timeout_s))
    return PicoQuantMultiHarp(name, limits=limits, options={**options, "backend": "0"}, lib=lib)


def build_remote_hydraharp(name: str, limits: Any, cfg: Any, options: dict[str, Any]) -> PicoQuantHydraHarp:
    """A HydraHarp driver on the simulated hhlib served at ``cfg.backend``."""
    lib = RemotePicoQuantLib(SdkRpcClient(name, cfg.backend, cfg.timeout_s))
    return PicoQuantHydraHarp(name, limits=limits, options={**options, "backend": "0"}, lib=lib)


def _spec(arg: Any) -> dict[str, Any]:
    """How one call argument travels: by value, as a by-reference output, or as a buffer to fill."""
    if isinstance(arg, ctypes.Array):
        return {"arr": arg._type_.__name__, "len": len(arg)}
    obj = getattr(arg, "_obj", None)  # ctypes.byref(x)
    if obj is not None:
        return {"ref": type(obj).__name__, "value": obj.value}
    if isinstance(arg, (bool, int, float, str)):
        return {"v": arg}
    raise TypeError(f"cannot send a {type(arg).__name__} argument to the served library")


def _write_back(arg: Any, value: Any) -> None:
    """Copy what the served library left in an argument into the caller's ctypes object."""
    if value is None:
        return
    if isinstance(arg, ctypes.Array):
        data = np.ascontiguousarray(value) if isinstance(value, np.ndarray) else bytes(value)
        nbytes = min(data.nbytes if isinstance(data, np.ndarray) else len(data), ctypes.sizeof(arg))
        ctypes.memmove(arg, data.ctypes.data if isinstance(data, np.ndarray) else data, nbytes)
    else:
        arg._obj.value = value


class RemotePicoQuantLib:
    """Any ``MH_*`` / ``HH_*`` call of the served library; returns its code (0 ok, negative error)."""

    def __init__(self, rpc: SdkRpcClient):
        self.rpc = rpc

    def __getattr__(self, attr: str) -> Any:
        if not attr.startswith(("MH_", "HH_")):
            raise AttributeError(attr)

        def call(*args: Any) -> int:
            try:
                reply = self.rpc.call("call", attr, [_spec(a) for a in args])
            finally:
                if attr.endswith("CloseDevice"):
                    self.rpc.close()  # a later OpenDevice reconnects
            for arg, out in zip(args, reply["outs"], strict=False):
                _write_back(arg, out)
            return int(reply["code"])

        call.__name__ = attr
        return call
