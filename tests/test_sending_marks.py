"""Group commit of `sending` marks: connections that reach DATA within a few turns of the
event loop share one commit, and each message's mark is committed before its future
resolves (before its DATA)."""

from __future__ import annotations

import asyncio
from typing import Any

from outreach.deliver.sending_marks import GATHER_TURNS, SendingMarks


class _Rows:
    """The one method SendingMarks calls on the ledger (SQLite: in the loop), recording
    each commit's rows."""

    class store:  # noqa: N801 - the attribute SendingMarks reads
        dialect = "sqlite"

    def __init__(self) -> None:
        self.commits: list[list[int]] = []

    def mark_sending_many(self, rows: list[tuple[int, str, bool]], owner: str) -> list[Any]:
        self.commits.append([r for r, _, _ in rows])
        return [True] * len(rows)


def test_marks_arriving_within_the_gathering_turns_share_one_commit() -> None:
    rows = _Rows()
    marks = SendingMarks(rows, "me")  # type: ignore[arg-type]
    committed: list[tuple[int, int]] = []

    async def connection(row_id: int, turns_late: int) -> None:
        for _ in range(turns_late):
            await asyncio.sleep(0)  # its envelope's reply read a turn later
        assert await marks.mark(row_id, f"<{row_id}@x>")
        committed.append((row_id, len(rows.commits)))  # its commit had happened

    async def main() -> None:
        await asyncio.gather(*(connection(i, i) for i in range(GATHER_TURNS + 1)))
        await connection(99, 0)  # alone later: a commit of its own

    asyncio.run(main())

    assert rows.commits == [list(range(GATHER_TURNS + 1)), [99]]
    assert sorted(committed) == [(i, 1) for i in range(GATHER_TURNS + 1)] + [(99, 2)]
