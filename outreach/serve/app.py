"""The Starlette application of ``outreach serve``: routes, middleware, start and stop.

At start the opt-outs spooled while the store was unreachable are recorded, and again
every minute while any are left.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy.exc import InterfaceError, OperationalError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from outreach.errors import StoreError
from outreach.serve import auth, desk, public
from outreach.serve.security import SecurityHeaders
from outreach.serve.state import STATIC, AppState
from outreach.store import Store, open_store
from outreach.workspace.credentials import token_secret
from outreach.workspace.loader import Workspace, load_workspace
from outreach.workspace.settings import Settings

log = logging.getLogger("outreach.serve")
DEFAULT_PATH = "/unsubscribe"
REPLAY_EVERY = 60.0


def unsubscribe_path(settings: Settings) -> str:
    """Where the List-Unsubscribe URL points, on this app: the path of ``unsubscribe.url``
    (the reverse proxy passes it through unchanged)."""
    path = urlsplit(settings.unsubscribe.url or "").path.rstrip("/")
    return path or DEFAULT_PATH


def _routes(path: str) -> list[BaseRoute]:
    paths = [path] if path == DEFAULT_PATH else [path, DEFAULT_PATH]
    unsubscribe: list[BaseRoute] = []
    for p in paths:
        unsubscribe += [
            Route(p, public.unsubscribe_page, methods=["GET", "HEAD"]),
            Route(p, public.unsubscribe, methods=["POST"]),
            Route(p + "/undo", public.undo, methods=["POST"]),
        ]
    return [
        *unsubscribe,
        Route("/faces/{person_id}", public.face, methods=["GET", "HEAD"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
        Route("/healthz", _health, methods=["GET"]),
        *auth.routes(),
        *desk.routes(),
    ]


async def _health(request: Request) -> Response:
    return PlainTextResponse("ok")


async def _store_down(request: Request, exc: Exception) -> Response:
    log.error("store unreachable: %s", exc)
    return PlainTextResponse(
        "The database cannot be reached just now; try again in a moment.",
        status_code=503,
        headers={"retry-after": "60"},
    )


async def _replay(state: AppState) -> None:
    try:
        done = await run_in_threadpool(state.spool.replay, state.optouts)
    except OSError as exc:
        log.error("cannot read the opt-out spool %s: %s", state.spool.path, exc)
        return
    if done.read:
        log.info(
            "opt-out spool: %d read, %d recorded, %d left for later",
            done.read,
            done.recorded,
            done.kept,
        )


def create_app(
    root: Path | str | None = None,
    *,
    ws: Workspace | None = None,
    store: Store | None = None,
) -> Starlette:
    """The application for the workspace at ``root`` (found as the CLI finds it when
    None); ``ws``/``store`` let a caller share ones already open (then not closed here)."""
    ws = ws if ws is not None else load_workspace(explicit=root)
    own_store = store is None
    store = store if store is not None else open_store(ws.database_url())
    t = ws.settings.tracking
    secret = token_secret(ws.root, t.secret_env, t.secret_file)
    state = AppState.build(ws.root, store, secret, ws, unsubscribe_path(ws.settings))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await _replay(state)

        async def keep_replaying() -> None:
            while True:
                await asyncio.sleep(REPLAY_EVERY)
                if state.spool.path.exists():
                    await _replay(state)

        task = asyncio.create_task(keep_replaying())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await state.optouts.aclose()
            state.optouts.close()
            if own_store:
                state.store.close()

    app = Starlette(
        routes=_routes(state.unsubscribe_path),
        middleware=[Middleware(SecurityHeaders)],
        lifespan=lifespan,
        exception_handlers={
            StoreError: _store_down,
            OperationalError: _store_down,
            InterfaceError: _store_down,
        },
    )
    app.state.outreach = state
    return app
