"""Benchmark: one mailbox against a mail server 20 ms away, with 1, 2, 4 and 8 connections.

    python bench/bench_latency.py [--n 400] [--delay 0.02] [--connections 1,2,4,8]
                                  [--repeat 1]

The server (``bench/latency_smtp.py``, aiosmtpd in a process of its own) answers every
command 20 ms late, as a server across a network does; a message costs at least four
round trips (MAIL, RCPT, DATA, the end of data), so one connection cannot pass ~12 msg/s
whatever the sender does. The workspace is bench_send.py's with N researchers and the
``service-only`` campaign (one mailbox: the service address sends to all), outreach.yaml
with ``limits`` of 1,000,000 a minute and ``transport.connections`` set to each value in
turn. Each run is ``outreach send service-only --now --yes`` from an empty database.

For each setting: the mailbox's rate as the server saw it (first to last message) and the
whole process's (its start to its exit: start-up and planning included). Target (issue
17): ``connections: 8`` at least 6x the rate of ``connections: 1`` (a mailbox with one
message in flight at a time cannot pass 1x). Settings are interleaved over rounds; each
figure is the median. Prints ``RESULT`` lines.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from latency_smtp import late_server  # noqa: E402
from send_workspace import SERVICE_ONLY, make_workspace, outreach_send, write_settings  # noqa: E402

TARGET = 6.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=400, help="messages (default 400)")
    parser.add_argument("--delay", type=float, default=0.02, help="seconds a reply is late")
    parser.add_argument("--connections", default="1,2,4,8")
    parser.add_argument("--repeat", type=int, default=1, help="rounds (median; default 1)")
    args = parser.parse_args(argv)
    os.environ.setdefault("OUTREACH_SECRET", "bench-secret")
    settings = [int(c) for c in args.connections.split(",") if c.strip()]
    folder = Path(tempfile.mkdtemp(prefix="outreach-bench-latency-"))
    ok = True
    try:
        with late_server(args.delay) as server:
            pristine = folder / "ws-pristine"
            make_workspace(pristine, args.n, server.port)
            print(
                f"{args.n} messages from one mailbox to a server answering {args.delay * 1000:.0f}"
                f" ms late; {os.cpu_count()} cores (shared: figures are noisy)"
            )
            mailbox: dict[int, list[float]] = {c: [] for c in settings}
            whole: dict[int, list[float]] = {c: [] for c in settings}
            runs = 0
            for k in range(args.repeat):
                for connections in settings:
                    runs += 1
                    root = shutil.copytree(pristine, folder / f"ws-{runs}")
                    write_settings(root, server.port, connections=connections)
                    before = server.count()
                    run = outreach_send(root, SERVICE_ONLY)
                    got = server.count() - before
                    first = server.arrivals[before][0] if got else 0.0
                    last = server.arrivals[before + got - 1][0] if got else 0.0
                    rate = (got - 1) / (last - first) if got > 1 and last > first else 0.0
                    mailbox[connections].append(rate)
                    whole[connections].append(run.rate)
                    print(
                        f"[{k + 1}] connections {connections}: {run.sent} sent, the mailbox at "
                        f"{rate:6.1f} msg/s; whole process {run.elapsed:6.2f} s = "
                        f"{run.rate:6.1f} msg/s",
                        flush=True,
                    )
                    if run.sent != args.n or got != args.n or run.code != 0:
                        print(f"  !! {run.sent} sent, {got} arrived: {run.output[-1500:]}")
                        ok = False
                    shutil.rmtree(root, ignore_errors=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print()
    print("| connections | mailbox msg/s | whole process msg/s |")
    print("|---|---|---|")
    med = {c: statistics.median(mailbox[c]) for c in settings}
    for c in settings:
        print(f"| {c} | {med[c]:.1f} | {statistics.median(whole[c]):.1f} |")
    for c in settings:
        print(f"RESULT latency_connections{c}_msgs_per_s={med[c]:.1f}")
    lo, hi = min(settings), max(settings)
    if med[lo]:
        ratio = med[hi] / med[lo]
        verdict = "met" if ratio >= TARGET else "MISSED"
        print(
            f"connections {hi} / connections {lo} = {ratio:.2f}x (target >= {TARGET:.0f}x "
            f"for 8 vs 1: {verdict})"
        )
        print(f"RESULT latency_ratio_{hi}_vs_{lo}={ratio:.2f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
