"""Private files are private (issue #18, item 9).

``outreach.db`` (and its -wal and -shm), ``preview/`` and ``outbox/`` hold names,
addresses and messages: they are made readable by their owner only (files 0600, folders
0700), whatever the umask. A database URL's password is never printed, whether written as
``user:pw@`` or as ``?password=``; a secret pasted where ``password_env`` wants a variable's
name is never echoed back by ``send``. Umasks, URLs and secrets are generated.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import string
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from foundation_helpers import cli, copy_example, edit
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from outreach.store import redact

CAMPAIGN = "rdm-launch-2026"
FEW = settings(max_examples=6, phases=[Phase.explicit, Phase.generate])  # each runs the CLI
UMASKS = st.sampled_from([0o000, 0o002, 0o007, 0o022, 0o027, 0o077])


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("private-files")


def workspace(parent: Path) -> Path:
    root = copy_example(Path(tempfile.mkdtemp(dir=parent)) / "ws")
    for other in ("familiar-faces-2027.yaml", "newsletter-autumn-2026.yaml"):
        (root / "campaigns" / other).unlink()
    return root


@contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def assert_private(top: Path) -> None:
    """``top`` and everything under it: folders 0700, files 0600."""
    assert top.is_dir() and mode(top) == 0o700, (top, oct(mode(top)))
    for path in top.rglob("*"):
        want = 0o700 if path.is_dir() else 0o600
        assert mode(path) == want, (path, oct(mode(path)))


@FEW
@given(mask=UMASKS)
def test_the_database_and_the_outbox_are_the_owners_only(scratch: Path, mask: int) -> None:
    root = workspace(scratch)
    with umask(mask):
        run = cli(root, "send", CAMPAIGN, "--now", "--transport", "outbox", "--limit", "3")
        assert run.code == 0, run
        # a reader keeps the WAL and the shared-memory file in place while `send` writes more
        reader = sqlite3.connect(root / "outreach.db")
        try:
            reader.execute("BEGIN")
            reader.execute("SELECT count(*) FROM sqlite_master").fetchone()
            run = cli(root, "send", CAMPAIGN, "--now", "--transport", "outbox", "--limit", "2")
            assert run.code == 0, run
            for name in ("outreach.db", "outreach.db-wal", "outreach.db-shm"):
                assert mode(root / name) == 0o600, (name, oct(mode(root / name)))
        finally:
            reader.close()
    assert_private(root / "outbox")
    assert len(list((root / "outbox" / "new").iterdir())) == 5


@FEW
@given(mask=UMASKS, custom=st.booleans())
def test_previews_are_the_owners_only(scratch: Path, mask: int, custom: bool) -> None:
    root = workspace(scratch)
    out = root / "reviews" / "autumn" if custom else root / "preview"
    with umask(mask):
        args = ("--out", str(out)) if custom else ()
        run = cli(root, "preview", CAMPAIGN, "--sample", *args)
        assert run.code == 0, run
    assert_private(out)
    assert any(out.rglob("*.eml")) and any(out.rglob("messages/*.html"))
    if custom:
        assert mode(root / "reviews") == 0o700  # made by preview: private too


# ----------------------------------------------------------------------------- URLs

_SECRET_CHARS = string.ascii_letters + string.digits + "!$()*,-.:~_"
# each starts with characters no output has, so finding it means it was echoed
secrets_ = st.text(_SECRET_CHARS, min_size=4, max_size=24).map(lambda s: "Qz7" + s)


@given(
    secret=secrets_,
    name=st.sampled_from(["password", "PASSWORD", "sslpassword", "Password", "auth_token"]),
    before=st.sampled_from(["", "sslmode=require&", "connect_timeout=1&"]),
    after=st.sampled_from(["", "&application_name=outreach", "#x"]),
    user=st.sampled_from(["", "rds@", "rds:hunter2xyz@"]),
)
def test_a_password_in_the_query_string_is_redacted(
    secret: str, name: str, before: str, after: str, user: str
) -> None:
    url = f"postgresql://{user}db.uni.example:5432/outreach?{before}{name}={secret}{after}"
    shown = redact(url)
    assert secret not in shown and "hunter2xyz" not in shown, shown
    assert f"{name}=***" in shown and shown.startswith("postgresql://")


@FEW
@given(secret=secrets_)
def test_no_command_prints_a_query_string_password(scratch: Path, secret: str) -> None:
    root = workspace(scratch)
    url = f"postgresql://rds@127.0.0.1:1/outreach?connect_timeout=2&password={secret}"
    for args in (("status",), ("send", CAMPAIGN, "--now", "--transport", "outbox")):
        run = cli(root, *args, env={"OUTREACH_DATABASE_URL": url})
        assert run.code in (1, 2), run
        assert secret not in run.output, run
        assert "password=***" in run.output, run


# ----------------------------------------------------------------------------- password_env

pasted_secrets = st.text(
    string.ascii_letters + string.digits + "!#%&*+-.?@^_~", min_size=4, max_size=32
).map(lambda s: "hQ2!" + s)


@FEW
@given(secret=pasted_secrets, where=st.sampled_from(["transport", "liaison"]))
def test_a_secret_pasted_as_password_env_is_never_echoed(
    scratch: Path, secret: str, where: str
) -> None:
    # a name such as OUTREACH_SMTP_PASSWORD is shown (it says what to export), a secret is not
    root = workspace(scratch)
    if where == "transport":
        edit(
            root / "outreach.yaml",
            "password_env: OUTREACH_SMTP_PASSWORD",
            f"password_env: '{secret}'",
        )
    else:
        edit(
            root / "people" / "liaisons.yaml",
            "  photo: people/photos/aino.jpg\n",
            "  photo: people/photos/aino.jpg\n"
            f"  smtp: {{username: aino, password_env: '{secret}'}}\n",
        )
    for args in (("check",), ("send", CAMPAIGN, "--now", "--transport", "smtp", "--yes")):
        run = cli(root, *args)
        assert secret not in run.output, run
    assert run.code == 2, run
    assert "not shown" in run.stderr and "NAME of an environment variable" in run.stderr, run


def test_a_variable_name_is_still_named_when_it_is_not_set(tmp_path: Path) -> None:
    root = workspace(tmp_path)
    run = cli(root, "send", CAMPAIGN, "--now", "--transport", "smtp", "--yes")
    assert run.code == 2, run
    assert "$OUTREACH_SMTP_PASSWORD is not set" in run.stderr
