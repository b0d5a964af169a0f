"""What the sending benchmarks share: a generated workspace as a user would write it
(N researchers, limits and transport in outreach.yaml), Postfix's smtp-sink, ``outreach
send`` run as a subprocess and timed whole, and mailmerge (PyPI) as the baseline.

Nothing here reaches into the library: the benchmarks run the command users run.
"""

from __future__ import annotations

import csv
import io
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

LIAISON_ONLY = "rdm-launch-2026"  # the liaison's face + the introduced expert's, HTML + text
SPLIT = "familiar-faces-2027"  # half from the liaisons, half from the service address
SERVICE_ONLY = "service-only"  # one mailbox: the split campaign sent by the service alone
FACULTIES = ("Medicine", "Pharmacy", "Science")  # the campaigns' audience
FIRST = ["Aino", "Eeva", "Ville", "Päivi", "Åsa", "Björn", "Sofía", "Emily", "Liam", "Zoë"]
LAST = ["Virtanen", "Mäkinen", "Ström", "Ekström", "O'Brien", "Korhonen", "Åberg", "Müller"]
# What a user writes to lift pacing for a relay that needs none: a rate no run reaches.
UNBOUND = {"per_sender_per_minute": 1_000_000, "per_sender_per_day": 1_000_000}
OUTCOME = re.compile(r"(\S+): sent (\d+), deferred (\d+), failed (\d+), uncertain (\d+)")


def example_root() -> Path:
    from outreach.workspace.example import example_root as root

    return root()


def outreach_command() -> list[str]:
    """``outreach``, the console script beside this Python (the one a user runs)."""
    script = Path(sys.executable).parent / "outreach"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from outreach.cli import main; sys.exit(main())"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[Any], what: str) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                err = proc.stderr.read().decode() if proc.stderr else ""
                sys.exit(f"{what} did not start: {err}")
            time.sleep(0.05)


def smtp_sink_path() -> str:
    for candidate in ("/usr/sbin/smtp-sink", shutil.which("smtp-sink")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    sys.exit("smtp-sink not found: install the Debian package postfix (apt-get install postfix)")


@contextmanager
def smtp_sink() -> Iterator[int]:
    """Postfix's smtp-sink on a free port (backlog 1000); yields the port."""
    port = free_port()
    cmd = [smtp_sink_path()]
    if os.geteuid() == 0:
        cmd += ["-u", "nobody"]
    cmd += [f"127.0.0.1:{port}", "1000"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_port(port, proc, "smtp-sink")
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()


def write_settings(
    root: Path,
    port: int,
    *,
    connections: int = 4,
    limits: dict[str, int] | None = None,
    database: str = "sqlite:///outreach.db",
) -> None:
    """outreach.yaml as a user edits it: SMTP to the sink, the limits, the database."""
    cfg = yaml.safe_load((root / "outreach.yaml").read_text(encoding="utf-8"))
    cfg["database"] = database
    cfg["transport"] = {
        "kind": "smtp",
        "host": "127.0.0.1",
        "port": port,
        "security": "none",
        "connections": connections,
    }
    cfg["limits"] = dict(limits or UNBOUND)
    (root / "outreach.yaml").write_text(yaml.safe_dump(cfg, allow_unicode=True), "utf-8")


def set_database(root: Path, url: str) -> None:
    cfg = yaml.safe_load((root / "outreach.yaml").read_text(encoding="utf-8"))
    cfg["database"] = url
    (root / "outreach.yaml").write_text(yaml.safe_dump(cfg, allow_unicode=True), "utf-8")


def make_workspace(folder: Path, n: int, port: int, seed: int = 2026) -> list[dict[str, str]]:
    """The example workspace with N researchers in the campaigns' faculties, and a
    service-only copy of the split campaign (one mailbox)."""
    src = example_root()
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src / "outreach.yaml", folder / "outreach.yaml")
    shutil.copytree(src / "campaigns", folder / "campaigns")
    shutil.copytree(src / "people", folder / "people")
    with (src / "people" / "researchers.csv").open(encoding="utf-8-sig", newline="") as f:
        combos = sorted(
            {
                (r["faculty"], r["department"], r["unit"])
                for r in csv.DictReader(f)
                if r["faculty"] in FACULTIES
            }
        )
    rng = random.Random(seed)
    people = []
    for i in range(n):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        faculty, department, unit = rng.choice(combos)
        people.append(
            {
                "email": f"researcher.{i:06d}@uni.example",
                "name": f"{first} {last}",
                "first_name": first,
                "faculty": faculty,
                "department": department,
                "unit": unit,
                "language": rng.choice(["fi", "sv", "en"]),
                "tags": "",
            }
        )
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=list(people[0]), lineterminator="\n")
    w.writeheader()
    w.writerows(people)
    (folder / "people" / "researchers.csv").write_text(out.getvalue(), encoding="utf-8")
    split = yaml.safe_load((folder / "campaigns" / f"{SPLIT}.yaml").read_text(encoding="utf-8"))
    split.pop("split", None)
    service = {**split, "id": SERVICE_ONLY, "title": "Service only", "sender": "service"}
    (folder / "campaigns" / f"{SERVICE_ONLY}.yaml").write_text(
        yaml.safe_dump(service, allow_unicode=True), "utf-8"
    )
    write_settings(folder, port)
    return people


