"""``privtune fleet``: emulated phones against a running aggregator (see ``privtune.fleet.runner``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from privtune.fleet_options import Availability, Dropout, NetworkFault, Straggler, fleet_conditions, split_names

console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)


def register(app: typer.Typer) -> None:
    @app.command()
    def fleet(
        url: Annotated[str, typer.Option(help="The aggregator's base URL.")],
        bundle: Annotated[Path, typer.Option(help="The bundle the aggregator serves (phones verify and run it).")],
        state: Annotated[Path, typer.Option(help="Folder for device identities, ledgers, checkpoints and the log.")],
        admin_token_file: Annotated[
            Path | None, typer.Option(help="File holding the admin token (or set PRIVTUNE_ADMIN_TOKEN).")
        ] = None,
        data: Annotated[str | None, typer.Option(help="TweetEval folder whose train split is sharded.")] = None,
        devices: Annotated[int, typer.Option(help="Emulated devices (all enrolled).")] = 50,
        rounds: Annotated[int, typer.Option(help="Rounds to run.")] = 10,
        workers: Annotated[int, typer.Option(help="Worker processes (one device-round at a time each).")] = 2,
        runtimes: Annotated[str, typer.Option(help="Comma-separated runtimes, assigned round-robin.")] = "ort",
        availability: Availability = 0.6,
        dropout: Dropout = 0.1,
        straggler: Straggler = 0.1,
        network_fault: NetworkFault = 0.1,
        adversaries: Annotated[
            str, typer.Option(help="Comma-separated attack kinds, one device each (nan, wrong_shape, ...).")
        ] = "",
        seed_fraction: Annotated[
            float, typer.Option(help="Share of the train split kept for synth (not sharded).")
        ] = 0.5,
        seed: Annotated[int, typer.Option(help="Seed of the conditions and the shards.")] = 0,
        memory_cap_mb: Annotated[int | None, typer.Option(help="Address-space cap per worker process.")] = None,
    ) -> None:
        """Run N emulated phones (non-IID shards, dropouts, stragglers, flaky network, attackers) for R rounds."""
        from ondevice.data import DataError, tweeteval_task_dir
        from privtune.fleet.runner import FleetConfig, run_fleet
        from privtune.server_cli import read_admin_token

        try:
            config = FleetConfig(
                server_url=url,
                admin_token=read_admin_token(admin_token_file),
                bundle_dir=bundle,
                data=data or str(tweeteval_task_dir("offensive")),
                state_root=state,
                devices=devices,
                rounds=rounds,
                workers=workers,
                runtimes=split_names(runtimes),
                conditions=fleet_conditions(
                    availability=availability,
                    dropout=dropout,
                    straggler=straggler,
                    network_fault=network_fault,
                    adversaries=adversaries,
                    seed=seed,
                ),
                seed_fraction=seed_fraction,
                split_seed=0,
                shard_seed=seed,
                memory_cap_mb=memory_cap_mb,
            )
            summaries = run_fleet(config, progress=lambda message: console.print(message, markup=False))
        except (ValueError, DataError, RuntimeError) as exc:
            console.print(f"[red]privtune fleet: {exc}[/]")
            raise typer.Exit(code=2) from exc
        table = Table(title=f"{devices} emulated devices, {rounds} round(s)")
        for column in ("round", "outcomes", "merged", "version"):
            table.add_column(column)
        for s in summaries:
            outcomes = ", ".join(f"{k} {v}" for k, v in sorted(s["outcomes"].items()))
            table.add_row(str(s["round_id"]), outcomes, str(s["merged_updates"]), str(s["version"]))
        out.print(table)
        out.print(f"log: {state / 'fleet-log.jsonl'}")
