"""Benchmark: a campaign's makespan under quotas, on the production path and the wall clock.

    python bench/bench_makespan.py [--per-minute 120] [--connections 4] [--repeat 1]

A generated workspace: 10 liaisons with uneven segments (60, 45, 38, 30, 24, 18, 12, 8, 4
and 1 researchers), ``limits: {per_sender_per_minute: N}`` in outreach.yaml (120 by
default: one message every 0.5 s per mailbox, so the largest segment alone needs 29.5 s)
and SMTP to an aiosmtpd server in a process of its own that notes when each message
arrived (bench/latency_smtp.py, with no delay). ``outreach send`` runs as a user runs it,
a subprocess timed whole.

The makespan is the time from the first message's arrival to the last's; the theoretical
minimum is the largest segment's (n - 1) slots at the sender's pace (every mailbox paced
from its first message, all in parallel). Target: within 1.05x. The whole process (start
to exit: start-up, planning, the login check) is printed beside it.

Prints ``RESULT key=value`` lines for scripts.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from latency_smtp import late_server  # noqa: E402
from send_workspace import example_root, outreach_send, write_settings  # noqa: E402

from outreach.deliver.pace import least_time  # noqa: E402
from outreach.workspace.settings import Pace  # noqa: E402

TARGET = 1.05
SIZES = [60, 45, 38, 30, 24, 18, 12, 8, 4, 1]


def make_workspace(folder: Path, port: int, per_minute: int, connections: int) -> None:
    """The example's settings and photos; 10 liaisons, each with a faculty of its own."""
    src = example_root()
    folder.mkdir(parents=True)
    shutil.copy2(src / "outreach.yaml", folder / "outreach.yaml")
    shutil.copytree(src / "people", folder / "people")
    (folder / "campaigns").mkdir()
    liaisons = [
        {
            "id": f"l{i}",
            "name": f"Liaison Number{i}",
            "email": f"liaison{i}@uni.example",
            "title": {"en": "Liaison Librarian"},
            "photo": "people/photos/aino.jpg",
            "languages": ["en"],
            "segments": [{"faculty": f"Faculty {i}"}],
        }
        for i in range(len(SIZES))
    ]
    (folder / "people" / "liaisons.yaml").write_text(yaml.safe_dump(liaisons), "utf-8")
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["email", "name", "first_name", "faculty", "department", "unit", "language", "tags"])
    for i, n in enumerate(SIZES):
        for j in range(n):
            w.writerow(
                [f"r{i}.{j}@uni.example", f"R{j} S{i}", f"R{j}", f"Faculty {i}", "", "", "en", ""]
            )
    (folder / "people" / "researchers.csv").write_text(out.getvalue(), encoding="utf-8")
    campaign = {
        "id": "quota",
        "title": "Quota run",
        "template": "newsletter",
        "sender": "liaison",
        "subject": {"en": "{{ researcher.first_name }}, news"},
        "body": {"en": "Dear {{ researcher.first_name }},\n\nnews.\n\n{{ sender.name }}\n"},
    }
    (folder / "campaigns" / "quota.yaml").write_text(yaml.safe_dump(campaign), "utf-8")
    write_settings(
        folder,
        port,
        connections=connections,
        limits={"per_sender_per_minute": per_minute, "per_sender_per_day": 10000},
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-minute", type=int, default=120)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args(argv)
    os.environ.setdefault("OUTREACH_SECRET", "bench-secret")
    pace = Pace(args.per_minute, 10000)
    ideal = max(least_time(n, pace, grace=0.0) for n in SIZES)
    total = sum(SIZES)
    spans, walls = [], []
    for attempt in range(args.repeat):
        folder = Path(tempfile.mkdtemp(prefix="outreach-bench-makespan-"))
        try:
            with late_server(0.0) as server:
                make_workspace(folder / "ws", server.port, args.per_minute, args.connections)
                run = outreach_send(folder / "ws", "quota")
                if run.code != 0 or run.sent != total:
                    sys.exit(f"the send failed (exit {run.code}, sent {run.sent}):\n{run.output}")
                server.wait_for(total, timeout=30)
                times = [at for at, _, _ in server.arrivals]
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        span = max(times) - min(times)
        spans.append(span)
        walls.append(run.elapsed)
        print(
            f"run {attempt + 1}: makespan {span:.2f} s (first to last arrival), "
            f"whole process {run.elapsed:.2f} s"
        )
    span, wall = statistics.median(spans), statistics.median(walls)
    ratio = span / ideal
    verdict = "met" if ratio <= TARGET else "MISSED"
    print(
        f"10 liaisons {SIZES}, {args.per_minute}/min each, connections {args.connections}: "
        f"makespan {span:.2f} s vs minimum {ideal:.2f} s = {ratio:.3f}x "
        f"(target <= {TARGET}x: {verdict}); whole process {wall:.2f} s = {wall / ideal:.3f}x"
    )
    print(f"RESULT makespan_s={span:.3f}")
    print(f"RESULT makespan_minimum_s={ideal:.3f}")
    print(f"RESULT makespan_ratio={ratio:.4f}")
    print(f"RESULT makespan_whole_process_s={wall:.3f}")
    return 0 if ratio <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
