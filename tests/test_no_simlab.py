"""Procedures run on a lab with no SimLab behind it (issue 13, Must show).

A simulated lab is built from one config and its device simulators are served on loopback by the lab
server; a second config, with no ``backend: sim`` anywhere, opens a ``Lab`` whose instruments reach those
devices only through their wire protocols: the DLC pro over TCP, the ELL14 rotators over pyserial
``socket://``, the ID1000 over ZeroMQ, passive SPCMs with no wire. ``delays``, ``chsh`` and BBM92 ``qkd``
then run through ``RunEngine`` and give the physics of the simulated lab.

The ID1000 has four inputs, enough for CHSH (H/V per party) but not for BBM92 with passive basis choice
(H/V/D/A per party, eight detectors on one tagger). The BBM92 lab's tagger is therefore a Swabian Time
Tagger, an SDK-level device: the lab server serves its simulated vendor SDK over the loopback SDK RPC
(``sdk+tcp://``, qlab/sim/sdk_server.py) and the client's driver runs on the forwarding SDK stand-in
(qlab/drivers/swabian/timetagger_remote.py), so this lab too reaches every device across a process boundary's
transport only.

The served labs follow the wall clock, so integrations are short; every wait is bounded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from qlab.config import load_config
from qlab.lab import Lab
from qlab.procedures.chsh import ChshProcedure
from qlab.procedures.delays import DelaysProcedure
from qlab.procedures.engine import RunEngine
from qlab.procedures.qkd import QkdProcedure
from qlab.sim.interface import SimulatedLab
from qlab.sim.lab_server import LabServer
from qlab.sim.model import SimLab

JITTER_PS = 350.0
DETECTOR_SIM = {"efficiency": 0.6, "dark_count_hz": 100, "dead_time_ns": 22, "jitter_ps": JITTER_PS,
                "afterpulse_probability": 0.0}
ROTATOR_LIMITS = {"position_deg": {"min": -360, "max": 720}}


def _physics(layout: str) -> dict[str, Any]:
    return {"lab": {"name": f"served {layout} lab", "layout": layout, "data_dir": "data"},
            "simulation": {"seed": 20260101, "realtime": True,
                           "source": {"pairs_per_mw": 20000, "visibility": 0.98, "state": "phi_plus"},
                           "fibres": {"alice": {"transmission": 0.8, "unitary": "identity"},
                                      "bob": {"transmission": 0.7, "unitary": "identity"}}},
            "analysis": {"window_ps": 2000, "accidentals_offset_ps": 50000, "integration_s": 0.3}}


def _lab_configs(layout: str, tagger: dict[str, Any], cable_ps: dict[str, int]) -> tuple[dict, dict]:
    """(served config: every instrument ``backend: sim``, client config: backends filled in later)."""
    served: dict[str, Any] = {"pump": {"driver": "toptica.dlcpro", "sim": {"threshold_a": 0.03,
                                                                          "slope_mw_per_a": 250}}}
    client: dict[str, Any] = {"pump": {"driver": "toptica.dlcpro", "limits": {"current_a": {"max": 0.15}},
                                       "settings": {"temperature_c": 25.0, "current_a": 0.12}}}
    for party in ("alice", "bob"):
        rotator = {"driver": "thorlabs.ell14", "axes": {"hwp": {"address": 0, "plate": "half"}},
                   "optics": {"party": party, "stage": "analyzer"}, "limits": ROTATOR_LIMITS}
        served[f"{party}_analyzer"] = dict(rotator)
        client[f"{party}_analyzer"] = dict(rotator)
    for i, (role, delay) in enumerate(cable_ps.items()):
        name = role.replace(".", "_")
        wiring = {"tagger": "tagger", "input": i + 1, "role": role}
        served[name] = {"driver": "excelitas.spcm", "channel": wiring, "sim": {**DETECTOR_SIM, "cable_delay_ps": delay}}
        client[name] = {"driver": "excelitas.spcm", "backend": "passive", "channel": wiring}
    served["tagger"] = {"driver": tagger["driver"], "sim": {"max_rate_hz": 1e9, **tagger.get("sim", {})}}
    client["tagger"] = {"driver": tagger["driver"], "timeout_s": 10.0}
    for inst in served.values():
        inst["backend"] = "sim"
    return {**_physics(layout), "instruments": served}, {**_physics(layout), "instruments": client}


def _write(path: Path, cfg: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@pytest.fixture
def served(tmp_path: Path):
    """served(layout, tagger, cable_ps) -> (SimLab, LabServer, client config dict); stopped at teardown."""
    servers: list[LabServer] = []

    def _serve(layout: str, tagger: dict[str, Any], cable_ps: dict[str, int]):
        served_cfg, client_cfg = _lab_configs(layout, tagger, cable_ps)
        sim = SimLab(load_config(_write(tmp_path / f"served_{layout}.yaml", served_cfg)), realtime=True)
        warm_up(sim)
        server = LabServer(sim)
        servers.append(server)
        server.start()
        for name, backend in server.backends().items():
            client_cfg["instruments"][name]["backend"] = backend
        return sim, server, client_cfg

    yield _serve
    for server in servers:
        server.stop()


def warm_up(sim: SimLab) -> None:
    """Compile the tag generator (Numba) before a client waits on a reply that needs it (as the emulator does)."""
    for tagger in sim.taggers:
        sim.start_stream(tagger)
        sim.read_tags(tagger)
        sim.stop_stream(tagger)


def _open_client(tmp_path: Path, name: str, cfg: dict[str, Any]) -> Lab:
    assert all(i.get("backend", "sim") != "sim" for i in cfg["instruments"].values()), cfg
    lab = Lab(load_config(_write(tmp_path / f"{name}.yaml", cfg)), data_dir=tmp_path / f"{name}-data").open()
    assert lab.sim is None  # nothing of the simulation in this lab: only transports
    return lab


def _assert_delays(result: dict[str, Any], cable_ps: dict[str, int]) -> None:
    found = {int(ch): d for ch, d in result["delays_ps"].items()}
    ref = cable_ps["alice.H"]
    for i, delay in enumerate(cable_ps.values()):
        # The peak position of ~1e4 coincidences is known to far better than the 0.5 ns combined jitter.
        assert abs(found[i + 1] - (delay - ref)) < JITTER_PS, (found, cable_ps)


def test_served_lab_implements_the_simulator_interface(tmp_path: Path) -> None:
    served_cfg, _ = _lab_configs("chsh", {"driver": "idquantique.id1000"}, {"alice.H": 0, "bob.H": 0})
    sim = SimLab(load_config(_write(tmp_path / "lab.yaml", served_cfg)), realtime=True)
    assert isinstance(sim, SimulatedLab)


CHSH_CABLES_PS = {"alice.H": 0, "alice.V": 1200, "bob.H": 15200, "bob.V": 16100}


def test_delays_and_chsh_through_wire_protocols_only(served, tmp_path: Path) -> None:
    sim, server, client_cfg = served("chsh", {"driver": "idquantique.id1000"}, CHSH_CABLES_PS)
    protocols = {d.instrument: d.protocol for d in server.devices.values()}
    assert protocols == {"pump": "tcp", "alice_analyzer": "serial", "bob_analyzer": "serial", "tagger": "zmq"}
    assert server.backends()["alice_analyzer"].startswith("socket://127.0.0.1:")
    assert set(server.not_served) == {"alice_H", "alice_V", "bob_H", "bob_V"}  # passive: no wire
    lab = _open_client(tmp_path, "chsh", client_cfg)
    try:
        engine = RunEngine(lab)
        delays = engine.run(DelaysProcedure(integration_s=0.5), record=False)
        _assert_delays(delays, CHSH_CABLES_PS)
        # The delays were applied over ZeroMQ to the served ID1000 (the sim side sees them).
        applied = sim.taggers["tagger"].input_delay_ps
        assert abs(applied[1] - applied[3] - (CHSH_CABLES_PS["bob.H"] - CHSH_CABLES_PS["alice.H"])) < JITTER_PS
        r = engine.run(ChshProcedure(integration_s=0.3, measure_visibility=False), record=False)
        assert r["S"] > 2.4, r
        assert min(r["coincidences"]) > 1000  # every setting pair really integrated
    finally:
        lab.close()
    assert not sim.lasers["pump"]["on"]  # closing the client lab switched the served laser off over TCP


BBM92_CABLES_PS = {"alice.H": 0, "alice.V": 1200, "alice.D": 2500, "alice.A": 3700,
                   "bob.H": 15200, "bob.V": 16100, "bob.D": 17400, "bob.A": 18900}


def test_bbm92_key_on_a_served_lab(served, tmp_path: Path) -> None:
    sim, server, client_cfg = served("bbm92", {"driver": "swabian.timetagger"}, BBM92_CABLES_PS)
    # An SDK-level tagger has no wire: its simulated vendor SDK is served over the loopback SDK RPC.
    assert server.devices["tagger"].protocol == "sdk" and "tagger" not in server.not_served
    assert client_cfg["instruments"]["tagger"]["backend"].startswith("sdk+tcp://127.0.0.1:")
    lab = _open_client(tmp_path, "bbm92", client_cfg)
    try:
        engine = RunEngine(lab)
        _assert_delays(engine.run(DelaysProcedure(integration_s=0.5), record=False), BBM92_CABLES_PS)
        # The delays were applied through the served SDK (the sim side sees them).
        applied = sim.taggers["tagger"].input_delay_ps
        assert abs(applied[1] - applied[5] - (BBM92_CABLES_PS["bob.H"] - BBM92_CABLES_PS["alice.H"])) < JITTER_PS
        r = engine.run(QkdProcedure(integration_s=2.0, store_keys=False), record=False)
        assert not r["aborted"], r
        assert r["secret_bits"] > 0 and r["keys_identical"]
        assert r["qber"]["Z"] < 0.05 and r["qber"]["X"] < 0.05, r["qber"]
        assert "plob_bound_bps" not in r  # no simulation truth reaches a lab without a SimLab
    finally:
        lab.close()


def test_lab_server_serves_visa_and_serial_devices_and_cleans_up(tmp_path: Path) -> None:
    """The default lab's ITC4001 (SCPI over a VISA TCPIP socket), ELL14 bus (socket://) and Swabian tagger
    (simulated SDK over the SDK RPC) driven from a client lab; after stop() no server thread is left and the
    ports are closed."""
    import socket
    import threading

    from tests.conftest import config_dict

    served_cfg = config_dict()
    sim = SimLab(load_config(_write(tmp_path / "served.yaml", served_cfg)), realtime=True)
    before = set(threading.enumerate())
    server = LabServer(sim)
    try:
        devices = server.start()
        assert devices["pump"].backend.startswith("TCPIP0::127.0.0.1::")
        # The tagger joined the served devices when its simulated SDK got a loopback RPC (issue 16).
        assert set(devices) == {"pump", "alice_compensator", "alice_analyzer", "bob_analyzer", "bob_compensator",
                                "tagger"}
        assert devices["tagger"].backend.startswith("sdk+tcp://127.0.0.1:")
        client = {**served_cfg, "instruments": {}}
        for name, inst in served_cfg["instruments"].items():
            backend = devices[name].backend if name in devices else "passive"
            client["instruments"][name] = {**inst, "backend": backend}
            client["instruments"][name].pop("sim", None)
        lab = _open_client(tmp_path, "client", client)
        try:
            lab["pump"].set_output(True)
            assert sim.lasers["pump"]["on"] and sim.pump_power_mw > 0
            lab["bob_analyzer"].move_absolute(22.5, "hwp")
            assert abs(sim.waveplates["bob"]["analyzer"]["bob_analyzer.hwp"].angle_deg - 22.5) < 0.01
            lab["tagger"].set_delay(3, 1234)
            assert sim.taggers["tagger"].input_delay_ps[3] == 1234
        finally:
            lab.close()
        assert not sim.lasers["pump"]["on"]
    finally:
        server.stop()
    assert not [t for t in set(threading.enumerate()) - before if t.name.startswith("labserver-") and t.is_alive()]
    for d in devices.values():
        with pytest.raises(OSError), socket.create_connection(("127.0.0.1", d.port), timeout=0.5):
            pass
