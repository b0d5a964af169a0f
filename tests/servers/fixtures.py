"""Pytest fixtures for the real test servers.

Register them for the whole suite in the top-level ``tests/conftest.py``::

    pytest_plugins = ["tests.servers.fixtures"]

or re-export them in one test module (an assignment, so ruff does not flag F811)::

    from tests.servers import fixtures as _fx
    dovecot = _fx.dovecot

Scopes (every fixture is function-scoped, so each test sees a clean server):

``dovecot``           a started ``DovecotServer`` (users aino, rds, lars / "secret",
                      imaps listener when a certificate can be made); its own temp dir,
                      deleted afterwards.  Start-up is about 0.1-0.2 s.  Skips the test
                      with ``dovecot_available()``'s reason when Dovecot is missing.
``dovecot_factory``   ``make(users=None, imaps=True) -> DovecotServer``, started; all are
                      stopped at teardown.  Same skipping.
``smtp_server``       a started ``SMTPTestServer`` with no faults configured.
``smtp_server_factory`` ``make(**SMTPTestServer kwargs) -> SMTPTestServer``, started.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from .dovecot import DovecotServer, dovecot_available
from .smtp import SMTPTestServer

__all__ = ["dovecot", "dovecot_factory", "smtp_server", "smtp_server_factory"]


def _skip_without_dovecot() -> None:
    reason = dovecot_available()
    if reason:
        pytest.skip(reason)


@pytest.fixture
def dovecot() -> Iterator[DovecotServer]:
    _skip_without_dovecot()
    with DovecotServer() as server:
        yield server


@pytest.fixture
def dovecot_factory() -> Iterator[Callable[..., DovecotServer]]:
    _skip_without_dovecot()
    servers: list[DovecotServer] = []

    def make(users: dict[str, str] | None = None, **kwargs: Any) -> DovecotServer:
        server = DovecotServer(users, **kwargs)
        servers.append(server)
        server.start()
        return server

    yield make
    for server in servers:
        server.stop(cleanup=True)


@pytest.fixture
def smtp_server() -> Iterator[SMTPTestServer]:
    with SMTPTestServer() as server:
        yield server


@pytest.fixture
def smtp_server_factory() -> Iterator[Callable[..., SMTPTestServer]]:
    servers: list[SMTPTestServer] = []

    def make(**kwargs: Any) -> SMTPTestServer:
        server = SMTPTestServer(**kwargs)
        servers.append(server)
        server.start()
        return server

    yield make
    for server in servers:
        server.stop()
