"""Whether DNS publishes the DKIM keys outreach signs with (``outreach dkim record --check``).

A receiver verifies a signature against the TXT record at ``selector._domainkey.domain``:
a missing or different record makes every signed message fail DKIM.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum

from outreach.workspace.keys import DkimKey


class Publication(Enum):
    MISSING = "missing"  # no TXT record (or DNS did not answer)
    DIFFERENT = "different"  # a record, for another key
    MATCHING = "matching"


def lookup_txt(name: str) -> str | None:
    """The TXT record at ``name``, its strings joined; None when there is none."""
    try:
        import dns.resolver
    except ImportError:  # pragma: no cover - dnspython comes with dkimpy
        return None
    try:
        answer = dns.resolver.resolve(name, "TXT", lifetime=10)
    except Exception:  # noqa: BLE001 - NXDOMAIN, timeout, no answer: all "not found"
        return None
    return "".join(b.decode("ascii", "replace") for r in answer for b in r.strings)


def publication(key: DkimKey, lookup: Callable[[str], str | None] | None = None) -> Publication:
    """How DNS publishes ``key``: not at all, as another key, or as this one (``lookup``
    answers for DNS in tests)."""
    published = (lookup or lookup_txt)(key.dns_name)
    if published is None:
        return Publication.MISSING
    if f"p={key.public.decode()}" not in published.replace(" ", "").replace('"', ""):
        return Publication.DIFFERENT
    return Publication.MATCHING
