"""The ``qlab network`` and ``qlab node`` subcommands (registered from qlab/cli.py by ``register``).

    qlab network emulate --config network.yaml [--json FILE]
    qlab node NAME --config network.yaml --devices FILE [--peer HOST:PORT] [--duration-s N]
    qlab network demo [--config network.yaml] [--duration-s N] [--json] [--workdir DIR]

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

    return run_emulator(load_network(default_network_config(args.config)), args.json_file)


def cmd_node(args: argparse.Namespace) -> int:
    from qlab.network.config import load_network
    from qlab.network.node import run_node

    logging.getLogger("qlab").setLevel(logging.INFO)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
    return run_node(load_network(default_network_config(args.config)), args.name, args.devices, args.peer,
                    args.duration_s, kme=args.kme)


def cmd_demo(args: argparse.Namespace) -> int:
    from qlab.network.launcher import format_demo, run_demo

    if args.duration_s <= 0:
        raise QlabError(f"--duration-s must be positive (got {args.duration_s})")
    result = run_demo(default_network_config(args.config), args.duration_s, args.workdir,
                      print_fn=(lambda *_: None) if args.json else print, kme=not args.no_kme)
    if args.json:
        print(json.dumps(result, default=str))
    else:
        print(format_demo(result))
    return 0 if result["keys_identical"] else 1


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
    e.set_defaults(fn=cmd_emulate)
    d = nsub.add_parser("demo", help="emulator + both nodes as processes for N seconds, then a summary")
    _common(d)
    d.add_argument("--duration-s", type=float, default=60.0)
    d.add_argument("--json", action="store_true", help="print exactly one JSON object on stdout")
    d.add_argument("--workdir", help="keep data and logs here (default: a temporary directory)")
    d.add_argument("--no-kme", action="store_true", help="do not serve the nodes' KMEs (ETSI GS QKD 014)")
    d.set_defaults(fn=cmd_demo)
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
