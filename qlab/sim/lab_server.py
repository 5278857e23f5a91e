"""Serve every device simulator of one simulated lab on loopback, each through its own wire protocol.

A driver then reaches its simulated device exactly as it reaches hardware: serial devices through pyserial's
``socket://HOST:PORT`` URL, SCPI-over-VISA devices through a ``TCPIP0::HOST::PORT::SOCKET`` resource, the
DLC pro and Eos on their TCP port (their second port, monitoring line / count stream, on PORT + 1), and the
ID1000 on ZeroMQ (REQ/REP on PORT, the timestamp PUSH on PORT + 1). Nothing of the simulation is visible to
the client process's ``Lab``: its instruments' ``backend`` values are the addresses printed here.

SDK-level taggers (Swabian, PicoQuant) have no wire: their simulated vendor SDK is served over a loopback-only
RPC (``sdk+tcp://127.0.0.1:PORT``, qlab/sim/sdk_server.py) that the driver's client-side SDK stand-in calls.
Devices with no interface at all (passive detectors) are listed in ``LabServer.not_served``. All serving runs
in threads of this process; ``stop()`` ends them and closes every socket. The served lab must follow the wall
clock (``SimLab(..., realtime=True)``): a client on a wire cannot advance a simulated clock.

    python -m qlab.sim.lab_server [--config instruments.yaml] [--json]
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

from qlab.catalogue import DRIVERS, SIM_MODELS
from qlab.errors import QlabError
from qlab.sim.model import SimLab
from qlab.sim.registry import simulator_class
from qlab.sim.serve import serve_connection
from qlab.transport.listen import accepted, free_port_pair

LOOPBACK = "127.0.0.1"
START_TIMEOUT_S = 5.0
JOIN_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class ServedDevice:
    """Where one instrument's simulator listens. ``backend`` is what instruments.yaml's ``backend:`` says."""

    instrument: str
    model: str  # simulator model id, e.g. "ell14"
    protocol: str  # "serial" (socket://), "visa" (TCPIP SOCKET), "tcp", "zmq", "sdk" (simulated-SDK RPC)
    port: int  # the control port; devices with a second channel use port + 1
    backend: str


def _sim_model(driver_id: str) -> str:
    """The simulator model id of a config driver id (``thorlabs.ell14`` -> ``ell14``)."""
    entry = DRIVERS.get(driver_id)
    return entry.sim_model if entry is not None else driver_id.rsplit(".", 1)[-1]


def _driver_transport_kind(model: str) -> str:
    """The transport a model's driver opens ("serial", "visa", "tcp", "zmq", ...)."""
    return getattr(SIM_MODELS[model].load(), "transport_kind", "none")


def _wait_listening(host: str, port: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.02)
    return False


