"""``simulate``: rounds of Poisson cohorts → vectorized local DP-SGD → the server's DpFixedClipping → ledger.

Per round r: open only if the server's ``ServerAccountant`` says the round's event
``PoissonSampled(q, Gaussian(z))`` keeps the user-level ε within the budget; select every user
independently with probability q (the sampling the accountant assumes); run the cohort on the
backend; aggregate with ``DpFixedClipping`` (clip S, noise z·S, divide by q·N) and
``apply_delta`` with the server learning rate, exactly as ``server_aggregator.service`` does.
The global model is evaluated on held-out real data every ``eval_every`` rounds.
"""

from __future__ import annotations

import json
import math
import resource
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ondevice.dp_math import flat_to_tensors, tensors_to_flat
from ondevice.protocol import DpConfig
from ondevice.randomness import RandomSource, SecureRandomSource, SeededRandomSource
from server_aggregator.accountant import BudgetExceeded, RoundEvent, ServerAccountant
from server_aggregator.aggregation import ClientDelta, DpFixedClipping, apply_delta
from server_aggregator.simulation.backends import CohortBackend, CohortJob, GroupResult
from server_aggregator.simulation.clients import check_simulated, round_masks
from server_aggregator.simulation.cohort_model import CohortModel
from server_aggregator.simulation.plan import federated_plan_row
from server_aggregator.synthetic.classifier_training import majority_floor, metrics_from_predictions

UPDATE_DTYPES = ("float32", "float16")
DEFAULT_LOCAL_DP = DpConfig(
    clip_norm=1.0, noise_multiplier=0.0, sampling_rate=0.5, local_steps=1, learning_rate=0.1, train_rank=1
)
"""Each simulated device: one SGD step (lr 0.1) on ~half its texts, per-example clip 1, LoRA rank 1 + head
(9,986 parameters sent), no example-level noise: the guarantee is user-level, from the server's noise."""


