"""User-level DP-FedAvg privacy accounting over the server's round ledger (pure logic, no I/O).

**Model.** Round r releases the noised sum of clipped device updates: a Gaussian mechanism with
noise multiplier z_r (the effective multiplier of the whole round release, noise std z_r·S for
clip norm S), applied to the devices selected for that round. Neighbouring datasets differ by
adding or removing all of one device's data (user-level, add/remove). The round's dp_accounting
event is ``PoissonSampledDpEvent(q_r, GaussianDpEvent(z_r))``, or ``GaussianDpEvent(z_r)`` when
q_r = 1. Rounds compose; ε is computed from the list of ``RoundEvent`` (the ledger), never stored.

**Sampling assumption, and why two numbers.** Amplification by sampling holds only if every
enrolled device is in each round independently with probability q_r (Poisson client sampling),
whatever it does. Check-in gated by charging, idle and unmetered network is not uniform
sampling: whether a device is available depends on the device and its owner, and the server
only samples among the devices that checked in. So the amplified ε is a guarantee only under
that assumption. The report also gives the ε *without* amplification by sampling: every round
counted as a plain Gaussian(z_r) release for a device that took part in all of them
(``StepEvent(1.0, z_r)``). ``ServerAccountant.enforce`` says which of the two the budget is
enforced on; the report always states both.

**Accountants.** "pld" (primary) and "rdp" (cross-check), the names of
``ondevice.accounting``'s registry, reused through its ``StepEvent``/``group_steps``/
``RdpAccountant``. RDP's ε must never be below PLD's: checked on every report
(``AccountingInvariantError`` otherwise). The PLD side is ``ServerPldAccountant``, a server rule,
because the device's rule took 0.7 s (one (q, z)) to 9 s (10 distinct pairs) for 10,000 rounds
on the 2-core machine (bench/bench_accountant.py, case ``device_rules``). Why, and what changed:

* q = 1 went through ``PoissonSampledDpEvent(1, ·)``: an FFT self-composition on a grid as wide as
  the composed privacy loss (3.4 M points for z = 0.5: 1.1 s) plus dp_accounting's pure-Python ε
  search over the top of that grid (0.7 s). Rounds with q = 1 are now ``GaussianDpEvent``: Gaussian
  releases with multipliers z_i compose *exactly* into one Gaussian release with multiplier
  (Σ z_i⁻²)^-1/2 (dp_accounting does the same for counts). When every round has q = 1 (always so
  for the unamplified view) ε is the exact analytic Gaussian ε (``dp_accounting.get_epsilon_gaussian``,
  Balle & Wang 2018), rounded up by the root finder's tolerance: no grid at all.
* q < 1: the device starts at a 1e-3 grid, whose size grows with the spread of the composed loss
  (0.8 M points for q = 0.1, z = 0.5), and every distinct (q, z) costs a Python-level
  connect-the-dots construction per pass (10 distinct pairs: 2.3 s). Measured here over 80
  (q, z, T) settings: a pessimistic pass at grid h exceeds the 1e-4 value by about c·T·h² for T
  compositions (c ≈ 0.1–0.4 at large ε, c·ε ≈ 0.6–1.5 at small ε). The server takes the coarsest
  grid (1e-2 at most) with T·h² ≤ 2e-3·ε², first for RDP's ε (an upper bound), then re-checked
  with the PLD ε obtained, and refines 10× until it holds (``SERVER_PLD_RULE``); in those 80
  settings and 60 random mixes its ε was at most 0.32 % above the 1e-4 value. Every pass is a
  pessimistic upper bound: a coarser grid only loosens ε, never below the truth. Refinement is
  also forced while PLD's ε is above RDP's (grid slack; the invariant above). The price is paid
  where ε is small and T large: 10k rounds at ε ≈ 0.5 need 1e-4 (≈ 0.3 s for one (q, z)); with 10
  distinct pairs, 1.3 s at ε ≈ 0.7 and 4.7 s at ε ≈ 0.16 (1e-5 grid).

RDP uses dp_accounting's default orders without the fractional ones (``SERVER_RDP_ORDERS``, both
views): for q ≳ 0.1, z ≲ 1 its series for fractional α does not converge (1000 iterations, then the
order is dropped with a warning), 1.4 s for 10 distinct pairs; integer orders are a finite sum. Fewer
orders can only loosen RDP: ≤ 1 % at ε ≈ 2–10 here, up to 2× at ε in the thousands.

Cost grows with the number of *distinct* (q, z) pairs (equal pairs compose by self-composition;
≈ 20–70 ms per pair and pass). A q recomputed every round (e.g. clients_per_round / population)
makes every round distinct, so past ``SERVER_MAX_GROUPS`` distinct pairs neighbours in (z, q) order
are merged into (max q, min z): pessimistic, slightly looser, bounded cost; the report says so
(``merged``, ``distinct_pairs``). Keeping q fixed per configuration avoids the looseness.
"""

