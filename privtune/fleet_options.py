"""Command-line options shared by ``privtune fleet`` and ``privtune demo``: the fleet's conditions.

The four odds are declared once here (same flag, same help text in both commands); each command
keeps its own defaults and its own ``--adversaries`` / ``--seed`` help, and builds its
``FleetConditions`` with ``fleet_conditions``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from privtune.fleet.conditions import FleetConditions

Availability = Annotated[float, typer.Option(help="P(a device checks in in a round).")]
Dropout = Annotated[float, typer.Option(help="P(a training device dies mid-round; it resumes).")]
Straggler = Annotated[float, typer.Option(help="P(a training device misses the deadline).")]
NetworkFault = Annotated[float, typer.Option(help="P(an upload attempt times out or resets).")]


def split_names(text: str) -> tuple[str, ...]:
    """A comma-separated option value → its non-empty items, stripped ("a, b," → ("a", "b"))."""
    return tuple(x.strip() for x in text.split(",") if x.strip())


def fleet_conditions(
    *, availability: float, dropout: float, straggler: float, network_fault: float, adversaries: str, seed: int
) -> FleetConditions:
    """``FleetConditions`` from the options (``adversaries`` comma-separated); it raises ValueError on bad values."""
    from privtune.fleet.conditions import FleetConditions

    return FleetConditions(
        availability=availability,
        dropout=dropout,
        straggler=straggler,
        network_fault=network_fault,
        adversaries=split_names(adversaries),
        seed=seed,
    )
