"""The public endpoints, no sign-in: the List-Unsubscribe URL and the faces its page shows.

* ``POST URL?t=TOKEN&c=CAMPAIGN`` with the body ``List-Unsubscribe=One-Click`` (RFC 8058,
  as Gmail, Yahoo and Outlook send it): the opt-out is in the store before the answer,
  200. Sending it again changes nothing. A link that names no one changes nothing and gets
  the same neutral page as any other bad link, which says nothing about any address.
* ``GET`` of the same URL (a person following the footer link, or a mail scanner): a page
  in the message's language with the sender's name and face and one button that makes
  the POST. A GET never opts anyone out.
* The store down: 503 (the mail client tries again) and the opt-out written to the local
  spool, recorded at the next start.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

from itsdangerous import BadSignature, SignatureExpired, TimestampSigner
from starlette.concurrency import run_in_threadpool
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response

from outreach.errors import OutreachError, StoreError
from outreach.serve.optout import Addressee, Link, read_link
from outreach.serve.security import NO_REFERRER
from outreach.serve.state import AppState
from outreach.serve.texts import page_language, texts
from outreach.store import utcnow
from outreach.workspace.loader import Workspace

log = logging.getLogger("outreach.serve")
MAX_BODY = 64 * 1024
ONE_CLICK = ("List-Unsubscribe", "One-Click")
ONE_CLICK_BODY = b"List-Unsubscribe=One-Click"
FACE_TYPES = {".jpg", ".jpeg", ".png", ".gif", ".webp"}


def state_of(request: Request) -> AppState:
    state: AppState = request.app.state.outreach
    return state


class BodyTooLarge(Exception):
    pass


async def small_body(request: Request, limit: int = MAX_BODY) -> bytes:
    """The request body, refused past ``limit`` bytes however it is sent."""
    declared = request.headers.get("content-length")
    if declared and (not declared.isdigit() or int(declared) > limit):
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


async def form_fields(request: Request, body: bytes) -> dict[str, str]:
    """A urlencoded or multipart form (RFC 8058 allows both), first value of each field."""
    if body == ONE_CLICK_BODY:  # what nearly every mail client sends
        return {ONE_CLICK[0]: ONE_CLICK[1]}
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":

        async def chunks() -> AsyncGenerator[bytes, None]:
            yield body
            yield b""

        parser = MultiPartParser(request.headers, chunks(), max_files=0, max_fields=20)
        try:
            form = await parser.parse()
        except MultiPartException:
            return {}
        return {k: v for k, v in form.items() if isinstance(v, str)}
    try:
        parsed = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        return {}
    return {k: v[0] for k, v in parsed.items()}


async def small_form(request: Request, limit: int = MAX_BODY) -> dict[str, str] | None:
    """The form's fields (``form_fields``), or None when its body is over ``limit`` bytes."""
    try:
        body = await small_body(request, limit)
    except BodyTooLarge:
        return None
    return await form_fields(request, body)


def _sender(ws: Workspace, sender_id: str | None) -> Any:
    d = ws.directory
    return d.liaisons.get(sender_id or "") or d.experts.get(sender_id or "") or d.service


def _words(state: AppState, ws: Workspace, lang: str, sender: Any) -> dict[str, str]:
    values = {
        "name": sender.name,
        "organisation": ws.settings.organisation_name(lang),
        "email": ws.settings.service.email,
        "minutes": str(state.settings.undo_minutes),
    }
    return {k: v.format(**values) for k, v in texts(lang).items()}


def _link_url(state: AppState, link: Link, suffix: str = "") -> str:
    return f"{state.unsubscribe_path}{suffix}?t={link.token}&c={quote(link.campaign_id)}"


def _page(
    request: Request,
    kind: str,
    *,
    who: Addressee | None = None,
    link: Link | None = None,
    status: int = 200,
    **more: Any,
) -> Response:
    state = state_of(request)
    ws = state.workspace.get()
    s = ws.settings
    lang = page_language(
        who.lang if who else None,
        s.languages,
        request.headers.get("accept-language"),
        s.default_language,
    )
    sender = _sender(ws, who.sender_id if who else None)
    # a mail client's one-click POST and every bad link get one of a few fixed pages
    fixed = kind in ("neutral", "done_plain") and not more
    key = (kind, lang, sender.id, state.workspace.generation) if fixed else None
    cached = state.cached(key)
    if cached is not None:
        response: Response = HTMLResponse(cached, status_code=status)
    else:
        context = {
            "kind": kind,
            "lang": lang,
            "t": _words(state, ws, lang, sender),
            "sender": sender,
            "face": f"/faces/{sender.id}" if sender.photo else None,
            "action": _link_url(state, link) if link else None,
            "undo_action": _link_url(state, link, "/undo") if link else None,
            "undo_minutes": state.settings.undo_minutes,
            **more,
        }
        response = state.page("unsubscribe.html.j2", status, key, **context)
    response.headers["content-language"] = lang
    response.headers["referrer-policy"] = NO_REFERRER
    return response


