"""The link's SLO report from the nodes' run files (``qlab network report RUNFILES… [--events FILE]``).

Definitions (shared/reference/network.md):

- the *link state* at a time is the worse of the two nodes' states (ALARM > DOWN > RECOVERING > STARTING >
  SYNCING > DEGRADED > UP); with one run file, that node's state;
- the report's *window* starts at the scenario's start (``--events``) or else when the link is first UP, and
  ends when the first node's run ends;
- *availability*: fraction of the window in UP or DEGRADED;
- *outage*: a maximal interval of the link in DOWN; its *cause* is the latest scenario event (fibre cut, loss,
  source, detector, classical outage) started before it; *time to detect* = outage start − cause onset; *time to
  recover* = first UP/DEGRADED after the cause's removal − the removal (without a known cause: from the outage's
  start); MTTR = mean time to recover;
- *net key rate*: committed secret bits (after the authentication key they refilled) per second; its mean is
  the window's committed bits / window length, its 5th percentile is over per-second samples (t = 1, 2, … s
  into the window) of the bits committed in (t − block duration, t] / block duration;
- *usable key*: committed bits still held (blocks dropped at reconciliation excluded) of the coordinating node
  (role alice; else the first run file);
- *key lost to aborted blocks*: aborted blocks in the window × the mean bits of a committed block;
- *QBER excursion*: consecutive blocks whose larger QBER is above ``operations.qber_degraded``.

SLO targets (``slo:`` of the network description stored in the run file, or ``--config``) are checked.
Times in the JSON are wall-clock seconds (epoch) and ``t_s`` relative to the window start.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from qlab.errors import QlabError

RANK = {"UP": 0, "DEGRADED": 1, "SYNCING": 2, "STARTING": 3, "RECOVERING": 4, "DOWN": 5, "ALARM": 6}
PRODUCING = ("UP", "DEGRADED")
OUTAGE_CAUSES = ("fibre_cut", "classical_outage", "loss_step", "loss_ramp", "source_power", "detector",
                 "eavesdropper")


def _t(rec: dict[str, Any]) -> float:
    data = rec.get("data") or {}
    return float(data.get("time", rec.get("time", 0.0)))


def read_node(path: str | Path) -> dict[str, Any]:
    """One node's link history from its run file. Raises QlabError for a file that is not a link run."""
    from qlab.storage.reader import RunReader

    try:
        with RunReader(path) as r:
            meta = r.metadata()
            results = r.results()
    except (OSError, KeyError) as exc:
        raise QlabError(f"{path}: cannot read the run file ({exc})") from None
    if meta.get("procedure") != "network-link":
        raise QlabError(f"{path}: not a network node's run file (procedure {meta.get('procedure')!r})")
    return node_history(results, meta.get("parameters", {}), config_text=meta.get("config_text", ""),
                        source=str(path))


def node_history(results: list[dict[str, Any]], parameters: dict[str, Any] | None = None, config_text: str = "",
                 source: str = "") -> dict[str, Any]:
    """A node's history from its run file's result records ({time, name, data})."""
    parameters = parameters or {}
    recs = sorted(results, key=_t)
    start = next((_t(r) for r in recs if r["name"] == "link_start"), _t(recs[0]) if recs else 0.0)
    first = next((r["data"] for r in recs if r["name"] == "link_start"), {})
    end = next((_t(r) for r in reversed(recs) if r["name"] in ("link_end",)), _t(recs[-1]) if recs else start)
    states = [(start, first.get("state", "STARTING"), first.get("reason", "node started"))]
    for r in recs:
        if r["name"] == "state":
            states.append((_t(r), r["data"]["to"], r["data"].get("reason", "")))
    blocks = [{**r["data"], "time": _t(r)} for r in recs if r["name"] == "block"]
    dropped = {int(b) for r in recs if r["name"] == "reconcile" for b in r["data"].get("dropped", [])}
    return {"source": source, "node": parameters.get("node") or first.get("node"),
            "role": first.get("role") or parameters.get("role"),
            "block_duration_s": float(first.get("block_duration_s")
                                      or (parameters.get("key_management") or {}).get("block_duration_s") or 20.0),
            "start": start, "end": end, "states": states, "blocks": blocks, "dropped": sorted(dropped),
            "alarms": [{**r["data"], "time": _t(r)} for r in recs if r["name"] == "alarm"],
            "alarms_cleared": [{**r["data"], "time": _t(r)} for r in recs if r["name"] == "alarm_cleared"],
            "compensations": [{**r["data"], "time": _t(r)} for r in recs if r["name"] == "compensation"],
            "detector_drift": [{**r["data"], "time": _t(r)} for r in recs
                               if r["name"] in ("detector_drift", "detector_drift_cleared")],
            "config_text": config_text}


