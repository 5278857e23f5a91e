"""A small request/reply RPC over ZeroMQ that carries vendor-SDK calls between two of our own processes.

Simulation only: SDK-level taggers (Swabian Time Tagger, PicoQuant MultiHarp/HydraHarp) have no wire protocol,
so the network emulator serves each one's *simulated* SDK object (``qlab.sim.sdk_server``) and a node process
drives the unchanged driver on a client-side SDK object that forwards the calls here. Real hardware never uses
this channel (its driver loads the vendor library in process). The server binds to 127.0.0.1 only and trusts
nothing it receives beyond the method names its service whitelists.

Wire format (no pickle: nothing received is ever executed). One ZeroMQ multipart message per request/reply:

- frame 0: UTF-8 JSON header. Request ``{"m": method, "a": [args...]}``; reply ``{"r": result}`` or
  ``{"error": "RuntimeError", "message": "..."}``.
- frames 1..n: raw buffers. A NumPy array in the payload is written as ``{"__nd__": i, "dtype": "<i8",
  "shape": [n]}`` with its bytes in frame i (sent zero-copy for large arrays); ``bytes`` as ``{"__bytes__": i}``.

Backend address: ``sdk+tcp://127.0.0.1:PORT`` (``SDK_SCHEME``).
"""

from __future__ import annotations

import json
import threading
from typing import Any

import numpy as np

from qlab.errors import InstrumentError, InstrumentTimeout

SDK_SCHEME = "sdk+tcp://"

# Exception types a simulated SDK raises that the client re-raises as themselves (drivers map them to their
# typed errors, as they do for the vendor SDK's); anything else arrives as RuntimeError.
_REMOTE_ERRORS: dict[str, type[Exception]] = {e.__name__: e for e in (
    RuntimeError, ValueError, TypeError, KeyError, IndexError, ConnectionError, OSError)}


def is_sdk_address(backend: str) -> bool:
    """True when a config ``backend`` names a served simulated SDK."""
    return backend.startswith(SDK_SCHEME)


def parse_sdk_address(name: str, backend: str) -> tuple[str, int]:
    """(host, port) of ``sdk+tcp://HOST:PORT``. InstrumentError naming ``name`` for anything else."""
    rest = backend.removeprefix(SDK_SCHEME) if is_sdk_address(backend) else ""
    host, _, port = rest.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InstrumentError(name, f"backend {backend!r} is not a simulated-SDK address {SDK_SCHEME}HOST:PORT")
    return host, int(port)


# -- codec -----------------------------------------------------------------------------------------------------
def encode(obj: Any) -> list[Any]:
    """[JSON header, raw buffers...] of ``obj`` (None, bool, int, float, str, bytes, NumPy arrays and scalars,
    lists/tuples and str-keyed dicts of these). TypeError for anything else."""
    frames: list[Any] = []

    def enc(x: Any) -> Any:
        if x is None or isinstance(x, (bool, int, float, str)):
            return x
        if isinstance(x, np.ndarray):
            a = np.ascontiguousarray(x)
            frames.append(a if a.size else b"")
            return {"__nd__": len(frames), "dtype": a.dtype.str, "shape": list(a.shape)}
        if isinstance(x, np.generic):
            return x.item()
        if isinstance(x, (bytes, bytearray, memoryview)):
            frames.append(bytes(x))
            return {"__bytes__": len(frames)}
        if isinstance(x, (list, tuple)):
            return [enc(v) for v in x]
        if isinstance(x, dict):
            if not all(isinstance(k, str) for k in x):
                raise TypeError(f"only str-keyed dicts travel over the SDK RPC, got keys {list(x)[:5]}")
            return {k: enc(v) for k, v in x.items()}
        raise TypeError(f"{type(x).__name__} cannot travel over the SDK RPC")

    header = json.dumps(enc(obj), separators=(",", ":")).encode()
    return [header, *frames]


def decode(frames: list[Any]) -> Any:
    """The object ``encode`` wrote. Arrays come back writable (copied out of the message buffers).
    ValueError for a malformed message."""
    raw = [memoryview(f.buffer if hasattr(f, "buffer") else f) for f in frames]
    if not raw:
        raise ValueError("empty SDK RPC message")

    def dec(x: Any) -> Any:
        if isinstance(x, list):
            return [dec(v) for v in x]
        if isinstance(x, dict):
            if "__nd__" in x:
                buf = raw[int(x["__nd__"])]
                return np.frombuffer(buf, np.dtype(x["dtype"])).reshape(x["shape"]).copy()
            if "__bytes__" in x:
                return raw[int(x["__bytes__"])].tobytes()
            return {k: dec(v) for k, v in x.items()}
        return x

    try:
        return dec(json.loads(raw[0].tobytes()))
    except (IndexError, KeyError, TypeError, json.JSONDecodeError) as exc:
        raise ValueError(f"malformed SDK RPC message: {exc}") from None


# -- client ----------------------------------------------------------------------------------------------------
class SdkRpcClient:
    """REQ socket to a served simulated SDK. ``call`` raises InstrumentTimeout naming the instrument when no
    reply comes within ``timeout_s`` (a dead or stopped emulator never hangs the caller), and re-raises the
    SDK's own exceptions (RuntimeError, ValueError, ...) with their message. Thread-safe (one call at a time)."""

    def __init__(self, name: str, backend: str, timeout_s: float = 2.0):
        self.name = name
        self.backend = backend
        self.host, self.port = parse_sdk_address(name, backend)
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._sock: Any = None

    def _socket(self) -> Any:
        if self._sock is None:
            try:
                import zmq
            except ImportError:
                raise InstrumentError(self.name, "pyzmq is not installed (pip install pyzmq)") from None
            self._zmq = zmq
            sock = zmq.Context.instance().socket(zmq.REQ)
            sock.setsockopt(zmq.LINGER, 0)
            # A lost reply does not wedge the socket: the next request goes out, a late old reply is dropped.
            sock.setsockopt(zmq.REQ_RELAXED, 1)
            sock.setsockopt(zmq.REQ_CORRELATE, 1)
            sock.connect(f"tcp://{self.host}:{self.port}")
            self._sock = sock
        return self._sock

    def call(self, method: str, *args: Any) -> Any:
        """Result of ``method(*args)`` on the served SDK. Raises InstrumentTimeout (no reply in time),
        InstrumentError (malformed reply), or the SDK's exception type."""
        request = encode({"m": method, "a": list(args)})
        with self._lock:
            sock = self._socket()
            zmq = self._zmq
            try:
                sock.send_multipart(request, copy=False, flags=zmq.NOBLOCK)
                ready = sock.poll(int(self.timeout_s * 1000), zmq.POLLIN)
                frames = sock.recv_multipart(copy=False) if ready else None
            except zmq.ZMQError as exc:
                raise InstrumentTimeout(self.name, f"simulated SDK at {self.backend}: {method}: {exc}") from None
        if frames is None:
            raise InstrumentTimeout(self.name, f"simulated SDK at {self.backend} did not answer {method} within "
                                               f"{self.timeout_s:g} s (is the emulator running?)")
        try:
            reply = decode(frames)
        except ValueError as exc:
            raise InstrumentError(self.name, f"simulated SDK at {self.backend}: {exc}") from None
        if "error" in reply:
            raise _REMOTE_ERRORS.get(reply["error"], RuntimeError)(reply.get("message", ""))
        return reply.get("r")

    def close(self) -> None:
        """Close the socket; a later ``call`` reconnects."""
        with self._lock:
            if self._sock is not None:
                self._sock.close(0)
                self._sock = None
