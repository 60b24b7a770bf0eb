"""``privtune synth``: DP synthetic training data → the base safety classifier, with its ε on a card."""

from __future__ import annotations

import math
import re
import time
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)


def _floats(text: str, option: str) -> tuple[float, ...]:
    try:
        values = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        console.print(f"[red]{option} must be comma-separated numbers, found {text!r}[/]")
        raise typer.Exit(code=2) from None
    return values


def _default_data() -> str:
    from ondevice.data import DataError, tweeteval_task_dir

    try:
        return str(tweeteval_task_dir("offensive"))
    except DataError as exc:
        console.print(f"[red]privtune synth: {exc}[/]")
        raise typer.Exit(code=2) from exc


def register(app: typer.Typer) -> None:
    @app.command()
    def synth(
        out_dir: Annotated[Path, typer.Option("--out", help="Run folder (stages are cached here; re-run to resume).")],
        data: Annotated[
            str | None,
            typer.Option(
                help="Private labelled data: a TweetEval folder (default: ../shared/data/tweeteval/offensive)."
            ),
        ] = None,
        preset: Annotated[
            str, typer.Option(help="quick (~10 min, weak numbers) or full (hours, real results).")
        ] = "quick",
        epsilon: Annotated[float, typer.Option(help="Target ε of the generator's DP-SGD.")] = 4.0,
        sweep: Annotated[
            str | None, typer.Option(help="Comma-separated ε values to run instead of --epsilon (e.g. 1,4,8).")
        ] = None,
        delta: Annotated[float | None, typer.Option(help="δ (default: the power of ten ≤ 1/(10·n)).")] = None,
        generator: Annotated[
            str | None, typer.Option(help="Generator folder or hub id (default: packaged SmolLM2).")
        ] = None,
        encoder: Annotated[
            str | None, typer.Option(help="Classifier encoder folder or hub id (default: packaged MiniLM).")
        ] = None,
        labels: Annotated[str | None, typer.Option(help="Label names for .csv/.jsonl data, comma-separated.")] = None,
        samples_per_label: Annotated[
            int | None, typer.Option(help="Synthetic texts per label (preset default).")
        ] = None,
        temperature: Annotated[float | None, typer.Option(help="Sampling temperature (preset default 1.0).")] = None,
        top_p: Annotated[float | None, typer.Option(help="Nucleus sampling p (preset default 0.95).")] = None,
        max_noise_multiplier: Annotated[
            float | None, typer.Option(help="Largest σ a DP-SGD schedule may use (default 20).")
        ] = None,
        seed_fraction: Annotated[float, typer.Option(help="Share of the train split used as the seed set.")] = 1.0,
        seed: Annotated[
            int, typer.Option(help="Seed of initialisation, shuffling and sampling (not of DP noise).")
        ] = 0,
        baselines: Annotated[bool, typer.Option(help="Also train the real-data baselines for the comparison.")] = True,
        ship: Annotated[
            str | None,
            typer.Option(help="Which private model becomes eps-<ε>/classifier: probe, warm_start or synthetic."),
        ] = None,
        relabel_synthetic: Annotated[
            bool | None,
            typer.Option(
                "--relabel-synthetic/--no-relabel-synthetic",
                help="Also train on the synthetic texts labelled by a DP probe (preset default: full yes, quick no).",
            ),
        ] = None,
    ) -> None:
        """Fine-tune the generator with DP-SGD on private data, sample synthetic text, train the classifier on it."""
        from ondevice.data import DataError
        from server_aggregator.synthetic.config import SynthConfig
        from server_aggregator.synthetic.config import preset as find_preset
        from server_aggregator.synthetic.dp_sgd import PrivacyPlanError
        from server_aggregator.synthetic.pipeline import run_synth

        try:
            chosen = find_preset(preset)
            sampling = chosen.sampling
            changes: dict[str, Any] = {}
            if samples_per_label is not None:
                changes["samples_per_label"] = samples_per_label
            if temperature is not None:
                changes["temperature"] = temperature
            if top_p is not None:
                changes["top_p"] = top_p
            if changes:
                chosen = replace(chosen, sampling=replace(sampling, **changes))
            if max_noise_multiplier is not None:
                dp_classifier = chosen.dp_classifier
                chosen = replace(
                    chosen,
                    generator=replace(chosen.generator, max_noise_multiplier=max_noise_multiplier),
                    dp_classifier=None
                    if dp_classifier is None
                    else replace(dp_classifier, max_noise_multiplier=max_noise_multiplier),
                )
            if ship is not None:
                chosen = replace(chosen, ship=ship)
            if relabel_synthetic is not None:
                chosen = replace(chosen, relabel_synthetic=relabel_synthetic)
            config = SynthConfig(
                out_dir=out_dir,
                data=data or _default_data(),
                preset=chosen,
                epsilons=_floats(sweep, "--sweep") if sweep else (epsilon,),
                delta=delta,
                generator=generator,
                encoder=encoder,
                label_names=tuple(x.strip() for x in labels.split(",")) if labels else None,
                seed_fraction=seed_fraction,
                seed=seed,
                baselines=baselines,
            )
            console.print(f"[bold]privtune synth[/] ({chosen.note})")
            if console.is_terminal:
                from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

                columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
                with Progress(*columns, console=console) as bar:
                    task = bar.add_task("loading data", total=None)
                    table = run_synth(config, progress=lambda message: bar.update(task, description=message))
            else:
                table = run_synth(config, progress=_LogLines())
        except (PrivacyPlanError, DataError, ValueError, FileNotFoundError) as exc:
            console.print(f"[red]privtune synth: {exc}[/]")
            raise typer.Exit(code=2) from exc
        except Exception as exc:  # model resolution errors carry their own how-to
            from export.model_store import ModelNotFoundError

            if isinstance(exc, ModelNotFoundError):
                console.print(f"[red]privtune synth: {exc}[/]")
                raise typer.Exit(code=2) from exc
            raise
        _print_table(table, out_dir)


