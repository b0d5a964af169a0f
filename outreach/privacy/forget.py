"""One person's data: erase it (``outreach forget EMAIL``) or hand it over (``outreach
export EMAIL``).

What the tool holds about a researcher, and where:

* ``people/researchers.csv`` (or ``.yaml``): the user's own file. ``forget`` refuses while
  the person is still listed (the next send would mail them again), unless
  ``--from-people`` removes their row: only the lines of that record, every other byte
  kept, written atomically.
* the store, every table in ``schema.PERSONAL_TABLES``: ledger, arms, suppressions,
  responses, contacts, assignments. Rows are deleted. Ledger rows first become anonymous
  counts in ``forgotten_counts`` (campaign, liaison, arm, status, replied), so reply rates
  per campaign, arm and liaison stay true (:func:`forgotten_rows` adds them to a report).
  An opt-out (unsubscribe, hard bounce, manual) is not dropped: its address is replaced by
  a keyed hash (HMAC-SHA256 under the workspace's token secret), so if the person is
  re-added they are still not mailed (:class:`SuppressionList`), yet the address cannot be
  read back without the secret. Their address, where it appears in other rows' free text
  (a subject, a note, a server reply), is replaced by ``[forgotten]``.
* files the tool writes: outbox Maildir messages addressed to them, ``preview/`` .eml and
  HTML files (and their card in the gallery's index.html).
* SQLite keeps deleted bytes in free pages: after erasing, the file is compacted
  (VACUUM) and the write-ahead log truncated, so the address is gone from the file itself.
  On PostgreSQL dead rows are reclaimed by (auto)vacuum.

Not held: message bodies (unless ``tracking.keep_bodies``), passwords, opens or clicks.
"""

from __future__ import annotations

import csv
import email
import email.policy
import html
import io
import os
import re
import tempfile
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import getaddresses
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from sqlalchemy import Table, and_, delete, func, insert, or_, select, update
from sqlalchemy.engine import Connection

from outreach.audience.suppressions import normalise, suppression_key
from outreach.errors import (
    CampaignLocked,
    ConfigError,
    Location,
    OutreachError,
    Problem,
    StoreError,
    ValidationFailed,
)
from outreach.report.forgotten import BOUNCED
from outreach.store import Store, as_utc, utcnow
from outreach.store.schema import (
    CLAIMED,
    PERSONAL_TABLES,
    SENDING,
    SENT,
    campaign_locks,
    forgotten_counts,
    ledger,
    responses,
    suppressions,
)
from outreach.workspace.credentials import token_secret

if TYPE_CHECKING:
    from outreach.workspace.loader import Workspace

# Where each personal table keeps the address (a test keeps this in step with the schema).
EMAIL_COLUMNS: dict[str, tuple[str, ...]] = {
    "ledger": ("email",),
    "arms": ("email",),
    "suppressions": ("email",),
    "responses": ("email", "from_address"),
    "contacts": ("email",),
    "assignments": ("email",),
}
# Free text in other people's rows that may mention the address: redacted, not deleted.
TEXT_COLUMNS: dict[str, tuple[str, ...]] = {
    "ledger": ("reason", "server_reply"),
    "responses": ("subject", "reason", "source", "body"),
    "contacts": ("note", "source"),
}
NOT_PERSONAL = (
    "campaigns",
    "campaign_locks",
    "mailbox_state",
    "forgotten_counts",
    "send_workers",  # sender processes' leases (team sending)
    "sender_slots",  # each mailbox's quota pointer
    "users",  # accounts of `outreach serve`: staff, not researchers
    "web_sessions",
)
REDACTED = "[forgotten]"
_TABLES: dict[str, Table] = {t.name: t for t in PERSONAL_TABLES}


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        aware = as_utc(value)
        return aware.isoformat() if aware is not None else None
    return value


# --------------------------------------------------------------------------- suppressions


# --------------------------------------------------------------------------- people files


@dataclass
class PeopleEntry:
    """Where a person is listed in the workspace's people files."""

    role: str  # researcher | liaison | expert | service
    file: str  # as the user sees it (relative to the workspace)
    line: int | None
    end_line: int | None  # last line of the record (researchers: removable span)
    fields: dict[str, Any]
    removable: bool = False
    person_id: str | None = None

    @property
    def location(self) -> Location:
        return Location(self.file, self.line)

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "role": self.role, "fields": self.fields}


