"""Team scale (issue 7): several senders, ingests and liaisons on one store, at once.

Real processes, a real SMTP server (aiosmtpd, ``tests/servers/smtp.py``), real SQLite and
PostgreSQL on 127.0.0.1:5432 (a fresh schema per test; the PostgreSQL cases skip, saying
why, where no server answers). Nothing is mocked: the ledger is checked against what the
server received, and every quota against the times the server recorded.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from foundation_helpers import cli
from servers.smtp import SMTPTestServer
from store_helpers import LATE, add_campaign, audience, make_ws, received, smtp_settings
from track_helpers import Sent, dsn, reply, write_maildir

from outreach.deliver.ledger import Ledger
from outreach.deliver.quota import DAY, MINUTE, SLOT_GRACE, SlotLost
from outreach.deliver.rows import PlannedRow
from outreach.errors import CampaignLocked
from outreach.store import HEAD_REVISION, _alembic_config, open_store
from outreach.workspace.loader import load_workspace
from outreach.workspace.settings import Pace

REPO = Path(__file__).resolve().parent.parent
SECRET = "team-tests-secret"
NEWSLETTER = "newsletter-autumn-2026"  # sender: liaison, 247 recipients, 5 senders
THREE_LIAISONS = {"faculty": ["Pharmacy", "Science"]}  # lars 39, pekka 52, helena 11
STATES = ("planned", "claimed", "sending", "sent", "deferred", "failed", "uncertain", "skipped")
CLI = [sys.executable, "-c", "import sys; from outreach.cli import main; sys.exit(main())"]

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(autouse=True)
def _token_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTREACH_SECRET", SECRET)


# ---------------------------------------------------------------------------- helpers


def spawn(root: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    full = {**os.environ, "OUTREACH_SECRET": SECRET, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.Popen(
        [*CLI, "-w", str(root), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=full,
    )


def finish(procs: list[subprocess.Popen[str]], timeout: float = 120) -> list[tuple[int, str]]:
    out = []
    for proc in procs:
        try:
            o, e = proc.communicate(timeout=timeout)
        finally:
            if proc.poll() is None:
                proc.kill()
        out.append((proc.returncode, o + e))
    return out


def ledger_of(root: Path) -> Ledger:
    return Ledger(open_store(load_workspace(explicit=root).database_url()))


def rows(root: Path, campaign: str) -> list[dict[str, Any]]:
    led = ledger_of(root)
    try:
        return led.rows.with_status(campaign, STATES)
    finally:
        led.store.close()


def counts(root: Path, campaign: str) -> Counter[str]:
    return +Counter(r["status"] for r in rows(root, campaign))


def paced_campaign(
    tmp_path: Path,
    smtp_server: SMTPTestServer,
    store_url: str | None,
    cid: str,
    per_minute: int,
    **transport: Any,
) -> tuple[Path, str, list[str]]:
    """A workspace sending through the test SMTP server at ``per_minute`` per mailbox, and
    campaign ``cid`` to the three liaisons' researchers: (root, cid, audience)."""
    root = make_ws(
        tmp_path / "ws",
        store_url,
        transport=smtp_settings(smtp_server, **transport),
        limits={"per_sender_per_minute": per_minute, "per_sender_per_day": 10_000},
    )
    add_campaign(root, cid, include=THREE_LIAISONS)
    return root, cid, audience(root, cid)


def over_quota(times: list[float], quota: int, window: float) -> int:
    """Sends that make some half-open window [t, t + window) hold more than ``quota``."""
    ts = sorted(times)
    return sum(1 for i in range(len(ts) - quota) if ts[i + quota] - ts[i] < window - 1e-6)


def per_sender_times(server: SMTPTestServer) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for m in server.messages:
        out.setdefault(m.mail_from, []).append(m.monotonic)
    return out


def assert_within_quota(server: SMTPTestServer, per_minute: int) -> None:
    """Every 60 s window within the quota; and, because a short test cannot fill a real
    minute, the same pace at a tenth of the scale: no 10 slots' worth of time (6 s at
    60/min) holds more than the 10 sends a quota-keeping sender may make then, plus the
    one the window's edge can catch, one for the catch-up the pacing allows, and those a
    LATE message lets follow closer on a loaded machine. Unpaced, three senders would put
    the whole campaign there."""
    spacing = MINUTE / per_minute
    for sender, times in per_sender_times(server).items():
        assert over_quota(times, per_minute, MINUTE) == 0, sender
        paced = 12 + int(LATE / spacing)
        assert over_quota(times, paced, 10 * spacing) == 0, (sender, sorted(times))


