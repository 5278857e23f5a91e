"""Build a driver for one instruments.yaml entry: the same driver class on a real or simulated transport.

The one place outside qlab/sim that builds simulated instruments: the catalogue says which simulator
belongs to which driver, and qlab.sim is imported only when a ``backend: sim`` instrument is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qlab.catalogue import entry
from qlab.config.schema import InstrumentConfig
from qlab.errors import InstrumentError
from qlab.instruments.base import Instrument
from qlab.instruments.limits import Limits
from qlab.transport.sdk_rpc import SDK_SCHEME

if TYPE_CHECKING:
    from qlab.sim.model import SimLab


def build_transport(cls: type, name: str, backend: str, timeout_s: float) -> Any:
    """Open the real transport a driver class declares (``transport_kind``) on ``backend``.
    Raises InstrumentError if the port / resource cannot be opened."""
    kind = getattr(cls, "transport_kind", "none")
    terms = {"write_termination": getattr(cls, "write_termination", b""),
             "read_termination": getattr(cls, "read_termination", b"\n"), "timeout_s": timeout_s}
    if kind == "serial":
        from qlab.transport.serial_port import SerialTransport

        return SerialTransport(name, backend, baudrate=cls.baudrate, rtscts=getattr(cls, "rtscts", False),
                               **terms)
    if kind == "visa":
        from qlab.transport.visa import VisaTransport

        return VisaTransport(name, backend, **terms)
    if kind == "zmq":
        from qlab.transport.tcp import parse_host_port
        from qlab.transport.zmq_link import ZmqReqTransport

        host, port = parse_host_port(backend.removeprefix("tcp://"), cls.default_port)
        return ZmqReqTransport(name, host, port, **terms)
    if kind == "tcp":
        from qlab.transport.tcp import TcpTransport, parse_host_port

        host, port = parse_host_port(backend, cls.default_port)
        return TcpTransport(name, host, port, **terms)
    return None


def create_instrument(name: str, cfg: InstrumentConfig, sim: SimLab | None) -> Instrument:
    """Instantiate (not open) the driver of ``name``; with ``backend: sim`` it talks to a device simulator
    coupled to ``sim``. Raises KeyError for a driver id not in the catalogue (the config loader checks
    ids first), ValueError for ``backend: sim`` without a simulated lab, InstrumentError if a real
    transport cannot be opened. ``backend: sdk+tcp://HOST:PORT`` builds an SDK-level driver on a simulated SDK
    served by another process (the catalogue's ``remote_builder``)."""
    found = entry(cfg.driver)
    limits = Limits(name, cfg.limits)
    options: dict[str, Any] = {"axes": {k: a.model_dump() for k, a in cfg.axes.items()},
                               "backend": cfg.backend, "address": cfg.address}
    if cfg.backend == "sim":
        if sim is None:
            raise ValueError(f"{name}: backend 'sim' needs a simulated lab")
        return _create_simulated(name, cfg, sim, limits, options)
    if cfg.backend.startswith(SDK_SCHEME):  # an SDK-level tagger's simulated SDK served by another process
        remote = found.load_remote_builder()
        if remote is None:
            raise InstrumentError(name, f"driver {cfg.driver} has no served-SDK client; backend {cfg.backend!r} "
                                        f"is for SDK-level taggers only")
        return remote(name, limits, cfg, options)
    cls = found.load()
    transport = build_transport(cls, name, cfg.backend, cfg.timeout_s)
    return cls(name, transport=transport, limits=limits, options=options)


def _create_simulated(name: str, cfg: InstrumentConfig, sim: SimLab, limits: Limits,
                      options: dict[str, Any]) -> Instrument:
    """The driver on its simulation: the catalogue's builder (simulated SDK / several links), else the
    driver class linked in process to its wire-protocol device simulator."""
    from qlab.sim.device import sim_link
    from qlab.sim.registry import enable_sim_urls

    enable_sim_urls()  # qlabsim:// URLs reach this lab's devices while it runs
    found = entry(cfg.driver)
    builder = found.load_sim_builder()
    if builder is not None:
        return builder(name, sim, limits, cfg, options)
    cls = found.load()
    device = found.load_simulator()(sim, name, options)
    sim.device_sims[name] = device
    return cls(name, transport=sim_link(cls, name, device, cfg.timeout_s), limits=limits, clock=sim.clock,
               options=options)


def create_simulation(loaded: Any, realtime: bool | None = None, seed: int | None = None) -> Any:
    """The simulation behind a config's ``backend: sim`` instruments, as a ``qlab.sim.session.SimulationSession``
    (its ``lab`` is the SimLab that ``create_instrument`` couples simulators to), or None when no instrument
    is simulated. ``realtime``/``seed`` override the config's simulation section."""
    if not any(i.backend == "sim" for i in loaded.config.instruments.values()):
        return None
    from qlab.sim.session import SimulationSession

    return SimulationSession(loaded, realtime=realtime, seed=seed)
