"""Clear errors for storage faults (issue 18, item 8).

A full or read-only outbox, a locked, corrupt or read-only SQLite file, an unreachable
PostgreSQL: each ends in an error that names the file or server and says what to do,
exit 1 or 2, never "internal error … report it". A message the outbox could not take
never left: it is not `uncertain`, and a rerun writes it, once.

The full and read-only outboxes are small tmpfs mounts (root only: skipped, saying why,
where mounting is not allowed).
"""

from __future__ import annotations

import contextlib
import email
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from foundation_helpers import Run, cli, copy_example
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from store_helpers import free_port

CAMPAIGN = "newsletter-autumn-2026"
WRITTEN = ("sent", "rehearsed")  # an outbox row whose message was written

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return copy_example(tmp_path / "ws")


def assert_clear_error(run: Run, *needles: str) -> None:
    """Exit 1 or 2, an `error:` line naming what failed, a hint; never an internal error."""
    assert run.code in (1, 2), str(run)
    assert "internal error" not in run.output and "report it" not in run.output, str(run)
    errors = [line for line in run.stderr.splitlines() if line.startswith("error: ")]
    assert len(set(errors)) == 1, str(run)  # (`check` says it of each campaign)
    for needle in needles:
        assert needle in errors[0], (needle, str(run))
    # one line, then its hint: no driver's text running on over more lines
    lines = run.stderr.splitlines()
    after = lines[lines.index(errors[0]) + 1]
    assert after.startswith("    hint: "), str(run)


def ledger(root: Path) -> Counter[str]:
    db = sqlite3.connect(root / "outreach.db")
    try:
        rows = db.execute(
            "select status, count(*) from ledger where campaign_id = ? group by status",
            (CAMPAIGN,),
        ).fetchall()
    finally:
        db.close()
    return Counter(dict(rows))


def outbox_recipients(outbox: Path) -> Counter[str]:
    got: Counter[str] = Counter()
    for sub in ("new", "cur"):
        for f in (outbox / sub).iterdir() if (outbox / sub).is_dir() else ():
            got[str(email.message_from_bytes(f.read_bytes())["To"])] += 1
    return got


# ------------------------------------------------------------------------- the outbox


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "64k", *, read_only: bool = False) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root): {done.stderr.strip()}")
    try:
        if read_only:
            for sub in ("tmp", "new", "cur"):
                (path / sub).mkdir()
            subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_full_outbox_stops_the_run_and_leaves_nothing_uncertain(root: Path) -> None:
    outbox = root / "outbox"
    with tmpfs(outbox, "64k"):
        run = cli(root, "send", CAMPAIGN, "--transport", "outbox", "--now", "--yes")
        assert_clear_error(run, str(outbox), "No space left")
        written = outbox_recipients(outbox)
        assert list((outbox / "tmp").iterdir()) == []  # no half-written file stays
    states = ledger(root)
    assert 0 < len(written) < sum(states.values())
    assert sum(states[s] for s in WRITTEN) == len(written), states
    assert set(states) <= {*WRITTEN, "planned"}, states  # never uncertain: it never left
    # room again (the full disk is gone, with what it held): the rerun writes the rest,
    # each message once, none of those written before
    run = cli(root, "send", CAMPAIGN, "--transport", "outbox", "--now", "--yes")
    assert run.code == 0, str(run)
    again = outbox_recipients(outbox)
    assert set(again.values()) == {1} and not set(again) & set(written)
    assert len(again) + len(written) == sum(states.values())
    assert set(ledger(root)) <= set(WRITTEN)


@pytest.mark.parametrize(
    "shape", ["read-only with its folders", "read-only without", "a file", "a file inside"]
)
def test_an_outbox_that_cannot_be_written_is_named_and_nothing_leaves(
    root: Path, shape: str
) -> None:
    outbox = root / "outbox"
    with contextlib.ExitStack() as stack:
        if shape.startswith("read-only"):
            stack.enter_context(tmpfs(outbox, read_only=shape.endswith("folders")))
            if shape.endswith("without"):
                subprocess.run(["mount", "-o", "remount,ro", str(outbox)], check=True)
        elif shape == "a file":
            outbox.write_text("not a folder\n")
        else:
            (outbox / "tmp").mkdir(parents=True)
            (outbox / "new").write_text("not a folder\n")
        run = cli(root, "send", CAMPAIGN, "--transport", "outbox", "--now", "--yes")
    assert_clear_error(run, str(outbox))
    states = ledger(root)
    assert set(states) == {"planned"}, states  # nothing left, nothing uncertain


# ------------------------------------------------------------------------- SQLite


