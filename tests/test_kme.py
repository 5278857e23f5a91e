"""ETSI GS QKD 014 key delivery (issue #18): two KMEs on loopback with real mutual-TLS uvicorn servers, SAEs
as httpx clients with certificates, key stores filled by a real BBM92 distillation or identical blocks."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import ssl
import stat
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest

from qlab.cli import main as qlab_main
from qlab.errors import ConfigError
from qlab.kme.config import load_kme_config
from qlab.kme.journal import Journal
from qlab.kme.manager import DELIVERED, RELEASED, RESERVED
from qlab.kme.peer import PeerUnavailable, TcpPeerLink
from qlab.kme.pki import init_pki
from qlab.kme.service import KmeService
from qlab.qkd.bbm92 import QkdParams
from qlab.qkd.keystore import KeyRange, KeyStore, Purpose, RangeUnavailable
from qlab.qkd.pipeline import distill
from tests.kme_helpers import fill_identical, raw_tls_get, sae_client, write_configs
from tests.simlab_helpers import calibrated_delays, set_visibility

ROOT = Path(__file__).resolve().parents[1]
API = "/api/v1/keys"


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("kme") / "pki"
    init_pki(root, ["KME_A", "KME_B"], ["SAE_A", "SAE_B"])
    return root


@pytest.fixture
def kmes(tmp_path, pki):
    """start(fill=callable(store_a, store_b)) -> (KME A, KME B, base URL A, base URL B); stopped at teardown."""
    started: list[KmeService] = []

    def start(fill=None):
        ya, yb = write_configs(tmp_path, pki)
        ca, cb = load_kme_config(ya), load_kme_config(yb)
        if fill is not None:
            fill(KeyStore(ca.key_store), KeyStore(cb.key_store))
        a = KmeService(ca)
        started.append(a)
        a.start()
        b = KmeService(cb)
        started.append(b)
        b.start()
        url = [f"https://127.0.0.1:{s.https.address[1]}{API}" for s in (a, b)]
        return a, b, url[0], url[1]

    yield start
    for s in started:
        s.stop()


@pytest.fixture
def saes(pki):
    clients = {n: sae_client(pki, n) for n in ("SAE_A", "SAE_B")}
    yield clients
    for c in clients.values():
        c.close()


def _keys(resp: httpx.Response) -> list[tuple[str, bytes]]:
    assert resp.status_code == 200, resp.text
    return [(k["key_ID"], base64.b64decode(k["key"])) for k in resp.json()["keys"]]


def test_two_saes_obtain_the_same_committed_qkd_key(make_lab, kmes, saes, tmp_path) -> None:
    # Committed keys from a real BBM92 distillation on the simulated lab, written by both parties' key sinks.
    def fill(store_a: KeyStore, store_b: KeyStore) -> None:
        set_up = make_lab(lambda c: (set_visibility(0.95)(c), calibrated_delays(c)), seed=44)
        set_up["pump"].set_output(True)
        chunk = set_up["tagger"].acquire(3.0)
        roles = {r: ch for r, (_, ch) in set_up.roles().items()}
        stats, ka, kb = distill(chunk, roles, QkdParams(), 3.0,
                                sinks=(lambda bits, bid: store_a.append(bits, bid),
                                       lambda bits, bid: store_b.append(bits, bid)))
        assert not stats["aborted"] and stats["net_secret_bits"] >= 2048

    kme_a, kme_b, url_a, url_b = kmes(fill)
    status = saes["SAE_A"].get(f"{url_a}/SAE_B/status").json()
    block = kme_a.manager.store.blocks()[0]
    assert status["source_KME_ID"] == "KME_A" and status["target_KME_ID"] == "KME_B"
    assert status["key_size"] == 256 and status["stored_key_count"] == block.nbits // 256
    assert status["max_SAE_ID_count"] == 0 and status["max_key_per_request"] == 64

    got_a = _keys(saes["SAE_A"].get(f"{url_a}/SAE_B/enc_keys", params={"number": 4, "size": 256}))
    assert len(got_a) == 4 and all(len(k) == 32 and str(uuid.UUID(i)) == i for i, k in got_a)
    body = {"key_IDs": [{"key_ID": i} for i, _ in got_a]}
    got_b = _keys(saes["SAE_B"].post(f"{url_b}/SAE_A/dec_keys", json=body))
    assert got_b == got_a
    # The keys are the committed QKD key bits: KME A hands out the block's first bits in order.
    committed = np.packbits(kme_a.manager.store.read_block(block.block_id)[:4 * 256]).tobytes()
    assert b"".join(k for _, k in got_a) == committed
    assert np.array_equal(KeyStore(kme_b.config.key_store).read_block(block.block_id),
                          kme_a.manager.store.read_block(block.block_id))
    assert saes["SAE_A"].get(f"{url_a}/SAE_B/status").json()["stored_key_count"] == block.nbits // 256 - 4

    # Asking again for the same key_ID (either form) is an error with an Error object; nothing is delivered.
    for again in (saes["SAE_B"].post(f"{url_b}/SAE_A/dec_keys", json=body),
                  saes["SAE_B"].get(f"{url_b}/SAE_A/dec_keys", params={"key_ID": got_a[0][0]})):
        assert again.status_code == 400 and again.json()["message"] and "keys" not in again.json()
    # The master SAE cannot fetch its own keys from the slave side, nor the slave SAE from the master KME.
    assert saes["SAE_A"].post(f"{url_b}/SAE_B/dec_keys", json=body).status_code == 401
    # A restarted slave KME still refuses to deliver them again (the delivery was journaled).
    kme_b.stop()
    kme_b2 = KmeService(kme_b.config).start()
    try:
        again = saes["SAE_B"].post(f"{url_b}/SAE_A/dec_keys", json=body)
        assert again.status_code == 400
        assert all(kme_b2.manager.record(i).state == DELIVERED for i, _ in got_a)
    finally:
        kme_b2.stop()


def test_post_forms_sizes_and_errors(kmes, saes) -> None:
    kme_a, kme_b, url_a, url_b = kmes(lambda a, b: fill_identical([a, b], nblocks=2, nbits=1024))
    ca, cb = saes["SAE_A"], saes["SAE_B"]
    got = _keys(ca.post(f"{url_a}/SAE_B/enc_keys", json={"number": 2, "size": 512}))
    assert [len(k) for _, k in got] == [64, 64]
    assert _keys(cb.get(f"{url_b}/SAE_A/dec_keys", params={"key_ID": got[1][0]})) == [got[1]]
    # bad requests: 400 with an Error object naming the problem
    for params in ({"size": 100}, {"number": 0}, {"number": 65}, {"size": 8192}, {"number": "many"}):
        r = ca.get(f"{url_a}/SAE_B/enc_keys", params=params)
        assert r.status_code == 400 and r.json()["message"] and r.json()["details"], params
    r = ca.post(f"{url_a}/SAE_B/enc_keys", json={"number": 1, "extension_mandatory": [{"route": "x"}]})
    assert r.status_code == 400 and "extension" in r.json()["message"]
    r = ca.post(f"{url_a}/SAE_B/enc_keys", json={"number": 1, "additional_slave_SAE_IDs": ["SAE_C"]})
    assert r.status_code == 400
    r = cb.get(f"{url_b}/SAE_A/dec_keys", params={"key_ID": "not-a-uuid"})
    assert r.status_code == 400 and r.json()["details"][0]["key_ID"] == "not-a-uuid"
    # more keys than stored: 503 with an Error object, nothing consumed on either side
    free_a, free_b = kme_a.manager.store.free_bits(), kme_b.manager.store.free_bits()
    r = ca.get(f"{url_a}/SAE_B/enc_keys", params={"number": 64, "size": 256})
    assert r.status_code == 503 and r.json()["message"] == "not enough key"
    assert r.json()["details"][0]["stored_bits"] == free_a
    assert (kme_a.manager.store.free_bits(), kme_b.manager.store.free_bits()) == (free_a, free_b)


def test_unpaired_or_unregistered_sae_gets_401(kmes, saes) -> None:
    _, _, url_a, url_b = kmes(lambda a, b: fill_identical([a, b], nblocks=1))
    # SAE B's certificate is signed by the CA but KME A does not serve it: 401 for every endpoint.
    for r in (saes["SAE_B"].get(f"{url_a}/SAE_A/enc_keys"), saes["SAE_B"].get(f"{url_a}/SAE_A/status"),
              saes["SAE_B"].post(f"{url_a}/SAE_A/enc_keys", json={"number": 1})):
        assert r.status_code == 401 and r.json()["message"]
    # SAE A is served by KME A but not paired with SAE_X.
    r = saes["SAE_A"].get(f"{url_a}/SAE_X/enc_keys")
    assert r.status_code == 401 and "SAE_X" in r.json()["message"]


def test_tls_layer_refuses_clients_without_a_ca_signed_certificate(kmes, pki, tmp_path) -> None:
    kme_a, _, url_a, _ = kmes(lambda a, b: fill_identical([a, b], nblocks=1))
    port = kme_a.https.address[1]
    no_cert = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    foreign = init_pki(tmp_path / "foreign", [], ["SAE_A"]).root  # same name, another CA
    foreign_cert = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    foreign_cert.load_cert_chain(foreign / "sae" / "SAE_A.crt", foreign / "sae" / "SAE_A.key")
    good = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    good.load_cert_chain(pki / "sae" / "SAE_A.crt", pki / "sae" / "SAE_A.key")
    assert raw_tls_get(port, good).startswith(b"HTTP/1.1 200")
    for ctx in (no_cert, foreign_cert):
        result = raw_tls_get(port, ctx)
        assert isinstance(result, Exception) or result == b"", result  # no HTTP response: refused in TLS
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url_a}/SAE_B/status", verify=no_cert, timeout=5)


def test_peer_down_or_refusing_releases_on_both_sides(kmes, saes, pki) -> None:
    kme_a, kme_b, url_a, url_b = kmes(lambda a, b: fill_identical([a, b], nblocks=1, nbits=1024))
    # the link refuses a client with the wrong key (authentication fails, the peer is "unavailable")
    host, port = kme_b.config.listen[0], kme_b.config.peer.listen[1]
    with pytest.raises(PeerUnavailable):
        TcpPeerLink(host, port, b"x" * 32, timeout_s=2).request({"op": "ping"})
    assert kme_a.manager.peer.request({"op": "ping"}) == {"ok": True, "kme_id": "KME_B"}
    # KME B refuses a range it has already used itself (e.g. for Wegman–Carter pads): 503, released.
    kme_b.manager.store.mark_used([KeyRange(kme_b.manager.store.blocks()[0].block_id, 0, 64)], Purpose.AUTH)
    r = saes["SAE_A"].get(f"{url_a}/SAE_B/enc_keys")
    assert r.status_code == 503 and "refused" in r.json()["message"]
    assert kme_a.manager.counts().get("master_released") == 1 and kme_a.manager.counts()["unacked_releases"] == 0
    assert kme_b.manager.store.free_bits() == kme_a.manager.store.free_bits()  # B retired A's withdrawn bits
    # KME A must mirror B's AUTH use before keys flow again: never deliver authentication bits
    kme_a.manager.store.mark_used([KeyRange(kme_a.manager.store.blocks()[0].block_id, 256, 64)], Purpose.AUTH)
    got = _keys(saes["SAE_A"].get(f"{url_a}/SAE_B/enc_keys"))
    rec = kme_a.manager.record(got[0][0])
    assert all(not (r.offset < 320 and r.offset + r.length > 0) for r in rec.ranges), rec.ranges
    # with the peer down the master cannot reserve on both sides: 503, and the reservation is withdrawn
    kme_b.stop()
    r = saes["SAE_A"].get(f"{url_a}/SAE_B/enc_keys")
    assert r.status_code == 503 and "unreachable" in r.json()["message"]
    assert kme_a.manager.counts()["unacked_releases"] == 1


def _wait(pred, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_kill_9_between_reservation_and_delivery(tmp_path, pki, saes) -> None:
    ya, yb = write_configs(tmp_path, pki)
    cfg_a, cfg_b = load_kme_config(ya), load_kme_config(yb)
    fill_identical([KeyStore(cfg_a.key_store), KeyStore(cfg_b.key_store)], nblocks=2, nbits=1024)
    url_a = f"https://127.0.0.1:{cfg_a.listen[1]}{API}"
    url_b = f"https://127.0.0.1:{cfg_b.listen[1]}{API}"
    marker, ready, log = tmp_path / "reserved.json", tmp_path / "ready", tmp_path / "kme_a.log"
    kme_b = KmeService(cfg_b).start()
    procs: list[subprocess.Popen] = []
    try:
        procs.append(subprocess.Popen([sys.executable, str(ROOT / "tests" / "kme_crash_process.py"), str(ya),
                                       str(marker), str(ready)], cwd=ROOT, stdout=subprocess.DEVNULL,
                                      stderr=log.open("w")))
        _wait(ready.exists, 30, "the crashing KME to start")
        outcome: dict = {}

        def ask() -> None:
            try:
                outcome["response"] = saes["SAE_A"].get(f"{url_a}/SAE_B/enc_keys", params={"number": 2})
            except httpx.TransportError as exc:
                outcome["error"] = exc

        asker = threading.Thread(target=ask, daemon=True)
        asker.start()
        _wait(marker.exists, 30, "the reservation")
        reserved = json.loads(marker.read_text())
        assert all(kme_b.manager.record(k).state == RESERVED for k in reserved)  # both sides reserved
        os.kill(procs[0].pid, signal.SIGKILL)
        procs[0].wait(10)
        asker.join(20)
        assert "error" in outcome and "response" not in outcome  # SAE A never received those keys

        # restart KME A with the ordinary command: recovery releases the reservation on both sides
        procs.append(subprocess.Popen([sys.executable, "-m", "qlab.cli", "kme", "serve", str(ya), "--json"],
                                      cwd=ROOT, stdout=subprocess.PIPE, stderr=log.open("a"), text=True))
        line = procs[1].stdout.readline()  # the ready line (bounded: the process exits on any start error)
        assert line, log.read_text()
        assert json.loads(line)["ready"]
        assert all(kme_b.manager.record(k).state == RELEASED for k in reserved)
        states_a = {}
        for rec in Journal(cfg_a.journal).replay():
            for k in rec.get("key_IDs", []):
                states_a[k] = rec["op"]
        assert all(states_a[k] == "release_acked" for k in reserved)
        r = saes["SAE_B"].post(f"{url_b}/SAE_A/dec_keys", json={"key_IDs": [{"key_ID": k} for k in reserved]})
        assert r.status_code == 400

        # keys flow again, from bits the withdrawn reservation did not use; no key is delivered twice
        got = _keys(saes["SAE_A"].get(f"{url_a}/SAE_B/enc_keys", params={"number": 4}))
        assert _keys(saes["SAE_B"].post(f"{url_b}/SAE_A/dec_keys",
                                        json={"key_IDs": [{"key_ID": k} for k, _ in got]})) == got
        assert len({k for _, k in got}) == 4 and not set(reserved) & {k for k, _ in got}
        spans = [(r.block_id, r.offset, r.offset + r.length)
                 for k in [*reserved, *(k for k, _ in got)] for r in kme_b.manager.record(k).ranges]
        for i, (b1, s1, e1) in enumerate(spans):
            assert all(not (b1 == b2 and s1 < e2 and s2 < e1) for b2, s2, e2 in spans[i + 1:])
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(5)
        kme_b.stop()


def test_key_store_read_api_and_used_map(tmp_path) -> None:
    store = KeyStore(tmp_path / "keys" / "a.keys")
    (b1, bits1), (b2, bits2) = fill_identical([store], nblocks=2, nbits=800)
    assert [b.block_id for b in store.blocks()] == [b1, b2] and store.block(b2).nbits == 800
    assert np.array_equal(store.read_bits(b1, 13, 101), bits1[13:114])
    with pytest.raises(RangeUnavailable):
        store.read_bits(b1, 790, 20)
    with pytest.raises(KeyError):
        store.read_block(b"\0" * 16)
    first = store.allocate([700, 200], Purpose.KEY, [b"k1", b"k2"])
    assert first[1] == [KeyRange(b1, 700, 100), KeyRange(b2, 0, 100)]
    last = store.allocate([50], Purpose.KEY, from_end=True)
    assert last == [[KeyRange(b2, 750, 50)]]
    with pytest.raises(RangeUnavailable):
        store.mark_used([KeyRange(b2, 740, 20)], Purpose.AUTH)
    # a torn used-map record (crash mid-write) is cut off; the map survives a restart
    with open(store.used_path, "ab") as f:
        f.write(b"QLUSE1\x01\x02")
    again = KeyStore(store.path)
    assert again.free_bits() == 1600 - 950
    again.mark_used([KeyRange(b2, 100, 10)], Purpose.AUTH)
    assert KeyStore(store.path).free_ranges() == [KeyRange(b2, 110, 640)]
    assert stat.S_IMODE(os.stat(store.used_path).st_mode) == 0o600
    assert again.discard([KeyRange(b2, 750, 30), KeyRange(b"\1" * 16, 0, 8)]) == 0  # all used already
    assert again.discard([KeyRange(b2, 100, 20)]) == 10 and again.discard([KeyRange(b2, 100, 20)]) == 0
    # two handles on one store (two processes) never hand out the same bits
    x, y = KeyStore(store.path), KeyStore(store.path)
    rx, ry = x.allocate([100], Purpose.KEY)[0], y.allocate([100], Purpose.KEY)[0]
    assert rx == [KeyRange(b2, 120, 100)] and ry == [KeyRange(b2, 220, 100)]


def test_journal_drops_a_torn_last_line(tmp_path) -> None:
    j = Journal(tmp_path / "j" / "kme.journal")
    j.append([{"op": "reserve", "n": 1}])
    with open(j.path, "ab") as f:
        f.write(b'{"op": "deli')  # kill -9 mid-write
    assert Journal(j.path).replay() == [{"op": "reserve", "n": 1}]
    j2 = Journal(j.path)
    j2.append([{"op": "release", "n": 2}])
    assert Journal(j.path).replay() == [{"op": "reserve", "n": 1}, {"op": "release", "n": 2}]
    assert stat.S_IMODE(os.stat(j.path).st_mode) == 0o600


def test_pki_init_command_and_config_errors(tmp_path, capsys) -> None:
    net = tmp_path / "network.yaml"
    net.write_text("nodes:\n  alice:\n    kme: {kme_id: KME_A, peer_listen: 127.0.0.1:1, saes: {SAE_A: SAE_A}}\n"
                   "  bob:\n    kme: {peer_listen: 127.0.0.1:2, saes: {SAE_B: SAE_B}}\n")  # network.yaml's layout
    assert qlab_main(["pki", "init", str(tmp_path / "pki"), "--network", str(net), "--sae", "SAE_C",
                      "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["kmes"] == ["KME_A", "KME_bob"] and sorted(out["saes"]) == ["SAE_A", "SAE_B", "SAE_C"]
    root = tmp_path / "pki"
    for d in (root, root / "kme", root / "sae"):
        assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    for key in [root / "ca.key", *root.glob("*/*.key"), root / "kme-link.psk"]:
        assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert len(list(root.glob("*/*.key"))) == 5
    # a second run keeps everything and issues nothing
    assert qlab_main(["pki", "init", str(root), "--kme", "KME_A", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["created"] == []
    assert qlab_main(["pki", "init", str(root), "--kme", "bad name"]) == 1
    # KME configuration errors name the file, line and key
    bad = tmp_path / "kme.yaml"
    bad.write_text(f"kme_id: A\npeer_kme_id: B\nkey_store: k.keys\nlisten: nowhere\ntls: {{cert: a, key: b, ca: c}}\n"
                   f"saes: {{SAE_A: {root / 'sae' / 'SAE_A.crt'}}}\npairs: {{SAE_Z: [SAE_B]}}\n")
    with pytest.raises(ConfigError) as exc:
        load_kme_config(bad)
    assert f"{bad}:4: listen" in str(exc.value)
    bad.write_text(bad.read_text().replace("nowhere", "127.0.0.1:1"))
    with pytest.raises(ConfigError) as exc:
        load_kme_config(bad)
    assert f"{bad}:7: pairs.SAE_Z" in str(exc.value)


def test_a_kme_that_cannot_bind_https_releases_its_peer_port(tmp_path, pki) -> None:
    ya, _ = write_configs(tmp_path, pki)
    cfg = load_kme_config(ya)
    busy = socket.create_server(cfg.listen)  # the HTTPS port is taken
    try:
        with pytest.raises(OSError):
            KmeService(cfg).start()
    finally:
        busy.close()
    with socket.create_server(cfg.peer.listen):  # the peer server that had started is gone again
        pass
