"""Each emulated phone's private data: a non-IID shard of the train examples NOT in synth's central
seed set (seeded Dirichlet label skew + log-normal size skew). The test split is never sharded."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ondevice.data import DataError, LabelledTexts
from ondevice.partition import PartitionConfig, device_indices, dirichlet_partition


def device_shard_indices(
    labels: Sequence[int], partition: PartitionConfig, *, seed_fraction: float, split_seed: int, seed: int
) -> list[np.ndarray]:
    """Indices into the train split (sorted int64, one array per device): disjoint from each other and
    from the central seed set ``privtune synth --seed-fraction seed_fraction`` took with ``split_seed``."""
    pool = device_indices(len(labels), seed_fraction, split_seed)  # [M]
    need = partition.num_devices * max(1, partition.min_size)
    if len(pool) < need:
        raise DataError(
            f"only {len(pool)} train examples lie outside the central seed set (seed fraction {seed_fraction}); "
            f"{partition.num_devices} devices need at least {need} — lower the seed fraction or the device count"
        )
    pool_labels = np.asarray(labels, dtype=np.int64)[pool]  # [M]
    shards = dirichlet_partition(pool_labels, partition, np.random.default_rng(seed))
    return [pool[shard] for shard in shards]


def device_shards(
    train: LabelledTexts, partition: PartitionConfig, *, seed_fraction: float, split_seed: int, seed: int
) -> list[LabelledTexts]:
    """The shards of ``device_shard_indices`` as labelled texts."""
    try:
        indices = device_shard_indices(
            train.labels, partition, seed_fraction=seed_fraction, split_seed=split_seed, seed=seed
        )
    except DataError as exc:
        raise DataError(f"{train.source}: {exc}") from exc
    return [
        train.subset([int(i) for i in shard], source=f"{train.source}[device {k}]") for k, shard in enumerate(indices)
    ]
