"""Benchmark: one-click opt-outs per second against ``outreach serve`` on PostgreSQL.

    python bench/bench_unsubscribe.py [--recipients 30000] [--seconds 8] [--concurrency 16]
                                      [--workers CORES]

A workspace (the example's settings and people) whose store, a fresh PostgreSQL schema on
127.0.0.1:5432, holds one sent campaign of N recipients: each ledger row has the
Message-ID its token names, as ``send`` writes it. ``outreach serve`` runs as its own
process on 127.0.0.1 (uvicorn, no access log); a load generator in this process keeps C
HTTP/1.1 keep-alive connections busy for a bounded time (``outreach serve --workers``: one
process per core by default, as docs/SERVE.md runs it), each request the RFC 8058 POST
of a different recipient (``List-Unsubscribe=One-Click``, urlencoded, as Gmail sends it),
so every accepted request is a new opt-out: the token checked against the ledger, the
suppression and the ``responses`` row written and committed before the answer.

Baseline in the same run: a bare Starlette endpoint under the same uvicorn, doing only the
suppression's ``INSERT … ON CONFLICT DO NOTHING`` (no token, no ledger lookup, no page).

Afterwards the store is counted: every accepted opt-out must be there (none lost).
Target (issue 19): at least 1,000 opt-outs/s with p99 under 50 ms on this machine.
Prints ``RESULT optouts_per_second=… p50_ms=… p99_ms=… accepted=… stored=… lost=…
baseline_per_second=… baseline_p99_ms=…``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_report import pg_reachable, pg_schema  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SECRET = "bench-unsubscribe-secret"
CAMPAIGN = "bench-optout-2026"
DOMAIN = "uni.example"
BODY = b"List-Unsubscribe=One-Click"
TARGET_RATE, TARGET_P99_MS = 1000.0, 50.0
_LENGTH = re.compile(rb"content-length:\s*(\d+)", re.I)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def workspace(folder: Path, url: str) -> Path:
    for part in ("outreach.yaml", "people", "campaigns"):
        src = REPO / part
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, folder / part)
    cfg = yaml.safe_load((folder / "outreach.yaml").read_text(encoding="utf-8"))
    cfg["database"] = url
    (folder / "outreach.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return folder


def fill_ledger(url: str, n: int) -> list[str]:
    """N sent messages of one campaign, as ``send`` leaves them; their unsubscribe paths."""
    from sqlalchemy import insert

    from outreach.message.tokens import message_id, message_token
    from outreach.store import open_store
    from outreach.store.schema import campaigns, ledger

    store = open_store(url)
    now = datetime.now(UTC)
    paths, rows = [], []
    for i in range(n):
        email = f"optout.{i:07d}@{DOMAIN}"
        token = message_token(SECRET.encode(), CAMPAIGN, email)
        paths.append(f"/unsubscribe?t={token}&c={CAMPAIGN}")
        rows.append(
            {
                "campaign_id": CAMPAIGN,
                "email": email,
                "liaison_id": "lars",
                "sender_id": "lars",
                "arm": "liaison",
                "lang": ("fi", "sv", "en")[i % 3],
                "status": "sent",
                "message_id": message_id(token, CAMPAIGN, DOMAIN),
                "attempts": 1,
                "created_at": now,
                "updated_at": now,
                "sent_at": now,
            }
        )
    with store.engine.begin() as conn:
        conn.execute(
            insert(campaigns).values(
                id=CAMPAIGN,
                title="bench",
                sender_mode="liaison",
                fingerprint="0" * 64,
                definition="{}",
                created_at=now,
            )
        )
        for start in range(0, n, 5000):
            conn.execute(insert(ledger), rows[start : start + 5000])
        conn.exec_driver_sql("ANALYZE ledger")
    store.close()
    return paths


@contextmanager
def server(args: list[str], port: int, env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
                    raise SystemExit(f"the server did not start:\n{out}") from None
                time.sleep(0.1)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


@dataclass
class Load:
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    server_cpu: float = 0.0  # CPU seconds the server process used meanwhile
    postgres_cpu: float = 0.0  # and PostgreSQL
    client_cpu: float = 0.0  # and this load generator
    busy_cores: float = 0.0  # the whole machine's busy cores on average (others' work too)

    def per_request(self, seconds: float) -> float:
        return seconds * 1000 / self.statuses[200] if self.statuses[200] else 0.0

    @property
    def ceiling(self) -> float:
        """Opt-outs per second this machine's cores could carry were nothing else running:
        cores / (server + PostgreSQL + load generator CPU per opt-out)."""
        work = self.per_request(self.server_cpu + self.postgres_cpu + self.client_cpu)
        return (os.cpu_count() or 1) * 1000 / work if work else 0.0

    @property
    def cpu_ms(self) -> float:
        """The server's CPU per accepted request."""
        return self.per_request(self.server_cpu)

    @property
    def rate(self) -> float:
        return self.statuses[200] / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def _connection(port: int, requests: Iterator[bytes], load: Load, deadline: float) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.monotonic() < deadline:
            request = next(requests, None)
            if request is None:
                return
            start = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = _LENGTH.search(head)
            await reader.readexactly(int(length.group(1)) if length else 0)
            load.latencies.append(time.perf_counter() - start)
            load.statuses[int(head[9:12])] += 1
    finally:
        writer.close()


