"""Non-IID partitioner: disjoint cover, seeding, and skew that responds to its knobs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ondevice.data import load_tweeteval
from ondevice.partition import PartitionConfig, dirichlet_partition


@pytest.fixture(scope="module")
def labels(offensive_dir: Path) -> np.ndarray:
    return np.asarray(load_tweeteval(offensive_dir, "train").labels)


def test_shards_are_disjoint_cover_everything_and_respect_min_size(labels: np.ndarray) -> None:
    shards = dirichlet_partition(labels, PartitionConfig(50, label_alpha=0.3, min_size=20), np.random.default_rng(1))
    assert len(shards) == 50
    joined = np.concatenate(shards)
    assert len(joined) == len(labels)
    assert len(np.unique(joined)) == len(labels)
    assert min(len(s) for s in shards) >= 20
    assert all(np.all(np.diff(s) > 0) for s in shards)


def test_same_seed_same_shards_other_seed_other_shards(labels: np.ndarray) -> None:
    config = PartitionConfig(20)
    a = dirichlet_partition(labels, config, np.random.default_rng(7))
    b = dirichlet_partition(labels, config, np.random.default_rng(7))
    c = dirichlet_partition(labels, config, np.random.default_rng(8))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def _label_skew(labels: np.ndarray, shards: list[np.ndarray]) -> float:
    """Mean total-variation distance between each shard's label mix and the global mix."""
    global_mix = np.bincount(labels, minlength=2) / len(labels)
    distances = [0.5 * np.abs(np.bincount(labels[s], minlength=2) / len(s) - global_mix).sum() for s in shards]
    return float(np.mean(distances))


def test_small_alpha_skews_labels_large_alpha_is_near_iid(labels: np.ndarray) -> None:
    skewed = dirichlet_partition(
        labels, PartitionConfig(30, label_alpha=0.1, size_sigma=0.0, min_size=10), np.random.default_rng(3)
    )
    iid = dirichlet_partition(
        labels, PartitionConfig(30, label_alpha=1000.0, size_sigma=0.0, min_size=10), np.random.default_rng(3)
    )
    assert _label_skew(labels, skewed) > 0.2
    assert _label_skew(labels, iid) < 0.05


def test_size_sigma_controls_size_skew(labels: np.ndarray) -> None:
    def size_cv(sigma: float) -> float:
        shards = dirichlet_partition(
            labels, PartitionConfig(40, label_alpha=1000.0, size_sigma=sigma), np.random.default_rng(5)
        )
        sizes = np.array([len(s) for s in shards])
        return float(sizes.std() / sizes.mean())

    assert size_cv(0.0) < 0.1
    assert size_cv(1.5) > 0.8


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_devices": 0}, "num_devices"),
        ({"num_devices": 3, "label_alpha": 0.0}, "label_alpha"),
        ({"num_devices": 3, "size_sigma": -1.0}, "size_sigma"),
        ({"num_devices": 3, "min_size": -1}, "min_size"),
    ],
)
def test_config_rejects_bad_values(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PartitionConfig(**kwargs)  # type: ignore[arg-type]


def test_too_many_devices_for_min_size_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot give 5 devices min_size=3"):
        dirichlet_partition(np.zeros(10, dtype=int), PartitionConfig(5, min_size=3), np.random.default_rng(0))
    with pytest.raises(ValueError, match="1-D int array"):
        dirichlet_partition(np.zeros(10), PartitionConfig(2), np.random.default_rng(0))
