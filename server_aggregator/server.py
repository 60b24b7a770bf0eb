"""Running the aggregator: admin token, device key, TLS and the uvicorn server."""

from __future__ import annotations

import ipaddress
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from server_aggregator.app import create_app
from server_aggregator.config import ServerConfig
from server_aggregator.http_guard import HttpLimits, uvicorn_options
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


@dataclass(frozen=True)
class Transport:
    """How ``privtune serve`` listens: TLS files, or ``insecure`` plain HTTP (refused off loopback without it)."""

    host: str = "127.0.0.1"
    port: int = 8700
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    insecure: bool = False

    def __post_init__(self) -> None:
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("TLS needs both --ssl-certfile and --ssl-keyfile")
        for path in (self.ssl_certfile, self.ssl_keyfile):
            if path is not None and not Path(path).is_file():
                raise ValueError(f"{path}: no such file (TLS certificate or key)")
        if self.ssl_certfile is None and not self.insecure and not is_loopback(self.host):
            raise ValueError(
                f"refusing to serve plain HTTP on {self.host!r}: device secrets, updates and the admin token would "
                "cross the network in clear. Pass --ssl-certfile and --ssl-keyfile, put a TLS proxy in front and "
                "bind to 127.0.0.1, or pass --insecure if the network is private"
            )

    @property
    def tls(self) -> bool:
        return self.ssl_certfile is not None


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def serve(
    config: ServerConfig,
    transport: Transport | None = None,
    *,
    limits: HttpLimits | None = None,
    log_level: str = "info",
) -> None:
    """Start the aggregator (finishing any round a crash left half-closed) and serve until SIGINT/SIGTERM."""
    transport = transport or Transport()
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    service = Aggregator(config)
    try:
        app = create_app(service)
        options = uvicorn_options(limits or HttpLimits())
        if transport.tls:
            options |= {"ssl_certfile": str(transport.ssl_certfile), "ssl_keyfile": str(transport.ssl_keyfile)}
        uvicorn.Server(
            uvicorn.Config(
                app, host=transport.host, port=transport.port, log_level=log_level, access_log=False, **options
            )
        ).run()
    finally:
        service.close()
