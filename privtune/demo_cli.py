"""``privtune demo``: synth → export → serve → fleet → evaluate → report (see ``privtune.demo``)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from privtune.fleet_options import Availability, Dropout, NetworkFault, Straggler, fleet_conditions, split_names

console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)


def _fmt(value: Any, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def print_summary(report: dict[str, Any], report_dir: Path) -> None:
    """The short terminal summary of a demo report."""
    table = Table(title="privtune demo: real test split, through the phone's ORT inference program")
    for column in ("model", "accuracy", "macro-F1", "user-level ε (PLD)"):
        table.add_column(column)
    for label, row in (("before the rounds (private base)", report["before"]), ("after", report["after"])):
        if row is not None:
            table.add_row(
                f"{label}: v{row['version']}",
                _fmt(row["accuracy"]),
                _fmt(row["macro_f1"]),
                _fmt(row["user_epsilon"], 2),
            )
    out.print(table)
    if report.get("comparison"):
        compare = Table(title="beside the floor and the baselines (real test split)")
        for column in ("model", "accuracy", "macro-F1", "ε", "privacy unit"):
            compare.add_column(column)
        for row in report["comparison"]:
            compare.add_row(
                row["model"], _fmt(row["accuracy"]), _fmt(row["macro_f1"]), _fmt(row["epsilon"], 2), row["privacy_unit"]
            )
        out.print(compare)
    privacy = report["user_level_privacy"]
    server = privacy["server"]
    out.print(
        f"user-level ε spent: {_fmt(server['epsilon_amplified_pld'], 2)} (PLD) / "
        f"{_fmt(server['epsilon_amplified_rdp'], 2)} (RDP) at δ={server['delta']:g}, "
        f"with sampling q={report['settings']['sampling_rate']:.3g}; "
        f"without amplification {_fmt(server['epsilon_unamplified_pld'], 2)}; "
        f"independent recomputation from the ledger: {_fmt(privacy['recomputed_from_ledger']['pld'], 2)}"
    )
    devices = report["device_level_privacy"]
    out.print(
        f"each device's example-level ε (δ={devices['delta']:g}): median {_fmt(devices['median'], 2)}, "
        f"max {_fmt(devices['max'], 2)} over {devices['devices_that_trained']} devices that trained"
    )
    if report["synthetic_stage"] is not None:
        out.print(f"synthetic stage: ε={_fmt(report['synthetic_stage']['epsilon'], 2)} (example-level, seed set)")
    out.print(
        f"accepted updates {report['accepted_total']}, rejected {report['rejected_by_reason'] or 'none'}; "
        f"uploaded {report['upload_bytes']['per_device_mean'] / 1e6:.2f} MB per device on average"
    )
    simulated = report.get("simulated_population")
    if simulated:
        sim = Table(
            title=f"simulated population: {simulated['users']} users, ~{simulated['expected_cohort']:g} per round "
            f"(PyTorch, real test split)"
        )
        for column in ("model", "accuracy", "macro-F1", "user-level ε (PLD)"):
            sim.add_column(column)
        floor = simulated["floor"]
        sim.add_row("always the majority label", _fmt(floor["accuracy"]), _fmt(floor["macro_f1"]), "0")
        sim.add_row("v0 (private base)", _fmt(simulated["v0"]["accuracy"]), _fmt(simulated["v0"]["macro_f1"]), "0")
        weights = simulated.get("local_dp", {}).get("class_weights")
        weighted = f", class weights {[round(w, 3) for w in weights]}" if weights else ""
        sim.add_row(
            f"after {simulated['rounds']} rounds (z={simulated['noise_multiplier']:.3f}{weighted})",
            _fmt(simulated["final"]["accuracy"]),
            _fmt(simulated["final"]["macro_f1"]),
            _fmt(simulated["epsilon_pld"], 2),
        )
        out.print(sim)
        out.print(
            f"simulated ε at δ={simulated['delta']:g}: PLD {_fmt(simulated['epsilon_pld'], 2)}, RDP "
            f"{_fmt(simulated['epsilon_rdp'], 2)}, dp_accounting directly "
            f"{_fmt(simulated['epsilon_recomputed_dp_accounting'], 2)}; {simulated['sent_params_per_update']} "
            f"parameters ({simulated['sent_bytes_per_update']} bytes) per update; "
            f"{simulated['client_updates']} client updates in {simulated['simulation_seconds']:.0f} s"
        )
    out.print(f"wall seconds per stage: {report['wall_seconds']}")
    out.print(f"report: {report_dir / 'report.json'}, plots: {report_dir / 'report-rounds.png'}")


def register(app: typer.Typer) -> None:
    @app.command()
    def demo(
        out_dir: Annotated[
            Path, typer.Option("--out", help="Folder for every stage's output (re-runs resume).")
        ] = Path("build/demo"),
        data: Annotated[str | None, typer.Option(help="TweetEval task folder (default: offensive).")] = None,
        population: Annotated[
            int, typer.Option(help="Devices enrolled, each with its own shard; only sampled ones work.")
        ] = 50,
        clients_per_round: Annotated[int, typer.Option(help="Expected sampled devices per round (q = this/N).")] = 20,
        rounds: Annotated[int, typer.Option(help="Federated rounds.")] = 10,
        workers: Annotated[int, typer.Option(help="Worker processes of the fleet.")] = 2,
        runtimes: Annotated[str, typer.Option(help="Comma-separated: ort, executorch (round-robin).")] = "ort",
        synth_epsilon: Annotated[float, typer.Option(help="ε of the synthetic-data stage.")] = 4.0,
        noise_multiplier: Annotated[float, typer.Option(help="Central DP-FedAvg z.")] = 0.5,
        epsilon_budget: Annotated[float, typer.Option(help="The server's hard user-level ε cap.")] = 50.0,
        local_noise_multiplier: Annotated[float, typer.Option(help="Devices' DP-SGD σ.")] = 1.0,
        local_learning_rate: Annotated[float, typer.Option(help="Devices' SGD step size.")] = 0.5,
        local_steps: Annotated[int, typer.Option(help="Local DP-SGD steps per round.")] = 4,
        availability: Availability = 0.6,
        dropout: Dropout = 0.1,
        straggler: Straggler = 0.1,
        network_fault: NetworkFault = 0.1,
        adversaries: Annotated[str, typer.Option(help="Comma-separated attack kinds, one device each.")] = (
            "nan,over_norm,replay"
        ),
        test_examples: Annotated[int | None, typer.Option(help="Evaluate on the first N test tweets.")] = None,
        classifier: Annotated[
            Path | None, typer.Option(help="Skip synth: start from this classifier (with --bundle).")
        ] = None,
        bundle: Annotated[Path | None, typer.Option(help="Skip export: this bundle of --classifier.")] = None,
        seed: Annotated[int, typer.Option(help="Seed of shards and conditions (noise is always OS CSPRNG).")] = 0,
        simulated_users: Annotated[
            int, typer.Option(help="Users of the simulated-population section (0: skip it).")
        ] = 10_000,
        simulated_cohort: Annotated[float, typer.Option(help="Expected simulated clients per round.")] = 500.0,
        simulated_rounds: Annotated[int, typer.Option(help="Simulated rounds.")] = 30,
        simulated_epsilon: Annotated[float, typer.Option(help="User-level ε of the simulated deployment.")] = 4.0,
        simulated_class_weights: Annotated[
            str, typer.Option(help="Simulated devices' class weights: card (v0's DP class weights), none or W0,W1.")
        ] = "card",
    ) -> None:
        """The whole chain on this machine: DP synthetic data → export → aggregator → emulated phones → report."""
        import dataclasses

        from ondevice.bundle import BundleError
        from ondevice.data import DataError, tweeteval_task_dir
        from privtune.demo import DEMO_LOCAL_DP, DemoConfig, run_demo
        from privtune.demo_simulation import DemoSimulation

        start = time.monotonic()

        def say(message: str) -> None:
            console.print(f"[dim]{time.monotonic() - start:7.1f}s[/] {message}", highlight=False)

        try:
            config = DemoConfig(
                out_dir=out_dir.absolute(),
                data=data or str(tweeteval_task_dir("offensive")),
                population=population,
                clients_per_round=clients_per_round,
                rounds=rounds,
                workers=workers,
                runtimes=split_names(runtimes),
                synth_epsilon=synth_epsilon,
                noise_multiplier=noise_multiplier,
                user_epsilon_budget=epsilon_budget,
                local_dp=dataclasses.replace(
                    DEMO_LOCAL_DP,
                    noise_multiplier=local_noise_multiplier,
                    learning_rate=local_learning_rate,
                    local_steps=local_steps,
                ),
                conditions=fleet_conditions(
                    availability=availability,
                    dropout=dropout,
                    straggler=straggler,
                    network_fault=network_fault,
                    adversaries=adversaries,
                    seed=seed,
                ),
                test_examples=test_examples,
                classifier=classifier.absolute() if classifier else None,
                bundle=bundle.absolute() if bundle else None,
                seed=seed,
                simulation=None
                if simulated_users == 0
                else DemoSimulation(
                    users=simulated_users,
                    expected_cohort=simulated_cohort,
                    rounds=simulated_rounds,
                    epsilon=simulated_epsilon,
                    class_weights=simulated_class_weights,
                ),
            )
            report = run_demo(config, progress=say)
        except (ValueError, DataError, BundleError, RuntimeError, FileNotFoundError) as exc:
            console.print(f"[red]privtune demo: {exc}[/]")
            raise typer.Exit(code=2) from exc
        print_summary(report, config.out_dir)
