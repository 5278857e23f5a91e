"""The `qlab` command. With --json exactly one JSON object goes to stdout; progress and logs go to stderr.

Global options (--config, --json, -v, --debug) mean the same before or after the subcommand. Every error is
one line on stderr with a non-zero exit code: 2 for a bad argument or config, 1 for other qlab errors, 130 for
an abort; an unexpected exception shows its traceback only with --debug.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from qlab import cli_args
from qlab.console import Progress
from qlab.errors import AbortedError, ConfigError, InstrumentError, NotBuiltError, QlabError

log = logging.getLogger("qlab")

GLOBAL_DEFAULTS: dict[str, Any] = {"config": None, "json": False, "verbose": False, "debug": False}


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


# -- commands ----------------------------------------------------------------------------------------------

def _open_lab(args: argparse.Namespace, realtime: bool | None = None):
    from qlab.lab import Lab

    lab = Lab.from_config(args.config, realtime=realtime, seed=getattr(args, "seed", None))
    # --no-record: nothing of the run persists, calibrations included (they still apply in this process).
    lab.record_calibrations = not getattr(args, "no_record", False)
    return lab.open()


def _run_procedure(args: argparse.Namespace, name: str, values: dict[str, Any]) -> int:
    from qlab.cli_format import print_run_result
    from qlab.procedures import PROCEDURES
    from qlab.procedures.engine import RunEngine

    if name not in PROCEDURES:
        raise QlabError(f"unknown procedure {name!r}; available: {', '.join(sorted(PROCEDURES))}")
    proc = PROCEDURES[name](**values)  # parameters are checked before any instrument is opened
    lab = _open_lab(args)
    try:
        with Progress() as progress:
            engine = RunEngine(lab, progress)
            old = {s: signal.signal(s, _abort_on_signal(lab, engine)) for s in (signal.SIGINT, signal.SIGTERM)}
            try:
                results = engine.run(proc, record=not args.no_record)
            finally:
                for s, h in old.items():
                    signal.signal(s, h)
    finally:
        lab.close(timeout_s=3.0)
    if args.json:
        emit_json({"procedure": name, **results})
    else:
        print_run_result(proc, results, _simulated_plob_bps(name, results.get("simulation_truth", {})))
    return 0


def _abort_on_signal(lab: Any, engine: Any) -> Callable[[int, Any], None]:
    """SIGINT/SIGTERM handler of a run: the first signal aborts (lasers off at once, the run stops within one
    tagger read and closes its file with complete=false); a second one switches the lasers off and exits
    at once (exit code 130). One log line per signal."""
    seen: list[int] = []

    def on_signal(signum: int, frame: Any) -> None:
        seen.append(signum)
        sig = signal.Signals(signum).name
        if len(seen) == 1:
            sys.stderr.write(f"\n{sig}: aborting the run, switching lasers off (again to exit at once)\n")
            engine.abort()
            return
        failed = lab.lasers_off(timeout_s=1.0)
        sys.stderr.write(f"{sig} again: exiting now; lasers "
                         f"{'off' if not failed else 'off except ' + ', '.join(failed) + ' (state UNKNOWN)'}\n")
        sys.stderr.flush()
        os._exit(130)

    return on_signal


def _stop_line(exc: BaseException) -> str:
    """What a stopped run left behind, for its one line on stderr."""
    parts = []
    states = getattr(exc, "laser_states", None)
    if states:
        unknown = [n for n, st in states.items() if st != "off"]
        parts.append("lasers off" if not unknown else
                     f"lasers off except {', '.join(unknown)}: state UNKNOWN")
    run_file = getattr(exc, "run_file", None)
    if run_file:
        parts.append(f"run file {run_file} closed incomplete")
    return f" ({'; '.join(parts)})" if parts else ""


def _simulated_plob_bps(procedure: str, truth: dict[str, Any]) -> float | None:
    """The repeaterless bound of the simulated channel a QKD run used (bit/s), from the run's simulation
    truth; None for other procedures or on hardware."""
    if procedure not in ("qkd", "demo") or not truth:
        return None
    if "bb84_transmitter" in truth:
        return truth["bb84_transmitter"]["plob_bound_bps"]
    return truth.get("bbm92_plob_bound_bps")


def cmd_demo(args: argparse.Namespace) -> int:
    values: dict[str, Any] = {}
    if args.integration_s is not None:
        values["integration_s"] = args.integration_s
    return _run_procedure(args, "demo", values)


def _param_values(items: list[str]) -> dict[str, str]:
    values: dict[str, str] = {}
    for item in items:
        key, sep, val = item.partition("=")
        if not sep or not key.strip():
            raise QlabError(f"--param expects KEY=VALUE, got {item!r}")
        values[key.strip().replace("-", "_")] = val.strip()
    return values


def cmd_run(args: argparse.Namespace) -> int:
    values: dict[str, Any] = _param_values(args.param or [])
    if args.protocol is not None:
        values["protocol"] = args.protocol
    if args.integration_s is not None:
        values["integration_s"] = args.integration_s
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
    from qlab.cli_format import print_info
    from qlab.storage.probe import open_checked

    with open_checked(args.file) as r:  # read once in a time-limited child first: HDF5 can hang on damage
        summary = r.summary()
        results = r.results()
    if args.json:
        summary["results_data"] = {x["name"]: x["data"] for x in results}
        emit_json(summary)
    else:
        print_info(summary, results)
    return 0


def _workers_arg(text: str) -> int:
    """--workers: a whole number of processes >= 1."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of processes, got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"needs at least 1 process, got {n}")
    return n


