"""The store: creation on first use, migrations, and the schema revision guard."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select, text

from outreach.errors import SchemaOutdated
from outreach.store import HEAD_REVISION, alembic_head, open_store


def test_head_constant_matches_alembic() -> None:
    # open_store avoids importing Alembic; this keeps its constant honest.
    assert alembic_head() == HEAD_REVISION


def test_sqlite_made_on_first_use_at_head(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'new.db'}"
    store = open_store(url)
    assert (tmp_path / "new.db").is_file()
    assert store.current_revision() == HEAD_REVISION
    store.close()


def test_older_revision_is_refused_with_the_fix(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    store = open_store(url)
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0000'"))
    store.close()
    with pytest.raises(SchemaOutdated) as info:
        open_store(url)
    assert "outreach db upgrade" in (info.value.hint or "")


def _plan(store: object, sql: str, params: tuple[object, ...] = ()) -> str:
    with store.engine.connect() as conn:  # type: ignore[attr-defined]
        rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", params)
        return " | ".join(row[-1] for row in rows)


def test_the_hot_queries_read_the_partial_ledger_indexes(tmp_path: Path) -> None:
    """SQLite uses a partial index only when the query's WHERE implies the index's: lookups
    built on the predicates the library's queries use (SENT_ROW, IN_FLIGHT_ROW,
    CLAIMABLE_ROW) are planned with their parameters bound, as they are sent."""
    from sqlalchemy.dialects import sqlite

    from outreach.deliver.ledger import Ledger
    from outreach.store.schema import CLAIMABLE_ROW, IN_FLIGHT_ROW, SENT_ROW, ledger

    store = open_store(f"sqlite:///{tmp_path / 'plans.db'}")

    def planned(stmt: object) -> str:
        compiled = stmt.compile(  # type: ignore[attr-defined]
            dialect=sqlite.dialect(), compile_kwargs={"render_postcompile": True}
        )
        params = tuple(compiled.params[name] for name in compiled.positiontup)
        return _plan(store, str(compiled), params)

    from sqlalchemy import func, select

    cases = {
        "ix_ledger_sent_email": select(ledger.c.sent_at).where(
            ledger.c.email.in_(["a@x.org", "b@x.org"]), SENT_ROW
        ),
        "ix_ledger_sent": select(func.min(ledger.c.sent_at)).where(
            ledger.c.campaign_id == "c", SENT_ROW
        ),
        "ix_ledger_inflight": select(func.count()).where(
            ledger.c.campaign_id == "c", IN_FLIGHT_ROW, ledger.c.claimed_by != "w"
        ),
        "ix_ledger_todo": select(func.min(ledger.c.next_attempt_at)).where(
            ledger.c.campaign_id == "c", CLAIMABLE_ROW, ledger.c.status == "deferred"
        ),
        "ix_ledger_msgid": select(ledger.c.email).where(ledger.c.message_id.in_(["<a@x>"])),
    }
    try:
        for index, stmt in cases.items():
            plan = planned(stmt)
            assert index in plan, (index, plan)
        report = (
            "SELECT campaign_id, arm, liaison_id, lang, faculty, department, COUNT(*) "
            "FROM ledger l WHERE l.status = 'sent' GROUP BY campaign_id, arm, liaison_id, "
            "lang, faculty, department"
        )
        plan = _plan(store, report)
        assert "ix_ledger_sent_report" in plan and "TEMP B-TREE" not in plan, plan
        exposure = "SELECT COUNT(DISTINCT l.email) FROM ledger l WHERE l.status = 'sent'"
        plan = _plan(store, exposure)  # the report's exposure count: a covering scan
        assert "COVERING INDEX ix_ledger_sent_email" in plan, plan
        Ledger(store).rows.recover("c")  # the recovery statements run against the new indexes
    finally:
        store.close()


def _schema_of(url: str) -> dict[str, object]:
    """Tables, columns, keys and indexes (their partial predicates too) as the database
    reports them, and the revision it is stamped with."""
    from sqlalchemy import create_engine, inspect

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            seen = inspect(conn)
            out: dict[str, object] = {}
            for table in sorted(seen.get_table_names()):
                out[table] = {
                    "columns": [
                        (c["name"], str(c["type"]), c["nullable"], str(c.get("default")))
                        for c in seen.get_columns(table)
                    ],
                    "pk": seen.get_pk_constraint(table)["constrained_columns"],
                    "unique": sorted(
                        (u["name"], tuple(u["column_names"]))
                        for u in seen.get_unique_constraints(table)
                    ),
                    "indexes": sorted(
                        (
                            i["name"],
                            tuple(i["column_names"]),
                            bool(i["unique"]),
                            sorted(
                                (k, str(v)) for k, v in (i.get("dialect_options") or {}).items()
                            ),
                        )
                        for i in seen.get_indexes(table)
                    ),
                    "foreign": sorted(
                        (f["referred_table"], tuple(f["constrained_columns"]))
                        for f in seen.get_foreign_keys(table)
                    ),
                }
            out["revision"] = conn.exec_driver_sql("SELECT version_num FROM alembic_version").all()
            return out
    finally:
        engine.dispose()


def test_a_new_database_is_built_as_the_migrations_build_it(
    tmp_path: Path, store_url: str | None
) -> None:
    """``open_store`` builds a new database from schema.py and stamps the head without
    Alembic; the same schema results from running every migration from nothing, and
    Alembic finds nothing to change on it."""
    if store_url is None:
        _compare_direct_and_migrated(
            f"sqlite:///{tmp_path / 'direct.db'}", f"sqlite:///{tmp_path / 'migrated.db'}"
        )
        return
    from tests.store_helpers import pg_database

    with pg_database() as migrated:
        _compare_direct_and_migrated(store_url, migrated)


def _compare_direct_and_migrated(direct: str, migrated: str) -> None:
    from alembic import command
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlalchemy import create_engine

    from outreach.store import _alembic_config
    from outreach.store.schema import metadata

    # In a process of its own, to see what it imports: a new database costs no Alembic.
    made = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from outreach.store import open_store; "
            f"open_store({direct!r}).close(); print('alembic' in sys.modules)",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert made.stdout.strip() == "False", made.stdout + made.stderr

    engine = create_engine(migrated)
    with engine.begin() as conn:
        command.upgrade(_alembic_config(engine, conn), "head")
    engine.dispose()

    assert _schema_of(direct) == _schema_of(migrated)
    assert _schema_of(direct)["revision"] == [(HEAD_REVISION,)]
    engine = create_engine(direct)
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []
    engine.dispose()


def test_hot_writes_store_what_core_stores_with_shared_and_own_times(
    tmp_path: Path, store_url: str | None
) -> None:
    """HotRun runs compiled Core statements with the column types' bind processors, and
    processes a time object shared by the rows of one executemany once: every row must
    hold what SQLAlchemy Core writes for the same statement and values."""
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import bindparam, select, update

    from outreach.deliver.rows import LedgerRows, PlannedRow
    from outreach.store.schema import ledger

    store = open_store(store_url or f"sqlite:///{tmp_path / 'o.db'}")
    rows = LedgerRows(store)
    rows.add_missing(
        "c", [PlannedRow(f"r{i}@uni.example", "a", "a", "liaison", "fi") for i in range(8)]
    )
    ids = sorted(w.id for w in rows.claim("c", "me", 8))
    stmt = (
        update(ledger)
        .where(ledger.c.id == bindparam("row_id"))
        .values(
            updated_at=bindparam("now"), next_attempt_at=bindparam("later"), reason=bindparam("why")
        )
    )
    shared = datetime(2027, 1, 15, 7, 0, 0, 123456, tzinfo=UTC)

    def params(row_ids: list[int]) -> list[dict[str, object]]:
        # every row shares `now`; each has a `later` of its own, one of them equal to `now`
        return [
            {"row_id": r, "now": shared, "later": shared + timedelta(seconds=i), "why": f"w{i}"}
            for i, r in enumerate(row_ids)
        ]

    with store.hot.transaction() as run:
        assert run.many(stmt, params(ids[:4])) == 4
    with store.engine.begin() as conn:
        conn.execute(stmt, params(ids[4:]))
    with store.engine.connect() as conn:
        got = {
            r.id: (r.updated_at, r.next_attempt_at, r.reason)
            for r in conn.execute(
                select(ledger.c.id, ledger.c.updated_at, ledger.c.next_attempt_at, ledger.c.reason)
            )
        }
        raw = [
            tuple(r)
            for r in conn.exec_driver_sql(
                "SELECT updated_at, next_attempt_at, reason FROM ledger ORDER BY id"
            )
        ]
    assert [got[i] for i in ids[:4]] == [got[i] for i in ids[4:]]
    assert raw[:4] == raw[4:]  # the very same stored form, not only the same values read back
    assert len({got[i][1] for i in ids[:4]}) == 4
    store.close()


def test_a_run_hands_back_its_unsent_claims_in_one_go_and_only_its_own(
    tmp_path: Path, store_url: str | None
) -> None:
    """At the end of a run the rows still queued go back to `planned` together; a row
    another worker holds, or one already `sending`, is left as it is."""
    from outreach.deliver.hot_marks import Route
    from outreach.deliver.rows import LedgerRows, PlannedRow
    from outreach.store.schema import ledger

    store = open_store(store_url or f"sqlite:///{tmp_path / 'o.db'}")
    rows = LedgerRows(store)
    rows.route = Route("smtp", "127.0.0.1:25")
    rows.add_missing(
        "c", [PlannedRow(f"r{i}@uni.example", "a", "a", "liaison", "fi") for i in range(6)]
    )
    mine = [w.id for w in rows.claim("c", "me", 4)]
    theirs = [w.id for w in rows.claim("c", "other", 2)]
    assert rows.mark_sending(mine[0], "<m0@uni.example>", "me")
    assert rows.release_many([*mine, *theirs], "me") == 3
    with store.engine.connect() as conn:
        status = dict(conn.execute(select(ledger.c.id, ledger.c.status)).all())
    assert [status[i] for i in mine] == ["sending", "planned", "planned", "planned"]
    assert [status[i] for i in theirs] == ["claimed", "claimed"]
    assert rows.release_many([], "me") == 0
    store.close()


def test_insert_new_counts_only_the_rows_it_inserted(tmp_path: Path, store_url: str | None) -> None:
    """Rows already there (another worker's) are left as they are and not counted; two
    column sets for one table are two statements."""
    from datetime import UTC, datetime

    from outreach.store.schema import arms

    store = open_store(store_url or f"sqlite:///{tmp_path / 'o.db'}")
    when = datetime(2027, 1, 15, tzinfo=UTC)

    def row(email: str, arm: str, **more: object) -> dict[str, object]:
        return {"experiment": "e", "email": email, "arm": arm, "assigned_at": when, **more}

    assert (
        store.insert_new(arms, [row("a@x.example", "liaison"), row("b@x.example", "service")]) == 2
    )
    again = [row("b@x.example", "liaison"), row("c@x.example", "liaison")]
    assert store.insert_new(arms, again) == 1
    assert store.insert_new(arms, [row("d@x.example", "service", liaison_id="aino")]) == 1
    assert store.insert_new(arms, []) == 0
    with store.engine.connect() as conn:
        got = {r.email: (r.arm, r.liaison_id) for r in conn.execute(select(arms))}
    assert got == {
        "a@x.example": ("liaison", None),
        "b@x.example": ("service", None),  # the first insert won
        "c@x.example": ("liaison", None),
        "d@x.example": ("service", "aino"),
    }
    store.close()
