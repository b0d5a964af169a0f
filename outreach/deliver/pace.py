"""How long a campaign takes at its senders' limits, for ``outreach check``: the limits
each sender gets (``Directory.pace``: outreach.yaml's defaults and overrides, a liaison's
own) and the least time its messages need at them under the booking rule of
``outreach.deliver.quota``."""

from __future__ import annotations

from dataclasses import dataclass

from outreach.audience.recipients import plan_recipients
from outreach.deliver.quota import DAY, MINUTE, SLOT_GRACE
from outreach.workspace.loader import Workspace
from outreach.workspace.settings import Pace


@dataclass(frozen=True)
class SenderTime:
    sender_id: str
    address: str
    pace: Pace
    messages: int
    seconds: float  # from the first message to the last, at the sender's limits


@dataclass(frozen=True)
class CampaignTime:
    campaign_id: str
    senders: list[SenderTime]

    @property
    def seconds(self) -> float:
        """Senders send side by side: the campaign takes as long as its slowest."""
        return max((s.seconds for s in self.senders), default=0.0)

    @property
    def messages(self) -> int:
        return sum(s.messages for s in self.senders)


def least_time(n: int, pace: Pace, grace: float = SLOT_GRACE) -> float:
    """Seconds from a sender's first slot to its n-th under ``pace``: one every 60/N s,
    and a window plus ``grace`` after the slot a quota's worth below (``QuotaSlots.book``;
    ``grace=0``: the theoretical minimum)."""
    spacing = MINUTE / pace.per_minute if pace.per_minute else 0.0
    rules = [(k, w + grace) for k, w in ((pace.per_minute, MINUTE), (pace.per_day, DAY)) if k]
    if n <= 1 or not (spacing or rules):
        return 0.0
    times = [0.0]
    for m in range(1, n):
        at = times[-1] + spacing
        for k, window in rules:
            if m >= k:
                at = max(at, times[m - k] + window)
        times.append(at)
    return times[-1]


def campaign_time(ws: Workspace, campaign_id: str) -> CampaignTime:
    """Each sender of the campaign with its limits, its share of the audience (faces from
    the segments, as a first send plans them) and the least time that share takes."""
    campaign = ws.campaign(campaign_id).campaign
    d = ws.directory
    recipients = plan_recipients(campaign, ws.audience(campaign), d.liaisons, ws.settings)
    shares: dict[str, int] = {}
    for r in recipients:
        shares[r.sender_id] = shares.get(r.sender_id, 0) + 1
    senders = []
    for sender_id, n in sorted(shares.items(), key=lambda kv: (-kv[1], kv[0])):
        liaison = d.liaisons.get(sender_id)
        address = liaison.email if liaison is not None else d.service.email
        pace = d.pace(ws.settings.limits, sender_id)
        senders.append(SenderTime(sender_id, address, pace, n, least_time(n, pace)))
    return CampaignTime(campaign.id, senders)


def duration(seconds: float) -> str:
    """3 h 05 min, 12 min 30 s, 40 s, under a second."""
    if seconds < 1:
        return "under a second"
    whole = round(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"
