"""What a send run says before it sends: the server, how many messages (under
``--limit``), from which senders, in which arms, when, and who gets nothing and why.
The confirmation before an SMTP send prints these lines (and asks only on a terminal);
the dry run prints the same counts, from the same ``SendPlan``."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from datetime import datetime
from zoneinfo import ZoneInfo

from outreach.deliver.pace import duration, least_time
from outreach.deliver.plan import OVER_LIMIT, SendPlan
from outreach.store import utcnow
from outreach.workspace.campaign import Campaign
from outreach.workspace.loader import Workspace
from outreach.workspace.schedule import describe


def counts_text(counts: Mapping[str, int]) -> str:
    """``a 3, b 1`` (largest first, then by name); ``none`` when empty."""
    shown = sorted(((k, n) for k, n in counts.items() if n), key=lambda kn: (-kn[1], kn[0]))
    return ", ".join(f"{k} {n}" for k, n in shown) or "none"


def not_sent_text(plan: SendPlan) -> str:
    return counts_text(plan.excluded)


def sender_text(ws: Workspace, per_sender: Counter[str]) -> str:
    """Each sender with its address and its messages, as a liaison recognises them."""
    parts = []
    for sender, n in sorted(per_sender.items()):
        liaison = ws.directory.liaisons.get(sender)
        address = liaison.email if liaison else ws.directory.service.email
        parts.append(f"{sender} <{address}> {n}")
    return ", ".join(parts) or "none"


def schedule_text(
    campaign: Campaign, now_flag: bool, per_sender: Counter[str], ws: Workspace
) -> str:
    """When the messages go: the campaign's schedule, and how long the senders' limits
    make the run (the slowest sender sets it; see ``outreach.deliver.pace``)."""
    when = _when(campaign.schedule, now_flag, utcnow(), ws.settings.zone())
    slowest, seconds = "", 0.0
    for sender, n in sorted(per_sender.items()):
        took = least_time(n, ws.directory.pace(ws.settings.limits, sender))
        if took > seconds:
            slowest, seconds = sender, took
    if not slowest:
        return f"{when}; no sender's limits hold it up"
    pace = ws.directory.pace(ws.settings.limits, slowest).describe()
    length = f"about {duration(seconds)}" if seconds >= 1 else duration(seconds)
    return f"{when}; at the senders' limits {length} ({slowest}: {pace})"


def _when(schedule: datetime | None, now_flag: bool, now: datetime, zone: ZoneInfo) -> str:
    if schedule is None:
        return "now (the campaign has no schedule)"
    at = describe(schedule, zone)  # in the workspace's zone and UTC
    if schedule <= now:
        return f"now (scheduled for {at}, which has come)"
    if now_flag:
        return f"now, before its schedule ({at}; --now)"
    return f"not before {at}"


def preflight_lines(
    ws: Workspace, campaign: Campaign, plan: SendPlan, *, limit: int | None, now_flag: bool
) -> list[str]:
    """The lines shown before an SMTP send."""
    t = ws.settings.transport
    n = len(plan.mail)
    held = plan.excluded.get(OVER_LIMIT, 0)
    under = f" (--limit {limit}: {held} left for a later run)" if limit is not None else ""
    lines = [
        f"About to send {n} message(s) of {campaign.id}{under} via SMTP to "
        f"{t.host}:{t.port} ({t.security}):",
        f"  senders: {sender_text(ws, plan.per_sender)}",
        f"  arms: {counts_text(plan.per_arm)}",
        f"  schedule: {schedule_text(campaign, now_flag, plan.per_sender, ws)}",
    ]
    others = Counter({k: v for k, v in plan.excluded.items() if k != OVER_LIMIT})
    if others:
        lines.append(f"  not sent: {counts_text(others)}")
    return lines
