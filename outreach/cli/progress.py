"""Progress for long work: a rich bar with per-sender rates on a TTY, plain lines otherwise."""

from __future__ import annotations

import sys
import time
from collections import Counter

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class SendProgress:
    """Implements outreach.deliver.send_options.Progress."""

    def __init__(self, console: Console | None = None, every: int = 100) -> None:
        self.console = console or Console(stderr=True)
        self.tty = self.console.is_terminal
        self.every = every
        self.counts: Counter[str] = Counter()
        self.per_sender: Counter[str] = Counter()
        self.started = time.monotonic()
        self.total = 0
        self.done = 0
        self.bar: Progress | None = None
        self.tasks: dict[str, TaskID] = {}

    def start(self, total: int, senders: dict[str, int]) -> None:
        self.total = total
        self.started = time.monotonic()
        if self.tty and total:
            self.bar = Progress(
                TextColumn("{task.description:<12}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]:>7} msg/min"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=self.console,
                transient=False,
            )
            self.bar.start()
            self.tasks["all"] = self.bar.add_task("all", total=total, rate="")
            for sender, n in sorted(senders.items()):
                self.tasks[sender] = self.bar.add_task(sender, total=n, rate="")
        elif total:
            print(f"sending {total} message(s) from {len(senders)} sender(s)", file=sys.stderr)

    def advance(self, sender: str, status: str) -> None:
        self.done += 1
        self.counts[status] += 1
        self.per_sender[sender] += 1
        elapsed = max(1e-6, time.monotonic() - self.started)
        if self.bar is not None:
            self.bar.update(self.tasks["all"], advance=1, rate=f"{self.done / elapsed * 60:.0f}")
            if sender in self.tasks:
                rate = self.per_sender[sender] / elapsed * 60
                self.bar.update(self.tasks[sender], advance=1, rate=f"{rate:.0f}")
        elif self.done % self.every == 0 or self.done == self.total:
            parts = ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items()))
            print(
                f"{self.done}/{self.total} ({parts}) {self.done / elapsed:.1f} msg/s",
                file=sys.stderr,
            )

    def finish(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
