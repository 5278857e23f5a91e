"""Issue 18 on the real network: emulator + two node processes, each serving its ETSI GS QKD 014 KME (mutual TLS)
over its own link key store, the KMEs talking over their authenticated KME link.

One network (module fixture, short blocks) serves both tests; every process is stopped in the fixture's
``finally`` (NetworkProcesses' context manager). Alice's node runs through tests/kme_node_crash_process.py so
the crash test can stop its KME between reservation and delivery and kill -9 the node there.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml

from qlab.kme.journal import Journal
from qlab.network.keys import block_of
from qlab.network.kme_node import ensure_pki
from qlab.network.launcher import NetworkProcesses, prepare_config
from qlab.qkd.keystore import KeyRange, KeyStore
from tests.kme_helpers import raw_tls_get, sae_client

ROOT = Path(__file__).resolve().parent.parent
FAST = {"key_management": {"block_duration_s": 3.0, "sync_duration_s": 1.0}}
WAIT_S = 60.0


class Net:
    def __init__(self, procs: NetworkProcesses, pki: Path, trigger: Path, marker: Path):
        self.p, self.pki, self.trigger, self.marker = procs, pki, trigger, marker
        desc = procs.desc
        self.url = {n: f"https://{desc.config.nodes[n].kme.listen}/api/v1/keys" for n in ("alice", "bob")}
        self.sae = {"SAE_A": sae_client(pki, "SAE_A"), "SAE_B": sae_client(pki, "SAE_B")}

    def journal(self, node: str) -> list[dict]:
        peer = self.p.desc.peer_of(node)
        return Journal(self.p.node_dir(node) / "keys" / f"{peer}.kme-journal").replay()

    def store(self, node: str) -> KeyStore:
        return KeyStore(self.p.node_dir(node) / "keys" / f"{self.p.desc.peer_of(node)}.keys")  # read-only use

    def ranges(self, node: str, key_id: str) -> list[KeyRange]:
        for rec in self.journal(node):
            for k in rec.get("keys", []) if rec.get("op") == "reserve" else []:
                if k["key_ID"] == key_id:
                    return [KeyRange(bytes.fromhex(b), o, n) for b, o, n in k["ranges"]]
        raise AssertionError(f"{key_id} not reserved at {node}")

    def start_alice(self) -> None:
        """Alice's node with its KME through the crash wrapper (stalls only while TRIGGER exists)."""
        args = ["node", "alice", "--config", str(self.p.config), "--devices", str(self.p.emu_json), "--kme"]
        with open(self.p.workdir / "alice.log", "ab") as log:
            proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "kme_node_crash_process.py"),
                                     str(self.trigger), str(self.marker), *args], cwd=ROOT, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True,
                                    env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.p.procs["alice"] = proc
        self.p.started["alice"] = time.monotonic()

    def wait_kme(self, node: str, sae: str, peer_sae: str, min_keys: int = 1) -> dict:
        """Until the node's KME answers Status and can serve ``min_keys`` keys of 256 bits."""
        out: dict = {}

        def ready() -> bool:
            try:
                r = self.sae[sae].get(f"{self.url[node]}/{peer_sae}/status", timeout=3)
            except httpx.TransportError:
                return False
            out.update(r.json())
            return r.status_code == 200 and out["stored_key_count"] >= min_keys

        self.p.wait_for(ready, WAIT_S, f"{node}'s KME with {min_keys} deliverable keys")
        return out


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    work = tmp_path_factory.mktemp("kmenet")
    cfg = prepare_config(ROOT / "network.yaml", work, FAST)
    data = yaml.safe_load(cfg.read_text())
    for node in data["nodes"].values():  # a request larger than the store must reach the store (503), not 400
        node["kme"]["max_key_per_request"] = 10_000_000
        node["kme"]["max_key_size_bits"] = 4096
    cfg.write_text(yaml.safe_dump(data, sort_keys=False))
    with NetworkProcesses(cfg, work) as procs:
        pki = ensure_pki(procs.desc)
        assert pki is not None
        n = Net(procs, pki, work / "stall-trigger", work / "stalled.json")
        try:
            procs.start_emulator()
            procs.start_node("bob", kme=True)
            n.start_alice()
            yield n
        finally:
            for c in n.sae.values():
                c.close()


def _keys(r: httpx.Response) -> list[tuple[str, bytes]]:
    assert r.status_code == 200, r.text
    return [(k["key_ID"], base64.b64decode(k["key"])) for k in r.json()["keys"]]