def _state_at(states: list[tuple[float, str, str]], t: float) -> str:
    cur = states[0][1]
    for ts, s, _ in states:
        if ts <= t:
            cur = s
        else:
            break
    return cur


def link_states(nodes: list[dict[str, Any]]) -> list[tuple[float, str]]:
    """Change points of the link state (worst of the nodes), from the latest node start."""
    t0 = max(n["start"] for n in nodes)
    times = sorted({t0} | {t for n in nodes for t, _, _ in n["states"] if t > t0})
    out: list[tuple[float, str]] = []
    for t in times:
        s = max((_state_at(n["states"], t) for n in nodes), key=RANK.__getitem__)
        if not out or out[-1][1] != s:
            out.append((t, s))
    return out


def _intervals(changes: list[tuple[float, str]], t0: float, t1: float) -> list[tuple[float, float, str]]:
    """(start, end, state) covering [t0, t1]."""
    out = []
    for i, (t, s) in enumerate(changes):
        nxt = changes[i + 1][0] if i + 1 < len(changes) else t1
        a, b = max(t, t0), min(nxt, t1)
        if b > a:
            out.append((a, b, s))
    return out


def _scenario_events(events: list[dict[str, Any]]) -> tuple[float | None, list[dict[str, Any]]]:
    """(scenario start, [{index, event, start, end, ...}]) from the emulator's log."""
    t_start = next((e["time"] for e in events if e.get("event") == "scenario" and e.get("phase") == "start"), None)
    by_index: dict[int, dict[str, Any]] = {}
    for e in events:
        if "index" not in e:
            continue
        d = by_index.setdefault(int(e["index"]), {"index": int(e["index"]), "event": e["event"], "start": None,
                                                 "end": None})
        if e.get("phase") == "start" and d["start"] is None:
            d["start"] = e["time"]
            d.update({k: v for k, v in e.items() if k not in ("time", "t_s", "phase", "index", "event")})
        elif e.get("phase") == "end":
            d["end"] = e["time"]
    return t_start, sorted(by_index.values(), key=lambda d: d["start"] or 0.0)


def _config(nodes: list[dict[str, Any]], config: str | Path | None) -> Any:
    from qlab.network.config import load_network

    if config is not None:
        return load_network(config).config
    text = next((n["config_text"] for n in nodes if n.get("config_text")), "")
    if not text:
        raise QlabError("the run files hold no network description: pass --config")
    return load_network("<run file network description>", text=text).config


