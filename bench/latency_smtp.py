"""An SMTP server that answers everything, each reply 20 ms late: a mail server across a
network (aiosmtpd; for bench_latency.py and bench_resume.py).

    python bench/latency_smtp.py PORT [--delay 0.02]

Every reply (the greeting, EHLO, MAIL, RCPT, DATA, the end of data, RSET, QUIT) is sent
``--delay`` seconds after the command that asked for it (a multi-line reply is complete
then). Messages are accepted and dropped; for each one a line
``MSG <monotonic> <from> <to>`` goes to stdout, so a benchmark sees when the server took
what. ``READY`` first.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session


class Drop:
    """The handler: accept every message, say when, keep nothing."""

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        rcpt = ",".join(envelope.rcpt_tos)
        sys.stdout.write(f"MSG {time.monotonic():.6f} {envelope.mail_from} {rcpt}\n")
        sys.stdout.flush()
        return "250 OK"


class LateSMTP(SMTP):
    """aiosmtpd's server with every reply ``delay`` seconds late."""

    def __init__(self, handler: Any, delay: float) -> None:
        super().__init__(handler, hostname="latency.invalid", enable_SMTPUTF8=True)
        self.delay = delay

    async def push(self, status: str) -> None:
        if status[3:4] != "-":  # the last (or only) line: the reply is complete
            await asyncio.sleep(self.delay)
        await super().push(status)


async def serve(port: int, delay: float) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: LateSMTP(Drop(), delay), "127.0.0.1", port)
    sys.stdout.write("READY\n")
    sys.stdout.flush()
    async with server:
        await server.serve_forever()


@dataclass
class LateServer:
    """The server as a benchmark sees it: its port and when each message arrived."""

    port: int
    arrivals: list[tuple[float, str, str]] = field(default_factory=list)  # when, from, to
    cond: threading.Condition = field(default_factory=threading.Condition)

    def count(self) -> int:
        with self.cond:
            return len(self.arrivals)

    def wait_for(self, n: int, timeout: float = 120) -> float:
        """Block until ``n`` messages arrived; when the n-th did (monotonic)."""
        with self.cond:
            if not self.cond.wait_for(lambda: len(self.arrivals) >= n, timeout):
                raise TimeoutError(f"{len(self.arrivals)} of {n} messages arrived")
            return self.arrivals[n - 1][0]


@contextmanager
def late_server(delay: float = 0.02) -> Iterator[LateServer]:
    """This server in a process of its own (its CPU is not the sender's) on a free port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), str(port), "--delay", str(delay)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "READY":
        proc.kill()
        sys.exit("the latency SMTP server did not start")
    server = LateServer(port)

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("MSG "):
                _, at, sender, rcpt = (line.rstrip("\n").split(" ", 3) + ["", ""])[:4]
                with server.cond:
                    server.arrivals.append((float(at), sender, rcpt))
                    server.cond.notify_all()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("port", type=int)
    parser.add_argument("--delay", type=float, default=0.02)
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.delay))


if __name__ == "__main__":
    main()
