"""Seeded non-IID partitioning of labelled data into device shards (label and size skew).

Each device k gets a size weight w_k ~ LogNormal(0, size_sigma) (size skew) and, per class
c, a share p_{c,k} ~ Dirichlet(label_alpha) (label skew, Hsu et al. 2019). Class c's examples
are split among devices in proportion to p_{c,k}·w_k. Small ``label_alpha`` → each device
sees few classes; large → near-IID. Every device first gets ``min_size`` examples drawn at
random, so no shard is empty. Shards are disjoint and cover all the given indices.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PartitionConfig:
    """How to split data over ``num_devices`` devices."""

    num_devices: int
    label_alpha: float = 0.5
    size_sigma: float = 1.0
    min_size: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.num_devices, bool) or not isinstance(self.num_devices, int) or self.num_devices < 1:
            raise ValueError(f"num_devices must be an int >= 1, found {self.num_devices!r}")
        if not self.label_alpha > 0 or not np.isfinite(self.label_alpha):
            raise ValueError(f"label_alpha must be a finite number > 0, found {self.label_alpha!r}")
        if not self.size_sigma >= 0 or not np.isfinite(self.size_sigma):
            raise ValueError(f"size_sigma must be a finite number >= 0, found {self.size_sigma!r}")
        if isinstance(self.min_size, bool) or not isinstance(self.min_size, int) or self.min_size < 0:
            raise ValueError(f"min_size must be an int >= 0, found {self.min_size!r}")


def dirichlet_partition(labels: np.ndarray, config: PartitionConfig, rng: np.random.Generator) -> list[np.ndarray]:
    """Split example indices ``0..len(labels)-1`` into ``config.num_devices`` disjoint shards.

    ``labels``: int array [N]. Returns one sorted int64 index array per device.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be a 1-D int array, found dtype {labels.dtype} shape {labels.shape}")
    n, k = len(labels), config.num_devices
    if k * config.min_size > n:
        raise ValueError(
            f"cannot give {k} devices min_size={config.min_size} examples each from {n} examples; "
            "lower num_devices or min_size"
        )
    order = rng.permutation(n)  # [N]
    shards: list[list[int]] = [[] for _ in range(k)]
    seeded = order[: k * config.min_size].reshape(k, config.min_size) if config.min_size else np.empty((k, 0), int)
    for device in range(k):
        shards[device].extend(int(i) for i in seeded[device])
    rest = order[k * config.min_size :]

    weights = rng.lognormal(mean=0.0, sigma=config.size_sigma, size=k) if config.size_sigma > 0 else np.ones(k)
    for cls in np.unique(labels):
        members = rest[labels[rest] == cls]  # this class's remaining indices, already shuffled
        if len(members) == 0:
            continue
        share = rng.dirichlet(np.full(k, config.label_alpha)) * weights  # [K]
        total = share.sum()
        share = share / total if total > 0 else np.full(k, 1.0 / k)
        counts = rng.multinomial(len(members), share)  # [K], sums to len(members)
        start = 0
        for device, count in enumerate(counts):
            shards[device].extend(int(i) for i in members[start : start + count])
            start += count
    return [np.sort(np.asarray(s, dtype=np.int64)) for s in shards]


def central_seed_indices(num_examples: int, fraction: float, seed: int) -> np.ndarray:
    """The train examples of the central seed set (``privtune synth``): the first ⌈fraction·n⌉ of a
    seeded permutation, sorted int64. ``device_indices`` is the complement the fleet's devices share."""
    if isinstance(num_examples, bool) or not isinstance(num_examples, int) or num_examples < 1:
        raise ValueError(f"num_examples must be an int >= 1, found {num_examples!r}")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], found {fraction!r}")
    order = np.random.default_rng(seed).permutation(num_examples)  # [N]
    count = max(1, int(np.ceil(fraction * num_examples)))
    return np.sort(order[:count]).astype(np.int64)


def device_indices(num_examples: int, seed_fraction: float, seed: int) -> np.ndarray:
    """Train examples NOT in the central seed set (sorted int64): the pool device shards come from."""
    central = central_seed_indices(num_examples, seed_fraction, seed)
    return np.setdiff1d(np.arange(num_examples, dtype=np.int64), central)
