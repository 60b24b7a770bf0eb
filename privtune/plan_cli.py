"""``privtune plan``: DP-SGD schedules for a data size, an ε target and a compute budget."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console

console = Console(stderr=True, soft_wrap=True)


def register(app: typer.Typer) -> None:
    @app.command()
    def plan(
        n: Annotated[int, typer.Option("--n", help="Private examples (the seed set's size).")],
        epsilon: Annotated[float, typer.Option(help="Target ε of this training run.")],
        delta: Annotated[float, typer.Option(help="δ (keep it ≤ 1/(10·n)).")] = 1e-6,
        budget_example_gradients: Annotated[
            int, typer.Option(help="Compute budget: example-gradients you can afford (steps × batch).")
        ] = 100_000,
        batch_sizes: Annotated[
            str, typer.Option(help="Comma-separated candidate expected batch sizes.")
        ] = "64,128,256,512,1024,2048,4096",
        min_steps: Annotated[int, typer.Option(help="Fewest steps a recommended schedule may take.")] = 50,
        clip_norm: Annotated[float, typer.Option(help="Per-example clip norm C.")] = 1.0,
        as_json: Annotated[bool, typer.Option("--json", help="Print the table as JSON.")] = False,
    ) -> None:
        """For each batch size: steps, calibrated σ (PLD), σ/B and epochs; the smallest σ/B is recommended."""
        from server_aggregator.synthetic.dp_sgd import PrivacyPlanError
        from server_aggregator.synthetic.planner import PlanRequest, format_table, plan_table

        try:
            sizes = tuple(int(x) for x in batch_sizes.split(",") if x.strip())
            request = PlanRequest(
                num_examples=n,
                epsilon=epsilon,
                delta=delta,
                budget_example_gradients=budget_example_gradients,
                batch_sizes=sizes,
                min_steps=min_steps,
                clip_norm=clip_norm,
            )
            if delta > 1.0 / (10 * n):
                console.print(f"[yellow]warning: delta={delta:g} is above 1/(10·n) = {1 / (10 * n):.3g}[/]")
            table = plan_table(request)
        except (ValueError, PrivacyPlanError) as exc:
            console.print(f"[red]privtune plan: {exc}[/]")
            raise typer.Exit(code=2) from exc
        if as_json:
            typer.echo(json.dumps(table.to_dict(), indent=2))
        else:
            typer.echo(format_table(table))
