"""DKIM signing (dkimpy), one key per sending domain.

DMARC aligns on ``From``: mail sent as a liaison passes only when the organisation's domain
signs it. The signature covers every header a reader or a filter trusts — From, To, Cc,
Subject, Date, Message-ID, Reply-To, List-Id, List-Unsubscribe, List-Unsubscribe-Post,
MIME-Version, Content-Type, Content-Language — and the ones an intermediary must not *add*
(From, To, Cc, Subject, Reply-To, the List-* headers) are signed once more than they occur
("oversigned"), so a second copy added in transit breaks the signature.

Only mail whose From domain is the key's domain, or a subdomain of it (DMARC's relaxed
alignment), is signed; other mail passes through unchanged. The keys themselves are loaded
and checked by ``outreach.workspace.keys``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from email.utils import getaddresses
from pathlib import Path

from outreach.workspace.keys import DkimKey, ascii_domain, load_keys, sign_with
from outreach.workspace.settings import Settings

# Signed once per occurrence; the OVERSIGNED ones once more (an added copy breaks it).
SIGNED_HEADERS: tuple[str, ...] = (
    "from",
    "reply-to",
    "to",
    "cc",
    "subject",
    "date",
    "message-id",
    "list-id",
    "list-unsubscribe",
    "list-unsubscribe-post",
    "mime-version",
    "content-type",
    "content-language",
)
OVERSIGNED: tuple[str, ...] = (
    "from",
    "reply-to",
    "to",
    "cc",
    "subject",
    "list-id",
    "list-unsubscribe",
    "list-unsubscribe-post",
)


def _header_block(message: bytes) -> bytes:
    end = message.find(b"\r\n\r\n")
    if end < 0:
        end = message.find(b"\n\n")
    return message if end < 0 else message[: end + 2]


_FROM = re.compile(rb"^From:[ \t]*(.*(?:\r?\n[ \t].*)*)", re.M | re.I)


def from_domain(message: bytes) -> str | None:
    """The domain of the single From address in the header, or None."""
    head = _header_block(message)
    found = _FROM.findall(head)
    if len(found) != 1:
        return None
    value = re.sub(rb"\r?\n[ \t]", b" ", found[0]).decode("ascii", "replace")
    addresses = [a for _, a in getaddresses([value]) if a]
    if len(addresses) != 1 or "@" not in addresses[0]:
        return None
    return ascii_domain(addresses[0].rsplit("@", 1)[1])


class DkimSigner:
    """``signer(message_bytes) -> signed bytes``: the Composer's signing hook."""

    def __init__(self, keys: Sequence[DkimKey]) -> None:
        # The most specific domain wins (med.uni.example before uni.example).
        self.keys = sorted(keys, key=lambda k: -len(k.domain))
        self.headers = [h.encode() for h in (*SIGNED_HEADERS, *OVERSIGNED)]

    def key_for(self, domain: str | None) -> DkimKey | None:
        if not domain:
            return None
        return next((k for k in self.keys if k.covers(domain)), None)

    def sign(self, message: bytes, key: DkimKey) -> bytes:
        return sign_with(key, message, self.headers)

    def __call__(self, message: bytes) -> bytes:
        key = self.key_for(from_domain(message))
        return message if key is None else self.sign(message, key)


def signer_from_settings(settings: Settings, root: Path) -> DkimSigner | None:
    """The signer for ``dkim:`` in outreach.yaml, or None when DKIM is not configured."""
    keys = load_keys(settings, root)
    return DkimSigner(keys) if keys else None
