"""Server user-level accountant: RoundEvent JSON, ε against direct dp_accounting, budget refusal, invariants."""

from __future__ import annotations

import functools
import json
import math
import random
import re
from collections import Counter
from typing import Any

import dp_accounting
import pytest
from dp_accounting.pld import pld_privacy_accountant, privacy_loss_distribution
from dp_accounting.rdp import rdp_privacy_accountant
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server_aggregator.accountant import (
    ENFORCE_MODES,
    SERVER_MAX_GROUPS,
    SERVER_PLD_INTERVALS,
    AccountingInvariantError,
    BudgetExceeded,
    RoundEvent,
    ServerAccountant,
    ServerPldAccountant,
)

DELTA = 1e-6
RELATION = dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE


# ---------------------------------------------------------------- independent oracles (dp_accounting directly)


def direct_pld(events: list[dp_accounting.DpEvent], delta: float = DELTA, interval: float = 1e-3) -> float:
    """dp_accounting's PLD; 1e-3 is within ~0.01 % of finer grids for the few-round sets used with it."""
    accountant = pld_privacy_accountant.PLDAccountant(RELATION, value_discretization_interval=interval)
    accountant.compose(dp_accounting.ComposedDpEvent(events))
    return float(accountant.get_epsilon(delta))


def direct_rdp(events: list[dp_accounting.DpEvent], delta: float = DELTA, orders: list[float] | None = None) -> float:
    accountant = rdp_privacy_accountant.RdpAccountant(orders, RELATION)
    accountant.compose(dp_accounting.ComposedDpEvent(events))
    return float(accountant.get_epsilon(delta))


def sampled(e: RoundEvent) -> dp_accounting.DpEvent:
    """Every round as PoissonSampled, q = 1 included (the module uses a plain Gaussian there)."""
    return dp_accounting.PoissonSampledDpEvent(e.sampling_rate, dp_accounting.GaussianDpEvent(e.noise_multiplier))


def plain(e: RoundEvent) -> dp_accounting.DpEvent:
    return dp_accounting.GaussianDpEvent(e.noise_multiplier)


def rounds(pairs: list[tuple[float, float, int]], seed: int = 0) -> list[RoundEvent]:
    """``n`` rounds per (q, z, n), round ids shuffled so the ledger order is not the grouping order."""
    flat = [(q, z) for q, z, n in pairs for _ in range(n)]
    ids = list(range(len(flat)))
    random.Random(seed).shuffle(ids)
    return [RoundEvent(i, q, z) for i, (q, z) in zip(ids, flat, strict=True)]


MIXED = rounds([(0.05, 1.1, 5), (0.3, 2.0, 3), (1.0, 3.0, 3)])
MIXED_SETS = {
    "mixed_with_q1": MIXED,
    "one_pair": rounds([(0.1, 1.0, 6)]),
    "all_q1": rounds([(1.0, 2.5, 3), (1.0, 4.0, 2)]),
    "single_round": [RoundEvent(0, 0.644, 1.65)],
}


def within(mine: float, reference: float, rel: float = 0.01) -> bool:
    return abs(mine - reference) <= rel * reference


# ---------------------------------------------------------------- RoundEvent


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"round_id": -1}, "round_id must be an int >= 0, found -1"),
        ({"round_id": True}, "round_id must be an int >= 0, found True"),
        ({"round_id": 1.0}, "round_id must be an int >= 0, found 1.0"),
        ({"sampling_rate": 0.0}, "sampling_rate must be a number in (0, 1], found 0.0"),
        ({"sampling_rate": 1.5}, "sampling_rate must be a number in (0, 1], found 1.5"),
        ({"sampling_rate": math.nan}, "sampling_rate must be a number in (0, 1], found nan"),
        ({"sampling_rate": True}, "sampling_rate must be a number in (0, 1], found True"),
        ({"noise_multiplier": -0.5}, "noise_multiplier must be a finite number >= 0, found -0.5"),
        ({"noise_multiplier": math.inf}, "noise_multiplier must be a finite number >= 0, found inf"),
        ({"noise_multiplier": "1.0"}, "noise_multiplier must be a finite number >= 0, found '1.0'"),
    ],
)
def test_round_event_rejects_bad_fields(kwargs: dict[str, Any], message: str) -> None:
    fields: dict[str, Any] = {"round_id": 3, "sampling_rate": 0.1, "noise_multiplier": 1.0, **kwargs}
    with pytest.raises(ValueError, match=re.escape(message)):
        RoundEvent(**fields)


