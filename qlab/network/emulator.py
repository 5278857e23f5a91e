"""The network emulator: one process holding the coupled physics of the whole network.

One SimLab is built from the network description: the shared pair source at ``source.node``, the source node's
local fibre and the link fibre to the other node (loss from ``length_km × loss_db_per_km``, propagation delay
``length_km × delay_ps_per_km`` added to the far node's detectors, polarization drift), every node's
detectors and its own time tagger with its own clock (``sim.clock_offset_ps``, ``sim.drift_ppm``). The lab
follows the wall clock and every device is served on loopback through its wire protocol
(``qlab.sim.lab_server.LabServer``). ``truth()`` gives what only the emulator knows (clock offsets, path
delays) for the launcher's check; nodes never read it.
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from qlab.config import load_config
from qlab.network.config import NetworkDescription
from qlab.sim.lab_server import LabServer
from qlab.sim.model import SimLab


def emulator_lab_dict(desc: NetworkDescription) -> dict[str, Any]:
    """instruments.yaml content of the emulated network: every node's instruments with ``backend: sim``."""
    cfg = desc.config
    link = desc.link
    src_role = cfg.nodes[cfg.source.node].role
    fibres = {}
    delays = {}
    for node, sec in cfg.nodes.items():
        local = sec.role == src_role
        fibres[sec.role] = {"transmission": cfg.emulator.local_transmission if local else
                            cfg.emulator.local_transmission * link.transmission,
                            "unitary": "identity" if local else link.unitary,
                            "drift_rad_per_sqrt_s": 0.0 if local else link.polarization_drift_rad_per_sqrt_s}
        delays[node] = 0 if local else link.delay_ps
    instruments: dict[str, Any] = {}
    for node, sec in cfg.nodes.items():
        for name, inst in sec.instruments.items():
            block = {**inst, "backend": "sim"}
            lab = desc.node_labs[node]
            if lab.kind(name) == "detector":
                sim = dict(block.get("sim", {}))
                sim["cable_delay_ps"] = int(sim.get("cable_delay_ps", 0)) + delays[node]
                block["sim"] = sim
            instruments[name] = block
    return {"lab": {"name": f"{cfg.network.name} (emulator)", "layout": "bbm92", "data_dir": str(desc.data_dir)},
            "simulation": {"seed": cfg.emulator.seed, "realtime": True,
                           "source": {"pairs_per_mw": cfg.source.pairs_per_mw, "visibility": cfg.source.visibility,
                                      "state": cfg.source.state},
                           "fibres": fibres},
            "analysis": {"window_ps": cfg.key_management.window_ps},
            "instruments": instruments}


class NetworkEmulator:
    """The SimLab of the network and its LabServer. ``start()`` returns the device addresses."""

    def __init__(self, desc: NetworkDescription):
        self.desc = desc
        text = yaml.safe_dump(emulator_lab_dict(desc), sort_keys=False)
        self.sim = SimLab(load_config(f"{desc.path} (emulator)", text=text), realtime=True)
        self.server = LabServer(self.sim, host=desc.config.emulator.host)

    def start(self) -> dict[str, str]:
        self._warm_up()
        self.server.start()
        return self.server.backends()

    def stop(self) -> None:
        self.server.stop()

    def _warm_up(self) -> None:
        """Compile the tag generator (Numba) before any client waits on a reply that needs it."""
        for tagger in self.sim.taggers:
            self.sim.start_stream(tagger)
        time.sleep(0.02)
        for tagger in self.sim.taggers:
            self.sim.read_tags(tagger)
            self.sim.stop_stream(tagger)

    def truth(self) -> dict[str, Any]:
        """Per node: its tagger's clock (offset ps, drift ppm) and the mean true delay (ps) from emission to its
        detectors' tagger inputs (fibre + cables); for the launcher's check of the nodes' clock offsets."""
        out: dict[str, Any] = {}
        for node in self.desc.config.nodes:
            tagger = self.desc.tagger_of(node)
            tg = self.sim.taggers[tagger]
            dets = [d for d in self.sim.detectors.values() if d.tagger == tagger]
            delay = sum(d.p.cable_delay_ps + tg.input_delay_ps.get(d.input, 0) for d in dets) / max(1, len(dets))
            out[node] = {"tagger": tagger, "clock_offset_ps": tg.p.clock_offset_ps, "drift_ppm": tg.p.drift_ppm,
                         "path_delay_ps": delay}
        return out

    def report(self) -> dict[str, Any]:
        return {"devices": self.server.backends(), "not_served": self.server.not_served, "truth": self.truth()}


