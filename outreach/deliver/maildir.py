"""Writing into a Maildir (the outbox) in two steps, and the error that names the folder.

A message is written and synced in tmp/ first; moving it into new/ is what delivers it.
So a write that fails (a full disk, a read-only folder) fails before anything is
delivered, and leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import socket
import time
from pathlib import Path

from outreach.errors import TransportError

_maildir_count = itertools.count()


def write_tmp(path: Path, data: bytes) -> tuple[str, Path]:
    """``data`` in a new file of the Maildir's tmp/, synced; (its unique name, its path).
    Nothing is left behind when the write fails."""
    now = time.time()
    host = socket.gethostname().replace("/", r"\057").replace(":", r"\072")
    key = f"{int(now)}.M{int(now % 1 * 1e6)}P{os.getpid()}Q{next(_maildir_count)}.{host}"
    tmp = path / "tmp" / key
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        remove_quietly(tmp)
        raise
    return key, tmp


def remove_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


def why(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


def outbox_error(path: Path, exc: OSError) -> TransportError:
    """The outbox cannot be written: where, why, and what to do (nothing was marked sent)."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        hint = "free space on the disk that holds it (or set transport.outbox to a folder "
        hint += "elsewhere), then rerun: the messages not written are still planned"
    elif exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        hint = "make the folder writable for this user (or set transport.outbox to one "
        hint += "that is), then rerun: the messages not written are still planned"
    elif exc.errno in (errno.ENOTDIR, errno.EEXIST):
        hint = "a file stands where the outbox folder (or one inside it) should be: move it "
        hint += "away or set transport.outbox to a folder, then rerun"
    else:
        hint = "check the folder (transport.outbox in outreach.yaml), then rerun"
    return TransportError(f"cannot write to the outbox {path}: {why(exc)}", hint=hint)
