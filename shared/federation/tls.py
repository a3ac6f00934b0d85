"""TLS for oppu's gRPC services: a self-signed CA and a server certificate for local use.

``ensure_tls_material(state_dir)`` creates, once, a private CA and a server certificate it
signs (SAN: localhost, 127.0.0.1 and any extra hosts), and reuses them afterwards; the server
certificate is reissued when it nears expiry or lacks a requested host. Clients are given
``ca.pem`` (never the keys) and verify the server against it. Keys are owner-only files.

For a coordinator with a certificate from a public CA, pass its PEM files to
:class:`TLSMaterial` directly and give clients no root certificate (system roots apply).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from oppu.shared.atomic import write_bytes_atomic
from oppu.shared.federation.signing import check_owner_only, write_private_bytes
from oppu.shared.paths import oppu_home

CA_CERT = "ca.pem"
CA_KEY = "ca.key"
SERVER_CERT = "server.pem"
SERVER_KEY = "server.key"
DEFAULT_HOSTS = ("localhost", "127.0.0.1")
CA_DAYS = 3650
SERVER_DAYS = 825  # the longest leaf lifetime clients commonly accept
RENEW_BEFORE = dt.timedelta(days=30)


@dataclass(frozen=True)
class TLSMaterial:
    """PEM bytes a server needs (its key and chain) and clients need (the CA certificate)."""

    ca_cert: bytes
    server_cert: bytes
    server_key: bytes


def default_tls_dir() -> Path:
    return oppu_home() / "tls"


def ensure_tls_material(state_dir: str | Path | None = None, *,
                        hosts: Iterable[str] = DEFAULT_HOSTS) -> TLSMaterial:
    """Load the CA and server certificate from ``state_dir``, creating what is missing."""
    state = Path(state_dir) if state_dir is not None else default_tls_dir()
    hosts = tuple(dict.fromkeys([*DEFAULT_HOSTS, *hosts]))
    if (state / CA_CERT).is_file() and (state / CA_KEY).is_file():
        check_owner_only(state / CA_KEY)
        ca_cert = x509.load_pem_x509_certificate((state / CA_CERT).read_bytes())
        ca_key = serialization.load_pem_private_key((state / CA_KEY).read_bytes(), None)
    else:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_cert = _issue_ca(ca_key)
        write_private_bytes(state / CA_KEY, _key_pem(ca_key))
        write_bytes_atomic(state / CA_CERT, ca_cert.public_bytes(serialization.Encoding.PEM))
    if not _server_cert_usable(state, ca_cert, hosts):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _issue_server(key, ca_key, ca_cert, hosts)
        write_private_bytes(state / SERVER_KEY, _key_pem(key))
        write_bytes_atomic(state / SERVER_CERT, cert.public_bytes(serialization.Encoding.PEM))
    check_owner_only(state / SERVER_KEY)
    return TLSMaterial(ca_cert=(state / CA_CERT).read_bytes(),
                       server_cert=(state / SERVER_CERT).read_bytes(),
                       server_key=(state / SERVER_KEY).read_bytes())


def server_credentials(material: TLSMaterial) -> grpc.ServerCredentials:
    """Server side: present the certificate chain (server certificate, then the CA)."""
    chain = material.server_cert + material.ca_cert
    return grpc.ssl_server_credentials([(material.server_key, chain)])


def channel_credentials(root_cert: bytes | None) -> grpc.ChannelCredentials:
    """Client side: trust ``root_cert`` (oppu's CA), or the system roots when None."""
    return grpc.ssl_channel_credentials(root_certificates=root_cert)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "oppu (local)"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _issue_ca(key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    now = _now()
    name = _name("oppu local CA")
    return (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=True, crl_sign=True,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256())
    )


def _san(hosts: Iterable[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def _issue_server(key: ec.EllipticCurvePrivateKey, ca_key, ca_cert: x509.Certificate,
                  hosts: tuple[str, ...]) -> x509.Certificate:
    now = _now()
    return (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0])).issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(min(now + dt.timedelta(days=SERVER_DAYS), ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_san(hosts), critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                       critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )


def _server_cert_usable(state: Path, ca_cert: x509.Certificate, hosts: tuple[str, ...]) -> bool:
    """True if the stored server certificate is the CA's, current, and covers ``hosts``."""
    if not ((state / SERVER_CERT).is_file() and (state / SERVER_KEY).is_file()):
        return False
    cert = x509.load_pem_x509_certificate((state / SERVER_CERT).read_bytes())
    if cert.issuer != ca_cert.subject or cert.not_valid_after_utc - RENEW_BEFORE < _now():
        return False
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (InvalidSignature, ValueError, TypeError):
        return False
    covered = set(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    return set(_san(hosts)) <= covered
