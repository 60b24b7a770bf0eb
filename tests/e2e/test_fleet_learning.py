"""With DP on at both levels, a small fleet's global model gets better on held-out tweets.

Settings (stated, as the issue asks): 8 phones, q = 1 (every enrolled phone is selected), 3 rounds;
central DP-FedAvg noise z = 0.1 on S = 1, which the server's ledger prices at a user-level
ε ≈ 231 (PLD, δ = 1e-6): with 8 devices a useful signal needs so little noise that the user-level
guarantee is nominal. z = 0.3 (ε ≈ 43) was tried first and did not learn (loss 0.7062 → 0.7068).
Local DP-SGD: σ = 1, q = 0.5, C = 1, 4 steps of SGD lr 0.5 per round (each phone's example-level
ε after 3 rounds ≈ 11.8 at δ = 1e-5, under the round's local budget of 30; at the default budget
of 8 phones refuse the second round). Measured: held-out loss 0.7062 → 0.6542, accuracy 0.517 →
0.633 — at this scale most of the gain is the class prior (macro-F1 does not rise), which is
still information learned from the devices' private data through the whole DP chain. Noise is
seeded here (reproducible, NOT private) so the test is deterministic.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ondevice.data import LabelledTexts, load_tweeteval
from ondevice.protocol import DpConfig
from ondevice.randomness import SeededRandomSource
from privtune.fleet.conditions import FleetConditions
from privtune.fleet.evaluate import device_classifier_with_adapter
from privtune.fleet.runner import FleetConfig, run_fleet
from server_aggregator.service import Aggregator
from tests.server_harness import ADMIN_TOKEN, LiveServer, make_config
from tests.tiny_data import tiny_tweeteval

pytestmark = pytest.mark.slow

LOCAL_DP = DpConfig(
    clip_norm=1.0, noise_multiplier=1.0, sampling_rate=0.5, local_steps=4, learning_rate=0.5, local_epsilon_budget=30.0
)


def held_out_loss_and_accuracy(
    bundle: Path, params: dict[str, np.ndarray], val: LabelledTexts, work: Path
) -> tuple[float, float]:
    probs = device_classifier_with_adapter(bundle, params, work).classify(list(val.texts))  # [N, 2]
    y = np.asarray(val.labels)
    return float(-np.mean(np.log(probs[np.arange(len(y)), y] + 1e-12))), float(np.mean(probs.argmax(1) == y))


def test_the_global_model_improves_over_rounds_with_dp_on(
    tmp_path: Path, bundle_dir: Path, classifier_dir: Path, offensive_dir: Path
) -> None:
    data = tiny_tweeteval(offensive_dir, tmp_path / "data", train=800)
    val = load_tweeteval(offensive_dir, "val").subset(range(300))  # never trained on
    config = make_config(
        tmp_path, bundle_dir, classifier_dir, clients_per_round=8, epsilon_budget=1e4, local_dp=LOCAL_DP,
        noise_multiplier=0.1, update_clip_norm=1.0,
    )  # fmt: skip
    service = Aggregator(config, random_source=SeededRandomSource(2024))
    with LiveServer(service) as server:
        fleet = FleetConfig(
            server_url=server.url, admin_token=ADMIN_TOKEN, bundle_dir=bundle_dir, data=str(data),
            state_root=tmp_path / "fleet", devices=8, rounds=3, workers=2, seed_fraction=0.25, noise_seed=7,
            conditions=FleetConditions(availability=1.0, dropout=0.0, straggler=0.0, network_fault=0.0),
        )  # fmt: skip
        summaries = run_fleet(fleet)
    assert [s["merged_updates"] for s in summaries] == [8, 8, 8]
    before = held_out_loss_and_accuracy(bundle_dir, service.adapter_params(0), val, tmp_path / "v0")
    after = held_out_loss_and_accuracy(bundle_dir, service.adapter_params(3), val, tmp_path / "v3")
    privacy = service.privacy()
    print(f"held-out loss {before[0]:.4f} → {after[0]:.4f}, accuracy {before[1]:.3f} → {after[1]:.3f}, "
          f"user-level ε (PLD) {privacy['epsilon_spent']:.1f}")  # fmt: skip
    assert after[0] < before[0] - 0.02
    assert after[1] > before[1] + 0.05
    assert privacy["rounds"] == 3 and 0 < privacy["epsilon_spent"] < 1e4
    service.close()
