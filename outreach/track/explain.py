"""``outreach track classify``: the decision for each file, without storing anything."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from outreach.errors import OutreachError
from outreach.store import open_store
from outreach.track.classify import Context
from outreach.track.ingest import classify_items, local_items, make_context
from outreach.track.match import Matcher
from outreach.workspace.loader import load_workspace


def explain_files(workspace: str | Path | None, files: list[str]) -> Iterator[dict[str, Any]]:
    """One dict per message, per the `track classify --json` contract (docs/CONTRACTS.md).

    Works inside a workspace (matches against its ledger when it has one) and outside one
    (classification only, matching by our Message-ID format).
    """
    ctx: Context
    matcher: Matcher
    try:
        ws = load_workspace(explicit=workspace, only_campaigns=[])
    except OutreachError:
        ctx = Context(domain="")  # no workspace: classification by our Message-ID format
        matcher = Matcher(None, 30)
    else:
        ctx = make_context(ws)
        window, domain = ws.settings.tracking.reply_window_days, ws.settings.organisation.domain
        store = None
        db = ws.database_url()
        if not db.startswith("sqlite:///") or Path(db[len("sqlite:///") :]).exists():
            try:
                store = open_store(db, create=False)
            except OutreachError:
                store = None  # an unreachable or outdated database: classify without it
        matcher = Matcher(store, window, domain, ctx.senders)
    for spec in files:
        items = local_items(spec)
        for item, _parsed, decision, match in classify_items(items, ctx, matcher):
            shown = (
                item.source
                if item.key in ("stdin",) or item.source.endswith(item.key)
                else (f"{item.source}#{item.key}")
            )
            yield {
                "file": shown,
                "kind": decision.kind,
                "matched": match.message_id or decision.referenced,
                "reason": decision.reason,
                "match": match.method,
                "strength": match.strength,
                "campaign": match.campaign_id,
            }