def measured(pid: int, port: int, paths: list[str], seconds: float, concurrency: int) -> Load:
    """``generate``, with the CPU each part used meanwhile."""
    server, postgres, client = cpu_seconds(pid), postgres_cpu(), time.process_time()
    machine = busy_jiffies()
    load = generate(port, paths, seconds, concurrency)
    after = busy_jiffies()
    load.server_cpu = cpu_seconds(pid) - server
    load.postgres_cpu = postgres_cpu() - postgres
    load.client_cpu = time.process_time() - client
    total = after[1] - machine[1]
    load.busy_cores = (os.cpu_count() or 1) * (after[0] - machine[0]) / total if total else 0.0
    return load


def generate(port: int, paths: list[str], seconds: float, concurrency: int) -> Load:
    """POST each path once, on ``concurrency`` keep-alive connections, for at most
    ``seconds`` (or until every path is used)."""
    host = f"127.0.0.1:{port}"
    requests = (
        (
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {len(BODY)}\r\n\r\n"
        ).encode()
        + BODY
        for path in paths
    )
    load = Load()

    async def run() -> None:
        deadline = time.monotonic() + seconds
        start = time.perf_counter()
        await asyncio.gather(
            *(_connection(port, requests, load, deadline) for _ in range(concurrency))
        )
        load.seconds = time.perf_counter() - start

    asyncio.run(run())
    return load


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its children so far (/proc)."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(x) for x in children.read_text().split()]
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def postgres_cpu() -> float:
    """CPU seconds of every PostgreSQL process so far (the server and its backends)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            name, rest = stat.read_text().split(") ", 1)
        except (OSError, ValueError):
            continue
        if name.endswith("(postgres"):
            fields = rest.split()
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def busy_jiffies() -> tuple[int, int]:
    """(busy, total) CPU time of the whole machine so far, from /proc/stat."""
    with open("/proc/stat", encoding="ascii") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields[:8]) - idle, sum(fields[:8])


def count(url: str, sql: str) -> int:
    from outreach.store import make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.exec_driver_sql(sql).scalar_one())
    finally:
        engine.dispose()


# --------------------------------------------------------------------------- the baseline


def baseline_app(url: str) -> object:
    """A bare Starlette endpoint doing only the suppression's INSERT."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from outreach.store import open_store
    from outreach.store.schema import suppressions

    store = open_store(url)

    def insert(email: str) -> None:
        with store.engine.begin() as conn:
            conn.execute(
                store.insert_ignore(suppressions).values(
                    email=email,
                    reason="unsubscribe",
                    source="baseline",
                    created_at=datetime.now(UTC),
                )
            )

    async def optout(request: Request) -> PlainTextResponse:
        await request.body()
        await run_in_threadpool(insert, request.query_params["t"] + "@baseline")
        return PlainTextResponse("ok")

    return Starlette(routes=[Route("/unsubscribe", optout, methods=["POST"])])


