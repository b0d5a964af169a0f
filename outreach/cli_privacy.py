"""CLI commands of this area; cli.py registers COMMANDS."""

from __future__ import annotations

import click

COMMANDS: list[click.Command] = []
