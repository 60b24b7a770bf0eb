"""``privtune serve`` and the operator commands that talk to a running aggregator."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from privtune.class_weights import CHOICES_HELP, parse_class_weights

if TYPE_CHECKING:
    from ondevice.protocol import DpConfig

console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)

URL_OPTION = typer.Option("--url", help="The aggregator's base URL.")
TOKEN_OPTION = typer.Option("--admin-token-file", help="File holding the admin token (or set PRIVTUNE_ADMIN_TOKEN).")


def _default_token_file(db_url: str, name: str = "admin-token") -> Path:
    """``name`` beside a SQLite database (else in the working folder)."""
    if db_url.startswith("sqlite:///"):
        return Path(db_url.removeprefix("sqlite:///")).resolve().parent / name
    return Path(name)


def read_admin_token(path: Path | None) -> str:
    from server_aggregator.server import ADMIN_TOKEN_ENV

    env = os.environ.get(ADMIN_TOKEN_ENV)
    if env:
        return env.strip()
    if path is None or not path.is_file():
        console.print(
            f"[red]no admin token: pass --admin-token-file (written by `privtune serve`) or set {ADMIN_TOKEN_ENV}[/]"
        )
        raise typer.Exit(code=2)
    return path.read_text().strip()


def _admin_request(method: str, url: str, path: str, token_file: Path | None, payload: Any = None) -> Any:
    import httpx

    token = read_admin_token(token_file)
    try:
        response = httpx.request(
            method, url.rstrip("/") + path, json=payload, headers={"Authorization": f"Bearer {token}"}, timeout=60
        )
    except httpx.HTTPError as exc:
        console.print(f"[red]cannot reach the aggregator at {url}: {exc}[/]")
        raise typer.Exit(code=1) from exc
    try:
        body = response.json()
    except ValueError:
        body = {"error": response.text[:200]}
    if response.status_code >= 400:
        console.print(f"[red]{response.status_code}: {body.get('error') or body.get('message') or body}[/]")
        raise typer.Exit(code=1)
    return body


def local_dp_config(**overrides: float | int | tuple[float, ...] | None) -> DpConfig:
    """The devices' DP-SGD settings: the server defaults with every given (non-None) value replaced."""
    from server_aggregator.config import DEFAULT_LOCAL_DP

    given: dict[str, Any] = {k: v for k, v in overrides.items() if v is not None}
    return dataclasses.replace(DEFAULT_LOCAL_DP, **given)


