"""What the organisation's own mail server said about a message's sender (RFC 8601).

Anyone can put a researcher's address in From. The receiving server checks SPF, DKIM and
DMARC and writes the results in an ``Authentication-Results`` header that starts with its
``authserv-id``. Only that server's header is believed (``tracking.authserv_id`` names it):
any other such header may have been written by the sender. The topmost one counts, as the
server prepends its own and removes copies of its id that arrive from outside.
"""

from __future__ import annotations

import re

_COMMENT = re.compile(r"\([^()]*\)")
_DMARC = re.compile(r"(?:^|;)\s*dmarc\s*=\s*([a-z]+)", re.I)


def authserv_id(value: str) -> str:
    """The authserv-id of one Authentication-Results value (before the first ``;``)."""
    head = _COMMENT.sub(" ", value.split(";", 1)[0]).split()
    return head[0].lower() if head else ""


def dmarc_result(values: list[str], trusted_id: str | None) -> str | None:
    """The DMARC result (``pass``, ``fail``, ``none``…) the trusted server wrote in the
    topmost of its headers, or None when it wrote none (or none is trusted)."""
    if not trusted_id:
        return None
    trusted = trusted_id.strip().lower()
    for value in values:
        if authserv_id(value) != trusted:
            continue
        m = _DMARC.search(_COMMENT.sub(" ", value))
        return m.group(1).lower() if m else None
    return None
