"""Shared helpers of the render/compose/preview tests (test_render, test_spamassassin,
test_preview_browser): a private copy of the example workspace with a fixed token secret."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from outreach.message.prepared import PreparedCampaign
from outreach.workspace.example import init_workspace
from outreach.workspace.loader import Workspace, load_workspace

SECRET = "render-tests-fixed-secret"
CAMPAIGNS = ("familiar-faces-2027", "newsletter-autumn-2026", "rdm-launch-2026")
# Environment that would make a test read or write something outside its tmp workspace.
FOREIGN_ENV = ("OUTREACH_WORKSPACE", "OUTREACH_DATABASE_URL", "OUTREACH_SMTP_PASSWORD")


@contextmanager
def fixed_env() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OUTREACH_SECRET", SECRET)
        for name in FOREIGN_ENV:
            mp.delenv(name, raising=False)
        yield mp


def make_workspace(target: Path) -> Path:
    """A copy of the example workspace (the repository root) in ``target``."""
    init_workspace(target)
    return target


def load(root: Path) -> Workspace:
    ws = load_workspace(explicit=root)
    errors = ws.errors()
    assert not errors, "\n".join(str(p) for p in errors)
    return ws


def prepared(ws: Workspace, campaign_id: str) -> PreparedCampaign:
    return PreparedCampaign(ws, ws.campaign(campaign_id))


def tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its content: to prove a failing command wrote nothing."""
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def env_without_foreign() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in FOREIGN_ENV}
    env["OUTREACH_SECRET"] = SECRET
    return env