@dataclass
class Run:
    """One ``outreach send`` process: its wall time (start to exit) and what it said."""

    campaign: str
    elapsed: float
    sent: int
    code: int
    output: str

    @property
    def rate(self) -> float:
        return self.sent / self.elapsed if self.elapsed else 0.0


def outreach_send(root: Path, campaign: str, *extra: str, timeout: float = 1800) -> Run:
    """``outreach -w ROOT send CAMPAIGN --now --yes [extra]``, timed whole."""
    env = {**os.environ, "OUTREACH_SECRET": os.environ.get("OUTREACH_SECRET", "bench-secret")}
    env.pop("OUTREACH_DATABASE_URL", None)
    cmd = [*outreach_command(), "-w", str(root), "send", campaign, "--now", "--yes", *extra]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    elapsed = time.perf_counter() - start
    output = done.stdout + done.stderr
    found = OUTCOME.search(done.stdout)
    sent = int(found.group(2)) if found else 0
    return Run(campaign, elapsed, sent, done.returncode, output)


MAILMERGE_TEMPLATE = """\
TO: {{email}}
SUBJECT: {{first_name}}, a new research data service
FROM: Research Data Services <rds@uni.example>
REPLY-TO: rds@uni.example

Dear {{first_name}},

In December the library is opening a new research data management service. It can help
you with data management plans, storing and publishing data, and funders' requirements.

I would like to introduce my colleague Mikko Laaksonen, our data management specialist,
who is happy to help you and your research group ({{department}}). Reply to this message
and I will arrange a meeting, or book a time directly: https://rds.uni.example/rdm

Best wishes,
Research Data Services
"""


def ensure_mailmerge(install: bool) -> bool:
    try:
        import mailmerge  # noqa: F401
    except ImportError:
        if not install:
            return False
        print("installing mailmerge from PyPI (pip install mailmerge) ...", flush=True)
        done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "mailmerge"])
        if done.returncode != 0:
            return False
    return True


def mailmerge_send(folder: Path, people: list[dict[str, str]], port: int) -> Run:
    """mailmerge's own plain-text merge of the same recipients to the same sink, as its
    users run it (``mailmerge --no-dry-run --no-limit``), timed whole."""
    folder.mkdir()
    (folder / "mailmerge_template.txt").write_text(MAILMERGE_TEMPLATE, encoding="utf-8")
    with (folder / "mailmerge_database.csv").open("w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["email", "first_name", "department"])
        w.writeheader()
        for p in people:
            w.writerow({k: p[k] for k in ("email", "first_name", "department")})
    (folder / "mailmerge_server.conf").write_text(
        f"[smtp_server]\nhost = 127.0.0.1\nport = {port}\n", encoding="utf-8"
    )
    script = Path(sys.executable).parent / "mailmerge"
    runner = (
        [str(script)]
        if script.exists()
        else [sys.executable, "-c", "from mailmerge.__main__ import main; main()"]
    )
    cmd = [
        *runner,
        "--no-dry-run",
        "--no-limit",
        "--output-format",
        "raw",
        "--template",
        str(folder / "mailmerge_template.txt"),
        "--database",
        str(folder / "mailmerge_database.csv"),
        "--config",
        str(folder / "mailmerge_server.conf"),
    ]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"mailmerge failed: {done.stderr[-2000:]}")
    return Run("mailmerge", elapsed, done.stdout.count(" sent\n"), 0, "")


@contextmanager
def fresh_database(store: str, folder: Path) -> Iterator[str]:
    """An empty database for one run: SQLite in the folder, or a new PostgreSQL schema
    (127.0.0.1:5432, db test), dropped afterwards."""
    if store == "sqlite":
        yield f"sqlite:///{folder / 'outreach.db'}"
        return
    from bench_report import pg_schema

    with pg_schema() as url:
        yield url


def pg_unreachable() -> str | None:
    from bench_report import pg_reachable

    return pg_reachable()