def test_round_event_json_is_canonical_and_round_trips() -> None:
    event = RoundEvent(7, 0.25, 1.5)
    assert event.to_json() == '{"noise_multiplier":1.5,"round_id":7,"sampling_rate":0.25,"version":1}'
    ints = RoundEvent(2, 1, 2)  # ints are normalised to floats: one JSON form per value
    assert isinstance(ints.sampling_rate, float) and isinstance(ints.noise_multiplier, float)
    assert ints.to_json() == RoundEvent(2, 1.0, 2.0).to_json()
    for e in [event, ints, RoundEvent(0, 0.1 + 0.2, 1 / 3), RoundEvent(10**12, 1e-9, 0.0), *MIXED]:
        back = RoundEvent.from_json(e.to_json())
        assert back == e and back.to_json() == e.to_json()
        assert RoundEvent.from_json(e.to_json().encode()) == e  # bytes from a DB column too


_GOOD = {"version": 1, "round_id": 4, "sampling_rate": 0.5, "noise_multiplier": 1.2}


def _with(**changes: Any) -> str:
    return json.dumps({**_GOOD, **changes})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (json.dumps({k: v for k, v in _GOOD.items() if k != "noise_multiplier"}), "missing ['noise_multiplier']"),
        (json.dumps({k: v for k, v in _GOOD.items() if k != "version"}), "missing ['version']"),
        (_with(clip_norm=1.0), "unexpected ['clip_norm']"),
        (_with(noise_multiplier=-1.0), "noise_multiplier must be a finite number >= 0, found -1.0"),
        (_with(sampling_rate=1.01), "sampling_rate must be a number in (0, 1], found 1.01"),
        (_with(sampling_rate=0), "sampling_rate must be a number in (0, 1], found 0"),
        (_with(sampling_rate="0.5"), "sampling_rate must be a number in (0, 1], found '0.5'"),
        (_with(sampling_rate=None), "sampling_rate must be a number in (0, 1], found None"),
        (_with(round_id=True), "round_id must be an int >= 0, found True"),
        (_with(round_id=4.0), "round_id must be an int >= 0, found 4.0"),
        (_with(round_id=-4), "round_id must be an int >= 0, found -4"),
        (_with(version=2), "version must be 1, found 2"),
        (_with(version=True), "version must be 1, found True"),
        (_with(noise_multiplier=math.nan), "non-finite number NaN"),
        (_with(noise_multiplier=math.inf), "non-finite number Infinity"),
        ("[1, 2]", "must be an object, found list"),
        ('{"round_id": 4', "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
    ],
)
def test_round_event_from_json_rejects_malformed(text: str | bytes, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        RoundEvent.from_json(text)


def test_dp_event_and_its_json_description() -> None:
    e = RoundEvent(1, 0.25, 1.5)
    assert e.dp_event() == dp_accounting.PoissonSampledDpEvent(0.25, dp_accounting.GaussianDpEvent(1.5))
    assert e.dp_event_json() == {
        "type": "PoissonSampledDpEvent",
        "sampling_probability": 0.25,
        "event": {"type": "GaussianDpEvent", "noise_multiplier": 1.5},
    }
    full = RoundEvent(2, 1.0, 0.8)
    assert full.dp_event() == dp_accounting.GaussianDpEvent(0.8)
    assert full.dp_event_json() == {"type": "GaussianDpEvent", "noise_multiplier": 0.8}

    def rebuild(d: dict[str, Any]) -> dp_accounting.DpEvent:
        params = {k: rebuild(v) if isinstance(v, dict) else v for k, v in d.items() if k != "type"}
        return getattr(dp_accounting, d["type"])(**params)

    for event in [e, full, *MIXED]:
        described = json.loads(json.dumps(event.dp_event_json(), allow_nan=False))
        assert rebuild(described) == event.dp_event()


# ---------------------------------------------------------------- ServerAccountant config


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"delta": 0.0}, "delta must be a number in (0, 0.1], found 0.0"),
        ({"delta": 0.2}, "delta must be a number in (0, 0.1], found 0.2"),
        ({"delta": -1e-6}, "delta must be a number in (0, 0.1], found -1e-06"),
        ({"delta": math.nan}, "delta must be a number in (0, 0.1], found nan"),
        ({"delta": True}, "delta must be a number in (0, 0.1], found True"),
        ({"epsilon_budget": 0.0}, "epsilon_budget must be a finite number > 0, found 0.0"),
        ({"epsilon_budget": -1.0}, "epsilon_budget must be a finite number > 0, found -1.0"),
        ({"epsilon_budget": math.inf}, "epsilon_budget must be a finite number > 0, found inf"),
        ({"epsilon_budget": "8"}, "epsilon_budget must be a finite number > 0, found '8'"),
        ({"enforce": "both"}, "enforce must be one of ['amplified', 'unamplified'], found 'both'"),
        ({"primary": "moments"}, "primary must be 'pld' or 'rdp', found 'moments'"),
    ],
)
def test_server_accountant_config_is_validated(kwargs: dict[str, Any], message: str) -> None:
    fields: dict[str, Any] = {"delta": DELTA, "epsilon_budget": 8.0, **kwargs}
    with pytest.raises(ValueError, match=re.escape(message)):
        ServerAccountant(**fields)


