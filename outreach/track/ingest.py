"""Ingest: sources → parse → classify → match → store, in batches; effects (suppression).

Idempotent by the incoming Message-ID (a content hash when there is none): ingesting the
same mailbox twice counts every message once. Only headers, kind, match and timestamps
are stored unless ``tracking.keep_bodies`` is set.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import case, select
from sqlalchemy.exc import InterfaceError, OperationalError, SQLAlchemyError, StatementError

from outreach.audience.arms import SERVICE
from outreach.errors import ConfigError, SourceError
from outreach.store import Store, utcnow
from outreach.store.schema import mailbox_state, responses, suppressions
from outreach.track.classify import (
    BOUNCE_HARD,
    INBOUND,
    REPLY,
    UNPARSEABLE,
    UNRELATED,
    Context,
    Decision,
    classify,
)
from outreach.track.mailboxes import imap_source, local_spec, plan
from outreach.track.match import STRONG, Match, Matcher
from outreach.track.parse import Parsed, Unparseable, parse
from outreach.track.response_rows import named, response_row, unparseable_row
from outreach.track.sources import (
    ImapState,
    Incoming,
    iter_file,
    iter_maildir,
    iter_mbox,
    iter_stdin,
)
from outreach.workspace.loader import Workspace

BATCH = 500


@dataclass
class Outcome:
    """One message's fate, as ``track classify`` prints it."""

    source: str
    key: str
    incoming_id: str | None
    kind: str
    reason: str
    matched: str | None
    match: str
    campaign_id: str | None = None
    email: str | None = None


