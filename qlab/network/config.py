"""The network description (``network.yaml``): nodes with their own instruments, the fibre link between them,
where the pair source sits, each node's classical endpoint, and key-management settings.

Validated like instruments.yaml: every problem is reported with file, line and key (``ConfigError``). Each
node's ``instruments`` block uses the instruments.yaml format and is checked by the same loader; its
``backend: emulated`` instruments take their address from the emulator's address file at run time.

Units are in key names: ``length_km``, ``loss_db_per_km``, ``delay_ps_per_km``, ``block_duration_s``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from qlab.catalogue import DRIVERS
from qlab.config.loader import LoadedConfig, _describe, load_config
from qlab.config.yaml_lines import KeyPath, format_path, line_of, load_yaml_with_lines, read_text
from qlab.errors import ConfigError
from qlab.kme.netconfig import KmeNodeSection

DEFAULT_NETWORK_CONFIG = "network.yaml"
EMULATED = "emulated"  # backend value: the address comes from the emulator's address file
GROUP_DELAY_PS_PER_KM = 4_897_000  # group index 1.468 → ≈ 4.9 µs/km
ROLES = ("alice", "bob")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NetworkSection(_Strict):
    name: str = "qlab network"
    data_dir: str = "qlab-network-data"  # each node writes under DATA_DIR/NODE


class SourceSection(_Strict):
    node: str  # the node whose lab holds the entangled-pair source
    pairs_per_mw: float = Field(default=2.0e4, ge=0)
    visibility: float = Field(default=0.98, ge=0, le=1)
    state: Literal["phi_plus", "psi_minus"] = "phi_plus"


class EmulatorSection(_Strict):
    seed: int = 20261129
    host: str = "127.0.0.1"  # where the emulator serves the devices (loopback by default)
    local_transmission: float = Field(default=0.8, ge=0, le=1)  # source-node patch fibre and coupling


class LinkSection(_Strict):
    nodes: list[str] = Field(min_length=2, max_length=2)
    length_km: float = Field(default=10.0, ge=0)
    loss_db_per_km: float = Field(default=0.2, ge=0)
    extra_loss_db: float = Field(default=1.0, ge=0)  # connectors, coupling at the far node
    delay_ps_per_km: int = Field(default=GROUP_DELAY_PS_PER_KM, ge=0)
    unitary: Literal["identity", "random"] = "identity"
    polarization_drift_rad_per_sqrt_s: float = Field(default=0.0, ge=0)

    @property
    def transmission(self) -> float:
        """η = 10^(−(α L + extra)/10)."""
        return 10 ** (-(self.loss_db_per_km * self.length_km + self.extra_loss_db) / 10)

    @property
    def delay_ps(self) -> int:
        return int(round(self.delay_ps_per_km * self.length_km))


class KeyManagementSection(_Strict):
    block_duration_s: float = Field(default=20.0, gt=0, le=3600)  # tagger time per block
    qber_tol: float = Field(default=0.08, gt=0, lt=0.5)
    window_ps: int = Field(default=2000, gt=0)
    sample_fraction: float = Field(default=0.05, gt=0, lt=1)
    eps_sec: float = Field(default=1e-10, gt=0, lt=1)
    eps_cor: float = Field(default=1e-15, gt=0, lt=1)
    auth: Literal["hmac", "wegman-carter"] = "hmac"
    sync_duration_s: float = Field(default=1.5, gt=0.2, le=10)  # peer tags published once per session
    keys_dir: str = "keys"  # pre-shared authentication keys per node pair (under network.data_dir)


class NodeSection(_Strict):
    role: Literal["alice", "bob"]  # the party name of the node's detectors' roles (alice.H, ...)
    endpoint: str = Field(pattern=r"^[^:\s]+:\d{1,5}$")  # host:port of the node's classical channel
    metrics_port: int = Field(default=0, ge=0, le=65535)  # Prometheus /metrics and /status on 127.0.0.1; 0 = free
    instruments: dict[str, Any]
    kme: KmeNodeSection | None = None  # the node's ETSI GS QKD 014 key manager (qlab.kme.netconfig)


class OperationsSection(_Strict):
    """Thresholds (with hysteresis: a condition is entered at one value and left at another) of the link's
    state machine and its automatic maintenance. Ratios are fractions (0.05 = 5 %)."""

    qber_degraded: float = Field(default=0.045, gt=0, lt=0.5)  # a committed block above this: DEGRADED
    qber_ok: float = Field(default=0.035, gt=0, lt=0.5)  # ... and back to UP below this
    recompensate_qber: float = Field(default=0.05, gt=0, lt=0.5)  # either basis: re-compensate polarization
    resume_qber: float = Field(default=0.035, gt=0, lt=0.5)  # compensation stops (key resumes) below this
    alarm_qber: float = Field(default=0.15, gt=0, le=0.5)  # both bases after compensation: ALARM (attack?)
    compensation_probe_s: float = Field(default=0.3, gt=0.05, le=5)  # live coincidences per trial setting
    compensation_step_deg: float = Field(default=6.0, gt=0, le=45)  # first step of the coordinate search
    compensation_max_trials: int = Field(default=30, ge=1, le=500)  # bounded: then the best setting is kept
    light_lost_ratio: float = Field(default=0.25, gt=0, lt=1)  # singles below this × baseline: DOWN (no light)
    light_back_ratio: float = Field(default=0.6, gt=0, le=1)  # ... and light is back above this × baseline
    coincidence_lost_ratio: float = Field(default=0.2, gt=0, lt=1)  # a block's coincidences vs baseline: DOWN
    channel_lost_s: float = Field(default=2.0, gt=0)  # no classical session for this long: DOWN
    clock_reacquire_gap_s: float = Field(default=30.0, gt=0)  # no clock update for this long: re-acquire
    clock_max_residual_ps: float = Field(default=300.0, gt=0)  # a tracker residual above this: re-acquire
    detector_drift_ratio: float = Field(default=0.25, gt=0, lt=1)  # a port's share of singles off by this: flag
    detector_clear_ratio: float = Field(default=0.1, gt=0, lt=1)  # ... flag cleared within this
    baseline_time_constant_s: float = Field(default=60.0, gt=0)  # singles baselines follow slowly (while UP)
    probe_period_s: float = Field(default=1.0, gt=0, le=60)  # while DOWN: reconnect/probe at most this often


class SloSection(_Strict):
    """Service-level objectives checked by ``qlab network report``."""

    min_key_rate_bps: float = Field(default=100.0, ge=0)  # mean net secret key rate
    max_outage_s: float = Field(default=30.0, gt=0)  # longest single outage
    min_availability: float = Field(default=0.9, ge=0, le=1)  # fraction of time UP or DEGRADED


class NetworkConfig(_Strict):
    network: NetworkSection = NetworkSection()
    emulator: EmulatorSection = EmulatorSection()
    source: SourceSection
    links: dict[str, LinkSection]
    key_management: KeyManagementSection = KeyManagementSection()
    operations: OperationsSection = OperationsSection()
    slo: SloSection = SloSection()
    nodes: dict[str, NodeSection]


@dataclass
class NetworkDescription:
    """A validated network description plus where it came from."""

    config: NetworkConfig
    path: str
    text: str
    lines: dict[KeyPath, int] = field(default_factory=dict)
    node_labs: dict[str, LoadedConfig] = field(default_factory=dict)  # node -> its own lab (validated)

    @property
    def base_dir(self) -> Path:
        return Path(self.path).resolve().parent

    @property
    def data_dir(self) -> Path:
        d = Path(self.config.network.data_dir)
        return d if d.is_absolute() else self.base_dir / d

    @property
    def link(self) -> LinkSection:
        return next(iter(self.config.links.values()))

    def peer_of(self, node: str) -> str:
        a, b = self.link.nodes
        return b if node == a else a

    def node_by_role(self, role: str) -> str:
        return next(n for n, s in self.config.nodes.items() if s.role == role)

    def compensator_of(self, node: str) -> str | None:
        """The node's polarization controller in the ``compensator`` stage (None if it has none)."""
        lab = self.node_labs[node]
        for name, inst in lab.config.instruments.items():
            if lab.kind(name) == "polarization" and inst.optics is not None and inst.optics.stage == "compensator":
                return name
        return None

    def tagger_of(self, node: str) -> str:
        lab = self.node_labs[node]
        return next(n for n in lab.config.instruments if lab.kind(n) == "tagger")

    def lab_dict(self, node: str, backends: dict[str, str] | None = None) -> dict[str, Any]:
        """The node's own instruments.yaml content; ``backend: emulated`` replaced from ``backends``. Raises
        ConfigError naming the instrument when an emulated instrument has no address."""
        instruments = copy.deepcopy(self.config.nodes[node].instruments)
        problems = []
        for name, inst in instruments.items():
            inst.pop("sim", None)  # the node never simulates: that is the emulator's business
            if inst.get("backend") == EMULATED:
                addr = (backends or {}).get(name)
                if addr is None:
                    problems.append((line_of(self.lines, ("nodes", node, "instruments", name, "backend")),
                                     f"nodes.{node}.instruments.{name}.backend",
                                     "'emulated' but no address for it: start `qlab network emulate` and pass "
                                     "its --json file with --devices"))
                    continue
                inst["backend"] = addr
        if problems:
            raise ConfigError(self.path, problems)
        return {"lab": {"name": f"{self.config.network.name}: node {node}", "layout": "bbm92",
                        "data_dir": str(self.data_dir / node)},
                "analysis": {"window_ps": self.config.key_management.window_ps},
                "instruments": instruments}


