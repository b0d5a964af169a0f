"""``outreach user``: the accounts of the web desk (``outreach serve``)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from outreach.cli.app import Context, pass_ctx
from outreach.cli.output import out_console
from outreach.errors import ConfigError

if TYPE_CHECKING:
    from outreach.store import Store
    from outreach.workspace.loader import Workspace


@click.group("user")
def user() -> None:
    """Accounts of the web desk: each liaison, and the administrator."""


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    value: str = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    return value


def _store(obj: Context) -> tuple[Workspace, Store]:

    ws = obj.load(only_campaigns=[])
    return ws, obj.store(ws)


@user.command("add")
@click.argument("user_id")
@click.option("--admin", is_flag=True, help="The technical person: sees every liaison.")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@pass_ctx
def user_add(obj: Context, user_id: str, admin: bool, password_stdin: bool) -> None:
    """Make an account: a liaison's (their id in people/liaisons.yaml) or, with --admin,
    the administrator's."""
    from outreach.serve.accounts import add_user
    from outreach.store.schema import ADMIN_ROLE, LIAISON_ROLE

    ws, store = _store(obj)
    try:
        if not admin and user_id not in ws.directory.liaisons:
            known = ", ".join(sorted(ws.directory.liaisons)) or "none"
            raise ConfigError(
                f"`{user_id}` is not a liaison in people/liaisons.yaml",
                hint=f"known liaisons: {known}; --admin makes an administrator's account",
            )
        made = add_user(
            store, user_id, ADMIN_ROLE if admin else LIAISON_ROLE, _password(password_stdin)
        )
    finally:
        store.close()
    out_console.print(f"added {made.role} {made.id}")


@user.command("passwd")
@click.argument("user_id")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@pass_ctx
def user_passwd(obj: Context, user_id: str, password_stdin: bool) -> None:
    """Set a new password (the user is signed out everywhere)."""
    from outreach.serve.accounts import set_password

    _ws, store = _store(obj)
    try:
        set_password(store, user_id, _password(password_stdin))
    finally:
        store.close()
    out_console.print(f"new password for {user_id}; signed out everywhere")


@user.command("remove")
@click.argument("user_id")
@pass_ctx
def user_remove(obj: Context, user_id: str) -> None:
    """Remove an account and end its sessions."""
    from outreach.serve.accounts import remove_user

    _ws, store = _store(obj)
    try:
        remove_user(store, user_id)
    finally:
        store.close()
    out_console.print(f"removed {user_id}")


@user.command("list")
@pass_ctx
def user_list(obj: Context) -> None:
    """The accounts and their roles."""
    from outreach.serve.accounts import list_users

    _ws, store = _store(obj)
    try:
        for u in list_users(store):
            out_console.print(f"{u.id}\t{u.role}")
    finally:
        store.close()
