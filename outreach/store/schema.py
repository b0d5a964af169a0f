"""The one schema (SQLAlchemy Core) shared by SQLite and PostgreSQL.

Every table the tool owns is here; ``outreach forget`` walks this list.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    literal_column,
)
from sqlalchemy.sql.elements import ColumnElement

metadata = MetaData()

# Ledger states. `claimed` (queued for one worker, not yet on the wire) may be handed back
# safely after a crash; `sending` is committed right before DATA, so a `sending` row found
# after a crash is `uncertain`: the server may or may not have it. `rehearsed` (revision
# 0006): written to an outbox that delivers nothing; no report, reply or quota counts it,
# and the campaign's first real send plans it again.
PLANNED, CLAIMED, SENDING, SENT = "planned", "claimed", "sending", "sent"
DEFERRED, FAILED, UNCERTAIN, SKIPPED = "deferred", "failed", "uncertain", "skipped"
REHEARSED = "rehearsed"
STATES = (PLANNED, CLAIMED, SENDING, SENT, REHEARSED, DEFERRED, FAILED, UNCERTAIN, SKIPPED)
# Where a row's latest attempt went (ledger.transport, revision 0006).
OUTBOX_TRANSPORT, SMTP_TRANSPORT = "outbox", "smtp"

campaigns = Table(
    "campaigns",
    metadata,
    Column("id", String(200), primary_key=True),
    Column("title", Text, nullable=False, default=""),
    Column("sender_mode", String(20), nullable=False),
    Column("experiment", String(200)),
    Column("randomised", Boolean, nullable=False, default=False),
    Column("fingerprint", String(64), nullable=False),
    Column("definition", Text, nullable=False),
    Column("first_send_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# Who may send a campaign now: one `solo` run (the default: a second plain `send` is
# refused), or a `team` of workers (`send --worker`, `send --workers N`), each holding its
# own lease in send_workers; a team's row expires with the last of its workers' leases.
SOLO, TEAM = "solo", "team"
campaign_locks = Table(
    "campaign_locks",
    metadata,
    Column("campaign_id", String(200), primary_key=True),
    Column("owner", String(200), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("mode", String(10), nullable=False, server_default=SOLO),  # revision 0002
)

# One row per live worker of a team (revision 0002): its lease, renewed by its heartbeat.
# A worker whose lease has expired is dead: its claimed rows go back to `planned` and its
# `sending` rows become `uncertain` (LedgerRows.recover(expired_only=True)).
send_workers = Table(
    "send_workers",
    metadata,
    Column("campaign_id", String(200), primary_key=True),
    Column("worker", String(200), primary_key=True),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
)

# A mailbox's quota, shared by every process that sends as it (revision 0002). Slots are
# booked under this row's lock (FOR UPDATE on PostgreSQL, BEGIN IMMEDIATE on SQLite): `n`
# numbers them (ledger.slot_seq), `last_at` is the latest slot's time (the pacing
# pointer); see outreach/deliver/quota.py for the rule. The `pending_*` columns held the
# one booking per sender allowed between booking and DATA before slots became a rate
# (issue 17); nothing writes them now.
sender_slots = Table(
    "sender_slots",
    metadata,
    Column("sender_id", String(100), primary_key=True),
    Column("n", Integer, nullable=False, default=0),
    Column("last_at", DateTime(timezone=True)),
    Column("pending_row", Integer),
    Column("pending_worker", String(200)),
    Column("pending_until", DateTime(timezone=True)),
)

ledger = Table(
    "ledger",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("campaign_id", String(200), nullable=False),
    Column("email", String(320), nullable=False),
    Column("liaison_id", String(100)),
    Column("sender_id", String(100), nullable=False),
    Column("arm", String(20), nullable=False),
    Column("lang", String(16), nullable=False),
    Column("faculty", String(200)),
    Column("department", String(200)),
    # earlier contacts (personal mail, meetings) with the same liaison when planned:
    # the x-axis of the familiarity curve, fixed at send time
    Column("prior_contacts", Integer, nullable=False, default=0),
    Column("status", String(20), nullable=False),
    Column("reason", Text),
    Column("server_reply", Text),
    Column("message_id", String(400)),
    Column("attempts", Integer, nullable=False, default=0),
    Column("claimed_by", String(200)),
    Column("lease_until", DateTime(timezone=True)),
    Column("next_attempt_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("sent_at", DateTime(timezone=True)),
    # the quota slot of the latest attempt (revision 0002): its number in the sender's
    # sequence (sender_slots.n) and when it went on the wire (booked time until then)
    Column("slot_seq", Integer),
    Column("slot_at", DateTime(timezone=True)),
    # where the latest attempt went (revision 0006), written with `sending`: the transport
    # (outbox | smtp) and its host:port or the outbox's path. NULL on rows sent before
    # that revision whose way is not known.
    Column("transport", String(10)),
    Column("delivered_to", Text),
    UniqueConstraint("campaign_id", "email", name="uq_ledger_campaign_email"),
)


# The ledger's indexes (revision 0003) are partial wherever they can be: every message
# moves its row planned -> claimed -> sending -> sent, and an index whose key or predicate
# holds `status` is rewritten at each step. Each index below is touched by at most one
# step, so a message costs about 7 index pages a commit instead of 16 (measured: 32 KiB
# of WAL a message instead of 67, and a quarter less CPU on the send loop's writes).
# Queries that should use a partial index repeat its predicate in the same form
# (``SENT_ROW``, ``IN_FLIGHT_ROW``, ``CLAIMABLE_ROW``): SQLite matches the terms as written.
def status_in(states: tuple[str, ...]) -> ColumnElement[bool]:
    """``status IN (…)`` spelled with literals, as the partial indexes' predicates are."""
    if len(states) == 1:
        return ledger.c.status == literal_column(f"'{states[0]}'")
    return ledger.c.status.in_([literal_column(f"'{s}'") for s in states])


