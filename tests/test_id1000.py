"""ID Quantique ID1000 Time Controller: SCPI strings over a message link (in-process and real ZeroMQ on
loopback), transcript replay, device refusals, and the timestamp stream coupled to the simulated lab."""

from __future__ import annotations

import socket
import threading

import numpy as np
import pytest

from qlab.config.schema import Limit
from qlab.errors import InstrumentError
from qlab.instruments.limits import Limits
from qlab.transport.message import SimMessageTransport
from qlab.transport.transcript import TranscriptTransport
from qlab.types import TagChunk
from tests.transcripts import pairs_from_log

LIMITS = {"delay_ps": Limit(min=0, max=1_000_000), "trigger_level_v": Limit(min=-2.5, max=2.5)}


def _id1000(transport, **options):
    from qlab.drivers.idquantique.id1000 import ID1000

    return ID1000("tc", transport=transport, limits=Limits("tc", LIMITS), options=options,
                  data_link=options.pop("data_link", None) or _NoData())


class _NoData:
    def receive_all(self, wait_s: float = 0.0) -> list:
        return []


def _session(drv) -> None:
    drv.set_trigger_level(2, -0.2)
    assert drv.trigger_level(2) == pytest.approx(-0.2)
    drv.set_delay(1, 1200)
    assert drv.delay(1) == 1200


def test_id1000_strings_simulator_and_transcript() -> None:
    from qlab.drivers.idquantique.id1000_sim import ID1000Simulator

    tr = SimMessageTransport("tc", ID1000Simulator(None, "tc"), read_termination=b"\n")
    tr.log = []
    drv = _id1000(tr).open()
    assert drv.identify().startswith("ID Quantique,ID1000,")
    _session(drv)
    pairs = pairs_from_log(tr.log)
    assert pairs[0][0] == b"*IDN?"
    assert pairs[1:] == [(b"INPU2:THRE -0.200V", b"\n"), (b"INPU2:THRE?", b"-0.200V\n"),
                         (b"DELA1:VALU 1200", b"\n"), (b"DELA1:VALU?", b"1200\n")]
    # Chained commands keep the SCPI path; a leading ':' starts from the root; queries answer in order.
    dev = tr.device
    assert dev.request(b"INPU3:ENAB ON;THRE 0.25V;EDGE FALLING") == b""
    assert dev.request(b"INPU3:ENAB?;THRE?;EDGE?;:RAW3:SEND?") == b"ON;0.250V;FALLING;OFF"
    rt = TranscriptTransport("tc", pairs)
    drv2 = _id1000(rt).open()
    _session(drv2)
    assert rt.finished


def test_id1000_refusals_become_typed_errors() -> None:
    from qlab.drivers.idquantique.id1000_sim import ID1000Simulator

    dev = ID1000Simulator(None, "tc")
    assert dev.request(b"INPU9:ENAB ON") == b"ERROR: No such channel 9"
    assert dev.request(b"FOO:BAR?").startswith(b"ERROR: Undefined header")
    assert dev.request(b"INPU1:EDGE SIDEWAYS") == b"ERROR: Invalid parameter 'SIDEWAYS'"
    drv = _id1000(SimMessageTransport("tc", dev, read_termination=b"\n")).open()
    with pytest.raises(InstrumentError, match=r"'INPU1:THRE 2.400V' refused: ERROR: Threshold 2.4 V out of range"):
        drv.set_trigger_level(1, 2.4)  # inside qlab's limits, outside the device's ±2 V
    with pytest.raises(InstrumentError, match="no input 5"):
        drv.set_delay(5, 0)


def _two_id1000(cfg) -> None:
    from tests.simlab_helpers import ideal_fibres

    ideal_fibres(cfg)
    del cfg["instruments"]["tagger"]
    for party in ("alice", "bob"):
        cfg["instruments"][f"tagger_{party}"] = {
            "driver": "idquantique.id1000", "backend": "sim",
            "limits": {"delay_ps": {"min": 0, "max": 1_000_000}},
            "settings": {"trigger_levels_v": {i: 0.5 for i in range(1, 5)}}}
        for i, k in enumerate("HVDA"):
            cfg["instruments"][f"{party}_{k}"]["channel"] = {"tagger": f"tagger_{party}", "input": i + 1,
                                                             "role": f"{party}.{k}"}
            cfg["instruments"][f"{party}_{k}"]["sim"]["afterpulse_probability"] = 0.0