def neutral(request: Request, status: int = 200) -> Response:
    return _page(request, "neutral", status=status)


async def unsubscribe_page(request: Request) -> Response:
    """GET: the page with the button; never an opt-out."""
    link = read_link(request.query_params.get("t"), request.query_params.get("c"))
    if link is None:
        return neutral(request)
    try:
        who = await run_in_threadpool(state_of(request).optouts.find, link)
    except StoreError:
        return _page(request, "busy_lost", link=link, status=503)
    if who is None:
        return neutral(request)
    return _page(request, "ask", who=who, link=link)


async def unsubscribe(request: Request) -> Response:
    """POST: the one-click opt-out (a mail client's, or the page's button)."""
    state = state_of(request)
    fields = await small_form(request)
    if fields is None:
        return PlainTextResponse("request too large", status_code=413)
    if fields.get(ONE_CLICK[0]) != ONE_CLICK[1]:
        return neutral(request, 400)
    from_page = fields.get("via") == "page"
    link = read_link(request.query_params.get("t"), request.query_params.get("c"))
    if link is None:
        return neutral(request)
    try:
        if state.optouts.awaitable:
            who, added = await state.optouts.record_async(link)
        else:
            who, added = await run_in_threadpool(state.optouts.record, link)
    except StoreError:
        kept = state.spool.add(link, utcnow())
        log.warning(
            "store unreachable: opt-out for %s %s",
            link.campaign_id,
            "spooled" if kept else "NOT spooled (spool full or unwritable)",
        )
        response = _page(request, "busy" if kept else "busy_lost", status=503)
        response.headers["retry-after"] = "120"
        return response
    if who is None:
        return neutral(request)
    log.info("opt-out %s for campaign %s", "recorded" if added else "repeated", link.campaign_id)
    if not from_page:
        return _page(request, "done_plain", who=who)
    ticket = TimestampSigner(state.undo_key, salt="undo").sign(link.incoming_id).decode()
    return _page(request, "done", who=who, link=link, ticket=ticket)


async def undo(request: Request) -> Response:
    """POST from the confirmation page, within ``serve.undo_minutes``: the opt-out is
    taken back (only one made from a link just now, never an older suppression)."""
    state = state_of(request)
    fields = await small_form(request)
    if fields is None:
        return PlainTextResponse("request too large", status_code=413)
    link = read_link(request.query_params.get("t"), request.query_params.get("c"))
    if link is None:
        return neutral(request)
    window = state.settings.undo_minutes * 60
    try:
        signed = TimestampSigner(state.undo_key, salt="undo").unsign(
            fields.get("ticket", ""), max_age=window
        )
    except (SignatureExpired, BadSignature):
        signed = b""
    if signed.decode(errors="replace") != link.incoming_id:
        return neutral(request)
    since = utcnow() - timedelta(seconds=window + 60)
    try:
        undone = await run_in_threadpool(state.optouts.undo, link, since)
        who = await run_in_threadpool(state.optouts.find, link)
    except StoreError:
        return _page(request, "busy_lost", link=link, status=503)
    if who is None:
        return neutral(request)
    log.info("opt-out for campaign %s %s", link.campaign_id, "undone" if undone else "kept")
    return _page(request, "undone" if undone else "done", who=who, link=link, ticket=None)


async def face(request: Request) -> Response:
    """A liaison's, expert's or the service's face, as the unsubscribe page shows it: as a
    message embeds it (message/compose.py: upright, 128 pixels, no EXIF), not the file."""
    ws = state_of(request).workspace.get()
    person_id = request.path_params["person_id"]
    d = ws.directory
    person: Any = d.liaisons.get(person_id) or d.experts.get(person_id)
    if person is None and person_id == d.service.id:
        person = d.service
    photo = getattr(person, "photo", None)
    if not photo:
        return PlainTextResponse("not found", status_code=404)
    path = (ws.root / photo).resolve()
    outside = ws.settings.path_outside(ws.root, photo)
    if path.suffix.lower() not in FACE_TYPES or not path.is_file() or outside is not None:
        return PlainTextResponse("not found", status_code=404)
    data = await run_in_threadpool(_face_as_sent, ws, person.id, photo, path)
    if data is None:
        return PlainTextResponse("not found", status_code=404)
    return Response(
        data, media_type="image/jpeg", headers={"cache-control": "public, max-age=3600"}
    )


# (file, modified, size) -> the face as messages embed it: made once, not per page view
_FACES: dict[tuple[str, int, int], bytes] = {}


def _face_as_sent(ws: Workspace, person_id: str, photo: str, path: Path) -> bytes | None:
    """The face as a message embeds it (upright, 128 pixels, no EXIF: the original may
    hold where it was taken), or None when the photo cannot be one."""
    from outreach.message.compose import PhotoCache

    stat = path.stat()
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    data = _FACES.get(key)
    if data is None:
        try:
            data = PhotoCache(ws.root, ws.settings.organisation.domain).jpeg(person_id, photo)
        except OutreachError:
            return None
        if len(_FACES) >= 256:
            _FACES.clear()
        _FACES[key] = data
    return data
