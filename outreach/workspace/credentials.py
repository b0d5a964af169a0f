"""Secrets come from the environment or a file, never from YAML, and are never logged."""

from __future__ import annotations

import os
import re
import secrets as _secrets
import shlex
import subprocess
from pathlib import Path

from outreach.errors import ConfigError
from outreach.workspace.plaintext_secrets import looks_like_token

_ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")  # what plaintext_secrets also takes for a name

DEFAULT_SECRET_FILE = ".outreach/secret"
_EPHEMERAL = _secrets.token_urlsafe(32).encode()


def token_secret(
    root: Path, secret_env: str, secret_file: str | None, *, create: bool = True
) -> bytes:
    """The HMAC key behind Message-ID tokens.

    Order: the named environment variable, the named file, else a random key made once
    and kept in the workspace (mode 0600) so tokens stay stable across runs.
    """
    value = os.environ.get(secret_env)
    if value:
        return value.encode()
    path = root / (secret_file or DEFAULT_SECRET_FILE)
    if path.is_file():
        data = path.read_text(encoding="utf-8").strip()
        if not data:
            raise ConfigError(
                f"the secret file {path} is empty", hint="delete it to make a new one"
            )
        return data.encode()
    if secret_file:
        name = shown_variable(secret_env)
        raise ConfigError(
            f"tracking.secret_file {secret_file} does not exist",
            hint=f"create it, or set ${name}" if name else "create it",
        )
    if not create:
        # check and preview must not write into the workspace: a key for this process only
        # (their Message-IDs are examples; `send` makes and keeps the real key).
        return _EPHEMERAL
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(_secrets.token_urlsafe(32))
    return path.read_text(encoding="utf-8").strip().encode()


def shown_variable(name: str) -> str | None:
    """``name`` when it looks like an environment variable's name (OUTREACH_SMTP_PASSWORD),
    else None: a secret pasted where the name belongs must never be printed back."""
    if len(name) <= 64 and _ENV_NAME.match(name) and not looks_like_token(name):
        return name
    return None


def password_from(env: str | None, file: str | None = None, what: str = "password") -> str | None:
    if env:
        value = os.environ.get(env)
        if value is None:
            name = shown_variable(env)
            if name is None:
                raise ConfigError(
                    f"no environment variable holds the {what}: the name given for it "
                    f"(`password_env` or the like) does not look like a variable's name, so it "
                    f"is not shown: is the {what} itself written there?",
                    hint="write the NAME of an environment variable there (e.g. "
                    f"OUTREACH_SMTP_PASSWORD) and export that variable with the {what}; "
                    "change the secret if the file was ever shared",
                )
            raise ConfigError(
                f"the {what} variable ${name} is not set",
                hint=f"export {name}=… before running (it is never stored in YAML)",
            )
        return value
    if file:
        try:
            return Path(file).expanduser().read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"cannot read the {what} file {file}: {exc.strerror}") from None
    return None


def token_from_command(command: str) -> str:
    """Run an OAuth helper (e.g. `oauth2ms`, `gcloud auth print-access-token`)."""
    try:
        done = subprocess.run(
            shlex.split(command), capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigError(f"the OAuth token command failed to run: {exc}") from None
    if done.returncode != 0 or not done.stdout.strip():
        raise ConfigError(
            f"the OAuth token command exited with {done.returncode} and printed no token",
            hint="run it by hand to see why",
        )
    return done.stdout.strip()
