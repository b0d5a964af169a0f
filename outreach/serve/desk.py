"""The liaison's desk (signed in): their coverage and whom to meet next, the mail that
came back, the campaigns that reach their researchers (with a preview per language), a
researcher's history, and the form to log a meeting. A liaison opens only their own desk
and their own researchers (403 otherwise); an admin opens every desk and the report.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import date
from functools import wraps
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from outreach.errors import ConfigError, OutreachError
from outreach.serve import desk_data
from outreach.serve.auth import (
    Handler,
    checked_form,
    forbidden,
    page_context,
    session,
    signed_in,
)
from outreach.serve.forms import KINDS, MAX_NOTE, blank, check_meeting
from outreach.serve.public import state_of
from outreach.serve.security import CSP_DOCUMENT
from outreach.track.contacts import record
from outreach.workspace.loader import Workspace

if TYPE_CHECKING:
    from outreach.serve.state import AppState

log = logging.getLogger("outreach.serve")


def _liaison_or_refusal(request: Request, ws: Workspace) -> str | Response:
    """The desk's liaison id from the path, if this user may open it."""
    lid = request.path_params["liaison_id"]
    if not session(request).user.may_see(lid):
        return forbidden(request, "This desk belongs to another liaison.")
    if lid not in ws.directory.liaisons:
        return forbidden(request, f"There is no liaison `{lid}` in people/liaisons.yaml.", 404)
    return lid


DeskHandler = Callable[[Request, "AppState", Workspace, str], Awaitable[Response]]


def liaison_desk(handler: DeskHandler) -> Handler:
    """A page of one liaison's desk: signed in, and this user may open that liaison's desk
    (403/404 otherwise); the handler gets the app's state, the workspace and the liaison."""

    @signed_in
    @wraps(handler)
    async def wrapper(request: Request) -> Response:
        state = state_of(request)
        ws = state.workspace.get()
        lid = _liaison_or_refusal(request, ws)
        if isinstance(lid, Response):
            return lid
        return await handler(request, state, ws, lid)

    return wrapper


def admin_only(handler: Callable[[Request, AppState], Awaitable[Response]]) -> Handler:
    """A page for the administrator only (403 for a liaison)."""

    @signed_in
    @wraps(handler)
    async def wrapper(request: Request) -> Response:
        if not session(request).user.is_admin:
            return forbidden(request, "Only the administrator sees every liaison and the report.")
        return await handler(request, state_of(request))

    return wrapper


def _page(request: Request, name: str, status: int = 200, **context: Any) -> Response:
    return state_of(request).page(name, status, **page_context(request, **context))


@liaison_desk
async def desk_home(request: Request, state: AppState, ws: Workspace, lid: str) -> Response:

    def gather() -> dict[str, Any]:
        land = desk_data.territory(state.store, ws)
        members = land.members(lid)
        cov = desk_data.coverage(state.store, ws, land)
        return {
            "row": next((r for r in cov.liaisons if r.id == lid), None),
            "year": cov.year,
            "members": len(members),
            "events": desk_data.mailbox(state.store, lid, [r.email for r in members]),
            "campaigns": desk_data.campaigns_for(state.store, ws, lid, members),
        }

    data = await run_in_threadpool(gather)
    # APPROVAL (issue #15): when campaigns can be approved, each line of `campaigns` gets its
    # approval state here and campaign.html.j2 its form (the CLI's approval, same store).
    return _page(request, "desk.html.j2", liaison=ws.directory.liaisons[lid], **data)


@liaison_desk
async def researcher(request: Request, state: AppState, ws: Workspace, lid: str) -> Response:
    email = request.path_params["email"].strip().lower()
    land = await run_in_threadpool(desk_data.territory, state.store, ws)
    person = land.researchers.get(email)
    if person is None or land.owner(email) != lid:
        # the same answer for "someone else's" and "no one": the desk tells nothing of others
        return forbidden(request, "This researcher is not one of yours.")
    past = await run_in_threadpool(desk_data.history, state.store, email)
    logged = request.query_params.get("logged")
    return _page(
        request,
        "researcher.html.j2",
        liaison=ws.directory.liaisons[lid],
        person=person,
        past=past,
        logged=logged if logged in KINDS else None,
    )


def _today() -> str:
    return date.today().isoformat()


@liaison_desk
async def log_form(request: Request, state: AppState, ws: Workspace, lid: str) -> Response:
    chosen = request.query_params.get("researcher", "")[:320]
    # the territory is read from the store: off the event loop, as every other page does
    return await run_in_threadpool(_log_page, request, ws, lid, blank(_today(), chosen))