@dataclass(frozen=True)
class SimulationConfig:
    """A simulated deployment. ``epsilon`` is the user-level budget the accountant enforces; z is
    ``noise_multiplier`` when given, else calibrated so that all ``rounds`` fit ``epsilon``."""

    num_users: int = 10_000
    expected_cohort: float = 500.0
    rounds: int = 30
    epsilon: float | None = 4.0
    noise_multiplier: float | None = None
    delta: float = 1e-6
    update_clip_norm: float = 0.05
    update_dtype: str = "float32"
    server_learning_rate: float = 1.0
    local: DpConfig = field(default_factory=lambda: DEFAULT_LOCAL_DP)
    eval_every: int = 5
    seed: int = 0
    secure_noise: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.num_users, bool) or not isinstance(self.num_users, int) or self.num_users < 1:
            raise ValueError(f"num_users must be an int >= 1, found {self.num_users!r}")
        if not (isinstance(self.expected_cohort, int | float) and 0 < self.expected_cohort <= self.num_users):
            raise ValueError(
                f"expected_cohort must be in (0, num_users={self.num_users}], found {self.expected_cohort!r}"
            )
        if isinstance(self.rounds, bool) or not isinstance(self.rounds, int) or self.rounds < 1:
            raise ValueError(f"rounds must be an int >= 1, found {self.rounds!r}")
        if self.epsilon is None and self.noise_multiplier is None:
            raise ValueError(
                "give epsilon (z is calibrated to it), noise_multiplier, or both (z fixed, epsilon enforced)"
            )
        if self.epsilon is not None and not (math.isfinite(self.epsilon) and self.epsilon > 0):
            raise ValueError(f"epsilon must be a finite number > 0, found {self.epsilon!r}")
        if self.noise_multiplier is not None and not (
            math.isfinite(self.noise_multiplier) and self.noise_multiplier > 0
        ):
            raise ValueError(f"noise_multiplier must be a finite number > 0, found {self.noise_multiplier!r}")
        if not 0 < self.delta <= 0.1:
            raise ValueError(f"delta must be in (0, 0.1], found {self.delta!r}")
        for name in ("update_clip_norm", "server_learning_rate"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, found {value!r}")
        if self.update_dtype not in UPDATE_DTYPES:
            raise ValueError(f"update_dtype must be one of {list(UPDATE_DTYPES)}, found {self.update_dtype!r}")
        if not isinstance(self.local, DpConfig):
            raise ValueError(f"local must be a DpConfig, found {self.local!r}")
        check_simulated(self.local)
        if isinstance(self.eval_every, bool) or not isinstance(self.eval_every, int) or self.eval_every < 1:
            raise ValueError(f"eval_every must be an int >= 1, found {self.eval_every!r}")

    @property
    def sampling_rate(self) -> float:
        return float(self.expected_cohort) / self.num_users

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["local"] = self.local.to_dict()
        return out


@dataclass(frozen=True)
class HeldOut:
    """Real labelled texts the global model is scored on (never trained on)."""

    name: str
    token_ids: tuple[np.ndarray, ...] = field(repr=False)
    labels: np.ndarray = field(repr=False)


def resolve_noise_multiplier(config: SimulationConfig, num_params: int) -> float:
    """z: given, or the smallest z with PLD ε(q, z, rounds) ≤ ε (the same calibration ``plan`` prints)."""
    if config.noise_multiplier is not None:
        return float(config.noise_multiplier)
    if config.epsilon is None:
        raise ValueError("no noise multiplier and no epsilon to calibrate one from")
    z = federated_plan_row(
        config.num_users,
        config.expected_cohort,
        config.rounds,
        config.epsilon,
        config.delta,
        config.update_clip_norm,
        num_params,
    ).noise_multiplier
    # the server's accountant (its own PLD grid rule) must accept every round: nudge z up if it disagrees
    accountant = ServerAccountant(delta=config.delta, epsilon_budget=config.epsilon)
    events = [RoundEvent(r, config.sampling_rate, z) for r in range(1, config.rounds + 1)]
    while accountant.enforced_epsilon(events) > config.epsilon:
        z *= 1.002
        events = [RoundEvent(r, config.sampling_rate, z) for r in range(1, config.rounds + 1)]
    return z


def evaluate(model: CohortModel, flat: np.ndarray, held_out: HeldOut, pad_id: int, num_labels: int) -> dict[str, Any]:
    """Accuracy, macro-F1 and mean cross-entropy of the parameters ``flat`` [P] on ``held_out``."""
    probs = model.predict_proba(held_out.token_ids, torch.from_numpy(flat), pad_id)  # [N, L]
    metrics = metrics_from_predictions(held_out.labels, probs.argmax(axis=1), num_labels)
    picked = probs.astype(np.float64)[np.arange(len(held_out.labels)), held_out.labels]  # [N]
    metrics["loss"] = float(-np.mean(np.log(np.clip(picked, 1e-30, None))))
    return metrics


def poisson_cohort(num_users: int, rate: float, rng: np.random.Generator) -> np.ndarray:
    """Every user independently with probability ``rate`` (int64 ascending)."""
    return np.flatnonzero(rng.random(num_users) < rate).astype(np.int64)


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def simulate(
    config: SimulationConfig,
    backend: CohortBackend,
    model: CohortModel,
    global_params: dict[str, np.ndarray],
    held_out: Sequence[HeldOut],
    *,
    lora_rank: int,
    pad_id: int,
    num_labels: int,
    on_round: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run the simulated deployment; returns the report (rounds, evaluations, ledger, timings)."""
    specs = model.specs
    shapes = {s.name: tuple(s.shape) for s in specs}
    z = resolve_noise_multiplier(config, model.num_params)
    q = config.sampling_rate
    budget = config.epsilon if config.epsilon is not None else 1e9
    accountant = ServerAccountant(delta=config.delta, epsilon_budget=budget)
    cohort_rng = np.random.default_rng([config.seed, 1])
    server_source: RandomSource = SecureRandomSource() if config.secure_noise else SeededRandomSource(config.seed + 7)
    flat = tensors_to_flat(global_params, specs).astype(np.float32)  # [P]
    trained = round_masks(global_params, specs, lora_rank, config.local)  # [P]
    sent_params = _sent_numel(specs, config.local.train_rank or lora_rank)
    bytes_per_param = 4 if config.update_dtype == "float32" else 2

    def score(round_id: int) -> dict[str, Any]:
        return {"round": round_id, **{h.name: evaluate(model, flat, h, pad_id, num_labels) for h in held_out}}

    evaluations = [score(0)]
    events: list[RoundEvent] = []
    rounds: list[dict[str, Any]] = []
    stopped: str | None = None
    started = time.perf_counter()
    for round_id in range(1, config.rounds + 1):
        event = RoundEvent(round_id, q, z)
        try:
            accountant.check_open(events, event)
        except BudgetExceeded as exc:
            stopped = str(exc)
            break
        tick = time.perf_counter()
        cohort = poisson_cohort(config.num_users, q, cohort_rng)
        job = CohortJob(
            round_id, flat, cohort, config.local, trained, config.update_clip_norm, config.update_dtype, config.seed
        )
        groups: list[GroupResult] = []
        aggregator = DpFixedClipping(
            clip_norm=config.update_clip_norm,
            noise_multiplier=z,
            expected_clients=q * config.num_users,
            random_source=server_source,
        )
        result = aggregator.aggregate(_deltas(backend.run(job), groups, specs), shapes)
        new_params = apply_delta(flat_to_tensors(flat, specs), result.mean_delta, config.server_learning_rate)
        flat = tensors_to_flat(new_params, specs).astype(np.float32)
        events.append(event)
        rows = sum(g.rows for g in groups)
        norms = np.concatenate([g.sent_norms for g in groups]) if groups else np.zeros(0)
        delta_norms = np.concatenate([g.delta_norms for g in groups]) if groups else np.zeros(0)
        record: dict[str, Any] = {
            "round": round_id,
            "cohort": int(cohort.shape[0]),
            "clipped_by_devices": int(np.count_nonzero(delta_norms > config.update_clip_norm)),
            "mean_delta_norm": float(delta_norms.mean()) if delta_norms.size else 0.0,
            "example_gradients": rows,
            "train_loss": sum(g.loss_sum for g in groups) / rows if rows else None,
            "max_sent_norm": float(norms.max()) if norms.size else 0.0,
            "seconds": round(time.perf_counter() - tick, 3),
        }
        rounds.append(record)
        if round_id % config.eval_every == 0 or round_id == config.rounds:
            evaluations.append(score(round_id))
            record["evaluation"] = evaluations[-1]
        if on_round is not None:
            on_round(record)
    wall = time.perf_counter() - started
    if rounds and "evaluation" not in rounds[-1]:
        evaluations.append(score(rounds[-1]["round"]))
    report = accountant.report(events).to_dict() if events else None
    updates = sum(r["cohort"] for r in rounds)
    return {
        "config": config.to_dict(),
        "noise_multiplier": z,
        "sampling_rate": q,
        "trained_params": int(trained.sum()),
        "sent_params_per_update": sent_params,
        "sent_bytes_per_update": sent_params * bytes_per_param,
        "rounds": rounds,
        "evaluations": evaluations,
        "floors": {h.name: majority_floor(h.labels, num_labels) for h in held_out},
        "privacy": report,
        "stopped": stopped,
        "wall_seconds": round(wall, 2),
        "client_updates": updates,
        "client_updates_per_second": updates / wall if wall > 0 else None,
        "peak_rss_mib": round(_peak_rss_mib(), 1),
        "final_parameters": flat,
    }


def _sent_numel(specs: Sequence[Any], train_rank: int) -> int:
    from ondevice.seed_methods import LORA_A, LORA_B

    total = 0
    for spec in specs:
        if spec.name.endswith(LORA_A):
            total += train_rank * spec.shape[1]
        elif spec.name.endswith(LORA_B):
            total += spec.shape[0] * train_rank
        else:
            total += spec.numel
    return total


def _deltas(results: Iterator[GroupResult], seen: list[GroupResult], specs: Sequence[Any]) -> Iterator[ClientDelta]:
    """The groups' uploads as ClientDeltas, one at a time (each group kept in ``seen`` for the report)."""
    for group in results:
        seen.append(group)
        for c in range(group.uploads.shape[0]):
            yield ClientDelta(flat_to_tensors(group.uploads[c], specs))
        # the uploads are merged: keep only the small per-group numbers
        seen[-1] = GroupResult(np.empty((0, 0)), group.sent_norms, group.delta_norms, group.rows, group.loss_sum)


def write_report(report: dict[str, Any], out: Path) -> Path:
    """report.json (without the parameter vector) under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "report.json"
    body = {k: v for k, v in report.items() if k != "final_parameters"}
    path.write_text(json.dumps(body, indent=2, default=float) + "\n")
    return path


@dataclass(frozen=True)
class SimulationInputs:
    """What ``simulate`` needs besides the config and backend, built from folders by ``prepare``."""

    spec: Any  # WorkerSpec
    model: CohortModel
    global_params: dict[str, np.ndarray] = field(repr=False)
    held_out: tuple[HeldOut, ...]
    lora_rank: int
    pad_id: int
    num_labels: int
    population: dict[str, Any]


def prepare(
    classifier_dir: Path,
    data_dir: Path,
    population: Any,
    *,
    seed_fraction: float = 0.5,
    split_seed: int = 0,
    held_out_splits: Sequence[str] = ("test",),
    held_out_limit: int | None = None,
    max_rows: int = 128,
    threads: int = 2,
) -> SimulationInputs:
    """Load the base classifier, tokenize the device pool (train minus synth's seed set) and the held-out
    splits (their first ``held_out_limit`` texts, when given) with the classifier's tokenizer, and build
    the population table."""
    from export.classifier import load_classifier
    from ondevice.data import load_tweeteval
    from ondevice.partition import device_indices
    from ondevice.tokenizer import DeviceTokenizer
    from server_aggregator.simulation.backends import WorkerSpec
    from server_aggregator.simulation.population import build_population

    if not held_out_splits or "train" in held_out_splits:
        raise ValueError(
            f"held-out splits must be a non-empty choice of val and test (train feeds the devices), "
            f"found {list(held_out_splits)}"
        )
    torch.set_num_threads(threads)
    clf = load_classifier(classifier_dir)
    tokenizer = DeviceTokenizer.from_file(Path(classifier_dir) / "tokenizer.json", clf.spec.max_seq_len)
    train = load_tweeteval(data_dir, "train")
    pool = device_indices(len(train.labels), seed_fraction, split_seed)  # [M]
    pool_texts = [train.texts[int(i)] for i in pool]
    pool_labels = np.asarray(train.labels, dtype=np.int64)[pool]
    table = build_population(pool_labels, population)
    spec = WorkerSpec(
        classifier_dir=Path(classifier_dir),
        pool_token_ids=tuple(tokenizer.encode(pool_texts)),
        pool_labels=pool_labels,
        offsets=table.offsets,
        members=table.members,
        max_rows=max_rows,
        threads=threads,
    )
    held = []
    for split in held_out_splits:
        data = load_tweeteval(data_dir, split)
        if held_out_limit is not None:
            data = data.subset(range(min(held_out_limit, len(data))))
        held.append(HeldOut(split, tuple(tokenizer.encode(list(data.texts))), np.asarray(data.labels, np.int64)))
    model = CohortModel(clf)
    return SimulationInputs(
        spec=spec,
        model=model,
        global_params=clf.trainable_state(),
        held_out=tuple(held),
        lora_rank=clf.spec.lora.rank,
        pad_id=tokenizer.pad_id,
        num_labels=len(clf.spec.labels),
        population={**table.to_dict(), "label_alpha": population.label_alpha, "seed_fraction": seed_fraction},
    )
