"""Issue 16: the network description, the node key store's reconciliation, the emulator's lab, the proxy, and
that the node's code never imports the simulation (fast; no subprocesses)."""

from __future__ import annotations

import ast
import socket
import stat
import threading
from pathlib import Path

import numpy as np
import pytest
import yaml

from qlab.errors import ConfigError
from qlab.network.config import load_network
from qlab.network.keys import LinkKeyStore
from qlab.network.proxy import TcpProxy

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "network.yaml"


def test_example_network_is_valid_and_packaged() -> None:
    desc = load_network(EXAMPLE)
    assert sorted(desc.config.nodes) == ["alice", "bob"]
    assert desc.config.source.node == "alice"
    assert desc.tagger_of("alice") == "alice_tagger" and desc.tagger_of("bob") == "bob_tagger"
    assert (ROOT / "qlab" / "data" / "network.yaml").read_text() == EXAMPLE.read_text()
    link = desc.link
    assert link.transmission == pytest.approx(10 ** (-(0.2 * 10 + 1.0) / 10))
    assert link.delay_ps == pytest.approx(49e6, rel=0.01)  # ~4.9 µs/km over 10 km


def _bad(tmp_path: Path, edit) -> ConfigError:
    data = yaml.safe_load(EXAMPLE.read_text())
    edit(data)
    path = tmp_path / "network.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(ConfigError) as exc:
        load_network(path)
    return exc.value


def test_errors_name_file_line_and_key(tmp_path: Path) -> None:
    err = _bad(tmp_path, lambda d: d["links"]["alice-bob"].update(length_km=-3))
    assert any(key == "links.alice-bob.length_km" and line for line, key, _ in err.problems), err.problems
    assert "network.yaml:" in str(err)
    err = _bad(tmp_path, lambda d: d["nodes"]["bob"]["instruments"]["bob_H"]["channel"].update(role="alice.H"))
    assert any(key.startswith("nodes.bob.instruments.bob_H") for _, key, _ in err.problems), err.problems
    err = _bad(tmp_path, lambda d: d["nodes"]["bob"]["instruments"]["bob_tagger"].update(driver="nope.x"))
    assert any(key == "nodes.bob.instruments.bob_tagger.driver" for _, key, _ in err.problems), err.problems
    err = _bad(tmp_path, lambda d: d["source"].update(node="carol"))
    assert any(key == "source.node" for _, key, _ in err.problems)
    err = _bad(tmp_path, lambda d: d["key_management"].update(auth="none"))
    assert any(key == "key_management.auth" for _, key, _ in err.problems)


def test_node_lab_needs_the_emulator_address(tmp_path: Path) -> None:
    desc = load_network(EXAMPLE)
    with pytest.raises(ConfigError, match="nodes.bob.instruments.bob_tagger.backend"):
        desc.lab_dict("bob", {})
    lab = desc.lab_dict("bob", {"bob_tagger": "127.0.0.1:5555", "bob_compensator": "socket://127.0.0.1:5556"})
    assert lab["instruments"]["bob_tagger"]["backend"] == "127.0.0.1:5555"
    assert all("sim" not in i for i in lab["instruments"].values())  # a node never simulates


def test_emulator_lab_couples_both_nodes_with_own_clocks() -> None:
    from qlab.network.emulator import emulator_lab_dict

    desc = load_network(EXAMPLE)
    lab = emulator_lab_dict(desc)
    fibres = lab["simulation"]["fibres"]
    assert fibres["bob"]["transmission"] == pytest.approx(0.8 * desc.link.transmission)
    assert fibres["alice"]["transmission"] == pytest.approx(0.8)
    assert lab["instruments"]["bob_H"]["sim"]["cable_delay_ps"] == 2000 + desc.link.delay_ps
    assert lab["instruments"]["alice_H"]["sim"]["cable_delay_ps"] == 1000
    clocks = {n: lab["instruments"][n]["sim"]["clock_offset_ps"] for n in ("alice_tagger", "bob_tagger")}
    assert clocks["alice_tagger"] != clocks["bob_tagger"]


def _bits(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2, n).astype(np.uint8)


def test_key_store_reserves_durably_and_never_reuses_ids(tmp_path: Path) -> None:
    s = LinkKeyStore(tmp_path / "keys", "bob")
    assert s.next_block == 1
    s.reserve(1)
    s.commit(1, _bits(100, 1), paired=True)
    s.reserve(2)  # in flight when the process dies
    again = LinkKeyStore(tmp_path / "keys", "bob")  # restart
    assert again.next_block == 3
    with pytest.raises(ValueError, match="never reused"):
        again.reserve(2)
    assert np.array_equal(again.read_keys()[1], _bits(100, 1))
    assert stat.S_IMODE((tmp_path / "keys").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "keys" / "bob.keys").stat().st_mode) == 0o600


