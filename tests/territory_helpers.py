"""Edits of the example's people/liaisons.yaml shared by the assignment and coverage tests.

Importable from any test module (``from territory_helpers import ...``).
"""

from __future__ import annotations

from pathlib import Path

LIAISONS = "people/liaisons.yaml"


def remove_liaison(ws: Path, liaison: str, following: str) -> None:
    """Take ``liaison``'s entry out of the workspace's people/liaisons.yaml (it is the one
    just before ``following``'s), as when someone leaves."""
    path = ws / LIAISONS
    text = path.read_text(encoding="utf-8")
    start, end = text.index(f"- id: {liaison}"), text.index(f"- id: {following}")
    path.write_text(text[:start] + text[end:], encoding="utf-8")
