"""Workers die with their parent (issue 18, item 7).

``send --workers N`` forks N workers. Killed with SIGKILL (or SIGTERM), its workers must
not go on as orphans: they end within a few seconds, and the ledger stays exactly-once:
a rerun sends what was not sent, nothing twice (a message on the wire when its worker
died is `uncertain`, as for any worker that dies).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from foundation_helpers import cli
from servers.smtp import SMTPTestServer
from store_helpers import add_campaign, audience, make_ws, received, smtp_settings

from outreach.deliver.ledger import Ledger
from outreach.store import open_store
from outreach.workspace.loader import load_workspace

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc"),
]

REPO = Path(__file__).resolve().parent.parent
SECRET = "worker-lifetime-secret"
CLI = [sys.executable, "-c", "import sys; from outreach.cli import main; sys.exit(main())"]
STATES = ("planned", "claimed", "sending", "sent", "deferred", "failed", "uncertain", "skipped")


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()  # state, ppid, …


def alive(pid: int) -> bool:
    """Running (a zombie has ended: it only waits for whoever adopted it to reap it)."""
    fields = _stat(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def workers_of(parent: int) -> list[int]:
    """The forked children of ``parent``: the same command line as the parent's."""
    try:
        cmdline = Path(f"/proc/{parent}/cmdline").read_bytes()
    except OSError:
        return []
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat(int(entry.name))
        if fields is None or fields[1] != str(parent):
            continue
        try:
            if (entry / "cmdline").read_bytes() == cmdline:
                out.append(int(entry.name))
        except OSError:
            continue
    return sorted(out)


def statuses(root: Path, cid: str) -> dict[str, str]:
    led = Ledger(open_store(load_workspace(explicit=root).database_url()))
    try:
        return {r["email"]: r["status"] for r in led.rows.with_status(cid, STATES)}
    finally:
        led.store.close()


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "kill"])
def test_workers_end_with_their_parent_and_a_rerun_sends_the_rest_once(
    tmp_path: Path, smtp_server: SMTPTestServer, monkeypatch: pytest.MonkeyPatch, sig: int
) -> None:
    monkeypatch.setenv("OUTREACH_SECRET", SECRET)
    root = make_ws(tmp_path / "ws", transport=smtp_settings(smtp_server, connections=1))
    cid = add_campaign(root, "lifetime", include={"faculty": ["Pharmacy", "Science"]})
    expected = audience(root, cid)
    smtp_server.slow(0.15)  # a message takes about a second: the run is far from done
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    parent = subprocess.Popen(
        [*CLI, "-w", str(root), "send", cid, "--workers", "2", "--yes"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        smtp_server.wait_for(2, timeout=60)
        workers = workers_of(parent.pid)
        assert len(workers) == 2, workers
        parent.send_signal(sig)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 5
        while any(alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        orphans = [w for w in workers if alive(w)]
        assert not orphans, f"workers still running after their parent was killed: {orphans}"
    finally:
        if parent.poll() is None:
            parent.kill()
        for w in workers_of(parent.pid):
            os.kill(w, signal.SIGKILL)
    sent_before = len(smtp_server.messages)
    assert sent_before < len(expected)  # the workers stopped, not finished

    # A rerun sends exactly what was not sent, at once: the dead team's processes are
    # gone, so their leases (two minutes by default) are over (outreach.deliver.holders).
    smtp_server.slow(0)
    rerun = time.monotonic()
    again = cli(root, "send", cid, "--workers", "2", "--yes")
    assert time.monotonic() - rerun < 60, "the rerun waited for the dead team's leases"
    assert again.code in (0, 1), str(again)
    status = statuses(root, cid)
    assert set(status) == set(expected)
    assert set(status.values()) <= {"sent", "uncertain"}, Counter(status.values())
    assert sum(1 for s in status.values() if s == "uncertain") <= 2  # one on the wire a worker
    got = received(smtp_server)
    for email, state in status.items():
        assert got[email] == 1 if state == "sent" else got[email] <= 1, (email, state)