def _csv_records(raw: bytes) -> tuple[str, list[str], list[tuple[int, int, list[str]]], str]:
    """(text, physical lines, records as (first line, last line, cells), BOM)."""
    bom = "\ufeff" if raw.startswith(b"\xef\xbb\xbf") else ""
    text = raw.decode("utf-8-sig")
    lines = list(io.StringIO(text, newline=""))  # the same lines the loader's csv reader sees
    first = text.split("\n", 1)[0]
    delimiter = max((",", ";", "\t"), key=first.count)
    reader = csv.reader(iter(lines), delimiter=delimiter)
    records: list[tuple[int, int, list[str]]] = []
    previous = 0
    try:
        for row in reader:
            records.append((previous + 1, reader.line_num, row))
            previous = reader.line_num
    except csv.Error:
        pass  # the loader reports it; rows before it are still found
    return text, lines, records, bom


def _researchers_csv(path: Path, shown: str, address: str) -> list[PeopleEntry]:
    try:
        _, _, records, _ = _csv_records(path.read_bytes())
    except (OSError, UnicodeDecodeError):
        return []
    if not records:
        return []
    header = [h.strip().lower() for h in records[0][2]]
    if "email" not in header:
        return []
    col = header.index("email")
    out = []
    for start, end, row in records[1:]:
        if len(row) > col and row[col].strip() and normalise(row[col]) == address:
            cells = dict(zip(records[0][2], row, strict=False))
            out.append(PeopleEntry("researcher", shown, start, end, cells, removable=True))
    return out