from __future__ import annotations

import functools
import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import dp_accounting
from dp_accounting.pld import pld_privacy_accountant

import ondevice.accounting as device_accounting
from ondevice.accounting import (
    LIBRARY,
    RDP_ORDERS,
    Accountant,
    RdpAccountant,
    StepEvent,
    group_steps,
)

NEIGHBOURING_RELATION: Final = "add/remove one device's data (user-level)"
SAMPLING_ASSUMPTION: Final = (
    "Poisson client sampling: every enrolled device is in each round independently with probability q. "
    "Check-in gated by charging/idle/network is not uniform sampling, so the amplified epsilon holds only "
    "under this assumption; epsilon_unamplified counts every round as a plain Gaussian release for a device "
    "that took part in all of them."
)
ENFORCE_MODES: Final = ("amplified", "unamplified")
MAX_DELTA: Final = 0.1
EVENT_VERSION: Final = 1
_EVENT_KEYS: Final = frozenset({"version", "round_id", "sampling_rate", "noise_multiplier"})

SERVER_RDP_ORDERS: tuple[float, ...] = tuple(a for a in RDP_ORDERS if a.is_integer())
SERVER_PLD_INTERVALS: tuple[float, ...] = (1e-2, 1e-3, 1e-4, 1e-5)
SERVER_PLD_RESOLUTION: Final = 2e-3
_GAUSSIAN_TOL: Final = 1e-9
SERVER_MAX_GROUPS: Final = 12
_MERGE_RULE: Final = (
    f"more than {SERVER_MAX_GROUPS} distinct (q, z) pairs: sorted by (z, q) and cut into at most "
    f"{SERVER_MAX_GROUPS} runs of equal length, each accounted as (max q, min z, total count); pessimistic "
    "(epsilon grows with q and shrinks with z). 'events' are the accounted (merged) groups."
)
SERVER_PLD_RULE: Final = (
    f"server resolution rule: intervals {SERVER_PLD_INTERVALS}; a grid h is fine enough for an epsilon e when "
    f"compositions * h^2 <= {SERVER_PLD_RESOLUTION:g} * e^2 (compositions = rounds with q < 1, plus one per "
    "distinct z with q = 1). Start at the coarsest h fine enough for the RDP epsilon (an upper bound); refine 10x "
    "while h is not fine enough for the smallest PLD epsilon so far or that epsilon is above RDP's; report the "
    "smallest epsilon (every pass is a pessimistic upper bound). Rounds with q = 1 are GaussianDpEvent; when all "
    "have q = 1 the exact analytic Gaussian epsilon is used instead of a grid."
)
_EXACT_GAUSSIAN_RULE: Final = (
    "exact: Gaussian releases with multipliers z_i (counts n_i) compose into one Gaussian release with "
    "sigma = (sum n_i / z_i^2)^-1/2; epsilon = dp_accounting.get_epsilon_gaussian(sigma, delta, tol) + tol * (1 + eps)"
)


class BudgetExceeded(RuntimeError):
    """Opening a round would take the enforced ε past the budget."""

    def __init__(self, spent: float, projected: float, budget: float, message: str) -> None:
        super().__init__(message)
        self.spent, self.projected, self.budget = spent, projected, budget


class AccountingInvariantError(RuntimeError):
    """An internal accounting invariant failed (RDP's ε below PLD's): a bug, never a user error."""


def _finite_number(x: object) -> float | None:
    """float(x) for a finite int/float (bools excluded), else None."""
    if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x):
        return None
    return float(x)


