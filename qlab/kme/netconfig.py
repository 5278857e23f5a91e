"""The ``kme:`` section of a node in network.yaml (the KME a network node serves), and the names a PKI for a
network needs. This module is the one place that knows the section's shape and defaults: qlab.network.config
validates each node's section with ``KmeNodeSection`` and ``qlab pki init DIR --network network.yaml`` reads
the names with ``pki_names_from_network``.

Example (under ``nodes.alice``)::

    kme:
      kme_id: KME_alice                 # default: KME_<node>
      listen: 127.0.0.1:47111           # HTTPS for the node's SAEs (mutual TLS)
      peer_listen: 127.0.0.1:47121      # the KME-to-KME link (authenticated TCP), the peer KME connects here
      saes: {SAE_A: SAE_A}              # local SAE ID -> subject common name of its client certificate
      pairs: {SAE_A: [SAE_B]}           # local SAE -> SAEs at the peer node's KME (default: all of them)
      allocate_from_end: false          # default: false on the alice node, true on the bob node
      pki_dir: pki                      # ca.crt, kme/<kme_id>.crt|key; relative to network.data_dir

Key sizes and limits: ``key_size_bits`` (Status key_size, default 256), ``min_key_size_bits``,
``max_key_size_bits``, ``max_key_per_request``, ``max_key_count``.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from qlab.kme.config import parse_endpoint

ENDPOINT_DOC = "HOST:PORT"


def default_kme_id(node: str) -> str:
    return f"KME_{node}"


class KmeNodeSection(BaseModel):
    """One node's KME (validated with file/line/key by the network loader)."""

    model_config = ConfigDict(extra="forbid")
    kme_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    listen: str = "127.0.0.1:8443"
    peer_listen: str
    saes: dict[str, str] = Field(min_length=1)
    pairs: dict[str, list[str]] | None = None
    allocate_from_end: bool | None = None
    pki_dir: str = "pki"
    key_size_bits: int = Field(default=256, gt=0, multiple_of=8)
    min_key_size_bits: int = Field(default=64, gt=0, multiple_of=8)
    max_key_size_bits: int = Field(default=4096, gt=0, multiple_of=8)
    max_key_per_request: int = Field(default=128, gt=0)
    max_key_count: int = Field(default=1_000_000, gt=0)

    @field_validator("listen", "peer_listen")
    @classmethod
    def _endpoint(cls, v: str) -> str:
        parse_endpoint(v)
        return v

    @field_validator("saes")
    @classmethod
    def _sae_names(cls, v: dict[str, str]) -> dict[str, str]:
        import re

        bad = [s for s in [*v, *v.values()] if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", s)]
        if bad:
            raise ValueError(f"not a valid SAE ID or subject name: {bad} (letters, digits, '_', '.', '-')")
        return v

    def resolved_id(self, node: str) -> str:
        return self.kme_id or default_kme_id(node)

    def resolved_from_end(self, role: str) -> bool:
        """The allocation end: the two KMEs of a link take key from opposite ends of the store."""
        return self.allocate_from_end if self.allocate_from_end is not None else role == "bob"

    def resolved_pairs(self, peer: KmeNodeSection) -> dict[str, list[str]]:
        """Explicit ``pairs`` or every local SAE with every SAE of the peer node's KME."""
        if self.pairs is not None:
            return {k: list(v) for k, v in self.pairs.items()}
        return {s: sorted(peer.saes) for s in self.saes}


def pki_names_from_network(path: str | Path) -> tuple[list[str], list[str]]:
    """(KME IDs, SAE certificate subject names) of every node with a ``kme:`` section in a network description (the real
    network.yaml layout: ``nodes: {NAME: {..., kme: {...}}}``). Raises ConfigError naming file, line and key
    for an unreadable file, a file without nodes, or a malformed kme section."""
    from qlab.config.yaml_lines import format_path, line_of, load_yaml_with_lines, read_text
    from qlab.errors import ConfigError

    p = Path(path)
    data, lines = load_yaml_with_lines(read_text(p), str(p))
    nodes = data.get("nodes") if isinstance(data, dict) else None
    if not isinstance(nodes, dict) or not nodes:
        raise ConfigError(str(p), [(line_of(lines, ("nodes",)), "nodes", "expected a mapping of nodes")])
    kmes: list[str] = []
    saes: list[str] = []
    problems = []
    for name, node in nodes.items():
        raw = node.get("kme") if isinstance(node, dict) else None
        if raw is None:
            continue
        try:
            sec = KmeNodeSection.model_validate(raw)
        except ValidationError as exc:
            for err in exc.errors():
                loc = ("nodes", name, "kme", *err["loc"])
                problems.append((line_of(lines, loc), format_path(loc), err["msg"]))
            continue
        kmes.append(sec.resolved_id(str(name)))
        saes += [cn for cn in sec.saes.values() if cn not in saes]  # certificates are issued to the subject names
    if problems:
        raise ConfigError(str(p), problems)
    if not kmes:
        raise ConfigError(str(p), [(line_of(lines, ("nodes",)), "nodes",
                                    "no node has a 'kme:' section (see qlab/kme/netconfig.py)")])
    return kmes, saes
