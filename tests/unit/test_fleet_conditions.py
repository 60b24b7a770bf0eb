"""The fleet's per-device, per-round conditions and device shards (pure, seeded)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from ondevice.data import DataError, load_tweeteval
from ondevice.partition import PartitionConfig, central_seed_indices
from privtune.fleet.conditions import ADVERSARY_KINDS, FleetConditions, device_round
from privtune.fleet.shards import device_shard_indices, device_shards


def _rate(flags: list[bool]) -> float:
    return sum(flags) / len(flags)


def _within(rate: float, p: float, n: int) -> bool:
    """|rate − p| within 5 binomial standard deviations (false alarm ~6e-7 per check)."""
    return abs(rate - p) <= 5 * math.sqrt(p * (1 - p) / n) + 1e-12


def test_rates_match_the_configured_odds() -> None:
    c = FleetConditions(availability=0.6, dropout=0.2, straggler=0.3, network_fault=0.25, max_network_faults=50)
    fates = [device_round(c, d, r, local_steps=5) for d in range(200) for r in range(50)]  # 10,000
    assert _within(_rate([f.available for f in fates]), 0.6, len(fates))
    trainers = [f for f in fates if f.available]
    assert _within(_rate([f.drops_after_step is not None for f in trainers]), 0.2, len(trainers))
    finishers = [f for f in trainers if f.drops_after_step is None]
    assert _within(_rate([f.straggles for f in finishers]), 0.3, len(finishers))
    steps = [f.drops_after_step for f in trainers if f.drops_after_step is not None]
    assert set(steps) == {0, 1, 2, 3, 4}  # killed before the first step up to before the last
    # Faults per upload: geometric with p = 0.25 → mean 0.25 / 0.75.
    mean_faults = float(np.mean([len(f.network_faults) for f in fates]))
    assert abs(mean_faults - 1 / 3) < 0.05
    assert {x for f in fates for x in f.network_faults} == {"timeout", "reset"}


def test_fates_are_reproducible_and_independent_of_other_devices() -> None:
    c = FleetConditions(seed=7)
    assert device_round(c, 3, 2, 4) == device_round(c, 3, 2, 4)
    assert device_round(FleetConditions(seed=7, adversaries=("nan",)), 3, 2, 4) == device_round(c, 3, 2, 4)
    others = [device_round(FleetConditions(seed=8), 3, r, 4) for r in range(20)]
    assert others != [device_round(c, 3, r, 4) for r in range(20)]


def test_adversaries_always_show_up_and_never_drop_or_straggle() -> None:
    kinds = ADVERSARY_KINDS
    c = FleetConditions(availability=0.0, dropout=1.0, straggler=1.0, adversaries=kinds)
    for r in range(5):
        for d, kind in enumerate(kinds):
            fate = device_round(c, d, r, 3)
            assert fate.adversary == kind and fate.available
            assert fate.drops_after_step is None and not fate.straggles
        honest = device_round(c, len(kinds), r, 3)
        assert honest.adversary is None and not honest.available


def test_no_faults_when_the_network_is_perfect_and_the_cap_holds() -> None:
    assert all(not device_round(FleetConditions(network_fault=0.0), d, 0, 2).network_faults for d in range(100))
    capped = FleetConditions(network_fault=1.0, max_network_faults=3)
    assert all(len(device_round(capped, d, 0, 2).network_faults) == 3 for d in range(20))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"availability": 1.5}, r"availability must be a probability in \[0, 1\], found 1.5"),
        ({"dropout": -0.1}, "dropout must be a probability"),
        ({"network_fault": math.nan}, "network_fault must be a probability"),
        ({"max_network_faults": -1}, "max_network_faults must be an int >= 0, found -1"),
        ({"adversaries": ("nan", "ddos")}, r"found unknown \['ddos'\]"),
        ({"seed": -3}, "seed must be an int >= 0, found -3"),
    ],
)
def test_conditions_validation_names_the_bad_value(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FleetConditions(**kwargs)  # type: ignore[arg-type]


def test_device_round_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError, match="local_steps must be an int >= 1, found 0"):
        device_round(FleetConditions(), 0, 0, 0)
    with pytest.raises(ValueError, match="device_index must be an int >= 0"):
        device_round(FleetConditions(), -1, 0, 1)


def test_device_shards_are_disjoint_from_the_seed_set_and_each_other(offensive_dir: Path) -> None:
    train = load_tweeteval(offensive_dir, "train", empty="skip")
    config = PartitionConfig(num_devices=50)
    shards = device_shard_indices(train.labels, config, seed_fraction=0.5, split_seed=0, seed=1)
    central = central_seed_indices(len(train), 0.5, 0)
    everything = np.concatenate([central, *shards])
    assert np.array_equal(np.sort(everything), np.arange(len(train)))  # disjoint, and together the whole split
    assert all(len(s) >= 1 for s in shards)
    sizes = sorted(len(s) for s in shards)
    assert sizes[-1] > 3 * sizes[len(sizes) // 2]  # size skew: the largest shard dwarfs the median one
    offensive = [float(np.mean(np.asarray(train.labels)[s])) for s in shards if len(s) >= 20]
    assert max(offensive) - min(offensive) > 0.3  # label skew (pooled rate ~0.33)
    texts = device_shards(train, config, seed_fraction=0.5, split_seed=0, seed=1)
    assert [t.texts for t in texts] == [tuple(train.texts[i] for i in s) for s in shards]
    again = device_shard_indices(train.labels, config, seed_fraction=0.5, split_seed=0, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(again, shards, strict=True))


def test_device_shards_refuse_when_the_seed_set_takes_everything(offensive_dir: Path) -> None:
    train = load_tweeteval(offensive_dir, "val", empty="skip")
    with pytest.raises(DataError, match="lie outside the central seed set"):
        device_shards(train, PartitionConfig(num_devices=10), seed_fraction=1.0, split_seed=0, seed=0)


def test_unknown_adversary_kind_is_refused() -> None:
    from privtune.fleet.adversary import attack_requests

    with pytest.raises(ValueError, match="unknown adversary kind 'ddos'"):
        attack_requests("ddos", None, b"k" * 32, 1.0)  # type: ignore[arg-type]
