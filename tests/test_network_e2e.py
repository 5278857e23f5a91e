"""Issue 16, Must show: the emulator and two nodes as separate processes on loopback.

Each test starts ``qlab network emulate`` and ``qlab node alice|bob`` (``python -m qlab.network``) with short
blocks, waits (bounded) for committed blocks, and stops every process in ``finally`` (the context manager).
The nodes reach their instruments only over ZeroMQ/TCP; the launcher compares the key stores locally.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from qlab.network.emulator import pair_offset_ps
from qlab.network.launcher import NetworkProcesses, compare_stores, prepare_config
from qlab.network.proxy import TcpProxy

ROOT = Path(__file__).resolve().parent.parent
FAST = {"key_management": {"block_duration_s": 3.0, "sync_duration_s": 1.0}}
WAIT_S = 50.0


@pytest.fixture
def network(tmp_path: Path):
    cfg = prepare_config(ROOT / "network.yaml", tmp_path, FAST)
    with NetworkProcesses(cfg, tmp_path) as net:
        yield net


def _paired_blocks(net: NetworkProcesses, name: str) -> int:
    st = net.status(name)
    return 0 if st is None else sum(1 for b in st.get("store", []) if b["paired"])


def _assert_consistent(net: NetworkProcesses) -> dict:
    net.stop("alice")
    net.stop("bob")
    cmp = compare_stores(net.keys("alice"), net.keys("bob"))
    assert cmp["same_ids"], cmp
    assert cmp["keys_identical"], "the two key stores hold different keys under the same IDs"
    for name in ("alice", "bob"):  # no block ID reserved twice on either side
        journal = net.node_dir(name) / "keys" / f"{net.desc.peer_of(name)}.journal"
        reserved = [json.loads(line)["block"] for line in journal.read_text().splitlines()
                    if json.loads(line)["event"] == "reserve"]
        assert len(reserved) == len(set(reserved)), reserved
    return cmp


def test_two_nodes_commit_identical_blocks_and_find_the_clock_offset(network: NetworkProcesses) -> None:
    emu = network.start_emulator()
    truth = emu["truth"]
    rel_drift = truth["bob"]["drift_ppm"] - truth["alice"]["drift_ppm"]
    assert abs(truth["bob"]["clock_offset_ps"] - truth["alice"]["clock_offset_ps"]) > 5e8  # order 1 ms
    assert abs(rel_drift) >= 0.5  # order 1 ppm
    network.start_node("alice")
    network.start_node("bob")
    network.wait_for(lambda: _paired_blocks(network, "alice") >= 2 and network.committed("bob") >= 2, WAIT_S,
                     "two committed blocks")
    alice = network.status("alice")
    clock = alice["clock"]
    err = clock["offset_ps"] - pair_offset_ps(truth, "alice", "bob", clock["at_alice_ps"])
    assert abs(err) < 100, f"clock offset error {err:.1f} ps"
    assert abs(clock["drift_ppm"] - rel_drift) < 0.01, clock
    for name in ("alice", "bob"):  # the node processes never imported the simulation
        assert network.status(name)["sim_modules"] == []
    cmp = _assert_consistent(network)
    assert len(cmp["ids_a"]) >= 2


def test_classical_outage_mid_block_leaves_consistent_stores(network: NetworkProcesses) -> None:
    network.start_emulator()
    network.start_node("alice")
    host, port = network.desc.config.nodes["alice"].endpoint.split(":")
    proxy = TcpProxy(host, int(port)).start()
    try:
        network.start_node("bob", peer=proxy.address)
        network.wait_for(lambda: network.committed("bob") >= 1, WAIT_S, "a first block")
        time.sleep(1.0)  # inside the next block
        before = network.committed("alice")
        proxy.outage(4.0)
        network.wait_for(lambda: network.committed("alice") >= before + 2 and network.committed("bob") >= before + 2,
                         WAIT_S, "two blocks after the outage")
        assert network.status("bob")["sessions"] >= 2  # the connection really broke and was re-established
        assert proxy.connections >= 2
    finally:
        proxy.stop()
    _assert_consistent(network)


def test_node_killed_and_restarted_resumes_with_consistent_stores(network: NetworkProcesses) -> None:
    network.start_emulator()
    network.start_node("alice")
    network.start_node("bob")
    network.wait_for(lambda: network.committed("bob") >= 1, WAIT_S, "a first block")
    time.sleep(1.5)  # inside the next block
    network.stop("bob", kill=True)  # kill -9
    before = network.status("bob")
    assert before is not None
    used_before = before["next_block"]
    network.start_node("bob")
    network.wait_for(lambda: (network.status("bob") or {}).get("blocks_committed", 0) >= 1, WAIT_S,
                     "a block after the restart")
    after = network.status("bob")
    new_ids = {b["block"] for b in after["store"]} - {b["block"] for b in before["store"]}
    assert new_ids and min(new_ids) >= used_before, (before, after)  # resumed with fresh block IDs
    _assert_consistent(network)
