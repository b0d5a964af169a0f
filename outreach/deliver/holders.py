"""Who holds a lock, a lease or a claim, and whether that process is gone.

A run's name in the store (``campaign_locks.owner``, ``send_workers.worker``,
``ledger.claimed_by``) says where it runs:
``host:pid:start:machine:random[:tag]``. ``start`` is the process's start time in clock
ticks since boot (field 22 of ``/proc/<pid>/stat``); ``machine`` is the kernel's boot id
and the pid namespace, so "this host" means this boot of this kernel and these pids, not
just a host name two containers or two machines might share. The boot id stands in for
the boot time: it changes on every boot and, unlike ``btime``, does not move when the clock
is set.

A holder is *gone* when it ran here and its pid names no process, a zombie, or a process
that started at another time (the pid was reused). Only then is its lock taken over at
once (``lapse_gone_holders``); a holder elsewhere, or one whose name is not in this form
(an older version's), keeps its lease until it expires. Off Linux (no ``/proc``) nothing
is ever judged gone: leases expire as before.
"""

from __future__ import annotations

import functools
import os
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import Connection, func, select, update

from outreach.store import Store, as_utc, utcnow
from outreach.store.schema import (
    IN_FLIGHT_ROW,
    SOLO,
    campaign_locks,
    ledger,
    send_workers,
)

PROC = Path("/proc")
_HOST_MAX = 64  # Linux's HOST_NAME_MAX: the name stays well inside the 200-character columns


@dataclass(frozen=True)
class Holder:
    """A run's place, read back from its name in the store."""

    host: str
    pid: int
    start: int  # clock ticks since boot; 0 where it cannot be read
    machine: str  # boot id + pid namespace; "" where it cannot be read

    def here(self) -> bool:
        """Ran on this host, this boot, in this pid namespace."""
        return bool(self.machine) and (self.host, self.machine) == (_host(), machine_id())

    def gone(self) -> bool:
        """It ran here and its process no longer exists (or the pid is another process's)."""
        if not self.here() or not self.start:
            return False
        now = process_start(self.pid)
        return now is None or now != self.start

    def describe(self) -> str:
        where = "this host" if self.here() else f"host {self.host}"
        return f"pid {self.pid} on {where}"


def _host() -> str:
    return (socket.gethostname() or "localhost").replace(":", "-")[:_HOST_MAX]


@functools.cache
def machine_id() -> str:
    """This boot of this kernel and this process's pid namespace ("" off Linux)."""
    try:
        boot = (PROC / "sys/kernel/random/boot_id").read_text().strip().replace("-", "")
        pidns = os.readlink(PROC / "self/ns/pid")  # "pid:[4026531836]"
    except OSError:
        return ""
    inode = pidns.partition("[")[2].rstrip("]")
    return f"{boot[:16]}.{inode}" if boot and inode.isdigit() else ""


def process_start(pid: int) -> int | None:
    """The start time of process ``pid`` in clock ticks since boot; None when no live
    process has that pid (none at all, or a zombie: killed and not yet reaped)."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except (OSError, ValueError):
        return None
    # "pid (comm) state ... starttime ...": comm may hold spaces and parentheses
    fields = stat[stat.rfind(")") + 2 :].split()
    if len(fields) < 20 or fields[0] in ("Z", "X"):
        return None
    return int(fields[19])  # field 22; fields[0] is field 3


def holder_name(tag: str | None = None) -> str:
    """This process's name for a lock or a lease: host:pid:start:machine:random[:tag]."""
    pid = os.getpid()
    start = process_start(pid) or 0
    name = f"{_host()}:{pid}:{start}:{machine_id()}:{uuid.uuid4().hex[:8]}"
    return f"{name}:{tag}" if tag else name


def parse_holder(name: str | None) -> Holder | None:
    """The holder a name describes; None for a name not written by ``holder_name``."""
    parts = (name or "").split(":")
    if len(parts) not in (5, 6) or not parts[1].isdigit() or not parts[2].isdigit():
        return None
    return Holder(parts[0], int(parts[1]), int(parts[2]), parts[3])


