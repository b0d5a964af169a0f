"""Workspaces for the ``outreach serve`` tests: a campaign really sent to the outbox, the
List-Unsubscribe URL of every message read back from the files, and the store's view."""

from __future__ import annotations

import re
import socket
import subprocess
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email import message_from_bytes
from email import policy as email_policy
from email.utils import parseaddr
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import yaml
from foundation_helpers import cli, outreach_command
from sqlalchemy import select
from store_helpers import add_campaign, make_ws

from outreach.serve.app import create_app

with warnings.catch_warnings():  # Starlette asks for httpx2; httpx works as well
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient
from outreach.store import Store, open_store
from outreach.store.schema import contacts, ledger, responses, suppressions
from outreach.workspace.loader import load_workspace

SECRET = "serve-tests-secret-0123456789"
PHARMACY = {"faculty": ["Pharmacy"]}  # lars's researchers
ONE_CLICK = b"List-Unsubscribe=One-Click"
FORM = {"content-type": "application/x-www-form-urlencoded"}
PASSWORD = "correct horse battery"
_HTTPS_URL = re.compile(r"<(https://[^>]+)>")


@dataclass
class Mailed:
    root: Path
    campaign: str
    links: dict[str, str]  # researcher -> path?query of their message's List-Unsubscribe URL
    langs: dict[str, str]
    senders: dict[str, str]  # researcher -> the From display name

    def link(self, lang: str | None = None) -> tuple[str, str]:
        """(researcher, link) of the first message (in ``lang``)."""
        for email in sorted(self.links):
            if lang is None or self.langs[email] == lang:
                return email, self.links[email]
        raise LookupError(lang)


def settings_of(root: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((root / "outreach.yaml").read_text(encoding="utf-8"))
    return data


def set_settings(root: Path, **sections: Any) -> None:
    cfg = settings_of(root)
    cfg.update(sections)
    (root / "outreach.yaml").write_text(yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")


def mailed_workspace(
    root: Path,
    store_url: str | None,
    campaign: str = "serve-a",
    include: dict[str, list[str]] | None = None,
    **sections: Any,
) -> Mailed:
    """The example workspace (store ``store_url``; more settings in ``sections``) with
    ``campaign`` sent to the outbox, and what its messages say."""
    make_ws(root, store_url)
    if sections:
        set_settings(root, **sections)
    add_campaign(root, campaign, include=include or PHARMACY)
    run = cli(root, "send", campaign)
    assert run.code == 0, str(run)
    links: dict[str, str] = {}
    langs: dict[str, str] = {}
    senders: dict[str, str] = {}
    for path in sorted((root / "outbox" / "new").glob("*")):
        msg = message_from_bytes(path.read_bytes(), policy=email_policy.default)
        if campaign not in str(msg["Message-ID"]):
            continue
        email = parseaddr(str(msg["To"]))[1].lower()
        url = _HTTPS_URL.search(str(msg["List-Unsubscribe"]))
        assert url is not None, msg["List-Unsubscribe"]
        assert str(msg["List-Unsubscribe-Post"]) == "List-Unsubscribe=One-Click"
        parts = urlsplit(url.group(1))
        links[email] = f"{parts.path}?{parts.query}"
        langs[email] = str(msg["Content-Language"] or "")
        senders[email] = parseaddr(str(msg["From"]))[0]
    assert links, "no message was sent"
    return Mailed(root, campaign, links, langs, senders)


def store_of(root: Path) -> Store:
    return open_store(load_workspace(explicit=root, only_campaigns=[]).database_url())


def rows(root: Path, query: Any) -> list[Any]:
    store = store_of(root)
    try:
        with store.engine.connect() as conn:
            return list(conn.execute(query))
    finally:
        store.close()


def suppressed(root: Path) -> dict[str, tuple[str, str | None]]:
    s = suppressions.c
    return {r.email: (r.reason, r.source) for r in rows(root, select(s.email, s.reason, s.source))}


def opt_out_responses(root: Path) -> list[Any]:
    r = responses.c
    return rows(
        root,
        select(r.email, r.campaign_id, r.incoming_id, r.match_strength).where(
            r.kind == "unsubscribe"
        ),
    )


def ledger_row(root: Path, campaign: str, email: str) -> Any:
    l = ledger.c  # noqa: E741
    found = rows(
        root,
        select(l.status, l.reason).where(l.campaign_id == campaign, l.email == email),
    )
    return found[0] if found else None


def contacts_of(root: Path) -> list[Any]:
    c = contacts.c
    return rows(root, select(c.kind, c.email, c.liaison_id, c.happened_at, c.note, c.source))


@contextmanager
def client(root: Path, address: str = "127.0.0.1", **kwargs: Any) -> Iterator[TestClient]:
    """httpx (Starlette's TestClient) against the application, its start and stop run;
    ``address`` is the client's (for the trusted-proxy tests)."""
    app = create_app(root)
    with TestClient(app, client=(address, 40000), **kwargs) as c:
        yield c


def add_user(root: Path, user_id: str, *extra: str, password: str = PASSWORD) -> None:
    run = cli(root, "user", "add", user_id, *extra, "--password-stdin", input=password + "\n")
    assert run.code == 0, str(run)


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html[:2000]
    return found.group(1)


def sign_in(
    c: TestClient, user_id: str, password: str = PASSWORD, headers: dict[str, str] | None = None
) -> httpx.Response:
    page = c.get("/login", headers=headers)
    return c.post(
        "/login",
        data={"user": user_id, "password": password, "csrf": csrf_of(page.text)},
        headers=headers,
        follow_redirects=False,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def served(root: Path, env: dict[str, str], *args: str) -> Iterator[str]:
    """``outreach serve`` as a real process on 127.0.0.1 and a free port: its base URL."""
    port = free_port()
    proc = subprocess.Popen(
        [*outreach_command(), "-w", str(root), "serve", "--port", str(port), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90  # a machine busy with other tests starts slowly
        while True:
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
                raise AssertionError(f"outreach serve did not start:\n{out}")
            time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
