"""LocalTrainer on the real exported bundle, both runtimes (shared contract class).

Oracles are independent of the code under test: per-example gradients from batch-1 PyTorch
autograd (tests/dp_oracle.py), ε from dp_accounting called directly, noise checked
statistically on the parameters the runtime actually produced.
"""

from __future__ import annotations

import math
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dp_accounting
import numpy as np
import pytest
from safetensors.numpy import load_file
from scipy import stats

from ondevice.accounting import LocalPrivacyLedger, PrivacyBudgetExceeded
from ondevice.data import LabelledTexts, load_tweeteval
from ondevice.dp_math import flat_to_tensors, tensors_to_flat
from ondevice.protocol import ArtifactManifest, DpConfig, RoundConfig
from ondevice.randomness import SecureRandomSource, SeededRandomSource
from ondevice.seed_methods import trainable_masks
from ondevice.tokenizer import DeviceTokenizer
from ondevice.train_backends import make_training_backend
from ondevice.trainer import LocalTrainer, RoundConfigError
from tests.dp_oracle import clipped_noised_sum, per_example_gradients

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]
DELTA = 1e-5


@pytest.fixture(scope="module")
def tweets(offensive_dir: Path) -> LabelledTexts:
    data = load_tweeteval(offensive_dir, "val")
    return data.subset(range(24))


def make_round(manifest: ArtifactManifest, round_id: int = 1, **dp: object) -> RoundConfig:
    settings: dict[str, object] = {
        "clip_norm": 1.0,
        "noise_multiplier": 1.0,
        "sampling_rate": 0.25,
        "local_steps": 3,
        "learning_rate": 0.05,
    }
    settings.update(dp)
    return RoundConfig(
        round_id=round_id,
        manifest_hash=manifest.manifest_hash(),
        global_adapter_version=0,
        dp=DpConfig(**settings),  # type: ignore[arg-type]
        update_clip_norm=1.0,
        deadline_unix=time.time() + 3600,
    )


def seeded_steps(seed: int):  # type: ignore[no-untyped-def]
    """A per-(round, step) seeded source: reproducible across restarts (tests only)."""
    return lambda round_id, step: SeededRandomSource(seed * 1_000_003 + round_id * 10_007 + step)


def independent_epsilon(q: float, sigma: float, steps: int, delta: float) -> float:
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), steps
    )
    accountant = dp_accounting.pld.PLDAccountant(value_discretization_interval=1e-4)
    return float(accountant.compose(event).get_epsilon(delta))


