"""TLS certificates (a CA and the SuperLink's certificate) and SuperNode key pairs.

The CA signs the SuperLink's certificate, whose subject alternative names hold the
given hosts plus loopback (the SuperLink's own SuperExec connects over loopback).
SuperNodes own NIST P-384 key pairs in OpenSSH format, the only kind that
``flwr supernode register`` accepts. Private keys are written owner-only.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedsim.deploy.errors import DeployError

LOOPBACK = ("127.0.0.1", "localhost")
KEY_NAME = re.compile(r"[A-Za-z0-9._-]+")
DNS_NAME = re.compile(r"(?=.{1,253}$)(\*\.)?([A-Za-z0-9_]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?)+")
CURVE = ec.SECP384R1()  # `flwr supernode register` accepts NIST curves only


@dataclass(frozen=True)
class Certificates:
    """Paths of the CA and SuperLink certificate files."""

    ca: Path
    ca_key: Path
    server: Path
    server_key: Path

    @classmethod
    def at(cls, folder: Path) -> Certificates:
        d = Path(folder) / "certs"
        return cls(d / "ca.pem", d / "ca.key", d / "server.pem", d / "server.key")


@dataclass(frozen=True)
class NodeKey:
    """Paths of a SuperNode's OpenSSH key pair."""

    private: Path
    public: Path

    @classmethod
    def at(cls, folder: Path, name: str) -> NodeKey:
        d = Path(folder) / "keys"
        return cls(d / f"{name}.key", d / f"{name}.pub")


def make_certificates(folder: Path, hosts: Iterable[str] = (), days: int = 365) -> Certificates:
    """Create a CA and a SuperLink certificate it signs, for ``hosts`` and loopback.

    Parameters
    ----------
    folder
        The deployment folder; files go to ``folder/certs``.
    hosts
        Host names and IP addresses by which SuperNodes and ``flwr`` reach the
        SuperLink; ``127.0.0.1`` and ``localhost`` are always added.
    days
        Validity of both certificates.

    Returns
    -------
    Certificates
        The written paths. Existing files are replaced.

    Raises
    ------
    DeployError
        For ``days`` < 1 or a host that is neither an IP address nor a valid
        (internationalised) DNS name; nothing is written then.
    """
    if int(days) < 1:
        raise DeployError(f"--days: expected a validity of at least 1 day, got {days}")
    names = _subject_alt_names([*hosts, *LOOPBACK])
    certs = Certificates.at(folder)
    certs.ca.parent.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)  # clock skew
    until = now + datetime.timedelta(days=days)
    ca_key = ec.generate_private_key(CURVE)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fedsim deployment CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(CURVE)
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fedsim superlink")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write_private(certs.ca_key, _pem_key(ca_key))
    certs.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    _write_private(certs.server_key, _pem_key(key))
    certs.server.write_bytes(server.public_bytes(serialization.Encoding.PEM))
    return certs


def make_node_key(folder: Path, name: str) -> NodeKey:
    """Create a SuperNode key pair (P-384, OpenSSH format) in ``folder/keys``.

    Raises
    ------
    DeployError
        When ``name`` is not a plain file name (``[A-Za-z0-9._-]+``, not ``.``/``..``):
        the key files must stay inside ``folder/keys``.
    """
    if not KEY_NAME.fullmatch(name) or name in (".", ".."):
        raise DeployError(
            f"key name: expected letters, digits, '.', '_' or '-' (e.g. node-0), got {name!r}"
        )
    paths = NodeKey.at(folder, name)
    paths.private.parent.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(CURVE)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    _write_private(paths.private, private)
    paths.public.write_bytes(public + f" fedsim-{name}\n".encode())
    return paths


def _subject_alt_names(hosts: Iterable[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(h.strip().strip("[]") for h in hosts if h.strip()):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(_dns_name(host)))
    return names


def _dns_name(host: str) -> str:
    """``host`` as an ASCII DNS name; an internationalised name is IDNA-encoded."""
    try:
        ascii_name = host.encode("idna").decode("ascii")
    except UnicodeError:
        ascii_name = ""
    if not DNS_NAME.fullmatch(ascii_name):
        raise DeployError(
            f"--hosts: {host!r} is neither an IP address nor a DNS name "
            f"(letters, digits, '-' and '.' only, or an internationalised name)"
        )
    return ascii_name


def _key_usage(cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write_private(path: Path, data: bytes) -> None:
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
