"""SDK-level taggers served across a process boundary (issue 16, deliverable 2's last clause).

The lab server serves each SDK-level tagger's simulated vendor SDK (Swabian ``TimeTagger``, PicoQuant mhlib /
hhlib) over the loopback SDK RPC (qlab/sim/sdk_server.py); a client ``Lab`` whose tagger backend is that
``sdk+tcp://`` address runs the unchanged driver on a forwarding SDK stand-in. The Swabian BBM92 key through
``RunEngine`` is in tests/test_no_simlab.py; here: the codec, PicoQuant tags, a dead server giving a typed error
instead of a hang, the client path importing nothing of qlab.sim, and a network node on a Swabian tagger.
Every server runs on 127.0.0.1, every wait is bounded, everything is stopped in ``finally``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from qlab.config import load_config
from qlab.errors import InstrumentDisconnected, InstrumentError, InstrumentTimeout
from qlab.lab import Lab
from qlab.sim.lab_server import LabServer
from qlab.sim.model import SimLab
from qlab.transport.sdk_rpc import SdkRpcClient, decode, encode
from tests.test_no_simlab import CHSH_CABLES_PS, _lab_configs, _open_client, _write, warm_up

ROOT = Path(__file__).resolve().parent.parent


def _roundtrip(obj: Any) -> Any:
    frames = [bytes(memoryview(f)) if isinstance(f, np.ndarray) else f for f in encode(obj)]
    return decode(frames)


def test_codec_carries_arrays_as_raw_buffers_and_refuses_other_objects() -> None:
    ts = np.arange(1000, dtype=np.int64) * 1_000_003
    obj = {"ts": ts, "ch": np.array([1, 2], np.int32), "empty": np.zeros(0, np.uint8), "b": b"\x00\x01",
           "nested": [1, 2.5, None, "x", True, np.int64(7)], "grid": np.ones((2, 3), np.float64)}
    frames = encode(obj)
    assert len(frames) == 1 + 5  # header + one raw frame per array / bytes: nothing is pickled or text-encoded
    out = _roundtrip(obj)
    assert np.array_equal(out["ts"], ts) and out["ts"].dtype == np.int64 and out["ts"].flags.writeable
    assert out["ch"].dtype == np.int32 and out["empty"].size == 0 and out["grid"].shape == (2, 3)
    assert out["b"] == b"\x00\x01" and out["nested"] == [1, 2.5, None, "x", True, 7]
    with pytest.raises(TypeError):
        encode({"f": object()})
    with pytest.raises(ValueError, match="malformed"):
        decode([b'{"r": {"__nd__": 3, "dtype": "<i8", "shape": [1]}}'])


def _serve(tmp_path: Path, tagger: dict[str, Any]) -> tuple[SimLab, LabServer, dict[str, Any]]:
    served_cfg, client_cfg = _lab_configs("chsh", tagger, CHSH_CABLES_PS)
    sim = SimLab(load_config(_write(tmp_path / "served.yaml", served_cfg)), realtime=True)
    warm_up(sim)
    server = LabServer(sim)
    server.start()
    for name, backend in server.backends().items():
        client_cfg["instruments"][name]["backend"] = backend
    return sim, server, client_cfg


@pytest.mark.parametrize("driver", ["picoquant.multiharp", "picoquant.hydraharp"])
def test_picoquant_served_sdk_gives_tags(tmp_path: Path, driver: str) -> None:
    sim, server, client_cfg = _serve(tmp_path, {"driver": driver})
    try:
        assert server.devices["tagger"].protocol == "sdk" and "tagger" not in server.not_served
        lab = _open_client(tmp_path, "client", client_cfg)
        try:
            tagger = lab["tagger"]
            assert tagger.identify().serial == "1045678"  # through MH_OpenDevice's string buffer
            tagger.set_delay(2, 1500)  # MH_SetInputChannelOffset on the served library
            assert sim.taggers["tagger"].input_delay_ps[2] == 1500
            lab["pump"].set_output(True)
            chunk = tagger.acquire(0.3)
            assert chunk.timestamps.size > 1000, chunk.timestamps.size
            assert set(np.unique(chunk.channels)) <= {1, 2, 3, 4} and np.all(np.diff(chunk.timestamps) >= 0)
            assert chunk.t_stop_ps - chunk.t_start_ps >= 0.3e12
            # The served library executes only its own MH_/HH_ calls.
            rpc = SdkRpcClient("tagger", server.backends()["tagger"], 2.0)
            with pytest.raises(ValueError, match="not served"):
                rpc.call("call", "__class__", [])
            rpc.close()
            # A fault injected on the served library reaches the client as the vendor's error code, typed.
            sim.device_sims["tagger"].inject("device-error")
            with pytest.raises(InstrumentError, match="tagger.*HARDWARE_FAULT"):
                tagger.read_chunk()
            sim.device_sims["tagger"].clear_fault()
        finally:
            lab.close()
    finally:
        server.stop()


def test_swabian_served_sdk_reports_a_disconnect_as_the_vendor_sdk_does(tmp_path: Path) -> None:
    sim, server, client_cfg = _serve(tmp_path, {"driver": "swabian.timetagger"})
    try:
        lab = _open_client(tmp_path, "client", client_cfg)
        try:
            tagger = lab["tagger"]
            assert tagger.identify().serial == sim.taggers["tagger"].p.serial
            tagger.start_stream()
            tagger.read_chunk()
            sim.device_sims["tagger"].inject("disconnect")  # the served SDK raises RuntimeError("... USB ...")
            with pytest.raises(InstrumentDisconnected, match="tagger"):
                tagger.read_chunk()
        finally:
            sim.device_sims["tagger"].clear_fault()
            lab.close()
    finally:
        server.stop()


def test_killed_server_gives_a_typed_error_naming_the_instrument(tmp_path: Path) -> None:
    """``python -m qlab.sim.lab_server`` (the built-in lab, its Swabian tagger on the SDK RPC) is SIGKILLed while
    a client reads its stream: the next read raises InstrumentTimeout naming the tagger within the timeout."""
    proc = subprocess.Popen([sys.executable, "-m", "qlab.sim.lab_server", "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    lab = None
    try:
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
        reader.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (lines and lines[-1].startswith("}")):
            time.sleep(0.05)
        devices = json.loads("".join(lines))["devices"]
        backend = devices["tagger"]["backend"]
        assert backend.startswith("sdk+tcp://127.0.0.1:")
        cfg = {"instruments": {"tagger": {"driver": "swabian.timetagger", "backend": backend, "timeout_s": 10.0}}}
        lab = Lab(load_config(_write(tmp_path / "client.yaml", cfg)), data_dir=tmp_path / "data").open()
        assert lab.sim is None
        tagger = lab["tagger"]
        tagger.start_stream()
        tagger.read_chunk()  # the first read compiles the server's tag generator: the generous timeout covers it
        tagger._sdk.rpc.timeout_s = timeout_s = 1.0
        failures: list[BaseException] = []

        def keep_reading() -> None:
            try:
                while True:
                    tagger.read_chunk()
                    time.sleep(0.01)
            except BaseException as exc:  # noqa: BLE001 - the test inspects it
                failures.append(exc)

        t = threading.Thread(target=keep_reading, daemon=True)
        t.start()
        time.sleep(0.3)
        killed_at = time.monotonic()
        os.kill(proc.pid, signal.SIGKILL)
        t.join(timeout_s + 10)
        assert not t.is_alive(), "the read hung after the server died"
        assert time.monotonic() - killed_at < timeout_s + 10
        assert len(failures) == 1 and isinstance(failures[0], InstrumentTimeout), failures
        assert "tagger" in str(failures[0]) and "did not answer" in str(failures[0])
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        if lab is not None:
            with contextlib.suppress(InstrumentError):  # closing still talks to the dead server: typed, bounded
                lab.close()


def test_client_path_imports_nothing_of_the_simulation() -> None:
    """A node builds SDK-level drivers on served SDKs without loading any qlab.sim module."""
    code = ("import sys\n"
            "from qlab.config.schema import InstrumentConfig\n"
            "from qlab.instruments.factory import create_instrument\n"
            "for d in ('swabian.timetagger', 'picoquant.multiharp', 'picoquant.hydraharp'):\n"
            "    inst = create_instrument('t', InstrumentConfig(driver=d, backend='sdk+tcp://127.0.0.1:9'), None)\n"
            "    assert type(inst).__module__.startswith('qlab.drivers.'), inst\n"
            "print(sorted(m for m in sys.modules if m.startswith('qlab.sim')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_network_node_on_served_swabian_tagger_commits_a_block(tmp_path: Path) -> None:
    """network.yaml with both nodes' taggers ``swabian.timetagger`` (``backend: emulated``): the emulator serves
    their simulated SDKs and the node processes commit a block through them."""
    from qlab.network.launcher import NetworkProcesses, prepare_config

    data = yaml.safe_load((ROOT / "network.yaml").read_text())
    for node in data["nodes"].values():
        for inst in node["instruments"].values():
            if inst["driver"] == "idquantique.id1000":
                inst["driver"] = "swabian.timetagger"
                inst["timeout_s"] = 10.0
    variant = _write(tmp_path / "network-swabian.yaml", data)
    cfg = prepare_config(variant, tmp_path, {"key_management": {"block_duration_s": 3.0, "sync_duration_s": 1.0}})
    with NetworkProcesses(cfg, tmp_path) as net:
        emu = net.start_emulator()
        assert all(emu["devices"][f"{n}_tagger"].startswith("sdk+tcp://127.0.0.1:") for n in ("alice", "bob"))
        net.start_node("alice")
        net.start_node("bob")
        net.wait_for(lambda: net.committed("alice") >= 1 and net.committed("bob") >= 1, 60.0, "a committed block")
        for name in ("alice", "bob"):
            assert net.status(name)["sim_modules"] == []
