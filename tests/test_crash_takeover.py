"""A crash is over when the process is gone (issue 17, item 5).

A lock, lease, claim or quota booking names its holder (host, pid, process start time,
boot and pid namespace: ``outreach.deliver.holders``). A holder on this host whose process
no longer exists, or whose pid now belongs to a process that started at another time, is
taken over at once; a live holder, or one on another host, keeps its lease and the
refusal says who holds it, where and until when. Real processes (killed with SIGKILL) on
SQLite and PostgreSQL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from store_helpers import make_ws

from outreach.deliver.holders import (
    describe,
    holder_name,
    is_gone,
    lapse_gone_holders,
    machine_id,
    parse_holder,
    process_start,
)
from outreach.deliver.ledger import Ledger
from outreach.deliver.rows import PlannedRow
from outreach.errors import CampaignLocked
from outreach.store import open_store
from outreach.workspace.loader import load_workspace
from outreach.workspace.settings import Pace

linux = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
pytestmark = [linux, pytest.mark.timeout(60)]

NAME_OF_CHILD = "from outreach.deliver.holders import holder_name; print(holder_name(), flush=True)"


@pytest.fixture
def ledger(tmp_path: Path, store_url: str | None) -> Iterator[Ledger]:
    root = make_ws(tmp_path / "ws", store_url)
    led = Ledger(open_store(load_workspace(explicit=root).database_url()))
    yield led
    led.store.close()


def child() -> tuple[subprocess.Popen[str], str]:
    """A live process and the holder name it gave itself."""
    proc = subprocess.Popen(
        [sys.executable, "-c", NAME_OF_CHILD + "; import time; time.sleep(60)"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def dead_name() -> str:
    """The name of a process that ran here and was killed with SIGKILL (and reaped)."""
    proc, name = child()
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    return name


def with_part(name: str, index: int, value: str) -> str:
    parts = name.split(":")
    parts[index] = value
    return ":".join(parts)


def lock_for(ledger: Ledger, owner: str, cid: str = "c1") -> None:
    ledger.leases.acquire_lock(cid, owner, 120)


def take(ledger: Ledger, cid: str = "c1") -> str:
    """A new run's start: lapse the gone holders, then take the lock (or be refused)."""
    lapse_gone_holders(ledger.store, cid)
    me = holder_name()
    ledger.leases.acquire_lock(cid, me, 120)
    return me


# ---------------------------------------------------------------------------- the name


def test_a_holder_name_says_host_pid_and_start_time_of_this_process() -> None:
    holder = parse_holder(holder_name("w1"))
    assert holder is not None
    assert holder.pid == os.getpid()
    assert holder.start == process_start(os.getpid()) and holder.start > 0
    assert holder.machine == machine_id() != ""
    assert holder.here() and not holder.gone()
    assert describe(holder_name()) == f"pid {os.getpid()} on this host"
    # names an older version wrote (host:pid:random) are not judged at all
    assert parse_holder("vm:123:abcdef12") is None and not is_gone("vm:123:abcdef12")


def test_a_zombie_is_gone_before_it_is_reaped() -> None:
    proc, name = child()
    assert not is_gone(name)
    os.kill(proc.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while process_start(proc.pid) is not None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert is_gone(name)  # still a zombie: Popen has not waited for it
    proc.wait(timeout=5)
    assert is_gone(name)


# ---------------------------------------------------------------------------- the rule


def test_a_dead_pid_on_this_host_is_taken_over_at_once(ledger: Ledger) -> None:
    dead = dead_name()
    lock_for(ledger, dead)
    started = time.monotonic()
    me = take(ledger)
    assert time.monotonic() - started < 2
    ledger.leases.release_lock("c1", me)


def test_a_live_pid_is_respected_and_the_refusal_says_who_where_and_until_when(
    ledger: Ledger,
) -> None:
    proc, name = child()
    try:
        lock_for(ledger, name)
        with pytest.raises(CampaignLocked) as refused:
            take(ledger)
        message = refused.value.message
        assert f"pid {proc.pid} on this host" in message, message
        assert "lock held until" in message and "UTC" in message
        assert f"kill {proc.pid}" in (refused.value.hint or "")
    finally:
        proc.kill()
        proc.wait()
    take(ledger)  # and once it is gone, at once


def test_another_host_is_respected_even_when_its_pid_is_free_here(ledger: Ledger) -> None:
    dead = dead_name()
    for elsewhere in (
        with_part(dead, 0, "other-host"),  # another machine
        with_part(dead, 3, "0123456789abcdef.4026531999"),  # this name, another kernel/ns
    ):
        lock_for(ledger, elsewhere, "c2")
        with pytest.raises(CampaignLocked) as refused:
            take(ledger, "c2")
        if elsewhere.startswith("other-host"):
            assert "on host other-host" in refused.value.message
            assert "lapses by" in (refused.value.hint or "")
        ledger.leases.release_lock("c2", elsewhere)


def test_a_reused_pid_is_not_mistaken_for_the_holder(ledger: Ledger) -> None:
    proc, name = child()
    try:
        # the holder's pid, but the process there started at another time: the pid was
        # reused, the holder is gone
        earlier = with_part(name, 2, str(int(name.split(":")[2]) - 1))
        assert is_gone(earlier) and not is_gone(name)
        lock_for(ledger, earlier)
        take(ledger)
    finally:
        proc.kill()
        proc.wait()


def test_a_dead_team_workers_claims_and_booking_lapse_at_once(ledger: Ledger) -> None:
    """A team: the dead worker's lease and its claimed rows end now; a live worker's
    stay."""
    proc, live = child()
    dead = dead_name()
    try:
        rows = [
            PlannedRow(f"r{i}@uni.example", "lars", "lars", "face", "en", "F", "D")
            for i in range(6)
        ]
        ledger.rows.add_missing("c3", rows)
        for worker in (dead, live):
            ledger.leases.join_team("c3", worker, 120)
        mine = ledger.rows.claim("c3", dead, 3, lease_seconds=120)
        theirs = ledger.rows.claim("c3", live, 3, lease_seconds=120)
        assert len(mine) == len(theirs) == 3
        fast = Pace(1_000_000, 1_000_000)
        assert ledger.quota.book("lars", [mine[0].id], dead, fast).slots
        # a dead worker's slots hold nobody up: slots are a rate, not a queue
        assert ledger.quota.book("lars", [theirs[0].id], live, fast).slots

        assert lapse_gone_holders(ledger.store, "c3") == [dead]
        back, lost = ledger.rows.recover("c3", expired_only=True)
        assert (back, lost) == (3, 0)  # the dead worker's, not the live one's
        assert [w["worker"] for w in ledger.leases.workers("c3")] == [live]
        again = ledger.rows.claim("c3", live, 10, lease_seconds=120)
        assert {w.id for w in again} == {w.id for w in mine}
        # its rows, slot and all, are the live worker's to book and send
        assert len(ledger.quota.book("lars", [w.id for w in again], live, fast).slots) == 3
    finally:
        proc.kill()
        proc.wait()