def is_gone(name: str | None) -> bool:
    holder = parse_holder(name)
    return holder is not None and holder.gone()


def describe(name: str) -> str:
    """A holder for a message: ``pid 123 on host h`` (or the name as it is)."""
    holder = parse_holder(name)
    return holder.describe() if holder else name


def started_at(name: str) -> datetime | None:
    """When a holder on this host started (wall clock), for messages."""
    holder = parse_holder(name)
    if holder is None or not holder.here() or not holder.start:
        return None
    try:
        uptime = float((PROC / "uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    return utcnow() - timedelta(seconds=uptime - holder.start / ticks)


def lapse_gone_holders(store: Store, campaign_id: str) -> list[str]:
    """End at once every lease of ``campaign_id`` whose holder is gone (a run killed on
    this host): the solo lock, team workers' leases and their claims are made to have
    expired a moment ago, so the usual rules (a lapsed lock is taken over, lapsed claims
    are recovered) apply now instead of after the lease. (Its quota slots need nothing:
    they lapse a second after their time, see outreach.deliver.quota.) Returns the names
    lapsed.

    Safe against a live holder: its process exists with its start time, so it is not
    gone; and a gone process renews nothing."""
    past = utcnow() - timedelta(seconds=1)
    lapsed: list[str] = []
    with store.write() as conn:
        lock = conn.execute(
            store.for_update(
                select(campaign_locks).where(campaign_locks.c.campaign_id == campaign_id)
            )
        ).first()
        workers = conn.execute(
            select(send_workers.c.worker).where(
                send_workers.c.campaign_id == campaign_id, send_workers.c.expires_at > past
            )
        ).scalars()
        claimants = conn.execute(
            select(ledger.c.claimed_by)
            .distinct()
            .where(
                ledger.c.campaign_id == campaign_id,
                IN_FLIGHT_ROW,
                ledger.c.claimed_by.isnot(None),
            )
        ).scalars()
        names = set(workers) | set(claimants)
        if lock is not None and lock.mode == SOLO:
            names.add(lock.owner)
        gone = sorted(n for n in names if is_gone(n))
        if not gone:
            return []
        lapsed = gone
        conn.execute(
            update(send_workers)
            .where(send_workers.c.worker.in_(gone), send_workers.c.expires_at > past)
            .values(expires_at=past)
        )
        conn.execute(
            update(ledger)
            .where(
                ledger.c.campaign_id == campaign_id,
                IN_FLIGHT_ROW,
                ledger.c.claimed_by.in_(gone),
            )
            .values(lease_until=past)
        )
        if lock is not None and as_utc(lock.expires_at) > past:
            solo_gone = lock.mode == SOLO and lock.owner in gone
            team_over = lock.mode != SOLO and not _live_workers(conn, campaign_id, past)
            if solo_gone or team_over:
                conn.execute(
                    update(campaign_locks)
                    .where(campaign_locks.c.campaign_id == campaign_id)
                    .values(expires_at=past)
                )
    return lapsed


def _live_workers(conn: Connection, campaign_id: str, past: datetime) -> int:
    return int(
        conn.execute(
            select(func.count()).where(
                send_workers.c.campaign_id == campaign_id, send_workers.c.expires_at > past
            )
        ).scalar_one()
    )


def holder_refusal(owner: str, until: datetime) -> tuple[str, str]:
    """Who holds a solo lock, and what to do, for the refusal of a second run."""
    holder = parse_holder(owner)
    if holder is None:  # a name from an older version: only its expiry is known
        return owner, "wait for it to finish; nothing is sent twice"
    started = started_at(owner)
    since = f", started {started:%Y-%m-%d %H:%M:%S} UTC" if started else ""
    who = f"another run ({holder.describe()}{since})"
    if holder.here():
        return who, (
            f"it is running: wait for it to finish, or stop it (`kill {holder.pid}`); "
            "a run that was killed is taken over at once, nothing is sent twice"
        )
    return who, (
        "wait for it to finish; nothing is sent twice. If it crashed, its lock lapses by "
        f"{until:%H:%M:%S} UTC (transport.lease_seconds after it last renewed it); "
        "a crash on this host is noticed at once"
    )
