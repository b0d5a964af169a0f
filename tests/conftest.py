"""What every test gets: an environment without the shell's OUTREACH_* settings, the
hypothesis profiles, and the shared fixtures (a fresh example workspace, the real test
servers, SQLite and PostgreSQL stores).

Plain helpers that tests call are in the ``*_helpers.py`` modules beside this file;
``foundation_helpers.cli`` runs the CLI. pytest puts tests/ on ``sys.path`` (this directory
is not a package), so they are imported by module name: ``from foundation_helpers import cli``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from foundation_helpers import ENV_VARS, copy_example
from hypothesis import HealthCheck, settings
from servers.dovecot import DovecotServer, dovecot_available
from servers.smtp import SMTPTestServer
from store_helpers import pg_database, pg_unreachable

# ---------------------------------------------------------------------------- environment


@pytest.fixture(scope="session", autouse=True)
def clean_env() -> Iterator[None]:
    """No variable the application reads comes from the shell that runs the tests: a
    developer's own OUTREACH_WORKSPACE or OUTREACH_SECRET must not leak into a test. A test
    that needs one sets it with ``monkeypatch`` (or passes ``env=`` to ``cli``)."""
    with pytest.MonkeyPatch.context() as mp:
        for name in ENV_VARS:
            mp.delenv(name, raising=False)
        yield


# ---------------------------------------------------------------------------- hypothesis

# No per-example deadline in either profile: the machines that run the tests are shared,
# and a deadline then fails a test for the machine's load, not the code's speed (bench/
# measures speed). `too_slow` is off for the same reason.
settings.register_profile(
    "dev", max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "ci",
    parent=settings.get_profile("ci"),  # hypothesis's own: derandomized, no database
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") == "true" else "dev")
)


# ---------------------------------------------------------------------------- workspaces


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    """A fresh copy of the example workspace, to change one thing in."""
    return copy_example(tmp_path / "ws")


# ---------------------------------------------------------------------------- stores


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """Each test twice: ``None`` for SQLite (the workspace keeps its own
    ``sqlite:///outreach.db``), then a URL of a fresh PostgreSQL schema of its own; the
    PostgreSQL run skips and says why when no server answers on 127.0.0.1:5432."""
    if request.param == "sqlite":
        yield None
        return
    reason = pg_unreachable()
    if reason:
        pytest.skip(reason)
    with pg_database() as url:
        yield url


@pytest.fixture
def pg_url() -> Iterator[str]:
    """PostgreSQL only: a fresh schema of the test's own (skips when there is no server)."""
    reason = pg_unreachable()
    if reason:
        pytest.skip(reason)
    with pg_database() as url:
        yield url


# ---------------------------------------------------------------------------- servers
# Every server fixture is function-scoped, so each test sees a clean server.


@pytest.fixture
def smtp_server() -> Iterator[SMTPTestServer]:
    """A started SMTP server (tests/servers/smtp.py) with no faults configured."""
    with SMTPTestServer() as server:
        yield server


@pytest.fixture
def smtp_server_factory() -> Iterator[Callable[..., SMTPTestServer]]:
    """``make(**SMTPTestServer kwargs)``: a started server; all stop at teardown."""
    servers: list[SMTPTestServer] = []

    def make(**kwargs: Any) -> SMTPTestServer:
        server = SMTPTestServer(**kwargs)
        servers.append(server)
        server.start()
        return server

    yield make
    for server in servers:
        server.stop()


def _skip_without_dovecot() -> None:
    reason = dovecot_available()
    if reason:
        pytest.skip(reason)


@pytest.fixture
def dovecot() -> Iterator[DovecotServer]:
    """A started Dovecot (tests/servers/dovecot.py): users aino, rds, lars with password
    "secret", an imaps listener; its own temp dir, deleted afterwards. Start-up takes
    about 0.1-0.2 s. Skips the test, saying why, when Dovecot is not installed."""
    _skip_without_dovecot()
    with DovecotServer() as server:
        yield server


@pytest.fixture
def dovecot_factory() -> Iterator[Callable[..., DovecotServer]]:
    """``make(users=None, imaps=True)``: a started Dovecot; all stop at teardown."""
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