def cmd_analyze(args: argparse.Namespace) -> int:
    from qlab.analysis.offline import analyze_files
    from qlab.cli_format import print_analysis

    roles = ",".join(f"{r}={c}" for r, c in args.roles.items()) if args.roles else None
    campaign = analyze_files(args.file, scheduler=args.scheduler, roles=roles, window_ps=args.window_ps,
                             find=args.find_delays, config_path=args.config, protocol=args.protocol, step=args.step,
                             segment=args.segment, allow_truncated=args.allow_truncated, workers=args.workers)
    for result in campaign["files"]:
        if result.get("truncated"):
            t = result["truncated"]
            print(f"qlab analyze: WARNING: truncated file: analysed {t['records_read']} of the "
                  f"{t['records_declared']} records its header declares ({result['file']})", file=sys.stderr)
        if result.get("secret"):
            print(f"qlab analyze: WARNING: {result['warning']}", file=sys.stderr)
        for warning in result.get("warnings", []):
            print(f"qlab analyze: warning: {warning}", file=sys.stderr)
    single = len(campaign["files"]) == 1
    if args.json:
        emit_json(campaign["files"][0] if single else campaign)
    else:
        for result in campaign["files"]:
            print_analysis(result)
        if not single:
            print_analysis({**campaign["total"], "file": f"total of {len(campaign['files'])} files",
                            "window_ps": campaign["files"][0]["window_ps"]})
    return 0


def cmd_sim_list(args: argparse.Namespace) -> int:
    from qlab.catalogue import SIM_MODELS

    models = {m: {"driver": e.driver_id, "kind": e.kind, "simulation": "api-level" if e.api_level else "wire"}
              for m, e in sorted(SIM_MODELS.items())}
    if args.json:
        emit_json({"models": models})
    else:
        from qlab.console import print_table

        print_table([(m, i["kind"], i["driver"], i["simulation"]) for m, i in models.items()],
                    ["model", "kind", "driver", "simulation"])
    return 0


def _bus_addresses(model: str, config: str | None, name: str | None) -> list[str]:
    """Bus addresses the served device answers on (multi-drop buses such as Elliptec): the configured axes of
    the instrument the simulator couples to, else the simulator's single default address; [] for devices
    without a bus address."""
    from qlab.catalogue import SIM_MODELS
    from qlab.config import load_config

    entry = SIM_MODELS.get(model)
    if entry is None:
        return []
    loaded = load_config(config)
    for inst_name, inst in loaded.config.instruments.items():
        if inst.driver == entry.driver_id and (name is None or inst_name == name):
            return [f"{ax} at address {a.address if a.address is not None else i}"
                    for i, (ax, a) in enumerate(inst.axes.items())]
    return []


