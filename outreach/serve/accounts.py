"""Accounts and sessions of ``outreach serve``.

A liaison signs in under their id in people/liaisons.yaml and sees their own researchers;
an ``admin`` (the technical person) sees every liaison. Passwords are kept as argon2id
hashes (argon2-cffi), rehashed at sign-in when the parameters change. A session is a
random key in a signed cookie; the store keeps only its SHA-256, made anew at every
sign-in (a key planted before sign-in never becomes a session) and ended by sign-out, a
new password or the account's removal.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, insert, select, update

from outreach.errors import ConfigError
from outreach.store import Store, as_utc, utcnow
from outreach.store.schema import ADMIN_ROLE, LIAISON_ROLE, users, web_sessions

ROLES = (LIAISON_ROLE, ADMIN_ROLE)
USER_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,99}")
MIN_PASSWORD, MAX_PASSWORD = 10, 1024
_hasher = PasswordHasher()
# Verified when the user does not exist, so a wrong id takes as long as a wrong password.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


@dataclass(frozen=True)
class User:
    id: str
    role: str

    @property
    def is_admin(self) -> bool:
        return self.role == ADMIN_ROLE

    def may_see(self, liaison_id: str) -> bool:
        return self.is_admin or self.id == liaison_id


def password_problem(password: str) -> str | None:
    """Why a new password will not do, or None."""
    if len(password) < MIN_PASSWORD:
        return f"use at least {MIN_PASSWORD} characters"
    if len(password) > MAX_PASSWORD:
        return f"use at most {MAX_PASSWORD} characters"
    if not password.strip():
        return "a password of spaces only will not do"
    return None


def _checked_id(user_id: str) -> str:
    if not USER_ID.fullmatch(user_id):
        raise ConfigError(
            f"`{user_id}` is not a user id",
            hint="lowercase letters, digits, - and _ (a liaison's id, e.g. `aino`)",
        )
    return user_id


def _checked_password(password: str) -> str:
    problem = password_problem(password)
    if problem:
        raise ConfigError(f"the password will not do: {problem}")
    return password


def get_user(store: Store, user_id: str) -> User | None:
    if not USER_ID.fullmatch(user_id or ""):
        return None
    with store.engine.connect() as conn:
        row = conn.execute(select(users.c.id, users.c.role).where(users.c.id == user_id)).first()
    return User(row.id, row.role) if row else None


def list_users(store: Store) -> list[User]:
    with store.engine.connect() as conn:
        rows = conn.execute(select(users.c.id, users.c.role).order_by(users.c.id))
        return [User(r.id, r.role) for r in rows]


def add_user(store: Store, user_id: str, role: str, password: str) -> User:
    _checked_id(user_id)
    if role not in ROLES:
        raise ConfigError(f"unknown role `{role}`", hint=f"one of: {', '.join(ROLES)}")
    hashed = _hasher.hash(_checked_password(password))
    now = utcnow()
    with store.write() as conn:
        added = conn.execute(
            store.insert_ignore(users).values(
                id=user_id, role=role, password_hash=hashed, created_at=now, updated_at=now
            )
        ).rowcount
    if not added:
        raise ConfigError(
            f"user `{user_id}` exists already",
            hint=f"`outreach user passwd {user_id}` sets a new password",
        )
    return User(user_id, role)


def set_password(store: Store, user_id: str, password: str) -> None:
    """A new password; every session of the user ends (a stolen one with them)."""
    hashed = _hasher.hash(_checked_password(password))
    with store.write() as conn:
        changed = conn.execute(
            update(users)
            .where(users.c.id == user_id)
            .values(password_hash=hashed, updated_at=utcnow())
        ).rowcount
        conn.execute(delete(web_sessions).where(web_sessions.c.user_id == user_id))
    if not changed:
        raise ConfigError(f"no user `{user_id}`", hint="`outreach user add ID` makes one")


def remove_user(store: Store, user_id: str) -> None:
    with store.write() as conn:
        gone = conn.execute(delete(users).where(users.c.id == user_id)).rowcount
        conn.execute(delete(web_sessions).where(web_sessions.c.user_id == user_id))
    if not gone:
        raise ConfigError(f"no user `{user_id}`")


def verify_login(store: Store, user_id: str, password: str) -> User | None:
    """The user when the password is theirs, else None (an unknown id costs the same)."""
    if len(password) > MAX_PASSWORD:
        return None
    row = None
    if USER_ID.fullmatch(user_id or ""):
        with store.engine.connect() as conn:
            row = conn.execute(select(users).where(users.c.id == user_id)).first()
    try:
        _hasher.verify(row.password_hash if row else _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        return None
    if row is None:
        return None
    if _hasher.check_needs_rehash(row.password_hash):
        with store.engine.begin() as conn:
            conn.execute(
                update(users)
                .where(users.c.id == row.id, users.c.password_hash == row.password_hash)
                .values(password_hash=_hasher.hash(password), updated_at=utcnow())
            )
    return User(row.id, row.role)


# ------------------------------------------------------------------------------ sessions


@dataclass(frozen=True)
class Session:
    key_hash: str
    user: User
    csrf: str
    expires_at: datetime


def _key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def start_session(store: Store, user: User, hours: int) -> tuple[str, Session]:
    """A new session (a new key, a new CSRF token); expired ones are cleared on the way."""
    key = secrets.token_urlsafe(32)
    now = utcnow()
    session = Session(_key_hash(key), user, secrets.token_urlsafe(32), now + timedelta(hours=hours))
    with store.engine.begin() as conn:
        conn.execute(delete(web_sessions).where(web_sessions.c.expires_at < now))
        conn.execute(
            insert(web_sessions).values(
                id=session.key_hash,
                user_id=user.id,
                csrf=session.csrf,
                created_at=now,
                expires_at=session.expires_at,
            )
        )
    return key, session


def session_of(store: Store, key: str | None) -> Session | None:
    """The live session of a cookie's key, its user still there; else None."""
    if not key:
        return None
    s, u = web_sessions.c, users.c
    with store.engine.connect() as conn:
        row = conn.execute(
            select(s.id, s.csrf, s.expires_at, u.id.label("user_id"), u.role)
            .join_from(web_sessions, users, u.id == s.user_id)
            .where(s.id == _key_hash(key))
        ).first()
    if row is None or as_utc(row.expires_at) <= utcnow():
        return None
    return Session(row.id, User(row.user_id, row.role), row.csrf, as_utc(row.expires_at))


def end_session(store: Store, key: str | None) -> None:
    if key:
        with store.engine.begin() as conn:
            conn.execute(delete(web_sessions).where(web_sessions.c.id == _key_hash(key)))
