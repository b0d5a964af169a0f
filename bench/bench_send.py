"""Benchmark: `outreach send` as a user runs it, against Postfix's smtp-sink, with mailmerge
on the same recipients and sink in the same run.

    python bench/bench_send.py [--n 10000] [--repeat 1] [--workers 2] [--team-store postgresql]
                               [--campaigns liaison,split] [--skip-mailmerge] [--no-install]

A generated workspace (the example's settings, liaisons, experts, photos and campaigns; N
researchers in the faculties of the campaigns) whose outreach.yaml says what a user
writes: ``transport: {kind: smtp, host: 127.0.0.1, port: SINK, security: none,
connections: 4}`` and ``limits`` of 1,000,000 a minute and a day per sender (a relay that
needs no pacing). Nothing else is set and no library call is made: each contender is one
process, timed on the wall clock from its start to its exit (Python's start-up, loading
the workspace, planning the ledger, rendering, composing, booking every quota slot,
SMTP, the ledger's commits).

* **liaison-only**: ``outreach send rdm-launch-2026 --now --yes``: each researcher's
  liaison introduces the expert; the liaison's and the expert's faces inline, HTML + text,
  a Message-ID token per recipient.
* **split**: ``outreach send familiar-faces-2027 --now --yes``: half of the researchers
  hear from their liaison, half from the service address (one mailbox with half the mail).
* each again with ``--workers 2`` on a fresh PostgreSQL schema (127.0.0.1:5432, db
  ``test``; ``--team-store sqlite`` to keep SQLite), as a team is run.
* **mailmerge** (PyPI): its own plain-text merge of the same recipients to the same sink
  (``mailmerge --no-dry-run --no-limit``), the baseline of every row.

Every outreach run starts from an empty database. Rounds interleave the contenders, so a
busy moment of a shared machine hits them alike; each figure is the median of its rounds.
The ledger's count of sent messages is checked against N for every run.

Prints a table (campaign, outreach msg/s, mailmerge msg/s, ratio) and ``RESULT`` lines.
Target (issue 17): the split campaign in one process at least 2x mailmerge.
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
from send_workspace import (  # noqa: E402
    LIAISON_ONLY,
    SPLIT,
    Run,
    ensure_mailmerge,
    fresh_database,
    mailmerge_send,
    make_workspace,
    outreach_send,
    pg_unreachable,
    set_database,
    smtp_sink,
)

TARGET_RATIO = 2.0
CAMPAIGNS = {"liaison": ("liaison-only", LIAISON_ONLY), "split": ("split", SPLIT)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000, help="recipients (default 10000)")
    parser.add_argument("--repeat", type=int, default=1, help="rounds (median; default 1)")
    parser.add_argument(
        "--workers", type=int, default=2, help="also send with --workers N (0: skip; default 2)"
    )
    parser.add_argument("--team-store", choices=["postgresql", "sqlite"], default="postgresql")
    parser.add_argument("--campaigns", default="liaison,split", help="liaison, split or both")
    parser.add_argument("--skip-mailmerge", action="store_true")
    parser.add_argument("--no-install", action="store_true", help="do not pip install mailmerge")
    parser.add_argument("--keep", action="store_true", help="keep the generated workspaces")
    args = parser.parse_args(argv)
    os.environ.setdefault("OUTREACH_SECRET", "bench-secret")
    chosen = [CAMPAIGNS[c.strip()] for c in args.campaigns.split(",") if c.strip()]
    team_store = args.team_store
    if args.workers > 1 and team_store == "postgresql":
        reason = pg_unreachable()
        if reason:
            print(f"PostgreSQL unreachable ({reason}): the --workers runs use SQLite")
            team_store = "sqlite"

    folder = Path(tempfile.mkdtemp(prefix="outreach-bench-send-"))
    ok = True
    try:
        with smtp_sink() as port:
            pristine = folder / "ws-pristine"
            people = make_workspace(pristine, args.n, port)
            print(
                f"workspace: {args.n} researchers, limits 1,000,000/min per sender, "
                f"connections 4; smtp-sink on 127.0.0.1:{port}; {os.cpu_count()} cores "
                "(shared: figures are noisy)"
            )
            use_mailmerge = not args.skip_mailmerge and ensure_mailmerge(not args.no_install)
            rows: dict[str, list[float]] = {}
            merged: list[float] = []
            runs = 0

            def one(label: str, campaign: str, workers: int) -> None:
                nonlocal ok, runs
                runs += 1
                root = shutil.copytree(pristine, folder / f"ws-{runs}")
                extra = () if workers <= 1 else ("--workers", str(workers))
                name = label if workers <= 1 else f"{label}, --workers {workers} ({team_store})"
                if workers > 1 and team_store == "postgresql":
                    with fresh_database("postgresql", root) as url:
                        set_database(root, url)
                        run = outreach_send(root, campaign, *extra)
                else:
                    run = outreach_send(root, campaign, *extra)
                report(name, run)
                rows.setdefault(name, []).append(run.rate)
                if run.sent != args.n or run.code != 0:
                    print(f"  !! expected {args.n} sent and exit 0: {run.output[-1500:]}")
                    ok = False
                if not args.keep:
                    shutil.rmtree(root, ignore_errors=True)

            for k in range(args.repeat):
                print(f"round {k + 1}")
                for label, campaign in chosen:
                    one(label, campaign, 1)
                if use_mailmerge:
                    mm = mailmerge_send(folder / f"mailmerge-{k}", people, port)
                    report("mailmerge (plain text)", mm)
                    merged.append(mm.rate)
                if args.workers > 1:
                    for label, campaign in chosen:
                        one(label, campaign, args.workers)

            m_rate = statistics.median(merged) if merged else None
            print(f"\nmedian of {args.repeat} round(s):")
            print("| campaign | outreach msg/s | mailmerge msg/s | ratio |")
            print("|---|---|---|---|")
            results = []
            for name, rates in rows.items():
                rate = statistics.median(rates)
                key = name.split(",")[0].replace("-", "_").replace(" ", "_")
                key += f"_workers{args.workers}" if "--workers" in name else ""
                results.append(f"send_{key}_msgs_per_s={rate:.1f}")
                if m_rate:
                    ratio = rate / m_rate
                    paired = _paired(rates, merged)
                    print(
                        f"| {name} | {rate:,.0f} | {m_rate:,.0f} | {ratio:.2f}x "
                        f"(round by round: {', '.join(f'{r:.2f}' for r in paired)}) |"
                    )
                    results.append(f"send_{key}_ratio_vs_mailmerge={ratio:.2f}")
                    results.append(
                        f"send_{key}_ratio_vs_mailmerge_paired={statistics.median(paired):.2f}"
                    )
                else:
                    print(f"| {name} | {rate:,.0f} | | |")
            for line in results:
                print(f"RESULT {line}")
            if m_rate:
                print(f"RESULT send_mailmerge_msgs_per_s={m_rate:.1f}")
                split = rows.get("split")
                if split:
                    # the lower of the two readings: medians of each series, and the
                    # median of the rounds' own ratios (a round's contenders share its load)
                    ratio = min(
                        statistics.median(split) / m_rate,
                        statistics.median(_paired(split, merged)),
                    )
                    verdict = "met" if ratio >= TARGET_RATIO else "MISSED"
                    print(
                        f"split campaign, one process / mailmerge = {ratio:.2f}x, the lower "
                        f"of the two readings (target >= {TARGET_RATIO:.0f}x: {verdict})"
                    )
            elif not args.skip_mailmerge:
                print("mailmerge is not installed: pip install mailmerge (skipped)")
    finally:
        if args.keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
    return 0 if ok else 1


def _paired(rates: list[float], merged: list[float]) -> list[float]:
    """Each round's ratio: its outreach run against its own mailmerge run."""
    return [r / m for r, m in zip(rates, merged, strict=False)]


def report(name: str, run: Run) -> None:
    print(
        f"  {name:<44} {run.sent:>6} messages in {run.elapsed:7.2f} s = "
        f"{run.rate:8.1f} msg/s (whole process)",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
