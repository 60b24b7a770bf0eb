"""``privtune synth``: private seed data → DP generator → synthetic texts → base classifier + card.

Stages (each resumable: its result is recorded in ``stages/<name>.json`` with a key hashing every
input it depends on; a re-run skips a stage whose key still matches and redoes it otherwise)::

    out/
      seed-set.json                  which train examples form the central seed set (indices hash)
      baseline-real/metrics.json     classifier trained non-privately on the real seed set
      eps-<ε>/generator/             DP-LoRA adapter of the generator (PEFT) + privtune-generator.json
      eps-<ε>/synthetic.jsonl        labelled synthetic texts with their generation settings
      eps-<ε>/classifier/            the base classifier (HF + PEFT) with card.json
      eps-<ε>/synthetic-relabelled/  trained on the synthetic texts labelled by a DP probe (full)
      eps-<ε>/baseline-dp/metrics.json   DP-SGD directly on the real seed set at the same ε
      evaluation.json, evaluation.png    the comparison table (and macro-F1 vs ε for a sweep)

The test split is read only for evaluation; nothing trains on it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from export.classifier import ClassifierSpec, build_classifier, load_classifier
from export.model_store import resolve_encoder
from ondevice.accounting import StepEvent
from ondevice.data import DataError, LabelledTexts, load_jsonl, load_labelled
from ondevice.durable import atomic_write_bytes, new_staging_dir, replace_dir
from ondevice.partition import central_seed_indices
from ondevice.protocol import LoraSpec
from ondevice.randomness import RandomSource, make_random_source
from server_aggregator.synthetic.classifier_training import (
    evaluate_classifier,
    majority_floor,
    metrics_from_predictions,
    train_classifier,
    train_classifier_dp,
)
from server_aggregator.synthetic.config import DpTraining, SynthConfig, default_delta
from server_aggregator.synthetic.dp_sgd import (
    Checkpointing,
    DpSgdPlan,
    PerExampleLoss,
    draw_poisson_batches,
    plan_dp_sgd,
    plan_epsilons,
    train_dp_sgd,
)
from server_aggregator.synthetic.generator import (
    TokenizedExamples,
    collate,
    find_generator,
    load_generator,
    load_trained_generator,
    per_example_lm_loss,
    save_generator_adapter,
    tokenize_examples,
)
from server_aggregator.synthetic.generator_cache import prepare_cached_training
from server_aggregator.synthetic.probe import embed_texts, head_state, install_head, predict
from server_aggregator.synthetic.recipes import ProbeRelease, build_card, train_probe_release
from server_aggregator.synthetic.releases import Release, calibrate_last, ledger_dict
from server_aggregator.synthetic.sampling import sample_synthetic, write_jsonl

CARD_FILE = "card.json"
FEATURES_FILE = "features.npz"
Progress = Callable[[str], None]


@dataclass(frozen=True)
class SeedSet:
    train: LabelledTexts
    test: LabelledTexts
    indices_sha256: str
    train_split_size: int
    val: LabelledTexts | None = None
    """The validation split, when the data has one (evaluation only, like the test split)."""


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
    return SeedSet(train, test, digest, len(train_full), _load_val(config))


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
        max_steps=training.steps_for(n),
        clip_norm=training.clip_norm,
        max_noise_multiplier=training.max_noise_multiplier,
    )


def _random_source(config: SynthConfig, salt: int) -> RandomSource:
    if config.random_source == "secure":
        return make_random_source("secure")
    return make_random_source("seeded", config.seed * 1000 + salt)


def _noise_source(config: SynthConfig) -> str:
    if config.random_source == "secure":
        return "OS CSPRNG (os.urandom), Box-Muller"
    return "SEEDED PRNG (tests only: not private against an attacker who knows the seed)"


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
    """The generator's plan (at its share of ε) and the DP-SGD LoRA baseline's; raises if they cannot be met."""
    delta = resolve_delta(config, n)
    preset = config.preset
    dp_baseline = None
    if config.baselines and preset.dp_classifier is not None:
        dp_baseline = _plan(preset.dp_classifier, epsilon, delta, n)
    return EpsilonPlans(
        epsilon=epsilon,
        delta=delta,
        generator=_plan(preset.generator, epsilon * preset.generator_share, delta, n),
        dp_baseline=dp_baseline,
    )


def _checkpointing(path: Path) -> Checkpointing:
    return Checkpointing(path, every=5)


def _generator_batches(plan: DpSgdPlan, path: Path, random_source: RandomSource) -> list[np.ndarray]:
    """The generator's Poisson batches, drawn once and kept (secret, like the data) so a resumed run
    trains on the same batches its cache was built for."""
    if path.is_file():
        with np.load(path) as saved:
            if json.loads(str(saved["plan"])) == plan.to_dict():
                return [saved[f"b{i}"] for i in range(plan.steps)]
    batches = draw_poisson_batches(plan, random_source)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(path.name + ".partial.npz")
    np.savez(staging, plan=json.dumps(plan.to_dict()), **{f"b{i}": b for i, b in enumerate(batches)})  # type: ignore[arg-type]
    os.replace(staging, path)
    return batches


def _train_generator(
    config: SynthConfig, seed_set: SeedSet, plan: DpSgdPlan, run_dir: Path, progress: Progress
) -> dict[str, Any]:
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    preset = config.preset
    top = preset.generator_top_layers
    gen = load_generator(config.generator, rank=preset.lora_rank, alpha=preset.lora_alpha, seed=config.seed,
                         top_layers=top)  # fmt: skip
    examples = tokenize_examples(gen.tokenizer, seed_set.train, preset.generator_max_seq_len)
    source = _random_source(config, 1)
    checkpoints = run_dir / "checkpoints"

    def on_step(step: int, value: float, size: int) -> None:
        progress(f"generator DP step {step + 1}/{plan.steps}: batch {size}, loss {value:.3f}")

    cached: dict[str, Any] = {}
    loss: PerExampleLoss
    if top is None:
        model, params, batches = gen.model, gen.trainable_parameters(), None

        def full_model_loss(m: torch.nn.Module, indices: Sequence[int]) -> torch.Tensor:
            return per_example_lm_loss(m, collate(examples, indices))

        loss = full_model_loss
        lengths = [len(ids) for ids in examples.ids]
    else:
        # Only examples some Poisson batch holds are ever read: cache those, renumbered 0..m-1.
        drawn = _generator_batches(plan, checkpoints / "generator-batches.npz", source)
        union = np.unique(np.concatenate([np.zeros(0, dtype=np.int64), *drawn]))  # [m]
        subset = TokenizedExamples(
            tuple(examples.ids[i] for i in union), tuple(examples.prompt_lengths[i] for i in union), examples.pad_id
        )
        training = prepare_cached_training(
            gen, subset, top, cache_path=checkpoints / "generator-cache.pt",
            progress=lambda done, total: progress(f"caching the frozen generator layers: {done}/{total} examples"),
        )  # fmt: skip
        model, params, loss = training.model, training.parameters, training.per_example_loss
        batches = [np.searchsorted(union, b) for b in drawn]
        lengths = [len(ids) for ids in subset.ids]
        cached = {"top_layers": top, "cached_examples": len(union), "cache_bytes": training.cache.nbytes}

    result = train_dp_sgd(
        model, params, loss, plan, learning_rate=preset.generator.learning_rate, random_source=source,
        on_step=on_step, micro_batch_size=preset.generator.micro_batch_size, sort_key=lambda i: lengths[i],
        checkpointing=_checkpointing(checkpoints / "generator.pt"), batches=batches,
        optimizer=preset.generator.optimizer, lr_schedule=preset.generator.lr_schedule,
    )  # fmt: skip
    release = Release.from_plan("generator", "DP-SGD of the generator's LoRA (prefix-LM loss)", plan)
    target = run_dir / "generator"
    staging = new_staging_dir(target)
    save_generator_adapter(gen, staging, {"dp": plan.to_dict(), "epsilon": plan_epsilons(plan)})
    replace_dir(staging, target)
    return {
        "plan": plan.to_dict(),
        "epsilon": plan_epsilons(plan),
        "release": release.to_dict(),
        "losses": list(result.losses),
        "batch_sizes": list(result.batch_sizes),
        "layer_cache": cached,
    }


def _release_from_dict(record: dict[str, Any]) -> Release:
    return Release(
        name=record["name"],
        description=record["description"],
        steps=tuple(StepEvent(s["sampling_rate"], s["noise_multiplier"], s["count"]) for s in record["steps"]),
        clip_norm=record["clip_norm"],
        expected_batch_size=record["expected_batch_size"],
    )


# ------------------------------------------------------------------ features (frozen encoder embeddings)


@dataclass(frozen=True)
class Features:
    """Embeddings [N, H] of the seed set, the test split and (if the data has one) the validation split."""

    train: np.ndarray
    test: np.ndarray
    val: np.ndarray | None


def _load_val(config: SynthConfig) -> LabelledTexts | None:
    try:
        return load_labelled(config.data, "val", config.label_names, empty="skip")
    except (DataError, FileNotFoundError):
        return None


def _embed_all(clf: Any, seed_set: SeedSet, val: LabelledTexts | None, progress: Progress, what: str) -> Features:
    progress(f"embedding the seed set ({len(seed_set.train)} texts) through the {what}")
    train = embed_texts(clf, list(seed_set.train.texts))
    progress(f"embedding the test split through the {what}")
    test = embed_texts(clf, list(seed_set.test.texts))
    return Features(train, test, None if val is None else embed_texts(clf, list(val.texts)))


def _save_features(path: Path, features: Features) -> None:
    arrays = {"train": features.train, "test": features.test}
    if features.val is not None:
        arrays["val"] = features.val
    staging = path.with_name(path.name + ".partial.npz")
    np.savez(staging, **arrays)  # type: ignore[arg-type]
    os.replace(staging, path)


def _read_features(path: Path) -> Features:
    with np.load(path) as data:
        return Features(data["train"], data["test"], data.get("val", None))


def _probe_metrics(
    weight: np.ndarray, bias: np.ndarray, features: Features, seed_set: SeedSet, val: LabelledTexts | None
) -> dict[str, Any]:
    k = len(seed_set.train.label_names)
    metrics = {
        "real_test": metrics_from_predictions(np.asarray(seed_set.test.labels), predict(weight, bias, features.test), k)
    }
    if val is not None and features.val is not None:
        metrics["real_val"] = metrics_from_predictions(np.asarray(val.labels), predict(weight, bias, features.val), k)
    return metrics


def _seed_data(config: SynthConfig, seed_set: SeedSet) -> dict[str, Any]:
    return {
        "source": config.data,
        "seed_examples": len(seed_set.train),
        "train_split_size": seed_set.train_split_size,
        "seed_fraction": config.seed_fraction,
        "seed_indices_sha256": seed_set.indices_sha256,
        "test_examples": len(seed_set.test),
    }


def _save_classifier(clf: Any, target: Path, card: dict[str, Any]) -> None:
    staging = new_staging_dir(target)
    clf.save(staging)
    atomic_write_bytes(staging / CARD_FILE, _json_bytes(card))
    replace_dir(staging, target)


def _row(
    model: str, label: str, card_or_none: dict[str, Any] | None, metrics: dict[str, Any], **extra: Any
) -> dict[str, Any]:
    privacy = None if card_or_none is None else card_or_none["privacy"]
    return {
        "model": model,
        "label": label,
        "epsilon_pld": None if privacy is None else privacy["epsilon"],
        "epsilon_rdp": None if privacy is None else privacy["epsilon_rdp"],
        "releases": [] if privacy is None else [r["name"] for r in privacy["ledger"]["releases"]],
        "test": metrics["real_test"],
        "val": metrics.get("real_val"),
        **extra,
    }


def _lp_ft_probe(
    config: SynthConfig, seed_set: SeedSet, probe_epsilon: float, delta: float, progress: Progress
) -> dict[str, Any]:
    """The LP-FT baseline's first stage: a DP probe at ``probe_epsilon``, kept (head + releases) so a resumed
    run reuses this release instead of making a second one."""
    features = _read_features(config.out_dir / FEATURES_FILE)
    labels = seed_set.train.label_names
    clf = _new_classifier(config, labels)
    recipe = config.preset.probe
    trained = train_probe_release(
        features.train,
        np.asarray(seed_set.train.labels),
        len(labels),
        recipe,
        prior=(),
        total_epsilon=probe_epsilon,
        delta=delta,
        init=head_state(clf),
        random_source=_random_source(config, 5),
        on_step=lambda s, v, b: progress(f"LP-FT probe step {s + 1}/{recipe.steps}: batch {b}"),
    )
    weight, bias = trained.result.weight, trained.result.bias
    return {
        "weight": np.asarray(weight).tolist(),
        "bias": np.asarray(bias).tolist(),
        "releases": [r.to_dict() for r in trained.releases],
        "metrics": _probe_metrics(weight, bias, features, seed_set, seed_set.val),
    }


# ------------------------------------------------------------------ one target ε


def run_epsilon(
    config: SynthConfig, seed_set: SeedSet, plans: EpsilonPlans, stages: Stages, progress: Progress
) -> dict[str, Any]:
    """Every ε-dependent model for one planned target ε; returns its rows and the releases it made."""
    epsilon, delta, plan = plans.epsilon, plans.delta, plans.generator
    run_dir = config.out_dir / f"eps-{epsilon:g}"
    run_dir.mkdir(parents=True, exist_ok=True)
    preset = config.preset
    val = seed_set.val
    labels = seed_set.train.label_names
    data_key = (seed_set.indices_sha256, config.data, labels)
    noise = _noise_source(config)
    seed_data = _seed_data(config, seed_set)
    rows: list[dict[str, Any]] = []
    run_releases: list[Release] = []

    def probe_head(
        clf: Any, features: Features, prior: tuple[Release, ...], salt: int, what: str
    ) -> tuple[ProbeRelease, dict[str, Any]]:
        """DP-train ``clf``'s head on ``features`` (composed with ``prior`` to ε), install it, evaluate it."""
        trained = train_probe_release(
            features.train,
            np.asarray(seed_set.train.labels),
            len(labels),
            preset.probe,
            prior=prior,
            total_epsilon=epsilon,
            delta=delta,
            init=head_state(clf),
            random_source=_random_source(config, salt),
            on_step=lambda s, v, b: progress(f"{what} step {s + 1}/{preset.probe.steps}: batch {b}"),
        )
        install_head(clf, trained.result.weight, trained.result.bias)
        return trained, _probe_metrics(trained.result.weight, trained.result.bias, features, seed_set, val)

    # 1. the DP linear probe on frozen MiniLM embeddings of the real seed set (the whole ε)
    probe_key = _key(
        "probe", data_key, preset.probe.to_dict(), epsilon, delta, config.encoder, config.seed, config.random_source
    )

    def train_probe() -> dict[str, Any]:
        features = _read_features(config.out_dir / FEATURES_FILE)
        clf = _new_classifier(config, labels)
        trained, metrics = probe_head(clf, features, (), 3, "DP probe")
        card = build_card(
            model="probe",
            description="DP linear probe: MiniLM frozen (LoRA B = 0), head trained with DP-SGD",
            releases=trained.releases,
            delta=delta,
            target_epsilon=epsilon,
            noise_source=noise,
            data=seed_data,
            metrics=metrics,
            settings={"probe": preset.probe.to_dict(), "class_weights": trained.class_weights},
        )
        _save_classifier(clf, run_dir / "probe", card)
        return {"card": card}

    probe = stages.run(f"eps-{epsilon:g}-probe", probe_key, train_probe)
    rows.append(_row("probe", "DP linear probe (frozen MiniLM), real data", probe["card"], probe["card"]["metrics"]))
    run_releases += [_release_from_dict(r) for r in probe["card"]["privacy"]["ledger"]["releases"]]

    # 2. the DP generator (at its share of ε) → synthetic text → classifier on synthetic text only
    gen_key = _key(
        "generator",
        data_key,
        preset.generator.to_dict(),
        preset.generator_max_seq_len,
        preset.generator_top_layers,
        preset.lora_rank,
        preset.lora_alpha,
        epsilon,
        preset.generator_share,
        delta,
        config.generator,
        config.seed,
        config.random_source,
    )
    generator = stages.run(
        f"eps-{epsilon:g}-generator", gen_key, lambda: _train_generator(config, seed_set, plan, run_dir, progress)
    )
    generator_release = _release_from_dict(generator["release"])
    run_releases.append(generator_release)
    synth_key = _key("synthetic", gen_key, preset.sampling.to_dict())

    def sample() -> dict[str, Any]:
        gen = load_trained_generator(run_dir / "generator", config.generator)
        data, report = sample_synthetic(
            gen,
            labels,
            preset.sampling,
            progress=lambda label, kept, want: progress(f"sampling '{label}': {kept}/{want}"),
        )
        write_jsonl(run_dir / "synthetic.jsonl", data, preset.sampling)
        return report.to_dict()

    sampling = stages.run(f"eps-{epsilon:g}-synthetic", synth_key, sample)
    clf_key = _key("classifier", synth_key, preset.classifier.to_dict(), config.encoder, config.seed)

    def fit_and_evaluate(texts: LabelledTexts, what: str) -> tuple[Any, list[float], dict[str, Any]]:
        """A fresh classifier trained (non-privately) on ``texts``, evaluated on the real test and val splits."""
        clf = _new_classifier(config, labels)
        losses = train_classifier(
            clf,
            texts,
            preset.classifier,
            on_step=lambda s, n, v: progress(f"classifier on {what}: step {s + 1}/{n}, loss {v:.3f}"),
        )
        progress(f"evaluating the classifier on {what} on the real test split")
        metrics = {"real_test": evaluate_classifier(clf, seed_set.test)}
        if val is not None:
            metrics["real_val"] = evaluate_classifier(clf, val)
        return clf, losses, metrics

    def train_on_synthetic() -> dict[str, Any]:
        synthetic = load_jsonl(run_dir / "synthetic.jsonl", labels)
        clf, losses, metrics = fit_and_evaluate(synthetic, "synthetic text")
        card = build_card(
            model="synthetic",
            description="LoRA + head trained (non-privately) on DP synthetic text only",
            releases=[generator_release],
            delta=delta,
            target_epsilon=epsilon * preset.generator_share,
            noise_source=noise,
            data={**seed_data, "synthetic_examples": len(synthetic), "synthetic_per_label": sampling["kept"]},
            metrics=metrics,
            settings={
                "generation": preset.sampling.to_dict(),
                "classifier_training": preset.classifier.to_dict(),
                "generator": {
                    "model": config.generator or "SmolLM2-135M-Instruct (packaged)",
                    "lora_rank": preset.lora_rank,
                    "learning_rate": preset.generator.learning_rate,
                    "plan": generator["plan"],
                },
            },
        )
        _save_classifier(clf, run_dir / "synthetic-classifier", card)
        return {"card": card, "losses": losses, "synthetic_examples": len(synthetic)}

    synthetic = stages.run(f"eps-{epsilon:g}-classifier", clf_key, train_on_synthetic)
    rows.append(_row("synthetic", "trained on DP synthetic text only", synthetic["card"], synthetic["card"]["metrics"]))
    wall = {
        "probe": probe["wall_seconds"],
        "generator": generator["wall_seconds"],
        "sampling": sampling["wall_seconds"],
        "classifier": synthetic["wall_seconds"],
    }

    # 2b. a DP label filter: the same synthetic texts, each labelled by a DP probe of the real seed set
    if preset.relabel_synthetic:
        relabel_key = _key("relabelled", clf_key, probe_key)

        def train_on_relabelled() -> dict[str, Any]:
            features = _read_features(config.out_dir / FEATURES_FILE)
            labeller = _new_classifier(config, labels)  # LoRA B = 0: the frozen encoder the features came from
            trained, labeller_metrics = probe_head(labeller, features, (generator_release,), 6, "labelling DP probe")
            prompted = load_jsonl(run_dir / "synthetic.jsonl", labels)
            progress(f"labelling {len(prompted)} synthetic texts with the DP probe")
            weight, bias = trained.result.weight, trained.result.bias
            assigned = predict(weight, bias, embed_texts(labeller, list(prompted.texts)))  # [n_synthetic]
            relabelled = replace(
                prompted, labels=tuple(int(v) for v in assigned), source=f"{prompted.source} [DP-probe labels]"
            )
            agreement = float(np.mean(assigned == np.asarray(prompted.labels)))
            assigned_counts = {name: int(np.sum(assigned == i)) for i, name in enumerate(labels)}
            clf, losses, metrics = fit_and_evaluate(relabelled, "relabelled synthetic text")
            card = build_card(
                model="synthetic_relabelled",
                description="LoRA + head trained (non-privately) on DP synthetic text only, each text labelled by "
                "a DP linear probe of the real seed set (frozen MiniLM) instead of its prompt's label",
                releases=trained.releases,
                delta=delta,
                target_epsilon=epsilon,
                noise_source=noise,
                data={
                    **seed_data,
                    "synthetic_examples": len(prompted),
                    "labels_assigned": assigned_counts,
                    "agreement_with_prompted_label": agreement,
                },
                metrics=metrics,
                settings={
                    "probe": preset.probe.to_dict(),
                    "class_weights": trained.class_weights,
                    "classifier_training": preset.classifier.to_dict(),
                    "generator_share": preset.generator_share,
                    "labelling_probe_metrics": labeller_metrics,
                },
            )
            _save_classifier(clf, run_dir / "synthetic-relabelled", card)
            return {
                "card": card,
                "losses": losses,
                "labelling_probe": {"weight": np.asarray(weight).tolist(), "bias": np.asarray(bias).tolist()},
            }

        relabelled_stage = stages.run(f"eps-{epsilon:g}-relabelled", relabel_key, train_on_relabelled)
        relabelled_card = relabelled_stage["card"]
        label = "DP synthetic text, DP-probe labels"
        rows.append(_row("synthetic_relabelled", label, relabelled_card, relabelled_card["metrics"]))
        run_releases += [_release_from_dict(r) for r in relabelled_card["privacy"]["ledger"]["releases"][1:]]
        wall["relabelled"] = relabelled_stage["wall_seconds"]

    # 3. synthetic warm start + DP probe of its head on the real seed set, composed to ε
    warm_key = _key("warm-start", clf_key, probe_key)

    def warm_start() -> dict[str, Any]:
        clf = load_classifier(run_dir / "synthetic-classifier", encoder=config.encoder)
        features = _embed_all(clf, seed_set, val, progress, "synthetic-data classifier's encoder")
        trained, metrics = probe_head(clf, features, (generator_release,), 4, "warm-start DP probe")
        card = build_card(
            model="warm_start",
            description="the synthetic-data classifier (encoder LoRA + head), then its head DP-fine-tuned on the "
            "real seed set (DP probe through that encoder)",
            releases=trained.releases,
            delta=delta,
            target_epsilon=epsilon,
            noise_source=noise,
            data=seed_data,
            metrics=metrics,
            settings={
                "probe": preset.probe.to_dict(),
                "class_weights": trained.class_weights,
                "generator_share": preset.generator_share,
            },
        )
        _save_classifier(clf, run_dir / "warm-start", card)
        return {"card": card}

    warm = stages.run(f"eps-{epsilon:g}-warm-start", warm_key, warm_start)
    rows.append(
        _row("warm_start", "synthetic warm start + DP probe on real data", warm["card"], warm["card"]["metrics"])
    )
    run_releases += [_release_from_dict(r) for r in warm["card"]["privacy"]["ledger"]["releases"][1:]]

    # 4. DP-SGD of LoRA + head directly on the real seed set (the tuned baseline), optionally LP-FT
    if plans.dp_baseline is not None and preset.dp_classifier is not None:
        dp_plan, dp_settings = plans.dp_baseline, preset.dp_classifier
        dp_key = _key(
            "baseline-dp",
            data_key,
            dp_settings.to_dict(),
            epsilon,
            delta,
            config.encoder,
            config.seed,
            config.random_source,
        )
        lp_probe: dict[str, Any] | None = None
        if dp_settings.probe_share > 0:
            lp_probe = stages.run(
                f"eps-{epsilon:g}-baseline-dp-probe",
                _key("baseline-dp-probe", dp_key, preset.probe.to_dict()),
                lambda: _lp_ft_probe(config, seed_set, epsilon * dp_settings.probe_share, delta, progress),
            )
            dp_key = _key(dp_key, preset.probe.to_dict())

        def train_dp_baseline() -> dict[str, Any]:
            clf = _new_classifier(config, labels)
            prior: tuple[Release, ...] = ()
            plan = dp_plan
            if lp_probe is not None:
                install_head(clf, np.asarray(lp_probe["weight"]), np.asarray(lp_probe["bias"]))
                prior = tuple(_release_from_dict(r) for r in lp_probe["releases"])
                plan = calibrate_last(
                    prior,
                    total_epsilon=epsilon,
                    delta=delta,
                    num_examples=len(seed_set.train),
                    expected_batch_size=dp_plan.expected_batch_size,
                    steps=dp_plan.steps,
                    clip_norm=dp_settings.clip_norm,
                )
            result = train_classifier_dp(
                clf,
                seed_set.train,
                plan,
                learning_rate=dp_settings.learning_rate,
                random_source=_random_source(config, 2),
                on_step=lambda s, v, b: progress(f"DP-SGD LoRA on real data: step {s + 1}/{plan.steps}, batch {b}"),
                micro_batch_size=dp_settings.micro_batch_size,
                checkpointing=_checkpointing(run_dir / "checkpoints" / "baseline-dp.pt"),
                top_layers=dp_settings.top_layers,
                optimizer=dp_settings.optimizer,
                lr_schedule=dp_settings.lr_schedule,
                train_head=dp_settings.train_head,
            )
            progress("evaluating the DP-SGD baseline on the real test split")
            metrics = {"real_test": evaluate_classifier(clf, seed_set.test)}
            if val is not None:
                metrics["real_val"] = evaluate_classifier(clf, val)
            release = Release.from_plan("dp-sgd-lora", "DP-SGD of LoRA + head on the real seed set", plan)
            card = build_card(
                model="dp_sgd_lora",
                description="LoRA + head trained with DP-SGD on the real seed set"
                + ("" if lp_probe is None else ", starting from a DP linear probe head (LP-FT)")
                + ("" if dp_settings.train_head else "; the head kept fixed"),
                releases=[*prior, release],
                delta=delta,
                target_epsilon=epsilon,
                noise_source=noise,
                data=seed_data,
                metrics=metrics,
                settings={
                    "dp_classifier": dp_settings.to_dict(),
                    "plan": plan.to_dict(),
                    **({} if lp_probe is None else {"lp_ft_probe_metrics": lp_probe["metrics"]}),
                },
            )
            _save_classifier(clf, run_dir / "dp-sgd-lora", card)
            return {"card": card, "losses": list(result.losses)}

        dp_baseline = stages.run(f"eps-{epsilon:g}-baseline-dp", dp_key, train_dp_baseline)
        rows.append(
            _row("dp_sgd_lora", "DP-SGD LoRA + head, real data", dp_baseline["card"], dp_baseline["card"]["metrics"])
        )
        run_releases += [_release_from_dict(r) for r in dp_baseline["card"]["privacy"]["ledger"]["releases"]]

    shipped = {"probe": "probe", "warm_start": "warm-start", "synthetic": "synthetic-classifier"}[preset.ship]
    staging = new_staging_dir(run_dir / "classifier")
    staging.rmdir()
    shutil.copytree(run_dir / shipped, staging)
    replace_dir(staging, run_dir / "classifier")
    return {
        "target_epsilon": epsilon,
        "delta": delta,
        "shipped": preset.ship,
        "classifier_dir": str(run_dir / "classifier"),
        "rows": rows,
        "releases": [r.to_dict() for r in run_releases],
        "wall_seconds": {**wall, "warm_start": warm["wall_seconds"]},
    }


