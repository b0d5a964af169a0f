"""Benchmark: the full reply report over 1,000,000 ledger rows and 200,000 responses.

    python bench/bench_report.py [--rows 1000000] [--responses 200000] [--repeat 3]
                                 [--no-pg] [--keep DIR] [--profile]

Generates a synthetic store (five campaigns, three of them randomised splits, over two
years; 200,000 researchers with ten liaisons, four faculties, twelve departments, three
languages; replies, repeated replies, late replies, auto-replies, hard and soft bounces,
unsubscribes, inbound mail, meetings) in SQLite, and in PostgreSQL when the server on
127.0.0.1:5432 answers (in a schema of its own, dropped afterwards). Then, for each store:

* ``build_report`` (the library call: all SQL plus the statistics), best of N;
* the whole CLI, ``outreach -w WS report --format json`` in a fresh process (start-up,
  settings, the report, JSON to stdout), best of N;
* a naive baseline in the same run: every ledger and response row loaded into Python and
  the per-arm and per-liaison reply rates computed in loops (what the report avoids).

The baseline's per-arm figures must equal the report's: a cheap cross-check at scale.
Prints ``RESULT report_sqlite_seconds=… report_pg_seconds=… baseline_seconds=…`` (the CLI
figures; the target is at most 3 s on each) and the library-call figures.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import random
import resource
import secrets
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

TARGET_SECONDS = 3.0
WINDOW_DAYS = 30
PG_SERVER = "postgresql://postgres@127.0.0.1:5432/test"
T0 = datetime(2025, 1, 13, 8, 0, tzinfo=UTC)
LIAISONS = [f"liaison{i}" for i in range(10)]
CAMPAIGNS = [  # id, sender mode, experiment, start
    ("split-2025", "split", "ff-2025", T0),
    ("news-2025", "liaison", None, T0 + timedelta(days=120)),
    ("split-2026", "split", "ff-2026", T0 + timedelta(days=365)),
    ("news-2026", "liaison", None, T0 + timedelta(days=480)),
    ("split-2026b", "split", "ff-2026", T0 + timedelta(days=600)),
]
LEDGER_COLUMNS = (
    "campaign_id", "email", "liaison_id", "sender_id", "arm", "lang", "faculty", "department",
    "prior_contacts", "status", "message_id", "attempts", "created_at", "updated_at", "sent_at",
)  # fmt: skip
RESPONSE_COLUMNS = (
    "incoming_id", "kind", "email", "from_address", "campaign_id", "match", "received_at",
    "ingested_at",
)  # fmt: skip


# -- the synthetic data ------------------------------------------------------------------


def generate(rows: int, n_responses: int, seed: int = 2026) -> tuple[list[tuple], list[tuple]]:
    """Ledger and response rows as tuples of Python values (datetimes aware, UTC)."""
    rng = random.Random(seed)
    per_campaign = rows // len(CAMPAIGNS)
    researchers = max(per_campaign, 1)
    ledger: list[tuple] = []
    prior: dict[int, int] = defaultdict(int)
    arm_of: list[str] = []
    for c, (cid, mode, _experiment, start) in enumerate(CAMPAIGNS):
        count = per_campaign if c < len(CAMPAIGNS) - 1 else rows - per_campaign * c
        for j in range(count):
            r = j % researchers
            liaison = LIAISONS[r % len(LIAISONS)]
            arm = ("service" if rng.random() < 0.5 else "liaison") if mode == "split" else mode
            sent = start + timedelta(seconds=rng.randint(0, 5 * 86400))
            ok = rng.random() > 0.01
            ledger.append(
                (
                    cid,
                    f"r{r:06d}@uni.example",
                    liaison,
                    liaison if arm == "liaison" else "service",
                    arm,
                    ("fi", "sv", "en")[r % 3],
                    f"Faculty {r % 4}",
                    f"Department {r % 12}",
                    prior[r] if arm == "liaison" else 0,
                    "sent" if ok else "failed",
                    f"<{c}.{j}.{cid}@uni.example>",
                    1,
                    sent,
                    sent,
                    sent if ok else None,
                )
            )
            arm_of.append(arm)
            if ok and arm == "liaison":
                prior[r] += 1
    responses: list[tuple] = []
    inbound = n_responses // 50
    matched = n_responses - inbound
    now = T0 + timedelta(days=800)
    n = 0
    # the personal arm replies more often: weight its rows up when drawing who answers
    for i in rng.sample(range(len(ledger)), k=min(matched, len(ledger))):
        if n >= matched:
            break
        row = ledger[i]
        sent = row[14] or row[12]
        u = rng.random()
        personal = row[4] == "liaison"
        if u < (0.62 if personal else 0.48):
            kinds = [("reply", timedelta(minutes=rng.randint(5, 600 * 60)))]
            if rng.random() < 0.1:
                kinds.append(("reply", timedelta(days=rng.randint(1, 20))))
        elif u < 0.70:
            kinds = [("reply", timedelta(days=rng.randint(31, 90)))]  # late
        elif u < 0.86:
            kinds = [("auto_reply", timedelta(minutes=1))]
        elif u < 0.93:
            kinds = [("bounce_hard", timedelta(minutes=2))]
        elif u < 0.97:
            kinds = [("bounce_soft", timedelta(minutes=2))]
        else:
            kinds = [("unsubscribe", timedelta(days=1))]
        for kind, delay in kinds:
            responses.append(
                (
                    f"<in{n}@mail.example>",
                    kind,
                    row[1],
                    row[1],
                    row[0],
                    "message-id",
                    sent + delay,
                    now,
                )
            )
            n += 1
    for k in range(n_responses - n):
        email = f"r{rng.randrange(researchers):06d}@uni.example"
        when = T0 + timedelta(days=rng.randint(0, 700))
        responses.append(
            (f"<inb{k}@mail.example>", "inbound", email, email, None, "none", when, now)
        )
    return ledger, responses


def _campaign_rows() -> list[dict[str, Any]]:
    return [
        {
            "id": cid,
            "title": cid,
            "sender_mode": mode,
            "experiment": experiment,
            "randomised": mode == "split",
            "fingerprint": "0" * 64,
            "definition": "{}",
            "created_at": start,
        }
        for cid, mode, experiment, start in CAMPAIGNS
    ]


def _sqlite_time(value: datetime | None) -> str | None:
    # exactly what SQLAlchemy's SQLite DateTime writes (UTC wall time, microseconds)
    return None if value is None else value.strftime("%Y-%m-%d %H:%M:%S.%f")


def fill_sqlite(path: Path, ledger: list[tuple], responses: list[tuple]) -> str:
    from sqlalchemy import insert

    from outreach.store import open_store
    from outreach.store.schema import campaigns

    url = f"sqlite:///{path}"
    store = open_store(url)
    with store.engine.begin() as conn:
        conn.execute(insert(campaigns), _campaign_rows())
    store.close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA cache_size=-1048576")  # 1 GiB: index pages stay in memory
    db.execute("PRAGMA synchronous=OFF")
    secondary = _drop_indexes(lambda sql: db.execute(sql), "sqlite")
    with db:
        db.executemany(
            f"INSERT INTO ledger ({', '.join(LEDGER_COLUMNS)}) "
            f"VALUES ({', '.join('?' * len(LEDGER_COLUMNS))})",
            (r[:12] + tuple(_sqlite_time(t) for t in r[12:]) for r in ledger),
        )
        db.executemany(
            f"INSERT INTO responses ({', '.join(RESPONSE_COLUMNS)}) "
            f"VALUES ({', '.join('?' * len(RESPONSE_COLUMNS))})",
            (r[:6] + (_sqlite_time(r[6]), _sqlite_time(r[7])) for r in responses),
        )
    with db:
        for sql in secondary:
            db.execute(sql)
    db.execute("ANALYZE")
    db.close()
    return url


def _drop_indexes(execute: Callable[[str], Any], dialect_name: str) -> list[str]:
    """Drop the secondary indexes of ledger and responses (loading is faster without them);
    return the statements that recreate them exactly as the schema defines them."""
    from sqlalchemy.dialects import postgresql, sqlite
    from sqlalchemy.schema import CreateIndex

    from outreach.store.schema import ledger, responses

    dialect = postgresql.dialect() if dialect_name == "postgresql" else sqlite.dialect()
    out = []
    for table in (ledger, responses):
        for index in table.indexes:
            if index.unique:
                continue
            execute(f"DROP INDEX {index.name}")
            out.append(str(CreateIndex(index).compile(dialect=dialect)))
    return out


def pg_reachable() -> str | None:
    try:
        import psycopg

        psycopg.connect(PG_SERVER, connect_timeout=3).close()
    except Exception as exc:  # unreachable, not installed, refused: no PostgreSQL run
        return f"{type(exc).__name__}: {exc}".strip()
    return None


@contextmanager
def pg_schema() -> Iterator[str]:
    import psycopg

    name = f"outreach_bench_{secrets.token_hex(4)}"
    with psycopg.connect(PG_SERVER, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{name}"')
    try:
        yield f"{PG_SERVER}?options=-csearch_path%3D{name}"
    finally:
        with psycopg.connect(PG_SERVER, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def fill_pg(url: str, ledger: list[tuple], responses: list[tuple]) -> None:
    import psycopg
    from sqlalchemy import insert

    from outreach.store import open_store
    from outreach.store.schema import campaigns

    store = open_store(url)
    with store.engine.begin() as conn:
        conn.execute(insert(campaigns), _campaign_rows())
    store.close()
    schema = url.rsplit("%3D", 1)[1]
    with psycopg.connect(PG_SERVER, options=f"-csearch_path={schema}") as conn:
        secondary = _drop_indexes(lambda sql: conn.execute(sql), "postgresql")
        with conn.cursor() as cur:
            with cur.copy(f"COPY ledger ({', '.join(LEDGER_COLUMNS)}) FROM STDIN") as copy:
                for row in ledger:
                    copy.write_row(row)
            with cur.copy(f"COPY responses ({', '.join(RESPONSE_COLUMNS)}) FROM STDIN") as copy:
                for row in responses:
                    copy.write_row(row)
        for sql in secondary:
            conn.execute(sql)
        conn.commit()
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE ledger")
        conn.execute("VACUUM ANALYZE responses")


# -- what is timed -------------------------------------------------------------------------


def best_of(repeat: int, fn: Callable[[], Any]) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def library_report(url: str) -> dict[str, Any]:
    from outreach.report.build import build_report
    from outreach.store import open_store

    store = open_store(url)
    try:
        return build_report(store, WINDOW_DAYS)
    finally:
        store.close()


def workspace(folder: Path, url: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "outreach.yaml").write_text(
        "organisation: {name: Bench University Library, domain: uni.example}\n"
        "service: {name: Research Data Services, email: rds@uni.example}\n"
        "languages: [fi, sv, en]\ndefault_language: en\n"
        f"database: {url}\n"
        f"tracking: {{reply_window_days: {WINDOW_DAYS}}}\n",
        encoding="utf-8",
    )
    (folder / "people").mkdir(exist_ok=True)
    (folder / "people" / "liaisons.yaml").write_text(
        "".join(f"- id: {x}\n  name: {x}\n  email: {x}@uni.example\n" for x in LIAISONS),
        encoding="utf-8",
    )
    (folder / "people" / "researchers.csv").write_text("email,name\n", encoding="utf-8")
    return folder


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cli_report(root: Path) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTREACH_")}
    done = subprocess.run(
        [sys.executable, "-c", "from outreach.cli import main; main()", "-w", str(root), "report"]
        + ["--format", "json"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"outreach report failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def baseline(url: str) -> dict[str, Any]:
    """Everything into Python, then loops: per-arm and per-liaison reply rates."""
    from sqlalchemy import select

    from outreach.store import open_store
    from outreach.store.schema import ledger, responses

    store = open_store(url)
    try:
        with store.engine.connect() as conn:
            mails = conn.execute(
                select(
                    ledger.c.campaign_id,
                    ledger.c.email,
                    ledger.c.arm,
                    ledger.c.liaison_id,
                    ledger.c.status,
                    ledger.c.sent_at,
                )
            ).all()
            answers = conn.execute(
                select(
                    responses.c.campaign_id,
                    responses.c.email,
                    responses.c.kind,
                    responses.c.received_at,
                    responses.c.ingested_at,
                )
            ).all()
    finally:
        store.close()
    first_reply: dict[tuple[str, str], datetime] = {}
    hard: set[tuple[str, str]] = set()
    for cid, email, kind, received, ingested in answers:
        if cid is None:
            continue
        key = (cid, email)
        if kind == "bounce_hard":
            hard.add(key)
        elif kind == "reply":
            t = _aware(received or ingested)
            if key not in first_reply or t < first_reply[key]:
                first_reply[key] = t
    window = timedelta(days=WINDOW_DAYS)
    arms: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    liaisons: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for cid, email, arm, liaison, status, sent_at in mails:
        if status != "sent":
            continue
        key = (cid, email)
        if key in hard:
            continue
        t = first_reply.get(key)
        replied = t is not None and t - _aware(sent_at) <= window
        arms[arm][0] += 1
        arms[arm][1] += replied
        if arm == "liaison":
            liaisons[liaison or ""][0] += 1
            liaisons[liaison or ""][1] += replied
    return {
        "arms": {a: {"delivered": d, "replied": r} for a, (d, r) in arms.items()},
        "liaisons": {x: {"delivered": d, "replied": r} for x, (d, r) in liaisons.items()},
    }


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def cross_check(report: dict[str, Any], base: dict[str, Any], name: str) -> None:
    for arm, figures in base["arms"].items():
        got = report["arms"][arm]
        mine = (got["delivered"], got["replied"])
        theirs = (figures["delivered"], figures["replied"])
        assert mine == theirs, f"{name} {arm}: report {mine} != baseline {theirs}"
    got_l = {e["id"]: (e["delivered"], e["replied"]) for e in report["liaisons"]}
    want_l = {k: (v["delivered"], v["replied"]) for k, v in base["liaisons"].items()}
    assert got_l == want_l, f"{name}: per-liaison figures differ from the baseline"


# -- main ------------------------------------------------------------------------------------


def measure(name: str, url: str, folder: Path, repeat: int, profile: bool) -> dict[str, float]:
    import json

    lib_s, report = best_of(repeat, lambda: library_report(url))
    root = workspace(folder / f"ws-{name}", url)
    cpu_before = children_cpu()
    cli_s, out = best_of(repeat, lambda: cli_report(root))
    cli_cpu = (children_cpu() - cpu_before) / repeat  # the client's CPU, mean of the runs
    parsed = json.loads(out)
    assert parsed["arms"] == report["arms"], f"{name}: CLI and library disagree"
    base_s, base = best_of(1 if repeat > 1 else repeat, lambda: baseline(url))
    cross_check(report, base, name)
    t = report["total"]
    print(
        f"{name:10s} build_report {lib_s:6.2f} s   CLI report --format json {cli_s:6.2f} s "
        f"(client CPU {cli_cpu:.2f} s)   baseline {base_s:6.2f} s\n"
        f"{'':10s} ({t['sent']} sent, {t['replied']} replied, "
        f"difference {report['difference']['estimate']:+.4f}, "
        f"CMH strata {report['difference']['stratified']['strata']})"
    )
    if profile:
        prof = cProfile.Profile()
        prof.runcall(library_report, url)
        pstats.Stats(prof).sort_stats("cumulative").print_stats(15)
    return {"lib": lib_s, "cli": cli_s, "baseline": base_s, "cpu": cli_cpu}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--responses", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-pg", action="store_true", help="SQLite only")
    ap.add_argument("--keep", type=Path, help="keep the SQLite store and workspace in DIR")
    ap.add_argument("--profile", action="store_true", help="profile one build_report")
    args = ap.parse_args()

    folder = args.keep or Path(tempfile.mkdtemp(prefix="outreach-bench-report-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        start = time.perf_counter()
        ledger, responses = generate(args.rows, args.responses)
        print(
            f"generated {len(ledger)} ledger rows and {len(responses)} responses "
            f"in {time.perf_counter() - start:.1f} s"
        )
        start = time.perf_counter()
        db = folder / "report.db"
        if db.exists():
            db.unlink()
        sqlite_url = fill_sqlite(db, ledger, responses)
        print(f"SQLite store filled in {time.perf_counter() - start:.1f} s")
        results = {"sqlite": measure("sqlite", sqlite_url, folder, args.repeat, args.profile)}
        why_not = "skipped (--no-pg)" if args.no_pg else pg_reachable()
        if why_not is None:
            with pg_schema() as pg_url:
                start = time.perf_counter()
                fill_pg(pg_url, ledger, responses)
                print(f"PostgreSQL store filled in {time.perf_counter() - start:.1f} s")
                results["pg"] = measure("postgresql", pg_url, folder, args.repeat, args.profile)
        else:
            print(f"PostgreSQL on 127.0.0.1:5432 not measured: {why_not}")
    finally:
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)

    pg = results.get("pg")
    fields = [
        f"report_sqlite_seconds={results['sqlite']['cli']:.3f}",
        f"report_pg_seconds={pg['cli']:.3f}" if pg else "report_pg_seconds=NA",
        f"baseline_seconds={results['sqlite']['baseline']:.3f}",
        f"build_sqlite_seconds={results['sqlite']['lib']:.3f}",
        f"build_pg_seconds={pg['lib']:.3f}" if pg else "build_pg_seconds=NA",
        f"baseline_pg_seconds={pg['baseline']:.3f}" if pg else "baseline_pg_seconds=NA",
        f"cli_cpu_sqlite_seconds={results['sqlite']['cpu']:.3f}",
        f"rows={args.rows}",
        f"responses={args.responses}",
    ]
    print("RESULT " + " ".join(fields))
    slow = [k for k, v in results.items() if v["cli"] > TARGET_SECONDS]
    if slow:
        print(f"over the {TARGET_SECONDS:.0f} s target: {', '.join(slow)}")
    return 1 if slow else 0


if __name__ == "__main__":
    sys.exit(main())
