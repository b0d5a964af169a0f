"""Benchmark: a rerun after `kill -9` on the same machine: how soon sending resumes, and
that nothing is sent twice.

    python bench/bench_resume.py [--n 300] [--kill-after 40] [--repeat 3]

The workspace is bench_send.py's (N researchers, ``rdm-launch-2026``: each liaison's
mailbox sends its own researchers'), SMTP with ``connections: 4`` to the 20 ms-late server
of ``bench/latency_smtp.py`` (so a run is still sending when it is killed), ``limits`` of
1,000,000 a minute, the default lease (``transport.lease_seconds``: 120 s). Each round:

1. ``outreach send rdm-launch-2026 --now --yes``, killed with SIGKILL once the server has
   taken ``--kill-after`` messages;
2. at once, the same command again (again and again while it is refused, as a user or a
   cron job would retry): the time from the kill to the first message the server takes
   from the rerun is the figure; the rerun runs to its end.

Afterwards every recipient must have arrived at most once, and the ledger says `sent` for
each one that arrived (or `uncertain`: the message on the wire when the kill came).
Before issue 17 a rerun was refused until the dead run's lease lapsed (two minutes).
Prints ``RESULT resume_seconds_max=… resume_seconds_median=… duplicates=…``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from latency_smtp import late_server  # noqa: E402
from send_workspace import (  # noqa: E402
    LIAISON_ONLY,
    make_workspace,
    outreach_command,
    write_settings,
)

TARGET = 5.0


def ledger_states(root: Path) -> Counter[str]:
    from outreach.deliver.ledger import Ledger
    from outreach.store import open_store
    from outreach.workspace.loader import load_workspace

    store = open_store(load_workspace(explicit=root).database_url())
    try:
        rows = Ledger(store).rows.status(LIAISON_ONLY)
    finally:
        store.close()
    out: Counter[str] = Counter()
    for row in rows:
        for state in ("planned", "sent", "deferred", "failed", "uncertain", "skipped"):
            out[state] += int(row[state] or 0)
    return +out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--kill-after", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    os.environ.setdefault("OUTREACH_SECRET", "bench-secret")
    env = {**os.environ}
    env.pop("OUTREACH_DATABASE_URL", None)
    folder = Path(tempfile.mkdtemp(prefix="outreach-bench-resume-"))
    resumed: list[float] = []
    duplicates = 0
    ok = True
    try:
        with late_server() as server:
            pristine = folder / "ws-pristine"
            make_workspace(pristine, args.n, server.port)
            write_settings(pristine, server.port, connections=4)
            for k in range(args.repeat):
                root = shutil.copytree(pristine, folder / f"ws-{k}")
                start = server.count()
                cmd = [*outreach_command(), "-w", str(root), "send", LIAISON_ONLY, "--now", "--yes"]
                victim = subprocess.Popen(
                    cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
                )
                server.wait_for(start + args.kill_after)
                victim.send_signal(signal.SIGKILL)
                victim.wait()
                killed_at = time.monotonic()
                before = server.count()
                refused = 0
                rerun = subprocess.Popen(
                    cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
                )
                while True:
                    try:
                        first = server.wait_for(before + 1, timeout=0.2)
                        break
                    except TimeoutError:
                        if rerun.poll() is None:
                            continue  # still starting (a loaded machine) or sending
                        refused += 1  # refused: the lock is held; retry, as cron would
                        time.sleep(0.5)
                        rerun = subprocess.Popen(
                            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
                        )
                out, err = rerun.communicate(timeout=600)
                resumed.append(first - killed_at)
                got = Counter(rcpt for _, _, rcpt in server.arrivals[start:])
                twice = sum(1 for n in got.values() if n > 1)
                duplicates += twice
                states = ledger_states(root)
                print(
                    f"[{k + 1}] killed after {before - start} messages; the rerun's first "
                    f"message {first - killed_at:5.2f} s after the kill "
                    f"({refused} refused reruns before it); ledger {dict(states)}; "
                    f"{len(got)} recipients arrived, {twice} of them twice",
                    flush=True,
                )
                arrived_ok = states["sent"] <= len(got) <= states["sent"] + states["uncertain"]
                if set(states) - {"sent", "uncertain"} or not arrived_ok:
                    print(f"  !! the ledger and the server disagree: {out[-800:]}{err[-800:]}")
                    ok = False
                shutil.rmtree(root, ignore_errors=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    worst = max(resumed)
    verdict = "met" if worst < TARGET and not duplicates else "MISSED"
    print(
        f"resumed after kill -9: median {statistics.median(resumed):.2f} s, worst {worst:.2f} s; "
        f"{duplicates} duplicates (target < {TARGET:.0f} s, 0 duplicates: {verdict})"
    )
    print(
        f"RESULT resume_seconds_max={worst:.2f} "
        f"resume_seconds_median={statistics.median(resumed):.2f} duplicates={duplicates}"
    )
    return 0 if ok and verdict == "met" else 1


if __name__ == "__main__":
    sys.exit(main())
