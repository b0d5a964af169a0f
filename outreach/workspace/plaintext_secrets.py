"""Secrets written into the workspace's YAML files: found, and warned about by file:line.

A key like ``password`` with a literal value, a PEM private key, a URL with a password in
it, or a long random-looking token: each is a warning that names where it is and never
repeats the value. Keys ending in ``_env``, ``_file`` or ``_command`` say where a secret
lives, and are only warned about when they hold the secret itself.
"""

from __future__ import annotations

import math
import re
from collections import Counter

from outreach.errors import Problem
from outreach.workspace.yamlio import YamlDoc, dotted_path

# A key that names a secret; `*_env`, `*_file`, `*_command` name where it lives instead.
_SECRET_KEY = re.compile(
    r"(?:^|[_-])(password|passwd|passphrase|secret|token|api[_-]?key|apikey|"
    r"private[_-]?key|client[_-]?secret|access[_-]?key|credentials?)(?:$|[_-])",
    re.I,
)
_REFERENCE_SUFFIXES = ("_env", "_file", "_command", "_cmd", "_path")
_PEM = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----")
_URL_PASSWORD = re.compile(r"\b[a-z][a-z0-9+.-]*://[^/\s:@]+:([^/\s@]+)@", re.I)
_ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")
_WORDISH = re.compile(r"[a-z]{6,}|[A-Z][a-z]{5,}")
_TOKEN_CHARS = re.compile(r"^[A-Za-z0-9+/=_.~-]+$")
_KNOWN_TOKEN = re.compile(
    r"^(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_\w{20,}|glpat-[\w-]{20,}|xox[abposr]-[\w-]{10,}"
    r"|sk-[\w-]{20,}|AKIA[0-9A-Z]{16}|ya29\.[\w.-]{20,}|eyJ[\w-]{10,}\.[\w-]{10,}\.[\w-]*)$"
)


def _entropy(text: str) -> float:
    counts = Counter(text)
    n = len(text)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


def looks_like_token(value: str) -> bool:
    """A long random-looking string: an API key, a password, a base64 secret."""
    v = value.strip()
    if _KNOWN_TOKEN.match(v):
        return True
    if len(v) < 32 or not _TOKEN_CHARS.match(v):
        return False
    if re.fullmatch(r"[0-9a-fA-F]+", v):
        return True  # 128 bits or more of hex
    # Words (CamelCase, snake_case, slugs, paths) are mostly long lowercase runs; random
    # base64 rarely has them (this misses about 1 in 2000 random 32-character tokens).
    wordish = sum(len(w) for w in _WORDISH.findall(v)) / len(v)
    classes = sum(bool(re.search(p, v)) for p in ("[a-z]", "[A-Z]", "[0-9]"))
    return wordish < 0.5 and classes >= 2 and _entropy(v) >= 3.5


def _secret_kind(value: str) -> str | None:
    if _PEM.search(value):
        return "a private key"
    m = _URL_PASSWORD.search(value)
    if m and m.group(1) not in ("***", "xxx") and not m.group(1).startswith("$"):
        return "a URL with a password in it"
    if looks_like_token(value):
        return "what looks like a password or access token"
    return None


def secret_warnings(doc: YamlDoc | None) -> list[Problem]:
    """Warnings for secrets written into a YAML file: a key like ``password`` with a literal
    value, a PEM private key, a URL with a password, a long random token. The warning names
    file:line and never repeats the value."""
    if doc is None:
        return []
    problems: list[Problem] = []
    seen: set[int] = set()

    def visit(value: object, path: tuple[str | int, ...]) -> None:
        if isinstance(value, dict | list):
            if id(value) in seen:  # aliases share objects: visit each once
                return
            seen.add(id(value))
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for k, v in items:
                visit(v, (*path, k if isinstance(k, int) else str(k)))
            return
        if value is None or isinstance(value, bool) or value == "":
            return
        text = str(value)
        key = str(path[-1]) if path and isinstance(path[-1], str) else ""
        lowered = key.lower()
        reference = lowered.endswith(_REFERENCE_SUFFIXES)
        kind = _secret_kind(text)
        dotted = dotted_path(path)
        base = re.sub(r"[_-]?(?:env|file|command|cmd|path)$", "", key, flags=re.I) or "password"
        if reference and kind:
            message = f"`{dotted}` should name where the secret lives, but holds {kind} itself"
        elif lowered.endswith("_env") and not _ENV_NAME.match(text):
            # (`send` would say "the variable $… is not set", printing the secret)
            message = (
                f"`{dotted}` should name an environment variable (like OUTREACH_SMTP_PASSWORD);"
                " is this the secret itself?"
            )
        elif kind:
            message = f"`{dotted}` holds {kind}"
        elif key and _SECRET_KEY.search(key) and not reference:
            message = f"`{dotted}` looks like a secret written into the file"
        else:
            return
        if kind == "a URL with a password in it":
            where_to = (
                "put the whole URL in $OUTREACH_DATABASE_URL (it overrides `database:`)"
                if path == ("database",)
                else "leave the password out of the URL and name it with `password_env: VARIABLE`"
            )
        else:
            where_to = (
                f"name an environment variable (`{base}_env: VARIABLE`) or a file "
                f"(`{base}_file: PATH`, mode 0600) instead"
            )
        problems.append(
            Problem(
                message,
                doc.where(path),
                f"secrets never go into YAML (it ends up in backups and version control): "
                f"{where_to}; remove the value here, and change the secret if this file was "
                "ever shared",
                severity="warning",
            )
        )

    visit(doc.data, ())
    return problems


__all__ = ["looks_like_token", "secret_warnings"]
