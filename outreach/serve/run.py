"""Running the application under uvicorn.

No access log: the URLs of the unsubscribe endpoint carry tokens, which must not sit in
log files; the application logs what happened (opt-outs per campaign, sign-ins) itself.
Forwarded headers are read by the application, only from ``serve.trusted_proxies``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from outreach.serve.app import create_app

WORKSPACE_ENV = "OUTREACH_WORKSPACE"


def app_from_environment() -> object:
    """The application factory uvicorn's worker processes call (``--workers N``)."""
    return create_app(os.environ.get(WORKSPACE_ENV))


def serve(root: Path, host: str, port: int, workers: int = 1, log_level: str = "info") -> None:
    import uvicorn

    logger = logging.getLogger("outreach.serve")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(log_level.upper())
    common = {
        "host": host,
        "port": port,
        "proxy_headers": False,
        "server_header": False,
        "access_log": False,
        "log_level": log_level,
        "timeout_graceful_shutdown": 10,
    }
    if workers == 1:
        uvicorn.run(create_app(root), **common)  # type: ignore[arg-type]
        return
    os.environ[WORKSPACE_ENV] = str(root)
    uvicorn.run(
        "outreach.serve.run:app_from_environment",
        factory=True,
        workers=workers,
        **common,  # type: ignore[arg-type]
    )
