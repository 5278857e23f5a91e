"""The `qlab` command as a new user meets it (issue 19 items 11, 13, 14; issue 14's CLI argument checks):
global options anywhere, one-line errors with the right exit code, help that lists what can be run, analysis
that says when photons go unmapped, and run-file steps that can be analyzed one by one.

Most tests call ``qlab.cli.main`` in-process (fast); `sim serve` runs as a bounded subprocess.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from qlab.cli import main
from tests.conftest import DEFAULT_CONFIG, REPO


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `qlab ARGV`, argparse's exits included."""
    try:
        rc = main(list(argv))
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else 1
    out = capsys.readouterr()
    return rc, out.out, out.err


def one_line_error(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def photon_hdf5(path: Path, channels: list[int], n: int = 5000) -> Path:
    """A foreign (non-qlab) Photon-HDF5 file: ``n`` tags per channel, each channel 3 ns after the previous."""
    import h5py

    base = np.sort(np.random.default_rng(1).integers(0, 10**9, n))  # ns
    t = np.concatenate([base + 3 * i for i in range(len(channels))])
    ch = np.concatenate([np.full(n, c, np.uint8) for c in channels])
    order = np.argsort(t, kind="stable")
    with h5py.File(path, "w") as f:
        f.attrs["format_name"] = np.bytes_("Photon-HDF5")
        f["photon_data/timestamps"] = t[order].astype(np.int64)
        f["photon_data/detectors"] = ch[order]
        f["photon_data/timestamps_specs/timestamps_unit"] = 1e-9
    return path


# -- item 11: global options mean the same before and after the subcommand ------------------------------------

def test_global_config_before_subcommand_is_used(capsys, data_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(DEFAULT_CONFIG.read_text().replace("driver: thorlabs.ell14", "driver: thorlabs.ell99", 1))
    for argv in (["--config", str(bad), "run", "darkcounts", "--no-record"],
                 ["run", "darkcounts", "--no-record", "--config", str(bad)]):
        rc, out, err = cli(capsys, *argv)
        assert rc == 2 and "bad.yaml" in err and "unknown driver" in err, (argv, err)
        assert out == ""


def test_global_json_before_and_after_subcommand(capsys, data_dir: Path) -> None:
    for argv in (["--json", "sim", "list"], ["sim", "list", "--json"], ["sim", "--json", "list"]):
        rc, out, _ = cli(capsys, *argv)
        assert rc == 0
        assert "ell14" in json.loads(out)["models"], argv
    rc, out, _ = cli(capsys, "sim", "list")
    assert rc == 0 and not out.startswith("{") and "ell14" in out


# -- parser range checks and one-line errors (issue 14 item 5) -------------------------------------------------

@pytest.mark.parametrize("value", ["-5", "0", "1e20", "nan", "2.5", "soon"])
def test_window_ps_out_of_range_is_a_usage_error(capsys, data_dir: Path, tmp_path: Path, value: str) -> None:
    f = photon_hdf5(tmp_path / "f.h5", [0, 1])
    rc, out, err = cli(capsys, "analyze", str(f), "--window-ps", value)
    assert rc == 2 and out == ""
    assert "--window-ps" in one_line_error(err)


@pytest.mark.parametrize("roles, fragment", [("alice.H=999", "999"), ("alice.H=0,bob.H=0", "both map to channel 0"),
                                             ("alice.H=0,alice.H=1", "given twice"), ("alice.H", "ROLE=CHANNEL")])
def test_bad_role_lists_are_usage_errors(capsys, data_dir: Path, tmp_path: Path, roles: str, fragment: str) -> None:
    f = photon_hdf5(tmp_path / "f.h5", [0, 1])
    rc, _, err = cli(capsys, "analyze", str(f), "--roles", roles)
    assert rc == 2 and fragment in one_line_error(err)


@pytest.mark.parametrize("value", ["nan", "inf", "0", "-1", "1e9"])
def test_procedure_parameter_ranges(capsys, data_dir: Path, value: str) -> None:
    rc, out, err = cli(capsys, "run", "chsh", "--no-record", "-p", f"integration_s={value}")
    assert rc == 1 and out == ""
    assert "integration_s" in one_line_error(err)
    assert not data_dir.exists() or not any(data_dir.rglob("*.h5"))  # refused before anything ran


def test_sim_serve_argument_errors_are_one_line(capsys, data_dir: Path) -> None:
    rc, _, err = cli(capsys, "sim", "serve", "nosuch", "--pty")
    assert rc == 2 and "ell14" in one_line_error(err)  # names the valid models
    rc, _, err = cli(capsys, "sim", "serve", "ell14", "--tcp", "70000")
    assert rc == 2 and "70000" in one_line_error(err)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        rc, _, err = cli(capsys, "sim", "serve", "ell14", "--tcp", str(port))
    assert rc == 2 and f"port {port}" in one_line_error(err) and "not free" in err
    rc, _, err = cli(capsys, "sim", "serve", "ell14")
    assert rc == 2 and "--pty or --tcp" in one_line_error(err)


def test_unexpected_error_is_one_line_unless_debug(capsys, data_dir: Path, monkeypatch) -> None:
    import qlab.cli

    def boom(args):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(qlab.cli, "cmd_sim_list", boom)
    rc, _, err = cli(capsys, "sim", "list")
    line = one_line_error(err)
    assert rc == 1 and "disk on fire" in line and "--debug" in line
    with pytest.raises(RuntimeError):
        main(["--debug", "sim", "list"])


# -- item 13: analysis says where the photons are ---------------------------------------------------------------

def test_analyze_warns_about_unmapped_channels(capsys, data_dir: Path, tmp_path: Path) -> None:
    f = photon_hdf5(tmp_path / "f.h5", [1, 9, 12])
    rc, out, err = cli(capsys, "analyze", str(f), "--roles", "alice.H=1", "--json")
    assert rc == 0
    r = json.loads(out)
    assert r["singles"] == {"alice.H": 5000} and r["channel_events"] == {"1": 5000, "9": 5000, "12": 5000}
    assert "10,000 events on channel(s) 9, 12 not mapped" in err and "alice.H=1" in err


def test_analyze_refuses_when_no_photon_is_mapped(capsys, data_dir: Path, tmp_path: Path) -> None:
    f = photon_hdf5(tmp_path / "f.h5", [20, 21])  # the config's wiring uses inputs 1..8
    rc, out, err = cli(capsys, "analyze", str(f))
    line = one_line_error(err)
    assert rc == 1 and out == ""
    assert "20 (5,000 events), 21 (5,000 events)" in line and "alice.H=1" in line and "config" in line


def test_analyze_refuses_roles_on_channels_without_events(capsys, data_dir: Path, tmp_path: Path) -> None:
    f = photon_hdf5(tmp_path / "f.h5", [0, 1])
    rc, _, err = cli(capsys, "analyze", str(f), "--roles", "alice.H=0,bob.H=5")
    line = one_line_error(err)
    assert rc == 1 and "5 (bob.H)" in line and "0 (5,000 events)" in line
    rc, _, err = cli(capsys, "analyze", str(f), "--roles", "alice.H=0,bob.H=5", "--find-delays")
    line = one_line_error(err)
    assert rc == 1 and "no events on channel(s) 5 (bob.H)" in line and "peak" not in line


def test_info_on_foreign_file_does_not_call_it_incomplete(capsys, data_dir: Path, tmp_path: Path) -> None:
    f = photon_hdf5(tmp_path / "f.h5", [0, 1])
    rc, out, _ = cli(capsys, "info", str(f))
    assert rc == 0
    assert "not a qlab run file; no completion flag" in out
    assert "complete" not in out.replace("completion", "") and "False" not in out and "{" not in out


# -- item 14: help, benchmarks, --no-record, demo parameters and summaries -------------------------------------

def test_run_help_lists_procedures_parameters_units_and_option_help(capsys) -> None:
    rc, out, _ = cli(capsys, "run", "--help")
    assert rc == 0
    for name in ("chsh", "darkcounts", "delays", "demo", "polarization", "qkd", "tomography"):
        assert f"  {name}: " in out
    assert "integration_s = 1 s   (range 0.01 .. 3600 s)" in out  # chsh's, with unit and range
    assert "rep_rate_hz = 1e7 Hz" in out
    for option in ("--seed", "--no-record", "--integration-s", "--config", "--json"):
        help_line = out.split(option, 1)[1].split("\n", 1)[0] + out.split(option, 1)[1].split("\n", 2)[1]
        assert len(help_line.strip()) > 12, option  # every option explains itself
    rc, out, _ = cli(capsys, "sim", "serve", "--help")
    assert "pseudo-terminal" in out and "127.0.0.1:PORT" in out


def test_bench_only_unknown_name_fails_listing_valid_ones(capsys) -> None:
    rc, out, err = cli(capsys, "bench", "--only", "nosuch")
    line = one_line_error(err)
    assert rc == 2 and out == "" and "coincidence" in line and "qkd" in line


def test_bench_table_units_and_small_ratios(capsys, monkeypatch) -> None:
    import qlab.bench

    monkeypatch.setitem(qlab.bench.BENCHMARKS, "qkd", lambda quick: {"pa_vs_copy": 0.000412, "pa_mbit_s": 812.3})
    rc, out, err = cli(capsys, "bench", "--only", "qkd")
    assert rc == 0 and "running qkd" in err
    row = next(ln for ln in out.splitlines() if "pa_vs_copy" in ln)
    assert "0.000412" in row and "0.000 " not in row and "memcpy" in row
    assert "Mbit/s" in next(ln for ln in out.splitlines() if "pa_mbit_s" in ln)


def test_bench_quick_analysis_and_pa_run_in_fresh_interpreters() -> None:
    import qlab.bench

    out = {**qlab.bench.bench_analysis(True), **qlab.bench.bench_pa(True)}
    assert out["analysis_input_tags"] >= 10_000_000
    assert {"analysis_workers_1_mtags_s", "analysis_workers_2_mtags_s", "analysis_scaling_2_workers"} <= set(out)
    # The spawned child's own peak (inputs and FFT buffers, ~1 GB), not a forked parent's pages.
    assert 0.05 < out["pa_peak_gb_1e7"] < 4  # the 4 GB limit the issue sets for 10^8 bits
    assert out["pa_seconds_1e7"] == out["pa_seconds_1e7"] and out["fft_seconds_1e7"] > 0  # not NaN


def test_no_record_writes_nothing(capsys, data_dir: Path) -> None:
    rc, out, err = cli(capsys, "run", "delays", "--no-record", "-p", "integration_s=0.3")
    assert rc == 0, err
    assert "delays (ps, vs ch 1): 1:0, 2:" in out
    written = list(data_dir.rglob("*")) if data_dir.exists() else []
    assert not any(p.name == "calibrations.jsonl" or p.suffix == ".h5" for p in written), written


def test_demo_integration_applies_to_every_step() -> None:
    from qlab.procedures.demo import DemoProcedure

    explicit = {s.name: s.integration_s for s in DemoProcedure(integration_s=0.5).steps()}
    assert explicit == {"delays": 0.5, "polarization": 0.5, "chsh": 0.5, "qkd": 0.5}
    default = {s.name: s.integration_s for s in DemoProcedure().steps()}
    assert default["qkd"] == 10.0 and default["chsh"] == 1.0
    capped = {s.name: s.integration_s for s in DemoProcedure(integration_s=100).steps()}
    assert capped["polarization"] == 60 and capped["qkd"] == 100  # each step's own range


def test_summaries_say_what_was_measured() -> None:
    from qlab.procedures.delays import DelaysProcedure
    from qlab.procedures.polarization import PolarizationProcedure

    vis = {"HV": 0.9, "DA": 0.3}
    solved = PolarizationProcedure().summary({"visibility_before": vis, "visibility_after": vis,
                                              "settings_tried": 0, "probe_settings": 4, "solved": True})
    assert "solved from 4 probe settings" in solved and "0 settings" not in solved
    swept = PolarizationProcedure().summary({"visibility_before": vis, "visibility_after": vis,
                                             "settings_tried": 96, "probe_settings": 4, "solved": False})
    assert "96 sweep settings tried" in swept
    text = DelaysProcedure().summary({"reference_channel": 1, "delays_ps": {"1": 0, "10": 5, "2": 3, "9": 4}})
    assert text.endswith("1:0, 2:3, 9:4, 10:5")


@pytest.fixture(scope="module")
def demo_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One recorded demo at 0.3 s per measurement: (run file, its text output). A few seconds."""
    data = tmp_path_factory.mktemp("demo-data")
    env = {**os.environ, "QLAB_DATA_DIR": str(data)}
    out = subprocess.run([sys.executable, "-m", "qlab.cli", "run", "demo", "-p", "integration_s=0.3", "--seed",
                          "5"], capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    path = Path(next(ln for ln in out.stdout.splitlines() if ln.startswith("run file: "))[10:])
    return path, out.stdout


def test_demo_text_output_and_info_summary(capsys, data_dir: Path, demo_file: tuple[Path, str]) -> None:
    path, text = demo_file
    assert "probe settings" in text and "(0 settings tried)" not in text
    rc, out, _ = cli(capsys, "info", str(path))
    assert rc == 0 and "status        complete" in out and "S = " in out and "QBER Z" in out
    assert "{" not in out and "'" not in out  # no dict reprs
    rc, out, _ = cli(capsys, "info", str(path), "--json")
    results = json.loads(out)["results_data"]
    assert results["chsh"]["integration_s"] == 0.3 and results["qkd"]["duration_s"] == pytest.approx(0.3, rel=0.05)


def test_analyze_one_step_or_segment_of_a_demo_file(capsys, data_dir: Path, demo_file: tuple[Path, str]) -> None:
    path, _ = demo_file
    rc, out, _ = cli(capsys, "--json", "analyze", str(path))
    whole = json.loads(out)
    rc, out, _ = cli(capsys, "analyze", str(path), "--step", "chsh", "--json")
    chsh = json.loads(out)
    assert rc == 0 and chsh["selection"].startswith("step chsh")
    assert 0 < sum(chsh["singles"].values()) < sum(whole["singles"].values())
    rc, out, _ = cli(capsys, "analyze", str(path), "--step", "delays", "--json")
    delays = json.loads(out)
    assert sum(delays["singles"].values()) + sum(chsh["singles"].values()) < sum(whole["singles"].values())
    rc, _, err = cli(capsys, "analyze", str(path), "--step", "nosuch")
    assert rc == 1 and "delays, polarization, chsh" in one_line_error(err)
    rc, _, err = cli(capsys, "analyze", str(path), "--step", "qkd")
    assert rc == 1 and "secret" in one_line_error(err)
    rc, out, _ = cli(capsys, "analyze", str(path), "--segment", "0", "--json")
    seg = json.loads(out)
    assert rc == 0 and 0 < sum(seg["singles"].values()) <= sum(delays["singles"].values())
    rc, out, _ = cli(capsys, "analyze", str(path), "--step", "chsh")
    assert rc == 0 and "QBER Z" in out and "coincidences" in out and "{" not in out


def test_sim_serve_pty_names_bus_addresses(data_dir: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "qlab.cli", "sim", "serve", "ell14", "--pty"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                            env={**os.environ, "QLAB_DATA_DIR": str(data_dir)})
    watchdog = threading.Timer(30, proc.kill)  # bounds the blocking reads below
    watchdog.start()
    try:
        line = proc.stderr.readline()  # printed before the pty opens
        assert "bus addresses answering: qwp1 at address" in line
        assert proc.stdout.readline().startswith("/dev/")
    finally:
        watchdog.cancel()
        proc.kill()
        proc.communicate(timeout=10)


@pytest.mark.parametrize("model", ["id1000", "dlcpro"])
def test_sim_serve_tcp_0_picks_free_ports_for_both_lines(data_dir: Path, model: str) -> None:
    import socket

    proc = subprocess.Popen([sys.executable, "-m", "qlab.cli", "sim", "serve", model, "--tcp", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                            env={**os.environ, "QLAB_DATA_DIR": str(data_dir)})
    watchdog = threading.Timer(30, proc.kill)  # bounds the blocking reads below
    watchdog.start()
    try:
        port = int(proc.stdout.readline().strip().rsplit(":", 1)[1])
        assert port > 0
        assert f"on {port + 1}" in proc.stderr.readline()  # the data / monitoring line is named
        deadline = time.monotonic() + 10
        while True:  # the control port accepts connections
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
    finally:
        watchdog.cancel()
        proc.kill()
        proc.communicate(timeout=10)
