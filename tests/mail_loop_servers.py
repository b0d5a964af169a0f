"""The real mail system of tests/test_mail_loop.py: a Postfix instance of the test's own
delivering by LMTP into a Dovecot (tests/servers/dovecot.py) that runs Sieve, and mutt
driven in a pseudo-terminal to answer mail as a person does.

    reason = missing()                       # None, or what is not installed
    with LoopDovecot(users, smtp_port, sieve=True) as dovecot, Postfix(smtp_port, dovecot):
        ...                                  # mail to any address @uni.example
    mutt_reply(...)                          # the researcher answers the newest message

Postfix runs from a private configuration directory (``postfix -c DIR start-fg``, its
master in the foreground as a child of the test) on 127.0.0.1 and a free high port: the
system's own Postfix and port 25 are left alone. Nothing it accepts leaves the machine
(every domain but uni.example goes to the ``error`` transport). Stopping it stops every
process it started, found by the ``MAIL_CONFIG`` of their environment.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import pwd
import select
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import termios
import time
from pathlib import Path

from servers.dovecot import DovecotServer, dovecot_available

DOMAIN = "uni.example"
POSTFIX_DAEMONS = Path("/usr/lib/postfix/sbin")
DOVECOT_LMTP = Path("/usr/lib/dovecot/lmtp")
SIEVE_PLUGIN = Path("/usr/lib/dovecot/modules/lib90_sieve_plugin.so")


def _program(name: str) -> str | None:
    return shutil.which(name) or next(
        (str(p) for d in ("/usr/sbin", "/sbin") if os.access(p := Path(d) / name, os.X_OK)),
        None,
    )


def missing() -> str | None:
    """None when the whole loop can run here, else why not (naming what is missing)."""
    if _program("postfix") is None or not (POSTFIX_DAEMONS / "master").exists():
        return "postfix not installed (apt-get install postfix)"
    if os.geteuid() != 0:
        return "postfix needs root to start its master daemon (run the tests as root)"
    try:
        pwd.getpwnam("postfix")
    except KeyError:
        return "system user 'postfix' missing (the postfix package creates it)"
    reason = dovecot_available()
    if reason:
        return reason
    if not DOVECOT_LMTP.exists():
        return "dovecot's LMTP server not installed (apt-get install dovecot-lmtpd)"
    if _program("mutt") is None:
        return "mutt not installed (apt-get install mutt)"
    return None


def sieve_missing() -> str | None:
    if not SIEVE_PLUGIN.exists():
        return "Dovecot Pigeonhole (Sieve) not installed (apt-get install dovecot-sieve)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LoopDovecot(DovecotServer):
    """The test Dovecot, also taking mail by LMTP; with ``sieve`` each user's
    ``~/.dovecot.sieve`` runs on delivery, and what it sends (a vacation reply) goes out
    through Postfix on ``smtp_port``."""

    def __init__(self, users: dict[str, str], smtp_port: int, *, sieve: bool) -> None:
        super().__init__(users, imaps=False)
        self.lmtp_port = free_port()
        self.smtp_port = smtp_port
        self.sieve = sieve

    def render_config(self) -> str:
        plugins = "  mail_plugins = $mail_plugins sieve\n" if self.sieve else ""
        return super().render_config().replace("protocols = imap\n", "protocols = imap lmtp\n") + (
            f"postmaster_address = postmaster@{DOMAIN}\n"
            f"submission_host = 127.0.0.1:{self.smtp_port}\n"
            "service lmtp {\n"
            "  inet_listener lmtp {\n"
            f"    address = {self.host}\n"
            f"    port = {self.lmtp_port}\n"
            "  }\n"
            "}\n"
            f"protocol lmtp {{\n{plugins}}}\n"
            "plugin {\n  sieve = ~/.dovecot.sieve\n  sieve_extensions = +editheader\n}\n"
        )

    def home(self, user: str) -> Path:
        """The user's home (made if need be, owned by the mail user as Dovecot expects)."""
        assert self.dir is not None, "start the server first"
        mail = self.dir / "mail"
        home = mail / user
        home.mkdir(exist_ok=True)
        owner = mail.stat()
        os.chown(home, owner.st_uid, owner.st_gid)
        return home

    def set_sieve(self, user: str, script: str) -> None:
        home = self.home(user)
        path = home / ".dovecot.sieve"
        path.write_text(script, encoding="utf-8")
        os.chown(path, home.stat().st_uid, home.stat().st_gid)

    def wait_for(self, user: str, count: int, timeout: float = 60) -> None:
        """Until ``user``'s INBOX holds ``count`` messages (AssertionError with the logs)."""
        deadline = time.monotonic() + timeout
        have = -1
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):  # a mailbox not made yet: no mail yet
                have = self.status(user)["MESSAGES"]
            if have >= count:
                return
            time.sleep(0.2)
        raise AssertionError(f"{user} has {have} message(s), not {count}\n{self.deliveries()}")

    def deliveries(self) -> str:
        """The log of deliveries and Sieve (not the logins of the polling above)."""
        lines = [
            line
            for line in self.log_text().splitlines()
            if "lmtp" in line.lower() or "sieve" in line.lower() or "error" in line.lower()
        ]
        return "--- dovecot.log (LMTP, Sieve, errors)\n" + "\n".join(lines[-60:])