def test_a_crash_mid_write_leaves_a_store_that_restarts_and_keeps_recording(tmp_path: Path) -> None:
    """kill -9 while a key record and a journal line were half written: the restarted store ignores both, and
    what it records next is read back after another restart (not glued behind the torn bytes)."""
    s = LinkKeyStore(tmp_path / "keys", "bob")
    s.reserve(1)
    s.commit(1, _bits(100, 1), paired=True)
    s.reserve(2)
    s.commit(2, _bits(520, 2), paired=True)
    keys, journal = tmp_path / "keys" / "bob.keys", tmp_path / "keys" / "bob.journal"
    keys.write_bytes(keys.read_bytes()[:-30])  # block 2's record torn
    journal.write_bytes(journal.read_bytes() + b'{"event": "reserve", "blo')  # a torn journal line
    again = LinkKeyStore(tmp_path / "keys", "bob")
    assert sorted(again.read_keys()) == [1]
    n = again.next_block
    again.reserve(n)
    again.commit(n, _bits(64, 3), paired=True)
    third = LinkKeyStore(tmp_path / "keys", "bob")
    assert sorted(third.read_keys()) == [1, n] and n in {b for b in third.committed}
    assert np.array_equal(third.read_keys()[n], _bits(64, 3))
    with pytest.raises(ValueError, match="never reused"):
        third.reserve(n)


def test_reconcile_drops_a_block_held_on_one_side_only(tmp_path: Path) -> None:
    """Bob stored block 2 but Alice never got his acknowledgement: both end without block 2."""
    alice, bob = LinkKeyStore(tmp_path / "a", "bob"), LinkKeyStore(tmp_path / "b", "alice")
    for s in (alice, bob):
        s.reserve(1)
        s.reserve(2)
    alice.commit(1, _bits(64, 1), paired=True)
    bob.commit(1, _bits(64, 1), paired=False)
    bob.commit(2, _bits(64, 2), paired=False)  # the last acknowledgement was lost
    a_asks, b_asks = alice.unpaired(), bob.unpaired()
    assert (a_asks, b_asks) == ([], [1, 2])
    a_ans, b_ans = bob.holds(a_asks), alice.holds(b_asks)
    alice.settle(a_ans, a_asks)
    paired, dropped = bob.settle(b_ans, b_asks)
    assert (paired, dropped) == ([1], [2])
    assert sorted(alice.read_keys()) == sorted(bob.read_keys()) == [1]
    restarted = LinkKeyStore(tmp_path / "b", "alice")
    assert sorted(restarted.read_keys()) == [1] and restarted.next_block == 3
    assert [b.paired for b in restarted.blocks()] == [True]


def test_half_finished_reconcile_never_drops_a_block_both_hold(tmp_path: Path) -> None:
    """Alice learns Bob holds block 1 (and pairs it); Bob never hears back; next session Bob asks again."""
    alice, bob = LinkKeyStore(tmp_path / "a", "bob"), LinkKeyStore(tmp_path / "b", "alice")
    for s in (alice, bob):
        s.reserve(1)
        s.commit(1, _bits(64, 3), paired=False)
    alice.settle(bob.holds([1]), [1])  # Alice's side of the exchange completed
    assert alice.unpaired() == [] and bob.unpaired() == [1]
    bob.settle(alice.holds(bob.unpaired()), bob.unpaired())  # the next session
    assert sorted(alice.read_keys()) == sorted(bob.read_keys()) == [1]


def _module_level(body: list[ast.stmt]):
    """Statements run at import (not inside functions, not under ``if TYPE_CHECKING``)."""
    for stmt in body:
        if isinstance(stmt, ast.If):
            if "TYPE_CHECKING" not in ast.unparse(stmt.test):
                yield from _module_level(stmt.body + stmt.orelse)
        elif isinstance(stmt, ast.Try):
            yield from _module_level(stmt.body + stmt.orelse + stmt.finalbody)
        elif isinstance(stmt, ast.Import | ast.ImportFrom):
            yield stmt


def test_node_code_never_imports_the_simulation() -> None:
    """Static import graph: importing the node's modules (and the qlab modules they import) never reaches
    qlab.sim. Function-level imports (the factory's simulation path for ``backend: sim``) are covered at run time:
    the end-to-end test asserts the node processes' sys.modules hold no qlab.sim module."""
    pkg = ROOT / "qlab"
    seen: set[str] = set()
    todo = ["qlab.network.node", "qlab.network.link", "qlab.network.keys", "qlab.network.timing",
            "qlab.network.config"]  # (qlab.network.cli imports the emulator lazily: checked at run time)
    while todo:
        mod = todo.pop()
        if mod in seen:
            continue
        seen.add(mod)
        path = pkg.joinpath(*mod.split(".")[1:]).with_suffix(".py")
        if not path.exists():
            path = pkg.joinpath(*mod.split(".")[1:], "__init__.py")
        if not path.exists():
            continue
        tree = ast.parse(path.read_text())
        for node in _module_level(tree.body):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("qlab"):
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names if a.name.startswith("qlab")]
            else:
                continue
            for name in names:
                assert not (name == "qlab.sim" or name.startswith("qlab.sim.")), f"{mod} imports {name}"
                todo.append(name)
    assert "qlab.lab" in seen and "qlab.qkd.bbm92" in seen


def test_proxy_forwards_and_cuts(tmp_path: Path) -> None:
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    got: list[bytes] = []

    def echo() -> None:
        conn, _ = srv.accept()
        with conn:
            got.append(conn.recv(100))
            conn.sendall(b"pong")
            conn.recv(100)  # until the proxy cuts

    t = threading.Thread(target=echo, daemon=True)
    t.start()
    proxy = TcpProxy("127.0.0.1", port).start()
    try:
        c = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        c.sendall(b"ping")
        assert c.recv(100) == b"pong" and got == [b"ping"]
        proxy.outage(2.0)
        assert c.recv(100) == b""  # cut
        c2 = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        assert c2.recv(100) == b""  # refused while down
    finally:
        proxy.stop()
        srv.close()
        t.join(5)