@dataclass
class IngestSummary:
    kinds: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    new: int = 0
    suppressed: int = 0
    unparseable: list[tuple[str, str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    config_errors: list[str] = field(default_factory=list)  # a source set up wrongly
    matched: Counter[str] = field(default_factory=Counter)
    sources_read: int = 0  # sources read to their end

    def headline(self) -> str | None:
        """What was ingested, in one line; None when every source failed and nothing was
        read (the errors say what happened, and "0 new" would say something else)."""
        failed = self.errors or self.config_errors
        if failed and not self.sources_read and not (self.new or self.duplicates):
            return None
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(self.kinds.items())) or "nothing new"
        return (
            f"ingested {self.new} new message(s) ({kinds}); {self.duplicates} already known; "
            f"{self.suppressed} address(es) suppressed"
        )


def make_context(ws: Workspace) -> Context:
    d = ws.directory
    ours = {p.email for p in (*d.liaisons.values(), *d.experts.values())} | {d.service.email}
    unsub = ws.settings.unsubscribe.mailto
    senders = {lid: p.email for lid, p in d.liaisons.items()}
    senders[SERVICE] = d.service.email  # the ledger's sender_id of the service identity
    return Context(
        domain=ws.settings.organisation.domain,
        our_addresses=frozenset(ours),
        researchers=frozenset(r.email for r in d.researchers),
        unsubscribe_address=unsub.lower() if unsub else None,
        authserv_id=ws.settings.tracking.authserv_id,
        senders=senders,
    )


def decide(data: bytes | None, error: str | None, ctx: Context) -> tuple[Parsed | None, Decision]:
    if data is None:
        return None, Decision(UNPARSEABLE, error or "unreadable")
    try:
        parsed = parse(data)
    except Unparseable as exc:
        return None, Decision(UNPARSEABLE, str(exc))
    except Exception as exc:  # noqa: BLE001 - a parser bug must not lose the message
        return None, Decision(UNPARSEABLE, f"parser failed: {type(exc).__name__}: {exc}")
    try:
        return parsed, classify(parsed, ctx)
    except Exception as exc:  # noqa: BLE001 - a classifier bug must not lose the message
        return parsed, Decision(UNPARSEABLE, f"classifier failed: {type(exc).__name__}: {exc}")


def classify_items(
    items: Iterable[Incoming], ctx: Context, matcher: Matcher
) -> Iterator[tuple[Incoming, Parsed | None, Decision, Match]]:
    batch: list[tuple[Incoming, Parsed | None, Decision]] = []

    def flush() -> Iterator[tuple[Incoming, Parsed | None, Decision, Match]]:
        for (item, p, d), m in zip(batch, _match(matcher, batch), strict=True):
            if isinstance(m, str):
                yield item, p, Decision(UNPARSEABLE, m), NO_MATCH
                continue
            try:
                d, m = _settle(p, d, m, ctx, matcher)
            except Exception as exc:  # noqa: BLE001 - one message's failure is that message's
                d, m = Decision(UNPARSEABLE, _failed("matching", exc)), NO_MATCH
            yield item, p, d, m
        batch.clear()

    try:
        for item in items:
            parsed, decision = decide(item.data, item.error, ctx)
            batch.append((item, parsed, decision))
            if len(batch) >= BATCH:
                yield from flush()
    except SourceError:
        # the source broke off (a folder vanished, a connection dropped): what was read
        # before still goes out, then the error
        if batch:
            yield from flush()
        raise
    if batch:
        yield from flush()


NO_MATCH = Match(None, None, None, "none")


def _failed(step: str, exc: Exception) -> str:
    return f"{step} failed: {type(exc).__name__}: {exc}"


def _match(
    matcher: Matcher, batch: list[tuple[Incoming, Parsed | None, Decision]]
) -> list[Match | str]:
    """The match of each message of ``batch`` (NO_MATCH for one not parsed), or why
    matching it failed. A message that breaks matching breaks it only for itself: the batch
    is matched again one message at a time. A database failure is no message's fault and
    is raised."""
    parsed = [(p, d) for _, p, d in batch if p is not None]
    try:
        found = iter(matcher.match_batch(parsed) if parsed else ())
        return [next(found) if p is not None else NO_MATCH for _, p, _ in batch]
    except SQLAlchemyError:
        raise
    except Exception:  # noqa: BLE001 - find the message at fault below
        pass
    out: list[Match | str] = []
    for _, p, d in batch:
        if p is None:
            out.append(NO_MATCH)
            continue
        try:
            out.append(matcher.match_batch([(p, d)])[0])
        except SQLAlchemyError:
            raise
        except Exception as exc:  # noqa: BLE001 - this message is unparseable, the rest go on
            out.append(_failed("matching", exc))
    return out


def _settle(
    p: Parsed | None, d: Decision, m: Match, ctx: Context, matcher: Matcher
) -> tuple[Decision, Match]:
    """What a match changes in a decision: a DMARC failure without our Message-ID is not
    believed; a researcher writing about mail the ledger lacks is inbound."""
    if d.dmarc_fail and m.strength != STRONG and matcher.store is not None:
        why = m.note or "its Message-ID is not in the ledger"
        d = Decision(
            UNRELATED,
            f"DMARC fail reported by {d.dmarc_fail} and {why}: the sender may be "
            f"forged; neither credited nor obeyed (else {d.kind}: {d.reason})",
        )
        m = Match(None, None, m.message_id, "none")
    if (
        p is not None and d.kind == REPLY and m.method == "none" and matcher.store is not None
    ) and p.from_address in ctx.researchers:
        d = Decision(INBOUND, "a known researcher answering mail that is not in the ledger")
    return d, m


class Ingestor:
    def __init__(self, ws: Workspace, store: Store) -> None:
        self.ws = ws
        self.store = store
        self.ctx = make_context(ws)
        self.matcher = Matcher(
            store,
            ws.settings.tracking.reply_window_days,
            ws.settings.organisation.domain,
            self.ctx.senders,
        )
        self.keep_bodies = ws.settings.tracking.keep_bodies

    def ingest(
        self,
        items: Iterable[Incoming],
        summary: IngestSummary,
        on_item: Callable[[], None] | None = None,
    ) -> None:
        pending: list[tuple[Incoming, Parsed | None, Decision, Match]] = []
        try:
            for result in classify_items(items, self.ctx, self.matcher):
                pending.append(result)
                if on_item:
                    on_item()
                if len(pending) >= BATCH:
                    self._store(pending, summary)
                    pending.clear()
        except SourceError:
            if pending:  # keep what was read before the source failed
                self._store(pending, summary)
            raise
        if pending:
            self._store(pending, summary)

    def _store(
        self, batch: list[tuple[Incoming, Parsed | None, Decision, Match]], summary: IngestSummary
    ) -> None:
        now = utcnow()
        rows: dict[str, dict[str, Any]] = {}
        suppress: dict[str, tuple[str, str]] = {}
        for item, p, d, m in batch:
            try:
                row, target = response_row(item, p, d, m, now, self.keep_bodies)
            except Exception as exc:  # noqa: BLE001 - that message is unparseable, not the batch
                row, target = unparseable_row(item, p, _failed("storing", exc), now), None
            if row["kind"] == UNPARSEABLE:
                summary.unparseable.append((item.source, item.key, row["reason"]))
            incoming = row["incoming_id"]
            if incoming in rows:
                summary.duplicates += 1
                continue
            rows[incoming] = row
            if target:
                reason = "bounce_hard" if row["kind"] == BOUNCE_HARD else row["kind"]
                suppress[target.lower()] = (reason, incoming)
        try:
            fresh, suppressed = self._write(rows, suppress, now)
        except (OperationalError, InterfaceError):
            raise  # the store failed, not a message
        except StatementError:
            # A value the database refuses fails the whole batch: write it one message at
            # a time, and a message refused even alone is stored as unparseable.
            fresh, suppressed = [], 0
            for key, row in rows.items():
                one = {key: row}
                mine = {e: why for e, why in suppress.items() if why[1] == key}
                try:
                    added, n = self._write(one, mine, now)
                except (OperationalError, InterfaceError):
                    raise
                except StatementError as exc:
                    failed = unparseable_row(None, None, _failed("storing", exc), now, row)
                    summary.unparseable.append(named(row, failed["reason"]))
                    added, n = self._write({key: failed}, {}, now)
                fresh += added
                suppressed += n
        summary.duplicates += len(rows) - len(fresh)
        for row in fresh:
            summary.kinds[row["kind"]] += 1
            summary.matched[row["match"]] += 1
        summary.new += len(fresh)
        summary.suppressed += suppressed

    def _write(
        self,
        rows: dict[str, dict[str, Any]],
        suppress: dict[str, tuple[str, str]],
        now: datetime,
    ) -> tuple[list[dict[str, Any]], int]:
        """Store ``rows`` not stored before and their suppressions, in one transaction;
        returns the rows this call added and how many addresses it suppressed."""
        with self.store.engine.begin() as conn:
            existing = {
                r.incoming_id
                for r in conn.execute(
                    select(responses.c.incoming_id).where(responses.c.incoming_id.in_(list(rows)))
                )
            }
            fresh = [row for key, row in rows.items() if key not in existing]
            if fresh:
                # Another ingest (a process reading an overlapping mailbox) may store the
                # same message meanwhile: only what this insert really added is counted.
                added = set(
                    conn.execute(
                        self.store.insert_ignore(responses).returning(responses.c.incoming_id),
                        fresh,
                    ).scalars()
                )
                fresh = [row for row in fresh if row["incoming_id"] in added]
            fresh_ids = {row["incoming_id"] for row in fresh}
            already = {
                r.email
                for r in conn.execute(
                    select(suppressions.c.email).where(suppressions.c.email.in_(list(suppress)))
                )
            }
            new_suppressions = [
                {"email": email, "reason": reason, "source": incoming, "created_at": now}
                for email, (reason, incoming) in suppress.items()
                if email not in already and incoming in fresh_ids
            ]
            if new_suppressions:
                new_suppressions = [
                    row
                    for row in new_suppressions
                    if conn.execute(self.store.insert_ignore(suppressions).values(**row)).rowcount
                ]
        return fresh, len(new_suppressions)

    # -- mailbox state for IMAP -----------------------------------------------------------
    def imap_state(self, source: str, folder: str) -> ImapState | None:
        with self.store.engine.connect() as conn:
            row = conn.execute(
                select(mailbox_state).where(
                    mailbox_state.c.source == source, mailbox_state.c.folder == folder
                )
            ).first()
        return ImapState(row.uidvalidity, row.last_uid) if row else None

    def save_imap_state(self, source: str, folder: str, state: ImapState) -> None:
        """Where this mailbox folder was read up to. Two ingests of the same mailbox at once
        both write (one upsert, no lost race); the position only moves forward while the
        folder's UIDVALIDITY stays the same."""
        now = utcnow()
        t = mailbox_state
        same_folder = t.c.uidvalidity == state.uidvalidity
        stmt = self.store.upsert(
            t,
            {
                "source": source,
                "folder": folder,
                "uidvalidity": state.uidvalidity,
                "last_uid": state.last_uid,
                "updated_at": now,
            },
            {
                "last_uid": case(
                    (same_folder & (t.c.last_uid > state.last_uid), t.c.last_uid),
                    else_=state.last_uid,
                ),
                "uidvalidity": state.uidvalidity,
                "updated_at": now,
            },
        )
        with self.store.engine.begin() as conn:
            conn.execute(stmt)


def local_items(spec: str) -> Iterator[Incoming]:
    if spec == "-":
        return iter_stdin()
    if spec.startswith("maildir:"):
        return iter_maildir(Path(spec[len("maildir:") :]).expanduser())
    if spec.startswith("mbox:"):
        return iter_mbox(Path(spec[len("mbox:") :]).expanduser())
    path = Path(spec).expanduser()
    if path.is_dir():
        if (path / "cur").is_dir() or (path / "new").is_dir():
            return iter_maildir(path)
        return (item for f in sorted(path.glob("*.eml")) for item in iter_file(f))
    if not path.exists():
        raise SourceError(
            f"no such file or source: {spec}",
            hint="use imap://… imaps://… maildir:PATH mbox:PATH FILE.eml or - (stdin)",
        )
    return iter_file(path)


def ingest_sources(
    ws: Workspace,
    store: Store,
    specs: list[str],
    on_item: Callable[[], None] | None = None,
    imap_batch: int | None = None,
    mailbox_names: Sequence[str] = (),
) -> IngestSummary:
    """Ingest every source (``specs``, then the ``mailboxes:`` entries named in
    ``mailbox_names`` that did not settle which mailbox a URL meant); a source that fails is
    reported in ``summary.errors`` (or ``config_errors``), named, and the others still run.
    ``imap_batch`` sets how many messages one IMAP FETCH asks for (the position is saved
    after each)."""
    ingestor = Ingestor(ws, store)
    summary = IngestSummary()
    for planned in plan(ws, specs, mailbox_names):
        try:
            if planned.error is not None:
                raise planned.error
            if planned.is_imap:
                source = imap_source(ws, planned)
                if imap_batch:
                    source.batch = imap_batch
                try:
                    for folder in source.folders:
                        state = ingestor.imap_state(source.label, folder)
                        for items, new_state in source.fetch_chunks(folder, state):
                            # Stored first, then the position: a drop loses nothing.
                            ingestor.ingest(items, summary, on_item)
                            ingestor.save_imap_state(source.label, folder, new_state)
                finally:
                    source.close()
            else:
                ingestor.ingest(local_items(local_spec(ws, planned)), summary, on_item)
            summary.sources_read += 1
        except SourceError as exc:
            shown = planned.shown
            text = str(exc)
            summary.errors.append(text if text.startswith(shown) else f"{shown}: {text}")
        except ConfigError as exc:
            # One mailbox's set-up (a password variable not set, say) does not stop the
            # others: it is reported (where, what, what to do), and the command exits 2.
            summary.config_errors.append(f"{planned.shown}: {exc}")
    return summary