def _log_page(request: Request, ws: Workspace, lid: str, form: Any, status: int = 200) -> Response:
    land = desk_data.territory(state_of(request).store, ws)
    return _page(
        request,
        "log.html.j2",
        status,
        liaison=ws.directory.liaisons[lid],
        form=form,
        kinds=KINDS,
        max_note=MAX_NOTE,
        members=sorted(land.members(lid), key=lambda r: r.name.casefold()),
    )


@liaison_desk
async def log_meeting(request: Request, state: AppState, ws: Workspace, lid: str) -> Response:
    fields = await checked_form(request)
    if isinstance(fields, Response):
        return fields
    land = await run_in_threadpool(desk_data.territory, state.store, ws)
    form = check_meeting(fields, land.members(lid), lid, zone=ws.settings.zone())
    if form.contact is None:
        return await run_in_threadpool(_log_page, request, ws, lid, form, 422)
    user = session(request).user
    await run_in_threadpool(
        record,
        state.store,
        [form.contact],
        f"web:{user.id}",
        ws.settings.tracking.reply_window_days,
    )
    log.info("%s logged a %s for liaison %s", user.id, form.contact.kind, lid)
    # to the researcher's page (post/redirect/get: reloading it logs nothing twice)
    where = f"/desk/{lid}/researchers/{quote(form.contact.email)}?logged={form.contact.kind}"
    return RedirectResponse(where, status_code=303)


@liaison_desk
async def campaign(request: Request, state: AppState, ws: Workspace, lid: str) -> Response:
    cid = request.path_params["campaign_id"]
    if cid not in ws.campaigns:
        return forbidden(request, f"No campaign `{cid}` in campaigns/.", 404)

    def gather() -> dict[str, Any]:
        land = desk_data.territory(state.store, ws)
        planned = desk_data.planned_for(ws, land, cid, lid)
        return {"languages": desk_data.languages_of(planned), "reach": len(planned)}

    data = await run_in_threadpool(gather)
    return _page(
        request,
        "campaign.html.j2",
        liaison=ws.directory.liaisons[lid],
        campaign=ws.campaigns[cid].campaign,
        **data,
    )


@liaison_desk
async def preview(request: Request, state: AppState, ws: Workspace, lid: str) -> Response:
    """One rendered message, in a sandboxed frame of the campaign page."""
    cid, lang = request.path_params["campaign_id"], request.path_params["lang"]
    if cid not in ws.campaigns:
        return forbidden(request, f"No campaign `{cid}` in campaigns/.", 404)

    def render() -> str | None:
        land = desk_data.territory(state.store, ws)
        planned = desk_data.planned_for(ws, land, cid, lid)
        try:
            return desk_data.preview_html(ws, cid, planned, lang)
        except KeyError:
            return None

    try:
        html = await run_in_threadpool(render)
    except (ConfigError, OutreachError) as exc:
        return forbidden(request, f"The campaign does not render: {exc.message}", 422)
    if html is None:
        return forbidden(request, f"None of your researchers reads `{lang}` in this campaign.", 404)
    return HTMLResponse(
        html, headers={"content-security-policy": CSP_DOCUMENT, "x-frame-options": "SAMEORIGIN"}
    )


@admin_only
async def admin(request: Request, state: AppState) -> Response:
    ws = state.workspace.get()

    def gather() -> dict[str, Any]:
        land = desk_data.territory(state.store, ws)
        cov = desk_data.coverage(state.store, ws, land, next_n=0)
        return {"coverage": cov}

    data = await run_in_threadpool(gather)
    return _page(request, "admin.html.j2", liaisons=ws.directory.liaisons, **data)


@admin_only
async def report(request: Request, state: AppState) -> Response:
    """The report ``outreach report --format html`` writes, for the administrator."""
    ws = state.workspace.get()

    def build() -> str:
        from outreach.report.build import build_report
        from outreach.report.formats import to_html
        from outreach.report.query import Filters

        s = ws.settings
        names = {lid: liaison.name for lid, liaison in ws.directory.liaisons.items()}
        data = build_report(
            state.store, s.tracking.reply_window_days, Filters(None, None, None), names=names
        )
        return to_html(data, f"Reply report: {s.organisation_name()}")

    html = await run_in_threadpool(build)
    return HTMLResponse(html, headers={"content-security-policy": CSP_DOCUMENT})


def routes() -> list[BaseRoute]:
    base = "/desk/{liaison_id}"
    return [
        Route("/admin", admin, methods=["GET"]),
        Route("/admin/report", report, methods=["GET"]),
        Route(base, desk_home, methods=["GET"]),
        Route(base + "/researchers/{email}", researcher, methods=["GET"]),
        Route(base + "/log", log_form, methods=["GET"]),
        Route(base + "/log", log_meeting, methods=["POST"]),
        Route(base + "/campaigns/{campaign_id}", campaign, methods=["GET"]),
        Route(base + "/campaigns/{campaign_id}/preview/{lang}", preview, methods=["GET"]),
    ]
