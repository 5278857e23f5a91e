"""The Swabian driver on a simulated ``TimeTagger`` SDK served by another process (the network emulator or a
``LabServer``) over ``qlab.transport.sdk_rpc``: a client-side stand-in for the vendor module that forwards the
calls the driver makes. Simulation only (real hardware loads the vendor module in process); imports nothing of
qlab.sim, so a node process reaches its emulated tagger only through this channel.

Config block (the address is what the emulator / lab server prints)::

    tagger:
      driver: swabian.timetagger
      backend: "sdk+tcp://127.0.0.1:PORT"
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from qlab.drivers.swabian.timetagger import ArrayStreamBuffer, SwabianTimeTagger

from qlab.transport.sdk_rpc import SdkRpcClient


def build_remote(name: str, limits: Any, cfg: Any, options: dict[str, Any]) -> SwabianTimeTagger:
    """A Swabian driver whose SDK is the simulated one served at ``cfg.backend`` (``sdk+tcp://HOST:PORT``).
    Calls time out after ``cfg.timeout_s`` with InstrumentTimeout naming ``name``."""
    sdk = RemoteSwabianSDK(SdkRpcClient(name, cfg.backend, cfg.timeout_s))
    # The served SDK holds one device; the driver's "backend" is the serial it asks for: "" = the first found.
    return SwabianTimeTagger(name, limits=limits, options={**options, "backend": ""}, sdk=sdk)


class RemoteSwabianSDK:
    """The subset of the vendor ``TimeTagger`` module the driver uses, forwarded to a served simulated SDK."""

    ChannelEdge = SimpleNamespace(Rising=1, Falling=2, Both=3)

    def __init__(self, rpc: SdkRpcClient):
        self.rpc = rpc

    def createTimeTagger(self, serial: str = "") -> _RemoteTagger | None:  # noqa: N802 - vendor API names
        info = self.rpc.call("create", serial)
        return None if info is None else _RemoteTagger(self.rpc, info)

    def freeTimeTagger(self, tagger: _RemoteTagger) -> None:  # noqa: N802
        try:
            self.rpc.call("free")
        finally:
            self.rpc.close()  # a later createTimeTagger reconnects

    def TimeTagStream(self, tagger: _RemoteTagger, n_max: int, channels: list[int]) -> _RemoteStream:  # noqa: N802
        return _RemoteStream(self.rpc, n_max, channels)


class _RemoteTagger:
    def __init__(self, rpc: SdkRpcClient, info: dict[str, Any]):
        self.rpc = rpc
        self.serial, self.model = str(info["serial"]), str(info["model"])
        self.inputs = [int(c) for c in info["channels"]]

    def getSerial(self) -> str:  # noqa: N802
        return self.serial

    def getModel(self) -> str:  # noqa: N802
        return self.model

    def getChannelList(self, edge: int = 1) -> list[int]:  # noqa: N802
        return list(self.inputs)

    def setInputDelay(self, ch: int, delay_ps: int) -> None:  # noqa: N802
        self.rpc.call("tagger", "setInputDelay", [int(ch), int(delay_ps)])

    def getInputDelay(self, ch: int) -> int:  # noqa: N802
        return int(self.rpc.call("tagger", "getInputDelay", [int(ch)]))

    def setTriggerLevel(self, ch: int, level_v: float) -> None:  # noqa: N802
        self.rpc.call("tagger", "setTriggerLevel", [int(ch), float(level_v)])

    def getTriggerLevel(self, ch: int) -> float:  # noqa: N802
        return float(self.rpc.call("tagger", "getTriggerLevel", [int(ch)]))


class _RemoteStream:
    def __init__(self, rpc: SdkRpcClient, n_max: int, channels: list[int]):
        self.rpc, self.n_max, self.channels = rpc, int(n_max), [int(c) for c in channels]

    def start(self) -> None:
        self.rpc.call("stream_start", self.n_max, self.channels)

    def stop(self) -> None:
        self.rpc.call("stream_stop")

    def getData(self) -> ArrayStreamBuffer:  # noqa: N802
        return _remote_buffer(self.rpc.call("get_data"))


def _remote_buffer(data: dict[str, Any]) -> ArrayStreamBuffer:
    """A ``TimeTagStreamBuffer`` rebuilt from one reply."""
    return ArrayStreamBuffer(data["ts"], data["ch"], data["types"], data["has_overflows"], data["t_start"],
                             data["t_stop"], data.get("missed"))
