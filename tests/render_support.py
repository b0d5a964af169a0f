"""Shared helpers of the render/compose/preview tests (test_render, test_shortcuts_same_bytes,
test_spamassassin, test_preview_browser): a private copy of the example workspace with a
fixed token secret, so that tokens and links are the same in every run."""

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


@contextmanager
def fixed_env() -> Iterator[pytest.MonkeyPatch]:
    """The fixed token secret in the environment (module-scoped fixtures use it too)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OUTREACH_SECRET", SECRET)
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
    """The environment for a child process: the fixed secret, and (conftest.clean_env) no
    setting from the shell that runs the tests."""
    return {**os.environ, "OUTREACH_SECRET": SECRET}
