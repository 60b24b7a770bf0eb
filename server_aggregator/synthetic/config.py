"""Settings of the synthetic-data stage: the two presets and the run's own choices."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from server_aggregator.synthetic.classifier_training import ClassifierTraining
from server_aggregator.synthetic.dp_sgd import DEFAULT_MAX_NOISE_MULTIPLIER
from server_aggregator.synthetic.sampling import SamplingSettings


@dataclass(frozen=True)
class DpTraining:
    """A DP-SGD schedule's knobs; σ and the final step count follow from the ε target (``plan_dp_sgd``)."""

    expected_batch_size: int
    max_steps: int
    learning_rate: float
    clip_norm: float = 1.0
    max_noise_multiplier: float = DEFAULT_MAX_NOISE_MULTIPLIER

    def __post_init__(self) -> None:
        if not isinstance(self.expected_batch_size, int) or self.expected_batch_size < 1:
            raise ValueError(f"expected_batch_size must be an int >= 1, found {self.expected_batch_size!r}")
        if not isinstance(self.max_steps, int) or self.max_steps < 1:
            raise ValueError(f"max_steps must be an int >= 1, found {self.max_steps!r}")
        for name in ("learning_rate", "clip_norm", "max_noise_multiplier"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a finite number > 0, found {value!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Preset:
    name: str
    generator: DpTraining
    generator_max_seq_len: int
    sampling: SamplingSettings
    classifier: ClassifierTraining
    real_classifier: ClassifierTraining
    """The non-private reference on the real train split."""
    dp_classifier: DpTraining
    """DP-SGD directly on the real train split, at the same ε."""
    lora_rank: int = 8
    lora_alpha: float = 16.0
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


PRESETS: dict[str, Preset] = {
    "quick": Preset(
        name="quick",
        generator=DpTraining(expected_batch_size=16, max_steps=40, learning_rate=1e-3),
        generator_max_seq_len=48,
        sampling=SamplingSettings(samples_per_label=128, max_new_tokens=40, batch_size=32),
        classifier=ClassifierTraining(epochs=4.0, batch_size=32, learning_rate=1e-3),
        real_classifier=ClassifierTraining(epochs=1.0, batch_size=32, learning_rate=1e-3, max_steps=100),
        dp_classifier=DpTraining(expected_batch_size=64, max_steps=60, learning_rate=5e-4),
        note=(
            "quick: ~40 DP steps of 16 examples for the generator and 256 synthetic texts; fits in about "
            "10 minutes on 2 CPU cores. Its numbers are weak by construction: use --preset full for results."
        ),
    ),
    "full": Preset(
        name="full",
        generator=DpTraining(expected_batch_size=64, max_steps=300, learning_rate=1e-3),
        generator_max_seq_len=64,
        sampling=SamplingSettings(samples_per_label=2000, max_new_tokens=48, batch_size=64),
        classifier=ClassifierTraining(epochs=3.0, batch_size=32, learning_rate=1e-3),
        real_classifier=ClassifierTraining(epochs=2.0, batch_size=32, learning_rate=1e-3),
        dp_classifier=DpTraining(expected_batch_size=256, max_steps=300, learning_rate=5e-4),
        note="full: 300 DP steps of 64 examples for the generator, 4,000 synthetic texts; a few hours on 2 CPU cores.",
    ),
}


def preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; known: {sorted(PRESETS)}") from None


@dataclass(frozen=True)
class SynthConfig:
    """One ``privtune synth`` run (every ε of a sweep shares it)."""

    out_dir: Path
    data: str
    preset: Preset = field(default_factory=lambda: PRESETS["quick"])
    epsilons: tuple[float, ...] = (4.0,)
    delta: float | None = None
    """None → the largest power of ten ≤ 1/(10·n) for the seed set's n."""
    generator: str | None = None
    encoder: str | None = None
    label_names: tuple[str, ...] | None = None
    seed_fraction: float = 1.0
    """Share of the train split used as the central seed set (the rest may be given to devices)."""
    split_seed: int = 0
    seed: int = 0
    random_source: str = "secure"
    baselines: bool = True

    def __post_init__(self) -> None:
        if not self.epsilons:
            raise ValueError("epsilons must name at least one target epsilon")
        for eps in self.epsilons:
            if isinstance(eps, bool) or not isinstance(eps, int | float) or not math.isfinite(eps) or eps <= 0:
                raise ValueError(f"every epsilon must be a finite number > 0, found {eps!r}")
        if len(set(self.epsilons)) != len(self.epsilons):
            raise ValueError(f"epsilons repeat: {self.epsilons}")
        if self.delta is not None and not 0 < self.delta < 1:
            raise ValueError(f"delta must be in (0, 1), found {self.delta!r}")
        if not 0 < self.seed_fraction <= 1:
            raise ValueError(f"seed_fraction must be in (0, 1], found {self.seed_fraction!r}")
        if self.random_source not in ("secure", "seeded"):
            raise ValueError(f"random_source must be 'secure' or 'seeded', found {self.random_source!r}")

    def with_preset_overrides(self, **changes: Any) -> SynthConfig:
        """A copy whose preset has some fields replaced (e.g. ``sampling=...``)."""
        return replace(self, preset=replace(self.preset, **changes))


def default_delta(num_examples: int) -> float:
    """Largest power of ten ≤ 1/(10·n): the usual δ ≪ 1/n rule, rounded to a readable number."""
    return float(10.0 ** math.floor(math.log10(1.0 / (10.0 * num_examples))))
