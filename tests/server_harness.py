"""Helpers to run the real aggregator (uvicorn on loopback) in tests and to act as devices against it."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import uvicorn

from ondevice.auth import signed_headers
from ondevice.protocol import AdapterUpdate, RoundConfig, encode_update, sha256_hex, update_mac
from ondevice.upload import CONTENT_TYPE, IDEMPOTENCY_HEADER, UPDATE_MAC_HEADER
from privtune.fleet.adversary import honest_update
from server_aggregator.app import create_app
from server_aggregator.config import ServerConfig
from server_aggregator.http_guard import HttpLimits, uvicorn_options
from server_aggregator.process import spawn_until_ready, stop_process
from server_aggregator.service import Aggregator

ADMIN_TOKEN = "test-admin-token-" + "0" * 16
DEVICE_KEY = bytes(range(32))
REPO = Path(__file__).resolve().parent.parent


def make_config(tmp: Path, bundle_dir: Path, classifier_dir: Path, **overrides: Any) -> ServerConfig:
    config = ServerConfig(
        db_url=f"sqlite:///{tmp / 'state.db'}",
        adapter_dir=classifier_dir,
        bundle_dir=bundle_dir,
        publish_dir=tmp / "published",
        admin_token=ADMIN_TOKEN,
        device_key=DEVICE_KEY,
        close_poll_s=0.05,
    )
    return replace(config, **overrides)


class LiveServer:
    """``Aggregator`` + FastAPI under a real uvicorn server in a thread, on an ephemeral loopback port."""

    def __init__(
        self,
        service: Aggregator,
        *,
        run_closer: bool = False,
        limits: HttpLimits | None = None,
        tls: tuple[Path, Path] | None = None,
    ) -> None:
        self.service = service
        options = uvicorn_options(limits or HttpLimits())  # the connection limits `privtune serve` runs with
        if tls is not None:
            options |= {"ssl_certfile": str(tls[0]), "ssl_keyfile": str(tls[1])}
        self.scheme = "https" if tls is not None else "http"
        config = uvicorn.Config(
            create_app(service, run_closer=run_closer),
            host="127.0.0.1",
            port=0,
            log_level="warning",
            access_log=False,
            **options,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def start(self) -> LiveServer:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        return self

    @property
    def port(self) -> int:
        return int(self._server.servers[0].sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def admin(client: httpx.Client, method: str, path: str, payload: Any = None) -> httpx.Response:
    return client.request(method, path, json=payload, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})


def enroll(client: httpx.Client, device_id: str | None = None) -> tuple[str, bytes]:
    response = admin(client, "POST", "/v1/admin/devices", {"device_id": device_id} if device_id else {})
    response.raise_for_status()
    data = response.json()
    return data["device_id"], bytes.fromhex(data["secret"])


def make_update(
    config: RoundConfig, device_id: str, global_params: Mapping[str, np.ndarray], seed: int, scale: float = 0.01
) -> AdapterUpdate:
    return honest_update(config, device_id, global_params, seed, scale=scale)


def upload_headers(
    device_id: str, secret: bytes, round_id: int, body: bytes, *, now: float | None = None, nonce: str | None = None
) -> dict[str, str]:
    path = f"/v1/rounds/{round_id}/updates"
    return {
        "Content-Type": CONTENT_TYPE,
        UPDATE_MAC_HEADER: update_mac(body, secret),
        IDEMPOTENCY_HEADER: sha256_hex(body),
        **signed_headers(device_id, secret, "POST", path, body, now=now, nonce=nonce),
    }


def post_update(
    client: httpx.Client, device_id: str, secret: bytes, round_id: int, body: bytes, **kwargs: Any
) -> httpx.Response:
    return client.post(
        f"/v1/rounds/{round_id}/updates",
        content=body,
        headers=upload_headers(device_id, secret, round_id, body, **kwargs),
    )


def encoded(update: AdapterUpdate) -> bytes:
    return encode_update(update)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def server_process(config: ServerConfig, port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``privtune serve`` in its own process (for kill -9 tests); waits until /v1/health answers."""
    args = [
        sys.executable, "-c", "from privtune.cli import main; main()", "serve",
        "--db", config.db_url, "--adapter", str(config.adapter_dir), "--bundle", str(config.bundle_dir),
        "--publish-dir", str(config.publish_dir), "--epsilon-budget", str(config.epsilon_budget),
        "--delta", str(config.delta), "--clients-per-round", str(config.clients_per_round),
        "--noise-multiplier", str(config.noise_multiplier), "--update-clip-norm", str(config.update_clip_norm),
        "--round-duration", str(config.round_duration_s), "--port", str(port),
    ]  # fmt: skip
    env = {**os.environ, "PRIVTUNE_ADMIN_TOKEN": config.admin_token}
    proc = spawn_until_ready(args, log=log, url=f"http://127.0.0.1:{port}", env=env, cwd=REPO)
    try:
        yield proc
    finally:
        stop_process(proc, kill=True)


def new_nonce() -> str:
    return secrets.token_hex(16)