class LabServer:
    """Serves the wire-protocol device simulators of ``sim`` on ``host`` (loopback by default).

    ``ports`` fixes the control port of named instruments; every other one gets an ephemeral port.
    ``start()`` returns {instrument: ServedDevice}; raises QlabError when the lab is not real-time or a
    server cannot start within START_TIMEOUT_S.
    """

    def __init__(self, sim: SimLab, host: str = LOOPBACK, ports: dict[str, int] | None = None):
        if not sim.clock.realtime:
            raise QlabError("a served simulated lab must follow the wall clock: build it with realtime=True")
        self.sim = sim
        self.host = host
        self.ports = dict(ports or {})
        self.devices: dict[str, ServedDevice] = {}
        self.not_served: dict[str, str] = {}  # instrument -> why it has no wire
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []

    # -- lifecycle ---------------------------------------------------------------------------------------------
    def start(self) -> dict[str, ServedDevice]:
        try:
            for name, cfg in self.sim.loaded.config.instruments.items():
                model = _sim_model(cfg.driver)
                try:
                    sim_cls = simulator_class(model)
                except (KeyError, ValueError) as exc:
                    served_sdk = self._serve_sdk(name, model)
                    if served_sdk is not None:
                        self.devices[name] = served_sdk
                    else:
                        self.not_served[name] = str(exc).strip("'\"")
                    continue
                device = self.sim.device_sims.get(name)
                if device is None:
                    options = {"axes": {k: a.model_dump() for k, a in cfg.axes.items()}, "backend": "sim",
                               "address": cfg.address}
                    device = sim_cls(self.sim, name, options)
                    self.sim.device_sims[name] = device
                self.devices[name] = self._serve(name, model, device)
        except BaseException:
            self.stop()
            raise
        return dict(self.devices)

    def stop(self) -> None:
        """Stop every server thread and close every socket (idempotent)."""
        self._stop.set()
        for t in self._threads:
            t.join(JOIN_TIMEOUT_S)
        for s in self._sockets:
            with contextlib.suppress(OSError):
                s.close()
        self._threads, self._sockets = [], []

    def __enter__(self) -> LabServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- reporting ---------------------------------------------------------------------------------------------
    def backends(self) -> dict[str, str]:
        """instrument -> the ``backend`` value a client config uses."""
        return {n: d.backend for n, d in self.devices.items()}

    def describe(self) -> str:
        lines = [f"{d.instrument:<20} {d.model:<10} {d.protocol:<7} {d.backend}" for d in self.devices.values()]
        lines += [f"{n:<20} (not served: {why})" for n, why in self.not_served.items()]
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps({"devices": {n: asdict(d) for n, d in self.devices.items()},
                           "not_served": self.not_served}, indent=2)

    # -- serving -----------------------------------------------------------------------------------------------
    def _thread(self, target: Any, *args: Any, name: str) -> threading.Thread:
        t = threading.Thread(target=target, args=args, name=f"labserver-{name}", daemon=True)
        self._threads.append(t)
        t.start()
        return t

    def _serve(self, name: str, model: str, device: Any) -> ServedDevice:
        own_server = getattr(device, "serve_tcp", None)  # message-framed (ZeroMQ) devices bind their own sockets
        if own_server is not None:
            return self._serve_own(name, model, own_server)
        second = getattr(device, "serve_second_port", None)
        port = self.ports.get(name) or (free_port_pair(self.host) if second is not None else 0)
        srv = socket.create_server((self.host, port))
        srv.settimeout(0.2)
        self._sockets.append(srv)
        port = srv.getsockname()[1]
        self._thread(self._accept, device, srv, name=name)
        if second is not None:  # DLC pro monitoring line, Eos counts: PORT + 1
            self._thread(second, port + 1, self._stop, name=f"{name}-2")
            if not _wait_listening(self.host, port + 1, START_TIMEOUT_S):
                raise QlabError(f"{name}: second port {port + 1} did not start listening")
        kind = _driver_transport_kind(model)
        if kind == "serial":
            return ServedDevice(name, model, "serial", port, f"socket://{self.host}:{port}")
        if kind == "visa":
            return ServedDevice(name, model, "visa", port, f"TCPIP0::{self.host}::{port}::SOCKET")
        return ServedDevice(name, model, "tcp", port, f"{self.host}:{port}")

    def _serve_own(self, name: str, model: str, serve_tcp: Any) -> ServedDevice:
        errors: list[BaseException] = []
        for _ in range(3):  # an ephemeral pair may be taken between probing and binding: try another
            port = self.ports.get(name) or free_port_pair(self.host)
            ready = threading.Event()

            def run(p: int = port, r: threading.Event = ready) -> None:
                try:
                    serve_tcp(p, self._stop, r)
                except Exception as exc:  # noqa: BLE001 - reported to start() below
                    errors.append(exc)
                    r.set()

            n_errors = len(errors)
            self._thread(run, name=name)
            if not ready.wait(START_TIMEOUT_S):
                raise QlabError(f"{name}: ZeroMQ server on port {port} did not start")
            if len(errors) == n_errors:
                return ServedDevice(name, model, "zmq", port, f"{self.host}:{port}")
        raise QlabError(f"{name}: could not bind its ZeroMQ ports: {errors[-1]}")

    def _serve_sdk(self, name: str, model: str) -> ServedDevice | None:
        """An SDK-level tagger's simulated SDK over the loopback SDK RPC (qlab/sim/sdk_server.py), or None when
        the model has no simulated SDK or this server is not on loopback (that channel is simulation-only)."""
        from qlab.sim.sdk_server import LOOPBACK as SDK_HOST
        from qlab.sim.sdk_server import SdkRpcServer, sdk_service

        if self.host not in (SDK_HOST, "localhost"):
            return None
        service = sdk_service(self.sim, name, model)
        if service is None:
            return None
        server = SdkRpcServer(service, SDK_HOST, self.ports.get(name, 0))
        self._thread(server.serve, self._stop, name=name)
        return ServedDevice(name, model, "sdk", server.port, server.address)

    def _accept(self, device: Any, srv: socket.socket) -> None:
        """One client at a time, like the serial port or the single control connection of the real device."""
        for conn in accepted(srv, self._stop):
            serve_connection(device, conn, self._stop)


def main(argv: list[str] | None = None) -> int:
    import argparse

    from qlab.config import load_config

    ap = argparse.ArgumentParser(prog="python -m qlab.sim.lab_server", description=__doc__.split("\n")[0])
    ap.add_argument("--config", help="instruments.yaml of the simulated lab (default: the built-in lab)")
    ap.add_argument("--json", action="store_true", help="print the addresses as JSON")
    args = ap.parse_args(argv)
    server = LabServer(SimLab(load_config(args.config), realtime=True))
    with server:
        print(server.to_json() if args.json else server.describe(), flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