class LocalTrainerContract:
    runtime: str

    def trainer(
        self,
        bundle_dir: Path,
        manifest: ArtifactManifest,
        tweets: LabelledTexts,
        state: Path,
        source: object = None,
        **kwargs: object,
    ) -> LocalTrainer:
        ledger = LocalPrivacyLedger(state / "ledger.json", delta=DELTA)
        return LocalTrainer(
            bundle_dir,
            manifest,
            tweets,
            state,
            ledger,
            source or SecureRandomSource(),  # type: ignore[arg-type]
            runtime=self.runtime,
            threads=2,
            **kwargs,  # type: ignore[arg-type]
        )

    def test_one_private_step_matches_the_pytorch_oracle(
        self,
        bundle_dir: Path,
        manifest: ArtifactManifest,
        global_params: dict[str, np.ndarray],
        tweets: LabelledTexts,
        eager_classifier: object,
    ) -> None:
        texts, labels = list(tweets.texts[:6]), [int(y) for y in tweets.labels[:6]]
        grads = per_example_gradients(eager_classifier, texts, labels)  # type: ignore[arg-type]
        norms = np.array([math.sqrt(sum(float((g * g).sum()) for g in ex.values())) for ex in grads])
        clip = float(np.median(norms))
        assert (norms > clip).any() and (norms < clip).any()
        noise = (0.3 * SeededRandomSource(5).standard_normal(manifest.trainable_numel)).astype(np.float32)
        scale, lr = 0.25, 1.0
        backend = make_training_backend(self.runtime, bundle_dir, manifest, "sgd", lr, threads=2)
        backend.set_parameters(global_params)
        ids = DeviceTokenizer.from_bundle(bundle_dir, manifest).encode(texts)
        backend.private_step(ids, labels, clip, noise, scale)
        after = backend.parameters()
        got = {k: (global_params[k].astype(np.float64) - after[k]) / lr for k in after}
        expected = clipped_noised_sum(grads, clip, flat_to_tensors(noise, manifest.trainable), scale)
        worst = max(float(np.max(np.abs(got[k] - expected[k]))) for k in got)
        assert worst <= 1e-5, f"{self.runtime}: max |gradient − oracle| = {worst:.3g}"

    def test_a_class_weighted_step_matches_the_pytorch_oracle(
        self,
        bundle_dir: Path,
        manifest: ArtifactManifest,
        global_params: dict[str, np.ndarray],
        tweets: LabelledTexts,
        eager_classifier: object,
    ) -> None:
        """w_i multiplies the *clipped* gradient (not the loss), and the noise keeps its scale whichever
        example carries it (ORT puts it on the heaviest one)."""
        texts, labels = list(tweets.texts[:6]), [int(y) for y in tweets.labels[:6]]
        assert len(set(labels)) == 2, "the check needs both labels among the examples"
        grads = per_example_gradients(eager_classifier, texts, labels)  # type: ignore[arg-type]
        norms = np.array([math.sqrt(sum(float((g * g).sum()) for g in ex.values())) for ex in grads])
        clip = float(np.median(norms))
        dp = DpConfig(clip, 1.0, 0.5, 1, 1.0, class_weights=(0.25, 0.7))
        weights = dp.label_weights(np.array(labels))
        assert weights is not None
        noise = (0.3 * SeededRandomSource(6).standard_normal(manifest.trainable_numel)).astype(np.float32)
        backend = make_training_backend(self.runtime, bundle_dir, manifest, "sgd", 1.0, threads=2)
        backend.set_parameters(global_params)
        ids = DeviceTokenizer.from_bundle(bundle_dir, manifest).encode(texts)
        backend.private_step(ids, labels, clip, noise, 0.25, weights)
        after = backend.parameters()
        got = {k: global_params[k].astype(np.float64) - after[k] for k in after}
        noise_tensors = flat_to_tensors(noise, manifest.trainable)
        expected = clipped_noised_sum(grads, clip, noise_tensors, 0.25, [float(w) for w in weights])
        worst = max(float(np.max(np.abs(got[k] - expected[k]))) for k in got)
        assert worst <= 1e-5, f"{self.runtime}: max |weighted gradient − oracle| = {worst:.3g}"
        unweighted = clipped_noised_sum(grads, clip, noise_tensors, 0.25)
        apart = max(float(np.max(np.abs(unweighted[k] - expected[k]))) for k in got)
        assert apart > 1e-3, f"weights 0.25/0.7 barely change the step ({apart:.3g}): the check would be vacuous"

    def test_a_single_clipped_example_moves_the_weights_by_at_most_c(
        self, bundle_dir: Path, manifest: ArtifactManifest, global_params: dict[str, np.ndarray], tweets: LabelledTexts
    ) -> None:
        backend = make_training_backend(self.runtime, bundle_dir, manifest, "sgd", 1.0, threads=2)
        backend.set_parameters(global_params)
        ids = DeviceTokenizer.from_bundle(bundle_dir, manifest).encode([tweets.texts[0]])
        clip = 1e-3  # far below this example's gradient norm
        backend.private_step(ids, [int(tweets.labels[0])], clip, np.zeros(manifest.trainable_numel, np.float32), 1.0)
        moved = tensors_to_flat(backend.parameters(), manifest.trainable) - tensors_to_flat(
            global_params, manifest.trainable
        )
        norm = float(np.linalg.norm(moved.astype(np.float64)))
        assert norm <= clip * (1 + 1e-3)  # float32 parameter rounding
        assert norm >= clip * 0.99  # really clipped to C, not dropped

    def test_noise_reaching_the_weights_has_std_sigma_c(
        self, bundle_dir: Path, manifest: ArtifactManifest, tweets: LabelledTexts, tmp_path: Path
    ) -> None:
        """Secure noise through the whole trainer path. C is tiny so the summed clipped gradients
        (norm ≤ |batch|·C ≈ 1e-5 over all 74,498 coordinates) are negligible against the noise."""
        clip, sigma, q, lr, steps = 1e-6, 1e4, 0.25, 1.0, 14
        trainer = self.trainer(bundle_dir, manifest, tweets, tmp_path)
        round_config = make_round(
            manifest, clip_norm=clip, noise_multiplier=sigma, sampling_rate=q, local_steps=steps, learning_rate=lr
        )
        deltas: list[np.ndarray] = []
        previous: list[np.ndarray] = []

        def on_step(step: int, _: object) -> None:
            flat = tensors_to_flat(trainer.parameters(), manifest.trainable).astype(np.float64)
            deltas.append(previous[-1] - flat)
            previous.append(flat)

        start = load_file(str(bundle_dir / manifest.file("adapter").path))
        previous.append(tensors_to_flat(start, manifest.trainable).astype(np.float64))
        trainer.run_round(round_config, start, on_step=on_step)
        expected_std = lr * sigma * clip / (q * len(tweets.texts))
        z = np.concatenate(deltas) / expected_std  # should be N(0, 1)
        n = z.size
        assert n > 1_000_000
        assert 0.9931 <= float(np.var(z)) <= 1.0069
        assert abs(float(np.mean(z))) < 4.89 / math.sqrt(n)
        assert stats.kstest(z, "norm").statistic < 2.7e-3
        tails = int(np.sum(np.abs(z) > 4))
        low, high = stats.binom.ppf([5e-7, 1 - 5e-7], n, 2 * stats.norm.sf(4))  # α = 1e-6, two-sided
        assert low <= tails <= high

    def test_round_trains_records_each_step_once_and_matches_the_accountant(
        self, bundle_dir: Path, manifest: ArtifactManifest, tweets: LabelledTexts, tmp_path: Path
    ) -> None:
        trainer = self.trainer(bundle_dir, manifest, tweets, tmp_path)
        round_config = make_round(manifest, local_steps=3, sampling_rate=0.25, noise_multiplier=1.0)
        start = load_file(str(bundle_dir / manifest.file("adapter").path))
        result = trainer.run_round(round_config, start)
        changed = [k for k in start if not np.array_equal(start[k], result.parameters[k])]
        assert len(changed) == len(manifest.trainable)
        assert len(trainer.ledger.steps()) == 3
        expected = independent_epsilon(0.25, 1.0, 3, DELTA)
        assert result.local_epsilon == pytest.approx(expected, rel=0.01)
        assert result.local_epsilon_rdp >= result.local_epsilon
        assert all(s.batch_size >= 0 for s in result.step_stats)
        # running the finished round again trains nothing and counts nothing
        again = trainer.run_round(round_config, start)
        assert again.resumed_from_step == 3 and len(trainer.ledger.steps()) == 3
        for k in start:
            np.testing.assert_array_equal(again.parameters[k], result.parameters[k])

    def test_seed_methods_freeze_what_the_round_says(
        self, bundle_dir: Path, manifest: ArtifactManifest, tweets: LabelledTexts, tmp_path: Path
    ) -> None:
        trainer = self.trainer(bundle_dir, manifest, tweets, tmp_path)
        round_config = make_round(manifest, local_steps=2, train_rank=4, unit_sparsity=0.25, dp_sat_rho=0.05)
        start = load_file(str(bundle_dir / manifest.file("adapter").path))
        result = trainer.run_round(round_config, start)
        masks = trainable_masks(start, manifest.trainable, manifest.lora.rank, 4, 0.25)
        for name, mask in masks.items():
            np.testing.assert_array_equal(result.parameters[name][~mask], start[name][~mask])
            assert not np.array_equal(result.parameters[name][mask], start[name][mask])
        a_mask = masks["encoder.layer.0.attention.self.query.lora_A.weight"]
        assert not a_mask[4:].any() and (~a_mask[:4]).sum() == 4 * math.floor(0.25 * 384)

    def test_adamw_state_does_not_carry_into_the_next_round(
        self, bundle_dir: Path, manifest: ArtifactManifest, tweets: LabelledTexts, tmp_path: Path
    ) -> None:
        """Round 2 after round 1 equals round 2 on a fresh device: no moment (which held round 1's frozen,
        noise-free coordinates) survives into a later release."""
        start = load_file(str(bundle_dir / manifest.file("adapter").path))
        settings = {"local_steps": 2, "optimizer": "adamw", "learning_rate": 0.01, "unit_sparsity": 0.25}
        first, second = make_round(manifest, 1, **settings), make_round(manifest, 2, **settings)
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        carried = self.trainer(bundle_dir, manifest, tweets, tmp_path / "a", seeded_steps(5))
        after_one = carried.run_round(first, start).parameters
        continued = carried.run_round(second, after_one).parameters
        fresh = self.trainer(bundle_dir, manifest, tweets, tmp_path / "b", seeded_steps(5)).run_round(second, after_one)
        for name in start:
            np.testing.assert_allclose(continued[name], fresh.parameters[name], rtol=0, atol=1e-6)

    def test_budget_is_enforced_before_any_step(
        self, bundle_dir: Path, manifest: ArtifactManifest, tweets: LabelledTexts, tmp_path: Path
    ) -> None:
        trainer = self.trainer(bundle_dir, manifest, tweets, tmp_path, device_epsilon_budget=0.05)
        start = load_file(str(bundle_dir / manifest.file("adapter").path))
        with pytest.raises(PrivacyBudgetExceeded, match="0.05"):
            trainer.run_round(make_round(manifest), start)
        assert trainer.ledger.steps() == [] and not trainer.round_dir(1).exists()
        no_noise = make_round(manifest, round_id=2, noise_multiplier=0.0)
        with pytest.raises(PrivacyBudgetExceeded):
            self.trainer(bundle_dir, manifest, tweets, tmp_path / "b").run_round(no_noise, start)

    def test_wrong_round_configs_are_refused_clearly(
        self, bundle_dir: Path, manifest: ArtifactManifest, tweets: LabelledTexts, tmp_path: Path
    ) -> None:
        trainer = self.trainer(bundle_dir, manifest, tweets, tmp_path)
        start = load_file(str(bundle_dir / manifest.file("adapter").path))
        good = make_round(manifest)
        other_bundle = RoundConfig(**{**good.__dict__, "manifest_hash": "0" * 64})
        with pytest.raises(RoundConfigError, match="download the round's bundle"):
            trainer.run_round(other_bundle, start)
        with pytest.raises(RoundConfigError, match="train_rank must be an int in 1..8"):
            trainer.run_round(make_round(manifest, train_rank=9), start)
        expired = RoundConfig(**{**good.__dict__, "deadline_unix": 1000.0})
        with pytest.raises(RoundConfigError, match="closed"):
            trainer.run_round(expired, start)
        assert trainer.ledger.steps() == []


