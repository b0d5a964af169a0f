"""A real Dovecot IMAP server for tests, with a throwaway configuration.

    reason = dovecot_available()          # None, or why it cannot run
    with DovecotServer() as imap:         # users aino, rds, lars; password "secret"
        imap.append("aino", b"Subject: hi\\r\\n\\r\\nbody\\r\\n")
        conn = imap.connect("aino")       # a logged-in imaplib.IMAP4
        imap.reset_uidvalidity("aino")    # UIDVALIDITY changes, messages renumbered
        imap.kill_connections("aino")     # doveadm kick: open sessions are dropped
        imap.restart()                    # stop + start, same ports, same mail

Everything lives in a short temp dir (UNIX socket paths must stay under 108 bytes)::

    <tmp>/dovecot.conf   the configuration (see ``render_config``)
    <tmp>/users/<user>   passwd-file, one per user: user:{PLAIN}password:uid:gid::home::
    <tmp>/run            base_dir (sockets, master.pid)
    <tmp>/state          state_dir
    <tmp>/dovecot.log    log_path (everything: info, auth, errors)
    <tmp>/mail/<user>/   home; mail_location = maildir:~/Maildir
    <tmp>/tls/           test CA, cert + key for the imaps listener (see tls.py)

Run as root, Dovecot keeps its own service users (``dovecot`` / ``dovenull``, which the
Debian package creates) and mail is owned by ``nobody``; run as an ordinary user it runs
"rootless" with every service user set to that user.  The master runs in the foreground
(``dovecot -F -c <tmp>/dovecot.conf``) as a child process of the test run.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import grp
import imaplib
import os
import pwd
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from .tls import ServerCertificate, client_context, issue

__all__ = ["DEFAULT_USERS", "DovecotServer", "dovecot_available", "find_dovecot"]

DEFAULT_USERS: dict[str, str] = {"aino": "secret", "rds": "secret", "lars": "secret"}

_INSTALL_HINT = "apt-get install dovecot-imapd"
_SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin")
_LIBEXEC_DIRS = (
    "/usr/lib/dovecot",
    "/usr/libexec/dovecot",
    "/usr/local/libexec/dovecot",
    "/usr/local/lib/dovecot",
)


def _which(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for d in _SBIN_DIRS:
        p = os.path.join(d, name)
        if os.access(p, os.X_OK):
            return p
    return None


def find_dovecot() -> tuple[str, str] | None:
    """Paths of the ``dovecot`` and ``doveadm`` binaries, or None."""
    dovecot, doveadm = _which("dovecot"), _which("doveadm")
    if dovecot and doveadm:
        return dovecot, doveadm
    return None


@functools.lru_cache(maxsize=1)
def dovecot_available() -> str | None:
    """None when a test Dovecot can be started here, else a reason for ``pytest.skip``."""
    if os.environ.get("OUTREACH_TEST_NO_DOVECOT"):
        return "Dovecot tests disabled by OUTREACH_TEST_NO_DOVECOT"
    found = find_dovecot()
    if found is None:
        return f"dovecot not installed: {_INSTALL_HINT}"
    dovecot, _ = found
    try:
        out = subprocess.run(
            [dovecot, "--version"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        return f"dovecot --version failed: {exc}"
    if not out.startswith(("2.2.", "2.3.")):
        return (
            f"Dovecot {out.split()[0] if out else '?'} not supported: tests/servers/dovecot.py "
            "writes 2.2/2.3 configuration (2.4 renamed many settings)"
        )
    libexec = [d for d in _LIBEXEC_DIRS if os.path.isdir(d)]
    if libexec and not any(os.access(os.path.join(d, "imap"), os.X_OK) for d in libexec):
        return f"Dovecot IMAP server binary missing: {_INSTALL_HINT}"
    if os.geteuid() == 0:
        for user in ("dovecot", "dovenull"):
            try:
                pwd.getpwnam(user)
            except KeyError:
                return f"system user {user!r} missing (the dovecot-core package creates it)"
    return None


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _short_tmp_root() -> str:
    tmp = tempfile.gettempdir()
    return tmp if len(tmp) <= 20 else "/tmp"


class DovecotServer:
    """A Dovecot IMAP server on 127.0.0.1 (plain ``port``, optional implicit-TLS ``imaps_port``).

    ``users`` maps user name to plain-text password; every user may log in with
    ``LOGIN`` / ``AUTHENTICATE PLAIN`` over the unencrypted port.  A failed login is
    answered after about 0.5 s (Dovecot's minimum; the auth penalty is switched off).
    For a drop in the middle of a long FETCH, call ``kill_connections`` from another
    thread (e.g. ``threading.Timer``) or from the client code's progress callback.
    """

    def __init__(
        self,
        users: dict[str, str] | None = None,
        *,
        imaps: bool = True,
        host: str = "127.0.0.1",
        start_timeout: float = 10.0,
        keep_dir: bool = False,
    ) -> None:
        self.host = host
        self.users: dict[str, str] = dict(DEFAULT_USERS if users is None else users)
        self.port: int = 0
        self.imaps_port: int | None = None
        self.want_imaps = imaps
        self.start_timeout = start_timeout
        self.keep_dir = keep_dir
        self.dir: Path | None = None
        self.certificate: ServerCertificate | None = None  # with an imaps listener
        self._proc: subprocess.Popen[bytes] | None = None
        found = find_dovecot()
        if found is None:
            raise RuntimeError(f"dovecot not installed: {_INSTALL_HINT}")
        self._dovecot, self._doveadm = found
        self._rootless = os.geteuid() != 0
        if self._rootless:
            me = pwd.getpwuid(os.getuid())
            self._service_user = self._login_user = me.pw_name
            self._mail_uid, self._mail_gid = me.pw_uid, me.pw_gid
        else:
            self._service_user, self._login_user = "dovecot", "dovenull"
            try:
                nobody = pwd.getpwnam("nobody")
                self._mail_uid = nobody.pw_uid
                try:
                    self._mail_gid = grp.getgrnam("nogroup").gr_gid
                except KeyError:
                    self._mail_gid = nobody.pw_gid
            except KeyError:
                dv = pwd.getpwnam("dovecot")
                self._mail_uid, self._mail_gid = dv.pw_uid, dv.pw_gid

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> DovecotServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop(cleanup=True)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def config_path(self) -> Path:
        assert self.dir is not None, "server was never started"
        return self.dir / "dovecot.conf"

    @property
    def log_path(self) -> Path:
        assert self.dir is not None, "server was never started"
        return self.dir / "dovecot.log"

    def start(self) -> None:
        """Start the server (first start picks free ports; later starts reuse them)."""
        if self.running:
            return
        first = self.dir is None
        if first:
            self.dir = Path(tempfile.mkdtemp(prefix="dcv-", dir=_short_tmp_root()))
            os.chmod(self.dir, 0o755)
            for sub in ("run", "state", "mail"):
                (self.dir / sub).mkdir()
            self._chown_mail(self.dir / "mail")
            if self.want_imaps:
                self.certificate = issue(self.dir / "tls")
                os.chmod(self.dir / "tls", 0o755)
            self._write_users()
        attempts = 3 if first else 1
        for attempt in range(attempts):
            if first:
                self.port = _free_port(self.host)
                self.imaps_port = _free_port(self.host) if self.want_imaps else None
            self.config_path.write_text(self.render_config())
            try:
                self._spawn()
                break
            except RuntimeError as exc:
                if attempt + 1 < attempts and "in use" in str(exc):
                    continue
                raise
        _live.add(self)

    def stop(self, cleanup: bool = False) -> None:
        """Stop the server; with ``cleanup`` also delete the temp dir (all mail)."""
        proc, self._proc = self._proc, None
        if proc is not None:
            # SIGTERM to the whole process group (to the master alone it waits ~1 s for
            # its children), and SIGKILL whatever is still there after a moment: now and
            # then the master takes 1-5 s to shut down for no reason a test cares about.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(0.25)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
            if self.dir is not None:  # a stale pid file could block the next start
                with contextlib.suppress(FileNotFoundError):
                    (self.dir / "run" / "master.pid").unlink()
        if cleanup:
            _live.discard(self)
            if self.dir is not None and not self.keep_dir:
                shutil.rmtree(self.dir, ignore_errors=True)
                self.dir = None

    def restart(self) -> None:
        """Stop and start again on the same ports with the same mail (drops all sessions)."""
        self.stop()
        self.start()

    def _spawn(self) -> None:
        assert self.dir is not None
        out = open(self.dir / "dovecot.stderr", "ab")  # noqa: SIM115 - owned by the child
        try:
            self._proc = subprocess.Popen(
                [self._dovecot, "-F", "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            out.close()
        deadline = time.monotonic() + self.start_timeout
        last_err: Exception | None = None
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                self._proc = None
                raise RuntimeError("dovecot exited at start-up:\n" + self.diagnostics())
            try:
                with socket.create_connection((self.host, self.port), timeout=2) as s:
                    greeting = s.makefile("rb").readline()
                if greeting.startswith(b"* OK"):
                    return
                last_err = RuntimeError(f"unexpected greeting {greeting!r}")
            except OSError as exc:
                last_err = exc
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(
            f"dovecot did not answer on {self.host}:{self.port} ({last_err})\n" + self.diagnostics()
        )

    def diagnostics(self) -> str:
        """The tail of the Dovecot log and stderr, for error messages."""
        if self.dir is None:
            return ""
        parts = []
        for name in ("dovecot.stderr", "dovecot.log"):
            p = self.dir / name
            if p.exists():
                lines = p.read_text(errors="replace").splitlines()[-30:]
                parts.append(f"--- {name}\n" + "\n".join(lines))
        return "\n".join(parts)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # ------------------------------------------------------------------ configuration

    def render_config(self) -> str:
        assert self.dir is not None
        d = self.dir
        imaps = ""
        ssl_conf = "ssl = no"
        if self.imaps_port is not None and self.certificate is not None:
            ssl_conf = (
                "ssl = yes\n"
                f"ssl_cert = <{self.certificate.cert_file}\n"
                f"ssl_key = <{self.certificate.key_file}"
            )
            imaps = (
                "  inet_listener imaps {\n"
                f"    address = {self.host}\n"
                f"    port = {self.imaps_port}\n"
                "    ssl = yes\n"
                "  }\n"
            )
        chroot = "  chroot =\n" if self._rootless else ""
        internal_group = ""
        if self._rootless:
            internal_group = f"default_internal_group = {grp.getgrgid(os.getgid()).gr_name}\n"
        return f"""\
# throwaway test configuration written by tests/servers/dovecot.py
base_dir = {d}/run
state_dir = {d}/state
instance_name = test-{self.port}
log_path = {d}/dovecot.log
protocols = imap
listen = {self.host}
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_verbose = yes
auth_failure_delay = 0
default_internal_user = {self._service_user}
default_login_user = {self._login_user}
{internal_group}first_valid_uid = {min(self._mail_uid, 500) or 1}
first_valid_gid = {min(self._mail_gid, 500) or 1}
mail_location = maildir:~/Maildir
mailbox_list_index = yes
{ssl_conf}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {d}/users/%u
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {d}/users/%u
}}
service imap-login {{
  inet_listener imap {{
    address = {self.host}
    port = {self.port}
  }}
{imaps}{chroot}}}
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
{chroot}}}
"""

    def _chown_mail(self, path: Path) -> None:
        if not self._rootless:
            os.chown(path, self._mail_uid, self._mail_gid)

    def _write_users(self) -> None:
        for user, password in self.users.items():
            self._write_user(user, password)

    def _write_user(self, user: str, password: str) -> None:
        # One passwd-file per user (path ``users/%u``): a user added later is a file
        # Dovecot has never seen, so it is read at once (a changed file is re-read only
        # when its mtime moved and at most once a second).
        assert self.dir is not None
        if not re.fullmatch(r"[A-Za-z0-9._@+-]+", user) or re.search(r"[:\n]", password):
            raise ValueError(f"unsuitable test user name or password: {user!r}")
        users = self.dir / "users"
        users.mkdir(mode=0o755, exist_ok=True)
        home = self.dir / "mail" / user
        line = f"{user}:{{PLAIN}}{password}:{self._mail_uid}:{self._mail_gid}::{home}::\n"
        tmp = users / f".{user}.tmp"
        tmp.write_text(line)
        os.chmod(tmp, 0o644)
        os.replace(tmp, users / user)

    def add_user(self, user: str, password: str = "secret") -> None:
        """Add a user while the server runs (usable at once)."""
        self.users[user] = password
        if self.dir is not None:
            self._write_user(user, password)

    # ------------------------------------------------------------------ IMAP helpers

    def connect(self, user: str, *, tls: bool = False, timeout: float = 10) -> imaplib.IMAP4:
        """A logged-in ``imaplib`` connection (``tls`` uses the imaps port)."""
        conn: imaplib.IMAP4
        if tls:
            if self.imaps_port is None or self.certificate is None:
                raise RuntimeError("this DovecotServer has no imaps listener")
            conn = imaplib.IMAP4_SSL(
                self.host, self.imaps_port, ssl_context=self.ssl_context(), timeout=timeout
            )
        else:
            conn = imaplib.IMAP4(self.host, self.port, timeout=timeout)
        conn.login(user, self.users[user])
        return conn

    def ssl_context(self) -> ssl.SSLContext:
        """A client SSL context trusting this server's certificate authority."""
        return client_context(self.ca_file)

    @property
    def ca_file(self) -> Path:
        """The authority a client must trust for the imaps listener (a ``ca_file``)."""
        if self.certificate is None:
            raise RuntimeError("this DovecotServer has no certificate")
        return self.certificate.ca_file

    @contextlib.contextmanager
    def session(self, user: str) -> Iterator[imaplib.IMAP4]:
        conn = self.connect(user)
        try:
            yield conn
        finally:
            with contextlib.suppress(Exception):
                conn.logout()

    @staticmethod
    def _q(mailbox: str) -> str:
        return '"' + mailbox.replace("\\", "\\\\").replace('"', '\\"') + '"'

    def append(
        self,
        user: str,
        raw: bytes,
        mailbox: str = "INBOX",
        *,
        flags: Iterable[str] = (),
        date: float | None = None,
    ) -> int | None:
        """IMAP APPEND *raw* to *mailbox* (created if missing); returns the new UID."""
        raw = raw if b"\r\n" in raw else raw.replace(b"\n", b"\r\n")
        flag_str = "(" + " ".join(flags) + ")" if flags else None
        when = imaplib.Time2Internaldate(date) if date is not None else None
        with self.session(user) as conn:
            typ, data = conn.append(self._q(mailbox), flag_str, when, raw)
            if typ != "OK" and b"TRYCREATE" in b" ".join(x for x in data if x):
                conn.create(self._q(mailbox))
                typ, data = conn.append(self._q(mailbox), flag_str, when, raw)
            if typ != "OK":
                raise RuntimeError(f"APPEND to {mailbox!r} failed: {data!r}")
        m = re.search(rb"APPENDUID \d+ (\d+)", data[0] or b"")
        return int(m.group(1)) if m else None

    def create_mailbox(self, user: str, name: str) -> None:
        with self.session(user) as conn:
            typ, data = conn.create(self._q(name))
            if typ != "OK":
                raise RuntimeError(f"CREATE {name!r} failed: {data!r}")

    def delete_mailbox(self, user: str, name: str) -> None:
        with self.session(user) as conn:
            typ, data = conn.delete(self._q(name))
            if typ != "OK":
                raise RuntimeError(f"DELETE {name!r} failed: {data!r}")

    def list_mailboxes(self, user: str) -> list[str]:
        with self.session(user) as conn:
            typ, data = conn.list()
        names = []
        for line in data:
            if not line:
                continue
            m = re.match(rb'\(.*?\) (?:"[^"]*"|NIL) (.*)$', line)
            if m:
                name = m.group(1).decode()
                names.append(name[1:-1] if name.startswith('"') else name)
        return names

    def status(self, user: str, mailbox: str = "INBOX") -> dict[str, int]:
        """MESSAGES, UIDNEXT, UIDVALIDITY, UNSEEN of *mailbox*."""
        with self.session(user) as conn:
            typ, data = conn.status(self._q(mailbox), "(MESSAGES UIDNEXT UIDVALIDITY UNSEEN)")
        if typ != "OK":
            raise RuntimeError(f"STATUS {mailbox!r} failed: {data!r}")
        inner = re.search(rb"\(([^)]*)\)\s*$", data[0] or b"")
        assert inner, data
        items = inner.group(1).decode().split()
        return {items[i]: int(items[i + 1]) for i in range(0, len(items), 2)}

    def uidvalidity(self, user: str, mailbox: str = "INBOX") -> int:
        return self.status(user, mailbox)["UIDVALIDITY"]

    def fetch_all(self, user: str, mailbox: str = "INBOX") -> list[tuple[int, list[str], bytes]]:
        """Every message as ``(uid, flags, raw bytes)``, in UID order."""
        out: list[tuple[int, list[str], bytes]] = []
        with self.session(user) as conn:
            typ, data = conn.select(self._q(mailbox), readonly=True)
            if typ != "OK":
                raise RuntimeError(f"SELECT {mailbox!r} failed: {data!r}")
            typ, data = conn.uid("FETCH", "1:*", "(UID FLAGS INTERNALDATE BODY.PEEK[])")
            for item in data:
                if not isinstance(item, tuple):
                    continue
                meta, body = item
                uid = re.search(rb"UID (\d+)", meta)
                fl = re.search(rb"FLAGS \(([^)]*)\)", meta)
                if uid:
                    flags = fl.group(1).decode().split() if fl else []
                    out.append((int(uid.group(1)), flags, body))
        out.sort(key=lambda t: t[0])
        return out

    # ------------------------------------------------------------------ faults

    def doveadm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``doveadm -c <this config> ARGS``."""
        res = subprocess.run(
            [self._doveadm, "-c", str(self.config_path), *args],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if check and res.returncode != 0:
            raise RuntimeError(
                f"doveadm {' '.join(args)} failed ({res.returncode}): "
                f"{res.stderr.strip() or res.stdout.strip()}"
            )
        return res

    def reset_uidvalidity(self, user: str, mailbox: str = "INBOX", *, renumber: bool = True) -> int:
        """Force a new UIDVALIDITY on *mailbox*; returns it.

        With ``renumber`` (the default, like a server whose index was rebuilt) the messages
        are kept but get new UIDs: they are read, expunged and APPENDed again with their
        flags and internal dates.  Without it only the UIDVALIDITY value changes.  Open
        sessions that have the mailbox selected are disconnected by Dovecot.
        """
        old = self.uidvalidity(user, mailbox)
        saved: list[tuple[list[str], bytes, bytes]] = []
        if renumber:
            with self.session(user) as conn:
                conn.select(self._q(mailbox))
                typ, data = conn.uid("FETCH", "1:*", "(FLAGS INTERNALDATE BODY.PEEK[])")
                for item in data:
                    if isinstance(item, tuple):
                        meta, body = item
                        fl = re.search(rb"FLAGS \(([^)]*)\)", meta)
                        date = re.search(rb'INTERNALDATE ("[^"]*")', meta)
                        flags = [
                            f
                            for f in (fl.group(1).decode().split() if fl else [])
                            if f != "\\Recent"
                        ]
                        saved.append((flags, date.group(1) if date else b"", body))
                if saved:
                    conn.store("1:*", "+FLAGS.SILENT", "(\\Deleted)")
                    conn.expunge()
                conn.close()
        new = max(old + 1, int(time.time()))
        self.doveadm("mailbox", "update", "-u", user, "--uid-validity", str(new), mailbox)
        if saved:
            with self.session(user) as conn:
                for flags, date, body in saved:
                    flag_str = "(" + " ".join(flags) + ")" if flags else None
                    typ, data = conn.append(self._q(mailbox), flag_str, date.decode() or None, body)
                    if typ != "OK":
                        raise RuntimeError(f"re-APPEND failed: {data!r}")
        return new

    def kill_connections(self, user: str | None = None) -> None:
        """Drop every open IMAP session of *user* (all users if None) via ``doveadm kick``.

        Clients then get ``* BYE`` / EOF and ``imaplib`` raises ``IMAP4.abort``.
        """
        self.doveadm("kick", user if user is not None else "*", check=False)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            who = self.doveadm("who", check=False).stdout.strip().splitlines()
            rows = [r for r in who[1:] if r.strip()]
            if user is not None:
                rows = [r for r in rows if r.split()[0] == user]
            if not rows:
                return
            time.sleep(0.05)


# Servers still running when the interpreter exits (a crashed test run) are stopped.
_live: set[DovecotServer] = set()


@atexit.register
def _stop_all() -> None:
    for server in list(_live):
        with contextlib.suppress(Exception):
            server.stop(cleanup=True)