def test_two_saes_get_the_same_committed_qkd_key_through_the_nodes_kmes(net: Net) -> None:
    st = net.wait_kme("alice", "SAE_A", "SAE_B", min_keys=4)
    assert st["source_KME_ID"] == "KME_alice" and st["target_KME_ID"] == "KME_bob" and st["key_size"] == 256
    got = _keys(net.sae["SAE_A"].get(f"{net.url['alice']}/SAE_B/enc_keys", params={"number": 4, "size": 256}))
    assert len(got) == 4 and all(len(k) == 32 for _, k in got)
    assert all(str(uuid.UUID(kid)) == kid for kid, _ in got)
    ids = [kid for kid, _ in got]
    back = _keys(net.sae["SAE_B"].post(f"{net.url['bob']}/SAE_A/dec_keys",
                                       json={"key_IDs": [{"key_ID": k} for k in ids]}))
    assert back == got  # byte-identical, same IDs, same order

    # the keys are the committed QKD key bits under the reserved ranges, in both nodes' stores, and come from
    # blocks Alice's node holds as paired (both confirmed)
    paired = {b["block"] for b in net.p.status("alice")["store"] if b["paired"]}
    for kid, key in got:
        ranges = net.ranges("alice", kid)
        assert ranges == net.ranges("bob", kid)
        assert {block_of(r.block_id) for r in ranges} <= paired
        for node in ("alice", "bob"):
            bits = net.store(node).read_ranges(ranges)
            assert bits.size == 256 and np.packbits(bits).tobytes() == key

    # a key_ID is served once
    again = net.sae["SAE_B"].get(f"{net.url['bob']}/SAE_A/dec_keys", params={"key_ID": ids[0]})
    assert again.status_code == 400 and again.json()["message"]
    # SAE B is not an SAE of KME A: it may not ask KME A for keys to SAE A
    r = net.sae["SAE_B"].get(f"{net.url['alice']}/SAE_A/enc_keys", params={"number": 1})
    assert r.status_code == 401 and "message" in r.json()
    # no client certificate: the TLS handshake fails, no HTTP response
    no_cert = ssl.create_default_context(cafile=str(net.pki / "ca.crt"))
    port = int(net.url["alice"].split(":")[2].split("/")[0])
    result = raw_tls_get(port, no_cert)
    assert isinstance(result, Exception) or result == b"", result
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{net.url['alice']}/SAE_B/status", verify=no_cert, timeout=5)
    # more keys than stored: 503 with an Error object
    stored = net.sae["SAE_A"].get(f"{net.url['alice']}/SAE_B/status").json()["stored_key_count"]
    r = net.sae["SAE_A"].post(f"{net.url['alice']}/SAE_B/enc_keys", json={"number": stored + 100_000, "size": 256})
    assert r.status_code == 503, r.text
    body = r.json()
    assert body["message"] == "not enough key" and body["details"][0]["requested_bits"] == (stored + 100_000) * 256


def test_kill_9_node_between_reservation_and_delivery(net: Net) -> None:
    net.wait_kme("alice", "SAE_A", "SAE_B", min_keys=2)
    net.trigger.write_text("stall")
    outcome: dict = {}

    def ask() -> None:
        try:
            outcome["response"] = net.sae["SAE_A"].get(f"{net.url['alice']}/SAE_B/enc_keys", params={"number": 2},
                                                       timeout=40)
        except httpx.TransportError as exc:
            outcome["error"] = exc

    asker = threading.Thread(target=ask, daemon=True)
    asker.start()
    net.p.wait_for(net.marker.exists, 30, "the stalled reservation")
    reserved = json.loads(net.marker.read_text())
    bob_reserved = {k["key_ID"] for rec in net.journal("bob") if rec.get("op") == "reserve" for k in rec["keys"]}
    assert set(reserved) <= bob_reserved  # the peer KME recorded the reservation before the crash
    net.p.stop("alice", kill=True)  # kill -9 the node process (its KME is a thread of it)
    asker.join(45)
    assert "error" in outcome and "response" not in outcome  # SAE A never received those keys
    net.trigger.unlink()

    # restart the node the ordinary way: recovery releases the reservation on both sides
    net.p.start_node("alice", kme=True)

    def released() -> bool:
        a = {k: rec["op"] for rec in net.journal("alice") for k in rec.get("key_IDs", [])}
        b = {k: rec["op"] for rec in net.journal("bob") for k in rec.get("key_IDs", [])}
        return all(a.get(k) == "release_acked" and b.get(k) == "release" for k in reserved)

    net.p.wait_for(released, 30, "the reservation released on both KMEs")
    r = net.sae["SAE_B"].post(f"{net.url['bob']}/SAE_A/dec_keys", json={"key_IDs": [{"key_ID": k} for k in reserved]})
    assert r.status_code == 400

    # keys flow again, from bits the withdrawn reservation did not use
    net.wait_kme("alice", "SAE_A", "SAE_B", min_keys=4)
    got = _keys(net.sae["SAE_A"].get(f"{net.url['alice']}/SAE_B/enc_keys", params={"number": 4}))
    assert _keys(net.sae["SAE_B"].post(f"{net.url['bob']}/SAE_A/dec_keys",
                                       json={"key_IDs": [{"key_ID": k} for k, _ in got]})) == got
    assert not set(reserved) & {k for k, _ in got}
    spans = [(r.block_id, r.offset, r.offset + r.length) for k in [*reserved, *(k for k, _ in got)]
             for r in net.ranges("bob", k)]
    for i, (b1, s1, e1) in enumerate(spans):
        assert all(not (b1 == b2 and s1 < e2 and s2 < e1) for b2, s2, e2 in spans[i + 1:])
    # no key was delivered twice on either side, and every delivered key's record is kept
    for node in ("alice", "bob"):
        delivered = [k for rec in net.journal(node) if rec.get("op") == "deliver" for k in rec["key_IDs"]]
        assert len(delivered) == len(set(delivered))
        assert {k for k, _ in got} <= set(delivered)
        assert not set(reserved) & set(delivered)