def register(app: typer.Typer) -> None:
    """Add the server commands to the ``privtune`` app."""

    @app.command()
    def serve(
        db: Annotated[
            str, typer.Option("--db", help="SQLAlchemy URL: sqlite:///state.db (default) or postgresql+psycopg://…")
        ] = "sqlite:///state.db",
        adapter: Annotated[
            Path, typer.Option("--adapter", help="The base classifier folder the bundle was exported from.")
        ] = Path("classifier"),
        bundle: Annotated[
            Path, typer.Option("--bundle", help="The bundle folder devices run (privtune export).")
        ] = Path("bundle"),
        publish_dir: Annotated[
            Path, typer.Option("--publish-dir", help="Where adapter versions are published.")
        ] = Path("published"),
        epsilon_budget: Annotated[
            float, typer.Option("--epsilon-budget", help="User-level ε budget at --delta.")
        ] = 8.0,
        delta: Annotated[float, typer.Option("--delta", help="Target δ of the user-level guarantee.")] = 1e-6,
        clients_per_round: Annotated[
            int, typer.Option("--clients-per-round", help="Expected devices per round: q = this / enrolled.")
        ] = 10,
        noise_multiplier: Annotated[
            float, typer.Option("--noise-multiplier", help="z: noise std on the sum is z·S.")
        ] = 1.0,
        update_clip_norm: Annotated[
            float, typer.Option("--update-clip-norm", help="S: every update's L2 norm bound.")
        ] = 1.0,
        update_dtype: Annotated[str, typer.Option("--update-dtype", help="float32 or float16 uploads.")] = "float32",
        budget_mode: Annotated[
            str, typer.Option("--budget-mode", help="Enforce the budget on the 'amplified' or 'unamplified' ε.")
        ] = "amplified",
        round_duration: Annotated[float, typer.Option("--round-duration", help="Seconds a round stays open.")] = 600.0,
        target_updates: Annotated[
            int | None,
            typer.Option(
                "--target-updates", help="Close a round early at this many updates (only without noise, z = 0)."
            ),
        ] = None,
        update_retention: Annotated[
            float,
            typer.Option(
                "--update-retention", help="Seconds an update's body is kept after its round is published (0: drop)."
            ),
        ] = 0.0,
        adaptive_quantile: Annotated[
            float | None,
            typer.Option("--adaptive-quantile", help="Adaptive clipping: S tracks this quantile of update norms."),
        ] = None,
        adaptive_clip_lr: Annotated[float, typer.Option("--adaptive-clip-lr", help="Adaptive clipping step η.")] = 0.2,
        adaptive_bit_noise: Annotated[
            float | None,
            typer.Option("--adaptive-bit-noise", help="σ_b on the unclipped count (default clients-per-round / 20)."),
        ] = None,
        server_learning_rate: Annotated[
            float, typer.Option("--server-learning-rate", help="Step size applied to the noised mean update.")
        ] = 1.0,
        local_clip_norm: Annotated[
            float | None, typer.Option("--local-clip-norm", help="Devices' per-example clip C (default 1.0).")
        ] = None,
        local_noise_multiplier: Annotated[
            float | None, typer.Option("--local-noise-multiplier", help="Devices' DP-SGD σ (default 1.0).")
        ] = None,
        local_sampling_rate: Annotated[
            float | None, typer.Option("--local-sampling-rate", help="Devices' Poisson rate per step (default 0.1).")
        ] = None,
        local_steps: Annotated[
            int | None, typer.Option("--local-steps", help="Local steps per round (default 10).")
        ] = None,
        local_learning_rate: Annotated[
            float | None, typer.Option("--local-learning-rate", help="Devices' SGD step size (default 0.05).")
        ] = None,
        local_epsilon_budget: Annotated[
            float | None,
            typer.Option("--local-epsilon-budget", help="Each device's own example-level ε cap (default 8)."),
        ] = None,
        class_weights: Annotated[
            str, typer.Option("--class-weights", help=CHOICES_HELP + " Python devices only; the Android demo refuses.")
        ] = "none",
        host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
        port: Annotated[int, typer.Option("--port")] = 8700,
        ssl_certfile: Annotated[
            Path | None, typer.Option("--ssl-certfile", help="TLS certificate (PEM); with --ssl-keyfile.")
        ] = None,
        ssl_keyfile: Annotated[Path | None, typer.Option("--ssl-keyfile", help="TLS private key (PEM).")] = None,
        insecure: Annotated[
            bool, typer.Option("--insecure", help="Allow plain HTTP on a non-loopback --host (private networks only).")
        ] = False,
        admin_token_file: Annotated[Path | None, TOKEN_OPTION] = None,
        device_key_file: Annotated[
            Path | None,
            typer.Option(
                "--device-key-file",
                help="Key sealing device secrets at rest (made 0600 beside the database; or PRIVTUNE_DEVICE_KEY).",
            ),
        ] = None,
    ) -> None:
        """Run the aggregator (SQLite WAL by default); finishes any round a crash left half-closed.

        Plain HTTP is served on loopback only; elsewhere pass --ssl-certfile/--ssl-keyfile (or --insecure)."""
        from ondevice.bundle import BundleError
        from server_aggregator.config import ServerConfig
        from server_aggregator.db import DatabaseError
        from server_aggregator.publish import PublishError
        from server_aggregator.sealing import load_or_create_key
        from server_aggregator.server import Transport, load_or_create_admin_token
        from server_aggregator.server import serve as run
        from server_aggregator.service import ServiceError

        token_path = admin_token_file or _default_token_file(db)
        try:
            adaptive = None
            if adaptive_quantile is not None:
                from server_aggregator.aggregation import AdaptiveClipping

                adaptive = AdaptiveClipping(
                    target_quantile=adaptive_quantile,
                    clip_learning_rate=adaptive_clip_lr,
                    bit_noise_std=adaptive_bit_noise if adaptive_bit_noise is not None else clients_per_round / 20,
                    initial_clip_norm=update_clip_norm,
                )
            local_dp = local_dp_config(
                clip_norm=local_clip_norm,
                noise_multiplier=local_noise_multiplier,
                sampling_rate=local_sampling_rate,
                local_steps=local_steps,
                learning_rate=local_learning_rate,
                local_epsilon_budget=local_epsilon_budget,
                class_weights=parse_class_weights(class_weights, adapter),
            )
            transport = Transport(
                host=host, port=port, ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile, insecure=insecure
            )
            token, created = load_or_create_admin_token(token_path)
            key_path = device_key_file or _default_token_file(db, "device-key")
            device_key, key_created = load_or_create_key(key_path)
            config = ServerConfig(
                db_url=db,
                adapter_dir=adapter,
                bundle_dir=bundle,
                publish_dir=publish_dir,
                admin_token=token,
                device_key=device_key,
                update_retention_s=update_retention,
                epsilon_budget=epsilon_budget,
                delta=delta,
                clients_per_round=clients_per_round,
                noise_multiplier=noise_multiplier,
                update_clip_norm=update_clip_norm,
                update_dtype=update_dtype,
                budget_mode=budget_mode,
                round_duration_s=round_duration,
                target_updates=target_updates,
                adaptive_clipping=adaptive,
                server_learning_rate=server_learning_rate,
                local_dp=local_dp,
            )
            if created:
                console.print(f"admin token written to {token_path} (mode 0600)")
            if key_created:
                console.print(f"device key written to {key_path} (mode 0600); back it up with the database")
            run(config, transport)
        except (ValueError, BundleError, PublishError, ServiceError, DatabaseError, FileNotFoundError) as exc:
            console.print(f"[red]privtune serve: {exc}[/]")
            raise typer.Exit(code=2) from exc

    @app.command()
    def status(
        url: Annotated[str, URL_OPTION] = "http://127.0.0.1:8700",
        admin_token_file: Annotated[Path | None, TOKEN_OPTION] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print the raw JSON.")] = False,
    ) -> None:
        """Rounds, ε spent and left, accepted/rejected counts by reason, published versions."""
        body = _admin_request("GET", url, "/v1/status", admin_token_file)
        if as_json:
            out.print_json(json.dumps(body))
            return
        privacy = body["privacy"]
        out.print(f"devices: {body['devices']['active']} active, {body['devices']['revoked']} revoked")
        out.print(
            f"rounds: {len(body['rounds'])}; accepted updates {body['accepted_total']}, "
            f"rejected {body['rejected_total']}"
        )
        for reason, count in body["rejected_by_reason"].items():
            out.print(f"  rejected {reason}: {count}")
        out.print(f"published versions: {[v['version'] for v in body['published_versions']]}")
        out.print(f"privacy: {json.dumps(privacy, indent=2)}")

    @app.command()
    def enroll(
        device_id: Annotated[str | None, typer.Argument(help="Device id (random if omitted).")] = None,
        url: Annotated[str, URL_OPTION] = "http://127.0.0.1:8700",
        admin_token_file: Annotated[Path | None, TOKEN_OPTION] = None,
    ) -> None:
        """Enroll a device; prints its id and secret (shown once) as JSON."""
        payload = {"device_id": device_id} if device_id else {}
        out.print_json(json.dumps(_admin_request("POST", url, "/v1/admin/devices", admin_token_file, payload)))

    @app.command("open-round")
    def open_round(
        url: Annotated[str, URL_OPTION] = "http://127.0.0.1:8700",
        admin_token_file: Annotated[Path | None, TOKEN_OPTION] = None,
        duration: Annotated[float | None, typer.Option("--duration", help="Seconds the round stays open.")] = None,
        target_updates: Annotated[int | None, typer.Option("--target-updates")] = None,
    ) -> None:
        """Open the next round (refused, with the numbers, if it would exceed the ε budget)."""
        payload = {"duration_s": duration, "target_updates": target_updates}
        out.print_json(json.dumps(_admin_request("POST", url, "/v1/admin/rounds", admin_token_file, payload)))

    @app.command("close-round")
    def close_round(
        round_id: Annotated[int, typer.Argument(help="The round to close, aggregate and publish.")],
        url: Annotated[str, URL_OPTION] = "http://127.0.0.1:8700",
        admin_token_file: Annotated[Path | None, TOKEN_OPTION] = None,
    ) -> None:
        """Close, aggregate and publish a round now (idempotent)."""
        out.print_json(json.dumps(_admin_request("POST", url, f"/v1/admin/rounds/{round_id}/close", admin_token_file)))