# Every service Postfix needs here, none chrooted (a chroot would need copies of /etc).
_MASTER_CF = """\
{listen} inet n - n - - smtpd
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n -  0 cleanup
qmgr      unix  n - n 300 1 qmgr
rewrite   unix  - - n -  - trivial-rewrite
bounce    unix  - - n -  0 bounce
defer     unix  - - n -  0 bounce
trace     unix  - - n -  0 bounce
verify    unix  - - n -  1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n -  - proxymap
smtp      unix  - - n -  - smtp
relay     unix  - - n -  - smtp
showq     unix  n - n -  - showq
error     unix  - - n -  - error
retry     unix  - - n -  - error
discard   unix  - - n -  - discard
lmtp      unix  - - n -  - lmtp
anvil     unix  - - n -  1 anvil
scache    unix  - - n -  1 scache
postlog   unix-dgram n - n - 1 postlogd
"""


class Postfix:
    """Postfix for ``@uni.example`` on 127.0.0.1:``port``, delivering by LMTP to
    ``dovecot``: an unknown user there is refused at RCPT, so Postfix returns a real DSN
    to the sender."""

    def __init__(self, port: int, dovecot: LoopDovecot) -> None:
        # Its own short directory that the postfix user may enter (pytest's are 0700)
        self.root = Path(tempfile.mkdtemp(prefix="pfx-", dir="/tmp"))
        self.root.chmod(0o755)
        self.port = port
        self.dovecot = dovecot
        self.config = self.root / "conf"
        self.log = self.root / "maillog"
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Postfix:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    def _main_cf(self) -> str:
        r = self.root
        return f"""\
compatibility_level = 3.6
queue_directory = {r}/queue
data_directory = {r}/data
command_directory = /usr/sbin
daemon_directory = {POSTFIX_DAEMONS}
shlib_directory = /usr/lib/postfix
meta_directory = /etc/postfix
mail_owner = postfix
setgid_group = postdrop
maillog_file = {self.log}
maillog_file_prefixes = {r}
myhostname = mx.{DOMAIN}
mydomain = {DOMAIN}
myorigin = {DOMAIN}
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
virtual_mailbox_domains = {DOMAIN}
virtual_transport = lmtp:inet:127.0.0.1:{self.dovecot.lmtp_port}
default_transport = error:nothing leaves this test
relay_transport = error:nothing leaves this test
smtp_dns_support_level = disabled
biff = no
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
"""

    def start(self) -> None:
        self.config.mkdir(parents=True)
        (self.config / "main.cf").write_text(self._main_cf(), encoding="utf-8")
        master = _MASTER_CF.format(listen=f"127.0.0.1:{self.port}")
        (self.config / "master.cf").write_text(master, encoding="utf-8")
        (self.root / "queue").mkdir(mode=0o755)
        data = self.root / "data"
        data.mkdir(mode=0o700)
        owner = pwd.getpwnam("postfix")
        os.chown(data, owner.pw_uid, owner.pw_gid)
        out = open(self.root / "postfix.out", "ab")  # noqa: SIM115 - the child's
        try:
            self._proc = subprocess.Popen(
                ["postfix", "-c", str(self.config), "start-fg"],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            out.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"postfix exited at start-up\n{self.diagnostics()}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=2) as s,
            ):
                if s.recv(100).startswith(b"220"):
                    return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"postfix did not answer on port {self.port}\n{self.diagnostics()}")

    def processes(self) -> list[int]:
        """Every running process of this instance (its environment names our config)."""
        mark = f"MAIL_CONFIG={self.config}".encode()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                if mark in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
        return found

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        subprocess.run(
            ["postfix", "-c", str(self.config), "stop"],
            capture_output=True,
            timeout=30,
            check=False,
        )
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
        deadline = time.monotonic() + 10
        while (left := self.processes()) and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in [*left, proc.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait(5)

    def cleanup(self) -> None:
        """Stop, and delete the directory (queue, logs)."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def diagnostics(self) -> str:
        parts = []
        for path in (self.log, self.root / "postfix.out"):
            if path.exists():
                tail = path.read_text(errors="replace").splitlines()[-40:]
                parts.append(f"--- {path.name}\n" + "\n".join(tail))
        return "\n".join(parts)


# -- mutt ----------------------------------------------------------------------------------


def mutt_reply(
    home: Path,
    address: str,
    name: str,
    password: str,
    imap_port: int,
    smtp_port: int,
    text: str,
    timeout: float = 60,
) -> str:
    """``address`` answers the newest message of their INBOX with mutt: ``<reply>`` (the
    original quoted under mutt's "On …, … wrote:" line), ``text`` written below the quote
    as mutt users do, sent over SMTP. Returns what mutt showed on its screen."""
    home.mkdir(parents=True, exist_ok=True)
    words = home / "words.txt"
    words.write_text(text, encoding="utf-8")
    editor = home / "write-below-the-quote.sh"
    editor.write_text(f'#!/bin/sh\ncat "{words}" >> "$1"\n', encoding="utf-8")
    editor.chmod(0o755)
    muttrc = home / "muttrc"
    muttrc.write_text(
        f"""\
set imap_user = "{address}"
set imap_pass = "{password}"
set folder = "imap://127.0.0.1:{imap_port}/"
set spoolfile = "+INBOX"
set smtp_url = "smtp://127.0.0.1:{smtp_port}/"
set ssl_starttls = no
set ssl_force_tls = no
set from = "{address}"
set realname = "{name}"
set use_from = yes
set hostname = "{DOMAIN}"
set user_agent = yes
set include = yes
set fast_reply = yes
set editor = "{editor}"
set edit_headers = no
set sort = reverse-date
set record = ""
set copy = no
set postpone = no
set move = no
set quit = yes
set wait_key = no
set sleep_time = 0
set mail_check = 60
set abort_noattach = no
set signature = ""
set charset = "utf-8"
set send_charset = "utf-8"
set header_cache = ""
set message_cachedir = ""
push "<first-entry><reply><send-message><quit>"
""",
        encoding="utf-8",
    )
    env = {
        "HOME": str(home),
        "TERM": "xterm",
        "LANG": "C.UTF-8",
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
    }
    code, screen = _in_terminal(["mutt", "-n", "-F", str(muttrc)], env, timeout)
    shown = screen.decode("utf-8", "replace")
    if code != 0:
        raise AssertionError(f"mutt exited with {code}:\n{shown[-3000:]}")
    return shown


def _in_terminal(argv: list[str], env: dict[str, str], timeout: float) -> tuple[int, bytes]:
    """Run ``argv`` on a pseudo-terminal of 40×120 until it exits; killed on timeout."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen(
        argv, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True
    )
    os.close(slave)
    screen = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None or select.select([master], [], [], 0)[0]:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{argv[0]} still running after {timeout:.0f} s:\n"
                    + screen.decode("utf-8", "replace")[-3000:]
                )
            if select.select([master], [], [], 0.1)[0]:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # the terminal closed with the process
                    chunk = b""
                if not chunk:
                    break
                screen += chunk
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        os.close(master)
    return proc.returncode, bytes(screen)