def _hold(db: Path, how: str) -> subprocess.Popen[str]:
    """Another process holding ``db``: `exclusive` (no reader either) or `write`."""
    script = (
        "import sqlite3, sys, time\n"
        "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
        + ("c.execute('PRAGMA locking_mode=EXCLUSIVE')\n" if how == "exclusive" else "")
        + "c.execute('BEGIN EXCLUSIVE' if sys.argv[2] == 'exclusive' else 'BEGIN IMMEDIATE')\n"
        "c.execute('CREATE TABLE IF NOT EXISTS held (x)')\n"
        "print('held', flush=True)\n"
        "time.sleep(120)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(db), how], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


@pytest.mark.parametrize(
    ("how", "args"),
    [
        ("exclusive", ["status"]),
        ("exclusive", ["track", "ingest", "-"]),
        ("write", ["send", CAMPAIGN, "--transport", "outbox", "--now", "--yes"]),
        ("write", ["log", "meeting", "ahmed.white@uni.example"]),
    ],
)
def test_a_locked_database_is_named_with_what_to_do(
    root: Path, monkeypatch: pytest.MonkeyPatch, how: str, args: list[str]
) -> None:
    # the database made in another process: this one keeps no connection to it open
    made = subprocess.run(
        [sys.executable, "-c", "from outreach.cli import main; main()", "-w", str(root), "status"],
        capture_output=True,
    )
    assert made.returncode == 0, made.stderr
    monkeypatch.setattr("outreach.store.BUSY_TIMEOUT_MS", 300)  # not 30 s in a test
    holder = _hold(root / "outreach.db", how)
    try:
        run = cli(root, *args, input=b"")
    finally:
        holder.kill()
        holder.wait()
    assert_clear_error(run, str(root / "outreach.db"), "locked")
    assert set(ledger(root)) <= {"planned"}  # nothing was sent under the lock


@st.composite
def damaged(draw: st.DrawFn, good: bytes) -> bytes:
    """Garbage, a real database cut short, or a real database with bytes overwritten."""
    kind = draw(st.sampled_from(["garbage", "cut", "overwritten", "header"]))
    if kind == "garbage":
        return draw(st.binary(min_size=1, max_size=4096))
    if kind == "cut":
        return good[: draw(st.integers(1, len(good) - 1))]
    if kind == "header":
        return b"SQLite format 3\x00" + draw(st.binary(min_size=1, max_size=2048))
    at = draw(st.integers(0, len(good) - 64))
    return good[:at] + draw(st.binary(min_size=64, max_size=64)) + good[at + 64 :]


_GOOD_DB: list[bytes] = []


def _good_db(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    if not _GOOD_DB:
        root = copy_example(tmp_path_factory.mktemp("good-db") / "ws")
        assert cli(root, "send", CAMPAIGN, "--dry-run").code == 0
        assert cli(root, "status").code == 0
        con = sqlite3.connect(root / "outreach.db")
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        con.close()
        _GOOD_DB.append((root / "outreach.db").read_bytes())
    return _GOOD_DB[0]


@settings(max_examples=8, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_damaged_database_is_named_never_an_internal_error(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    root = copy_example(tmp_path_factory.mktemp("damaged") / "ws")
    db = root / "outreach.db"
    db.write_bytes(data.draw(damaged(_good_db(tmp_path_factory))))
    for args in (["status"], ["send", CAMPAIGN, "--transport", "outbox", "--now", "--yes"]):
        run = cli(root, *args)
        assert "internal error" not in run.output, str(run)
        if run.code != 0:  # some damage SQLite never reads, or repairs (a cut-off WAL)
            assert_clear_error(run, str(db))


def test_garbage_for_a_database_is_called_damaged(root: Path) -> None:
    (root / "outreach.db").write_bytes(b"\x00\xffnot a database at all\n" * 200)
    for args in (["status"], ["report"], ["track", "ingest", "-"], ["send", CAMPAIGN]):
        run = cli(root, *args, input=b"")
        assert_clear_error(run, str(root / "outreach.db"), "damaged")
        assert "restore it from a backup" in run.stderr


def test_a_read_only_database_is_named(root: Path) -> None:
    assert cli(root, "status").code == 0
    folder = root / "db"
    with tmpfs(folder, "4m"):
        (folder / "outreach.db").write_bytes((root / "outreach.db").read_bytes())
        settings_file = root / "outreach.yaml"
        cfg = yaml.safe_load(settings_file.read_text(encoding="utf-8"))
        cfg["database"] = f"sqlite:///{folder / 'outreach.db'}"
        settings_file.write_text(yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
        run = cli(root, "send", CAMPAIGN, "--transport", "outbox", "--now", "--yes")
    assert_clear_error(run, str(folder / "outreach.db"))


# ------------------------------------------------------------------------- PostgreSQL


@pytest.mark.parametrize(
    "args",
    [
        ["status"],
        ["check"],
        ["send", CAMPAIGN, "--now", "--yes"],
        ["send", CAMPAIGN, "--workers", "2", "--now", "--yes"],
        ["track", "ingest", "-"],
        ["report"],
    ],
    ids=lambda a: " ".join(a[:3]),
)
def test_an_unreachable_postgresql_is_named_with_what_to_do(root: Path, args: list[str]) -> None:
    url = f"postgresql://outreach:s3cret-pw@127.0.0.1:{free_port()}/outreach"
    run = cli(root, *args, input=b"", env={"OUTREACH_DATABASE_URL": url})
    assert_clear_error(run, "127.0.0.1", "cannot reach")
    assert "s3cret-pw" not in run.output
