"""Running the aggregator: admin-token handling and the uvicorn server."""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

import uvicorn

from server_aggregator.app import create_app
from server_aggregator.config import ServerConfig
from server_aggregator.service import Aggregator

ADMIN_TOKEN_ENV = "PRIVTUNE_ADMIN_TOKEN"


def load_or_create_admin_token(path: Path) -> tuple[str, bool]:
    """The token in ``PRIVTUNE_ADMIN_TOKEN``, else in ``path`` (created with mode 0600 if absent); (token, created)."""
    env = os.environ.get(ADMIN_TOKEN_ENV)
    if env:
        return env.strip(), False
    if path.exists():
        token = path.read_text().strip()
        if len(token) < 16:
            raise ValueError(f"{path}: admin token shorter than 16 characters; delete the file to make a new one")
        return token, False
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    return token, True


def serve(config: ServerConfig, *, host: str = "127.0.0.1", port: int = 8700, log_level: str = "info") -> None:
    """Start the aggregator (finishing any round a crash left half-closed) and serve until SIGINT/SIGTERM."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    service = Aggregator(config)
    try:
        app = create_app(service)
        uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False)).run()
    finally:
        service.close()
