"""Which campaigns a send run covers: the ones named, or (``send --due``, for cron) every
campaign whose schedule has come."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

from outreach.workspace.loader import CampaignFile, Workspace


def due_campaigns(campaigns: Mapping[str, CampaignFile], now: datetime | None = None) -> list[str]:
    """Ids of the campaigns scheduled at or before ``now``; an unscheduled campaign is
    never due (it waits for ``send CAMPAIGN``)."""
    now = now or datetime.now(UTC)
    return [
        cid
        for cid, cf in campaigns.items()
        if cf.campaign.schedule is not None and cf.campaign.schedule <= now
    ]


def campaigns_to_send(ws: Workspace, names: Iterable[str], *, due: bool) -> list[str]:
    """The campaign ids to send, in order: the due ones with ``due``, else those ``names``
    name (by id or file name; an unknown name raises ConfigError)."""
    if due:
        return due_campaigns(ws.campaigns)
    return [ws.campaign(name).campaign.id for name in names]