def build_report(runfiles: list[str | Path] | None = None, events: str | Path | list[dict] | None = None,
                 config: str | Path | None = None, nodes: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The SLO report (a JSON-able dict) of run files (or of ``nodes`` histories, for tests)."""
    from qlab.network.scenario import read_event_log

    if nodes is None:
        if not runfiles:
            raise QlabError("no run files given")
        nodes = [read_node(p) for p in runfiles]
    cfg = _config(nodes, config)
    ops, slo = cfg.operations, cfg.slo
    ev_list = read_event_log(events) if isinstance(events, str | Path) and Path(events).exists() else (
        events if isinstance(events, list) else [])
    scen_start, scen = _scenario_events(ev_list)
    changes = link_states(nodes)
    t_end = min(n["end"] for n in nodes)
    if scen_start is not None:
        t0 = scen_start
    else:
        t0 = next((t for t, s in changes if s in PRODUCING), max(n["start"] for n in nodes))
    window = max(t_end - t0, 1e-9)
    iv = _intervals(changes, t0, t_end)
    time_in = {s: 0.0 for s in RANK}
    for a, b, s in iv:
        time_in[s] += b - a
    availability = (time_in["UP"] + time_in["DEGRADED"]) / window

    def first_producing_after(t: float) -> float | None:
        for a, _b, s in iv:
            if s in PRODUCING and a >= t:
                return a
        return None

    outages = []
    for a, b, s in iv:
        if s != "DOWN":
            continue
        if outages and abs(outages[-1]["end"] - a) < 1e-9:
            outages[-1]["end"] = b
            continue
        outages.append({"start": a, "end": b})
    for o in outages:
        o["duration_s"] = o["end"] - o["start"]
        cause = None
        for e in scen:
            if e["event"] in OUTAGE_CAUSES and e["start"] is not None and e["start"] <= o["start"] + 0.5:
                cause = e
        o["cause"] = None if cause is None else {"event": cause["event"], "index": cause["index"],
                                                 "start": cause["start"], "end": cause["end"]}
        o["time_to_detect_s"] = None if cause is None else o["start"] - cause["start"]
        removed = cause["end"] if cause is not None and cause["end"] is not None else None
        back = first_producing_after(removed if removed is not None else o["start"])
        o["recovered_at"] = back
        o["time_to_recover_s"] = None if back is None else back - (removed if removed is not None else o["start"])
        o["t_s"] = o["start"] - t0
    recover = [o["time_to_recover_s"] for o in outages if o["time_to_recover_s"] is not None]

    coord = next((n for n in nodes if n.get("role") == "alice"), nodes[0])
    bdur = coord["block_duration_s"]
    blocks = [b for b in coord["blocks"] if t0 <= b["time"] <= t_end]
    committed = [b for b in blocks if b.get("committed")]
    aborted = [b for b in blocks if not b.get("committed")]
    bits_window = sum(int(b.get("secret_bits") or 0) for b in committed)
    usable = sum(int(b.get("secret_bits") or 0) for b in coord["blocks"]
                 if b.get("committed") and int(b.get("block", -1)) not in set(coord["dropped"]))
    all_committed = [b for b in coord["blocks"] if b.get("committed")]  # a block just before the window counts
    samples = []
    k = 1
    while t0 + k <= t_end + 1e-9:
        t = t0 + k
        samples.append(sum(int(b.get("secret_bits") or 0) for b in all_committed if t - bdur < b["time"] <= t) / bdur)
        k += 1
    mean_rate = bits_window / window
    p5 = float(np.percentile(samples, 5)) if samples else 0.0
    mean_block = bits_window / len(committed) if committed else 0.0

    excursions: list[dict[str, Any]] = []
    prev_high = False
    for b in blocks:
        q = {k2: v for k2, v in (b.get("qber") or {}).items() if v is not None}
        high = bool(q) and max(q.values()) > ops.qber_degraded
        if high:
            if not prev_high:
                excursions.append({"start": b["time"] - float(b.get("duration_s") or bdur), "end": b["time"],
                                   "blocks": [], "peak": {}})
            ex = excursions[-1]
            ex["end"] = b["time"]
            ex["blocks"].append(b.get("block"))
            for basis, v in q.items():
                ex["peak"][basis] = max(ex["peak"].get(basis, 0.0), v)
        prev_high = high
    for ex in excursions:
        ex["t_s"] = ex["start"] - t0

    alarms = []
    for n in nodes:
        for a in n["alarms"]:
            if a.get("mirrored"):
                continue
            cleared = next((c["time"] for c in n["alarms_cleared"] if c["time"] >= a["time"]), None)
            alarms.append({"node": n["node"], "start": a["time"], "t_s": a["time"] - t0,
                           "reason": a.get("reason"), "cleared_at": cleared})
    comps = []
    for n in nodes:
        if n is not coord:
            continue
        for c in n["compensations"]:
            if c.get("phase") == "end":
                comps.append({"node": n["node"], "time": c["time"], "t_s": c["time"] - t0,
                              "duration_s": c.get("duration_s"), "success": c.get("success"),
                              "trials": c.get("trials")})
    checks = {"min_key_rate_bps": {"target": slo.min_key_rate_bps, "value": mean_rate,
                                   "met": mean_rate >= slo.min_key_rate_bps},
              "max_outage_s": {"target": slo.max_outage_s,
                               "value": max((o["duration_s"] for o in outages), default=0.0),
                               "met": all(o["duration_s"] <= slo.max_outage_s for o in outages)},
              "min_availability": {"target": slo.min_availability, "value": availability,
                                   "met": availability >= slo.min_availability}}
    return {"window": {"start": t0, "end": t_end, "duration_s": window,
                       "from": "scenario start" if scen_start is not None else "link first UP"},
            "nodes": [{"node": n["node"], "role": n["role"], "source": n["source"]} for n in nodes],
            "usable_key_bits": usable, "committed_bits_in_window": bits_window,
            "net_key_rate_bps": {"mean": mean_rate, "p5": p5},
            "availability": availability, "time_in_state_s": time_in,
            "outages": outages, "mttr_s": float(np.mean(recover)) if recover else None,
            "blocks": {"committed": len(committed), "aborted": len(aborted)},
            "key_lost_to_aborted_blocks_bits": len(aborted) * mean_block,
            "qber_excursions": excursions, "alarms": alarms, "compensations": comps,
            "detector_drift": [d for n in nodes for d in n["detector_drift"]],
            "slo": checks, "slo_met": all(c["met"] for c in checks.values()),
            "scenario_events": [{**e, "t_s": None if e["start"] is None else e["start"] - t0} for e in scen],
            "series": {"link_state": [{"time": t, "t_s": t - t0, "state": s} for t, s in changes],
                       "blocks": [{"t_s": b["time"] - t0, "block": b.get("block"), "committed": b.get("committed"),
                                   "qber": b.get("qber"),
                                   "rate_bps": int(b.get("secret_bits") or 0) / float(b.get("duration_s") or bdur)}
                                  for b in coord["blocks"]],
                       "key_rate_per_s": samples},
            "thresholds": {"qber_degraded": ops.qber_degraded, "recompensate_qber": ops.recompensate_qber,
                           "alarm_qber": ops.alarm_qber, "qber_tol": cfg.key_management.qber_tol}}


def format_report(r: dict[str, Any]) -> str:
    w = r["window"]
    lines = [f"SLO report over {w['duration_s']:.1f} s (from the {w['from']}; nodes "
             f"{', '.join(str(n['node']) for n in r['nodes'])})",
             f"  usable secret key {r['usable_key_bits']} bits; committed in the window "
             f"{r['committed_bits_in_window']} bits in {r['blocks']['committed']} blocks "
             f"({r['blocks']['aborted']} aborted, ~{r['key_lost_to_aborted_blocks_bits']:.0f} bits lost)",
             f"  net key rate mean {r['net_key_rate_bps']['mean']:.1f} bit/s, 5th percentile "
             f"{r['net_key_rate_bps']['p5']:.1f} bit/s",
             f"  availability {100 * r['availability']:.1f} % (UP {r['time_in_state_s']['UP']:.1f} s, DEGRADED "
             f"{r['time_in_state_s']['DEGRADED']:.1f} s, DOWN {r['time_in_state_s']['DOWN']:.1f} s, RECOVERING "
             f"{r['time_in_state_s']['RECOVERING']:.1f} s, ALARM {r['time_in_state_s']['ALARM']:.1f} s)"]
    mttr = r["mttr_s"]
    lines.append(f"  outages: {len(r['outages'])}; MTTR {'-' if mttr is None else f'{mttr:.1f} s'}")
    for o in r["outages"]:
        cause = o["cause"]["event"] if o["cause"] else "unknown cause"
        ttd = "-" if o["time_to_detect_s"] is None else f"{o['time_to_detect_s']:.1f} s"
        ttr = "-" if o["time_to_recover_s"] is None else f"{o['time_to_recover_s']:.1f} s"
        lines.append(f"    t={o['t_s']:7.1f} s  {o['duration_s']:6.1f} s DOWN ({cause}): detected after {ttd}, "
                     f"recovered {ttr} after the cause ended")
    for ex in r["qber_excursions"]:
        peak = " ".join(f"{b} {v:.3f}" for b, v in ex["peak"].items())
        lines.append(f"  QBER excursion t={ex['t_s']:.1f} s, {len(ex['blocks'])} block(s), peak {peak}")
    for c in r["compensations"]:
        lines.append(f"  polarization re-compensation at t={c['t_s']:.1f} s: {c['trials']} settings, "
                     f"{(c['duration_s'] or 0):.1f} s, {'QBER back below threshold' if c['success'] else 'failed'}")
    for a in r["alarms"]:
        cleared = "not cleared" if a["cleared_at"] is None else f"cleared after {a['cleared_at'] - a['start']:.1f} s"
        lines.append(f"  ALARM on {a['node']} at t={a['t_s']:.1f} s: {a['reason']} ({cleared})")
    for d in r["detector_drift"]:
        if "kind" in d:
            lines.append(f"  detector port {d['port']}: {d['kind']} (share ×{d['share_ratio']:.2f})")
    lines.append("  SLO: " + "; ".join(f"{k} {c['value']:.3g} vs {c['target']:g}: {'met' if c['met'] else 'MISSED'}"
                                       for k, c in r["slo"].items()))
    return "\n".join(lines)


STATE_COLOURS = {"UP": "#2ca02c", "DEGRADED": "#bcbd22", "SYNCING": "#17becf", "STARTING": "#7f7f7f",
                 "RECOVERING": "#ff7f0e", "DOWN": "#d62728", "ALARM": "#9467bd"}


def plot_report(r: dict[str, Any], path: str | Path) -> Path:
    """PNG: net key rate, QBER per basis and link state against time, scenario events shaded and labelled.
    Raises QlabError without matplotlib (pip install 'qlab[report]')."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise QlabError(f"the report plot needs matplotlib (pip install 'qlab[report]'): {exc}") from None
    s = r["series"]
    end = r["window"]["duration_s"]
    fig, (ax_k, ax_q, ax_s) = plt.subplots(3, 1, figsize=(11, 7.5), sharex=True,
                                           gridspec_kw={"height_ratios": [3, 3, 1.2]})
    ks = np.asarray(s["key_rate_per_s"], float)
    ax_k.plot(np.arange(1, ks.size + 1), ks, color="#1f77b4", lw=1.2, label="net key rate (per s, block-averaged)")
    bl = [b for b in s["blocks"] if b["t_s"] >= -1e-9]
    ax_k.plot([b["t_s"] for b in bl], [b["rate_bps"] for b in bl], "o", ms=3, color="#1f77b4", alpha=0.6,
              label="per block")
    ax_k.axhline(r["slo"]["min_key_rate_bps"]["target"], color="grey", ls="--", lw=0.8, label="SLO min rate")
    ax_k.set_ylabel("net key rate (bit/s)")
    ax_k.legend(loc="upper right", fontsize=7)
    for basis, colour in (("Z", "#d62728"), ("X", "#9467bd")):
        pts = [(b["t_s"], (b["qber"] or {}).get(basis)) for b in bl if (b["qber"] or {}).get(basis) is not None]
        if pts:
            ax_q.plot(*zip(*pts, strict=True), "o-", ms=3, lw=0.8, color=colour, label=f"QBER {basis}")
    th = r["thresholds"]
    ax_q.axhline(th["recompensate_qber"], color="orange", ls="--", lw=0.8, label="re-compensate")
    ax_q.axhline(th["alarm_qber"], color="purple", ls=":", lw=0.8, label="alarm")
    ax_q.set_ylabel("QBER")
    ax_q.set_ylim(0, max(0.3, th["alarm_qber"] * 1.3))
    ax_q.legend(loc="upper right", fontsize=7, ncol=2)
    states = s["link_state"]
    for i, st in enumerate(states):
        a = max(st["t_s"], 0.0)
        b = states[i + 1]["t_s"] if i + 1 < len(states) else end
        if b > a:
            ax_s.axvspan(a, min(b, end), color=STATE_COLOURS.get(st["state"], "k"), lw=0)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in STATE_COLOURS.values()]
    ax_s.legend(handles, list(STATE_COLOURS), loc="upper center", bbox_to_anchor=(0.5, -0.35), ncol=7, fontsize=7)
    ax_s.set_yticks([])
    ax_s.set_ylabel("link state")
    ax_s.set_xlabel("time since the window start (s)")
    for e in r["scenario_events"]:
        if e["t_s"] is None:
            continue
        t_end = e["t_s"] + ((e["end"] - e["start"]) if e.get("end") else 0.0)
        for ax in (ax_k, ax_q):
            if t_end > e["t_s"]:
                ax.axvspan(e["t_s"], t_end, color="grey", alpha=0.15, lw=0)
            ax.axvline(e["t_s"], color="k", lw=0.6, ls=":")
        ax_k.annotate(e["event"].replace("_", " "), (e["t_s"], 1.0), xycoords=("data", "axes fraction"),
                      fontsize=7, rotation=90, va="top", ha="right")
    ax_s.set_xlim(0, end)
    avail = 100 * r["availability"]
    fig.suptitle(f"link report: availability {avail:.1f} %, mean net key rate {r['net_key_rate_bps']['mean']:.0f} "
                 f"bit/s, {len(r['outages'])} outage(s), SLO {'met' if r['slo_met'] else 'missed'}", fontsize=10)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
