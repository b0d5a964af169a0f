"""One person's data, handed over (``outreach export EMAIL``, a GDPR access request): their
rows in every personal table, where people/ lists them, their face, and the message files
addressed to them."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Table, func, select
from sqlalchemy.engine import Connection

from outreach.audience.suppressions import normalise, suppression_key
from outreach.privacy.message_files import outbox_files, preview_files
from outreach.privacy.people_files import people_entries
from outreach.privacy.personal_data import json_value, matches
from outreach.store import Store
from outreach.store.schema import PERSONAL_TABLES, ledger, suppressions
from outreach.workspace.credentials import token_secret

if TYPE_CHECKING:
    from outreach.workspace.loader import Workspace


def _rows(conn: Connection, table: Table, address: str) -> list[dict[str, Any]]:
    result = conn.execute(select(table).where(matches(table, address)))
    return [{k: json_value(v) for k, v in r._mapping.items()} for r in result]


def export(ws: Workspace, store: Store, address: str) -> dict[str, Any]:
    """Everything held about ``address``, as one JSON-ready dict (GDPR access)."""
    who = normalise(address)
    entries = people_entries(ws, who)
    t = ws.settings.tracking
    secret = token_secret(ws.root, t.secret_env, t.secret_file, create=False)
    held: dict[str, list[dict[str, Any]]] = {}
    with store.engine.connect() as conn:
        for table in PERSONAL_TABLES:
            held[table.name] = _rows(conn, table, who)
        key = suppression_key(secret, who)
        for r in conn.execute(select(suppressions).where(suppressions.c.email == key)):
            row = {k: json_value(v) for k, v in r._mapping.items()}
            row["email"] = "(kept as a keyed hash of the address)"
            held["suppressions"].append(row)
        sent_as: list[dict[str, Any]] = []
        for entry in entries:
            if entry.role == "liaison" and entry.person_id:
                rows = conn.execute(
                    select(ledger.c.campaign_id, ledger.c.status, func.count())
                    .where(ledger.c.liaison_id == entry.person_id)
                    .group_by(ledger.c.campaign_id, ledger.c.status)
                    .order_by(ledger.c.campaign_id, ledger.c.status)
                )
                sent_as += [{"campaign_id": c, "status": s, "messages": n} for c, s, n in rows]
    liaison = None
    researcher = next((r for r in ws.researchers if r.email == who), None)
    if researcher is not None:
        from outreach.workspace.segments import SegmentIndex

        owner = SegmentIndex(ws.directory.liaisons.values()).owner(researcher).liaison_id
        owner = researcher.liaison or owner
        person = ws.directory.liaisons.get(owner) if owner else None
        if person is not None:
            liaison = {"id": person.id, "name": person.name, "email": person.email}
    outbox = outbox_files(ws, who)
    preview = preview_files(ws, who)
    data: dict[str, Any] = {
        "email": who,
        "exported_at": datetime.now(UTC).isoformat(),
        "controller": {
            "organisation": ws.settings.organisation_name(),
            "service": {"name": ws.settings.service.name, "email": ws.settings.service.email},
        },
        "people": [e.as_dict() for e in entries],
        "liaison": liaison,
        "store": held,
        "files": {
            "outbox": {"count": len(outbox), "paths": [ws.rel(p) for p in outbox]},
            "preview": {"count": len(preview), "paths": [ws.rel(p) for p in preview]},
        },
        "notes": [
            "message bodies of replies are "
            + ("kept (tracking.keep_bodies)" if t.keep_bodies else "not kept")
            + "; opens and clicks are never tracked",
            "Message-IDs carry a token (an HMAC of campaign and address) that matches replies",
        ],
    }
    if sent_as:
        data["sent_in_their_name"] = sent_as
    return data


def holds_anything(data: Mapping[str, Any]) -> bool:
    return bool(
        data["people"]
        or any(data["store"].values())
        or data["files"]["outbox"]["count"]
        or data["files"]["preview"]["count"]
    )


__all__ = ["export", "holds_anything"]