# ---------------------------------------------------------------------------- senders


def test_three_sender_processes_deliver_each_message_once_within_every_quota(
    tmp_path: Path, smtp_server: SMTPTestServer, store_url: str | None
) -> None:
    per_minute = 300  # one message every 0.2 s per mailbox: pekka's 52 take ~10 s
    root, cid, expected = paced_campaign(tmp_path, smtp_server, store_url, "team-quota", per_minute)
    assert len(expected) == 102
    # Small claims (10 rows of a sender at a time), so all three share every mailbox.
    procs = [spawn(root, "send", cid, "--worker", "--batch", "3", "--yes") for _ in range(3)]
    results = finish(procs)

    for code, output in results:
        assert code == 0, output
        assert "Traceback" not in output
    assert received(smtp_server) == Counter(expected)  # every message, exactly once
    assert counts(root, cid) == Counter(sent=len(expected))
    assert_within_quota(smtp_server, per_minute)
    # the three really shared the work (each sent some), and one mailbox's slots were
    # booked by several processes in turn: numbered once each, in the order of their times
    sent_by = [int(re.search(r"sent (\d+),", out).group(1)) for _, out in results]  # type: ignore[union-attr]
    assert sum(sent_by) == len(expected) and min(sent_by) > 0, sent_by
    ledger_rows = rows(root, cid)
    for sender in ("lars", "pekka", "helena"):
        slots = sorted(
            (r["slot_seq"], r["slot_at"]) for r in ledger_rows if r["sender_id"] == sender
        )
        seqs = [n for n, _ in slots]
        assert len(set(seqs)) == len(seqs) and None not in seqs, (sender, seqs)
        times = [t for _, t in slots]
        assert times == sorted(times), sender


def test_a_worker_killed_mid_run_leaves_its_share_to_the_others_after_its_lease(
    tmp_path: Path, smtp_server: SMTPTestServer, store_url: str | None
) -> None:
    per_minute = 600  # 0.1 s per mailbox: pekka's 52 take ~5 s
    lease = 2.0
    root, cid, expected = paced_campaign(
        tmp_path, smtp_server, store_url, "team-crash", per_minute, lease_seconds=lease
    )
    procs = [spawn(root, "send", cid, "--worker", "--batch", "3", "--yes") for _ in range(3)]
    try:
        smtp_server.wait_for(25, timeout=60)
        # The victim: the worker holding the most rows right now.
        held = Counter(
            r["claimed_by"] for r in rows(root, cid) if r["status"] in ("claimed", "sending")
        )
        pids = {p.pid: p for p in procs}
        victim_name, _ = held.most_common(1)[0]
        victim_pid = int(victim_name.split(":")[1])
        victim = pids[victim_pid]
        victim.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        its_rows = {
            r["email"]: r["status"] for r in rows(root, cid) if r["claimed_by"] == victim_name
        }
    finally:
        results = finish(procs)
    assert victim.returncode == -signal.SIGKILL
    survivors = [out for p, (code, out) in zip(procs, results, strict=True) if p is not victim]
    assert its_rows and "claimed" in its_rows.values(), its_rows

    status = {r["email"]: r["status"] for r in rows(root, cid)}
    assert set(status) == set(expected)
    # no gap: nothing left planned, claimed or deferred; only the victim's messages on the
    # wire are uncertain, at most one per connection (smtp_settings: 2, each another mailbox)
    assert set(status.values()) <= {"sent", "uncertain"}, Counter(status.values())
    uncertain = {email for email, s in status.items() if s == "uncertain"}
    assert len(uncertain) <= smtp_settings()["connections"], uncertain
    assert all(its_rows.get(email) in ("claimed", "sending") for email in uncertain), its_rows
    got = received(smtp_server)
    for email, state in status.items():
        assert got[email] == 1 if state == "sent" else got[email] <= 1, (email, state)
    # the victim's queued rows were sent by the others, after its lease ran out
    for email, state in its_rows.items():
        if state == "claimed":
            assert status[email] == "sent"
            (msg,) = [m for m in smtp_server.messages if m.rcpt_tos[0] == email]
            assert msg.monotonic >= killed_at + lease * 0.5, email
    uncertain = [e for e, s in status.items() if s == "uncertain"]
    for output in survivors:
        assert "Traceback" not in output
    if uncertain:
        assert any("uncertain" in out for out in survivors)
    assert_within_quota(smtp_server, per_minute)