class TestOrtTrainer(LocalTrainerContract):
    runtime = "ort"


class TestExecuTorchTrainer(LocalTrainerContract):
    runtime = "executorch"


@pytest.fixture(scope="module")
def eager_classifier(bundle_dir: Path, global_params: dict[str, np.ndarray]) -> object:
    from export.classifier import build_classifier

    clf = build_classifier(seed=0)
    clf.load_trainable_state(global_params)
    return clf


# --------------------------------------------------------------------------- across runtimes


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_same_noise_gives_the_same_trajectory_on_both_runtimes(
    bundle_dir: Path, manifest: ArtifactManifest, tweets: LabelledTexts, tmp_path: Path, optimizer: str
) -> None:
    start = load_file(str(bundle_dir / manifest.file("adapter").path))
    round_config = make_round(
        manifest,
        local_steps=4,
        sampling_rate=0.3,
        learning_rate=0.05 if optimizer == "sgd" else 0.01,
        optimizer=optimizer,
        train_rank=6,
        unit_sparsity=0.1,
        dp_sat_rho=0.02,
    )
    results = {}
    for runtime in ("ort", "executorch"):
        ledger = LocalPrivacyLedger(tmp_path / runtime / "ledger.json", delta=DELTA)
        trainer = LocalTrainer(
            bundle_dir, manifest, tweets, tmp_path / runtime, ledger, seeded_steps(7), runtime=runtime, threads=2
        )
        results[runtime] = trainer.run_round(round_config, start)
    ort, et = results["ort"], results["executorch"]
    assert [s.batch_size for s in ort.step_stats] == [s.batch_size for s in et.step_stats]
    worst = max(float(np.max(np.abs(ort.parameters[k] - et.parameters[k]))) for k in start)
    moved = max(float(np.max(np.abs(ort.parameters[k] - start[k]))) for k in start)
    assert moved > 1e-3
    assert worst <= 1e-5, f"{optimizer}: ORT and ExecuTorch trajectories differ by {worst:.3g}"


