"""Build a driver for one instruments.yaml entry: the same driver class on a real or simulated transport."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qlab.config.schema import InstrumentConfig
from qlab.instruments.base import Instrument
from qlab.instruments.limits import Limits
from qlab.instruments.registry import DRIVERS

if TYPE_CHECKING:
    from qlab.sim.model import SimLab


def build_transport(cls: type, name: str, backend: str, timeout_s: float) -> Any:
    """Open the real transport a driver class declares (``transport_kind``) on ``backend``."""
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
    coupled to ``sim``."""
    cls = DRIVERS[cfg.driver].load()
    limits = Limits(name, cfg.limits)
    options: dict[str, Any] = {"axes": {k: a.model_dump() for k, a in cfg.axes.items()},
                               "backend": cfg.backend, "address": cfg.address}
    if cfg.backend == "sim":
        if sim is None:
            raise ValueError(f"{name}: backend 'sim' needs a simulated lab")
        if hasattr(cls, "simulated"):
            return cls.simulated(name, sim, limits, cfg, options)
        device = cls.simulator_class(sim, name, options)
        sim.device_sims[name] = device
        return cls(name, transport=simulated_transport(cls, name, device, cfg.timeout_s), limits=limits,
                   clock=sim.clock, options=options)
    transport = build_transport(cls, name, cfg.backend, cfg.timeout_s)
    return cls(name, transport=transport, limits=limits, options=options)


def simulated_transport(cls: type, name: str, device: Any, timeout_s: float) -> Any:
    from qlab.transport.simlink import SimLinkTransport

    return SimLinkTransport(name, device, timeout_s=timeout_s,
                            write_termination=getattr(cls, "write_termination", b""),
                            read_termination=getattr(cls, "read_termination", b"\n"))


def create_simulation(loaded: Any, realtime: bool | None = None, seed: int | None = None) -> Any:
    """The simulation behind a config's ``backend: sim`` instruments, as a ``qlab.sim.session.SimulationSession``
    (its ``lab`` is the SimLab that ``create_instrument`` couples simulators to), or None when no instrument
    is simulated. ``realtime``/``seed`` override the config's simulation section."""
    if not any(i.backend == "sim" for i in loaded.config.instruments.values()):
        return None
    from qlab.sim.session import SimulationSession

    return SimulationSession(loaded, realtime=realtime, seed=seed)