def cmd_sim_serve(args: argparse.Namespace) -> int:
    from qlab.catalogue import SIM_MODELS
    from qlab.sim.serve import serve

    if args.model not in SIM_MODELS:
        raise UsageError(f"unknown model {args.model!r}; `qlab sim list` shows the models: "
                         f"{', '.join(sorted(SIM_MODELS))}")
    if not args.pty and args.tcp is None:
        raise UsageError("qlab sim serve needs --pty or --tcp PORT")
    addresses = _bus_addresses(args.model, args.config, args.name)
    if addresses:
        print(f"bus addresses answering: {', '.join(addresses)}", file=sys.stderr)
    try:
        return serve(args.model, config=args.config, pty=args.pty, tcp_port=args.tcp, name=args.name,
                     fault=args.fault)
    except OSError as exc:
        raise QlabError(f"cannot serve {args.model}: {exc.strerror or exc}") from None


def _fault_arg(text: str) -> tuple[str, float | None]:
    from qlab.sim.faults import parse_fault

    try:
        return parse_fault(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def cmd_bench(args: argparse.Namespace) -> int:
    from qlab.bench import run_benchmarks

    results = run_benchmarks(quick=args.quick, only=args.only, table=not args.json)
    if args.json:
        emit_json(results)
    return 0


def cmd_gui(args: argparse.Namespace) -> int:
    if getattr(args, "node", None) or getattr(args, "endpoint", None):  # the link view of a network node
        try:
            from qlab.gui.link_view import main as link_main
        except ImportError as exc:
            raise QlabError(f"the GUI needs PySide6 and pyqtgraph (pip install 'qlab[gui]'): {exc}") from None
        return link_main(args.node, getattr(args, "config", None), args.endpoint, quit_after_s=args.quit_after,
                         offscreen=args.offscreen)
    try:
        from qlab.gui.app import main as gui_main
    except ImportError as exc:
        raise QlabError(f"the GUI needs PySide6 and pyqtgraph (pip install 'qlab[gui]'): {exc}") from None
    return gui_main(args.config, quit_after_s=args.quit_after, offscreen=args.offscreen)


class UsageError(QlabError):
    """A command-line argument is invalid (exit code 2, like argparse's own usage errors)."""


# -- parser ----------------------------------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``qlab analyze: error: argument --window-ps: ...`` and exit code 2 (the
    usage text is one --help away)."""

    def error(self, message: str) -> Any:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _global_options() -> argparse.ArgumentParser:
    """Options accepted before and after the subcommand. Their defaults are SUPPRESSed so a subparser that does
    not see an option leaves the value given before the subcommand alone; main() fills GLOBAL_DEFAULTS."""
    g = _Parser(add_help=False)
    opts = g.add_argument_group("global options (before or after the subcommand)")
    opts.add_argument("--config", default=argparse.SUPPRESS, metavar="FILE",
                      help="lab description (default: ./instruments.yaml, else the built-in simulated lab)")
    opts.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                      help="print exactly one JSON object on stdout (for programs)")
    opts.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                      help="log debug messages to stderr")
    opts.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                      help="show the traceback of unexpected errors")
    return g


def _add_run_options(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--seed", type=cli_args.seed, metavar="N",
                    help="seed of the simulated lab's randomness (reproducible simulation; never used for "
                         "QKD protocol randomness)")
    sp.add_argument("--no-record", action="store_true",
                    help="write nothing: no run file and no calibration record (calibrations found still apply "
                         "during this run)")


def build_parser() -> argparse.ArgumentParser:
    common = _global_options()
    p = _Parser(prog="qlab", description="Quantum-optics lab framework", parents=[common])
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, fn: Callable, help_: str, **kw: Any) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_, description=help_, parents=[common], **kw)
        sp.set_defaults(fn=fn)
        return sp

    d = add("demo", cmd_demo, "calibrate delays and polarization, run CHSH and BBM92 QKD on the (simulated) lab")
    d.add_argument("--integration-s", type=cli_args.positive_seconds, metavar="SECONDS",
                   help="integration per measurement (CHSH setting, QKD block); default: each step's own")
    _add_run_options(d)

    from qlab.procedures import PROCEDURES

    r = add("run", cmd_run, f"run a procedure ({', '.join(sorted(PROCEDURES))}); `qlab run --help` lists their "
                            "parameters", epilog=cli_args.procedures_help(),
            formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("procedure", choices=sorted(PROCEDURES), metavar="PROCEDURE",
                   help=f"one of: {', '.join(sorted(PROCEDURES))} (parameters below)")
    r.add_argument("--param", "-p", action="append", metavar="KEY=VALUE",
                   help="set a procedure parameter (repeatable); values are checked against its range")
    r.add_argument("--integration-s", type=cli_args.positive_seconds, metavar="SECONDS",
                   help="shorthand for -p integration_s=SECONDS")
    r.add_argument("--protocol", choices=["bbm92", "bb84"], help="qkd: which protocol (default bbm92)")
    _add_run_options(r)

    a = add("analyze", cmd_analyze, "run the coincidence core on a stored stream (run file, Photon-HDF5, PTU)")
    a.add_argument("file", nargs="+", help="run file(s) (.h5), Photon-HDF5 or PicoQuant PTU (T2); several files "
                                           "are analysed one by one and totalled")
    a.add_argument("--workers", type=_workers_arg, metavar="N",
                   help="local processes counting time segments of the stream (default: every core)")
    a.add_argument("--scheduler", metavar="tcp://HOST:8786",
                   help="run the segments on this Dask scheduler's workers; they read the files at the same "
                        "paths (shared storage); needs pip install 'qlab[cluster]'")
    a.add_argument("--roles", type=cli_args.roles, metavar="ROLE=CH,...",
                   help="e.g. alice.H=0,alice.V=1,...; each role and channel once; default: the config's wiring")
    a.add_argument("--window-ps", type=cli_args.window_ps, metavar="PS",
                   help="coincidence window in ps (1 .. 1e9; default: the config's analysis.window_ps)")
    a.add_argument("--find-delays", action="store_true",
                   help="find the channels' relative delays from the data before counting")
    a.add_argument("--protocol", choices=["bbm92"], default=None, help="also distill a BBM92 key (no key kept)")
    sel = a.add_mutually_exclusive_group()
    sel.add_argument("--step", metavar="NAME",
                     help="a demo run file: analyze only the tags of this step (delays, polarization, chsh)")
    sel.add_argument("--segment", type=int, metavar="N",
                     help="analyze only the N-th acquisition (0-based) of a run file; segments are separated "
                          "by pauses of the tagger stream")
    a.add_argument("--allow-truncated", action="store_true",
                   help="analyse a truncated PTU file as far as it goes (otherwise it is refused)")

    i = add("info", cmd_info, "summarize a run file")
    i.add_argument("file", help="run file (.h5) or Photon-HDF5 file")

    g = add("gui", cmd_gui, "open the desktop GUI")
    g.add_argument("--quit-after", type=cli_args.positive_seconds, metavar="SECONDS",
                   help="close by itself (smoke tests, demos)")
    g.add_argument("--offscreen", action="store_true", help="no display needed (Qt's offscreen platform; "
                                                            "nothing is shown)")
    g.add_argument("--node", metavar="NAME", help="show a running network node's link view instead (--config is "
                                                  "then the network description)")
    g.add_argument("--endpoint", metavar="URL", help="the link view of the node serving at URL (http://HOST:PORT)")

    c = add("config", lambda a: 0, "check a lab description")
    csub = c.add_subparsers(dest="config_command", required=True, metavar="SUBCOMMAND")
    cc = csub.add_parser("check", parents=[common], help="validate instruments.yaml",
                         description="validate instruments.yaml")
    cc.add_argument("path", nargs="?", help="file to check (default: --config, else ./instruments.yaml)")
    cc.set_defaults(fn=cmd_config_check)

    s = add("sim", lambda a: 0, "simulated instruments")
    ssub = s.add_subparsers(dest="sim_command", required=True, metavar="SUBCOMMAND")
    sl = ssub.add_parser("list", parents=[common], help="list simulatable models")
    sl.set_defaults(fn=cmd_sim_list)
    ss = ssub.add_parser("serve", parents=[common], help="expose a simulated device on a pty or TCP port",
                         description="expose a simulated device on a pseudo-terminal or a loopback TCP port")
    ss.add_argument("model", help="a model from `qlab sim list` (e.g. ell14, itc4001, dlcpro)")
    how = ss.add_mutually_exclusive_group()
    how.add_argument("--pty", action="store_true",
                     help="serve on a new pseudo-terminal; its path is printed on stdout (serial devices)")
    how.add_argument("--tcp", type=cli_args.tcp_port, metavar="PORT",
                     help="serve on 127.0.0.1:PORT (must be free; some devices also use PORT+1)")
    ss.add_argument("--name", help="instrument name in the config whose simulated lab coupling to use")
    ss.add_argument("--fault", type=_fault_arg, metavar="KIND[@SECONDS]",
                    help="inject a fault (silent, disconnect, garbage, truncated, device-error, overflow) at once "
                         "or SECONDS after the first client connects")
    ss.set_defaults(fn=cmd_sim_serve)

    from qlab.bench import BENCHMARKS

    b = add("bench", cmd_bench, "measure throughput against same-run references (table on stdout)")
    b.add_argument("--quick", action="store_true", help="smaller inputs (seconds instead of a minute)")
    b.add_argument("--only", action="append", choices=list(BENCHMARKS), metavar="NAME",
                   help=f"run only this benchmark (repeatable): {', '.join(BENCHMARKS)}")

    from qlab.kme.cli import add_kme_commands  # qlab pki init, qlab kme serve (ETSI GS QKD 014 key delivery)
    add_kme_commands(sub, common)

    from qlab.network.cli import register as register_network  # network emulate/demo, node (issue 16)

    register_network(sub)
    return p


def _stopped_exit(code: int, exc: BaseException, argv: list[str] | None) -> int:
    """Exit code of a stopped command. A run the engine stopped (abort or fault) has already switched the
    lasers off, closed its file and the lab: as the ``qlab`` program (``argv`` None) exit at once, without
    the interpreter's slow teardown of worker threads and libraries (~0.3 s)."""
    if argv is None and hasattr(exc, "laser_states"):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    for key, value in GLOBAL_DEFAULTS.items():
        if not hasattr(args, key):
            setattr(args, key, value)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.fn(args) or 0)
    except ConfigError as exc:
        sep = "\n" if len(exc.problems) > 1 else " "  # one problem: one line; several: one per line
        print(f"config error:{sep}{exc}", file=sys.stderr)
        return 2
    except UsageError as exc:
        print(f"qlab: error: {exc}", file=sys.stderr)
        return 2
    except NotBuiltError as exc:
        print(f"not built yet: {exc}", file=sys.stderr)
        return 3
    except AbortedError as exc:
        print(f"aborted: {exc}{_stop_line(exc)}", file=sys.stderr)
        return _stopped_exit(130, exc, argv)
    except InstrumentError as exc:
        print(f"instrument fault: {exc}{_stop_line(exc)}", file=sys.stderr)
        return _stopped_exit(4, exc, argv)
    except QlabError as exc:
        print(f"error: {exc}{_stop_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `qlab ... | head`: the reader has gone; nothing more to say
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:  # noqa: BLE001 - one line for users; the traceback on request
        if args.debug:
            raise
        print(f"internal error: {type(exc).__name__}: {exc} (run with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