def test_workers_n_forks_n_senders_that_deliver_each_message_once(
    tmp_path: Path, smtp_server: SMTPTestServer, store_url: str | None
) -> None:
    root = make_ws(tmp_path / "ws", store_url, transport=smtp_settings(smtp_server))
    cid = add_campaign(root, "workers", include=THREE_LIAISONS)
    expected = audience(root, cid)
    ((code, output),) = finish([spawn(root, "send", cid, "--workers", "3", "--yes")])
    assert code == 0, output
    assert f"{cid}: sent {len(expected)}, deferred 0, failed 0, uncertain 0" in output
    assert received(smtp_server) == Counter(expected)
    ledger_rows = rows(root, cid)
    assert Counter(r["status"] for r in ledger_rows) == Counter(sent=len(expected))
    # the forked workers sent it (each its own SMTP sessions), and the team has left
    assert smtp_server.connections >= 2
    led = ledger_of(root)
    try:
        assert led.leases.workers(cid) == []
    finally:
        led.store.close()
    again = cli(root, "send", cid, "--workers", "2")
    assert again.code == 0, again.output
    assert f"{cid}: sent 0," in again.output
    assert received(smtp_server) == Counter(expected)


def test_workers_with_a_limit_share_it_and_the_outbox_gets_each_message_once(
    tmp_path: Path, store_url: str | None
) -> None:
    root = make_ws(tmp_path / "ws", store_url)
    ((code, output),) = finish([spawn(root, "send", NEWSLETTER, "--workers", "2", "--limit", "7")])
    assert code == 0, output
    assert counts(root, NEWSLETTER) == Counter(sent=7, planned=240)
    ((code, output),) = finish([spawn(root, "send", NEWSLETTER, "--workers", "2")])
    assert code == 0, output
    box = root / "outbox"
    to = Counter(
        re.search(rb"X-Envelope-To: (.*?)\r\n", p.read_bytes()).group(1).decode()  # type: ignore[union-attr]
        for sub in ("new", "cur")
        for p in (box / sub).glob("*")
    )
    assert to == Counter(audience(root, NEWSLETTER))
    assert counts(root, NEWSLETTER) == Counter(sent=247)


def _open_outbox(path: str, start: Any) -> None:
    import asyncio

    from outreach.deliver.transports import OutboxTransport

    start.wait()
    asyncio.run(OutboxTransport(Path(path)).open())


