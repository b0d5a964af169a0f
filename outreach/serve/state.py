"""What the application holds while it runs: the workspace (reloaded when its files
change), the store, the opt-out machinery, cookie signers, the page templates."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from starlette.responses import HTMLResponse

from outreach.errors import OutreachError
from outreach.serve.optout import OptOuts, Spool
from outreach.serve.security import CookieSigner, LoginLimiter, Proxies, derived_key
from outreach.store import Store
from outreach.workspace.loader import Workspace, load_workspace
from outreach.workspace.settings import ServeSettings

log = logging.getLogger("outreach.serve")
HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"


class WorkspaceCache:
    """The workspace, loaded again when a file under it changes (checked at most every
    ``interval`` seconds): a liaison added to people/ or a campaign edited shows without
    a restart. A reload that fails keeps the last good workspace and logs why."""

    WATCHED = ("outreach.yaml", "people", "campaigns", "templates")

    def __init__(self, root: Path, interval: float = 2.0, ws: Workspace | None = None) -> None:
        self.root = root
        self.interval = interval
        self.lock = threading.Lock()
        self.signature = self._signature()
        self.ws = ws if ws is not None else load_workspace(explicit=root)
        self.generation = 0  # counts reloads: what was made from an older one is stale
        self.checked = time.monotonic()

    def _signature(self) -> tuple[tuple[str, int, int], ...]:
        found: list[tuple[str, int, int]] = []
        for name in self.WATCHED:
            top = self.root / name
            paths = [top] if top.is_file() else sorted(top.rglob("*")) if top.is_dir() else []
            for path in paths:
                try:
                    st = path.stat()
                except OSError:
                    continue
                found.append((str(path), st.st_mtime_ns, st.st_size))
        return tuple(found)

    def get(self) -> Workspace:
        if time.monotonic() - self.checked < self.interval:
            return self.ws
        with self.lock:
            if time.monotonic() - self.checked >= self.interval:
                signature = self._signature()
                if signature != self.signature:
                    try:
                        self.ws = load_workspace(explicit=self.root)
                        self.signature = signature
                        self.generation += 1
                    except OutreachError as exc:
                        log.warning("workspace not reloaded (kept the last one): %s", exc)
                self.checked = time.monotonic()
        return self.ws


def page_environment() -> Environment:
    # autoescape for every template: Starlette's default keys it on ".html", and ours end
    # in ".html.j2"
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env


@dataclass
class AppState:
    root: Path
    workspace: WorkspaceCache
    store: Store
    secret: bytes
    settings: ServeSettings
    optouts: OptOuts
    spool: Spool
    proxies: Proxies
    limiter: LoginLimiter
    session_cookie: CookieSigner
    login_cookie: CookieSigner
    undo_key: bytes
    pages: Environment
    unsubscribe_path: str
    # public pages that depend only on (kind, language, sender, workspace): a mail client's
    # one-click POST and every bad link answer one of a few pages, rendered once
    rendered: dict[tuple[Any, ...], bytes] = field(default_factory=dict)

    @classmethod
    def build(
        cls, root: Path, store: Store, secret: bytes, ws: Workspace, unsubscribe_path: str
    ) -> AppState:
        serve = ws.settings.serve
        return cls(
            root=root,
            workspace=WorkspaceCache(root, ws=ws),
            store=store,
            secret=secret,
            settings=serve,
            optouts=OptOuts(store, secret, ws.settings.organisation.domain),
            spool=Spool(root / serve.spool),
            proxies=Proxies(serve.trusted_proxies),
            limiter=LoginLimiter(serve.login_attempts),
            session_cookie=CookieSigner(secret, "session"),
            login_cookie=CookieSigner(secret, "login form"),
            undo_key=derived_key(secret, "undo"),
            pages=page_environment(),
            unsubscribe_path=unsubscribe_path,
        )

    def cached(self, key: tuple[Any, ...] | None) -> bytes | None:
        return self.rendered.get(key) if key is not None else None

    def page(
        self, name: str, status: int = 200, cache_key: tuple[Any, ...] | None = None, **context: Any
    ) -> HTMLResponse:
        """The template rendered; kept under ``cache_key`` when one is given."""
        body = self.pages.get_template(name).render(**context).encode()
        if cache_key is not None:
            if len(self.rendered) > 256:
                self.rendered.clear()
            self.rendered[cache_key] = body
        return HTMLResponse(body, status_code=status)
