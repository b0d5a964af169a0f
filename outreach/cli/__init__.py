"""The command line: each command parses its options, makes one library call, prints.

``main`` (app.py) is the group; every command module adds its commands here, so that
importing any part of outreach.cli gives the whole command line.
"""

from outreach.cli import (
    approve,
    db,
    dkim,
    log,
    preview,
    privacy,
    report,
    responses,
    send,
    serve,
    status,
    territory,
    track,
    users,
    workspace,
)
from outreach.cli.app import main

for _command in (
    workspace.init,
    workspace.check,
    preview.preview,
    send.send,
    approve.approve,
    status.status,
    db.db,
    track.track,
    log.log_cmd,
    report.report,
    responses.responses,
    territory.assign_cmd,
    territory.coverage_cmd,
    privacy.forget,
    privacy.export,
    dkim.dkim,
    serve.serve,
    users.user,
):
    main.add_command(_command)

__all__ = ["main"]