@dataclass(frozen=True)
class RoundEvent:
    """One round's privacy event: clients Poisson-sampled at rate q, the release noised with multiplier z."""

    round_id: int
    sampling_rate: float
    noise_multiplier: float

    def __post_init__(self) -> None:
        if isinstance(self.round_id, bool) or not isinstance(self.round_id, int) or self.round_id < 0:
            raise ValueError(f"RoundEvent.round_id must be an int >= 0, found {self.round_id!r}")
        q, z = _finite_number(self.sampling_rate), _finite_number(self.noise_multiplier)
        if q is None or not 0 < q <= 1:
            raise ValueError(f"RoundEvent.sampling_rate must be a number in (0, 1], found {self.sampling_rate!r}")
        if z is None or z < 0:
            raise ValueError(
                f"RoundEvent.noise_multiplier must be a finite number >= 0, found {self.noise_multiplier!r}"
            )
        object.__setattr__(self, "sampling_rate", q)  # ints become floats: one JSON form per value
        object.__setattr__(self, "noise_multiplier", z)

    def to_json(self) -> str:
        """Canonical JSON (sorted keys, no spaces, floats exactly round-tripped); stable across versions 1."""
        return json.dumps(
            {
                "version": EVENT_VERSION,
                "round_id": self.round_id,
                "sampling_rate": self.sampling_rate,
                "noise_multiplier": self.noise_multiplier,
            },
            sort_keys=True,
            separators=(",", ":"),
            allow_nan=False,
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> RoundEvent:
        """Parse ``to_json`` output; anything else (missing/extra keys, bad values, NaN) raises ValueError."""
        try:
            data = json.loads(text, parse_constant=_reject_constant)
        except (ValueError, TypeError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise ValueError(f"RoundEvent JSON is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ValueError(f"RoundEvent JSON must be an object, found {type(data).__name__}")
        missing, extra = _EVENT_KEYS - data.keys(), data.keys() - _EVENT_KEYS
        if missing or extra:
            raise ValueError(
                f"RoundEvent JSON keys must be {sorted(_EVENT_KEYS)}; missing {sorted(missing)}, "
                f"unexpected {sorted(extra)}"
            )
        version = data["version"]
        if isinstance(version, bool) or version != EVENT_VERSION:
            raise ValueError(f"RoundEvent JSON version must be {EVENT_VERSION}, found {version!r}")
        return cls(data["round_id"], data["sampling_rate"], data["noise_multiplier"])

    def dp_event(self) -> dp_accounting.DpEvent:
        """``PoissonSampledDpEvent(q, GaussianDpEvent(z))``, or ``GaussianDpEvent(z)`` when q = 1."""
        gaussian = dp_accounting.GaussianDpEvent(self.noise_multiplier)
        if self.sampling_rate == 1.0:
            return gaussian
        return dp_accounting.PoissonSampledDpEvent(self.sampling_rate, gaussian)

    def dp_event_json(self) -> dict[str, Any]:
        """``dp_event()`` as {"type": dp_accounting class name, its fields...}, nested, for the ledger record."""
        described: dict[str, Any] = _named_tuple_dict(self.dp_event().to_named_tuple())
        return described


def _reject_constant(name: str) -> None:
    raise ValueError(f"non-finite number {name} is not allowed")


def _named_tuple_dict(value: Any) -> Any:
    if hasattr(value, "_asdict") and hasattr(value, "class_name"):
        fields = {k: _named_tuple_dict(v) for k, v in value._asdict().items() if k not in ("module_name", "class_name")}
        return {"type": value.class_name, **fields}
    return value


_Groups = tuple[tuple[float, float, int], ...]


def _composed_dp_event(groups: _Groups) -> dp_accounting.DpEvent:
    events: list[dp_accounting.DpEvent] = []
    for q, z, n in groups:
        inner: dp_accounting.DpEvent = dp_accounting.GaussianDpEvent(z)
        if q != 1.0:
            inner = dp_accounting.PoissonSampledDpEvent(q, inner)
        events.append(dp_accounting.SelfComposedDpEvent(inner, n))
    return dp_accounting.ComposedDpEvent(events)


def _pld_pass(groups: _Groups, delta: float, interval: float) -> float:
    accountant = pld_privacy_accountant.PLDAccountant(
        dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE, value_discretization_interval=interval
    )
    accountant.compose(_composed_dp_event(groups))
    return float(accountant.get_epsilon(delta))


def _fine_enough(groups: _Groups, interval: float, epsilon: float) -> bool:
    """The resolution rule of SERVER_PLD_RULE: predicted grid excess <~ 0.3-0.8 % of epsilon (module docstring)."""
    compositions = sum(n if q != 1.0 else 1 for q, _, n in groups)
    return compositions * interval * interval <= SERVER_PLD_RESOLUTION * epsilon * epsilon


def _exact_gaussian(groups: _Groups, delta: float) -> tuple[float, float]:
    """(ε, σ_eff) of Gaussian releases only (q = 1, z > 0), rounded up by the root-finder tolerance."""
    sigma = sum(n / (z * z) for _, z, n in groups) ** -0.5
    eps = float(dp_accounting.get_epsilon_gaussian(sigma, delta, tol=_GAUSSIAN_TOL))
    return eps + _GAUSSIAN_TOL * (1.0 + eps), sigma


@dataclass(frozen=True)
class ServerPldEstimate:
    """ε, the method ("none", "non_private", "exact_gaussian", "pld_grid") and the grid interval if any."""

    epsilon: float
    method: str
    value_discretization_interval: float | None = None
    sigma_effective: float | None = None


@functools.lru_cache(maxsize=256)
def _server_pld(groups: _Groups, delta: float) -> ServerPldEstimate:
    if not groups:
        return ServerPldEstimate(0.0, "none")
    if any(z == 0 for _, z, _ in groups):
        return ServerPldEstimate(math.inf, "non_private")
    if all(q == 1.0 for q, _, _ in groups):
        eps, sigma = _exact_gaussian(groups, delta)
        return ServerPldEstimate(eps, "exact_gaussian", sigma_effective=sigma)
    rdp = _rdp(groups, delta)
    intervals = SERVER_PLD_INTERVALS
    i = next((k for k, h in enumerate(intervals) if _fine_enough(groups, h, rdp)), len(intervals) - 1)
    best_eps, best_h = math.inf, intervals[i]
    for h in intervals[i:]:
        eps = _pld_pass(groups, delta, h)
        if eps < best_eps:
            best_eps, best_h = eps, h
        if best_eps <= rdp and _fine_enough(groups, h, best_eps):
            break
    return ServerPldEstimate(best_eps, "pld_grid", value_discretization_interval=best_h)


def _rdp(groups: _Groups, delta: float) -> float:
    return RdpAccountant(SERVER_RDP_ORDERS).epsilon([StepEvent(q, z, n) for q, z, n in groups], delta)


def _check_delta(delta: object) -> float:
    d = _finite_number(delta)
    if d is None or not 0 < d < 1:
        raise ValueError(f"delta must be a number in (0, 1), found {delta!r}")
    return d


class ServerPldAccountant:
    """PLD accountant for the server (``SERVER_PLD_RULE``); same protocol as ``ondevice.accounting``'s."""

    name = "pld"

    def evaluate(self, steps: Sequence[StepEvent], delta: float) -> ServerPldEstimate:
        return _server_pld(group_steps(steps), _check_delta(delta))

    def epsilon(self, steps: Sequence[StepEvent], delta: float) -> float:
        return self.evaluate(steps, delta).epsilon

    def inputs(self, steps: Sequence[StepEvent], delta: float) -> dict[str, Any]:
        est = self.evaluate(steps, delta)
        out: dict[str, Any] = {"method": est.method}
        if est.method == "pld_grid":
            out |= {
                "value_discretization_interval": est.value_discretization_interval,
                "interval_rule": SERVER_PLD_RULE,
                "pessimistic_estimate": True,
                "use_connect_dots": True,
            }
        elif est.method == "exact_gaussian":
            out |= {"sigma_effective": est.sigma_effective, "rule": _EXACT_GAUSSIAN_RULE, "tol": _GAUSSIAN_TOL}
        return out


def _accountant(name: str) -> Accountant:
    """The server's accountant for an ``ondevice.accounting`` registry name ("pld" or "rdp")."""
    return ServerPldAccountant() if name == "pld" else RdpAccountant(SERVER_RDP_ORDERS)


def clear_caches() -> None:
    """Drop memoised results (benchmarks time the uncached computation)."""
    _server_pld.cache_clear()
    device_accounting._rdp_epsilon.cache_clear()
    device_accounting._pld_epsilon.cache_clear()


def _checked_events(events: Sequence[RoundEvent]) -> tuple[RoundEvent, ...]:
    seen: set[int] = set()
    for e in events:
        if not isinstance(e, RoundEvent):
            raise TypeError(f"events must hold RoundEvent, found {e!r}")
        if e.round_id in seen:
            raise ValueError(f"round {e.round_id} appears twice in the ledger; a round counted twice is a bug")
        seen.add(e.round_id)
    return tuple(events)


def _merged(groups: _Groups) -> _Groups:
    """At most SERVER_MAX_GROUPS groups: neighbours in (z, q) order merged into (max q, min z, total count).

    Pessimistic: a Poisson-sampled Gaussian round with a larger q or a smaller z dominates the original
    (ε grows with q and shrinks with z), and composition keeps dominance.
    """
    if len(groups) <= SERVER_MAX_GROUPS:
        return groups
    ordered = sorted(groups, key=lambda g: (g[1], g[0]))
    size = math.ceil(len(ordered) / SERVER_MAX_GROUPS)
    chunks = [ordered[i : i + size] for i in range(0, len(ordered), size)]
    merged = [StepEvent(max(g[0] for g in c), min(g[1] for g in c), sum(g[2] for g in c)) for c in chunks]
    return group_steps(merged)


def _steps(events: Sequence[RoundEvent], amplified: bool) -> tuple[list[StepEvent], int]:
    """The view's grouped steps (merged past SERVER_MAX_GROUPS) and the number of distinct (q, z) pairs."""
    counts = Counter((e.sampling_rate if amplified else 1.0, e.noise_multiplier) for e in events)
    groups = tuple(sorted((q, z, n) for (q, z), n in counts.items()))
    return [StepEvent(q, z, n) for q, z, n in _merged(groups)], len(groups)


def _json_number(x: float) -> float | str:
    return x if math.isfinite(x) else ("inf" if x > 0 else "-inf")


@dataclass(frozen=True)
class PrivacyReport:
    """The server's user-level privacy status derived from the ledger; ``to_dict`` is strict JSON."""

    rounds: int
    delta: float
    epsilon_amplified_pld: float
    epsilon_amplified_rdp: float
    epsilon_unamplified_pld: float
    epsilon_unamplified_rdp: float
    enforced_on: str  # "amplified" or "unamplified"
    primary: str  # accountant whose ε is enforced: "pld" or "rdp"
    epsilon_budget: float
    epsilon_spent: float
    epsilon_left: float  # max(0, budget - spent)
    neighbouring_relation: str = NEIGHBOURING_RELATION
    sampling: str = SAMPLING_ASSUMPTION
    accountant_inputs: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """All fields; an infinite ε (a round with z = 0) is written as the string "inf"."""
        return {
            "rounds": self.rounds,
            "delta": self.delta,
            "epsilon_amplified_pld": _json_number(self.epsilon_amplified_pld),
            "epsilon_amplified_rdp": _json_number(self.epsilon_amplified_rdp),
            "epsilon_unamplified_pld": _json_number(self.epsilon_unamplified_pld),
            "epsilon_unamplified_rdp": _json_number(self.epsilon_unamplified_rdp),
            "enforced_on": self.enforced_on,
            "primary": self.primary,
            "epsilon_budget": self.epsilon_budget,
            "epsilon_spent": _json_number(self.epsilon_spent),
            "epsilon_left": self.epsilon_left,
            "neighbouring_relation": self.neighbouring_relation,
            "sampling": self.sampling,
            "accountant_inputs": self.accountant_inputs,
        }


@dataclass(frozen=True)
class ServerAccountant:
    """User-level ε of the round ledger at ``delta``, with a hard budget on the ``enforce`` view.

    ``primary`` ("pld" or "rdp", ``ondevice.accounting`` names) is the accountant whose ε is
    enforced; the other is the cross-check. Stateless: every call takes the ledger's events.
    """

    delta: float
    epsilon_budget: float
    enforce: str = "amplified"
    primary: str = "pld"

    def __post_init__(self) -> None:
        d, b = _finite_number(self.delta), _finite_number(self.epsilon_budget)
        if d is None or not 0 < d <= MAX_DELTA:
            raise ValueError(f"delta must be a number in (0, {MAX_DELTA}], found {self.delta!r}")
        if b is None or b <= 0:
            raise ValueError(f"epsilon_budget must be a finite number > 0, found {self.epsilon_budget!r}")
        if self.enforce not in ENFORCE_MODES:
            raise ValueError(f"enforce must be one of {list(ENFORCE_MODES)}, found {self.enforce!r}")
        if self.primary not in ("pld", "rdp"):
            raise ValueError(f"primary must be 'pld' or 'rdp', found {self.primary!r}")
        object.__setattr__(self, "delta", d)
        object.__setattr__(self, "epsilon_budget", b)

    def enforced_epsilon(self, events: Sequence[RoundEvent]) -> float:
        """The ε the budget is enforced on (``primary`` accountant, ``enforce`` view)."""
        checked = _checked_events(events)
        steps, _ = _steps(checked, self.enforce == "amplified")
        return _accountant(self.primary).epsilon(steps, self.delta)

    def check_open(self, events: Sequence[RoundEvent], next_event: RoundEvent) -> float:
        """Projected enforced ε with ``next_event`` added; ``BudgetExceeded`` if it would pass the budget."""
        checked = _checked_events([*events, next_event])
        projected = self.enforced_epsilon(checked)
        if projected <= self.epsilon_budget:
            return projected
        spent = self.enforced_epsilon(checked[:-1])
        q, z = next_event.sampling_rate, next_event.noise_multiplier
        raise BudgetExceeded(
            spent,
            projected,
            self.epsilon_budget,
            f"privacy budget exceeded: opening round {next_event.round_id} (sampling rate q={q:g}, noise "
            f"multiplier z={z:g}) would take the enforced epsilon ({self.enforce}, {self.primary}, "
            f"delta={self.delta:g}) from spent={spent:.4f} over {len(checked) - 1} rounds to "
            f"projected={projected:.4f}, past the budget={self.epsilon_budget:.4f}. The round was not opened. "
            "To continue: raise the budget, raise the noise multiplier, lower the sampling rate, or stop training.",
        )

    def report(self, events: Sequence[RoundEvent]) -> PrivacyReport:
        """Both views × both accountants, the enforced ε and what is left, and the inputs to recompute them."""
        checked = _checked_events(events)
        pld, rdp = ServerPldAccountant(), RdpAccountant(SERVER_RDP_ORDERS)
        views: dict[str, dict[str, Any]] = {}
        eps: dict[tuple[str, str], float] = {}
        for view in ENFORCE_MODES:
            steps, distinct = _steps(checked, view == "amplified")
            eps[view, "pld"], eps[view, "rdp"] = pld.epsilon(steps, self.delta), rdp.epsilon(steps, self.delta)
            if not eps[view, "rdp"] >= eps[view, "pld"]:
                raise AccountingInvariantError(
                    f"RDP epsilon {eps[view, 'rdp']!r} is below PLD epsilon {eps[view, 'pld']!r} ({view}, "
                    f"delta={self.delta:g}, {len(checked)} rounds, events {_events_json(steps)})"
                )
            views[view] = {
                "dp_event": "ComposedDpEvent([SelfComposedDpEvent(PoissonSampledDpEvent(q, GaussianDpEvent(z)), count) "
                "if q < 1 else SelfComposedDpEvent(GaussianDpEvent(z), count) for each event])",
                "events": _events_json(steps),
                "distinct_pairs": distinct,
                "merged": distinct > SERVER_MAX_GROUPS,
                "merge_rule": _MERGE_RULE,
                "pld": pld.inputs(steps, self.delta),
                "rdp": rdp.inputs(steps, self.delta),
            }
        spent = eps[self.enforce, self.primary]
        return PrivacyReport(
            rounds=len(checked),
            delta=self.delta,
            epsilon_amplified_pld=eps["amplified", "pld"],
            epsilon_amplified_rdp=eps["amplified", "rdp"],
            epsilon_unamplified_pld=eps["unamplified", "pld"],
            epsilon_unamplified_rdp=eps["unamplified", "rdp"],
            enforced_on=self.enforce,
            primary=self.primary,
            epsilon_budget=self.epsilon_budget,
            epsilon_spent=spent,
            epsilon_left=max(0.0, self.epsilon_budget - spent),
            accountant_inputs={
                "library": LIBRARY,
                "neighboring_relation": "ADD_OR_REMOVE_ONE",
                "delta": self.delta,
                **views,
            },
        )


def _events_json(steps: Sequence[StepEvent]) -> list[dict[str, Any]]:
    return [{"sampling_rate": q, "noise_multiplier": z, "count": n} for q, z, n in group_steps(steps)]