# --------------------------------------------------------------------------- kill and resume

WORKER = textwrap.dedent(
    """
    import os, signal, sys, json, time
    from pathlib import Path
    from safetensors.numpy import load_file
    sys.path.insert(0, {repo!r})
    from ondevice.accounting import LocalPrivacyLedger
    from ondevice.bundle import verify_bundle
    from ondevice.data import LabelledTexts, load_tweeteval
    from ondevice.protocol import RoundConfig
    from ondevice.randomness import SeededRandomSource
    from ondevice.trainer import LocalTrainer

    bundle, state, runtime, kill_after = Path({bundle!r}), Path({state!r}), {runtime!r}, {kill_after}
    every = {every}
    manifest = verify_bundle(bundle)
    data = load_tweeteval(Path({data!r}), "val")
    data = data.subset(range(24))
    ledger = LocalPrivacyLedger(state / "ledger.json", delta={delta})
    source = lambda r, s: SeededRandomSource(11 * 1_000_003 + r * 10_007 + s)
    trainer = LocalTrainer(
        bundle, manifest, data, state, ledger, source, runtime=runtime, threads=2, checkpoint_every=every
    )
    config = RoundConfig.from_json({config!r})
    start = load_file(str(bundle / manifest.file("adapter").path))

    def on_step(step, _):
        if step + 1 == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)

    trainer.run_round(config, start, on_step=on_step)
    """
)


