"""An independent recomputation of the server's user-level ε, straight from its ledger table.

The aggregator reports ε through ``server_aggregator.accountant``. This module does not import
it: it reads the ``ledger`` rows (one per closed round: Poisson rate q and noise multiplier z)
with plain SQL and composes them with ``dp_accounting`` directly — PLD at a finer discretization
than the server's and RDP over its own orders — so a bug in the server's grouping, merging or
accountant setup shows up as a disagreement.
"""

from __future__ import annotations

import logging
import math
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import dp_accounting
from dp_accounting.pld import pld_privacy_accountant
from dp_accounting.rdp import rdp_privacy_accountant

RDP_ORDERS = tuple([1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 12.0, 16.0, 20.0, 24.0, 32.0, 48.0, 64.0])
PLD_DISCRETIZATION = 1e-4


@dataclass(frozen=True)
class LedgerRound:
    round_id: int
    sampling_rate: float
    noise_multiplier: float


def read_ledger(db_path: Path) -> list[LedgerRound]:
    """The closed rounds' (q, z) from an aggregator's SQLite database, opened read-only."""
    if not db_path.is_file():
        raise FileNotFoundError(f"no aggregator database at {db_path}")
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT round_id, sampling_rate, noise_multiplier FROM ledger ORDER BY round_id").fetchall()
    finally:
        conn.close()
    return [LedgerRound(int(r), float(q), float(z)) for r, q, z in rows]


def _event(rounds: Sequence[LedgerRound], amplified: bool) -> dp_accounting.DpEvent:
    events: list[dp_accounting.DpEvent] = []
    for r in rounds:
        gaussian = dp_accounting.GaussianDpEvent(r.noise_multiplier)
        q = r.sampling_rate if amplified else 1.0
        events.append(gaussian if q >= 1.0 else dp_accounting.PoissonSampledDpEvent(q, gaussian))
    return dp_accounting.ComposedDpEvent(events)


def recompute_epsilon(rounds: Sequence[LedgerRound], delta: float, *, amplified: bool = True) -> dict[str, float]:
    """User-level ε of the composed rounds at ``delta``: ``{"pld": …, "rdp": …}`` (inf if some z = 0)."""
    if not rounds:
        return {"pld": 0.0, "rdp": 0.0}
    if any(r.noise_multiplier == 0 for r in rounds):
        return {"pld": math.inf, "rdp": math.inf}
    event = _event(rounds, amplified)
    pld = pld_privacy_accountant.PLDAccountant(value_discretization_interval=PLD_DISCRETIZATION)
    pld.compose(event)
    rdp = rdp_privacy_accountant.RdpAccountant(list(RDP_ORDERS))
    absl_logger = logging.getLogger("absl")
    level = absl_logger.level
    absl_logger.setLevel(logging.ERROR)  # "failed to converge" drops an order: the bound only gets looser
    try:
        rdp.compose(event)
        rdp_epsilon = float(rdp.get_epsilon(delta))
    finally:
        absl_logger.setLevel(level)
    return {"pld": float(pld.get_epsilon(delta)), "rdp": rdp_epsilon}


def epsilon_by_round(rounds: Sequence[LedgerRound], delta: float) -> list[float]:
    """The cumulative amplified PLD ε after each round (the ε-vs-round curve of the report).

    One accountant composes the rounds in order and is read after each, so the whole curve
    costs about one composition."""
    pld = pld_privacy_accountant.PLDAccountant(value_discretization_interval=PLD_DISCRETIZATION)
    curve = []
    for r in rounds:
        if r.noise_multiplier == 0:
            curve.append(math.inf)
            continue
        pld.compose(_event([r], amplified=True))
        curve.append(float(pld.get_epsilon(delta)) if not curve or math.isfinite(curve[-1]) else math.inf)
    return curve