# -- without processes -------------------------------------------------------------------------------------------
def test_kme_section_validation_names_file_line_and_key(tmp_path: Path) -> None:
    from qlab.errors import ConfigError
    from qlab.network.config import load_network

    text = (ROOT / "network.yaml").read_text()
    bad = text.replace("allocate_from_end: false", "allocate_from_end: true").replace(
        "pairs: {SAE_B: [SAE_A]}", "pairs: {SAE_B: [SAE_Z]}")
    with pytest.raises(ConfigError) as exc:
        load_network(tmp_path / "network.yaml", text=bad)
    msg = str(exc.value)
    assert "nodes.alice.kme.allocate_from_end" in msg and "opposite ends" in msg
    assert "nodes.bob.kme.pairs.SAE_B" in msg and "SAE_Z" in msg
    line = next(i for i, s in enumerate(bad.splitlines(), 1) if "pairs: {SAE_B: [SAE_Z]}" in s)
    assert f":{line}: nodes.bob.kme.pairs.SAE_B" in msg
    with pytest.raises(ConfigError, match="nodes.alice.kme.listen"):
        load_network(tmp_path / "network.yaml", text=text.replace("listen: 127.0.0.1:47111", "listen: nowhere"))


def test_pki_init_from_the_network_description(tmp_path: Path, capsys) -> None:
    import stat

    from qlab.cli import main as qlab_main
    from qlab.errors import QlabError
    from qlab.network.config import load_network
    from qlab.network.kme_node import node_kme_config

    assert qlab_main(["pki", "init", str(tmp_path / "pki"), "--network", str(ROOT / "network.yaml"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["kmes"] == ["KME_alice", "KME_bob"] and out["saes"] == ["SAE_A", "SAE_B"]
    root = tmp_path / "pki"
    for d in (root, root / "kme", root / "sae"):
        assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    keys = [root / "ca.key", *root.glob("*/*.key")]
    assert len(keys) == 5 and all(stat.S_IMODE(os.stat(k).st_mode) == 0o600 for k in keys)
    from cryptography import x509

    san = x509.load_pem_x509_certificate((root / "kme" / "KME_alice.crt").read_bytes()).extensions \
        .get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert "127.0.0.1" in {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    # a node asked to serve its KME without certificates says which command makes them
    text = (ROOT / "network.yaml").read_text().replace("data_dir: qlab-network-data", f"data_dir: {tmp_path / 'd'}")
    desc = load_network(tmp_path / "network.yaml", text=text)
    with pytest.raises(QlabError, match="qlab pki init"):
        node_kme_config(desc, "alice", tmp_path / "d" / "alice" / "keys")


def test_only_paired_blocks_are_deliverable_and_a_drop_reindexes(tmp_path: Path) -> None:
    from qlab.network.keys import LinkKeyStore, block_key_id
    from qlab.network.kme_node import DeliverableStore
    from qlab.qkd.keystore import InsufficientKey, Purpose

    link = LinkKeyStore(tmp_path / "keys", "bob")
    bits = {b: (np.frombuffer(os.urandom(512), np.uint8) & 1) for b in (1, 2, 3)}
    for b in (1, 2, 3):
        link.reserve(b)
        link.commit(b, bits[b], paired=(b == 3))  # 1 and 2 unpaired (Bob's side before reconciliation)
    store = DeliverableStore(link)
    assert store.free_bits() == 512
    with pytest.raises(InsufficientKey):
        store.allocate([600], Purpose.KEY)
    (r,) = store.allocate([256], Purpose.KEY)
    assert {x.block_id for x in r} == {block_key_id(3)}
    store.keys.blocks()  # index the file, then drop block 1 (rewrites it: block 3 moves)
    link.settle([2], [1, 2])
    assert np.array_equal(store.read_ranges(r), bits[3][:256])
    assert store.free_bits() == 256 + 512  # block 2 is paired now
