"""The ``outreach.yaml`` settings model (DESIGN.md contract). One registry: code,
defaults and documentation all read these models."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

LocalText = dict[str, str] | str
"""Text per language (``{fi: …, en: …}``), or one string for every language."""


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Organisation(StrictModel):
    name: str
    domain: str = Field(description="the mail domain; Message-IDs and List-Id use it")


class ServiceSettings(StrictModel):
    name: str
    email: str
    title: LocalText | None = None
    phone: str | None = None
    photo: str | None = None


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
    helo: str | None = None
    ca_file: str | None = Field(
        None,
        description="PEM file of certificates to trust for TLS/STARTTLS instead of the "
        "system's (a private CA); relative to the workspace",
    )


class Limits(StrictModel):
    per_sender_per_minute: int = Field(30, ge=1)
    per_sender_per_day: int = Field(10000, ge=1)


class Tracking(StrictModel):
    secret_env: str = "OUTREACH_SECRET"
    secret_file: str | None = None
    reply_window_days: int = Field(30, ge=1, le=3650)
    keep_bodies: bool = False


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


class Dkim(StrictModel):
    selector: str
    domain: str | None = None
    key_file: str | None = None
    key_env: str | None = None


class Settings(StrictModel):
    organisation: Organisation
    service: ServiceSettings
    languages: list[str] = Field(min_length=1)
    default_language: str
    database: str = "sqlite:///outreach.db"
    transport: TransportSettings = TransportSettings()
    limits: Limits = Limits()
    tracking: Tracking = Tracking()
    mailboxes: list[Mailbox] = []
    unsubscribe: Unsubscribe = Unsubscribe()
    dkim: Dkim | None = None

    @field_validator("languages")
    @classmethod
    def _languages_are_codes(cls, value: list[str]) -> list[str]:
        for code in value:
            if not (2 <= len(code) <= 8 and code.replace("-", "").replace("_", "").isalpha()):
                raise ValueError(f"`{code}` is not a language code such as fi, sv or en")
        return value

    def database_url(self, root: Path) -> str:
        """The database URL with env override; relative SQLite paths resolve in the workspace."""
        url = os.environ.get("OUTREACH_DATABASE_URL") or self.database
        prefix = "sqlite:///"
        if url.startswith(prefix) and not url.startswith(prefix + "/") and url != "sqlite://":
            rel = url[len(prefix) :]
            if rel and rel != ":memory:":
                return prefix + str((root / rel).resolve())
        return url
