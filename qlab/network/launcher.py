"""Start the emulator and the nodes as separate OS processes on loopback, stop them, and compare their results.

``NetworkProcesses`` (a context manager; every process is stopped on exit, also on errors) is what
``qlab network demo`` and the tests use: ``start_emulator()``, ``start_node(name, peer=...)``,
``stop_node(name, kill=True)`` (SIGKILL, as a crash), ``status(name)``, ``keys(name)``. ``compare_stores``
checks the two key stores (same IDs, identical keys), locally, after the run. ``run_demo`` is the whole demo.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from qlab.errors import QlabError
from qlab.network.config import load_network
from qlab.network.keys import LinkKeyStore
from qlab.transport.listen import free_port

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
CLK_TCK = os.sysconf("SC_CLK_TCK")




def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a live process (Linux /proc), None if unavailable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def prepare_config(config: str | Path, workdir: Path, overrides: dict[str, Any] | None = None) -> Path:
    """A copy of the network description for one run: data under ``workdir``, free loopback endpoints, and
    ``overrides`` merged per section (e.g. {"key_management": {"block_duration_s": 3}})."""
    data = yaml.safe_load(Path(config).read_text())
    data.setdefault("network", {})["data_dir"] = str(workdir / "data")
    for node in data["nodes"].values():
        node["endpoint"] = f"127.0.0.1:{free_port()}"
        if isinstance(node.get("kme"), dict):  # the node's KME: HTTPS and KME-link ports
            node["kme"].update(listen=f"127.0.0.1:{free_port()}", peer_listen=f"127.0.0.1:{free_port()}")
    for section, values in (overrides or {}).items():
        data.setdefault(section, {}).update(values)
    out = workdir / "network.yaml"
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    load_network(out)  # fail here, with file/line/key, rather than in a child process
    return out


class NetworkProcesses:
    def __init__(self, config: Path, workdir: Path):
        self.config = Path(config)
        self.workdir = Path(workdir)
        self.desc = load_network(self.config)
        self.emu_json = self.workdir / "emulator.json"
        self.scenario_start = self.workdir / "scenario.start"
        self.scenario_log = self.workdir / "scenario-events.jsonl"
        self.procs: dict[str, subprocess.Popen] = {}
        self.started: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self.wall: dict[str, float] = {}

    # -- processes -----------------------------------------------------------------------------------------
    def _spawn(self, key: str, args: list[str]) -> subprocess.Popen:
        log = open(self.workdir / f"{key}.log", "ab")  # noqa: SIM115 - lives as long as the child
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        cmd = [sys.executable, "-m", "qlab.network", *([] if args[0] == "node" else ["network"]), *args]
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        log.close()
        self.procs[key] = proc
        self.started[key] = time.monotonic()
        return proc

    def start_emulator(self, scenario: str | Path | None = None) -> dict[str, Any]:
        """Start the emulator; returns its address file (devices, truth). Raises QlabError if it fails.

        With ``scenario`` the timeline starts when ``start_scenario()`` is called; its log is
        ``self.scenario_log`` and the classical proxy's address is ``classical_proxy`` in the answer."""
        self.emu_json.unlink(missing_ok=True)
        args = ["emulate", "--config", str(self.config), "--json", str(self.emu_json)]
        if scenario is not None:
            self.scenario_start.unlink(missing_ok=True)
            self.scenario_log.unlink(missing_ok=True)
            args += ["--scenario", str(scenario), "--scenario-start", str(self.scenario_start),
                     "--scenario-log", str(self.scenario_log)]
        proc = self._spawn("emulator", args)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.emu_json.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise QlabError(f"the emulator did not start: {self.log_tail('emulator')}")
            time.sleep(0.1)
        return json.loads(self.emu_json.read_text())

    def start_node(self, name: str, peer: str | None = None, kme: bool = False) -> subprocess.Popen:
        """``kme``: the node also serves its KME (``--kme``, at its kme.listen address)."""
        args = ["node", name, "--config", str(self.config), "--devices", str(self.emu_json)]
        if peer:
            args += ["--peer", peer]
        if kme:
            args += ["--kme"]
        (self.node_dir(name) / "status.json").unlink(missing_ok=True)
        return self._spawn(name, args)

    def stop(self, key: str, kill: bool = False) -> int | None:
        """SIGTERM (or SIGKILL, a crash) and wait; records the process's CPU time. Returns the exit code."""
        proc = self.procs.get(key)
        if proc is None:
            return None
        if proc.poll() is None:
            cpu = cpu_seconds(proc.pid)
            if cpu is not None:
                self.cpu[key] = self.cpu.get(key, 0.0) + cpu
                self.wall[key] = self.wall.get(key, 0.0) + time.monotonic() - self.started[key]
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL if kill else signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        return proc.returncode

    def stop_all(self) -> None:
        for key in [k for k in self.procs if k != "emulator"]:
            self.stop(key)
        self.stop("emulator")

    def __enter__(self) -> NetworkProcesses:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()

    def alive(self, key: str) -> bool:
        proc = self.procs.get(key)
        return proc is not None and proc.poll() is None

    def log_tail(self, key: str, n: int = 2000) -> str:
        path = self.workdir / f"{key}.log"
        return path.read_text(errors="replace")[-n:] if path.exists() else ""

    # -- results -------------------------------------------------------------------------------------------
    def node_dir(self, name: str) -> Path:
        return self.desc.data_dir / name

    def status(self, name: str) -> dict[str, Any] | None:
        try:
            return json.loads((self.node_dir(name) / "status.json").read_text())
        except (OSError, ValueError):
            return None

    def keys(self, name: str) -> dict[int, np.ndarray]:
        return LinkKeyStore(self.node_dir(name) / "keys", self.desc.peer_of(name)).read_keys()

    def wait_for(self, predicate: Any, timeout_s: float, what: str) -> None:
        """Poll ``predicate()`` until true; raises QlabError (with the logs' tails) after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while not predicate():
            for key in self.procs:
                if not self.alive(key) and key not in self.cpu and self.procs[key].returncode not in (None, 0, -9):
                    raise QlabError(f"{key} exited ({self.procs[key].returncode}) waiting for {what}:\n"
                                    f"{self.log_tail(key)}")
            if time.monotonic() > deadline:
                tails = "\n".join(f"--- {k}\n{self.log_tail(k, 1200)}" for k in self.procs)
                raise QlabError(f"timed out after {timeout_s:.0f} s waiting for {what}\n{tails}")
            time.sleep(0.2)

    def start_scenario(self) -> float:
        """Tell the emulator to start its scenario's timeline now; returns the wall time."""
        self.scenario_start.touch()
        return time.time()

    def state(self, name: str) -> str | None:
        st = self.status(name)
        return None if st is None else st.get("state")

    def run_files(self, name: str) -> list[Path]:
        return sorted((self.node_dir(name) / "runs").glob("*-link.h5"))

    def committed(self, name: str) -> int:
        st = self.status(name)
        return 0 if st is None else len(st.get("store", []))