def _partial_index(name: str, where: ColumnElement[bool], *columns: Column[Any]) -> Index:
    """An index of the rows ``where`` holds, on both dialects."""
    return Index(name, *columns, sqlite_where=where, postgresql_where=where)


# What is left to send, per sender, in the order it is sent (revision 0002): a claim reads
# exactly the rows it takes, not every row of the campaign (it holds SQLite's write lock).
CLAIMABLE = (PLANNED, DEFERRED)
CLAIMABLE_ROW = status_in(CLAIMABLE)
_partial_index(
    "ix_ledger_todo",
    CLAIMABLE_ROW,
    ledger.c.campaign_id,
    ledger.c.sender_id,
    ledger.c.id,
)
# Rows a worker holds (a few batches at most): recovery, lease renewal and a team's wait.
IN_FLIGHT = (CLAIMED, SENDING)
IN_FLIGHT_ROW = status_in(IN_FLIGHT)
_partial_index(
    "ix_ledger_inflight",
    IN_FLIGHT_ROW,
    ledger.c.campaign_id,
    ledger.c.claimed_by,
)
# Sent mail, entered once when the server accepts it: reports, reply matching, familiarity.
SENT_ROW = status_in((SENT,))
# Each ends with `status`, constant in it: SQLite counts an index as covering only if it
# holds every column the query names, the predicate's too; last, so that `status = 'sent'`
# is no prefix the planner (without statistics) would rank above a covering scan.
_partial_index(
    "ix_ledger_sent",
    SENT_ROW,
    ledger.c.campaign_id,
    ledger.c.sent_at,
    ledger.c.status,
)
_partial_index(
    "ix_ledger_sent_email",
    SENT_ROW,
    ledger.c.email,
    ledger.c.arm,
    ledger.c.sent_at,
    ledger.c.status,
)
# Covering index in report order: the report's GROUP BY streams it instead of sorting.
_partial_index(
    "ix_ledger_sent_report",
    SENT_ROW,
    ledger.c.campaign_id,
    ledger.c.arm,
    ledger.c.liaison_id,
    ledger.c.lang,
    ledger.c.faculty,
    ledger.c.department,
    ledger.c.prior_contacts,
    ledger.c.status,
)
# Rehearsals (revision 0006): few, read to be left out with a note, or planned again by
# the campaign's first real send; a real send never touches this index.
REHEARSED_ROW = status_in((REHEARSED,))
_partial_index(
    "ix_ledger_rehearsed",
    REHEARSED_ROW,
    ledger.c.campaign_id,
    ledger.c.sent_at,
    ledger.c.status,
)
# Replies are matched by the Message-ID they quote; rows not yet on the wire have none.
_HAS_MESSAGE_ID = ledger.c.message_id.isnot(None)
_partial_index(
    "ix_ledger_msgid",
    _HAS_MESSAGE_ID,
    ledger.c.message_id,
)
# A mailbox's k-th latest send under a quota (revision 0002), one probe away.
Index("ix_ledger_slot", ledger.c.sender_id, ledger.c.slot_seq)
arms = Table(
    "arms",
    metadata,
    Column("experiment", String(200), primary_key=True),
    Column("email", String(320), primary_key=True),
    Column("arm", String(20), nullable=False),
    Column("liaison_id", String(100)),
    Column("assigned_at", DateTime(timezone=True), nullable=False),
)

