"""Serve a simulated vendor SDK (Swabian ``TimeTagger``, PicoQuant mhlib/hhlib) to another of our processes.

SDK-level taggers have no wire protocol. The network emulator / ``LabServer`` still serves them: each one's
simulated SDK object, fed from the served SimLab, answers the calls the driver makes over the small RPC of
``qlab.transport.sdk_rpc`` (JSON header + raw NumPy buffers on a ZeroMQ REP socket). The client side
(``qlab.drivers.swabian.timetagger_remote``, ``qlab.drivers.picoquant.multiharp_remote``) runs the unchanged
driver on a proxy SDK. This is a simulation-only channel between our own processes: it binds to 127.0.0.1 only,
and a service executes only the SDK methods it whitelists.

A service is an object with ``handle(method, args) -> result``; results are whatever ``sdk_rpc.encode`` carries.
"""

from __future__ import annotations

import contextlib
import ctypes
import threading
from typing import Any

import numpy as np

from qlab.catalogue import load_object
from qlab.errors import QlabError
from qlab.transport.sdk_rpc import SDK_SCHEME, decode, encode

LOOPBACK = "127.0.0.1"
POLL_MS = 20

# sim model id -> (simulated SDK class "module:Class", service kind). Strings: qlab.sim imports no driver.
SDK_SIMULATORS = {
    "swabian": ("qlab.drivers.swabian.timetagger_sim:SimulatedSDK", "swabian"),
    "multiharp": ("qlab.drivers.picoquant.multiharp_sim:SimulatedMHLib", "picoquant"),
    "hydraharp": ("qlab.drivers.picoquant.multiharp_sim:SimulatedHHLib", "picoquant"),
}


class SwabianService:
    """The ``TimeTagger`` module calls of the Swabian driver, flattened: one tagger and one stream per device.

    Methods: ``hello``, ``create(serial)`` -> {serial, model, channels} or None, ``free``, ``tagger(method,
    args)`` for the whitelisted tagger calls, ``stream_start(n_max, channels)``, ``stream_stop``, ``get_data``
    -> {ts, ch, types, missed?, t_start, t_stop, has_overflows}."""

    TAGGER_CALLS = frozenset({"setInputDelay", "getInputDelay", "setTriggerLevel", "getTriggerLevel",
                              "getChannelList", "getSerial", "getModel"})

    def __init__(self, sdk: Any):
        self.sdk = sdk
        self._tagger: Any = None
        self._stream: Any = None

    def handle(self, method: str, args: list[Any]) -> Any:
        if method == "hello":
            return {"model_id": self.sdk.model_id, "instrument": self.sdk.name}
        if method == "create":
            tagger = self.sdk.createTimeTagger(*args)
            if tagger is None:
                return None
            self._tagger = tagger
            return {"serial": tagger.getSerial(), "model": tagger.getModel(), "channels": tagger.getChannelList()}
        tagger = self._require_tagger()
        if method == "free":
            self._stream = None
            self.sdk.freeTimeTagger(tagger)
            self._tagger = None
            return None
        if method == "tagger":
            call, call_args = args
            if call not in self.TAGGER_CALLS:
                raise ValueError(f"tagger call {call!r} is not served")
            return getattr(tagger, call)(*call_args)
        if method == "stream_start":
            n_max, channels = args
            self._stream = self.sdk.TimeTagStream(tagger, int(n_max), [int(c) for c in channels])
            self._stream.start()
            return None
        if method == "stream_stop":
            stream, self._stream = self._stream, None
            if stream is not None:
                stream.stop()
            return None
        if method == "get_data":
            if self._stream is None:
                raise RuntimeError("no stream started")
            buf = self._stream.getData()
            out = {"ts": buf.getTimestamps(), "ch": buf.getChannels(), "types": buf.getEventTypes(),
                   "t_start": int(buf.tStart), "t_stop": int(buf.tGetData), "has_overflows": bool(buf.hasOverflows)}
            missed = buf.getMissedEvents()
            if buf.size and np.any(missed):  # all zeros almost always: the client rebuilds them
                out["missed"] = missed
            return out
        raise ValueError(f"unknown method {method!r}")

    def _require_tagger(self) -> Any:
        if self._tagger is None:
            raise RuntimeError("no Time Tagger created (createTimeTagger first)")
        return self._tagger


# ctypes types a PicoQuant call's by-reference / buffer arguments may have (by name, as the client sends them).
_CTYPES = {t.__name__: t for t in (ctypes.c_int, ctypes.c_uint, ctypes.c_double, ctypes.c_char, ctypes.c_int64,
                                   ctypes.c_uint64, ctypes.c_short, ctypes.c_ushort)}
_MAX_BUFFER_BYTES = 64 << 20