# ---------------------------------------------------------------- ε against direct dp_accounting


@pytest.mark.parametrize("name", sorted(MIXED_SETS))
def test_report_matches_direct_dp_accounting(name: str) -> None:
    events = MIXED_SETS[name]
    report = ServerAccountant(DELTA, 100.0).report(events)
    assert report.rounds == len(events)
    assert within(report.epsilon_amplified_pld, direct_pld([sampled(e) for e in events]))
    assert within(report.epsilon_unamplified_pld, direct_pld([plain(e) for e in events]))
    # RDP: same orders as recorded in the report -> the same number; dp_accounting's default orders
    # (fractional ones included) can only be tighter.
    orders = report.accountant_inputs["amplified"]["rdp"]["orders"]
    assert within(report.epsilon_amplified_rdp, direct_rdp([sampled(e) for e in events], orders=orders), 1e-9)
    assert within(report.epsilon_unamplified_rdp, direct_rdp([plain(e) for e in events], orders=orders), 1e-9)
    grouped = Counter((e.sampling_rate, e.noise_multiplier) for e in events)
    default_orders = [
        dp_accounting.SelfComposedDpEvent(sampled(RoundEvent(0, q, z)), n) for (q, z), n in grouped.items()
    ]
    assert report.epsilon_amplified_rdp >= direct_rdp(default_orders) * (1 - 1e-12)


def test_ten_thousand_rounds_match_direct_dp_accounting() -> None:
    pairs = [(0.01, 1.2, 6000), (0.02, 1.5, 4000)]
    events = rounds(pairs, seed=1)
    report = ServerAccountant(DELTA, 100.0).report(events)
    counts = Counter((e.sampling_rate, e.noise_multiplier) for e in events)  # the test's own grouping
    amplified = [dp_accounting.SelfComposedDpEvent(sampled(RoundEvent(0, q, z)), n) for (q, z), n in counts.items()]
    unamplified = [
        dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(z), n) for (_, z), n in counts.items()
    ]
    assert within(report.epsilon_amplified_pld, direct_pld(amplified, interval=1e-4))
    # ε in the thousands: a 1e-2 grid is plenty for the oracle (and 1e-4 would need ~10^7 points)
    assert within(report.epsilon_unamplified_pld, direct_pld(unamplified, interval=1e-2))
    assert within(report.epsilon_amplified_rdp, direct_rdp(amplified), 0.02)
    assert report.epsilon_amplified_rdp >= direct_rdp(amplified) * (1 - 1e-12)


