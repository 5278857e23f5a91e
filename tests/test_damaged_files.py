"""Damaged run files and PTU files give a FileFormatError naming the file, in bounded time: never a traceback,
never a hang. HDF5 reads happen first in a time-limited child process (qlab.storage.probe)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from qlab.analysis.offline import analyze_file, check_stream_file
from qlab.cli import main
from qlab.errors import FileFormatError, QlabError
from qlab.storage import probe
from qlab.storage.ptu import read_ptu_header
from qlab.storage.reader import RunReader
from tests.corpora import damaged_files, make_good_ptu, make_good_run_file


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, Path]]:
    return damaged_files(tmp_path_factory.mktemp("damaged"))


def _use_in_process(p: Path) -> None:
    """What `qlab info` and `qlab analyze` do with a file the check let through."""
    if p.read_bytes()[:4] == b"\x89HDF":
        with RunReader(p) as r:
            r.summary()
            r.results()
            r.read_all()
    analyze_file(p, check_file=False)


def test_damaged_file_corpus_gives_only_file_format_errors(corpus):
    """Every damaged file is either refused with a FileFormatError naming it, or (damage the format cannot
    detect, e.g. flipped bits inside tag values) read and analysed; nothing else escapes."""
    assert len(corpus) > 100
    refused, read, escaped = 0, 0, []
    for label, p in corpus:
        try:
            check_stream_file(p)
            _use_in_process(p)
        except FileFormatError as exc:
            assert str(p) in str(exc), (label, str(exc))
            refused += 1
        except QlabError as exc:  # readable but unusable as given (e.g. no detectors dataset: all on channel 0)
            assert str(p) in str(exc), (label, str(exc))
            read += 1
        except Exception as exc:  # noqa: BLE001 - the assertion below lists every escape
            escaped.append(f"{label}: {type(exc).__name__}: {exc}")
        else:
            read += 1
    assert not escaped, "\n".join(escaped)
    assert refused > 0.7 * len(corpus) and read > 0


@pytest.mark.parametrize("frac", [0.01, 0.5, 0.99])
def test_truncated_run_file_is_one_clean_line_in_qlab_info_and_analyze(tmp_path, capsys, frac):
    good = make_good_run_file(tmp_path / "good.h5").read_bytes()
    p = tmp_path / "cut.h5"
    p.write_bytes(good[: int(len(good) * frac)])
    for cmd in (["info", str(p)], ["analyze", str(p)]):
        assert main(cmd) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and str(p) in err[0], err


def test_broken_metadata_json_is_named(tmp_path):
    import h5py

    p = make_good_run_file(tmp_path / "run.h5")
    with h5py.File(p, "r+") as f:
        f["user/qlab/metadata"].attrs["parameters"] = "{broken"
    with pytest.raises(FileFormatError, match="'parameters' is broken JSON"):
        check_stream_file(p)
    with RunReader(p) as r, pytest.raises(FileFormatError, match="run.h5"):
        r.metadata()


def test_truncated_ptu_says_expected_and_read_and_needs_allow_truncated(tmp_path, capsys):
    good = make_good_ptu(tmp_path / "good.ptu")
    full = read_ptu_header(good)
    assert not full.truncated and full.records_declared == full.records_in_file
    p = tmp_path / "cut.ptu"
    p.write_bytes(good.read_bytes()[: full.data_offset + 4 * (full.records_declared // 2)])
    with pytest.raises(FileFormatError) as err:
        analyze_file(p)
    assert f"declares {full.records_declared} records, the file holds {full.records_declared // 2}" in str(err.value)
    assert "--allow-truncated" in str(err.value)
    assert main(["analyze", str(p)]) == 1
    assert "truncated PTU file" in capsys.readouterr().err
    out = analyze_file(p, allow_truncated=True)
    assert out["truncated"] == {"records_declared": full.records_declared, "records_read": full.records_declared // 2}
    assert 0 < sum(out["singles"].values()) < sum(analyze_file(good)["singles"].values())
    assert main(["analyze", str(p), "--allow-truncated", "--json"]) == 0
    assert "WARNING: truncated file" in capsys.readouterr().err


def test_garbled_ptu_header_is_a_file_format_error(tmp_path):
    good = make_good_ptu(tmp_path / "good.ptu").read_bytes()
    at = good.index(b"TTResultFormat_TTTRRecType")
    p = tmp_path / "garbled.ptu"
    p.write_bytes(good[:at] + b"X" * 26 + good[at + 26:])
    with pytest.raises(FileFormatError, match="lacks TTResultFormat_TTTRRecType"):
        analyze_file(p)


def test_probe_time_limit_and_crash_are_file_format_errors(tmp_path, monkeypatch):
    p = make_good_run_file(tmp_path / "run.h5")
    probe.check_run_file(p)  # a good file passes
    with pytest.raises(FileFormatError, match="did not finish reading the file within"):
        probe.check_run_file(p, timeout_s=0.001)

    def crashed(*args, **kw):
        return subprocess.CompletedProcess(args, -11, "", "")

    monkeypatch.setattr(probe.subprocess, "run", crashed)
    with pytest.raises(FileFormatError, match="crashed reading the file"):
        probe.check_run_file(p)


def test_a_file_being_written_still_opens_in_swmr_mode(tmp_path):
    """The plain-first open must not lock out live reading of a file a writer holds open."""
    from qlab.storage.runfile import RunFile
    from qlab.types import TagChunk

    p = tmp_path / "live.h5"
    with RunFile(p, taggers=["tagger"]) as rf:
        rf.append_tags(TagChunk(np.arange(10, dtype=np.int64), np.ones(10, np.int16), 0, 10))
        with RunReader(p) as r:
            assert r.n_tags() == 10 and not r.complete
