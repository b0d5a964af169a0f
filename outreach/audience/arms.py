"""Arms: who gets the familiar face (``liaison``) and who the service address (``service``).

Split campaigns are randomised *within each liaison's recipients* (stratified), so a
difference between arms cannot come from one liaison's group being more responsive.
Allocation is a deterministic function of the seed, so a preview shows the arm a send will
use; arms already persisted (earlier campaigns of the same experiment) are kept.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

from outreach.workspace.campaign import Campaign

LIAISON, SERVICE = "liaison", "service"
ARMS = (LIAISON, SERVICE)


def _order_key(seed: int, key: str, email: str) -> str:
    return hashlib.sha256(f"{seed}:{key}:{email}".encode()).hexdigest()


def allocate_arms(
    campaign: Campaign,
    strata: Mapping[str, Sequence[str]],
    existing: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Map each email to an arm. ``strata``: liaison id -> emails of its recipients."""
    if campaign.sender != "split":
        arm = LIAISON if campaign.sender == "liaison" else SERVICE
        return {email: arm for emails in strata.values() for email in emails}
    split = campaign.split
    assert split is not None  # the model fills a default for sender: split
    key = split.experiment or campaign.id
    existing = existing or {}
    out: dict[str, str] = {}
    for stratum in sorted(strata):
        emails = list(strata[stratum])
        kept = {e: existing[e] for e in emails if existing.get(e) in ARMS}
        out.update(kept)
        fresh = sorted(
            (e for e in emails if e not in kept), key=lambda e: _order_key(split.seed, key, e)
        )
        target = round(split.service_share * len(emails))
        need = max(0, min(len(fresh), target - sum(a == SERVICE for a in kept.values())))
        for i, email in enumerate(fresh):
            out[email] = SERVICE if i < need else LIAISON
    return out
