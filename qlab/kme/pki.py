"""A small PKI for KMEs and SAEs: one CA, a server certificate per KME (SAN localhost, 127.0.0.1 and its name)
and a client certificate per SAE, all ECDSA P-256, made with the ``cryptography`` package.

Layout of ``DIR`` (0700; every private key 0600)::

    ca.crt  ca.key
    kme/NAME.crt  kme/NAME.key
    sae/NAME.crt  sae/NAME.key

Running ``init_pki`` again reuses the CA and the certificates that exist and issues only missing ones, so
adding an SAE keeps the others valid. Real deployments point the KME configuration at their own files.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from qlab.errors import QlabError
from qlab.storage.secret import create_secret_file, secret_dir

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
VALID_DAYS = 825


class PkiError(QlabError):
    """Bad names or unusable existing PKI files."""


@dataclass
class PkiResult:
    root: Path
    created: list[Path] = field(default_factory=list)  # certificates issued by this call
    kept: list[Path] = field(default_factory=list)  # certificates that already existed


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    create_secret_file(path)
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "qlab"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _load_or_make_ca(root: Path, result: PkiResult) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    crt, key = root / "ca.crt", root / "ca.key"
    if crt.exists() and key.exists():
        try:
            ca_key = serialization.load_pem_private_key(key.read_bytes(), None)
            ca_cert = x509.load_pem_x509_certificate(crt.read_bytes())
        except ValueError as exc:
            raise PkiError(f"{root}: cannot load the existing CA ({exc})") from None
        if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
            raise PkiError(f"{key}: expected an EC private key")
        result.kept.append(crt)
        return ca_cert, ca_key
    if crt.exists() or key.exists():
        raise PkiError(f"{root}: only one of ca.crt and ca.key exists; remove it or restore the other")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    ca_cert = (x509.CertificateBuilder().subject_name(_name("qlab KME CA")).issuer_name(_name("qlab KME CA"))
               .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=VALID_DAYS))
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                            data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                            crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
               .sign(ca_key, hashes.SHA256()))
    _write_key(key, ca_key)
    crt.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    result.created.append(crt)
    return ca_cert, ca_key


def _issue(ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, name: str, server: bool,
           crt: Path, key: Path) -> None:
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    builder = (x509.CertificateBuilder().subject_name(_name(name)).issuer_name(ca_cert.subject)
               .public_key(leaf_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=VALID_DAYS))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server
                                                     else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                              critical=False))
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.DNSName(name.lower()),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    _write_key(key, leaf_key)
    crt.write_bytes(builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))


def init_pki(root: str | Path, kmes: list[str], saes: list[str]) -> PkiResult:
    """Create (or complete) the PKI under ``root`` for the named KMEs and SAEs. Raises PkiError for a name
    that is not a plain identifier (letters, digits, ``_.-``), a name used twice, or a broken existing CA."""
    names = [*kmes, *saes]
    bad = [n for n in names if not NAME_RE.match(n)]
    if bad:
        raise PkiError(f"not a valid KME/SAE name: {', '.join(map(repr, bad))} (letters, digits, '_', '.', '-')")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise PkiError(f"name given more than once: {', '.join(dup)}")
    root_p = secret_dir(root)
    result = PkiResult(root_p)
    ca_cert, ca_key = _load_or_make_ca(root_p, result)
    for group, members, server in (("kme", kmes, True), ("sae", saes, False)):
        d = secret_dir(root_p / group)
        for name in members:
            crt, key = d / f"{name}.crt", d / f"{name}.key"
            if crt.exists() and key.exists():
                result.kept.append(crt)
                continue
            _issue(ca_cert, ca_key, name, server, crt, key)
            result.created.append(crt)
    return result


def names_from_network(path: str | Path) -> tuple[list[str], list[str]]:
    """(KME IDs, SAE certificate names) from a network description's ``nodes.NAME.kme`` sections (see
    qlab.kme.netconfig). Raises ConfigError naming file, line and key."""
    from qlab.kme.netconfig import pki_names_from_network

    return pki_names_from_network(path)
