"""A KME's configuration: identity, key store, TLS files, the SAEs it serves (each mapped from its client
certificate) and which remote SAEs each may exchange keys with, its peer KME link, and the limits it reports
in Status.

YAML form (``qlab kme serve --config kme.yaml``; relative paths are relative to the file)::

    kme_id: KME_A
    peer_kme_id: KME_B
    key_store: keys/alice.keys          # the node's committed blocks (qlab.qkd.keystore)
    journal: keys/kme_a.journal         # default: <key_store>.kme-journal
    listen: 127.0.0.1:8443              # HTTPS (mutual TLS)
    tls: {cert: pki/kme/KME_A.crt, key: pki/kme/KME_A.key, ca: pki/ca.crt}
    saes: {SAE_A: pki/sae/SAE_A.crt}    # local SAE ID -> its client certificate
    pairs: {SAE_A: [SAE_B]}             # local SAE -> SAEs at the peer KME it may share keys with
    peer: {listen: 127.0.0.1:9101, connect: 127.0.0.1:9102, psk_file: keys/kme_link.psk}
    allocate_from_end: false            # true on exactly one of the two KMEs
    key_size_bits: 256
"""

from __future__ import annotations

import hashlib
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from qlab.config.yaml_lines import format_path, line_of, load_yaml_with_lines, read_text
from qlab.errors import ConfigError


def cert_fingerprint(cert: str | Path | bytes) -> str:
    """SHA-256 (hex) of a certificate's DER encoding; ``cert`` is a PEM/DER file path or DER bytes.
    Raises ValueError for a file that holds no certificate."""
    if isinstance(cert, bytes):
        der = cert
    else:
        raw = Path(cert).read_bytes()
        if b"-----BEGIN CERTIFICATE-----" in raw:
            try:
                der = ssl.PEM_cert_to_DER_cert(raw.decode("ascii", "replace"))
            except ValueError as exc:
                raise ValueError(f"{cert}: not a PEM certificate ({exc})") from None
        else:
            der = raw
    return hashlib.sha256(der).hexdigest()


