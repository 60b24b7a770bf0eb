"""``privtune simulate``: user-level DP-FedAvg over a simulated population (vectorized clients, real server code)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from privtune.class_weights import CHOICES_HELP, parse_class_weights

console = Console(stderr=True, soft_wrap=True)

DEFAULT_NUM_PARAMS = 74_498  # MiniLM-L6 + LoRA r8 on query/value + a 2-label head (the shipped bundle)


def _ints(text: str, option: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        console.print(f"[red]{option} must be comma-separated integers, found {text!r}[/]")
        raise typer.Exit(code=2) from None


def _evaluation_line(evaluation: dict[str, Any]) -> str:
    parts = [f"round {evaluation['round']:>3}"]
    for split, metrics in evaluation.items():
        if split != "round":
            parts.append(
                f"{split}: accuracy {metrics['accuracy']:.3f}  macro-F1 {metrics['macro_f1']:.3f}  "
                f"loss {metrics['loss']:.4f}"
            )
    return "  ".join(parts)


def register(app: typer.Typer) -> None:
    @app.command()
    def simulate(
        classifier: Annotated[
            Path | None, typer.Option(help="Base classifier folder (v0: e.g. <synth run>/eps-4/classifier).")
        ] = None,
        out_dir: Annotated[Path | None, typer.Option("--out", help="Folder for report.json.")] = None,
        data: Annotated[
            Path | None, typer.Option(help="TweetEval task folder (default ../shared/data/tweeteval/offensive).")
        ] = None,
        users: Annotated[int, typer.Option(help="Population size N (the privacy unit is the user).")] = 10_000,
        clients_per_round: Annotated[float, typer.Option(help="Expected cohort q·N (Poisson).")] = 500.0,
        rounds: Annotated[int, typer.Option(help="Rounds (the accountant refuses any past the ε budget).")] = 30,
        epsilon: Annotated[
            float | None, typer.Option(help="User-level ε target; z is calibrated so every round fits it.")
        ] = 4.0,
        noise_multiplier: Annotated[
            float | None, typer.Option(help="Fix z instead of calibrating it; --epsilon stays the enforced budget.")
        ] = None,
        delta: Annotated[float, typer.Option(help="δ of the user-level guarantee.")] = 1e-6,
        update_clip: Annotated[float, typer.Option(help="S: clip norm of each uploaded update.")] = 0.05,
        server_lr: Annotated[float, typer.Option(help="Server learning rate on the noised mean.")] = 1.0,
        local_lr: Annotated[float, typer.Option(help="Device learning rate.")] = 0.1,
        local_steps: Annotated[int, typer.Option(help="Local DP-SGD steps per round.")] = 1,
        local_sampling_rate: Annotated[float, typer.Option(help="Poisson rate of a device's examples per step.")] = 0.5,
        local_clip: Annotated[float, typer.Option(help="Per-example clip norm C on the device.")] = 1.0,
        local_noise: Annotated[
            float, typer.Option(help="Example-level noise multiplier on the device (0: user-level DP only).")
        ] = 0.0,
        optimizer: Annotated[str, typer.Option(help="Device optimizer: sgd or adamw.")] = "sgd",
        class_weights: Annotated[str, typer.Option(help=CHOICES_HELP)] = "none",
        train_rank: Annotated[
            int, typer.Option(help="Server-fixed LoRA rank r' the devices train and send (the bundle's rank: all).")
        ] = 1,
        texts_per_user: Annotated[int, typer.Option(help="Texts each virtual user holds.")] = 4,
        label_alpha: Annotated[float, typer.Option(help="Dirichlet label skew of users (small = skewed).")] = 0.5,
        seed_fraction: Annotated[float, typer.Option(help="Synth's seed fraction: users get the rest.")] = 0.5,
        split_seed: Annotated[int, typer.Option(help="Synth's split seed.")] = 0,
        seed: Annotated[int, typer.Option(help="Seed of the population, cohorts and simulated noise.")] = 0,
        eval_every: Annotated[int, typer.Option(help="Evaluate the global model every k rounds.")] = 5,
        eval_splits: Annotated[
            str, typer.Option(help="Held-out splits the global model is scored on (choose settings on validation).")
        ] = "val,test",
        update_dtype: Annotated[str, typer.Option(help="float32 or float16 uploads.")] = "float32",
        backend: Annotated[
            str, typer.Option(help="inprocess (default) or ray (pip install 'privtune[ray]').")
        ] = "inprocess",
        workers: Annotated[int, typer.Option(help="Ray workers (ray backend only).")] = 2,
        plan: Annotated[bool, typer.Option("--plan", help="Only print z, q, rounds and cohorts the ε allows.")] = False,
        plan_cohorts: Annotated[str, typer.Option(help="Cohorts for --plan.")] = "100,200,500,1000,2000",
        plan_rounds: Annotated[str | None, typer.Option(help="Round counts for --plan (default: --rounds).")] = None,
        num_params: Annotated[
            int, typer.Option(help="Parameters per update, for --plan's noise norm.")
        ] = DEFAULT_NUM_PARAMS,
    ) -> None:
        """Simulate N users with Poisson cohorts; every client runs the phone's local DP-SGD, vectorized;
        the server's DpFixedClipping and accountant run as in `privtune serve`."""
        from ondevice.protocol import DpConfig
        from server_aggregator.synthetic.dp_sgd import PrivacyPlanError

        if plan:
            from server_aggregator.simulation.plan import federated_plan, format_plan

            if epsilon is None:
                console.print("[red]privtune simulate --plan needs --epsilon[/]")
                raise typer.Exit(code=2)
            counts = _ints(plan_rounds, "--plan-rounds") if plan_rounds else (rounds,)
            cohorts = tuple(float(c) for c in _ints(plan_cohorts, "--plan-cohorts"))
            try:
                rows = federated_plan(users, cohorts, counts, epsilon, delta, update_clip, num_params)
            except (ValueError, PrivacyPlanError) as exc:
                console.print(f"[red]privtune simulate --plan: {exc}[/]")
                raise typer.Exit(code=2) from exc
            typer.echo(format_plan(rows, users, epsilon, delta, update_clip))
            return

        from ondevice.data import DataError, tweeteval_task_dir
        from server_aggregator.simulation.backends import make_backend
        from server_aggregator.simulation.population import PopulationConfig
        from server_aggregator.simulation.run import SimulationConfig, prepare, simulate, write_report

        if classifier is None or out_dir is None:
            console.print("[red]privtune simulate needs --classifier and --out (or --plan)[/]")
            raise typer.Exit(code=2)
        try:
            data_dir = data if data is not None else tweeteval_task_dir("offensive")
            local = DpConfig(
                clip_norm=local_clip,
                noise_multiplier=local_noise,
                sampling_rate=local_sampling_rate,
                local_steps=local_steps,
                learning_rate=local_lr,
                optimizer=optimizer,
                train_rank=train_rank,
                class_weights=parse_class_weights(class_weights, classifier),
            )
            config = SimulationConfig(
                num_users=users,
                expected_cohort=clients_per_round,
                rounds=rounds,
                epsilon=epsilon,
                noise_multiplier=noise_multiplier,
                delta=delta,
                update_clip_norm=update_clip,
                update_dtype=update_dtype,
                server_learning_rate=server_lr,
                local=local,
                eval_every=eval_every,
                seed=seed,
            )
            population = PopulationConfig(
                num_users=users, texts_per_user=texts_per_user, label_alpha=label_alpha, seed=seed
            )
            splits = tuple(x.strip() for x in eval_splits.split(",") if x.strip())
            inputs = prepare(
                classifier,
                data_dir,
                population,
                seed_fraction=seed_fraction,
                split_seed=split_seed,
                held_out_splits=splits,
            )
            runner = make_backend(backend, inputs.spec, workers=workers, model=inputs.model)
        except (ValueError, DataError, RuntimeError, PrivacyPlanError, FileNotFoundError) as exc:
            console.print(f"[red]privtune simulate: {exc}[/]")
            raise typer.Exit(code=2) from exc
        console.print(f"population: {json.dumps(inputs.population)}")

        def progress(record: dict[str, Any]) -> None:
            line = f"round {record['round']:>3}: cohort {record['cohort']}, {record['seconds']:.1f} s"
            console.print(line)
            if "evaluation" in record:
                console.print("  " + _evaluation_line(record["evaluation"]))

        try:
            report = simulate(
                config,
                runner,
                inputs.model,
                inputs.global_params,
                inputs.held_out,
                lora_rank=inputs.lora_rank,
                pad_id=inputs.pad_id,
                num_labels=inputs.num_labels,
                on_round=progress,
            )
        finally:
            runner.close()
        report["population"] = inputs.population
        report["backend"] = backend
        path = write_report(report, out_dir)
        privacy = report["privacy"] or {}
        typer.echo(
            f"{len(report['rounds'])} rounds, z={report['noise_multiplier']:.3f}, q={report['sampling_rate']:.4g}: "
            f"user-level epsilon {privacy.get('epsilon_amplified_pld', 0):.3f} (PLD; RDP "
            f"{privacy.get('epsilon_amplified_rdp', 0):.3f}) at delta {delta:g}; "
            f"{report['client_updates']} client updates in {report['wall_seconds']:.0f} s "
            f"({report['client_updates_per_second']:.1f}/s), peak RSS {report['peak_rss_mib']:.0f} MiB; "
            f"each update sends {report['sent_params_per_update']} parameters ({report['sent_bytes_per_update']} bytes)"
        )
        for split, floor in report["floors"].items():
            typer.echo(f"  {split} majority floor: accuracy {floor['accuracy']:.3f}  macro-F1 {floor['macro_f1']:.3f}")
        for evaluation in (report["evaluations"][0], report["evaluations"][-1]):
            typer.echo("  " + _evaluation_line(evaluation))
        if report["stopped"]:
            typer.echo(f"stopped early: {report['stopped']}")
        typer.echo(f"report: {path}")
