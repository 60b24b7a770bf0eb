"""``privtune synth``: private seed data → DP generator → synthetic texts → base classifier + card.

Stages (each resumable: its result is recorded in ``stages/<name>.json`` with a key hashing every
input it depends on; a re-run skips a stage whose key still matches and redoes it otherwise)::

    out/
      seed-set.json                  which train examples form the central seed set (indices hash)
      baseline-real/metrics.json     classifier trained non-privately on the real seed set
      eps-<ε>/generator/             DP-LoRA adapter of the generator (PEFT) + privtune-generator.json
      eps-<ε>/synthetic.jsonl        labelled synthetic texts with their generation settings
      eps-<ε>/classifier/            the base classifier (HF + PEFT) with card.json
      eps-<ε>/baseline-dp/metrics.json   DP-SGD directly on the real seed set at the same ε
      evaluation.json, evaluation.png    the comparison table (and macro-F1 vs ε for a sweep)

The test split is read only for evaluation; nothing trains on it.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from export.classifier import ClassifierSpec, build_classifier
from export.model_store import resolve_encoder
from ondevice.data import DataError, LabelledTexts, load_jsonl, load_labelled
from ondevice.durable import atomic_write_bytes, new_staging_dir, replace_dir
from ondevice.partition import central_seed_indices
from ondevice.protocol import LoraSpec
from ondevice.randomness import RandomSource, make_random_source
from server_aggregator.synthetic.classifier_training import (
    evaluate_classifier,
    train_classifier,
    train_classifier_dp,
)
from server_aggregator.synthetic.config import DpTraining, SynthConfig, default_delta
from server_aggregator.synthetic.dp_sgd import DpSgdPlan, plan_dp_sgd, plan_epsilons, train_dp_sgd
from server_aggregator.synthetic.generator import (
    collate,
    find_generator,
    load_generator,
    load_trained_generator,
    per_example_lm_loss,
    save_generator_adapter,
    tokenize_examples,
)
from server_aggregator.synthetic.sampling import sample_synthetic, write_jsonl

CARD_FILE = "card.json"
CARD_FORMAT = "privtune-synthetic-classifier-card"
Progress = Callable[[str], None]


@dataclass(frozen=True)
class SeedSet:
    train: LabelledTexts
    test: LabelledTexts
    indices_sha256: str
    train_split_size: int


def _json_bytes(value: Any) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=True, default=str) + "\n").encode()


def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def load_seed_set(config: SynthConfig) -> SeedSet:
    """Seed set (train split, possibly a share of it) and the real test split, with clear errors."""
    train_full = load_labelled(config.data, "train", config.label_names, empty="skip")
    try:
        test = load_labelled(config.data, "test", config.label_names, empty="skip")
    except DataError as exc:
        raise DataError(
            f"{exc}\nsynth evaluates on the real test split; point --data at a folder that has one"
        ) from exc
    indices = central_seed_indices(len(train_full), config.seed_fraction, config.split_seed)
    train = train_full.subset([int(i) for i in indices], source=f"{train_full.source}[seed set]")
    counts = train.label_counts()
    missing = [name for name, n in counts.items() if n == 0]
    if missing:
        raise DataError(
            f"{train.source}: label(s) {missing} have no examples in the seed set ({counts}); the generator "
            "cannot learn a label it never sees — use more data or a larger --seed-fraction"
        )
    digest = hashlib.sha256(indices.astype(np.int64).tobytes()).hexdigest()
    return SeedSet(train, test, digest, len(train_full))


class Stages:
    """Records finished stages under ``out/stages`` so an interrupted run resumes."""

    def __init__(self, out_dir: Path, progress: Progress) -> None:
        self.dir = out_dir / "stages"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.progress = progress

    def run(self, name: str, key: str, body: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        record_path = self.dir / f"{name}.json"
        if record_path.is_file():
            record = json.loads(record_path.read_text())
            if record.get("key") == key:
                self.progress(f"{name}: done earlier, reusing")
                return dict(record["result"])
            self.progress(f"{name}: inputs changed since the last run, redoing")
        started = time.monotonic()
        result = body()
        result["wall_seconds"] = round(time.monotonic() - started, 2)
        atomic_write_bytes(record_path, _json_bytes({"key": key, "result": result}))
        return result


def _plan(training: DpTraining, epsilon: float, delta: float, n: int) -> DpSgdPlan:
    return plan_dp_sgd(
        epsilon=epsilon,
        delta=delta,
        num_examples=n,
        expected_batch_size=training.expected_batch_size,
        max_steps=training.max_steps,
        clip_norm=training.clip_norm,
        max_noise_multiplier=training.max_noise_multiplier,
    )


def _random_source(config: SynthConfig, salt: int) -> RandomSource:
    if config.random_source == "secure":
        return make_random_source("secure")
    return make_random_source("seeded", config.seed * 1000 + salt)


def _new_classifier(config: SynthConfig, labels: tuple[str, ...]) -> Any:
    spec = ClassifierSpec(
        labels=labels, lora=LoraSpec(rank=config.preset.lora_rank, alpha=config.preset.lora_alpha), max_seq_len=128
    )
    return build_classifier(config.encoder, spec, seed=config.seed)


@dataclass(frozen=True)
class EpsilonPlans:
    """Everything planned for one target ε, computed once before any training."""

    epsilon: float
    delta: float
    generator: DpSgdPlan
    dp_baseline: DpSgdPlan | None


def resolve_delta(config: SynthConfig, n: int) -> float:
    """δ for ``n`` seed examples: the configured one, or the default; refused above 1/(10·n)."""
    delta = config.delta if config.delta is not None else default_delta(n)
    if delta > 1.0 / (10 * n):
        raise ValueError(f"delta={delta:g} is above 1/(10·n) = {1.0 / (10 * n):.3g} for the {n} seed examples")
    return delta


def plan_epsilon(config: SynthConfig, n: int, epsilon: float) -> EpsilonPlans:
    """The generator's (and the DP-SGD baseline's) plan for ``epsilon``; raises if it cannot be met."""
    delta = resolve_delta(config, n)
    return EpsilonPlans(
        epsilon=epsilon,
        delta=delta,
        generator=_plan(config.preset.generator, epsilon, delta, n),
        dp_baseline=_plan(config.preset.dp_classifier, epsilon, delta, n) if config.baselines else None,
    )


def _train_generator(
    config: SynthConfig, seed_set: SeedSet, plan: DpSgdPlan, run_dir: Path, progress: Progress
) -> dict[str, Any]:
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    gen = load_generator(
        config.generator, rank=config.preset.lora_rank, alpha=config.preset.lora_alpha, seed=config.seed
    )
    examples = tokenize_examples(gen.tokenizer, seed_set.train, config.preset.generator_max_seq_len)

    def loss(model: torch.nn.Module, indices: Sequence[int]) -> torch.Tensor:
        return per_example_lm_loss(model, collate(examples, indices))

    def on_step(step: int, value: float, size: int) -> None:
        progress(f"generator DP step {step + 1}/{plan.steps}: batch {size}, loss {value:.3f}")

    result = train_dp_sgd(
        gen.model,
        gen.trainable_parameters(),
        loss,
        plan,
        learning_rate=config.preset.generator.learning_rate,
        random_source=_random_source(config, 1),
        on_step=on_step,
    )
    epsilons = plan_epsilons(plan)
    target = run_dir / "generator"
    staging = new_staging_dir(target)
    save_generator_adapter(gen, staging, {"dp": plan.to_dict(), "epsilon": epsilons})
    replace_dir(staging, target)
    return {
        "plan": plan.to_dict(),
        "epsilon": epsilons,
        "losses": list(result.losses),
        "batch_sizes": list(result.batch_sizes),
    }


def run_epsilon(
    config: SynthConfig, seed_set: SeedSet, plans: EpsilonPlans, stages: Stages, progress: Progress
) -> dict[str, Any]:
    """Every ε-dependent stage for one planned target ε; returns the row of the comparison table."""
    epsilon, delta, plan = plans.epsilon, plans.delta, plans.generator
    run_dir = config.out_dir / f"eps-{epsilon:g}"
    run_dir.mkdir(parents=True, exist_ok=True)
    preset = config.preset
    data_key = (seed_set.indices_sha256, config.data, seed_set.train.label_names)
    gen_key = _key(
        "generator",
        data_key,
        preset.generator.to_dict(),
        preset.generator_max_seq_len,
        preset.lora_rank,
        preset.lora_alpha,
        epsilon,
        delta,
        config.generator,
        config.seed,
        config.random_source,
    )
    generator = stages.run(
        f"eps-{epsilon:g}-generator", gen_key, lambda: _train_generator(config, seed_set, plan, run_dir, progress)
    )

    synth_key = _key("synthetic", gen_key, preset.sampling.to_dict())

    def sample() -> dict[str, Any]:
        gen = load_trained_generator(run_dir / "generator", config.generator)
        data, report = sample_synthetic(
            gen,
            seed_set.train.label_names,
            preset.sampling,
            progress=lambda label, kept, want: progress(f"sampling '{label}': {kept}/{want}"),
        )
        write_jsonl(run_dir / "synthetic.jsonl", data, preset.sampling)
        return report.to_dict()

    sampling = stages.run(f"eps-{epsilon:g}-synthetic", synth_key, sample)

    clf_key = _key("classifier", synth_key, preset.classifier.to_dict(), config.encoder, config.seed)

    def train_on_synthetic() -> dict[str, Any]:
        synthetic = load_jsonl(run_dir / "synthetic.jsonl", seed_set.train.label_names)
        clf = _new_classifier(config, seed_set.train.label_names)
        losses = train_classifier(
            clf,
            synthetic,
            preset.classifier,
            on_step=lambda s, n, v: progress(f"classifier on synthetic: step {s + 1}/{n}, loss {v:.3f}"),
        )
        progress("evaluating the synthetic-data classifier on the real test split")
        metrics = evaluate_classifier(clf, seed_set.test)
        target = run_dir / "classifier"
        staging = new_staging_dir(target)
        clf.save(staging)
        replace_dir(staging, target)
        return {"metrics": metrics, "losses": losses, "synthetic_examples": len(synthetic)}

    classifier = stages.run(f"eps-{epsilon:g}-classifier", clf_key, train_on_synthetic)

    dp_baseline: dict[str, Any] | None = None
    if plans.dp_baseline is not None:
        dp_plan = plans.dp_baseline
        dp_key = _key(
            "baseline-dp",
            data_key,
            preset.dp_classifier.to_dict(),
            epsilon,
            delta,
            config.encoder,
            config.seed,
            config.random_source,
        )

        def train_dp_baseline() -> dict[str, Any]:
            clf = _new_classifier(config, seed_set.train.label_names)
            result = train_classifier_dp(
                clf,
                seed_set.train,
                dp_plan,
                learning_rate=preset.dp_classifier.learning_rate,
                random_source=_random_source(config, 2),
                on_step=lambda s, v, b: progress(f"DP-SGD on real data: step {s + 1}/{dp_plan.steps}, batch {b}"),
            )
            progress("evaluating the DP-SGD baseline on the real test split")
            return {
                "metrics": evaluate_classifier(clf, seed_set.test),
                "plan": dp_plan.to_dict(),
                "epsilon": plan_epsilons(dp_plan),
                "losses": list(result.losses),
            }

        dp_baseline = stages.run(f"eps-{epsilon:g}-baseline-dp", dp_key, train_dp_baseline)

    card = build_card(config, seed_set, epsilon, delta, generator, sampling, classifier, dp_baseline)
    atomic_write_bytes(run_dir / "classifier" / CARD_FILE, _json_bytes(card))
    return {
        "target_epsilon": epsilon,
        "delta": delta,
        "generator_epsilon_pld": generator["epsilon"]["pld"],
        "generator_epsilon_rdp": generator["epsilon"]["rdp"],
        "synthetic": classifier["metrics"],
        "dp_sgd_real": None if dp_baseline is None else dp_baseline["metrics"],
        "dp_sgd_real_epsilon_pld": None if dp_baseline is None else dp_baseline["epsilon"]["pld"],
        "classifier_dir": str(run_dir / "classifier"),
        "wall_seconds": {
            "generator": generator["wall_seconds"],
            "sampling": sampling["wall_seconds"],
            "classifier": classifier["wall_seconds"],
            "dp_sgd_real": None if dp_baseline is None else dp_baseline["wall_seconds"],
        },
    }


def build_card(
    config: SynthConfig,
    seed_set: SeedSet,
    epsilon: float,
    delta: float,
    generator: dict[str, Any],
    sampling: dict[str, Any],
    classifier: dict[str, Any],
    dp_baseline: dict[str, Any] | None,
) -> dict[str, Any]:
    """The model card: the generator stage's (ε, δ) with the accountant's inputs, data, settings, metrics."""
    plan = generator["plan"]
    return {
        "format": CARD_FORMAT,
        "format_version": 1,
        "privacy": {
            "guarantee": "example-level (ε, δ)-DP of the central seed set, from the generator's DP-SGD; "
            "sampling and classifier training are post-processing",
            "neighbouring_relation": "add/remove one example",
            "epsilon": generator["epsilon"]["pld"],
            "epsilon_rdp": generator["epsilon"]["rdp"],
            "target_epsilon": epsilon,
            "delta": delta,
            "accountant": "PLD (dp_accounting), RDP cross-check",
            "accountant_inputs": {
                "sampling": "poisson",
                "sampling_rate": plan["sampling_rate"],
                "noise_multiplier": plan["noise_multiplier"],
                "steps": plan["steps"],
                "clip_norm": plan["clip_norm"],
                "expected_batch_size": plan["expected_batch_size"],
            },
            "noise_source": "OS CSPRNG (os.urandom), Box-Muller"
            if config.random_source == "secure"
            else "SEEDED PRNG (tests only: not private against an attacker who knows the seed)",
        },
        "data": {
            "source": config.data,
            "seed_examples": len(seed_set.train),
            "seed_label_counts": seed_set.train.label_counts(),
            "train_split_size": seed_set.train_split_size,
            "seed_fraction": config.seed_fraction,
            "seed_indices_sha256": seed_set.indices_sha256,
            "test_examples": len(seed_set.test),
            "synthetic_examples": classifier["synthetic_examples"],
            "synthetic_per_label": sampling["kept"],
        },
        "generation": config.preset.sampling.to_dict(),
        "generator": {
            "model": config.generator or "SmolLM2-135M-Instruct (packaged)",
            "lora_rank": config.preset.lora_rank,
            "targets": ["q_proj", "v_proj"],
            "learning_rate": config.preset.generator.learning_rate,
        },
        "classifier_training": config.preset.classifier.to_dict(),
        "preset": config.preset.name,
        "preset_note": config.preset.note,
        "metrics": {"real_test": classifier["metrics"]},
        "baseline_dp_sgd_real": None
        if dp_baseline is None
        else {"metrics": dp_baseline["metrics"], "epsilon": dp_baseline["epsilon"]},
    }


def run_real_baseline(config: SynthConfig, seed_set: SeedSet, stages: Stages, progress: Progress) -> dict[str, Any]:
    """The non-private reference: the same classifier trained on the real seed set (ε = ∞)."""
    preset = config.preset
    key = _key(
        "baseline-real",
        seed_set.indices_sha256,
        config.data,
        preset.real_classifier.to_dict(),
        config.encoder,
        config.seed,
        preset.lora_rank,
    )

    def body() -> dict[str, Any]:
        clf = _new_classifier(config, seed_set.train.label_names)
        settings = preset.real_classifier
        train_classifier(
            clf,
            seed_set.train,
            settings,
            on_step=lambda s, n, v: progress(f"classifier on real data (non-private): step {s + 1}/{n}"),
        )
        progress("evaluating the non-private baseline on the real test split")
        metrics = evaluate_classifier(clf, seed_set.test)
        out = config.out_dir / "baseline-real"
        out.mkdir(exist_ok=True)
        atomic_write_bytes(out / "metrics.json", _json_bytes(metrics))
        return {"metrics": metrics, "training": settings.to_dict()}

    return stages.run("baseline-real", key, body)


def run_synth(config: SynthConfig, progress: Progress | None = None) -> dict[str, Any]:
    """Every stage for every ε in ``config.epsilons``; writes and returns the evaluation table."""
    say = progress or (lambda message: None)
    seed_set = load_seed_set(config)
    find_generator(config.generator)  # missing models fail now, not after minutes of training
    resolve_encoder(config.encoder)
    config.out_dir.mkdir(parents=True, exist_ok=True)
    # Plan every ε before any training so a budget that is too small fails fast, with the numbers.
    plans = [plan_epsilon(config, len(seed_set.train), epsilon) for epsilon in config.epsilons]
    atomic_write_bytes(
        config.out_dir / "seed-set.json",
        _json_bytes(
            {
                "data": config.data,
                "fraction": config.seed_fraction,
                "split_seed": config.split_seed,
                "indices_sha256": seed_set.indices_sha256,
                "examples": len(seed_set.train),
            }
        ),
    )
    stages = Stages(config.out_dir, say)
    real = run_real_baseline(config, seed_set, stages, say) if config.baselines else None
    rows = [run_epsilon(config, seed_set, planned, stages, say) for planned in plans]
    table = {
        "preset": config.preset.name,
        "preset_note": config.preset.note,
        "data": config.data,
        "seed_examples": len(seed_set.train),
        "test_examples": len(seed_set.test),
        "non_private_real": None if real is None else real["metrics"],
        "rows": rows,
    }
    atomic_write_bytes(config.out_dir / "evaluation.json", _json_bytes(table))
    write_plot(table, config.out_dir / "evaluation.png")
    return table


def write_plot(table: dict[str, Any], path: Path) -> None:
    """macro-F1 on the real test split vs ε: synthetic-data classifier, DP-SGD on real, non-private line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(table["rows"], key=lambda r: r["target_epsilon"])
    eps = [r["generator_epsilon_pld"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(eps, [r["synthetic"]["macro_f1"] for r in rows], "o-", label="trained on DP synthetic text")
    dp_rows = [r for r in rows if r["dp_sgd_real"] is not None]
    if dp_rows:
        ax.plot(
            [r["dp_sgd_real_epsilon_pld"] for r in dp_rows],
            [r["dp_sgd_real"]["macro_f1"] for r in dp_rows],
            "s--",
            label="DP-SGD on real text",
        )
    if table["non_private_real"] is not None:
        ax.axhline(table["non_private_real"]["macro_f1"], color="grey", linestyle=":", label="non-private, real text")
    ax.set_xlabel("ε (PLD, δ as in the table)")
    ax.set_ylabel("macro-F1, real test split")
    ax.set_title(f"privtune synth ({table['preset']} preset)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def load_card(classifier_dir: Path) -> dict[str, Any]:
    """The card of a synthetic-data classifier (raises FileNotFoundError naming the folder)."""
    path = Path(classifier_dir) / CARD_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{classifier_dir} has no {CARD_FILE}; it was not made by `privtune synth`")
    card: dict[str, Any] = json.loads(path.read_text())
    return card
