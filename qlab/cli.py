"""The `qlab` command. With --json exactly one JSON object goes to stdout; progress and logs go to stderr."""

from __future__ import annotations

import argparse
import json
import logging
import math
import signal
import sys
from collections.abc import Callable
from typing import Any

from qlab.errors import AbortedError, ConfigError, NotBuiltError, QlabError

log = logging.getLogger("qlab")


def _jsonable(o: Any) -> Any:
    import numpy as np

    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, list | tuple):
        return [_jsonable(v) for v in o]
    if isinstance(o, np.ndarray):
        return _jsonable(o.tolist())
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, float | np.floating):
        return float(o) if math.isfinite(o) else None
    return o


def emit_json(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(_jsonable(obj)) + "\n")
    sys.stdout.flush()


class ProgressBar:
    """A one-line progress bar on stderr (only when stderr is a terminal; otherwise sparse log lines)."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self._last = -1.0

    def __call__(self, fraction: float, message: str) -> None:
        if self.tty:
            n = int(30 * fraction)
            sys.stderr.write(f"\r[{'#' * n}{'.' * (30 - n)}] {100 * fraction:5.1f}% {message[:60]:60s}")
            if fraction >= 1.0:
                sys.stderr.write("\n")
            sys.stderr.flush()
        elif fraction - self._last >= 0.1 or fraction >= 1.0:
            self._last = fraction
            sys.stderr.write(f"{100 * fraction:5.1f}% {message}\n")


# -- commands ----------------------------------------------------------------------------------------------

def _open_lab(args: argparse.Namespace, realtime: bool | None = None):
    from qlab.lab import Lab

    return Lab.from_config(args.config, realtime=realtime, seed=getattr(args, "seed", None)).open()


def _run_procedure(args: argparse.Namespace, name: str, values: dict[str, Any]) -> int:
    from qlab.procedures import PROCEDURES
    from qlab.procedures.engine import RunEngine

    if name not in PROCEDURES:
        raise QlabError(f"unknown procedure {name!r}; available: {', '.join(sorted(PROCEDURES))}")
    proc = PROCEDURES[name](**values)
    lab = _open_lab(args)
    try:
        engine = RunEngine(lab, ProgressBar())

        def on_signal(signum: int, frame: Any) -> None:
            log.warning("signal %d: aborting, switching lasers off", signum)
            engine.abort()

        old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            results = engine.run(proc, record=not args.no_record)
        finally:
            for s, h in old.items():
                signal.signal(s, h)
    finally:
        lab.close()
    if args.json:
        emit_json({"procedure": name, **results})
    else:
        print(f"{proc.title}\n{proc.summary(results)}")
        bound = _simulated_plob_bps(name, results.get("simulation_truth", {}))
        if bound is not None:
            print(f"simulated channel's PLOB bound (simulation truth, not measured): {bound:.0f} bit/s")
        if "run_file" in results:
            print(f"run file: {results['run_file']}")
    return 0


def _simulated_plob_bps(procedure: str, truth: dict[str, Any]) -> float | None:
    """The repeaterless bound of the simulated channel a QKD run used (bit/s), from the run's simulation
    truth; None for other procedures or on hardware."""
    if procedure not in ("qkd", "demo") or not truth:
        return None
    if "bb84_transmitter" in truth:
        return truth["bb84_transmitter"]["plob_bound_bps"]
    return truth.get("bbm92_plob_bound_bps")


def cmd_demo(args: argparse.Namespace) -> int:
    return _run_procedure(args, "demo", {"integration_s": args.integration_s})


def cmd_run(args: argparse.Namespace) -> int:
    values = {}
    for item in args.param or []:
        key, sep, val = item.partition("=")
        if not sep:
            raise QlabError(f"--param expects KEY=VALUE, got {item!r}")
        values[key.replace("-", "_")] = val
    if args.protocol is not None:
        values["protocol"] = args.protocol
    return _run_procedure(args, args.procedure, values)


def cmd_config_check(args: argparse.Namespace) -> int:
    from qlab.config import load_config

    loaded = load_config(args.path or args.config)
    cfg = loaded.config
    kinds: dict[str, int] = {}
    for name in cfg.instruments:
        kinds[loaded.kind(name)] = kinds.get(loaded.kind(name), 0) + 1
    roles = sorted(i.channel.role for i in cfg.instruments.values() if i.channel)
    if args.json:
        emit_json({"ok": True, "path": loaded.path, "instruments": len(cfg.instruments), "kinds": kinds,
                   "roles": roles})
    else:
        print(f"{loaded.path}: OK — {len(cfg.instruments)} instruments "
              f"({', '.join(f'{n} {k}' for k, n in sorted(kinds.items()))}); roles {', '.join(roles)}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from qlab.storage.reader import RunReader

    with RunReader(args.file) as r:
        summary = r.summary()
        summary["results_data"] = {x["name"]: x["data"] for x in r.results()} if args.json else None
    if args.json:
        emit_json(summary)
    else:
        for k, v in summary.items():
            if k != "results_data":
                print(f"{k:18s} {v}")
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    from qlab.analysis.offline import analyze_file

    result = analyze_file(args.file, roles=args.roles, window_ps=args.window_ps, find=args.find_delays,
                          config_path=args.config, protocol=args.protocol)
    if result.get("secret"):
        print(f"qlab analyze: WARNING: {result['warning']}", file=sys.stderr)
    if args.json:
        emit_json(result)
    else:
        for k, v in result.items():
            print(f"{k:14s} {v}")
    return 0


def cmd_sim_list(args: argparse.Namespace) -> int:
    from qlab.catalogue import SIM_MODELS

    models = {m: {"driver": e.driver_id, "kind": e.kind, "simulation": "api-level" if e.api_level else "wire"}
              for m, e in sorted(SIM_MODELS.items())}
    if args.json:
        emit_json({"models": models})
    else:
        for m, info in models.items():
            print(f"{m:10s} {info['kind']:13s} {info['driver']:20s} {info['simulation']}")
    return 0


def cmd_sim_serve(args: argparse.Namespace) -> int:
    from qlab.sim.serve import serve

    if not args.pty and args.tcp is None:
        raise QlabError("qlab sim serve needs --pty or --tcp PORT")
    return serve(args.model, config=args.config, pty=args.pty, tcp_port=args.tcp, name=args.name)


def cmd_bench(args: argparse.Namespace) -> int:
    from qlab.bench import run_benchmarks

    results = run_benchmarks(quick=args.quick, only=args.only)
    if args.json:
        emit_json(results)
    return 0


def cmd_gui(args: argparse.Namespace) -> int:
    try:
        from qlab.gui.app import main as gui_main
    except ImportError as exc:
        raise QlabError(f"the GUI needs PySide6 and pyqtgraph (pip install 'qlab[gui]'): {exc}") from None
    return gui_main(args.config, quit_after_s=args.quit_after, offscreen=args.offscreen)


# -- parser ----------------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="lab description (default: ./instruments.yaml, else the built-in "
                                         "simulated lab)")
    common.add_argument("--json", action="store_true", help="print exactly one JSON object on stdout")
    common.add_argument("-v", "--verbose", action="store_true", help="log debug messages to stderr")

    p = argparse.ArgumentParser(prog="qlab", description="Quantum-optics lab framework", parents=[common])
    sub = p.add_subparsers(dest="command", required=True)

    def add(name: str, fn: Callable, help_: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_, parents=[common])
        sp.set_defaults(fn=fn)
        return sp

    d = add("demo", cmd_demo, "calibrate delays and polarization, run CHSH on the (simulated) lab")
    d.add_argument("--integration-s", type=float, default=1.0)
    d.add_argument("--seed", type=int)
    d.add_argument("--no-record", action="store_true", help="do not write a run file")

    r = add("run", cmd_run, "run a procedure (delays, darkcounts, polarization, chsh, ...)")
    r.add_argument("procedure")
    r.add_argument("--param", "-p", action="append", metavar="KEY=VALUE")
    r.add_argument("--seed", type=int)
    r.add_argument("--no-record", action="store_true")
    r.add_argument("--protocol", choices=["bbm92", "bb84"], help="for qkd")

    a = add("analyze", cmd_analyze, "run the coincidence core on a stored stream")
    a.add_argument("file")
    a.add_argument("--roles", help="e.g. alice.H=0,alice.V=1,...; default: the config's wiring")
    a.add_argument("--window-ps", type=int)
    a.add_argument("--find-delays", action="store_true")
    a.add_argument("--protocol", choices=["bbm92"], default=None)

    i = add("info", cmd_info, "summarize a run file")
    i.add_argument("file")

    g = add("gui", cmd_gui, "open the desktop GUI")
    g.add_argument("--quit-after", type=float, metavar="SECONDS", help="close by itself (smoke tests, demos)")
    g.add_argument("--offscreen", action="store_true", help="no display needed (Qt's offscreen platform; "
                                                            "nothing is shown)")

    c = add("config", lambda a: (a.config_fn(a)), "check a lab description")
    csub = c.add_subparsers(dest="config_command", required=True)
    cc = csub.add_parser("check", parents=[common], help="validate instruments.yaml")
    cc.add_argument("path", nargs="?")
    cc.set_defaults(fn=cmd_config_check)

    s = add("sim", lambda a: 0, "simulated instruments")
    ssub = s.add_subparsers(dest="sim_command", required=True)
    sl = ssub.add_parser("list", parents=[common], help="list simulatable models")
    sl.set_defaults(fn=cmd_sim_list)
    ss = ssub.add_parser("serve", parents=[common], help="expose a simulated device on a pty or TCP port")
    ss.add_argument("model")
    ss.add_argument("--pty", action="store_true")
    ss.add_argument("--tcp", type=int, metavar="PORT")
    ss.add_argument("--name", help="instrument name in the config whose simulated lab coupling to use")
    ss.set_defaults(fn=cmd_sim_serve)

    b = add("bench", cmd_bench, "measure throughput against same-run references")
    b.add_argument("--quick", action="store_true", help="smaller inputs (seconds instead of a minute)")
    b.add_argument("--only", action="append", help="run only these benchmarks")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.fn(args) or 0)
    except ConfigError as exc:
        print(f"config error:\n{exc}", file=sys.stderr)
        return 2
    except NotBuiltError as exc:
        print(f"not built yet: {exc}", file=sys.stderr)
        return 3
    except AbortedError as exc:
        print(f"aborted: {exc} (lasers switched off; run file closed)", file=sys.stderr)
        return 130
    except QlabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