class _LogLines:
    """Progress for logs (no terminal): each new stage, then at most one line per 15 s."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.last_time = -math.inf
        self.last_stage = ""

    def __call__(self, message: str) -> None:
        now = time.monotonic()
        stage = re.sub(r"\d+", "#", message.split(":", 1)[0])  # "step 3/40" and "step 4/40" are one stage
        if stage != self.last_stage or now - self.last_time >= 15:
            console.print(f"[{now - self.started:7.1f}s] {message}", markup=False, highlight=False)
            self.last_stage, self.last_time = stage, now


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _print_table(table: dict[str, Any], out_dir: Path) -> None:
    view = Table(
        title=f"real test split ({table['test_examples']} examples), seed set {table['seed_examples']}, "
        f"δ = {table['delta']:g}"
    )
    for column in ("model", "ε (PLD)", "ε (RDP)", "accuracy", "macro-F1", "val macro-F1"):
        view.add_column(column)

    def add(row: dict[str, Any], eps: str, eps_rdp: str, mark: str = "") -> None:
        val = row.get("val")
        view.add_row(
            row["label"] + mark,
            eps,
            eps_rdp,
            f"{row['test']['accuracy']:.3f}",
            f"{row['test']['macro_f1']:.3f}",
            "-" if val is None else f"{val['macro_f1']:.3f}",
        )

    for row in table["common_rows"]:
        add(row, "∞" if row["model"] == "non_private" else "0", "-")
    for result in table["epsilons"]:
        for row in result["rows"]:
            shipped = " (shipped)" if row["model"] == result["shipped"] else ""
            add(row, _fmt(row["epsilon_pld"]), _fmt(row["epsilon_rdp"]), shipped)
    out.print(view)
    spent = table["run_ledger"]["composed_epsilon"]
    out.print(
        f"the whole run's releases on the seed set compose to ε = {spent['pld']:.2f} (PLD; RDP {spent['rdp']:.2f})"
    )
    out.print(f"classifier(s): {', '.join(r['classifier_dir'] for r in table['epsilons'])}")
    out.print(f"table: {out_dir / 'evaluation.json'}, plot: {out_dir / 'evaluation.png'}")
