"""A campaign's schedule, stated so it cannot surprise: in the workspace's time zone and
in UTC ("2027-01-15 09:00 Europe/Helsinki (07:00 UTC)"), and refused when it has passed
before anything was sent (a mistyped year would otherwise send at once).

A schedule is *past* when it is more than ``PAST_GRACE`` ago: within that hour it is due
(``send --due`` from cron, or ``send CAMPAIGN`` typed at the time). A campaign whose
sending began is past its schedule by design, never an error. ``--force`` sends a past
one anyway.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import func, select

from outreach.errors import Location, Problem
from outreach.workspace.campaign import Campaign
from outreach.workspace.yamlio import YamlDoc

PAST_GRACE = timedelta(hours=1)


def describe(when: datetime, zone: ZoneInfo) -> str:
    """``2027-01-15 09:00 Europe/Helsinki (07:00 UTC)``; the UTC date too when it differs."""
    local = when.astimezone(zone)
    utc = when.astimezone(UTC)
    shown_utc = utc.strftime("%H:%M" if utc.date() == local.date() else "%Y-%m-%d %H:%M")
    return f"{local:%Y-%m-%d %H:%M} {zone.key} ({shown_utc} UTC)"


def is_past(when: datetime, now: datetime | None = None) -> bool:
    return when < (now or datetime.now(UTC)) - PAST_GRACE


def sending_began(database_url: str, campaign_id: str) -> bool:
    """True when the store holds a message of the campaign that went anywhere (sent,
    rehearsed, in flight, failed or deferred); False without a store."""
    from outreach.store import open_store
    from outreach.store.schema import CLAIMED, PLANNED, SKIPPED, ledger

    prefix = "sqlite:///"
    if database_url.startswith(prefix):
        path = database_url[len(prefix) :]
        if path and path != ":memory:" and not Path(path).is_file():
            return False  # no store is made just to find it empty
    store = open_store(database_url, create=False)
    try:
        if store.empty:
            return False
        with store.engine.connect() as conn:
            count = conn.execute(
                select(func.count()).where(
                    ledger.c.campaign_id == campaign_id,
                    ledger.c.status.notin_([PLANNED, CLAIMED, SKIPPED]),
                )
            ).scalar_one()
        return bool(count)
    finally:
        store.close()


def past_schedule(
    campaign: Campaign,
    doc: YamlDoc | None,
    zone: ZoneInfo,
    shown: str,
    now: datetime | None = None,
) -> Problem | None:
    """The error for a schedule that has passed (the caller knows sending did not begin)."""
    when = campaign.schedule
    if when is None or not is_past(when, now):
        return None
    return Problem(
        f"campaign `{campaign.id}` is scheduled {describe(when, zone)}, which has passed, and "
        "nothing of it was sent",
        doc.where(("schedule",)) if doc is not None else Location(shown),
        "correct the date (a year off?), remove `schedule:` to send when you say, or "
        f"`outreach send {campaign.id} --force` to send it now anyway",
    )


__all__ = ["PAST_GRACE", "describe", "is_past", "past_schedule", "sending_began"]