def resolve_network_config(path: str | Path | None) -> Path:
    return Path(path) if path is not None else Path.cwd() / DEFAULT_NETWORK_CONFIG


def load_network(path: str | Path | None = None, text: str | None = None) -> NetworkDescription:
    """Read and validate a network description. Raises ConfigError listing every problem (file:line: key)."""
    p = resolve_network_config(path)
    source = str(p)
    if text is None:
        text = read_text(p)
    data, lines = load_yaml_with_lines(text, source)
    if not isinstance(data, dict):
        raise ConfigError(source, [(1, "", "expected a mapping with 'nodes', 'links' and 'source' sections")])
    problems: list[tuple[int | None, str, str]] = []
    try:
        cfg = NetworkConfig.model_validate(data)
    except ValidationError as exc:
        problems.extend(_describe(err, lines) for err in exc.errors())
        raise ConfigError(source, problems) from None
    desc = NetworkDescription(cfg, source, text, lines)
    _check_semantics(desc, problems)
    if problems:
        raise ConfigError(source, problems)
    return desc


def _check_semantics(desc: NetworkDescription, problems: list) -> None:
    cfg, lines = desc.config, desc.lines

    def add(path: KeyPath, msg: str) -> None:
        problems.append((line_of(lines, path), format_path(path), msg))

    if len(cfg.nodes) != 2:
        add(("nodes",), f"this version runs a link between exactly two nodes; got {len(cfg.nodes)}")
    if len(cfg.links) != 1:
        add(("links",), f"this version runs exactly one link; got {len(cfg.links)}")
    roles = [n.role for n in cfg.nodes.values()]
    if sorted(roles) != sorted(ROLES):
        add(("nodes",), f"the two nodes need the roles alice and bob (one each); got {roles}")
    for lname, link in cfg.links.items():
        for i, n in enumerate(link.nodes):
            if n not in cfg.nodes:
                add(("links", lname, "nodes", i), f"unknown node {n!r}; nodes are {sorted(cfg.nodes)}")
        if len(set(link.nodes)) != 2:
            add(("links", lname, "nodes"), "a link joins two different nodes")
    if cfg.source.node not in cfg.nodes:
        add(("source", "node"), f"unknown node {cfg.source.node!r}; nodes are {sorted(cfg.nodes)}")
    ops = cfg.operations
    for low, high in (("qber_ok", "qber_degraded"), ("resume_qber", "recompensate_qber"),
                      ("light_lost_ratio", "light_back_ratio"), ("detector_clear_ratio", "detector_drift_ratio"),
                      ("recompensate_qber", "alarm_qber")):
        if getattr(ops, low) >= getattr(ops, high):
            add(("operations", low), f"must be below operations.{high} ({getattr(ops, high)}): the hysteresis "
                                     "band needs a lower leave than enter threshold")
    ports = [s.metrics_port for s in cfg.nodes.values() if s.metrics_port]
    for node, sec in cfg.nodes.items():
        if sec.metrics_port and ports.count(sec.metrics_port) > 1:
            add(("nodes", node, "metrics_port"), f"port {sec.metrics_port} is used by another node")
    endpoints: dict[str, str] = {}
    owner: dict[str, str] = {}
    for node, sec in cfg.nodes.items():
        if sec.endpoint in endpoints:
            add(("nodes", node, "endpoint"), f"{sec.endpoint} is already {endpoints[sec.endpoint]}'s endpoint")
        endpoints[sec.endpoint] = node
        for name in sec.instruments:
            if name in owner:
                add(("nodes", node, "instruments", name), f"instrument name already used by node {owner[name]} "
                                                          "(names are unique across the network: one emulator "
                                                          "serves them all)")
            owner[name] = node
        _check_node_lab(desc, node, add, problems)
    _check_kme(desc, add)