def _yaml_items(text: str) -> tuple[yaml.Node | None, list[yaml.Node]]:
    """The sequence of researchers in a researchers.yaml node tree, and its items."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None, []
    seq: yaml.Node | None = root
    if isinstance(root, yaml.MappingNode):
        seq = next(
            (
                v
                for k, v in root.value
                if isinstance(k, yaml.ScalarNode) and k.value == "researchers"
            ),
            None,
        )
    if not isinstance(seq, yaml.SequenceNode):
        return None, []
    return seq, list(seq.value)


def _item_email(node: yaml.Node) -> str | None:
    if not isinstance(node, yaml.MappingNode):
        return None
    for k, v in node.value:
        if isinstance(k, yaml.ScalarNode) and k.value == "email" and isinstance(v, yaml.ScalarNode):
            return str(v.value)
    return None


def _yaml_spans(text: str, address: str) -> list[tuple[int, int, yaml.Node, bool]]:
    """(first line, last line, node, removable) of each item listing ``address`` (1-based)."""
    seq, items = _yaml_items(text)
    if seq is None:
        return []
    out = []
    for i, item in enumerate(items):
        value = _item_email(item)
        if value is None or normalise(value) != address:
            continue
        start = item.start_mark.line + 1
        if i + 1 < len(items):
            end = items[i + 1].start_mark.line  # the line before the next item starts
        else:
            mark = seq.end_mark
            end = mark.line if mark.column == 0 else mark.line + 1
        removable = not bool(getattr(seq, "flow_style", False)) and end >= start
        out.append((start, max(start, end), item, removable))
    return out


def _researchers_yaml(path: Path, shown: str, address: str) -> list[PeopleEntry]:
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except (OSError, UnicodeDecodeError):
        return []
    out = []
    for start, end, node, removable in _yaml_spans(text, address):
        try:
            fields = yaml.safe_load(yaml.serialize(node)) or {}
        except yaml.YAMLError:
            fields = {}
        out.append(PeopleEntry("researcher", shown, start, end, fields, removable=removable))
    return out


def people_entries(ws: Workspace, address: str) -> list[PeopleEntry]:
    """Every place in people/ and outreach.yaml that lists ``address``."""
    people = ws.root / "people"
    out: list[PeopleEntry] = []
    csv_path, yaml_path = people / "researchers.csv", people / "researchers.yaml"
    if csv_path.is_file():
        out += _researchers_csv(csv_path, "people/researchers.csv", address)
    elif yaml_path.is_file():
        out += _researchers_yaml(yaml_path, "people/researchers.yaml", address)
    d = ws.directory
    for role, persons, doc, file in (
        ("liaison", d.liaisons, d.liaison_docs, "people/liaisons.yaml"),
        ("expert", d.experts, d.expert_docs, "people/experts.yaml"),
    ):
        for person in persons.values():
            if normalise(person.email) == address:
                line = _doc_line(doc, person.id)
                fields = person.model_dump(mode="json", exclude_none=True)
                out.append(PeopleEntry(role, file, line, None, fields, person_id=person.id))
    if normalise(d.service.email) == address:
        where = ws.settings_doc.where(("service", "email")) if ws.settings_doc else Location()
        fields = {"name": d.service.name, "email": d.service.email}
        out.append(PeopleEntry("service", "outreach.yaml", where.line, None, fields))
    return out


def _doc_line(doc: Any, person_id: str) -> int | None:
    if doc is None:
        return None
    data = doc.data
    base: tuple[str, ...] = ()
    if isinstance(data, dict) and len(data) == 1:
        key = next(iter(data))
        data, base = data[key], (key,)
    if isinstance(data, list):
        for i, item in enumerate(data):
            if isinstance(item, dict) and item.get("id") == person_id:
                line: int | None = doc.where((*base, i)).line
                return line
    return None


def _write_atomically(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, path.stat().st_mode & 0o7777)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_from_people(root: Path, address: str) -> list[PeopleEntry]:
    """Remove the records of ``address`` from people/researchers.csv (or .yaml).

    Only the physical lines of those records go; every other byte (quoting, delimiter,
    BOM, line endings, comments) stays. Written atomically and checked by reading the file
    back; on any doubt the original is put back and an error raised. No backup copy is
    left behind (it would keep the person's data).
    """
    people = root / "people"
    csv_path, yaml_path = people / "researchers.csv", people / "researchers.yaml"
    if csv_path.is_file():
        path, shown = csv_path, "people/researchers.csv"
        raw = path.read_bytes()
        _, lines, _, bom = _csv_records(raw)
        entries = _researchers_csv(path, shown, address)
    elif yaml_path.is_file():
        path, shown = yaml_path, "people/researchers.yaml"
        raw = path.read_bytes()
        bom = "\ufeff" if raw.startswith(b"\xef\xbb\xbf") else ""
        lines = list(io.StringIO(raw.decode("utf-8-sig"), newline=""))
        entries = _researchers_yaml(path, shown, address)
    else:
        return []
    if not entries:
        return []
    for entry in entries:
        if not entry.removable:
            raise ConfigError(
                f"{address} is listed in a form outreach cannot remove safely",
                location=entry.location,
                hint="remove the entry by hand (a one-line flow list `[...]`), then forget again",
            )
    drop: set[int] = set()
    for entry in entries:
        assert entry.line is not None and entry.end_line is not None
        drop.update(range(entry.line, entry.end_line + 1))
    kept = [line for n, line in enumerate(lines, 1) if n not in drop]
    new = (bom + "".join(kept)).encode("utf-8")
    _write_atomically(path, new)
    left = (
        _researchers_csv(path, shown, address)
        if path.suffix == ".csv"
        else _researchers_yaml(path, shown, address)
    )
    if left or len(kept) != len(lines) - len(drop):
        _write_atomically(path, raw)
        raise StoreError(
            f"could not remove {address} from {shown} safely; the file is unchanged",
            hint="remove the row by hand, then forget again",
        )
    return entries


# --------------------------------------------------------------------------- files


def _headers_of(path: Path) -> email.message.Message | None:
    try:
        with path.open("rb") as f:
            head = f.read(256 * 1024)
    except OSError:
        return None
    end = head.find(b"\r\n\r\n")
    end = end if end >= 0 else head.find(b"\n\n")
    block = head if end < 0 else head[: end + 2]
    return email.message_from_bytes(block, policy=email.policy.compat32)


def _addressed_to(path: Path, address: str) -> bool:
    msg = _headers_of(path)
    if msg is None:
        return False
    raw = " ".join(str(v) for k, v in msg.items() if k.lower() in ("x-envelope-to", "to", "cc"))
    if address not in raw.lower():
        return False
    return any(normalise(a) == address for _, a in getaddresses([raw]) if a)


def outbox_files(ws: Workspace, address: str) -> list[Path]:
    box = Path(ws.settings.transport.outbox).expanduser()
    box = box if box.is_absolute() else ws.root / box
    out: list[Path] = []
    for sub in ("new", "cur", "tmp"):
        folder = box / sub
        if folder.is_dir():
            out += [
                p for p in sorted(folder.iterdir()) if p.is_file() and _addressed_to(p, address)
            ]
    return out


def preview_files(ws: Workspace, address: str) -> list[Path]:
    """Preview .eml files addressed to ``address`` and their HTML rendering."""
    folder = ws.root / "preview"
    if not folder.is_dir():
        return []
    out: list[Path] = []
    for eml in sorted(folder.rglob("*.eml")):
        if _addressed_to(eml, address):
            out.append(eml)
            page = eml.parent / "messages" / f"{eml.stem}.html"
            if page.is_file():
                out.append(page)
    return out


def _drop_preview_cards(files: list[Path]) -> None:
    """Take the forgotten messages' cards out of each gallery's index.html."""
    by_index: dict[Path, list[str]] = defaultdict(list)
    for path in files:
        if path.suffix == ".eml":
            by_index[path.parent / "index.html"].append(path.name)
    for index, names in by_index.items():
        if not index.is_file():
            continue
        page = index.read_text(encoding="utf-8")
        removed = 0
        for name in names:
            card = re.compile(
                r'<section class="card"(?:(?!<section class="card").)*?href="'
                + re.escape(html.escape(name))
                + r'".*?</section>\s*',
                re.S,
            )
            page, n = card.subn("", page, count=1)
            removed += n
        if removed:
            shown = re.search(r"(\d+)( message\(s\))", page)
            if shown:
                left = max(0, int(shown.group(1)) - removed)
                page = page[: shown.start(1)] + str(left) + page[shown.end(1) :]
            _write_atomically(index, page.encode("utf-8"))


# --------------------------------------------------------------------------- the store


def _matches(table: Table, address: str) -> Any:
    columns = [table.c[name] for name in EMAIL_COLUMNS[table.name]]
    return or_(*(func.lower(c) == address for c in columns))


def _mentions(table: Table, address: str, exclude: Any = None) -> Any:
    escaped = address.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    pattern = f"%{escaped}%"
    cond = or_(*(table.c[c].ilike(pattern, escape="\\") for c in TEXT_COLUMNS[table.name]))
    return and_(cond, ~exclude) if exclude is not None else cond


def _redact(value: Any, address: str) -> Any:
    if not isinstance(value, str):
        return value
    return re.sub(re.escape(address), REDACTED, value, flags=re.I)


@dataclass
class ForgetPlan:
    """What ``forget`` removes (``--dry-run`` shows it; the real run does it)."""

    email: str
    people: list[PeopleEntry] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)  # table → rows deleted
    counts: Counter[tuple[str, str | None, str, str, bool]] = field(default_factory=Counter)
    suppression: str | None = None  # reason of the opt-out kept as a keyed hash
    redacted: dict[str, int] = field(default_factory=dict)  # table → other rows redacted
    files: list[Path] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    applied: bool = False
    removed_from_people: bool = False
    compacted: bool | None = None  # SQLite: VACUUM done (None: not SQLite)
    notes: list[str] = field(default_factory=list)

    @property
    def held(self) -> bool:
        return bool(
            any(self.rows.values())
            or any(self.redacted.values())
            or self.files
            or any(p.role == "researcher" for p in self.people)
        )


def _responses_by_campaign(
    conn: Connection, address: str
) -> dict[str | None, list[tuple[str, datetime | None]]]:
    out: dict[str | None, list[tuple[str, datetime | None]]] = defaultdict(list)
    rows = conn.execute(
        select(
            responses.c.campaign_id,
            responses.c.kind,
            responses.c.received_at,
            responses.c.ingested_at,
        ).where(func.lower(responses.c.email) == address)
    )
    for r in rows:
        out[r.campaign_id].append((r.kind, as_utc(r.received_at) or as_utc(r.ingested_at)))
    return out


def _anonymous_counts(
    conn: Connection, address: str, window_seconds: float
) -> Counter[tuple[str, str | None, str, str, bool]]:
    """(campaign, liaison, arm, status, replied) for each of the person's ledger rows, with
    ``replied`` and hard bounces decided as the report decides them."""
    by_campaign = _responses_by_campaign(conn, address)
    counts: Counter[tuple[str, str | None, str, str, bool]] = Counter()
    for row in conn.execute(select(ledger).where(func.lower(ledger.c.email) == address)):
        got = by_campaign.get(row.campaign_id, [])
        hard = any(kind == "bounce_hard" for kind, _ in got)
        status = row.status
        replied = False
        if status == SENT:
            replies = [t for kind, t in got if kind == "reply" and t is not None]
            sent_at = as_utc(row.sent_at)
            if replies and sent_at is not None and not hard:
                replied = (min(replies) - sent_at).total_seconds() <= window_seconds
            if hard:
                status = BOUNCED
        counts[(row.campaign_id, row.liaison_id, row.arm, status, replied)] += 1
    return counts


def _plan_store(conn: Connection, plan: ForgetPlan, window_seconds: float) -> None:
    address = plan.email
    for table in PERSONAL_TABLES:
        plan.rows[table.name] = int(
            conn.execute(
                select(func.count()).select_from(table).where(_matches(table, address))
            ).scalar_one()
        )
    plan.counts = _anonymous_counts(conn, address, window_seconds)
    plan.suppression = conn.execute(
        select(suppressions.c.reason).where(func.lower(suppressions.c.email) == address)
    ).scalar()
    for name in TEXT_COLUMNS:
        table = _TABLES[name]
        plan.redacted[name] = int(
            conn.execute(
                select(func.count())
                .select_from(table)
                .where(_mentions(table, address, _matches(table, address)))
            ).scalar_one()
        )


def _busy(conn: Connection, address: str) -> list[str]:
    """Campaigns with this person's message in flight, or being sent right now."""
    in_flight = conn.execute(
        select(ledger.c.campaign_id)
        .where(func.lower(ledger.c.email) == address, ledger.c.status.in_([CLAIMED, SENDING]))
        .distinct()
    ).scalars()
    locked = conn.execute(
        select(campaign_locks.c.campaign_id).where(
            campaign_locks.c.expires_at > utcnow(),
            campaign_locks.c.campaign_id.in_(
                select(ledger.c.campaign_id).where(func.lower(ledger.c.email) == address)
            ),
        )
    ).scalars()
    return sorted({*in_flight, *locked})


def _apply_store(conn: Connection, plan: ForgetPlan, secret: bytes, window: float) -> None:
    address = plan.email
    # Counted again inside the deleting transaction: a row added since the plan (a send
    # running meanwhile) is counted before it goes, never deleted uncounted.
    plan.counts = _anonymous_counts(conn, address, window)
    plan.suppression = conn.execute(
        select(suppressions.c.reason).where(func.lower(suppressions.c.email) == address)
    ).scalar()
    for (campaign_id, liaison_id, arm, status, replied), n in sorted(
        plan.counts.items(), key=lambda kv: tuple(str(x) for x in kv[0])
    ):
        same = and_(
            forgotten_counts.c.campaign_id == campaign_id,
            forgotten_counts.c.liaison_id.is_(None)
            if liaison_id is None
            else forgotten_counts.c.liaison_id == liaison_id,
            forgotten_counts.c.arm == arm,
            forgotten_counts.c.status == status,
            forgotten_counts.c.replied == replied,
        )
        done = conn.execute(
            update(forgotten_counts).where(same).values(count=forgotten_counts.c.count + n)
        ).rowcount
        if not done:
            conn.execute(
                insert(forgotten_counts).values(
                    campaign_id=campaign_id,
                    liaison_id=liaison_id,
                    arm=arm,
                    status=status,
                    replied=replied,
                    count=n,
                    weight=1.0,
                )
            )
    if plan.suppression is not None:
        key = suppression_key(secret, address)
        original = conn.execute(
            select(suppressions.c.created_at).where(func.lower(suppressions.c.email) == address)
        ).scalar()
        exists = conn.execute(select(func.count()).where(suppressions.c.email == key)).scalar_one()
        conn.execute(delete(suppressions).where(func.lower(suppressions.c.email) == address))
        if not exists:
            conn.execute(
                insert(suppressions).values(
                    email=key,
                    reason=plan.suppression,
                    source="forgotten",
                    created_at=original or utcnow(),
                )
            )
    for table in PERSONAL_TABLES:
        conn.execute(delete(table).where(_matches(table, address)))
    for name, columns in TEXT_COLUMNS.items():
        table = _TABLES[name]
        rows = conn.execute(
            select(table.c.id, *(table.c[c] for c in columns)).where(_mentions(table, address))
        ).all()
        for row in rows:
            values = {c: _redact(getattr(row, c), address) for c in columns}
            conn.execute(update(table).where(table.c.id == row.id).values(**values))


def _compact(store: Store) -> bool | None:
    """SQLite: rewrite the file so deleted rows' bytes are gone, and empty the WAL."""
    if store.dialect != "sqlite":
        return None
    try:
        with store.engine.connect() as conn:
            conn.exec_driver_sql("VACUUM")
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        return True
    except Exception:  # noqa: BLE001 - locked by a running send: the data is deleted anyway
        return False


# --------------------------------------------------------------------------- forget


def forget(
    ws: Workspace,
    store: Store,
    address: str,
    *,
    dry_run: bool = False,
    from_people: bool = False,
    confirm: Callable[[ForgetPlan], bool] | None = None,
) -> ForgetPlan:
    """Erase everything the tool holds about ``address`` (see the module docstring).

    Raises ``ConfigError`` for a liaison, expert or the service address (staff, not a
    researcher), ``ValidationFailed`` while the person is still in people/ (unless
    ``from_people``), ``CampaignLocked`` while one of their messages is being sent.
    """
    plan = ForgetPlan(normalise(address))
    plan.people = people_entries(ws, plan.email)
    staff = [p for p in plan.people if p.role != "researcher"]
    if staff:
        first = staff[0]
        raise ConfigError(
            f"{plan.email} is a {first.role} ({first.file}): forget erases researchers",
            location=first.location,
            hint="remove or replace them in that file and hand their segments to another "
            "liaison; their name stays on the ledger rows of mail sent in it",
        )
    listed = [p for p in plan.people if p.role == "researcher"]
    if listed and not from_people:
        plan.problems = [
            Problem(
                f"{plan.email} is still listed: the next send would mail them again",
                p.location,
                "remove the row (outreach does not edit your file unless you pass "
                "--from-people), then run forget again",
                severity="warning" if dry_run else "error",
            )
            for p in listed
        ]
    window = ws.settings.tracking.reply_window_days * 86400.0
    with store.engine.connect() as conn:
        _plan_store(conn, plan, window)
        busy = _busy(conn, plan.email)
    plan.files = outbox_files(ws, plan.email) + preview_files(ws, plan.email)
    if plan.problems and not dry_run:
        raise ValidationFailed(plan.problems)
    if busy:
        raise CampaignLocked(
            f"{plan.email} has mail being sent right now in {', '.join(busy)}",
            hint="wait until that send ends (or its lock expires), then forget again",
        )
    if dry_run or not plan.held:
        return plan
    if confirm is not None and not confirm(plan):
        return plan
    t = ws.settings.tracking
    secret = token_secret(ws.root, t.secret_env, t.secret_file)
    if listed:  # first: should the database step fail, a rerun finishes the job
        remove_from_people(ws.root, plan.email)
        plan.removed_from_people = True
    try:
        with store.engine.begin() as conn:
            if store.dialect == "sqlite":
                conn.exec_driver_sql("PRAGMA secure_delete=ON")
            _apply_store(conn, plan, secret, window)
    except OutreachError:
        raise
    except Exception as exc:
        raise StoreError(
            f"could not erase {plan.email} from the database: {type(exc).__name__}: {exc}",
            hint="nothing was changed in the database; run forget again",
        ) from None
    failed = []
    for path in plan.files:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            failed.append(f"{path}: {exc.strerror}")
    _drop_preview_cards(plan.files)
    if failed:
        plan.notes.append("could not delete: " + "; ".join(failed))
    plan.compacted = _compact(store)
    if plan.compacted is False:
        plan.notes.append(
            "the database is busy, so its file still holds the deleted bytes: run "
            "`sqlite3 outreach.db VACUUM` when no send is running"
        )
    elif plan.compacted is None:
        plan.notes.append("PostgreSQL reclaims the deleted rows at its next (auto)vacuum")
    plan.applied = True
    return plan


def describe(plan: ForgetPlan, root: Path | None = None) -> list[tuple[str, str]]:
    """(what, detail) lines for printing a plan or its result."""
    out: list[tuple[str, str]] = []
    for p in plan.people:
        where = f"{p.file}:{p.line}" if p.line else p.file
        state = "row removed" if plan.removed_from_people else "listed"
        out.append((where, f"{state} ({p.role})"))
    for table in PERSONAL_TABLES:
        n = plan.rows.get(table.name, 0)
        if table is ledger and n:
            out.append(
                (
                    "ledger",
                    f"{n} row(s) → anonymous counts (campaign, liaison, arm, status, replied)",
                )
            )
        elif table is suppressions and plan.suppression:
            out.append(
                (
                    "suppressions",
                    f"opt-out ({plan.suppression}) kept as a keyed hash: not mailed if re-added",
                )
            )
        elif n:
            out.append((table.name, f"{n} row(s)"))
    redacted = sum(plan.redacted.values())
    if redacted:
        out.append(("other rows", f"{redacted} mention(s) of the address → {REDACTED}"))
    kinds = Counter("preview" if "preview" in p.parts else "outbox" for p in plan.files)
    for kind, n in sorted(kinds.items()):
        out.append((kind, f"{n} file(s)"))
    return out


# --------------------------------------------------------------------------- export


def _rows(conn: Connection, table: Table, address: str) -> list[dict[str, Any]]:
    result = conn.execute(select(table).where(_matches(table, address)))
    return [{k: _json_value(v) for k, v in r._mapping.items()} for r in result]


def export(ws: Workspace, store: Store, address: str) -> dict[str, Any]:
    """Everything held about ``address``, as one JSON-ready dict (GDPR access)."""
    who = normalise(address)
    entries = people_entries(ws, who)
    t = ws.settings.tracking
    secret = token_secret(ws.root, t.secret_env, t.secret_file, create=False)
    held: dict[str, list[dict[str, Any]]] = {}
    with store.engine.connect() as conn:
        for table in PERSONAL_TABLES:
            held[table.name] = _rows(conn, table, who)
        key = suppression_key(secret, who)
        for r in conn.execute(select(suppressions).where(suppressions.c.email == key)):
            row = {k: _json_value(v) for k, v in r._mapping.items()}
            row["email"] = "(kept as a keyed hash of the address)"
            held["suppressions"].append(row)
        sent_as: list[dict[str, Any]] = []
        for entry in entries:
            if entry.role == "liaison" and entry.person_id:
                rows = conn.execute(
                    select(ledger.c.campaign_id, ledger.c.status, func.count())
                    .where(ledger.c.liaison_id == entry.person_id)
                    .group_by(ledger.c.campaign_id, ledger.c.status)
                    .order_by(ledger.c.campaign_id, ledger.c.status)
                )
                sent_as += [{"campaign_id": c, "status": s, "messages": n} for c, s, n in rows]
    liaison = None
    researcher = next((r for r in ws.researchers if r.email == who), None)
    if researcher is not None:
        from outreach.workspace.segments import SegmentIndex

        owner = SegmentIndex(ws.directory.liaisons.values()).owner(researcher).liaison_id
        owner = researcher.liaison or owner
        person = ws.directory.liaisons.get(owner) if owner else None
        if person is not None:
            liaison = {"id": person.id, "name": person.name, "email": person.email}
    outbox = outbox_files(ws, who)
    preview = preview_files(ws, who)
    data: dict[str, Any] = {
        "email": who,
        "exported_at": datetime.now(UTC).isoformat(),
        "controller": {
            "organisation": ws.settings.organisation.name,
            "service": {"name": ws.settings.service.name, "email": ws.settings.service.email},
        },
        "people": [e.as_dict() for e in entries],
        "liaison": liaison,
        "store": held,
        "files": {
            "outbox": {"count": len(outbox), "paths": [ws.rel(p) for p in outbox]},
            "preview": {"count": len(preview), "paths": [ws.rel(p) for p in preview]},
        },
        "notes": [
            "message bodies of replies are "
            + ("kept (tracking.keep_bodies)" if t.keep_bodies else "not kept")
            + "; opens and clicks are never tracked",
            "Message-IDs carry a token (an HMAC of campaign and address) that matches replies",
        ],
    }
    if sent_as:
        data["sent_in_their_name"] = sent_as
    return data


def holds_anything(data: Mapping[str, Any]) -> bool:
    return bool(
        data["people"]
        or any(data["store"].values())
        or data["files"]["outbox"]["count"]
        or data["files"]["preview"]["count"]
    )


# --------------------------------------------------------------------------- reports


__all__ = [
    "EMAIL_COLUMNS",
    "ForgetPlan",
    "PeopleEntry",
    "describe",
    "export",
    "forget",
    "people_entries",
    "remove_from_people",
]