suppressions = Table(
    "suppressions",
    metadata,
    Column("email", String(320), primary_key=True),
    Column("reason", String(40), nullable=False),  # unsubscribe | bounce_hard | manual
    Column("source", Text),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

responses = Table(
    "responses",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("incoming_id", String(500), nullable=False, unique=True),
    Column("kind", String(20), nullable=False),
    Column("email", String(320)),  # the researcher (the ledger's address when matched)
    Column("from_address", String(320)),
    Column("campaign_id", String(200)),
    Column("matched_message_id", String(400)),
    Column("match", String(20)),  # message-id | address | none | logged (outreach log reply)
    # strong: names our Message-ID (or logged by hand); weak: tied by the sender's address
    # only; NULL: credited to no campaign (revision 0005)
    Column("match_strength", String(10)),
    Column("reason", Text),
    Column("subject", Text),
    Column("source", Text),
    Column("received_at", DateTime(timezone=True)),
    Column("ingested_at", DateTime(timezone=True), nullable=False),
    Column("body", Text),  # only with tracking.keep_bodies
)
Index(
    "ix_responses_match",
    responses.c.campaign_id,
    responses.c.email,
    responses.c.kind,
    responses.c.received_at,
    responses.c.ingested_at,
    responses.c.match_strength,  # revision 0005: the report reads it, still covered
)
Index("ix_responses_email", responses.c.email)

mailbox_state = Table(
    "mailbox_state",
    metadata,
    Column("source", String(500), primary_key=True),
    Column("folder", String(200), primary_key=True),
    Column("uidvalidity", Integer),
    Column("last_uid", Integer, nullable=False, default=0),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

contacts = Table(
    "contacts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(20), nullable=False),  # meeting | reply | inbound | call
    Column("email", String(320), nullable=False),
    Column("liaison_id", String(100)),
    Column("campaign_id", String(200)),
    Column("happened_at", DateTime(timezone=True), nullable=False),
    Column("note", Text),
    Column("source", Text),
    Column("created_at", DateTime(timezone=True), nullable=False),
)
Index("ix_contacts_email", contacts.c.email, contacts.c.liaison_id, contacts.c.happened_at)

assignments = Table(
    "assignments",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("email", String(320), nullable=False),
    Column("liaison_id", String(100), nullable=False),
    Column("reason", String(40)),
    Column("valid_from", DateTime(timezone=True), nullable=False),
    Column("valid_to", DateTime(timezone=True)),
    # Where the researcher sat when this row began, so a later plan can tell "the
    # researcher moved unit" from "the liaison's segments were edited".
    Column("faculty", String(200)),
    Column("department", String(200)),
    Column("unit", String(200)),
)
Index("ix_assignments_email", assignments.c.email, assignments.c.valid_to)
# One current row (valid_to IS NULL) per researcher: two concurrent `assign --apply` runs
# cannot both give someone a face.
Index(
    "uq_assignments_current",
    assignments.c.email,
    unique=True,
    sqlite_where=assignments.c.valid_to.is_(None),
    postgresql_where=assignments.c.valid_to.is_(None),
)
Index("ix_assignments_liaison", assignments.c.liaison_id, assignments.c.valid_to)

# Anonymous counts kept by `outreach forget`, so reports stay true after an erasure.
forgotten_counts = Table(
    "forgotten_counts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("campaign_id", String(200), nullable=False),
    Column("liaison_id", String(100)),
    Column("arm", String(20)),
    Column("status", String(20), nullable=False),
    Column("replied", Boolean, nullable=False, default=False),
    Column("count", Integer, nullable=False, default=1),
    Column("weight", Float, nullable=False, default=1.0),
)

# Accounts of `outreach serve` (revision 0004): a liaison signs in under their id in
# people/liaisons.yaml, the technical person (role `admin`) under any id. Only an argon2
# hash of the password is kept.
LIAISON_ROLE, ADMIN_ROLE = "liaison", "admin"
users = Table(
    "users",
    metadata,
    Column("id", String(100), primary_key=True),
    Column("role", String(20), nullable=False),
    Column("password_hash", String(200), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# Signed-in browsers (revision 0004). The cookie carries a random key; the store keeps its
# SHA-256 only, so reading this table does not give anyone a session.
web_sessions = Table(
    "web_sessions",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("user_id", String(100), nullable=False),
    Column("csrf", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
)
Index("ix_web_sessions_user", web_sessions.c.user_id)

# Who approved which content of a campaign (revision 0007): `outreach approve CAMPAIGN --as
# ID`. The content is hashed in three parts (the campaign file, the templates it uses, the
# people it reaches) so a send refused after an edit can say which part changed;
# `content_hash` is the three together. `detail` (JSON) keeps what names the change: each
# template file's hash and the audience's counts, no addresses. A campaign may hold many
# approvals (one per content approved); the same content is approved once.
approvals = Table(
    "approvals",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("campaign_id", String(200), nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("campaign_hash", String(64), nullable=False),
    Column("templates_hash", String(64), nullable=False),
    Column("audience_hash", String(64), nullable=False),
    Column("detail", Text),
    Column("approved_by", String(100), nullable=False),
    Column("approved_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("campaign_id", "content_hash", name="uq_approvals_content"),
)

PERSONAL_TABLES = (ledger, arms, suppressions, responses, contacts, assignments)