def pair_offset_ps(truth: dict[str, Any], alice: str, bob: str, t_alice_ps: float) -> float:
    """True t_bob − t_alice (ps) of a pair whose photon reached Alice's tagger at her tagger time ``t_alice_ps``.

    Tagger time T(t) = t (1 + drift) + offset for the lab's true time t; a photon pair emitted at t reaches each
    tagger after its path delay."""
    a, b = truth[alice], truth[bob]
    t = (t_alice_ps - a["clock_offset_ps"]) / (1 + a["drift_ppm"] * 1e-6) - a["path_delay_ps"]
    return (t + b["path_delay_ps"]) * (1 + b["drift_ppm"] * 1e-6) + b["clock_offset_ps"] - t_alice_ps


def far_party(desc: NetworkDescription) -> str:
    """The party at the far end of the link fibre from the source (whose photons the link's physics affects)."""
    src_role = desc.config.nodes[desc.config.source.node].role
    return "bob" if src_role == "alice" else "alice"


def run_emulator(desc: NetworkDescription, json_path: str | Path | None = None,
                 stop: threading.Event | None = None, print_fn: Any = print, scenario: Any = None,
                 scenario_start: str | Path | None = None, scenario_log: str | Path | None = None) -> int:
    """Serve until SIGTERM/SIGINT (or ``stop``); prints the addresses, writes them as JSON to ``json_path``.

    With ``scenario`` (qlab.network.scenario.Scenario) the emulator also runs a TCP proxy to the node that
    listens (its address is ``classical_proxy`` in the JSON: the other node connects there) and applies the
    scenario's timeline, from when the file ``scenario_start`` appears (at once without it), logging each
    change to ``scenario_log`` (JSON lines)."""
    from qlab.network.proxy import TcpProxy
    from qlab.network.scenario import ScenarioRunner, plan
    from qlab.sim.network_physics import NetworkPhysics

    emu = NetworkEmulator(desc)
    stop = stop or threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(ValueError):  # not the main thread
            signal.signal(sig, lambda *_: stop.set())
    proxy = runner = None
    try:
        emu.start()
        report = emu.report()
        if scenario is not None:
            listener = desc.node_by_role("alice")
            host, port = desc.config.nodes[listener].endpoint.rsplit(":", 1)
            proxy = TcpProxy(host, int(port), host=desc.config.emulator.host).start()
            report["classical_proxy"] = {"address": proxy.address, "to": listener}
            physics = NetworkPhysics(emu.sim, far_party(desc))
            runner = ScenarioRunner(plan(scenario, physics, proxy),
                                    None if scenario_log is None else Path(scenario_log), print_fn)
        if json_path is not None:
            tmp = Path(str(json_path) + ".tmp")
            tmp.write_text(json.dumps(report, indent=2))
            tmp.replace(json_path)  # readers see the whole file or none
        print_fn(emu.server.describe())
        for node, t in report["truth"].items():
            print_fn(f"{node}: tagger {t['tagger']} clock offset {t['clock_offset_ps']} ps, drift "
                     f"{t['drift_ppm']} ppm (emulator truth; nodes never read it)")
        if proxy is not None:
            print_fn(f"classical channel proxy {proxy.address} -> {report['classical_proxy']['to']} (scenario "
                     f"{scenario.header.name!r}: connect the other node with --peer {proxy.address})")
        print_fn("serving; Ctrl-C to stop")
        while not stop.wait(0.2):
            if runner is not None and runner.t0 is None and (scenario_start is None or Path(scenario_start).exists()):
                runner.start()
                print_fn(f"scenario {scenario.header.name!r} started")
    finally:
        if runner is not None:
            runner.stop()
        if proxy is not None:
            proxy.stop()
        emu.stop()
    return 0
