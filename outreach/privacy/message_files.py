"""The message files the tool wrote for a person: outbox Maildir messages addressed to them,
and ``preview/`` .eml files with their HTML rendering and their card in a gallery's
index.html."""

from __future__ import annotations

import email
import email.policy
import html
import re
from collections import defaultdict
from email.utils import getaddresses
from pathlib import Path
from typing import TYPE_CHECKING

from outreach.audience.suppressions import normalise
from outreach.privacy.people_files import write_atomically

if TYPE_CHECKING:
    from outreach.workspace.loader import Workspace


def _headers_of(path: Path) -> email.message.Message | None:
    try:
        with path.open("rb") as f:
            head = f.read(256 * 1024)
    except OSError:
        return None
    end = head.find(b"\r\n\r\n")
    end = end if end >= 0 else head.find(b"\n\n")
    block = head if end < 0 else head[: end + 2]
    return email.message_from_bytes(block, policy=email.policy.compat32)


def _addressed_to(path: Path, address: str) -> bool:
    msg = _headers_of(path)
    if msg is None:
        return False
    raw = " ".join(str(v) for k, v in msg.items() if k.lower() in ("x-envelope-to", "to", "cc"))
    if address not in raw.lower():
        return False
    return any(normalise(a) == address for _, a in getaddresses([raw]) if a)


def outbox_files(ws: Workspace, address: str) -> list[Path]:
    box = Path(ws.settings.transport.outbox).expanduser()
    box = box if box.is_absolute() else ws.root / box
    out: list[Path] = []
    for sub in ("new", "cur", "tmp"):
        folder = box / sub
        if folder.is_dir():
            out += [
                p for p in sorted(folder.iterdir()) if p.is_file() and _addressed_to(p, address)
            ]
    return out


def preview_files(ws: Workspace, address: str) -> list[Path]:
    """Preview .eml files addressed to ``address`` and their HTML rendering."""
    folder = ws.root / "preview"
    if not folder.is_dir():
        return []
    out: list[Path] = []
    for eml in sorted(folder.rglob("*.eml")):
        if _addressed_to(eml, address):
            out.append(eml)
            page = eml.parent / "messages" / f"{eml.stem}.html"
            if page.is_file():
                out.append(page)
    return out


def drop_preview_cards(files: list[Path]) -> None:
    """Take the forgotten messages' cards out of each gallery's index.html."""
    by_index: dict[Path, list[str]] = defaultdict(list)
    for path in files:
        if path.suffix == ".eml":
            by_index[path.parent / "index.html"].append(path.name)
    for index, names in by_index.items():
        if not index.is_file():
            continue
        page = index.read_text(encoding="utf-8")
        removed = 0
        for name in names:
            card = re.compile(
                r'<section class="card"(?:(?!<section class="card").)*?href="'
                + re.escape(html.escape(name))
                + r'".*?</section>\s*',
                re.S,
            )
            page, n = card.subn("", page, count=1)
            removed += n
        if removed:
            shown = re.search(r"(\d+)( message\(s\))", page)
            if shown:
                left = max(0, int(shown.group(1)) - removed)
                page = page[: shown.start(1)] + str(left) + page[shown.end(1) :]
            write_atomically(index, page.encode("utf-8"))
