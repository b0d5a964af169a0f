"""Signing in and out, and what every signed-in page checks first.

* The session cookie is signed, HttpOnly, SameSite=Lax (and Secure when the request came
  over HTTPS); its key is new at every sign-in, so a key planted beforehand is worthless.
* Every form carries a CSRF token: the session's, or before sign-in the one in a signed
  cookie of the sign-in form (double submit); a form from another origin is refused.
* Failed sign-ins are counted per client address and per user id (``LoginLimiter``).
* Single sign-on: a request from a trusted proxy naming a user in ``serve.user_header``
  is that user (who must exist), with a session of its own for the CSRF token.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from outreach.serve.accounts import (
    Session,
    end_session,
    get_user,
    session_of,
    start_session,
    verify_login,
)
from outreach.serve.public import small_form, state_of
from outreach.serve.security import new_token, same_origin, same_token
from outreach.serve.state import AppState

log = logging.getLogger("outreach.serve")
SESSION_COOKIE = "outreach_session"
LOGIN_COOKIE = "outreach_login"
Handler = Callable[[Request], Awaitable[Response]]


def _cookie(
    response: Response, request: Request, name: str, value: str, max_age: int, path: str = "/"
) -> None:
    state = state_of(request)
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=path,
        httponly=True,
        samesite="lax",
        secure=state.proxies.https(request),
    )


def _forget_cookie(response: Response, request: Request, name: str, path: str = "/") -> None:
    response.delete_cookie(
        name,
        path=path,
        httponly=True,
        samesite="lax",
        secure=state_of(request).proxies.https(request),
    )


async def current_session(request: Request) -> Session | None:
    """The request's session: its cookie's, or one for the user a trusted proxy names."""
    state = state_of(request)
    key = state.session_cookie.unsign(request.cookies.get(SESSION_COOKIE))
    session = await run_in_threadpool(session_of, state.store, key) if key else None
    header = state.settings.user_header
    if header and state.proxies.from_proxy(request):
        named = (request.headers.get(header) or "").strip().lower()
        if named and (session is None or session.user.id != named):
            user = await run_in_threadpool(get_user, state.store, named)
            if user is None:
                log.warning("proxy named user %r, who has no account", named)
                return None
            new_key, session = await run_in_threadpool(
                start_session, state.store, user, state.settings.session_hours
            )
            request.state.new_session_key = new_key
    return session


def signed_in(handler: Handler) -> Handler:
    """The page needs a session: without one, the sign-in form."""

    @wraps(handler)
    async def wrapper(request: Request) -> Response:
        session = await current_session(request)
        if session is None:
            return RedirectResponse("/login", status_code=303)
        request.state.session = session
        response = await handler(request)
        new_key = getattr(request.state, "new_session_key", None)
        if new_key:
            hours = state_of(request).settings.session_hours
            cookie = state_of(request).session_cookie.sign(new_key)
            _cookie(response, request, SESSION_COOKIE, cookie, hours * 3600)
        return response

    return wrapper


def session(request: Request) -> Session:
    found: Session = request.state.session
    return found


async def checked_form(request: Request) -> dict[str, str] | Response:
    """A signed-in form's fields, or the answer that refuses it (too large, foreign, or
    without this session's CSRF token)."""
    state = state_of(request)
    fields = await small_form(request)
    if fields is None:
        return forbidden(request, "The form is too large.", 413)
    if not same_origin(request, state.proxies) or not same_token(
        session(request).csrf, fields.get("csrf")
    ):
        return forbidden(request, "The form has expired or came from elsewhere: reload it.")
    return fields


def forbidden(request: Request, message: str, status: int = 403) -> Response:
    state = state_of(request)
    s = getattr(request.state, "session", None)
    return state.page(
        "error.html.j2",
        status,
        message=message,
        user=s.user if s else None,
        csrf=s.csrf if s else "",
    )


def _login_page(
    request: Request, state: AppState, error: str | None = None, status: int = 200, user: str = ""
) -> Response:
    nonce = new_token()
    response = state.page("login.html.j2", status, csrf=nonce, error=error, user_id=user, user=None)
    _cookie(response, request, LOGIN_COOKIE, state.login_cookie.sign(nonce), 3600, "/login")
    return response


async def login_form(request: Request) -> Response:
    """The form, also to someone signed in: a browser holding a session someone planted
    can always sign in as its own user (and so end that session)."""
    return _login_page(request, state_of(request))


async def login(request: Request) -> Response:
    state = state_of(request)
    fields = await small_form(request, 8192)
    if fields is None:
        return _login_page(request, state, "The form is too large.", 413)
    nonce = state.login_cookie.unsign(request.cookies.get(LOGIN_COOKIE))
    if not same_origin(request, state.proxies) or not same_token(nonce, fields.get("csrf")):
        return _login_page(request, state, "The form had expired: please sign in again.", 403)
    user_id = fields.get("user", "").strip().lower()[:100]
    password = fields.get("password", "")
    keys = (f"address:{state.proxies.client(request)}", f"user:{user_id}")
    wait = state.limiter.wait(*keys)
    if wait > 0:
        minutes = max(1, round(wait / 60))
        log.warning("sign-in refused (rate limit): %r from %s", user_id, keys[0])
        response = _login_page(
            request, state, f"Too many failed sign-ins: try again in {minutes} min.", 429, user_id
        )
        response.headers["retry-after"] = str(int(wait) + 1)
        return response
    user = await run_in_threadpool(verify_login, state.store, user_id, password)
    if user is None:
        state.limiter.failed(*keys)
        log.warning("sign-in failed: %r from %s", user_id, keys[0])
        return _login_page(request, state, "Wrong user or password.", 401, user_id)
    state.limiter.succeeded(keys[1])
    # a new session at every sign-in: whatever key the browser held before ends here
    old = state.session_cookie.unsign(request.cookies.get(SESSION_COOKIE))
    await run_in_threadpool(end_session, state.store, old)
    key, _session = await run_in_threadpool(
        start_session, state.store, user, state.settings.session_hours
    )
    log.info("signed in: %s from %s", user.id, keys[0])
    response = RedirectResponse("/", status_code=303)
    hours = state.settings.session_hours
    _cookie(response, request, SESSION_COOKIE, state.session_cookie.sign(key), hours * 3600)
    _forget_cookie(response, request, LOGIN_COOKIE, "/login")
    return response


@signed_in
async def logout(request: Request) -> Response:
    state = state_of(request)
    fields = await checked_form(request)
    if isinstance(fields, Response):
        return fields
    key = state.session_cookie.unsign(request.cookies.get(SESSION_COOKIE))
    await run_in_threadpool(end_session, state.store, key)
    response = RedirectResponse("/login", status_code=303)
    _forget_cookie(response, request, SESSION_COOKIE)
    return response


@signed_in
async def home(request: Request) -> Response:
    user = session(request).user
    return RedirectResponse("/admin" if user.is_admin else f"/desk/{user.id}", status_code=303)


def routes() -> list[BaseRoute]:
    return [
        Route("/", home, methods=["GET"]),
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
    ]


def page_context(request: Request, **more: Any) -> dict[str, Any]:
    """What every desk page's layout needs: the user and the CSRF token for its forms."""
    s = session(request)
    return {"user": s.user, "csrf": s.csrf, **more}