# ------------------------------------------------------------------ run-level stages (no ε of their own)


def run_features(config: SynthConfig, seed_set: SeedSet, stages: Stages, progress: Progress) -> None:
    """Frozen MiniLM embeddings of the seed set, test and validation splits, computed once per run."""
    key = _key("features", seed_set.indices_sha256, config.data, config.encoder, seed_set.train.label_names)

    def body() -> dict[str, Any]:
        clf = _new_classifier(config, seed_set.train.label_names)  # LoRA B = 0: the frozen encoder
        features = _embed_all(clf, seed_set, seed_set.val, progress, "frozen encoder")
        _save_features(config.out_dir / FEATURES_FILE, features)
        return {"examples": {"train": len(features.train), "test": len(features.test)}}

    stages.run("features", key, body)


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
        metrics = {"real_test": evaluate_classifier(clf, seed_set.test)}
        val = seed_set.val
        if val is not None:
            metrics["real_val"] = evaluate_classifier(clf, val)
        out = config.out_dir / "baseline-real"
        out.mkdir(exist_ok=True)
        atomic_write_bytes(out / "metrics.json", _json_bytes(metrics))
        return {"metrics": metrics, "training": settings.to_dict()}

    return stages.run("baseline-real", key, body)


def run_control(config: SynthConfig, seed_set: SeedSet, stages: Stages, progress: Progress) -> dict[str, Any]:
    """The no-private-data control: the classifier trained on samples of the UN-fine-tuned generator."""
    preset = config.preset
    labels = seed_set.train.label_names
    key = _key(
        "control",
        config.generator,
        preset.sampling.to_dict(),
        preset.classifier.to_dict(),
        config.encoder,
        config.seed,
        labels,
        config.data,
    )

    def body() -> dict[str, Any]:
        gen = load_generator(config.generator, rank=preset.lora_rank, alpha=preset.lora_alpha, seed=config.seed)
        data, report = sample_synthetic(
            gen,
            labels,
            preset.sampling,
            progress=lambda label, kept, want: progress(f"control sampling '{label}': {kept}/{want}"),
        )
        out = config.out_dir / "control"
        out.mkdir(exist_ok=True)
        write_jsonl(out / "synthetic.jsonl", data, preset.sampling)
        texts = load_jsonl(out / "synthetic.jsonl", labels)
        clf = _new_classifier(config, labels)
        train_classifier(
            clf,
            texts,
            preset.classifier,
            on_step=lambda s, n, v: progress(f"control classifier: step {s + 1}/{n}, loss {v:.3f}"),
        )
        metrics = {"real_test": evaluate_classifier(clf, seed_set.test)}
        val = seed_set.val
        if val is not None:
            metrics["real_val"] = evaluate_classifier(clf, val)
        return {"metrics": metrics, "sampling": report.to_dict()}

    return stages.run("control", key, body)


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
    run_features(config, seed_set, stages, say)
    real = run_real_baseline(config, seed_set, stages, say) if config.baselines else None
    control = run_control(config, seed_set, stages, say) if config.baselines and config.preset.control else None
    results = [run_epsilon(config, seed_set, planned, stages, say) for planned in plans]
    k = len(seed_set.train.label_names)
    floor = {"real_test": majority_floor(np.asarray(seed_set.test.labels), k)}
    val = seed_set.val
    if val is not None:
        floor["real_val"] = majority_floor(np.asarray(val.labels), k)
    common = [_row("majority_floor", "always the majority label (no model)", None, floor)]
    if control is not None:
        common.append(_row("control", "no private data: un-fine-tuned generator's samples", None, control["metrics"]))
    if real is not None:
        common.append(_row("non_private", "non-private LoRA + head, real data", None, real["metrics"]))
    delta = plans[0].delta
    all_releases = [_release_from_dict(r) for result in results for r in result["releases"]]
    table = {
        "preset": config.preset.name,
        "preset_note": config.preset.note,
        "data": config.data,
        "seed_examples": len(seed_set.train),
        "test_examples": len(seed_set.test),
        "delta": delta,
        "common_rows": common,
        "epsilons": results,
        "run_ledger": {
            "note": "every DP release this run made on the seed set (all ε, all private baselines): they compose, "
            "so this is what the whole run spent; each model's card states its own releases",
            **ledger_dict(all_releases, delta),
        },
    }
    atomic_write_bytes(config.out_dir / "evaluation.json", _json_bytes(table))
    write_plot(table, config.out_dir / "evaluation.png")
    return table


def write_plot(table: dict[str, Any], path: Path) -> None:
    """macro-F1 on the real test split vs ε for every private model, with the floor and references as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    by_model: dict[str, list[tuple[float, float]]] = {}
    labels: dict[str, str] = {}
    for result in table["epsilons"]:
        for row in result["rows"]:
            by_model.setdefault(row["model"], []).append((row["epsilon_pld"], row["test"]["macro_f1"]))
            labels[row["model"]] = row["label"]
    for model, points in by_model.items():
        points.sort()
        ax.plot([p[0] for p in points], [p[1] for p in points], "o-", label=labels[model])
    styles = {"majority_floor": ("red", "--"), "control": ("purple", "-."), "non_private": ("grey", ":")}
    for row in table["common_rows"]:
        color, style = styles.get(row["model"], ("black", ":"))
        ax.axhline(row["test"]["macro_f1"], color=color, linestyle=style, label=row["label"])
    ax.set_xlabel(f"ε (PLD, δ = {table['delta']:g}), each model's composed releases")
    ax.set_ylabel("macro-F1, real test split")
    ax.set_title(f"privtune synth ({table['preset']} preset)")
    ax.legend(fontsize=7)
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
