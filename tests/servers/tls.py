"""Throwaway self-signed certificates for the test servers.

``make_self_signed(directory)`` writes ``cert.pem`` and ``key.pem`` for ``localhost`` /
``127.0.0.1`` (subjectAltName DNS + IP), using the ``cryptography`` package when it is
installed and the ``openssl`` command otherwise.  ``client_context(cert)`` returns an
``ssl.SSLContext`` that trusts exactly that certificate, with hostname checking on, so a
test can connect to ``127.0.0.1`` or ``localhost`` the way production code would.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import os
import shutil
import ssl
import subprocess
from pathlib import Path

__all__ = ["client_context", "make_self_signed", "server_context", "tls_available"]

StrPath = str | os.PathLike[str]


def tls_available() -> str | None:
    """None when a certificate can be made, else the reason why not."""
    try:
        import cryptography  # noqa: F401
    except ImportError:
        if shutil.which("openssl") is None:
            return "neither the 'cryptography' package nor the 'openssl' command is installed"
    return None


def make_self_signed(directory: StrPath, name: str = "localhost") -> tuple[Path, Path]:
    """Write ``cert.pem`` and ``key.pem`` into *directory*; return their paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cert_path = directory / "cert.pem"
    key_path = directory / "key.pem"
    try:
        _make_with_cryptography(cert_path, key_path, name)
    except ImportError:
        _make_with_openssl(cert_path, key_path, name)
    return cert_path, key_path


def _make_with_cryptography(cert_path: Path, key_path: Path, name: str) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = _dt.datetime.now(_dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _dt.timedelta(hours=1))
        .not_valid_after(now + _dt.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName(name),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _make_with_openssl(cert_path: Path, key_path: Path, name: str) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError(tls_available() or "openssl not found")
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            str(key_path),
            "-out",
            str(cert_path),
            "-days",
            "2",
            "-subj",
            f"/CN={name}",
            "-addext",
            f"subjectAltName=DNS:{name},IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )


def server_context(cert_path: StrPath, key_path: StrPath) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert_path), str(key_path))
    return ctx


def client_context(cert_path: StrPath) -> ssl.SSLContext:
    """A client context trusting only *cert_path* (hostname checks stay on)."""
    return ssl.create_default_context(cafile=str(cert_path))
