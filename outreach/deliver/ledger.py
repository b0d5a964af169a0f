"""The delivery tables of one store, one concern per module:

* ``rows`` (``outreach.deliver.rows``): one ledger row per (campaign, recipient) and its
  way through claimed → sending → sent (or deferred, failed, uncertain, skipped);
* ``leases`` (``outreach.deliver.leases``): who sends a campaign, one solo run or a team;
* ``quota`` (``outreach.deliver.quota``): each mailbox's send slots across processes.

A campaign's registration and edit detection are in ``outreach.deliver.edits``, arm
allocations and suppressions in ``outreach.deliver.records``.
"""

from __future__ import annotations

from outreach.deliver.leases import SendLeases
from outreach.deliver.quota import QuotaSlots
from outreach.deliver.rows import LedgerRows
from outreach.store import Store


class Ledger:
    """The parts a send run uses together, sharing one store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.engine = store.engine
        self.rows = LedgerRows(store)
        self.leases = SendLeases(store)
        self.quota = QuotaSlots(store)