def test_report_inputs_recompute_every_number() -> None:
    """A privacy engineer holding only ``accountant_inputs`` gets the same ε with dp_accounting."""
    report = ServerAccountant(DELTA, 100.0).report(MIXED)
    inputs = json.loads(json.dumps(report.to_dict(), allow_nan=False))["accountant_inputs"]
    assert inputs["delta"] == DELTA and inputs["neighboring_relation"] == "ADD_OR_REMOVE_ONE"
    amp = inputs["amplified"]
    events = []
    for g in amp["events"]:
        inner = dp_accounting.GaussianDpEvent(g["noise_multiplier"])
        if g["sampling_rate"] < 1:
            inner = dp_accounting.PoissonSampledDpEvent(g["sampling_rate"], inner)
        events.append(dp_accounting.SelfComposedDpEvent(inner, g["count"]))
    assert sum(g["count"] for g in amp["events"]) == len(MIXED)
    assert amp["pld"]["method"] == "pld_grid" and amp["pld"]["value_discretization_interval"] in SERVER_PLD_INTERVALS
    recomputed = direct_pld(events, inputs["delta"], amp["pld"]["value_discretization_interval"])
    assert within(report.epsilon_amplified_pld, recomputed, 1e-9)
    assert within(report.epsilon_amplified_rdp, direct_rdp(events, inputs["delta"], amp["rdp"]["orders"]), 1e-9)
    unamp = inputs["unamplified"]
    assert unamp["pld"]["method"] == "exact_gaussian"
    sigma = sum(g["count"] / g["noise_multiplier"] ** 2 for g in unamp["events"]) ** -0.5
    assert unamp["pld"]["sigma_effective"] == pytest.approx(sigma, rel=1e-12)
    exact = dp_accounting.get_epsilon_gaussian(sigma, DELTA)
    assert exact <= report.epsilon_unamplified_pld <= exact * (1 + 1e-8)


def test_many_distinct_pairs_are_merged_pessimistically() -> None:
    """A q that drifts with the population (a new q every round) must not make the cost grow without bound."""
    events = [RoundEvent(i, 0.05 + 0.0002 * i, 1.5 + 0.1 * (i % 2)) for i in range(40)]
    report = ServerAccountant(DELTA, 100.0).report(events)
    amp = report.accountant_inputs["amplified"]
    assert (amp["distinct_pairs"], amp["merged"]) == (40, True)
    assert len(amp["events"]) <= SERVER_MAX_GROUPS and sum(g["count"] for g in amp["events"]) == 40
    assert report.accountant_inputs["unamplified"]["merged"] is False
    exact = direct_pld([sampled(e) for e in events])
    q_max, z_min = max(e.sampling_rate for e in events), min(e.noise_multiplier for e in events)
    everything_worst = direct_pld([dp_accounting.SelfComposedDpEvent(sampled(RoundEvent(0, q_max, z_min)), 40)])
    assert exact * (1 - 1e-3) <= report.epsilon_amplified_pld <= everything_worst
    assert report.epsilon_amplified_pld <= exact * 1.02  # neighbours merged: q moves by < 2 %, z not at all
    assert report.epsilon_spent == ServerAccountant(DELTA, 100.0).enforced_epsilon(events)


# ---------------------------------------------------------------- orderings between the numbers


@pytest.mark.parametrize("name", sorted(MIXED_SETS))
def test_unamplified_at_least_amplified_and_rdp_at_least_pld(name: str) -> None:
    r = ServerAccountant(DELTA, 100.0).report(MIXED_SETS[name])
    assert r.epsilon_unamplified_pld >= r.epsilon_amplified_pld > 0
    assert r.epsilon_unamplified_rdp >= r.epsilon_amplified_rdp > 0
    assert r.epsilon_amplified_rdp >= r.epsilon_amplified_pld
    assert r.epsilon_unamplified_rdp >= r.epsilon_unamplified_pld
    if name == "all_q1":
        assert r.epsilon_amplified_pld == r.epsilon_unamplified_pld