def test_id1000_stream_and_counters_follow_the_lab(make_lab) -> None:
    from qlab.stream.coincidence import CoincidenceCounter

    lab = make_lab(_two_id1000, seed=91)
    lab["pump"].set_output(True)
    expected = lab.sim.expected_rates()
    a, b = lab["tagger_alice"].acquire(0.5), lab["tagger_bob"].acquire(0.5)
    for chunk, party in ((a, "alice"), (b, "bob")):
        assert np.all(np.diff(chunk.timestamps) >= 0) and set(np.unique(chunk.channels)) == {1, 2, 3, 4}
        for i, k in enumerate("HVDA"):
            det = lab.sim.detectors[f"{party}_{k}"]
            r = expected["singles_hz"][det.name]
            mean = r / (1 + r * det.p.dead_time_ns * 1e-9) * chunk.exposure_s
            n = int(np.count_nonzero(chunk.channels == i + 1))
            assert abs(n - mean) < 4 * np.sqrt(mean) + 0.01 * mean, (party, k, n, mean)
    # The device's own counter sees the same physics (one cycle, Poisson, 4σ).
    counts = lab["tagger_alice"].counts(1, 0.2)
    det = lab.sim.detectors["alice_H"]
    r = expected["singles_hz"]["alice_H"]
    mean = r / (1 + r * det.p.dead_time_ns * 1e-9) * 0.2
    assert abs(counts - mean) < 4 * np.sqrt(mean)
    lab["pump"].set_output(False)
    assert lab["tagger_alice"].counts(1, 0.2) < 0.05 * mean  # darks only
    # Both taggers share the lab's time base here: H/H pairs coincide, H/V do not (ideal fibres, Φ+).
    lab["pump"].set_output(True)
    for t in ("tagger_alice", "tagger_bob"):
        lab[t].read_chunk()  # both streams now cover the same stretch of simulated time
    lab.sim.clock.sleep(0.5)
    a, b = lab["tagger_alice"].read_chunk(), lab["tagger_bob"].read_chunk()
    lo, hi = max(a.t_start_ps, b.t_start_ps), min(a.t_stop_ps, b.t_stop_ps)
    ts = np.concatenate([a.timestamps, b.timestamps])
    ch = np.concatenate([a.channels, b.channels + 4]).astype(np.int16)
    keep = (ts >= lo) & (ts < hi)
    order = np.argsort(ts[keep], kind="stable")
    merged = TagChunk(ts[keep][order], ch[keep][order], lo, hi)
    cable = {1: 0, 5: 15200, 6: 16100}
    res = CoincidenceCounter([1, 5, 6], 2000, cable).process(merged)  # corrected time t - delay
    assert res.pair(1, 5) > 20 * max(res.pair(1, 6), 1)


def _free_port_pair() -> int:
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        try:
            with socket.socket() as s2:
                s2.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port pair")


def test_id1000_over_zeromq_loopback(tmp_path) -> None:
    """`qlab sim serve id1000 --tcp PORT`: the driver's real ZeroMQ transport and data socket."""
    from qlab.drivers.idquantique.id1000 import ID1000

    from qlab.sim.serve import serve
    from qlab.transport.zmq_link import ZmqReqTransport
    from tests.conftest import config_dict, write_config

    cfg = config_dict()
    _two_id1000(cfg)
    path = write_config(tmp_path / "lab.yaml", cfg)
    port = _free_port_pair()
    ready, stop = threading.Event(), threading.Event()
    th = threading.Thread(target=serve, args=("id1000",), daemon=True,
                          kwargs={"config": str(path), "tcp_port": port, "name": "tagger_alice",
                                  "ready": ready, "stop": stop})
    th.start()
    assert ready.wait(10)
    drv = ID1000("tc", transport=ZmqReqTransport("tc", "127.0.0.1", port, timeout_s=2.0, read_termination=b"\n"),
                 limits=Limits("tc", LIMITS), options={"backend": f"127.0.0.1:{port}"})
    try:
        drv.open()
        assert "ID1000" in drv.identify()
        _session(drv)
        for ch in drv.channels():
            drv.set_trigger_level(ch, 0.5)
        chunk = drv.acquire(0.4)  # the served lab runs in real time: darks of four detectors
        assert chunk.duration_s >= 0.4 and len(chunk) > 0
        assert np.all(np.diff(chunk.timestamps) >= 0)
        assert set(np.unique(chunk.channels)) <= {1, 2, 3, 4}
        assert np.all((chunk.timestamps >= chunk.t_start_ps) & (chunk.timestamps < chunk.t_stop_ps))
    finally:
        drv.close()
        stop.set()
        th.join(5)
    assert not th.is_alive()