@pytest.mark.parametrize(
    ("runtime", "every", "kill_after", "resumes_at"),
    [("ort", 1, 2, 2), ("executorch", 1, 2, 2), ("executorch", 3, 4, 3)],
    ids=["ort", "executorch", "executorch-checkpoint-every-3"],
)
def test_a_device_killed_mid_round_resumes_without_double_counting(
    bundle_dir: Path,
    manifest: ArtifactManifest,
    tweets: LabelledTexts,
    offensive_dir: Path,
    tmp_path: Path,
    runtime: str,
    every: int,
    kill_after: int,
    resumes_at: int,
) -> None:
    round_config = make_round(manifest, local_steps=5, optimizer="adamw", learning_rate=0.01, dp_sat_rho=0.02)
    start = load_file(str(bundle_dir / manifest.file("adapter").path))
    # reference: uninterrupted
    ledger = LocalPrivacyLedger(tmp_path / "ref" / "ledger.json", delta=DELTA)
    reference = LocalTrainer(
        bundle_dir, manifest, tweets, tmp_path / "ref", ledger, seeded_steps(11), runtime=runtime, threads=2
    ).run_round(round_config, start)
    # killed with SIGKILL right after step `kill_after` of 5 (its ledger entry written), then resumed
    state = tmp_path / "killed"
    script = WORKER.format(
        repo=str(REPO_ROOT),
        bundle=str(bundle_dir),
        state=str(state),
        runtime=runtime,
        kill_after=kill_after,
        every=every,
        data=str(offensive_dir),
        delta=DELTA,
        config=round_config.to_json(),
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    ledger = LocalPrivacyLedger(state / "ledger.json", delta=DELTA)
    assert len(ledger.steps()) == kill_after
    resumed = LocalTrainer(
        bundle_dir, manifest, tweets, state, ledger, seeded_steps(11), runtime=runtime, threads=2
    ).run_round(round_config, start)
    assert resumed.resumed_from_step == resumes_at  # re-ran the steps after the last checkpoint
    assert len(ledger.steps()) == 5  # ... without counting them twice
    assert resumed.local_epsilon == pytest.approx(reference.local_epsilon, rel=1e-9)
    worst = max(float(np.max(np.abs(resumed.parameters[k] - reference.parameters[k]))) for k in start)
    assert worst <= 1e-6, f"resumed run differs from the uninterrupted one by {worst:.3g}"
