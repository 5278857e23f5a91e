"""The ``qlab network`` and ``qlab node`` subcommands (registered from qlab/cli.py by ``register``).

    qlab network emulate --config network.yaml [--json FILE]
    qlab node NAME --config network.yaml --devices FILE [--peer HOST:PORT] [--duration-s N]
    qlab network demo [--config network.yaml] [--duration-s N] [--json] [--workdir DIR] [--scenario FILE]
    qlab network report RUNFILES... [--events FILE] [--json] [--plot FILE.png]
    qlab node NAME --config network.yaml --clear-alarm

Nothing here imports the simulation at module level: ``qlab node`` must run without it.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from qlab.errors import QlabError


def default_network_config(path: str | None) -> Path:
    """--config PATH, else ./network.yaml if present, else the packaged example (Alice, Bob, source at Alice)."""
    if path is not None:
        return Path(path)
    local = Path.cwd() / "network.yaml"
    return local if local.is_file() else Path(__file__).resolve().parent.parent / "data" / "network.yaml"


def cmd_emulate(args: argparse.Namespace) -> int:
    from qlab.network.config import load_network
    from qlab.network.emulator import run_emulator
    from qlab.network.scenario import load_scenario

    desc = load_network(default_network_config(args.config))
    scenario = None
    if args.scenario:
        scenario = load_scenario(args.scenario, _detectors(desc))
    return run_emulator(desc, args.json_file, scenario=scenario, scenario_start=args.scenario_start,
                        scenario_log=args.scenario_log)


def _detectors(desc: Any) -> list[str]:
    return [n for node, lab in desc.node_labs.items() for n in lab.config.instruments if lab.kind(n) == "detector"]


def cmd_node(args: argparse.Namespace) -> int:
    from qlab.network.config import load_network
    from qlab.network.node import clear_alarm, run_node

    if args.clear_alarm:
        answer = clear_alarm(load_network(default_network_config(args.config)), args.name)
        print(json.dumps(answer))
        return 0 if answer.get("cleared") or answer.get("message") == "no alarm latched" else 1

    logging.getLogger("qlab").setLevel(logging.INFO)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
    return run_node(load_network(default_network_config(args.config)), args.name, args.devices, args.peer,
                    args.duration_s, kme=args.kme)


def cmd_demo(args: argparse.Namespace) -> int:
    from qlab.network.launcher import format_demo, run_demo

    if args.duration_s is not None and args.duration_s <= 0:
        raise QlabError(f"--duration-s must be positive (got {args.duration_s})")
    duration = args.duration_s if args.duration_s is not None or args.scenario else 60.0
    result = run_demo(default_network_config(args.config), duration, args.workdir,
                      print_fn=(lambda *_: None) if args.json else print, scenario=args.scenario,
                      kme=not args.no_kme)
    if args.plot and result.get("report") is not None:
        from qlab.network.report import plot_report

        plot_report(result["report"], args.plot)
    if args.json:
        print(json.dumps(result, default=str))
    else:
        print(format_demo(result))
        if result.get("report") is not None:
            from qlab.network.report import format_report

            print(format_report(result["report"]))
    return 0 if result["keys_identical"] else 1


def cmd_report(args: argparse.Namespace) -> int:
    from qlab.network.report import build_report, format_report, plot_report

    report = build_report(args.runfiles, events=args.events, config=args.config)
    if args.plot:
        plot_report(report, args.plot)
    if args.json:
        print(json.dumps(report, default=str))
    else:
        print(format_report(report))
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="network description (default: ./network.yaml, else the packaged example)")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages to stderr")


def register(sub: Any) -> None:
    """Add ``network`` (emulate, demo) and ``node`` to the top-level subparsers ``sub``."""
    net = sub.add_parser("network", help="a two-node quantum network: emulator, demo")
    nsub = net.add_subparsers(dest="network_command", required=True)
    e = nsub.add_parser("emulate", help="serve the whole network's simulated devices on loopback")
    _common(e)
    e.add_argument("--json", dest="json_file", metavar="FILE", help="also write the addresses (and the clock "
                                                                       "truth, for checks) to FILE")
    e.add_argument("--scenario", metavar="FILE", help="apply this degraded-link timeline (scenarios/*.yaml); also "
                                                      "runs the classical-channel proxy the scenario controls")
    e.add_argument("--scenario-start", metavar="FILE", help="start the timeline when FILE appears (default: at once)")
    e.add_argument("--scenario-log", metavar="FILE", help="append each applied change as a JSON line to FILE")
    e.set_defaults(fn=cmd_emulate)
    d = nsub.add_parser("demo", help="emulator + both nodes as processes for N seconds, then a summary")
    _common(d)
    d.add_argument("--duration-s", type=float, help="run this long (default 60 s; with --scenario: the "
                                                    "scenario's duration after the link is up)")
    d.add_argument("--json", action="store_true", help="print exactly one JSON object on stdout")
    d.add_argument("--workdir", help="keep data and logs here (default: a temporary directory)")
    d.add_argument("--no-kme", action="store_true", help="do not serve the nodes' KMEs (ETSI GS QKD 014)")
    d.add_argument("--scenario", metavar="FILE", help="a degraded-link timeline (scenarios/*.yaml); the SLO "
                                                      "report is printed at the end")
    d.add_argument("--plot", metavar="FILE.png", help="with --scenario: also draw the report's PNG")
    d.set_defaults(fn=cmd_demo)
    r = nsub.add_parser("report", help="SLO report of node run files: key, availability, outages, alarms")
    r.add_argument("runfiles", nargs="+", metavar="RUNFILE", help="the nodes' *-link.h5 run files")
    r.add_argument("--events", metavar="FILE", help="the emulator's scenario log (JSON lines) to mark causes")
    r.add_argument("--config", help="network description with the slo/operations targets (default: the one "
                                    "stored in the run file)")
    r.add_argument("--json", action="store_true", help="print exactly one JSON object on stdout")
    r.add_argument("--plot", metavar="FILE.png", help="draw key rate, QBER per basis and link state against time")
    r.set_defaults(fn=cmd_report)
    n = sub.add_parser("node", help="run one network node (its own instruments, key store and link)")
    _common(n)
    n.add_argument("name")
    n.add_argument("--devices", metavar="FILE", help="the emulator's address file (for backend: emulated)")
    n.add_argument("--peer", metavar="HOST:PORT", help="connect to the peer here instead of its endpoint "
                                                       "(e.g. through a proxy)")
    n.add_argument("--duration-s", type=float, help="stop after N seconds (default: until SIGTERM)")
    n.add_argument("--kme", nargs="?", const="", metavar="HOST:PORT",
                   help="serve the node's ETSI GS QKD 014 KME (mutual TLS) here; without a value at its "
                        "kme.listen address")
    n.add_argument("--clear-alarm", action="store_true", help="operator command: clear the running node's latched "
                                                               "ALARM (through its loopback endpoint) and exit")
    n.set_defaults(fn=cmd_node)


def main(argv: list[str] | None = None) -> int:
    """``python -m qlab.network``: the same subcommands without the rest of qlab's CLI."""
    from qlab.errors import ConfigError

    p = argparse.ArgumentParser(prog="python -m qlab.network")
    register(p.add_subparsers(dest="command", required=True))
    args = p.parse_args(argv)
    try:
        return int(args.fn(args) or 0)
    except ConfigError as exc:
        print(f"config error:\n{exc}", file=sys.stderr)
        return 2
    except QlabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