def parse_endpoint(text: str) -> tuple[str, int]:
    """``HOST:PORT`` -> (host, port). Raises ValueError."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


@dataclass(frozen=True)
class TlsFiles:
    cert: Path  # this KME's server certificate (PEM)
    key: Path  # its private key (PEM)
    ca: Path  # the CA that signs SAE client certificates (PEM)


@dataclass
class PeerSettings:
    listen: tuple[str, int]  # where this KME accepts its peer's link
    connect: tuple[str, int]  # where the peer KME accepts ours
    psk_file: Path  # pre-shared HMAC key of the KME link (≥ 16 bytes, owner-only)
    timeout_s: float = 10.0


@dataclass
class KmeConfig:
    kme_id: str
    peer_kme_id: str
    key_store: Path
    journal: Path
    tls: TlsFiles
    saes: dict[str, str]  # local SAE ID -> SHA-256 fingerprint of its client certificate
    pairs: dict[str, list[str]]  # local SAE ID -> remote SAE IDs it may share keys with
    listen: tuple[str, int] = ("127.0.0.1", 8443)
    peer: PeerSettings | None = None
    allocate_from_end: bool = False
    key_size_bits: int = 256  # default key size (Status key_size)
    min_key_size_bits: int = 64
    max_key_size_bits: int = 4096
    max_key_per_request: int = 128
    max_key_count: int = 1_000_000  # Status max_key_count: keys of the default size the store may hold
    #: local SAE ID -> the subject common name of its client certificate (an alternative to ``saes``: the CA
    #: vouches for the name, so a renewed certificate keeps working; used by network nodes' KMEs)
    sae_subjects: dict[str, str] = field(default_factory=dict)
    sae_by_fingerprint: dict[str, str] = field(init=False, repr=False)
    sae_by_subject: dict[str, str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.sae_by_fingerprint = {fp: sae for sae, fp in self.saes.items()}
        self.sae_by_subject = {cn: sae for sae, cn in self.sae_subjects.items()}

    @property
    def sae_ids(self) -> set[str]:
        """Every local SAE ID (by fingerprint or by subject)."""
        return set(self.saes) | set(self.sae_subjects)

    def paired(self, local_sae: str, remote_sae: str) -> bool:
        return remote_sae in self.pairs.get(local_sae, [])


class _Tls(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cert: str
    key: str
    ca: str


class _Peer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    listen: str
    connect: str
    psk_file: str
    timeout_s: float = 10.0

    @field_validator("listen", "connect")
    @classmethod
    def _endpoint(cls, v: str) -> str:
        parse_endpoint(v)
        return v


class _Kme(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kme_id: str
    peer_kme_id: str
    key_store: str
    journal: str | None = None
    listen: str = "127.0.0.1:8443"
    tls: _Tls
    saes: dict[str, str]
    pairs: dict[str, list[str]]
    peer: _Peer | None = None
    allocate_from_end: bool = False
    key_size_bits: int = 256
    min_key_size_bits: int = 64
    max_key_size_bits: int = 4096
    max_key_per_request: int = 128
    max_key_count: int = 1_000_000

    @field_validator("listen")
    @classmethod
    def _endpoint(cls, v: str) -> str:
        parse_endpoint(v)
        return v


def load_kme_config(path: str | Path) -> KmeConfig:
    """Read and check a KME YAML file. Raises ConfigError naming the file, line and key of every problem
    (unknown keys, bad endpoints, unreadable certificates, pairs naming SAEs that are not configured, sizes
    that are not multiples of 8)."""
    path = Path(path)
    data, lines = load_yaml_with_lines(read_text(path), str(path))
    try:
        m = _Kme.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            msg = "required key is missing" if err["type"] == "missing" else (
                "unknown key" if err["type"] == "extra_forbidden" else err["msg"])
            problems.append((line_of(lines, loc), format_path(loc), msg))
        raise ConfigError(str(path), problems) from None
    base = path.parent
    problems: list[tuple[int | None, str, str]] = []

    def rel(p: str) -> Path:
        q = Path(p).expanduser()
        return q if q.is_absolute() else base / q

    saes: dict[str, str] = {}
    for sae, cert in m.saes.items():
        try:
            saes[sae] = cert_fingerprint(rel(cert))
        except (OSError, ValueError) as exc:
            problems.append((line_of(lines, ("saes", sae)), f"saes.{sae}", f"cannot read certificate: {exc}"))
    for sae in m.pairs:
        if sae not in m.saes:
            problems.append((line_of(lines, ("pairs", sae)), f"pairs.{sae}", "not an SAE listed under saes"))
    for key in ("key_size_bits", "min_key_size_bits", "max_key_size_bits"):
        v = getattr(m, key)
        if v <= 0 or v % 8:
            problems.append((line_of(lines, (key,)), key, f"{v} is not a positive multiple of 8"))
    if not m.min_key_size_bits <= m.key_size_bits <= m.max_key_size_bits:
        problems.append((line_of(lines, ("key_size_bits",)), "key_size_bits", "outside [min_key_size_bits, "
                                                                               "max_key_size_bits]"))
    if problems:
        raise ConfigError(str(path), problems)
    key_store = rel(m.key_store)
    peer = None if m.peer is None else PeerSettings(parse_endpoint(m.peer.listen), parse_endpoint(m.peer.connect),
                                                    rel(m.peer.psk_file), m.peer.timeout_s)
    return KmeConfig(
        kme_id=m.kme_id, peer_kme_id=m.peer_kme_id, key_store=key_store,
        journal=rel(m.journal) if m.journal else key_store.with_name(key_store.name + ".kme-journal"),
        tls=TlsFiles(rel(m.tls.cert), rel(m.tls.key), rel(m.tls.ca)), saes=saes, pairs=m.pairs,
        listen=parse_endpoint(m.listen), peer=peer, allocate_from_end=m.allocate_from_end,
        key_size_bits=m.key_size_bits, min_key_size_bits=m.min_key_size_bits, max_key_size_bits=m.max_key_size_bits,
        max_key_per_request=m.max_key_per_request, max_key_count=m.max_key_count)


def config_dict(cfg: KmeConfig) -> dict[str, Any]:
    """The summary a CLI prints at start (no secrets)."""
    return {"kme_id": cfg.kme_id, "peer_kme_id": cfg.peer_kme_id, "listen": f"{cfg.listen[0]}:{cfg.listen[1]}",
            "saes": sorted(cfg.saes), "key_store": str(cfg.key_store)}