class PicoQuantService:
    """mhlib / hhlib calls: ``hello`` and ``call(fn, argspec)`` -> {"code", "outs"}.

    argspec items: ``{"v": value}`` (by value), ``{"ref": ctype, "value": x}`` (``ctypes.byref``), ``{"arr": ctype,
    "len": n}`` (a buffer the library fills). ``outs`` holds, per argument, the value the call left in a reference,
    the bytes of a char buffer, or for a FIFO read the first ``nactual`` records only (the client's buffer is a
    million records; only what the library filled travels)."""

    def __init__(self, lib: Any):
        self.lib = lib
        self._buffers: dict[tuple[str, int], Any] = {}  # reused: a 4 MB FIFO buffer per read would be waste

    def handle(self, method: str, args: list[Any]) -> Any:
        if method == "hello":
            return {"model_id": self.lib.model_id, "instrument": self.lib.name}
        if method != "call":
            raise ValueError(f"unknown method {method!r}")
        fn, spec = args
        if not (isinstance(fn, str) and fn[:3] in ("MH_", "HH_") and fn[3:].isidentifier()):
            raise ValueError(f"library call {fn!r} is not served")
        call_args: list[Any] = []
        objs: list[Any] = []
        for item in spec:
            if "v" in item:
                call_args.append(item["v"])
                objs.append(None)
            elif "ref" in item:
                obj = _ctype(item["ref"])(item.get("value", 0))
                call_args.append(ctypes.byref(obj))
                objs.append(obj)
            elif "arr" in item:
                obj = self._buffer(item["arr"], int(item["len"]))
                call_args.append(obj)
                objs.append(obj)
            else:
                raise ValueError(f"bad argument spec {item!r}")
        code = int(getattr(self.lib, fn)(*call_args))
        refs = [o.value for o in objs if o is not None and not isinstance(o, ctypes.Array)]
        outs: list[Any] = []
        for obj in objs:
            if obj is None:
                outs.append(None)
            elif not isinstance(obj, ctypes.Array):
                outs.append(obj.value)
            elif obj._type_ is ctypes.c_char:
                outs.append(bytes(obj.raw))
            else:
                n = len(obj)
                if fn.endswith("ReadFiFo") and refs:  # only the records the library reports it wrote
                    n = max(0, min(n, int(refs[-1])))
                outs.append(np.frombuffer(obj, np.dtype(obj._type_), count=n))
        return {"code": code, "outs": outs}

    def _buffer(self, type_name: str, length: int) -> Any:
        ctype = _ctype(type_name)
        if not 0 < length * ctypes.sizeof(ctype) <= _MAX_BUFFER_BYTES:
            raise ValueError(f"buffer of {length} {type_name} is out of range")
        key = (type_name, length)
        buf = self._buffers.get(key)
        if buf is None:
            buf = self._buffers[key] = (ctype * length)()
        elif ctype is ctypes.c_char:
            ctypes.memset(buf, 0, length)  # a string buffer starts empty, as the caller's did
        return buf


def _ctype(name: str) -> Any:
    try:
        return _CTYPES[name]
    except KeyError:
        raise ValueError(f"ctypes type {name!r} is not served") from None


def sdk_service(sim: Any, name: str, model: str) -> Any:
    """The RPC service of tagger ``name`` (sim model ``model``) on its simulated SDK, building the SDK and
    registering it in ``sim.device_sims`` (where fault injection finds it) unless one is there; None when the
    model has no simulated SDK."""
    found = SDK_SIMULATORS.get(model)
    if found is None:
        return None
    sdk_ref, kind = found
    sdk = sim.device_sims.get(name)
    if sdk is None:
        sdk = sim.device_sims[name] = load_object(sdk_ref)(sim, name)
    return SwabianService(sdk) if kind == "swabian" else PicoQuantService(sdk)


class SdkRpcServer:
    """A REP socket on ``127.0.0.1:port`` (0 = ephemeral, bound in the constructor so ``port`` is known at once)
    answering ``service`` calls until ``serve``'s stop event is set. QlabError for a non-loopback host (this
    channel is unauthenticated and simulation-only) or a port that cannot be bound."""

    def __init__(self, service: Any, host: str = LOOPBACK, port: int = 0):
        if host not in (LOOPBACK, "localhost"):
            raise QlabError(f"the simulated-SDK channel is served on {LOOPBACK} only, not {host!r}")
        import zmq

        self.service = service
        self._zmq = zmq
        self._sock = zmq.Context.instance().socket(zmq.REP)
        self._sock.setsockopt(zmq.LINGER, 0)
        try:
            if port:
                self._sock.bind(f"tcp://{LOOPBACK}:{port}")
                self.port = port
            else:
                self.port = self._sock.bind_to_random_port(f"tcp://{LOOPBACK}")
        except zmq.ZMQError as exc:
            self._sock.close(0)
            raise QlabError(f"simulated-SDK server: cannot bind {LOOPBACK}:{port or 'ephemeral'}: {exc}") from None

    @property
    def address(self) -> str:
        """The ``backend`` value a client config uses."""
        return f"{SDK_SCHEME}{LOOPBACK}:{self.port}"

    def serve(self, stop: threading.Event) -> None:
        """Answer requests until ``stop`` is set, then close the socket. A request the service rejects gets an
        error reply (type name and message); the server keeps serving."""
        zmq, sock = self._zmq, self._sock
        try:
            while not stop.is_set():
                if not sock.poll(POLL_MS, zmq.POLLIN):
                    continue
                frames = sock.recv_multipart(copy=False)
                try:
                    request = decode(frames)
                    reply = {"r": self.service.handle(str(request["m"]), list(request.get("a", [])))}
                    out = encode(reply)
                except Exception as exc:  # noqa: BLE001 - every failure goes back to the caller, typed
                    out = encode({"error": type(exc).__name__, "message": str(exc)})
                with contextlib.suppress(zmq.ZMQError):  # the client went away: its next request resets REP
                    sock.send_multipart(out, copy=False)
        finally:
            sock.close(0)