def _check_node_lab(desc: NetworkDescription, node: str, add: Any, problems: list) -> None:
    """The node's instruments through the instruments.yaml loader; problems re-anchored to network.yaml."""
    sec = desc.config.nodes[node]
    base: KeyPath = ("nodes", node, "instruments")
    text = yaml.safe_dump({"instruments": {k: {**v, "backend": "sim"} if isinstance(v, dict) else v
                                           for k, v in sec.instruments.items()}}, sort_keys=False)
    try:
        lab = load_config(f"<{node}>", text=text)
    except ConfigError as exc:
        for _, key, msg in exc.problems:
            parts = tuple(key.split(".")[1:]) if key.startswith("instruments") else ()
            path = (*base, *parts)
            problems.append((line_of(desc.lines, path), format_path(path), msg))
        return
    desc.node_labs[node] = lab
    taggers = [n for n in lab.config.instruments if lab.kind(n) == "tagger"]
    if len(taggers) != 1:
        add(base, f"a node needs exactly one time tagger (its own clock); got {taggers}")
    for name, inst in lab.config.instruments.items():
        if inst.channel is not None and not inst.channel.role.startswith(sec.role + "."):
            add((*base, name, "channel", "role"), f"node {node} has role {sec.role}: its detectors' roles are "
                                                  f"{sec.role}.H/V/D/A")
        if DRIVERS[inst.driver].kind == "laser" and desc.config.source.node != node:
            add((*base, name), "a pump laser belongs to the node holding the source (source.node)")
    have = {i.channel.role for i in lab.config.instruments.values() if i.channel is not None}
    missing = sorted({f"{sec.role}.{p}" for p in "HVDA"} - have)
    if missing:
        add(base, f"BBM92 with passive basis choice needs detectors for {missing}")


