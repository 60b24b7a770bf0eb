"""Real devices against the real aggregator: check in → download v0 → local DP-SGD (both runtimes)
→ clipped fp16 rank-4 update → upload → close → v1 published and downloadable."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest

from ondevice.data import LabelledTexts, load_tweeteval
from ondevice.device import outbox_dir, participate
from ondevice.protocol import DpConfig, decode_update
from ondevice.randomness import SeededRandomSource
from ondevice.server_client import AggregatorClient
from ondevice.trainer import LocalTrainer
from ondevice.upload import Outbox, UploadClient
from server_aggregator.service import Aggregator
from tests.server_harness import LiveServer, admin, enroll, make_config

pytestmark = pytest.mark.slow

LOCAL_DP = DpConfig(
    clip_norm=1.0, noise_multiplier=1.0, sampling_rate=0.25, local_steps=2, learning_rate=0.05, train_rank=4
)


@pytest.fixture(scope="module")
def tweets(offensive_dir: Path) -> LabelledTexts:
    return load_tweeteval(offensive_dir, "val").subset(range(16))


def test_two_phones_on_both_runtimes_complete_a_round(
    tmp_path: Path, bundle_dir: Path, classifier_dir: Path, tweets: LabelledTexts
) -> None:
    config = make_config(
        tmp_path, bundle_dir, classifier_dir, clients_per_round=2, noise_multiplier=0.8, epsilon_budget=100.0,
        update_clip_norm=0.1, update_dtype="float16", local_dp=LOCAL_DP,
    )  # fmt: skip
    service = Aggregator(config)
    runtimes = {"phone-ort": "ort", "phone-et": "executorch"}
    with LiveServer(service) as server, httpx.Client(base_url=server.url) as http:
        secrets_ = dict(enroll(http, device_id) for device_id in runtimes)
        admin(http, "POST", "/v1/admin/rounds").raise_for_status()
        sent = {}
        for device_id, runtime in runtimes.items():
            state = tmp_path / device_id
            with AggregatorClient(server.url, device_id, secrets_[device_id]) as api:
                answer = api.check_in()
                assert answer.selected and answer.round_config is not None
                round_config = answer.round_config
                assert round_config.dp == LOCAL_DP and round_config.update_dtype == "float16"
                global_params = api.fetch_adapter(round_config.global_adapter_version, service.manifest.trainable)
            trainer = LocalTrainer.from_bundle(
                bundle_dir, tweets, state, runtime=runtime, threads=2,
                random_source=lambda r, s: SeededRandomSource(r * 1000 + s),
            )  # fmt: skip
            client = UploadClient(server.url, device_id, secrets_[device_id], Outbox(outbox_dir(state)), timeout_s=10)
            with client:
                outcome = participate(trainer, client, device_id, round_config, global_params)
            assert outcome.training is not None and outcome.training.steps == 2
            sent[device_id] = outcome.update
        status = admin(http, "GET", "/v1/status").json()
        assert status["accepted_total"] == 2 and status["rejected_total"] == 0
        summary = admin(http, "POST", "/v1/admin/rounds/0/close").json()
        assert summary["updates"] == 2 and summary["version"] == 1
        with AggregatorClient(server.url, "phone-ort", secrets_["phone-ort"]) as api:
            v1 = api.fetch_adapter(1, service.manifest.trainable)
    v0 = service.adapter_params(0)
    changed = [k for k in v0 if not np.array_equal(v0[k], v1[k])]
    assert len(changed) == len(v0)  # central noise reaches every coordinate
    for device_id, update in sent.items():
        assert update.l2_norm() <= 0.1 and update.dtype == "float16"
        assert update.tensors["encoder.layer.0.attention.self.query.lora_A.weight"].shape == (4, 384)
        assert decode_update(service_body(service, device_id)).nonce == update.nonce
    privacy = service.privacy()
    assert privacy["rounds"] == 1 and privacy["epsilon_spent"] > 0
    service.close()


def service_body(service: Aggregator, device_id: str) -> bytes:
    from server_aggregator import store

    with service.db.read() as conn:
        record = store.get_update(conn, 0, device_id)
    assert record is not None
    return record.body
