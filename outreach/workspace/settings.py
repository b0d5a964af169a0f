"""The ``outreach.yaml`` settings model (the contract in docs/CONTRACTS.md). One registry: code,
defaults and documentation all read these models."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

LocalText = dict[str, str] | str
"""Text per language (``{fi: …, en: …}``), or one string for every language."""


def path_outside(root: Path, written: str | Path, folders: Iterable[Path]) -> Path | None:
    """Where ``written`` (relative to ``root``, or absolute) really leads, through every
    ``..`` and symbolic link, when that is in none of ``folders`` (resolved); None when it
    is in one of them."""
    path = Path(written).expanduser()
    path = path if path.is_absolute() else root / path
    try:
        target = path.resolve()
    except (OSError, RuntimeError):  # a loop of symbolic links: nowhere that can be vouched for
        return path
    return None if any(target.is_relative_to(folder) for folder in folders) else target


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# Settings that reach a mail header or an SMTP command are checked here, when outreach.yaml
# is loaded (so `check` names the line), and again by message/headers.py when written.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_ENCODED_WORD = re.compile(r"=\?[^?]*\?[^?]*\?")
_ATEXT = r"A-Za-z0-9!#$%&'*+/=?^_`{|}~-"
_ASCII_ADDRESS = re.compile(rf"[{_ATEXT}]+(?:\.[{_ATEXT}]+)*@[A-Za-z0-9.-]+")
# An http(s) URL written into List-Unsubscribe as it is: printable ASCII without what
# would end the <…> or split the list (percent-encode those), and no #fragment (the
# token is appended as a query).
_HEADER_URL = re.compile(r"https?://[\x21-\x7e]+", re.IGNORECASE)
_NOT_IN_HEADER_URL = frozenset('"<>\\^`{|},#')


def header_text(value: str) -> str:
    """Text bound for a mail header (a name): on one line, no control character, no
    encoded-word syntax; else ValueError (a pydantic validator)."""
    if _CONTROL.search(value):
        raise ValueError(
            "a line break or control character: it goes into mail headers, keep it on one line"
        )
    if _ENCODED_WORD.search(value):
        raise ValueError(
            "RFC 2047 encoded-word syntax (=?…?…?): mail programs would decode it into other "
            "text; write the text itself"
        )
    return value


def _address(value: str) -> str:
    """An address written into headers and SMTP commands as it is: one ``local@domain``."""
    if (
        len(value) > 254
        or not _ASCII_ADDRESS.fullmatch(value)
        or not _is_dns_name(value.rsplit("@", 1)[1])
    ):
        raise ValueError(
            "write one address such as rds@uni.example (ASCII: an internationalised domain "
            "in its xn-- form)"
        )
    return value


def single_address(value: str) -> str:
    """Text bound for an address header: no space, control character, bracket, quote or
    separator that would end it and start another address or header."""
    if _CONTROL.search(value) or not _NOT_IN_ADDRESS.isdisjoint(value) or value != value.strip():
        raise ValueError(
            "one address such as rds@uni.example: no line break, control character, space, "
            "bracket, quote, comma or semicolon"
        )
    return value


_NOT_IN_ADDRESS = frozenset(' \t<>()[]\\,;:"')


def _is_dns_name(value: str) -> bool:
    return len(value) <= 253 and _DNS_NAME.match(value) is not None


def in_language(text: LocalText | None, lang: str | None, default: str) -> str:
    """``text`` in ``lang``, else in ``default`` (the workspace's default_language), else
    "" (a mapping that lacks both is an error `check` reports: validation.py)."""
    if text is None:
        return ""
    if isinstance(text, str):
        return text
    return text.get(lang or default) or text.get(default) or ""


class Organisation(StrictModel):
    name: LocalText = Field(
        description="the sending organisation (the library), one name or one per language"
    )
    domain: str = Field(description="the mail domain; Message-IDs and List-Id use it")
    university: LocalText | None = Field(
        None,
        description="where the readers work, one name or one per language: the footer says "
        "they get the message as researchers of their faculty and of it",
    )
    footer: LocalText | None = Field(
        None,
        description="the footer's first sentence per language instead of the built-in one "
        "(a template: `researcher`, `organisation`, `lang`)",
    )

    @field_validator("domain")
    @classmethod
    def _domain(cls, value: str) -> str:
        if not _is_dns_name(value):
            raise ValueError(
                "write the mail domain as a DNS name, e.g. uni.example (ASCII letters, "
                "digits, - and _, parts joined by dots; an internationalised one in its "
                "xn-- form): Message-IDs and List-Id headers are made of it"
            )
        return value


class ServiceSettings(StrictModel):
    name: str
    email: str
    title: LocalText | None = None
    phone: str | None = None
    photo: str | None = None

    _name = field_validator("name")(header_text)
    # One address with nothing that would end it in a header (whether it is a valid address
    # is a problem of its own, validation.py: the settings stay usable)
    _email = field_validator("email")(single_address)


class TransportSettings(StrictModel):
    kind: Literal["outbox", "smtp", "dry-run"] = "outbox"
    host: str = "127.0.0.1"
    port: int = Field(587, ge=1, le=65535)
    security: Literal["none", "starttls", "tls"] = "starttls"
    username: str | None = None
    password_env: str | None = None
    password_file: str | None = None
    auth: Literal["auto", "plain", "login", "xoauth2"] = "auto"
    oauth_token_env: str | None = None
    oauth_token_command: str | None = None
    connections: int = Field(4, ge=1, le=64)
    timeout: float = Field(30.0, gt=0)
    outbox: str = "outbox"
    delivers: bool = Field(
        False,
        description="the outbox is a real delivery path (a Maildir a local MTA picks up): "
        "mail written there counts as sent; by default it is a rehearsal, and a later send "
        "over SMTP sends every message for real",
    )
    helo: str | None = Field(
        None, description="the name to greet the SMTP server with (EHLO): a DNS name or [address]"
    )
    ca_file: str | None = Field(
        None,
        description="PEM file of certificates to trust for TLS/STARTTLS instead of the "
        "system's (a private CA); relative to the workspace",
    )
    lease_seconds: float = Field(
        120.0,
        ge=1,
        le=3600,
        description="how long a sending run that stops answering (a crash on another "
        "machine, a frozen process) keeps its campaign and rows before another run takes "
        "them over; a run killed on this machine is taken over at once",
    )

    @field_validator("helo")
    @classmethod
    def _helo(cls, value: str | None) -> str | None:
        if value is None or _is_dns_name(value):
            return value
        literal = value[1:-1] if value.startswith("[") and value.endswith("]") else None
        if literal is not None:
            with contextlib.suppress(ValueError):
                ipaddress.ip_address(literal.removeprefix("IPv6:"))
                return value
        raise ValueError(
            "write a DNS name (mail.uni.example) or an address in brackets ([192.0.2.1])"
        )


@dataclass(frozen=True)
class Pace:
    """The quota one sender (mailbox) gets: at most ``per_minute`` messages in any 60 s and
    ``per_day`` in any 24 h; None lifts that bound (a relay that needs no pacing)."""

    per_minute: int | None
    per_day: int | None

    @property
    def paced(self) -> bool:
        return self.per_minute is not None or self.per_day is not None

    def describe(self) -> str:
        if not self.paced:
            return "no limit"
        minute = "no pacing" if self.per_minute is None else f"{self.per_minute:,}/minute"
        day = "no daily cap" if self.per_day is None else f"{self.per_day:,}/day"
        return f"{minute}, {day}"


_PER_MINUTE = "messages one sender may send in any 60 seconds; null: no pacing (a relay)"
_PER_DAY = "messages one sender may send in any 24 hours; null: no daily cap"


class SenderLimits(StrictModel):
    """A sender's own limits (``limits.service``, ``limits.liaisons.<id>``, or ``limits:`` on
    a liaison in people/liaisons.yaml): a key written here replaces the default, a key left
    out keeps it, ``null`` lifts that bound."""

    per_sender_per_minute: int | None = Field(None, ge=1, description=_PER_MINUTE)
    per_sender_per_day: int | None = Field(None, ge=1, description=_PER_DAY)

    def over(self, base: Pace) -> Pace:
        """``base`` with the keys written here put in its place."""
        written = self.model_fields_set
        return Pace(
            self.per_sender_per_minute if "per_sender_per_minute" in written else base.per_minute,
            self.per_sender_per_day if "per_sender_per_day" in written else base.per_day,
        )


class Limits(StrictModel):
    per_sender_per_minute: int | None = Field(30, ge=1, description=_PER_MINUTE)
    per_sender_per_day: int | None = Field(10000, ge=1, description=_PER_DAY)
    service: SenderLimits | None = Field(
        None, description="the service address's own limits (over the defaults above)"
    )
    liaisons: dict[str, SenderLimits] = Field(
        {}, description="limits of single liaisons, by liaison id (over the defaults above)"
    )

    def pace(self, sender_id: str, own: SenderLimits | None = None) -> Pace:
        """What ``sender_id`` (a liaison's id, or ``service``) gets: the defaults, then
        ``service`` or ``liaisons.<id>`` here, then ``own`` (the liaison's ``limits:`` in
        people/liaisons.yaml); each replaces only the keys it writes."""
        pace = Pace(self.per_sender_per_minute, self.per_sender_per_day)
        extra = self.service if sender_id == "service" else self.liaisons.get(sender_id)
        for layer in (extra, own):
            if layer is not None:
                pace = layer.over(pace)
        return pace


class Tracking(StrictModel):
    secret_env: str = "OUTREACH_SECRET"
    secret_file: str | None = None
    reply_window_days: int = Field(30, ge=1, le=3650)
    keep_bodies: bool = False
    authserv_id: str | None = Field(
        None,
        description="the authserv-id your own mail server writes in Authentication-Results "
        "(e.g. mx.uni.example): where it says dmarc=fail, a message without our Message-ID "
        "is neither credited nor obeyed; such headers from other servers are ignored",
    )


class Mailbox(StrictModel):
    name: str
    url: str = Field(description="imap://… imaps://… maildir:PATH mbox:PATH")
    username: str | None = None
    password_env: str | None = None
    oauth_token_command: str | None = None
    folders: list[str] = ["INBOX"]
    ca_file: str | None = Field(
        None,
        description="PEM file of certificates to trust for imaps:// instead of the system's "
        "(a private CA or a self-signed server); relative to the workspace",
    )


class Unsubscribe(StrictModel):
    url: str | None = None
    mailto: str | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and (
            len(value) > 500
            or not _HEADER_URL.fullmatch(value)
            or not _NOT_IN_HEADER_URL.isdisjoint(value)
        ):
            raise ValueError(
                "write an http(s) URL of printable ASCII without spaces, <, >, quotes, "
                "commas or a #fragment (percent-encode them); it goes into the "
                "List-Unsubscribe header with the token appended"
            )
        # With the token appended ("?t=…" or "&t=…") the URL must not hold `=?`: a header
        # refuses the start of an RFC 2047 encoded word (message/headers.py)
        if value is not None and "=?" in value + ("&" if "?" in value else "?") + "t=":
            raise ValueError(
                "the URL holds `=?` (or ends in `=` before the token's `?`), which mail "
                "programs read as the start of an encoded word: write `=%3F` for `=?`"
            )
        return value

    @field_validator("mailto")
    @classmethod
    def _mailto(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if value.lower().startswith("mailto:") or "?" in value:
            raise ValueError(
                "write the address alone (rds@uni.example): mailto: and ?subject= are added"
            )
        return _address(value)


class ServeSettings(StrictModel):
    """``outreach serve``: the one-click unsubscribe endpoint and the liaisons' desk."""

    host: str = Field("127.0.0.1", description="address to listen on (`--host` overrides)")
    port: int = Field(8080, ge=1, le=65535, description="port to listen on (`--port` overrides)")
    trusted_proxies: list[str] = Field(
        [],
        description="addresses or networks (CIDR) of the reverse proxies in front: only "
        "from these are X-Forwarded-For, X-Forwarded-Proto and `user_header` believed",
    )
    user_header: str | None = Field(
        None,
        description="header naming the user a trusted proxy has authenticated (single "
        "sign-on), e.g. X-Remote-User; the user must exist (`outreach user add`)",
    )
    session_hours: int = Field(12, ge=1, le=24 * 30, description="how long a sign-in lasts")
    login_attempts: int = Field(
        5, ge=1, le=1000, description="failed sign-ins allowed per address and per user in 15 min"
    )
    undo_minutes: int = Field(
        30, ge=0, le=24 * 60, description="how long an opt-out can be undone from its page"
    )
    spool: str = Field(
        ".outreach/optout-spool.jsonl",
        description="opt-outs received while the store was unreachable, replayed at the next "
        "start (relative to the workspace)",
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(
                    f"`{item}` is not an address or network (e.g. 127.0.0.1)"
                ) from None
        return value


class ApprovalSettings(StrictModel):
    """``approval:``: a campaign is sent for real only once someone named in ``by`` has
    approved its content (`outreach approve CAMPAIGN --as ID`)."""

    required: bool = Field(
        True, description="refuse a real send of a campaign not approved, or changed since"
    )
    by: list[str] = Field(
        min_length=1,
        description="who may approve: ids of liaisons (people/liaisons.yaml), experts "
        "(people/experts.yaml) or of `staff` below",
    )
    staff: dict[str, str] = Field(
        {},
        description="approvers who are neither liaisons nor experts (a head of service): "
        "id -> name",
    )


_DNS_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_DNS_NAME = re.compile(rf"^{_DNS_LABEL}(?:\.{_DNS_LABEL})*$")


class Dkim(StrictModel):
    """One DKIM signing key: mail whose From domain is ``domain`` (or below it) is signed.

    The private key never sits in YAML: ``key_file`` names a PEM file (relative to the
    workspace, or absolute; keep it mode 0600, outside version control) and ``key_env`` an
    environment variable holding the PEM text. Exactly one of the two.
    """

    selector: str = Field(
        description="DNS selector: the public key is published at SELECTOR._domainkey.DOMAIN"
    )
    domain: str | None = Field(None, description="signing domain (d=); default organisation.domain")
    key_file: str | None = Field(None, description="PEM private key file")
    key_env: str | None = Field(None, description="environment variable holding the PEM key")

    @field_validator("selector", "domain")
    @classmethod
    def _dns_name(cls, value: str | None) -> str | None:
        if value is not None and (len(value) > 253 or not _DNS_NAME.match(value)):
            raise ValueError("write a DNS name: letters, digits, - and _, parts joined by dots")
        return value.lower() if value is not None else None

    @model_validator(mode="after")
    def _one_key(self) -> Dkim:
        if bool(self.key_file) == bool(self.key_env):
            raise ValueError(
                "give the private key as `key_file: PATH` or `key_env: VARIABLE` (exactly one)"
            )
        return self


class Settings(StrictModel):
    organisation: Organisation
    service: ServiceSettings
    languages: list[str] = Field(min_length=1)
    default_language: str
    timezone: str = Field(
        "UTC",
        description="the time zone of a campaign `schedule:` written without one (an IANA "
        "name such as Europe/Helsinki); UTC when absent",
    )
    database: str = "sqlite:///outreach.db"
    transport: TransportSettings = TransportSettings()
    limits: Limits = Limits()
    tracking: Tracking = Tracking()
    mailboxes: list[Mailbox] = []
    unsubscribe: Unsubscribe = Unsubscribe()
    serve: ServeSettings = ServeSettings()
    dkim: Dkim | list[Dkim] | None = Field(
        None, description="DKIM signing: one key, or a list with one key per sending domain"
    )
    approval: ApprovalSettings | None = Field(
        None, description="approval before sending (off without it)"
    )
    allowed_paths: list[str] = Field(
        [],
        description="folders outside the workspace that templates, photos and DKIM key files "
        "may come from (e.g. /etc/outreach; absolute, or relative to the workspace): anything "
        "else that resolves outside the workspace, through `..` or a symbolic link, is refused. "
        "A `key_file` written as an absolute path is allowed without being listed here",
    )

    @field_validator("languages")
    @classmethod
    def _languages_are_codes(cls, value: list[str]) -> list[str]:
        for code in value:
            if not (2 <= len(code) <= 8 and code.replace("-", "").replace("_", "").isalpha()):
                raise ValueError(f"`{code}` is not a language code such as fi, sv or en")
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"`{value}` is not a time zone: write an IANA name such as Europe/Helsinki, "
                "Europe/Stockholm or UTC"
            ) from None
        return value

    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @field_validator("dkim")
    @classmethod
    def _one_key_per_domain(cls, value: Dkim | list[Dkim] | None) -> Dkim | list[Dkim] | None:
        if isinstance(value, list):
            domains = [k.domain for k in value]
            if len(set(domains)) != len(domains):
                raise ValueError("one key per signing domain: two entries share a `domain`")
        return value

    def dkim_keys(self) -> list[Dkim]:
        """The configured DKIM keys (``dkim:`` may be one mapping or a list)."""
        if self.dkim is None:
            return []
        return list(self.dkim) if isinstance(self.dkim, list) else [self.dkim]

    def organisation_name(self, lang: str | None = None) -> str:
        """The organisation's name in ``lang`` (the default language when not given or
        not translated)."""
        return in_language(self.organisation.name, lang, self.default_language)

    def path_outside(self, root: Path, written: str | Path) -> Path | None:
        """Where ``written`` leads when that is outside the workspace and ``allowed_paths``
        (None when it stays inside them)."""
        return path_outside(root, written, self.allowed_folders(root))

    def allowed_folders(self, root: Path) -> list[Path]:
        """The workspace and every folder of ``allowed_paths``, resolved: what templates,
        photos and key files may resolve into."""
        folders = [root.resolve()]
        for entry in self.allowed_paths:
            folder = Path(entry).expanduser()
            folders.append((folder if folder.is_absolute() else root / folder).resolve())
        return folders

    def database_url(self, root: Path) -> str:
        """The database URL with env override; relative SQLite paths resolve in the workspace."""
        url = os.environ.get("OUTREACH_DATABASE_URL") or self.database
        prefix = "sqlite:///"
        if url.startswith(prefix) and not url.startswith(prefix + "/") and url != "sqlite://":
            rel = url[len(prefix) :]
            if rel and rel != ":memory:":
                return prefix + str((root / rel).resolve())
        return url