def _check_kme(desc: NetworkDescription, add: Any) -> None:
    """The nodes' KME sections agree: both or neither, opposite allocation ends, distinct endpoints and SAE
    IDs, pairs naming SAEs of the peer node's KME."""
    cfg = desc.config
    secs = {n: s.kme for n, s in cfg.nodes.items() if s.kme is not None}
    if not secs:
        return
    if len(secs) != len(cfg.nodes):
        missing = sorted(set(cfg.nodes) - set(secs))
        add(("nodes", missing[0]), "every node of the link needs a 'kme:' section when one node has one")
        return
    seen_ep: dict[str, str] = {cfg.nodes[n].endpoint: n for n in cfg.nodes}
    seen_sae: dict[str, str] = {}
    for node, k in secs.items():
        for key in ("listen", "peer_listen"):
            ep = getattr(k, key)
            if ep in seen_ep:
                add(("nodes", node, "kme", key), f"{ep} is already used by {seen_ep[ep]}")
            seen_ep[ep] = f"{node}.kme.{key}"
        for sae in k.saes:
            if sae in seen_sae:
                add(("nodes", node, "kme", "saes", sae), f"SAE ID already served by node {seen_sae[sae]}")
            seen_sae[sae] = node
        peer = desc.peer_of(node) if len(cfg.links) == 1 else None
        if peer in secs:
            for sae, remotes in (k.pairs or {}).items():
                if sae not in k.saes:
                    add(("nodes", node, "kme", "pairs", sae), "not an SAE listed under this node's kme.saes")
                for r in remotes:
                    if r not in secs[peer].saes:
                        add(("nodes", node, "kme", "pairs", sae), f"{r!r} is not an SAE of node {peer}'s KME")
    ends = {n: k.resolved_from_end(cfg.nodes[n].role) for n, k in secs.items()}
    if len(set(ends.values())) != len(ends):
        add(("nodes", next(iter(secs)), "kme", "allocate_from_end"),
            "the two KMEs of a link must allocate key from opposite ends (allocate_from_end true on exactly one)")
    ids = [k.resolved_id(n) for n, k in secs.items()]
    if len(set(ids)) != len(ids):
        add(("nodes", next(iter(secs)), "kme", "kme_id"), f"KME IDs must differ; got {ids}")
