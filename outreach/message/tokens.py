"""Message-ID tokens: an HMAC of (campaign, recipient) under the workspace secret.

``<TOKEN.CAMPAIGN@DOMAIN>`` lets a reply be matched without storing anything guessable;
the token is base32 (case-insensitive survives mail systems that fold case).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

TOKEN_LENGTH = 26
MESSAGE_ID = re.compile(r"<?([a-z2-7]{26})\.([a-z0-9][a-z0-9._-]*)@([^>\s]+)>?", re.IGNORECASE)


def message_token(secret: bytes, campaign_id: str, email: str) -> str:
    digest = hmac.digest(secret, f"{campaign_id}\x00{email.lower()}".encode(), hashlib.sha256)
    # Base32 writes 8 characters for each 5 bytes on their own: the first 20 bytes give the
    # same first 26 characters as the whole digest, for less work on every message.
    return base64.b32encode(digest[:20]).decode("ascii").lower()[:TOKEN_LENGTH]


def message_id(token: str, campaign_id: str, domain: str) -> str:
    return f"<{token}.{campaign_id}@{domain}>"


def parse_message_id(value: str) -> tuple[str, str] | None:
    """(token, campaign) from one of our Message-IDs, else None."""
    m = MESSAGE_ID.search(value or "")
    if not m:
        return None
    return m.group(1).lower(), m.group(2).lower()
