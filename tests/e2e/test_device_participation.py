"""A device's whole round against a real HTTP endpoint on loopback: train → clip → outbox → upload.

The endpoint is the fault-injecting tests/upload_endpoint.py (its contract parity with the real
aggregator is tests/contract/test_upload_contract.py), so crashes and faults can be placed exactly;
the same device against the real aggregator is tests/e2e/test_device_with_aggregator.py.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from safetensors.numpy import load_file

from ondevice.bundle import BundleError, verify_bundle
from ondevice.data import LabelledTexts, load_tweeteval
from ondevice.device import outbox_dir, participate, prepare_update
from ondevice.protocol import ArtifactManifest, DpConfig, RejectionReason, RoundConfig, decode_update, sha256_hex
from ondevice.randomness import SeededRandomSource
from ondevice.trainer import LocalTrainer
from ondevice.upload import Outbox, UploadClient, UploadRejected, UploadUnavailable
from tests.upload_endpoint import Fault, UploadEndpoint

pytestmark = pytest.mark.slow

DEVICE = "phone-0001"
SECRET = b"0123456789abcdef-device-secret"


@pytest.fixture(scope="module")
def manifest(bundle_dir: Path) -> ArtifactManifest:
    return verify_bundle(bundle_dir)


@pytest.fixture(scope="module")
def tweets(offensive_dir: Path) -> LabelledTexts:
    return load_tweeteval(offensive_dir, "val").subset(range(16))


def round_config(manifest: ArtifactManifest, round_id: int = 5) -> RoundConfig:
    dp = DpConfig(
        clip_norm=1.0,
        noise_multiplier=1.0,
        sampling_rate=0.25,
        local_steps=2,
        learning_rate=0.05,
        train_rank=4,
        local_delta=1e-3,  # not the ledger's default 1e-5: the device must account at the round's delta
    )
    return RoundConfig(
        round_id=round_id,
        manifest_hash=manifest.manifest_hash(),
        global_adapter_version=3,
        dp=dp,
        update_clip_norm=0.1,
        deadline_unix=time.time() + 3600,
        update_dtype="float16",
    )


def device(bundle_dir: Path, tweets: LabelledTexts, state: Path, base_url: str) -> tuple[LocalTrainer, UploadClient]:
    trainer = LocalTrainer.from_bundle(
        bundle_dir,
        tweets,
        state,
        runtime="executorch",
        threads=2,
        random_source=lambda r, s: SeededRandomSource(r * 1000 + s),
    )
    client = UploadClient(
        base_url, DEVICE, SECRET, Outbox(outbox_dir(state)), timeout_s=5, max_attempts=4, sleep=lambda _: None
    )
    return trainer, client


def test_a_round_is_trained_clipped_and_delivered_once(
    bundle_dir: Path, manifest: ArtifactManifest, tweets: LabelledTexts, tmp_path: Path
) -> None:
    config = round_config(manifest)
    start = load_file(str(bundle_dir / manifest.file("adapter").path))
    with UploadEndpoint({DEVICE: SECRET}) as endpoint:
        endpoint.fail_next(Fault.HTTP_503)  # one transient failure on the way
        trainer, client = device(bundle_dir, tweets, tmp_path, endpoint.base_url)
        with client:
            outcome = participate(trainer, client, DEVICE, config, start)
        assert endpoint.store_count == 1
        stored = endpoint.stored(DEVICE, config.round_id)
        assert stored is not None
    update = decode_update(stored.body)
    assert update.nonce == outcome.update.nonce
    assert update.dtype == "float16" and update.l2_norm() <= 0.1
    lora_a = "encoder.layer.0.attention.self.query.lora_A.weight"
    assert update.tensors[lora_a].shape == (4, 384)  # only the server-fixed rank travels
    assert update.local_delta == 1e-3 and outcome.training is not None and outcome.training.local_delta == 1e-3
    assert update.local_epsilon == pytest.approx(trainer.ledger.epsilon("pld", delta=1e-3))
    assert update.local_epsilon < trainer.ledger.epsilon("pld")  # at the ledger's 1e-5 it would be larger
    assert update.dp == config.dp and "num_examples" not in update.metadata_dict()
    assert outcome.receipt.update_sha256 == sha256_hex(stored.body)
    assert len(stored.body) <= 80 * 1024


def test_crash_after_training_before_upload_resends_the_same_bytes_without_retraining(
    bundle_dir: Path, manifest: ArtifactManifest, tweets: LabelledTexts, tmp_path: Path
) -> None:
    config = round_config(manifest, round_id=6)
    start = load_file(str(bundle_dir / manifest.file("adapter").path))
    with UploadEndpoint({DEVICE: SECRET}) as endpoint:
        trainer, client = device(bundle_dir, tweets, tmp_path, endpoint.base_url)
        prepared, _ = prepare_update(trainer, client.outbox, DEVICE, config, start)  # then the "crash"
        client.close()
        steps_before = len(trainer.ledger.steps())
        trainer, client = device(bundle_dir, tweets, tmp_path, endpoint.base_url)  # restart
        with client:
            outcome = participate(trainer, client, DEVICE, config, start)
            again = participate(trainer, client, DEVICE, config, start)  # a second call is a no-op
        assert outcome.training is None and again.training is None
        assert outcome.update.nonce == prepared.nonce
        assert len(trainer.ledger.steps()) == steps_before == 2
        assert endpoint.store_count == 1 and len(endpoint.requests) == 1
        assert again.receipt == outcome.receipt


def test_rejection_and_unreachable_server_lose_nothing(
    bundle_dir: Path, manifest: ArtifactManifest, tweets: LabelledTexts, tmp_path: Path
) -> None:
    config = round_config(manifest, round_id=7)
    start = load_file(str(bundle_dir / manifest.file("adapter").path))
    # unreachable: a port with nothing listening
    endpoint = UploadEndpoint({DEVICE: SECRET}).start()
    url = endpoint.base_url
    endpoint.stop()
    trainer, client = device(bundle_dir, tweets, tmp_path, url)
    with pytest.raises(UploadUnavailable):
        participate(trainer, client, DEVICE, config, start)
    client.close()
    body = Outbox(outbox_dir(tmp_path)).get(config.round_id)
    assert body is not None and Outbox(outbox_dir(tmp_path)).pending() == [config.round_id]
    # the server comes back but the round was closed meanwhile: a clear 4xx, not retried, kept
    with UploadEndpoint({DEVICE: SECRET}) as endpoint:
        endpoint.close_round(config.round_id)
        trainer, client = device(bundle_dir, tweets, tmp_path, endpoint.base_url)
        with client, pytest.raises(UploadRejected) as info:
            participate(trainer, client, DEVICE, config, start)
        assert info.value.error.reason == RejectionReason.ROUND_NOT_OPEN
        assert len(endpoint.requests) == 1 and endpoint.store_count == 0
    assert Outbox(outbox_dir(tmp_path)).get(config.round_id) == body
    assert len(trainer.ledger.steps()) == 2  # trained once, never again


def test_a_corrupted_bundle_is_refused_before_any_runtime_loads(
    bundle_dir: Path, manifest: ArtifactManifest, tweets: LabelledTexts, tmp_path: Path
) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(bundle_dir, copy, ignore=shutil.ignore_patterns("*.pte", "*.onnx", "checkpoint"))
    for entry in manifest.files:  # big runtime files: link instead of copying
        target = copy / entry.path
        if not target.exists():
            target.symlink_to(bundle_dir / entry.path)
    adapter = copy / manifest.file("adapter").path
    data = bytearray(adapter.read_bytes())
    data[-1] ^= 0x01
    adapter.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="adapter.safetensors"):
        LocalTrainer.from_bundle(copy, tweets, tmp_path / "state", runtime="ort")
    assert not (tmp_path / "state").exists()
