"""Segmented analysis on a Dask cluster (2 worker processes on loopback) equals the serial pass, per file and
for a campaign of files."""

from __future__ import annotations

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")

from qlab.analysis.offline import analyze_file, analyze_files  # noqa: E402
from qlab.storage.ptu import write_ptu_t2  # noqa: E402
from qlab.storage.runfile import RunFile  # noqa: E402
from qlab.types import TagChunk  # noqa: E402
from tests.test_parallel_analysis import ROLES, _same, pair_stream  # noqa: E402


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None,
                                       host="127.0.0.1")
    c = distributed.Client(cluster, timeout=60)
    try:
        yield c
    finally:
        c.close()
        cluster.close(timeout=30)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> list[str]:
    d = tmp_path_factory.mktemp("dask")
    paths = []
    for seed in (1, 2):
        chunk = pair_stream(2500, seed=seed)
        p = str(d / f"run{seed}.h5")
        with RunFile(p, taggers=["tagger"], procedure="test") as rf:
            rf.append_tags(chunk)
        paths.append(p)
    chunk = pair_stream(1500, seed=3)
    p = str(d / "run3.ptu")
    write_ptu_t2(p, chunk.timestamps, chunk.channels)
    paths.append(p)
    return paths


KW = dict(roles=ROLES, window_ps=2000, accidentals_offset_ps=25_000, find=True, check_file=False)


def test_dask_file_equals_serial(client, files) -> None:
    serial = analyze_file(files[0], parallel=False, **KW)
    on_dask = analyze_file(files[0], client=client, segment_tags=700, **KW)
    _same(serial, on_dask)
    assert sum(on_dask["coincidences"].values()) > 1000
    assert len(client.scheduler_info()["workers"]) == 2


def test_dask_campaign_totals(client, files) -> None:
    campaign = analyze_files(files, client=client, segment_tags=900, **KW)
    serial = [analyze_file(p, parallel=False, **KW) for p in files]
    for a, b in zip(serial, campaign["files"], strict=True):
        _same(a, b)
    total = campaign["total"]
    assert total["files"] == 3
    assert total["coincidences"]["alice.H|bob.H"] == sum(s["coincidences"]["alice.H|bob.H"] for s in serial)
    assert total["singles"]["bob.A"] == sum(s["singles"]["bob.A"] for s in serial)
    assert total["sifted"]["Z"] == sum(s["sifted"]["Z"] for s in serial)
    assert np.isclose(total["duration_s"], sum(s["duration_s"] for s in serial))


def test_scheduler_address_reaches_the_cluster(client, files) -> None:
    addr = client.scheduler.address
    assert addr.startswith("tcp://127.0.0.1:")
    campaign = analyze_files(files[:1], scheduler=addr, segment_tags=5000, **KW)
    _same(analyze_file(files[0], parallel=False, **KW), campaign["files"][0])


def test_unreachable_scheduler_is_a_clear_error() -> None:
    from qlab.analysis.offline import connect_dask
    from qlab.errors import QlabError

    with pytest.raises(QlabError, match="cannot reach the Dask scheduler"):
        connect_dask("tcp://127.0.0.1:9", timeout_s=2.0)  # port 9 (discard): nothing listens on loopback


def test_file_without_tags_gives_the_serial_error(client, tmp_path) -> None:
    from qlab.errors import QlabError

    p = str(tmp_path / "empty.h5")
    with RunFile(p, taggers=["tagger"], procedure="test") as rf:
        rf.append_tags(TagChunk(np.zeros(0, np.int64), np.zeros(0, np.int16), 0, 1000))
    messages = []
    for kw in ({"parallel": False}, {"client": client}):
        with pytest.raises(QlabError, match="no events on") as exc:
            analyze_file(p, roles=ROLES, window_ps=2000, check_file=False, **kw)
        messages.append(str(exc.value))
    assert messages[0] == messages[1]
