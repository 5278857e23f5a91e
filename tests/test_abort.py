"""Prompt abort: Ctrl-C/SIGTERM inside an integration, the engine's abort API (the GUI's Abort), a watchdog
fault's abort, and abort checks inside long analysis steps."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from qlab import abort as abort_flags
from qlab.abort import AbortFlag
from qlab.errors import AbortedError
from qlab.instruments.watchdog import InstrumentFault
from qlab.procedures.engine import Procedure, RunContext, RunEngine
from qlab.procedures.measure import integrate, light_on
from qlab.storage.reader import RunReader
from tests.fault_rig import REPO, start_run, wait_exit, wait_for_tags

SIGNAL_EXIT_BOUND_S = 3.0  # generous for a loaded CI machine; measured ~0.05-0.2 s


class LongIntegration(Procedure):
    name = "long_integration"

    def execute(self, ctx: RunContext) -> dict[str, Any]:
        light_on(ctx.lab)
        integrate(ctx, 3600.0)
        return {}


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_inside_a_20s_integration(tmp_path: Path, sig: signal.Signals) -> None:
    cfg = yaml.safe_load((REPO / "instruments.yaml").read_text())
    cfg.setdefault("simulation", {})["realtime"] = True  # a 20 s integration takes 20 s
    (tmp_path / "lab.yaml").write_text(yaml.safe_dump(cfg))
    run = start_run(tmp_path / "lab.yaml", tmp_path / "data", "chsh", "-p", "integration_s=20", "-p",
                    "measure_visibility=false")
    try:
        path = wait_for_tags(tmp_path / "data", 1000, timeout_s=60)
        time.sleep(0.3)
        t_sig = time.monotonic()
        run.send_signal(sig)
        rc, t_exit, err = wait_exit(run, 30)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait(10)
    print(f"{sig.name}: signal -> exit {t_exit - t_sig:.3f} s")
    assert rc == 130, err
    assert t_exit - t_sig < SIGNAL_EXIT_BOUND_S
    assert err.count(f"{sig.name}: aborting") == 1  # one line per signal
    assert "aborted: aborted by the user (lasers off;" in err
    with RunReader(path) as r:
        assert r.summary()["complete"] is False
        assert r.summary()["tags"]["photon_data"] > 0  # what was integrated before the signal is there
        results = {x["name"]: x["data"] for x in r.results()}
    assert results["laser_states"] == {"pump": "off"}
    assert results["error"]["type"] == "AbortedError"


def test_engine_abort_stops_an_integration_at_once(make_lab) -> None:
    """The GUI's Abort: ``engine.abort()`` from another thread stops a 3600 s integration within a read
    and the lasers are off."""
    lab = make_lab(lambda c: c.setdefault("simulation", {}).update(realtime=True))
    engine = RunEngine(lab)
    timer = threading.Timer(0.5, engine.abort)
    timer.start()
    t0 = time.monotonic()
    try:
        with pytest.raises(AbortedError):
            engine.run(LongIntegration())
    finally:
        timer.cancel()
    assert time.monotonic() - t0 < 0.5 + SIGNAL_EXIT_BOUND_S
    assert not lab["pump"].output() and lab.laser_states == {"pump": "off"}


def test_fault_reason_is_what_the_run_raises(make_lab) -> None:
    lab = make_lab(lambda c: c.setdefault("simulation", {}).update(realtime=True))
    engine = RunEngine(lab)
    fault = InstrumentFault("tagger", "not answering")
    timer = threading.Timer(0.3, engine.abort, args=(fault,))
    timer.start()
    try:
        with pytest.raises(InstrumentFault) as info:
            engine.run(LongIntegration())
    finally:
        timer.cancel()
    assert info.value is fault and info.value.laser_states == {"pump": "off"}
    with RunReader(info.value.run_file) as r:
        assert {x["name"]: x["data"] for x in r.results()}["error"]["instrument"] == "tagger"


def test_second_signal_exits_at_once_after_lasers_off(make_lab, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture) -> None:
    from qlab import cli

    lab = make_lab()
    lab["pump"].set_output(True)
    engine = RunEngine(lab)
    exits: list[int] = []
    monkeypatch.setattr(cli.os, "_exit", exits.append)
    handler = cli._abort_on_signal(lab, engine)
    handler(signal.SIGINT, None)
    assert engine.abort_event.is_set() and not exits
    handler(signal.SIGINT, None)
    assert exits == [130] and not lab["pump"].output()
    err = capsys.readouterr().err
    assert err.count("SIGINT") == 2 and "exiting now; lasers off" in err


def _with_abort_set(fn) -> None:
    flag = AbortFlag()
    flag.set()
    abort_flags.install(flag)
    try:
        with pytest.raises(AbortedError):
            fn()
    finally:
        abort_flags.uninstall(flag)


def test_long_analysis_steps_check_the_abort_flag() -> None:
    from qlab import optics
    from qlab.analysis.tomography import reconstruct
    from qlab.qkd.toeplitz import toeplitz_hash

    kets = "HVDR"
    projectors = [np.kron(optics.projector(optics.KETS[a]), optics.projector(optics.KETS[b]))
                  for a in kets for b in kets]
    counts = np.full(16, 100)
    _with_abort_set(lambda: reconstruct(projectors, counts, resamples=0))
    bits = np.ones(1 << 12, np.uint8)
    _with_abort_set(lambda: toeplitz_hash(bits, np.ones(bits.size + 99, np.uint8), 100))
    reconstruct(projectors, counts, resamples=0)  # no run, no abort: works


def test_cascade_checks_the_abort_flag() -> None:
    from qlab.qkd.cascade import _Bob

    # settle() loops until every parity agrees; with the flag set it stops at its first check.
    bob = _Bob.__new__(_Bob)
    bob.known = {}
    _with_abort_set(bob.settle)


class FailsWhileStreaming(Procedure):
    name = "fails_while_streaming"

    def execute(self, ctx: RunContext) -> dict[str, Any]:
        light_on(ctx.lab)
        ctx.lab["tagger"].start_stream()
        raise RuntimeError("analysis blew up")


def test_a_failed_run_stops_streaming_and_switches_the_light_off(make_lab) -> None:
    lab = make_lab()
    with pytest.raises(RuntimeError, match="blew up"):
        RunEngine(lab).run(FailsWhileStreaming(), record=False)
    assert not lab.sim.taggers["tagger"].streaming
    assert not lab["pump"].output()
