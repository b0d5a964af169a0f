"""Who must not be mailed: opt-outs and hard bounces in ``suppressions``, read as one
mapping address → reason. A forgotten person's opt-out is kept as a keyed hash
(HMAC-SHA256 under the workspace's token secret), so re-adding them does not mail them,
yet the address cannot be read back without the secret."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from sqlalchemy import select

from outreach.store import Store
from outreach.store.schema import suppressions
from outreach.workspace.credentials import token_secret
from outreach.workspace.people import AddressError, normalise_address

if TYPE_CHECKING:
    from outreach.workspace.loader import Workspace


SUPPRESSION_PREFIX = "hmac-sha256:"
# The source of an opt-out by `outreach serve`'s one-click link: this and the campaign id.
ONE_CLICK_SOURCE = "one-click:"


def normalise(address: str) -> str:
    """The form the store keeps: validated and lower-cased when possible, else as typed."""
    try:
        return normalise_address(address.strip())
    except AddressError:
        return address.strip().lower()


def suppression_key(secret: bytes, address: str) -> str:
    """The keyed hash that stands for a forgotten person's address in ``suppressions``."""
    digest = hmac.new(secret, b"suppression\0" + normalise(address).encode(), hashlib.sha256)
    return SUPPRESSION_PREFIX + digest.hexdigest()


class SuppressionList(Mapping[str, str]):
    """Address → reason, for plain rows and for the keyed hashes ``forget`` leaves.

    What ``send`` skips at plan time: ``planned_rows`` only calls
    ``.get(email)``. Iterating yields the plain addresses only (hashes cannot be reversed).
    """

    def __init__(self, plain: Mapping[str, str], hashed: Mapping[str, str], secret: bytes):
        self.plain = dict(plain)
        self.hashed = dict(hashed)
        self.secret = secret

    def __getitem__(self, address: str) -> str:
        reason = self.plain.get(address)
        if reason is None and self.hashed:
            reason = self.hashed.get(suppression_key(self.secret, address))
        if reason is None:
            raise KeyError(address)
        return reason

    def __iter__(self) -> Iterator[str]:
        return iter(self.plain)

    def __len__(self) -> int:
        return len(self.plain) + len(self.hashed)


def suppression_list(store: Store, secret: bytes) -> SuppressionList:
    plain: dict[str, str] = {}
    hashed: dict[str, str] = {}
    with store.engine.connect() as conn:
        for row in conn.execute(select(suppressions.c.email, suppressions.c.reason)):
            target = hashed if row.email.startswith(SUPPRESSION_PREFIX) else plain
            target[row.email] = row.reason
    return SuppressionList(plain, hashed, secret)


def suppressions_for_planning(ws: Workspace, store: Store) -> SuppressionList:
    """What ``send`` must skip: plain suppressions and those of forgotten people."""
    t = ws.settings.tracking
    return suppression_list(store, token_secret(ws.root, t.secret_env, t.secret_file))
