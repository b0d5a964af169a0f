"""``outreach preview``: .eml files and an HTML gallery a reviewer opens in a browser."""

from __future__ import annotations

import base64
import html
import re
import shutil
import tempfile
from dataclasses import dataclass
from email import message_from_bytes
from email import policy as email_policy
from pathlib import Path

from outreach.errors import OutreachError
from outreach.message.prepared import Message, PreparedCampaign, naming_recipient
from outreach.workspace.loader import Workspace

SHOWN_HEADERS = (
    "From",
    "Reply-To",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Message-ID",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "List-Id",
)


@dataclass(frozen=True)
class PreviewResult:
    out: Path
    messages: int
    index: Path


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "x"


def inline_html(data: bytes) -> tuple[str, str, dict[str, str]]:
    """The HTML with cid: faces as data: URIs (a browser cannot follow cid:), the text part
    and the headers, read back from the composed bytes: the gallery shows what is sent."""
    msg = message_from_bytes(data, policy=email_policy.default)
    headers = {h: str(msg[h]) for h in SHOWN_HEADERS if msg[h] is not None}
    html_part = msg.get_body(("html",))
    text_part = msg.get_body(("plain",))
    body = html_part.get_content() if html_part is not None else ""
    text = text_part.get_content() if text_part is not None else ""
    for part in msg.walk():
        cid = part.get("Content-ID")
        if cid and part.get_content_maintype() == "image":
            raw = part.get_payload(decode=True)
            assert isinstance(raw, bytes)
            uri = f"data:{part.get_content_type()};base64,{base64.b64encode(raw).decode()}"
            body = body.replace(f"cid:{cid.strip('<>')}", uri)
    return body, text, headers


def write_preview(
    ws: Workspace, campaign_id: str, out: Path, sample: bool = False
) -> PreviewResult:
    """Render into a staging folder and move it into ``out`` only when every message
    rendered: an error leaves ``out`` as it was (nothing half-written)."""
    prepared = PreparedCampaign(ws, ws.campaign(campaign_id), create_secret=False)
    stage = Path(tempfile.mkdtemp(prefix="outreach-preview-"))
    try:
        count = _write(prepared, stage, sample)
        _publish(stage, out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return PreviewResult(out, count, out / "index.html")


def _private_folder(folder: Path) -> None:
    """``folder`` and any missing folder above it, made readable by the owner only
    (0700, whatever the umask): previews hold names, addresses and messages."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    for made in reversed(missing):
        made.mkdir(exist_ok=True)
        made.chmod(0o700)


def _publish(stage: Path, out: Path) -> None:
    """Move the staged files into ``out`` (replacing earlier previews' files of the same
    name), each readable by the owner only (0600)."""
    _private_folder(out)
    for src in sorted(stage.rglob("*")):
        if src.is_dir():
            continue
        src.chmod(0o600)
        dst = out / src.relative_to(stage)
        _private_folder(dst.parent)
        shutil.move(str(src), str(dst))


def _write(prepared: PreparedCampaign, out: Path, sample: bool) -> int:
    recipients = prepared.sample() if sample else prepared.recipients
    (out / "messages").mkdir(exist_ok=True)
    cards: list[str] = []
    for n, recipient in enumerate(recipients, 1):
        try:
            message: Message = prepared.message(recipient)
        except OutreachError as exc:
            raise naming_recipient(exc, prepared.campaign.id, recipient.email) from None
        stem = f"{n:05d}-{_slug(recipient.email)}"
        (out / f"{stem}.eml").write_bytes(message.composed.data)
        body, text, headers = inline_html(message.composed.data)
        (out / "messages" / f"{stem}.html").write_text(body, encoding="utf-8")
        rows = "".join(
            f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
            for k, v in headers.items()
        )
        liaison = recipient.liaison.id if recipient.liaison else "-"
        cards.append(
            f"""<section class="card" data-arm="{recipient.arm}" data-lang="{recipient.lang}"
 data-liaison="{html.escape(liaison)}">
<h2>{html.escape(message.rendered.subject)}</h2>
<p class="tags"><span>{html.escape(liaison)}</span><span>{recipient.lang}</span>
<span class="arm-{recipient.arm}">{recipient.arm}</span>
<a href="{stem}.eml">{stem}.eml</a></p>
<table class="headers">{rows}</table>
<iframe title="{html.escape(message.rendered.subject)}" src="messages/{stem}.html"
 loading="lazy"></iframe>
<details><summary>Plain text</summary><pre>{html.escape(text)}</pre></details>
</section>"""
        )
    title = f"Preview: {html.escape(prepared.campaign.id)}"
    index = out / "index.html"
    index.write_text(
        f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ font-family: system-ui, sans-serif; margin: 0; background: #eef0f2; color: #1f2933; }}
header {{ padding: 16px 24px; background: #1f2933; color: #fff; }}
main {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(680px, 1fr));
  gap: 20px; padding: 20px; }}
.card {{ background: #fff; border-radius: 8px; padding: 12px 16px; }}
.card h2 {{ font-size: 16px; margin: 4px 0 8px; }}
.tags span {{ display: inline-block; background: #e4e7eb; border-radius: 4px;
  padding: 1px 8px; margin-right: 6px; font-size: 13px; }}
.tags .arm-service {{ background: #fde2c4; }}
.tags .arm-liaison {{ background: #cdeccd; }}
.headers {{ font-size: 12px; border-collapse: collapse; width: 100%; margin-bottom: 8px; }}
.headers th {{ text-align: left; padding: 2px 8px 2px 0; white-space: nowrap; color: #52606d;
  vertical-align: top; }}
.headers td {{ word-break: break-all; }}
iframe {{ width: 100%; height: 760px; border: 1px solid #cbd2d9; border-radius: 4px; }}
pre {{ white-space: pre-wrap; font-size: 12px; }}
</style></head>
<body><header><h1 style="margin:0;font-size:20px">{title}</h1>
<p style="margin:4px 0 0">{len(cards)} message(s): liaison × language × arm</p></header>
<main>
{"".join(cards)}
</main></body></html>
""",
        encoding="utf-8",
    )
    return len(cards)