def test_zero_rounds_spend_nothing() -> None:
    acc = ServerAccountant(DELTA, 3.0)
    r = acc.report([])
    assert r.rounds == 0
    assert (r.epsilon_amplified_pld, r.epsilon_amplified_rdp, r.epsilon_unamplified_pld) == (0.0, 0.0, 0.0)
    assert r.epsilon_unamplified_rdp == 0.0
    assert (r.epsilon_spent, r.epsilon_left) == (0.0, 3.0)
    first = RoundEvent(0, 0.1, 1.0)
    assert acc.check_open([], first) == acc.enforced_epsilon([first]) > 0


def test_zero_noise_is_infinite_and_refused() -> None:
    acc = ServerAccountant(DELTA, 1000.0)
    ledger = [RoundEvent(0, 0.1, 1.0)]
    r = acc.report([*ledger, RoundEvent(1, 0.01, 0.0)])
    assert all(
        math.isinf(x)
        for x in (
            r.epsilon_amplified_pld,
            r.epsilon_amplified_rdp,
            r.epsilon_unamplified_pld,
            r.epsilon_unamplified_rdp,
        )
    )
    assert r.epsilon_left == 0.0
    d = json.loads(json.dumps(r.to_dict(), allow_nan=False))  # strict JSON even with ε = inf
    assert d["epsilon_amplified_pld"] == "inf" and d["epsilon_spent"] == "inf"
    with pytest.raises(BudgetExceeded) as info:
        acc.check_open(ledger, RoundEvent(1, 0.01, 0.0))
    assert math.isinf(info.value.projected) and info.value.spent == acc.enforced_epsilon(ledger) < 1000.0
    assert "projected=inf" in str(info.value)


@pytest.mark.parametrize("enforce", ENFORCE_MODES)
@pytest.mark.parametrize("primary", ["pld", "rdp"])
def test_spent_is_the_configured_view_and_accountant(enforce: str, primary: str) -> None:
    acc = ServerAccountant(DELTA, 50.0, enforce=enforce, primary=primary)
    r = acc.report(MIXED)
    expected = getattr(r, f"epsilon_{enforce}_{primary}")
    assert (r.enforced_on, r.primary) == (enforce, primary)
    assert r.epsilon_spent == expected == acc.enforced_epsilon(MIXED)
    assert r.epsilon_left == pytest.approx(50.0 - expected)
    assert "add/remove one device" in r.neighbouring_relation and "Poisson" in r.sampling
    assert "charging" in r.sampling


def test_report_does_not_depend_on_event_order() -> None:
    acc = ServerAccountant(DELTA, 100.0)
    shuffled = list(MIXED)
    random.Random(5).shuffle(shuffled)
    assert acc.report(shuffled) == acc.report(sorted(MIXED, key=lambda e: e.round_id))


# ---------------------------------------------------------------- check_open, duplicates, refusal message


def test_check_open_projects_the_ledger_with_the_new_round() -> None:
    acc = ServerAccountant(DELTA, 100.0)
    ledger = list(MIXED)
    nxt = RoundEvent(100, 0.2, 1.3)
    projected = acc.check_open(ledger, nxt)
    assert ledger == MIXED  # not mutated
    assert projected == acc.enforced_epsilon([*MIXED, nxt]) == acc.report([*MIXED, nxt]).epsilon_spent
    assert projected > acc.enforced_epsilon(MIXED)


@pytest.mark.parametrize("enforce", ENFORCE_MODES)
def test_refusal_is_exact_at_the_budget(enforce: str) -> None:
    nxt = RoundEvent(100, 0.2, 1.3)
    projected = ServerAccountant(DELTA, 100.0, enforce=enforce).check_open(MIXED, nxt)
    assert ServerAccountant(DELTA, projected, enforce=enforce).check_open(MIXED, nxt) == projected
    with pytest.raises(BudgetExceeded):
        ServerAccountant(DELTA, projected * (1 - 1e-9), enforce=enforce).check_open(MIXED, nxt)


def test_duplicate_round_ids_are_refused() -> None:
    acc = ServerAccountant(DELTA, 100.0)
    with pytest.raises(ValueError, match="round 3 appears twice"):
        acc.report([RoundEvent(3, 0.1, 1.0), RoundEvent(4, 0.1, 1.0), RoundEvent(3, 0.2, 2.0)])
    with pytest.raises(ValueError, match="round 3 appears twice"):
        acc.check_open([RoundEvent(3, 0.1, 1.0)], RoundEvent(3, 0.1, 1.0))
    with pytest.raises(TypeError, match="must hold RoundEvent"):
        acc.report([(3, 0.1, 1.0)])  # type: ignore[list-item]


