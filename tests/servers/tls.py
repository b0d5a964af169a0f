"""Test certificates, made by trustme.

``issue(directory)`` makes a private certificate authority of the server's own and a
certificate it signs for ``localhost`` and ``127.0.0.1``, and writes them as PEM files:
``ca.pem`` (what a client must trust: the workspace's ``ca_file``), ``cert.pem`` and
``key.pem`` (what the server presents).  Each server gets its own authority, so trusting
one server's ``ca.pem`` trusts no other test server.  ``client_context(ca_file)`` is an
``ssl.SSLContext`` that trusts exactly that authority, with hostname checking on, so a test
connects to ``127.0.0.1`` or ``localhost`` the way production code would.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme

__all__ = ["ServerCertificate", "client_context", "issue", "server_context"]

StrPath = str | os.PathLike[str]


@dataclass(frozen=True)
class ServerCertificate:
    ca_file: Path  # the authority a client trusts
    cert_file: Path  # the server's certificate
    key_file: Path  # its private key


def issue(directory: StrPath) -> ServerCertificate:
    """A fresh authority and a certificate for localhost / 127.0.0.1, written to *directory*."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    issued = ServerCertificate(directory / "ca.pem", directory / "cert.pem", directory / "key.pem")
    ca.cert_pem.write_to_path(str(issued.ca_file))
    cert.cert_chain_pems[0].write_to_path(str(issued.cert_file))
    cert.private_key_pem.write_to_path(str(issued.key_file))
    return issued


def server_context(issued: ServerCertificate) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(issued.cert_file), str(issued.key_file))
    return ctx


def client_context(ca_file: StrPath) -> ssl.SSLContext:
    """A client context trusting only *ca_file* (hostname checks stay on)."""
    return ssl.create_default_context(cafile=str(ca_file))
