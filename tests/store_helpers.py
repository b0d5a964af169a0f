"""Stores and workspaces for the deliver and team tests.

``pg_database()`` makes a fresh schema on the PostgreSQL server on 127.0.0.1:5432 (database
``test``, user postgres, trust auth) and drops it afterwards; ``pg_unreachable()`` says why
there is none. The fixtures built on them, ``store_url`` (SQLite and PostgreSQL) and
``pg_url``, are in conftest.py. ``make_ws`` copies the example workspace with a database
and settings of the test's own; ``add_campaign`` writes a short campaign.
"""

from __future__ import annotations

import secrets
import socket
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from foundation_helpers import copy_example
from servers.smtp import SMTPTestServer

from outreach.workspace.loader import load_workspace

PG_SERVER = "postgresql://postgres@127.0.0.1:5432/test"
_REACHABLE: list[str | None] = []


def pg_unreachable() -> str | None:
    """None when PostgreSQL on 127.0.0.1:5432 answers, else the reason to skip."""
    if not _REACHABLE:
        try:
            import psycopg

            psycopg.connect(PG_SERVER, connect_timeout=3).close()
            _REACHABLE.append(None)
        except Exception as exc:  # no driver, no server, refused: all mean skip
            _REACHABLE.append(
                f"PostgreSQL on 127.0.0.1:5432 (database test) is not reachable: "
                f"{type(exc).__name__}: {exc}".strip()
            )
    return _REACHABLE[0]


def _admin() -> Any:
    import psycopg

    return psycopg.connect(PG_SERVER, autocommit=True)


@contextmanager
def pg_database(prefix: str = "outreach_t") -> Iterator[str]:
    """A fresh schema on the local server; yields a URL whose search_path is it."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    with _admin() as conn:
        conn.execute(f'CREATE SCHEMA "{name}"')
    try:
        yield f"{PG_SERVER}?options=-csearch_path%3D{name}"
    finally:
        with _admin() as conn:
            # Sessions a killed test process left behind must not hold a lock on the schema.
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_locks l "
                "JOIN pg_class c ON c.oid = l.relation "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %s AND l.pid <> pg_backend_pid()",
                (name,),
            )
            conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


# Workspaces, campaigns and SMTP settings shared by the deliver and team tests.

# How late a message may reach the server after the moment it was due, on a loaded
# machine (connecting, rendering, MAIL and RCPT). The ledger's slot time is when it was
# due (it went on the wire within SLOT_GRACE after it); checks on recorded times allow
# for it.
LATE = 0.5


def make_ws(
    root: Path,
    database: str | None = None,
    *,
    transport: dict[str, Any] | None = None,
    limits: dict[str, Any] | None = None,
) -> Path:
    """A copy of the example workspace with its own database (SQLite in the workspace, or
    ``database``: a PostgreSQL schema of the test's own) and settings. Without
    ``transport``, the example's outbox marked as delivering (``delivers: true``), so what
    these tests send through it counts as sent (tests/test_rehearsal.py: the rehearsal)."""
    copy_example(root)
    cfg = yaml.safe_load((root / "outreach.yaml").read_text(encoding="utf-8"))
    cfg["transport"] = (
        transport if transport is not None else {**cfg["transport"], "delivers": True}
    )
    cfg["limits"] = limits or {"per_sender_per_minute": 100_000, "per_sender_per_day": 1_000_000}
    if database is not None:
        cfg["database"] = database
    (root / "outreach.yaml").write_text(yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")
    return root


def smtp_settings(server: SMTPTestServer | None = None, **extra: Any) -> dict[str, Any]:
    settings = {
        "kind": "smtp",
        "host": "127.0.0.1",
        "port": server.port if server is not None else free_port(),
        "security": "none",
        "connections": 2,
        "timeout": 10,
    }
    settings.update(extra)
    return settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def add_campaign(
    root: Path,
    cid: str,
    *,
    include: dict[str, list[str]],
    sender: str = "liaison",
    split: dict[str, Any] | None = None,
) -> str:
    """A short campaign of our own, so SMTP tests send tens of messages, not hundreds."""
    doc: dict[str, Any] = {
        "id": cid,
        "title": f"Test campaign {cid}",
        "template": "newsletter",
        "sender": sender,
        "subject": {
            "fi": "{{ researcher.first_name }}, uutisia",
            "sv": "{{ researcher.first_name }}, nyheter",
            "en": "{{ researcher.first_name }}, news",
        },
        "audience": {"include": include, "exclude": {"tags": ["do-not-contact"]}},
        "body": {
            "fi": "Hei {{ researcher.first_name }},\n\nuutisia.\n\n{{ sender.name }}\n",
            "sv": "Hej {{ researcher.first_name }},\n\nnyheter.\n\n{{ sender.name }}\n",
            "en": "Dear {{ researcher.first_name }},\n\nnews.\n\n{{ sender.name }}\n",
        },
    }
    if split is not None:
        doc["split"] = split
    (root / "campaigns" / f"{cid}.yaml").write_text(
        yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), encoding="utf-8"
    )
    return cid


def audience(root: Path, campaign: str) -> list[str]:
    """The campaign's audience (emails), as the workspace selects it."""
    ws = load_workspace(explicit=root)
    return [r.email for r in ws.audience(ws.campaign(campaign).campaign)]


def received(server: SMTPTestServer) -> Counter[str]:
    """How many times each recipient was accepted by the server."""
    return Counter(m.rcpt_tos[0] for m in server.messages)