def test_budget_exceeded_states_the_numbers_and_what_to_do() -> None:
    acc = ServerAccountant(DELTA, 2.0)
    ledger = [RoundEvent(i, 0.1, 1.5) for i in range(5)]
    nxt = RoundEvent(5, 1.0, 0.5)
    with pytest.raises(BudgetExceeded) as info:
        acc.check_open(ledger, nxt)
    exc = info.value
    assert isinstance(exc, RuntimeError)
    assert exc.budget == 2.0
    assert exc.spent == acc.enforced_epsilon(ledger) < 2.0
    assert exc.projected == acc.enforced_epsilon([*ledger, nxt]) > 2.0
    message = str(exc)
    for label, number in (("spent", exc.spent), ("projected", exc.projected), ("budget", exc.budget)):
        assert f"{label}={number:.4f}" in message
    assert "round 5" in message and "q=1" in message and "z=0.5" in message and "delta=1e-06" in message
    for advice in ("raise the budget", "raise the noise multiplier", "lower the sampling rate", "stop"):
        assert advice in message


def test_invariant_violation_is_an_internal_error_with_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ServerPldAccountant, "epsilon", lambda self, steps, delta: 12345.0)
    with pytest.raises(AccountingInvariantError, match=r"RDP epsilon [0-9.]+ is below PLD epsilon 12345\.0"):
        ServerAccountant(DELTA, 100.0).report(MIXED)


# ---------------------------------------------------------------- property: no sequence of opens passes the budget

_TOL = 0.01  # the accountants' documented precision (pessimistic grids, <= ~1 % above a 1e-4 grid)


@functools.lru_cache(maxsize=4096)
def _round_pld(q: float, z: float) -> privacy_loss_distribution.PrivacyLossDistribution:
    return privacy_loss_distribution.from_gaussian_mechanism(z, sampling_prob=q, value_discretization_interval=1e-3)


def _independent(events: list[RoundEvent], enforce: str) -> float:
    """dp_accounting's PLD of the rounds composed one by one (1e-3: within ~0.01 % for a few rounds)."""
    if not events:
        return 0.0
    if any(e.noise_multiplier == 0 for e in events):
        return math.inf
    plds = [_round_pld(e.sampling_rate if enforce == "amplified" else 1.0, e.noise_multiplier) for e in events]
    return float(functools.reduce(lambda a, b: a.compose(b), plds).get_epsilon_for_delta(DELTA))


_q = st.one_of(st.just(1.0), st.floats(0.01, 1.0))
_z = st.one_of(st.just(0.0), st.floats(0.3, 4.0))


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(
    budget=st.floats(0.3, 30.0),
    enforce=st.sampled_from(ENFORCE_MODES),
    attempts=st.lists(st.tuples(_q, _z), min_size=1, max_size=6),
)
def test_no_sequence_of_opens_exceeds_the_budget(
    budget: float, enforce: str, attempts: list[tuple[float, float]]
) -> None:
    acc = ServerAccountant(DELTA, budget, enforce=enforce)
    ledger: list[RoundEvent] = []
    for round_id, (q, z) in enumerate(attempts):
        nxt = RoundEvent(round_id, q, z)
        independent = _independent([*ledger, nxt], enforce)
        try:
            projected = acc.check_open(ledger, nxt)
        except BudgetExceeded as exc:
            assert exc.projected > budget >= exc.spent
            assert independent > budget * (1 - _TOL), f"refused, but dp_accounting says {independent} <= {budget}"
            continue
        assert projected <= budget
        assert independent <= budget * (1 + _TOL)
        ledger.append(nxt)
    assert acc.enforced_epsilon(ledger) <= budget
    assert acc.report(ledger).epsilon_spent <= budget
    assert _independent(ledger, enforce) <= budget * (1 + _TOL)
