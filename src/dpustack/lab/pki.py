"""The lab's small certificate authority (cryptography): one CA, a certificate for the controller and one per
node naming its hostname, so every call between them is TLS with verification, as in production."""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALID_DAYS = 30
LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key, as PEM files."""

    cert_file: Path
    key_file: Path


class LabCa:
    """A CA kept in `directory` (ca.pem, ca.key); made on first use."""

    def __init__(self, directory: Path, name: str = "dpustack lab CA"):
        self.dir = directory
        self.ca_file = directory / "ca.pem"
        self._key_file = directory / "ca.key"
        if not self.ca_file.exists():
            self._make(name)
        self._key = serialization.load_pem_private_key(self._key_file.read_bytes(), password=None)
        self._cert = x509.load_pem_x509_certificate(self.ca_file.read_bytes())

    def _make(self, name: str) -> None:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                             key_encipherment=False, data_encipherment=False, key_agreement=False,
                                             key_cert_sign=True, crl_sign=True, encipher_only=False,
                                             decipher_only=False), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                .sign(key, hashes.SHA256()))
        _write_key(self._key_file, key)
        self.ca_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, name: str, *, dns: tuple[str, ...] = (), ips: tuple[str, ...] = (LOOPBACK,)) -> Issued:
        """A server certificate for `name` (its common name and first DNS name) and the given addresses."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        names: list[x509.GeneralName] = [x509.DNSName(n) for n in (name, *dns)]
        names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
                .issuer_name(self._cert.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.SubjectAlternativeName(names), critical=False)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                      ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),  # type: ignore[arg-type]
                               critical=False)
                .sign(self._key, hashes.SHA256()))  # type: ignore[arg-type]
        issued = Issued(self.dir / f"{name}.pem", self.dir / f"{name}.key")
        _write_key(issued.key_file, key)
        issued.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return issued


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    """A private key, readable by its owner only."""
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