def test_team_workers_opening_a_new_outbox_at_once_all_succeed(tmp_path: Path) -> None:
    """Forked workers open the same outbox, not yet made, at the same moment: none may fail
    with "File exists" (seen once in the suite: `--workers 2 --limit 7` on a fresh
    workspace)."""
    ctx = multiprocessing.get_context("fork")
    for round_ in range(15):
        box = tmp_path / f"round{round_}" / "outbox"
        start = ctx.Barrier(4)
        procs = [ctx.Process(target=_open_outbox, args=(str(box), start)) for _ in range(4)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(30)
        assert [p.exitcode for p in procs] == [0, 0, 0, 0], f"round {round_}"
        assert all((box / sub).is_dir() for sub in ("tmp", "new", "cur"))


def test_plain_send_and_team_exclude_each_other(
    tmp_path: Path, smtp_server: SMTPTestServer, store_url: str | None
) -> None:
    smtp_server.slow(0.2)
    root = make_ws(tmp_path / "ws", store_url, transport=smtp_settings(smtp_server))
    cid = add_campaign(root, "exclusive", include=THREE_LIAISONS)
    solo = spawn(root, "send", cid, "--yes")
    try:
        smtp_server.wait_for(1, timeout=30)
        refused = cli(root, "send", cid, "--worker", "--yes")
        assert refused.code == 1, refused.output
        assert "is being sent by" in refused.output and "Traceback" not in refused.output
        solo.send_signal(signal.SIGTERM)
    finally:
        finish([solo])
    # the interrupted solo run's lease is still there: a team may not start under it
    led = ledger_of(root)
    try:
        led.leases.release_lock(cid, next(iter(_lock_owners(led))))  # as if it had expired
        led.leases.join_team(cid, "w-a", ttl=30)
        with pytest.raises(CampaignLocked, match="a team of 1 worker"):
            led.leases.acquire_lock(cid, "solo-b", ttl=30)
        shown = cli(root, "status")
        assert f"{cid}: being sent by 1 worker(s) now" in shown.output
        led.leases.join_team(cid, "w-b", ttl=30)  # a second worker is welcome
        led.leases.leave_team(cid, "w-a")
        with pytest.raises(CampaignLocked, match="a team of 1 worker"):
            led.leases.acquire_lock(cid, "solo-b", ttl=30)
        led.leases.leave_team(cid, "w-b")  # the last one out ends the team's lease
        led.leases.acquire_lock(cid, "solo-b", ttl=30)
        led.leases.release_lock(cid, "solo-b")
    finally:
        led.store.close()


def _lock_owners(led: Ledger) -> list[str]:
    from sqlalchemy import select

    from outreach.store.schema import campaign_locks

    with led.engine.connect() as conn:
        return [r.owner for r in conn.execute(select(campaign_locks))]


def test_an_expired_team_lease_lets_a_solo_run_recover_and_finish(
    tmp_path: Path, store_url: str | None
) -> None:
    root = make_ws(tmp_path / "ws", store_url)
    cid = add_campaign(root, "expired-team", include=THREE_LIAISONS)
    assert cli(root, "send", cid, "--limit", "1").code == 0  # plans the ledger
    led = ledger_of(root)
    try:
        led.leases.join_team(cid, "dead-worker", ttl=0.5)
        grabbed = led.rows.claim(cid, "dead-worker", 20, lease_seconds=0.5)
        assert len(grabbed) == 20
        refused = cli(root, "send", cid)
        assert refused.code == 1 and "a team of 1 worker" in refused.output
        time.sleep(0.7)
    finally:
        led.store.close()
    done = cli(root, "send", cid)
    assert done.code == 0, done.output
    assert counts(root, cid) == Counter(sent=len(audience(root, cid)))


def test_a_worker_arriving_while_a_dead_worker_holds_every_row_waits_and_sends_them(
    tmp_path: Path, store_url: str | None
) -> None:
    root = make_ws(tmp_path / "ws", store_url)
    cid = add_campaign(root, "all-held", include=THREE_LIAISONS)
    expected = audience(root, cid)
    assert cli(root, "send", cid, "--limit", "1").code == 0  # plans the ledger
    led = ledger_of(root)
    try:
        led.leases.join_team(cid, "dead-worker", ttl=1.5)
        for sender in ("lars", "pekka", "helena"):
            led.rows.claim(cid, "dead-worker", 1000, lease_seconds=1.5, sender_id=sender)
        assert counts(root, cid) == Counter(sent=1, claimed=len(expected) - 1)
    finally:
        led.store.close()
    started = time.monotonic()
    result = cli(root, "send", cid, "--worker")
    assert result.code == 0, result.output
    assert time.monotonic() - started >= 1.0  # it waited for the dead worker's lease
    assert f"{cid}: sent {len(expected) - 1}," in result.output
    assert counts(root, cid) == Counter(sent=len(expected))


# ---------------------------------------------------------------------------- quotas


def _planned(led: Ledger, cid: str, n: int, sender: str = "aino") -> None:
    led.rows.add_missing(
        cid, [PlannedRow(f"r{i}@uni.example", sender, sender, "liaison", "en") for i in range(n)]
    )


def test_quota_slots_on_a_virtual_clock_keep_every_minute_and_day_window(
    store_url: str | None, tmp_path: Path
) -> None:
    """The store's booking, over three virtual days: several slots booked ahead, random
    delays between a slot's time and DATA (some past its grace), slots given back, other
    campaigns of the same mailbox; no window overfull."""
    import random

    url = store_url or f"sqlite:///{tmp_path / 'quota.db'}"
    led = Ledger(open_store(url))
    pace = Pace(10, 25)
    rng = random.Random(7)
    try:
        for cid in ("a", "b"):
            _planned(led, cid, 60)
        work = led.rows.claim("a", "w", 60) + led.rows.claim("b", "w", 60)
        rng.shuffle(work)
        t = datetime(2026, 1, 1, tzinfo=UTC)
        wire: list[float] = []
        granted: list[float] = []
        lapsed = 0
        end = t + timedelta(days=3)
        while work and t < end:
            booking = led.quota.book("aino", [w.id for w in work[-3:]], "w", pace, now=t)
            assert not booking.lost
            if not booking.slots:
                assert booking.retry_at is not None and booking.retry_at > t
                t = booking.retry_at
                continue
            for row_id, at in booking.slots:
                granted.append(at.timestamp())
                t = max(t, at) + timedelta(seconds=rng.choice([0.0, 0.1, 0.5, 1.5]))
                if rng.random() < 0.15:  # refused at RCPT: the slot is given back
                    led.quota.unbook("aino", [row_id])
                    continue
                try:
                    assert led.rows.mark_sending(row_id, f"<{row_id}@x>", "w", slotted=True, now=t)
                except SlotLost:  # past its grace: nothing went out, a new slot is needed
                    assert t - at >= timedelta(seconds=SLOT_GRACE)
                    lapsed += 1
                    led.quota.unbook("aino", [row_id])
                    continue
                assert t - at < timedelta(seconds=SLOT_GRACE)
                wire.append(t.timestamp())
                work = [w for w in work if w.id != row_id]
            t += timedelta(seconds=rng.choice([0.0, 1.0, 30.0]))
        assert lapsed > 0
        assert len(wire) >= 3 * pace.per_day - 1  # type: ignore[operator]
        assert over_quota(wire, 10, MINUTE) == 0
        assert over_quota(wire, 25, DAY) == 0
        # Slots are handed out at the even pace.
        gaps = [b - a for a, b in zip(granted, granted[1:], strict=False)]
        assert min(gaps) >= MINUTE / 10 - 1e-6
    finally:
        led.store.close()


def test_a_lapsed_slot_cannot_go_on_the_wire_and_holds_nobody_up(
    store_url: str | None, tmp_path: Path
) -> None:
    url = store_url or f"sqlite:///{tmp_path / 'lapse.db'}"
    led = Ledger(open_store(url))
    try:
        _planned(led, "c", 8)
        slow = led.rows.claim("c", "slow", 4)
        fast = led.rows.claim("c", "fast", 4)
        t = datetime(2026, 1, 1, tzinfo=UTC)
        pace = Pace(600, 1000)  # a slot every 0.1 s
        first = led.quota.book("aino", [w.id for w in slow], "slow", pace, now=t)
        assert [at for _, at in first.slots] == [t + timedelta(seconds=0.1 * i) for i in range(4)]
        # Several messages of one mailbox in flight at once: the other worker's slots follow.
        second = led.quota.book("aino", [w.id for w in fast], "fast", pace, now=t)
        assert [at for _, at in second.slots] == [
            t + timedelta(seconds=0.1 * i) for i in range(4, 6)
        ]  # no further ahead than the horizon
        assert second.retry_at == t + timedelta(seconds=0.6 - 0.5)
        # The slow worker stalled (or died) past its slots' grace: they cannot be used.
        later = t + timedelta(seconds=SLOT_GRACE + 0.3)
        with pytest.raises(SlotLost):
            led.rows.mark_sending(slow[0].id, "<1@x>", "slow", slotted=True, now=later)
        # Not before its time either; within it, it goes.
        with pytest.raises(SlotLost):
            led.rows.mark_sending(fast[1].id, "<3@x>", "fast", slotted=True, now=t)
        ok = t + timedelta(seconds=0.45)
        assert led.rows.mark_sending(fast[0].id, "<2@x>", "fast", slotted=True, now=ok)
        # Another worker's row cannot be marked with a slot it did not book.
        assert not led.rows.mark_sending(slow[1].id, "<4@x>", "fast", slotted=True, now=ok)
    finally:
        led.store.close()


def _hammer(url: str, worker: str, per_minute: int, per_day: int, start: Any) -> None:
    """Book slots ahead and mark them until the day's quota is used up (the next slot a
    day away), as a send loop does: several of one mailbox in flight."""
    led = Ledger(open_store(url))
    pace = Pace(per_minute, per_day)
    try:
        start.wait(60)  # all processes up (spawning one takes seconds on a loaded machine)
        work = [w.id for w in led.rows.claim("hammer", worker, 100)]
        stop = time.monotonic() + 45  # a safety net only
        while work and time.monotonic() < stop:
            booking = led.quota.book("aino", work[:4], worker, pace)
            for row_id, at in booking.slots:
                time.sleep(max(0.0, (at - datetime.now(UTC)).total_seconds()))
                try:
                    led.rows.mark_sending(row_id, f"<{worker}>", worker, slotted=True)
                except SlotLost:  # a stall on a loaded machine: a new slot is needed
                    led.quota.unbook("aino", [row_id])
                    continue
                work.remove(row_id)
            if booking.retry_at is not None:
                wait = (booking.retry_at - datetime.now(UTC)).total_seconds()
                if wait > MINUTE:
                    return
                time.sleep(min(0.2, max(0.0, wait)))
    finally:
        led.store.close()


def test_quota_holds_across_processes_booking_the_same_mailbox(
    store_url: str | None, tmp_path: Path
) -> None:
    url = store_url or f"sqlite:///{tmp_path / 'hammer.db'}"
    per_minute, per_day = 1200, 40  # a slot every 50 ms; the day's 40 within ~2 s
    led = Ledger(open_store(url))
    try:
        _planned(led, "hammer", 150)
    finally:
        led.store.close()
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(3)
    procs = [
        ctx.Process(target=_hammer, args=(url, f"p{i}", per_minute, per_day, start))
        for i in range(3)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    led = Ledger(open_store(url))
    try:
        sent = led.rows.with_status("hammer", ["sending"])
    finally:
        led.store.close()
    assert len(sent) == per_day  # the day's quota, used exactly, by three processes
    assert len({r["claimed_by"] for r in sent}) >= 2
    # The `sending` marks' times (updated_at) are when each went on the wire: paced
    # together, no ten slots' worth of time holds more than the ten sends of one paced
    # mailbox (plus the edge, and those a slot's grace lets follow closer); three
    # processes pacing alone would put ~30 there.
    spacing = MINUTE / per_minute
    wire = sorted(r["updated_at"].timestamp() for r in sent)
    assert over_quota(wire, 11 + int(SLOT_GRACE / spacing), 10 * spacing) == 0, wire
    slots = sorted(r["slot_at"].timestamp() for r in sent)
    assert over_quota(slots, 11, 10 * spacing) == 0, slots


# ---------------------------------------------------------------------------- ingest, log


def _sent(root: Path, campaign: str) -> list[Sent]:
    ws = load_workspace(explicit=root)
    liaisons = ws.directory.liaisons
    out = []
    for r in rows(root, campaign):
        assert r["status"] == "sent"
        out.append(
            Sent(
                email=r["email"],
                campaign_id=campaign,
                message_id=r["message_id"],
                liaison=liaisons[r["liaison_id"]].email,
                subject="news",
                sent_at=r["sent_at"] if r["sent_at"].tzinfo else r["sent_at"].replace(tzinfo=UTC),
                faculty=r["faculty"] or "",
                list_unsubscribe="",
            )
        )
    return out


def test_concurrent_ingests_of_overlapping_mailboxes_count_each_message_once(
    tmp_path: Path, store_url: str | None
) -> None:
    root = make_ws(tmp_path / "ws", store_url)
    assert cli(root, "send", NEWSLETTER).code == 0
    sent = _sent(root, NEWSLETTER)
    replies = [
        reply(s, message_id=f"<reply.{i}@mail.example.org>") for i, s in enumerate(sent[:150])
    ]
    bounces = [dsn(s, "5.1.1") for s in sent[150:180]]
    messages = replies + bounces
    boxes = {
        "a": write_maildir(tmp_path / "a", messages[0:120]),
        "b": write_maildir(tmp_path / "b", messages[60:180]),
        "c": write_maildir(tmp_path / "c", messages[0:180]),
    }
    specs = [["a"], ["b"], ["c"], ["c", "a"], ["b", "c"]]
    procs = [
        spawn(root, "track", "ingest", *(f"maildir:{boxes[k]}" for k in spec)) for spec in specs
    ]
    results = finish(procs)
    new = suppressed = 0
    for code, output in results:
        assert code == 0, output
        m = re.search(r"ingested (\d+) new .*; (\d+) already known; (\d+) address", output)
        assert m, output
        new += int(m.group(1))
        suppressed += int(m.group(3))
    assert new == 180  # across the processes: each message counted once
    assert suppressed == 30
    led = ledger_of(root)
    try:
        from sqlalchemy import func, select

        from outreach.store.schema import responses, suppressions

        with led.engine.connect() as conn:
            kinds = dict(
                conn.execute(
                    select(responses.c.kind, func.count()).group_by(responses.c.kind)
                ).all()
            )
            n_suppressed = conn.execute(select(func.count()).select_from(suppressions)).scalar()
    finally:
        led.store.close()
    assert kinds == {"reply": 150, "bounce_hard": 30}
    assert n_suppressed == 30
    report = cli(root, "report", "--format", "json")
    assert report.code == 0, report.output


def _save_positions(root: Path, worker: int, go: Any) -> None:
    from outreach.track.ingest import Ingestor
    from outreach.track.sources import ImapState

    ws = load_workspace(explicit=root)
    store = open_store(ws.database_url())
    ingestor = Ingestor(ws, store)
    go.wait()
    for uid in range(worker, 400, 4):  # four processes, interleaved positions
        ingestor.save_imap_state("imap://liaison@mail.example", "INBOX", ImapState(7, uid))
    store.close()


def test_ingests_of_the_same_imap_folder_at_once_keep_its_furthest_position(
    tmp_path: Path, store_url: str | None
) -> None:
    from outreach.track.ingest import Ingestor
    from outreach.track.sources import ImapState

    root = make_ws(tmp_path / "ws", store_url)
    assert cli(root, "db", "upgrade").code == 0
    ctx = multiprocessing.get_context("fork")
    go = ctx.Event()
    procs = [ctx.Process(target=_save_positions, args=(root, i, go)) for i in range(4)]
    for proc in procs:
        proc.start()
    go.set()
    for proc in procs:
        proc.join(60)
    # a lost race (the row inserted by another process meanwhile) was an IntegrityError
    assert [proc.exitcode for proc in procs] == [0, 0, 0, 0]
    ws = load_workspace(explicit=root)
    store = open_store(ws.database_url())
    try:
        ingestor = Ingestor(ws, store)
        source = "imap://liaison@mail.example"
        assert ingestor.imap_state(source, "INBOX") == ImapState(7, 399)
        ingestor.save_imap_state(source, "INBOX", ImapState(7, 12))  # an older, slower run
        assert ingestor.imap_state(source, "INBOX") == ImapState(7, 399)
        ingestor.save_imap_state(source, "INBOX", ImapState(8, 3))  # the folder was rebuilt
        assert ingestor.imap_state(source, "INBOX") == ImapState(8, 3)
    finally:
        store.close()


def test_several_liaisons_logging_at_once_lose_no_update(
    tmp_path: Path, store_url: str | None
) -> None:
    root = make_ws(tmp_path / "ws", store_url)
    assert cli(root, "db", "upgrade").code == 0
    people = audience(root, NEWSLETTER)
    procs = []
    for i in range(4):
        sheet = tmp_path / f"meetings{i}.csv"
        lines = ["email,date,note"] + [
            f"{people[(i * 7 + j) % len(people)]},2026-0{1 + i}-{10 + j:02d},visit {i}.{j}"
            for j in range(15)
        ]
        sheet.write_text("\n".join(lines) + "\n", encoding="utf-8")
        procs.append(spawn(root, "log", "meeting", "--csv", str(sheet)))
    for i in range(4):
        procs.append(spawn(root, "log", "call", people[i], "--date", "2026-03-01"))
    for code, output in finish(procs):
        assert code == 0, output
    led = ledger_of(root)
    try:
        from sqlalchemy import func, select

        from outreach.store.schema import contacts

        with led.engine.connect() as conn:
            by_kind = dict(
                conn.execute(select(contacts.c.kind, func.count()).group_by(contacts.c.kind)).all()
            )
    finally:
        led.store.close()
    assert by_kind == {"meeting": 60, "call": 4}


# ---------------------------------------------------------------------------- schema


def test_an_older_schema_is_refused_by_every_command_until_db_upgrade(
    tmp_path: Path, store_url: str | None
) -> None:
    from alembic import command
    from sqlalchemy import inspect

    root = make_ws(tmp_path / "ws", store_url)
    assert cli(root, "send", NEWSLETTER, "--limit", "12").code == 0
    url = load_workspace(explicit=root).database_url()
    store = open_store(url)
    with store.engine.begin() as conn:  # back to revision 0001, as an older outreach left it
        command.downgrade(_alembic_config(store.engine, conn), "0001")
    with store.engine.connect() as conn:
        assert "sender_slots" not in inspect(conn).get_table_names()
        assert "slot_seq" not in {c["name"] for c in inspect(conn).get_columns("ledger")}
    store.close()

    maildir = write_maildir(tmp_path / "empty", [])
    for args in (
        ("send", NEWSLETTER),
        ("send", NEWSLETTER, "--worker"),
        ("status",),
        ("log", "meeting", audience(root, NEWSLETTER)[0]),
        ("track", "ingest", f"maildir:{maildir}"),
        ("report",),
    ):
        result = cli(root, *args)
        assert result.code == 2, (args, result.output)
        assert "outreach db upgrade" in result.output and "0001" in result.output, args
        assert "Traceback" not in result.output

    upgraded = cli(root, "db", "upgrade")
    assert upgraded.code == 0, upgraded.output
    assert f"schema 0001 -> {HEAD_REVISION}" in upgraded.output
    # the sends made before the upgrade still count against each mailbox's quota
    led = ledger_of(root)
    try:
        numbered = [r for r in led.rows.with_status(NEWSLETTER, ["sent"]) if r["slot_seq"]]
        assert len(numbered) == 12
        by_sender = Counter(r["sender_id"] for r in numbered)
        for sender, n in by_sender.items():
            assert sorted(r["slot_seq"] for r in numbered if r["sender_id"] == sender) == list(
                range(1, n + 1)
            )
    finally:
        led.store.close()
    assert cli(root, "send", NEWSLETTER).code == 0
    assert counts(root, NEWSLETTER) == Counter(sent=247)


def test_processes_opening_a_new_store_at_once_build_it_once(
    tmp_path: Path, store_url: str | None
) -> None:
    root = make_ws(tmp_path / "ws", store_url)
    procs = [spawn(root, "status") for _ in range(4)]
    for code, output in finish(procs):
        assert code == 0, output
        assert "The ledger is empty" in output
    result = cli(root, "db", "upgrade")
    assert f"schema {HEAD_REVISION} -> {HEAD_REVISION}" in result.output


def test_upgrading_a_revision_0002_ledger_swaps_its_indexes_and_keeps_every_row(
    tmp_path: Path, store_url: str | None
) -> None:
    from alembic import command
    from sqlalchemy import inspect

    from outreach.store.schema import ledger

    retired = {  # what revision 0003 replaces
        "ix_ledger_status",
        "ix_ledger_sender_sent",
        "ix_ledger_message_id",
        "ix_ledger_email",
        "ix_ledger_report",
    }

    root = make_ws(tmp_path / "ws", store_url)
    assert cli(root, "send", NEWSLETTER, "--limit", "30").code == 0
    before = counts(root, NEWSLETTER)
    report_before = cli(root, "report", "--format", "json")
    assert report_before.code == 0, report_before.output
    store = open_store(load_workspace(explicit=root).database_url())
    with store.engine.begin() as conn:  # the indexes revision 0002 left
        command.downgrade(_alembic_config(store.engine, conn), "0002")
    with store.engine.connect() as conn:
        old = {i["name"] for i in inspect(conn).get_indexes("ledger")}
    store.close()
    assert retired <= old and "ix_ledger_sent_report" not in old

    upgraded = cli(root, "db", "upgrade")
    assert upgraded.code == 0, upgraded.output
    assert f"schema 0002 -> {HEAD_REVISION}" in upgraded.output
    store = open_store(load_workspace(explicit=root).database_url())
    with store.engine.connect() as conn:
        now = {i["name"] for i in inspect(conn).get_indexes("ledger")}
    store.close()
    # (PostgreSQL lists the unique constraint's index too)
    assert now - {"uq_ledger_campaign_email"} == {i.name for i in ledger.indexes}
    assert not retired & now
    assert counts(root, NEWSLETTER) == before
    assert cli(root, "report", "--format", "json").output == report_before.output
    assert cli(root, "send", NEWSLETTER).code == 0
    assert counts(root, NEWSLETTER) == Counter(sent=247)
