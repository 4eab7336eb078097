"""A node's long-term identity: an Ed25519 key, its node ID, and a self-signed TLS certificate.

The key lives in ``<data dir>/node.key`` (PKCS#8 PEM, mode 0600). The certificate is derived
from it on every start (``node.crt``); peers never trust it by a CA, only by its key, which
must hash to the node ID they expect.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.x509.oid import NameOID

from shoal.errors import ConfigError
from shoal.ids import encode_id
from shoal.protocol import node_id_for, public_key_bytes
from shoal.store.files import write_file_atomic


def certificate_public_key(cert_der: bytes) -> bytes:
    """Raw Ed25519 public key of a DER certificate; ``ValueError`` if it is not Ed25519."""
    cert = x509.load_der_x509_certificate(cert_der)
    key = cert.public_key()
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("peer certificate does not carry an Ed25519 key")
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


@dataclass(frozen=True)
class Identity:
    """The node's key pair and the files that hold it."""

    private_key: Ed25519PrivateKey
    public_key: bytes
    node_id: bytes

    @property
    def node_id_text(self) -> str:
        return encode_id(self.node_id)

    @classmethod
    def from_private_key(cls, key: Ed25519PrivateKey) -> Identity:
        public = public_key_bytes(key)
        return cls(private_key=key, public_key=public, node_id=node_id_for(public))

    @classmethod
    def generate(cls) -> Identity:
        return cls.from_private_key(Ed25519PrivateKey.generate())

    @classmethod
    def load(cls, path: Path) -> Identity:
        """Load the key from ``path``; ``ConfigError`` if missing or not an Ed25519 key."""
        try:
            pem = path.read_bytes()
        except FileNotFoundError as exc:
            raise ConfigError(f"no node key at {path}: run `shoal init` first") from exc
        except OSError as exc:
            raise ConfigError(f"cannot read node key {path}: {exc.strerror}") from exc
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except ValueError as exc:
            raise ConfigError(f"node key {path} is not a valid PEM private key") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError(f"node key {path} is not an Ed25519 key")
        return cls.from_private_key(key)

    def save(self, path: Path) -> None:
        pem = self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        write_file_atomic(path, pem)

    def certificate_der(self) -> bytes:
        """A self-signed X.509 certificate for the node key (DER)."""
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"shoal {self.node_id_text}")])
        # A fixed validity window: peers check the key, not the dates, and a fixed start keeps
        # the certificate (and its hash, bound into the handshake) stable across restarts.
        start = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.private_key.public_key())
            .serial_number(int.from_bytes(self.node_id[:16], "big") >> 1 or 1)
            .not_valid_before(start)
            .not_valid_after(start + datetime.timedelta(days=365 * 100))
            .sign(self.private_key, None)
        )
        return cert.public_bytes(serialization.Encoding.DER)

    def write_tls_files(self, directory: Path) -> tuple[Path, Path, bytes]:
        """Write ``node.crt`` and a PEM key for the TLS stack; return paths and the cert DER."""
        der = self.certificate_der()
        cert_path = directory / "node.crt"
        pem = x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)
        write_file_atomic(cert_path, pem)
        key_path = directory / "node.key"
        if not key_path.exists():
            self.save(key_path)
        return cert_path, key_path, der
