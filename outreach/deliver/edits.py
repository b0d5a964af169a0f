"""A campaign's registration: its definition is recorded when it is first sent, and an
edit made after sending began is refused (or, with ``force``, accepted and listed)."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import func, select, update

from outreach.errors import CampaignChanged
from outreach.store import Store, utcnow
from outreach.store.schema import DEFERRED, FAILED, SENDING, SENT, UNCERTAIN, campaigns, ledger
from outreach.workspace.campaign import Campaign


def register_campaign(
    store: Store, campaign: Campaign, *, force: bool = False, write: bool = True
) -> list[str]:
    """Record the campaign as sent from now on; refuse silent edits after a first send.

    Returns the list of changes accepted with ``force`` (empty if none). ``write=False``
    (the dry run): the same refusal and list, nothing recorded.
    """
    definition = campaign.model_dump(mode="json")
    fingerprint = campaign.fingerprint()
    now = utcnow()
    with store.engine.begin() as conn:
        row = conn.execute(select(campaigns).where(campaigns.c.id == campaign.id)).first()
        if row is None and not write:
            return []
        if row is None:
            # Several workers may register the campaign at once: the first insert wins,
            # the others find the same definition.
            conn.execute(
                store.insert_ignore(campaigns).values(
                    id=campaign.id,
                    title=json.dumps(campaign.title, ensure_ascii=False)
                    if isinstance(campaign.title, dict)
                    else campaign.title,
                    sender_mode=campaign.sender,
                    experiment=campaign.split.experiment if campaign.split else None,
                    randomised=campaign.sender == "split",
                    fingerprint=fingerprint,
                    definition=json.dumps(definition, ensure_ascii=False, sort_keys=True),
                    created_at=now,
                )
            )
            return []
        if row.fingerprint == fingerprint:
            return []
        started = conn.execute(
            select(func.count()).where(
                ledger.c.campaign_id == campaign.id,
                ledger.c.status.in_([SENT, SENDING, UNCERTAIN, FAILED, DEFERRED]),
            )
        ).scalar_one()
        changes = _diff(json.loads(row.definition), definition)
        if started and not force:
            raise CampaignChanged(
                f"campaign `{campaign.id}` was edited after sending began "
                f"({started} message(s) already out): " + "; ".join(changes[:8]),
                hint="revert the edit, or pass --force to send the rest as edited",
            )
        if not write:
            return changes if started else []
        conn.execute(
            update(campaigns)
            .where(campaigns.c.id == campaign.id)
            .values(
                fingerprint=fingerprint,
                definition=json.dumps(definition, ensure_ascii=False, sort_keys=True),
                sender_mode=campaign.sender,
            )
        )
        return changes if started else []


def _diff(old: Any, new: Any, path: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new)):
            sub = f"{path}.{key}" if path else str(key)
            if key not in old:
                out.append(f"{sub} added")
            elif key not in new:
                out.append(f"{sub} removed")
            else:
                out.extend(_diff(old[key], new[key], sub))
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        out = []
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            out.extend(_diff(a, b, f"{path}[{i}]"))
        return out
    return [] if old == new else [f"{path} changed"]