def report(name: str, load: Load) -> None:
    print(
        f"{name:>9}: {load.statuses[200]:>6} accepted in {load.seconds:.2f} s = "
        f"{load.rate:,.0f}/s; p50 {load.percentile(0.5):.1f} ms, "
        f"p99 {load.percentile(0.99):.1f} ms, max {load.percentile(1.0):.1f} ms; "
        f"CPU per request: server {load.cpu_ms:.2f} ms, PostgreSQL "
        f"{load.per_request(load.postgres_cpu):.2f} ms, load generator "
        f"{load.per_request(load.client_cpu):.2f} ms: {load.ceiling:,.0f}/s on idle cores; "
        f"machine busy {load.busy_cores:.1f} cores; "
        f"other answers {dict((k, v) for k, v in load.statuses.items() if k != 200)}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipients", type=int, default=30_000)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--baseline-server", nargs=2, metavar=("PORT", "URL"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.baseline_server:
        import uvicorn

        port, url = args.baseline_server
        app = baseline_app(url)
        uvicorn.run(app, host="127.0.0.1", port=int(port), access_log=False, log_level="warning")  # type: ignore[arg-type]
        return 0
    load_before = os.getloadavg()[0]
    why = pg_reachable()
    if why:
        print(f"PostgreSQL on 127.0.0.1:5432 is not reachable: {why}")
        return 1
    env = {**os.environ, "OUTREACH_SECRET": SECRET}
    env.pop("OUTREACH_DATABASE_URL", None)
    with tempfile.TemporaryDirectory(prefix="bench-unsubscribe-") as tmp, pg_schema() as url:
        root = workspace(Path(tmp), url)
        started = time.perf_counter()
        paths = fill_ledger(url, args.recipients)
        print(f"ledger: {len(paths):,} sent messages in {time.perf_counter() - started:.1f} s")

        port = free_port()
        command = [
            sys.executable,
            "-c",
            "import sys; from outreach.cli import main; sys.exit(main())",
        ]
        serve = [*command, "-w", str(root), "serve", "--port", str(port), "--log-level", "warning"]
        if args.workers > 1:
            serve += ["--workers", str(args.workers)]
        with server(serve, port, env) as proc:
            warm = generate(port, paths[:200], 2.0, 4)  # warm up: connections, caches
            load = measured(proc.pid, port, paths[200:], args.seconds, args.concurrency)
        stored = count(
            url, f"SELECT count(*) FROM suppressions WHERE source = 'one-click:{CAMPAIGN}'"
        )
        answered = count(url, "SELECT count(*) FROM responses WHERE kind = 'unsubscribe'")
        accepted = load.statuses[200] + warm.statuses[200]
        lost = accepted - stored

        port = free_port()
        base_cmd = [sys.executable, __file__, "--baseline-server", str(port), url]
        with server(base_cmd, port, env) as proc:
            base_warm = generate(port, [f"/unsubscribe?t=warm{i}" for i in range(200)], 2.0, 4)
            base = measured(
                proc.pid,
                port,
                [f"/unsubscribe?t=base{i}" for i in range(args.recipients)],
                args.seconds,
                args.concurrency,
            )
        base_stored = count(url, "SELECT count(*) FROM suppressions WHERE source = 'baseline'")

    print(
        f"concurrency {args.concurrency}, {args.workers} worker process(es), "
        f"{args.seconds:.0f} s each; load average before: {load_before:.1f} on "
        f"{os.cpu_count()} cores"
    )
    report("serve", load)
    report("baseline", base)
    base_accepted = base.statuses[200] + base_warm.statuses[200]
    print(
        f"store: {stored:,} suppressions and {answered:,} responses for {accepted:,} accepted "
        f"(warm-up included); baseline stored {base_stored:,} of {base_accepted:,}"
    )
    ok = load.rate >= TARGET_RATE and load.percentile(0.99) < TARGET_P99_MS and lost == 0
    print(
        f"target {TARGET_RATE:,.0f}/s with p99 < {TARGET_P99_MS:.0f} ms, none lost: "
        f"{'met' if ok else 'NOT met'}"
    )
    print(
        f"RESULT optouts_per_second={load.rate:.0f} p50_ms={load.percentile(0.5):.1f} "
        f"p99_ms={load.percentile(0.99):.1f} accepted={accepted} stored={stored} lost={lost} "
        f"baseline_per_second={base.rate:.0f} baseline_p99_ms={base.percentile(0.99):.1f} "
        f"server_cpu_ms={load.cpu_ms:.2f} baseline_cpu_ms={base.cpu_ms:.2f} "
        f"idle_ceiling_per_second={load.ceiling:.0f} busy_cores={load.busy_cores:.1f}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
