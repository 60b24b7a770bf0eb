"""Golden equivalence: the simulator's vectorized client is the phone's client.

The same clients (same texts, same per-(round, step) noise and sampling stream) run through
``ondevice.LocalTrainer`` on ORT and on ExecuTorch, one device at a time, and through the
simulator's ``run_local_steps`` all at once; final local parameters and the uploaded (clipped,
rank-sliced) tensors must agree within 1e-5.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch

from ondevice.accounting import LocalPrivacyLedger
from ondevice.data import LabelledTexts, load_tweeteval
from ondevice.dp_math import tensors_to_flat
from ondevice.protocol import ArtifactManifest, DpConfig, RoundConfig
from ondevice.randomness import SeededRandomSource
from ondevice.tokenizer import DeviceTokenizer
from ondevice.trainer import LocalTrainer
from ondevice.update import build_update
from server_aggregator.simulation.backends import client_seed
from server_aggregator.simulation.clients import ClientExamples, client_update, round_masks, run_local_steps
from server_aggregator.simulation.cohort_model import CohortModel, pad_rows

pytestmark = pytest.mark.slow

SEED = 11
ROUND = 3
USERS = (5, 42, 977)  # user ids: they pick the noise streams
SIZES = (5, 3, 7)


@pytest.fixture(scope="module")
def model(classifier_dir: Path) -> CohortModel:
    from export.classifier import load_classifier

    torch.set_num_threads(2)
    return CohortModel(load_classifier(classifier_dir))


@pytest.fixture(scope="module")
def devices(offensive_dir: Path) -> list[LabelledTexts]:
    data = load_tweeteval(offensive_dir, "val")
    out, start = [], 0
    for size in SIZES:
        out.append(data.subset(range(start, start + size)))
        start += size
    return out


def _round(manifest: ArtifactManifest, dp: DpConfig) -> RoundConfig:
    return RoundConfig(
        round_id=ROUND,
        manifest_hash=manifest.manifest_hash(),
        global_adapter_version=0,
        dp=dp,
        update_clip_norm=0.05,
        deadline_unix=time.time() + 3600,
    )


def _median_norm(model: CohortModel, clients: list[ClientExamples], flat: np.ndarray) -> float:
    """A clip norm that clips some examples and not others (so a wrong clip rule shows)."""
    ids, mask = pad_rows(list(clients[0].token_ids), pad_id=0)
    rows = torch.from_numpy(flat)[None].expand(len(clients[0].token_ids), -1)
    grads, _ = model.per_example_gradients(ids, mask, torch.from_numpy(clients[0].labels), rows)
    return float(torch.linalg.vector_norm(grads.double(), dim=1).median())


CASES = {
    "sgd-full-rank": {"optimizer": "sgd", "learning_rate": 0.05, "train_rank": None},
    "adamw-rank-2": {"optimizer": "adamw", "learning_rate": 1e-3, "train_rank": 2},
    "sgd-class-weighted": {"optimizer": "sgd", "learning_rate": 0.05, "train_rank": None, "class_weights": (0.3, 0.9)},
}


class VectorizedClientContract:
    runtime: str

    @pytest.mark.parametrize("case", sorted(CASES))
    def test_vectorized_clients_equal_the_devices_local_trainer(
        self,
        case: str,
        bundle_dir: Path,
        classifier_dir: Path,
        manifest: ArtifactManifest,
        global_params: dict[str, np.ndarray],
        model: CohortModel,
        devices: list[LabelledTexts],
        tmp_path: Path,
    ) -> None:
        tokenizer = DeviceTokenizer.from_file(classifier_dir / "tokenizer.json", manifest.max_seq_len)
        device_tokenizer = DeviceTokenizer.from_bundle(bundle_dir, manifest)
        clients = []
        for data in devices:
            ids = tokenizer.encode(list(data.texts))
            assert all(
                np.array_equal(a, b) for a, b in zip(ids, device_tokenizer.encode(list(data.texts)), strict=True)
            )
            clients.append(ClientExamples(tuple(ids), np.asarray(data.labels, np.int64)))
        specs = manifest.trainable
        flat = tensors_to_flat(global_params, specs).astype(np.float32)
        clip = _median_norm(model, clients, flat)
        dp = DpConfig(
            clip_norm=clip,
            noise_multiplier=0.8,
            sampling_rate=0.6,
            local_steps=3,
            local_epsilon_budget=1e6,
            **CASES[case],  # type: ignore[arg-type]
        )
        round_config = _round(manifest, dp)
        trained = round_masks(global_params, specs, manifest.lora.rank, dp)
        steps = run_local_steps(
            model,
            flat,
            clients,
            dp,
            trained,
            lambda c, step: SeededRandomSource(client_seed(SEED, USERS[c], ROUND, step)),
        )
        assert sum(steps.rows_per_step) > 0
        for c, (user, data) in enumerate(zip(USERS, devices, strict=True)):
            state = tmp_path / f"{self.runtime}-{case}-{user}"
            trainer = LocalTrainer(
                bundle_dir,
                manifest,
                data,
                state,
                LocalPrivacyLedger(state / "ledger.json", delta=1e-5),
                lambda round_id, step, user=user: SeededRandomSource(client_seed(SEED, user, round_id, step)),
                runtime=self.runtime,
                threads=2,
                checkpoint_every=100,
            )
            result = trainer.run_round(round_config, global_params)
            device_flat = tensors_to_flat(result.parameters, specs)
            moved = float(np.max(np.abs(device_flat - flat)))
            worst = float(np.max(np.abs(steps.parameters[c] - device_flat)))
            assert moved > 1e-3, f"client {c} did not move ({moved:.3g}): the comparison would be vacuous"
            assert worst <= 1e-5, f"{self.runtime}/{case} client {c}: |vectorized − device| = {worst:.3g}"
            sent = build_update(round_config, f"u{user}", global_params, result.parameters, 1.0, 1e-5).tensors
            simulated = client_update(
                flat,
                steps.parameters[c],
                specs,
                train_rank=dp.train_rank,
                update_clip_norm=0.05,
                update_dtype="float32",
            )
            assert set(sent) == set(simulated)
            worst_sent = max(float(np.max(np.abs(sent[k].astype(np.float64) - simulated[k]))) for k in sent)
            assert worst_sent <= 1e-5, f"{self.runtime}/{case} client {c}: uploads differ by {worst_sent:.3g}"


class TestOrtClients(VectorizedClientContract):
    runtime = "ort"


class TestExecuTorchClients(VectorizedClientContract):
    runtime = "executorch"