def compare_stores(a: dict[int, np.ndarray], b: dict[int, np.ndarray]) -> dict[str, Any]:
    """Same block IDs, identical keys under each (compared locally; never printed)."""
    same_ids = sorted(a) == sorted(b)
    identical = same_ids and all(np.array_equal(a[k], b[k]) for k in a)
    return {"ids_a": sorted(a), "ids_b": sorted(b), "same_ids": same_ids, "keys_identical": bool(identical and a)}


def run_demo(config: str | Path, duration_s: float | None = 60.0, workdir: str | Path | None = None,
             overrides: dict[str, Any] | None = None, print_fn: Any = print,
             scenario: str | Path | None = None, kme: bool = True) -> dict[str, Any]:
    """Emulator + both nodes for ``duration_s``; returns the summary (see ``qlab network demo``). ``kme``:
    each node with a ``kme:`` section also serves its KME (the PKI is created under the data directory).

    With ``scenario``: the emulator runs the timeline (and the classical proxy Bob connects through) from when
    both nodes first report UP, the run lasts ``duration_s`` (default: the scenario's duration) from then, and
    the result has ``report``: the SLO report of the two nodes' run files (qlab.network.report)."""
    from qlab.network.emulator import pair_offset_ps  # the launcher may know the truth; nodes never do

    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="qlab-network-demo-")
        workdir = tmp.name
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    try:
        cfg = prepare_config(config, work, overrides)
        scen = None
        if scenario is not None:
            from qlab.network.scenario import load_scenario

            desc0 = load_network(cfg)
            scen = load_scenario(scenario, [n for lab in desc0.node_labs.values() for n in lab.config.instruments
                                            if lab.kind(n) == "detector"])
            if duration_s is None:
                duration_s = scen.duration_s
        duration_s = 60.0 if duration_s is None else duration_s
        with NetworkProcesses(cfg, work) as net:
            desc = net.desc
            kme = kme and all(s.kme is not None for s in desc.config.nodes.values())
            if kme:
                from qlab.network.kme_node import ensure_pki

                print_fn(f"KME certificates in {ensure_pki(desc)}")
            emu = net.start_emulator(scenario)
            names = list(desc.config.nodes)
            t0 = time.time()
            proxy = (emu.get("classical_proxy") or {}).get("address")
            for n in names:
                net.start_node(n, peer=proxy if proxy and desc.config.nodes[n].role == "bob" else None, kme=kme)
            if kme:
                print_fn("KMEs (ETSI GS QKD 014, mutual TLS): " + ", ".join(
                    f"{n} https://{desc.config.nodes[n].kme.listen}/api/v1/keys" for n in names))
            if scen is not None:
                net.wait_for(lambda: all(net.state(n) == "UP" for n in names), START_TIMEOUT_S, "both nodes UP")
                net.start_scenario()
                print_fn(f"link UP; scenario {scen.header.name!r} started, running {duration_s:g} s (logs in {work})")
            else:
                print_fn(f"emulator and nodes {names} running for {duration_s:g} s (logs in {work})")
            deadline = time.monotonic() + duration_s
            while time.monotonic() < deadline:
                for n in names:
                    if not net.alive(n):
                        raise QlabError(f"node {n} exited early:\n{net.log_tail(n)}")
                time.sleep(0.5)
            statuses_live = {n: net.status(n) for n in names}
            for n in names:
                net.stop(n)
            net.stop("emulator")
            wall = time.time() - t0
            statuses = {n: net.status(n) or statuses_live[n] or {} for n in names}
            keys = {n: net.keys(n) for n in names}
            report = None
            if scen is not None:
                from qlab.network.report import build_report

                report = build_report([f for n in names for f in net.run_files(n)], events=net.scenario_log,
                                      config=cfg)
        alice, bob = desc.node_by_role("alice"), desc.node_by_role("bob")
        cmp = compare_stores(keys[alice], keys[bob])
        truth = emu["truth"]
        nodes: dict[str, Any] = {}
        errors = []
        for n in names:
            st = statuses[n]
            clock = st.get("clock") or {}
            true_off = err = None
            if clock:
                true_off = pair_offset_ps(truth, alice, bob, clock["at_alice_ps"])
                err = clock["offset_ps"] - true_off
                errors.append(abs(err))
            bits = sum(b["bits"] for b in st.get("store", []))
            first = st.get("first_commit_at")
            nodes[n] = {"role": st.get("role"), "clock_offset_ps": clock.get("offset_ps"),
                        "true_clock_offset_ps": true_off, "clock_offset_error_ps": err,
                        "drift_ppm": clock.get("drift_ppm"), "blocks_committed": len(st.get("store", [])),
                        "blocks_aborted": st.get("blocks_aborted"), "secret_bits": bits,
                        "net_secret_key_rate_bps": bits / wall,
                        "time_to_first_block_s": None if first is None else first - st.get("started_at", t0),
                        "cpu_share": net.cpu.get(n, 0.0) / max(net.wall.get(n, wall), 1e-9),
                        "bytes_sent": st.get("bytes_sent", 0), "bytes_received": st.get("bytes_received", 0),
                        "sim_modules_in_node": st.get("sim_modules")}
        sent = sum(nodes[n]["bytes_sent"] for n in names)
        return {"nodes": nodes, "blocks": sorted(set(cmp["ids_a"]) & set(cmp["ids_b"])),
                "keys_identical": cmp["keys_identical"], "same_block_ids": cmp["same_ids"],
                "clock_offset_error_ps": max(errors) if errors else None,
                "secret_key_rate_bps": nodes[alice]["net_secret_key_rate_bps"],
                "classical_bytes_per_s": sent / wall, "duration_s": wall,
                "emulator_cpu_share": net.cpu.get("emulator", 0.0) / max(net.wall.get("emulator", wall), 1e-9),
                "true_clock": truth, "report": report}
    finally:
        if tmp is not None:
            tmp.cleanup()


def format_demo(result: dict[str, Any]) -> str:
    lines = []
    for n, r in result["nodes"].items():
        off = r["clock_offset_ps"]
        lines.append(f"{n} ({r['role']}): clock offset found {off:.1f} ps vs true {r['true_clock_offset_ps']:.1f} ps "
                     f"(error {r['clock_offset_error_ps']:+.1f} ps)" if off is not None else
                     f"{n} ({r['role']}): no clock offset found")
        ttf = r["time_to_first_block_s"]
        lines.append(f"  blocks committed {r['blocks_committed']}, secret bits {r['secret_bits']}, net secret key "
                     f"rate {r['net_secret_key_rate_bps']:.0f} bit/s, first block after "
                     f"{'-' if ttf is None else f'{ttf:.1f} s'}, CPU {100 * r['cpu_share']:.0f} % of a core")
    lines.append(f"emulator CPU {100 * result['emulator_cpu_share']:.0f} % of a core; classical traffic "
                 f"{result['classical_bytes_per_s']:.0f} B/s")
    lines.append(f"key stores: {len(result['blocks'])} blocks under identical IDs; keys identical: "
                 f"{result['keys_identical']}")
    return "\n".join(lines)
