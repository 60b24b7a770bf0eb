"""The aggregator over real HTTP: uvicorn on loopback, real devices' signatures, the real database."""

from __future__ import annotations

from pathlib import Path

import dp_accounting
import httpx
import numpy as np
import pytest
from dp_accounting.pld import pld_privacy_accountant
from dp_accounting.rdp import rdp_privacy_accountant

from ondevice.protocol import AdapterUpdate, RoundConfig, TensorSpec, decode_update, encode_update, sha256_hex
from ondevice.randomness import SeededRandomSource
from ondevice.server_client import AggregatorClient, AggregatorError
from ondevice.update import global_norm
from ondevice.upload import Outbox, UploadClient, UploadRejected
from server_aggregator.service import Aggregator
from tests.server_harness import (
    LiveServer,
    admin,
    enroll,
    make_update,
    post_update,
    upload_headers,
)

pytestmark = pytest.mark.slow


class ZeroNormals:
    """A test double for the noise only: N(0, 1) draws are 0 (uniforms are real, for selection)."""

    name = "zero-normals"
    secure = False

    def __init__(self) -> None:
        self._seeded = SeededRandomSource(0)

    def standard_normal(self, size: int) -> np.ndarray:
        return np.zeros(size)

    def uniform(self, size: int) -> np.ndarray:
        return self._seeded.uniform(size)


def _open(http: httpx.Client, **payload: object) -> RoundConfig:
    response = admin(http, "POST", "/v1/admin/rounds", payload or None)
    assert response.status_code == 201, response.text
    return RoundConfig.from_dict(response.json())


def _status(http: httpx.Client) -> dict:  # type: ignore[type-arg]
    response = admin(http, "GET", "/v1/status")
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def _specs(service: Aggregator) -> tuple[TensorSpec, ...]:
    return service.manifest.trainable


def test_full_round_with_exact_aggregate_and_peft_loadable_publish(tmp_config) -> None:  # type: ignore[no-untyped-def]
    """q = 1, noise source returning zeros: the published adapter equals v0 + Σ clip(Δ_i) / (q·N); PEFT loads it.

    (The noise itself is tested statistically in the unit tests and in the restart test below.)"""
    config = tmp_config(clients_per_round=3, noise_multiplier=1.0, epsilon_budget=1e9, update_clip_norm=0.5)
    service = Aggregator(config, random_source=ZeroNormals())
    with LiveServer(service) as server, httpx.Client(base_url=server.url) as http:
        devices = [enroll(http, f"phone-{i}") for i in range(3)]
        assert admin(http, "GET", "/v1/status").json()["devices"] == {"active": 3, "revoked": 0}
        round_config = _open(http)
        assert round_config.global_adapter_version == 0
        v0 = None
        bodies = {}
        for i, (device_id, secret) in enumerate(devices):
            with AggregatorClient(server.url, device_id, secret) as client:
                answer = client.check_in()
                assert answer.selected and answer.round_config == round_config
                assert client.check_in().selected  # asking again: the same stored decision
                v0 = client.fetch_adapter(0, _specs(service))
            scale = 0.05 if i == 0 else 0.001  # device 0's delta is far over S = 0.5 before its own clipping
            update = make_update(round_config, device_id, v0, seed=i, scale=scale)
            bodies[device_id] = encode_update(update)
            response = post_update(http, device_id, secret, round_config.round_id, bodies[device_id])
            assert response.status_code == 201, response.text
            assert response.json()["update_sha256"] == sha256_hex(bodies[device_id])
        assert v0 is not None
        for name, value in service.adapter_params(0).items():
            np.testing.assert_array_equal(v0[name], value)

        summary = admin(http, "POST", f"/v1/admin/rounds/{round_config.round_id}/close").json()
        assert summary["updates"] == 3 and summary["version"] == 1
        again = admin(http, "POST", f"/v1/admin/rounds/{round_config.round_id}/close").json()
        assert again == summary  # idempotent

        # Independent oracle: decode what was sent, clip each to S, sum, divide by q·N = 3.
        expected = {k: v.astype(np.float64) for k, v in v0.items()}
        for body in bodies.values():
            delta = {k: v.astype(np.float64) for k, v in decode_update(body).tensors.items()}
            factor = min(1.0, 0.5 / global_norm(delta))
            for k in expected:
                expected[k] += factor * delta[k] / 3.0
        v1 = service.adapter_params(1)
        for k in expected:
            np.testing.assert_allclose(v1[k], expected[k], rtol=0, atol=2e-7)
        assert any(not np.array_equal(v1[k], v0[k]) for k in v0)

        status = _status(http)
        assert [v["version"] for v in status["published_versions"]] == [0, 1]
        assert status["rounds"][0]["state"] == "published" and status["rounds"][0]["accepted"] == 3

    published = config.publish_dir / "v000001"
    assert published.is_dir()
    import torch
    from peft import PeftModel
    from transformers import AutoModel

    from export.classifier import load_classifier
    from export.model_store import resolve_encoder

    base = AutoModel.from_pretrained(resolve_encoder().path)
    peft_model = PeftModel.from_pretrained(base, published)
    lora = {
        n.removeprefix("base_model.model.").replace(".default.", "."): p
        for n, p in peft_model.named_parameters()
        if "lora_" in n
    }
    assert len(lora) == 24
    for name, param in lora.items():
        np.testing.assert_array_equal(param.detach().numpy(), v1[name])
    clf = load_classifier(published)
    state = clf.trainable_state()
    for name in v1:
        np.testing.assert_array_equal(state[name], v1[name])
    assert isinstance(clf.model.head.weight, torch.nn.Parameter)
    service.close()


def test_every_bad_request_is_a_counted_4xx_and_nothing_rejected_is_merged(tmp_config) -> None:  # type: ignore[no-untyped-def]
    config = tmp_config(clients_per_round=4, noise_multiplier=1.0, epsilon_budget=1e9, update_clip_norm=1.0)
    service = Aggregator(config, random_source=ZeroNormals())
    with LiveServer(service) as server, httpx.Client(base_url=server.url) as http:
        (good, good_secret), (other, other_secret), (revoked, revoked_secret), (late, late_secret) = [
            enroll(http, f"phone-{i}") for i in range(4)
        ]
        assert admin(http, "POST", f"/v1/admin/devices/{revoked}/revoke").status_code == 200
        cfg = _open(http)
        v0 = service.adapter_params(0)
        for device_id, secret in ((good, good_secret), (other, other_secret)):
            assert AggregatorClient(server.url, device_id, secret).check_in().selected
        rid = cfg.round_id
        expected: dict[str, int] = {}

        def expect(response: httpx.Response, status: int, reason: str) -> None:
            assert response.status_code == status, (reason, response.text)
            assert response.json()["reason"] == reason, response.text
            expected[reason] = expected.get(reason, 0) + 1

        body = encode_update(make_update(cfg, good, v0, seed=1))
        # authentication
        unknown = post_update(http, "nobody", good_secret, rid, body)
        wrong_secret = post_update(http, good, other_secret, rid, body)
        # an unknown id is answered byte for byte like a bad signature (ids cannot be enumerated) ...
        assert (unknown.status_code, unknown.content) == (wrong_secret.status_code, wrong_secret.content)
        assert unknown.json()["reason"] == "bad_signature"
        expected["unknown_device"] = 1  # ... and counted apart for the operator
        expected["bad_signature"] = 1
        expect(post_update(http, revoked, revoked_secret, rid, body), 401, "revoked_device")
        expect(post_update(http, good, other_secret, rid, body), 401, "bad_signature")
        expect(post_update(http, good, good_secret, rid, body, now=1_000_000.0), 401, "stale_timestamp")
        headers = upload_headers(good, good_secret, rid, body)
        headers["X-Privtune-Update-Mac"] = "0" * 64
        expect(http.post(f"/v1/rounds/{rid}/updates", content=body, headers=headers), 401, "bad_signature")
        query = http.post(
            f"/v1/rounds/{rid}/updates?x=1", content=body, headers=upload_headers(good, good_secret, rid, body)
        )
        expect(query, 400, "malformed")
        headers = upload_headers(good, good_secret, rid, body)
        headers["Content-Type"] = "application/json"
        expect(http.post(f"/v1/rounds/{rid}/updates", content=body, headers=headers), 415, "malformed")
        headers = upload_headers(good, good_secret, rid, body)
        headers["Idempotency-Key"] = "0" * 64  # the signature covers the declared body hash
        expect(http.post(f"/v1/rounds/{rid}/updates", content=body, headers=headers), 401, "bad_signature")
        other_bytes = encode_update(make_update(cfg, good, v0, seed=8))
        headers = upload_headers(good, good_secret, rid, other_bytes)  # signed for other bytes than it carries
        expect(http.post(f"/v1/rounds/{rid}/updates", content=body, headers=headers), 401, "bad_signature")

        # content
        def variant(**changes: object) -> bytes:
            base = make_update(cfg, good, v0, seed=2)
            fields = {f: getattr(base, f) for f in AdapterUpdate.__dataclass_fields__}
            fields.update(changes)
            return encode_update(AdapterUpdate(**fields))  # type: ignore[arg-type]

        tensors = make_update(cfg, good, v0, seed=2).tensors
        first = next(iter(tensors))
        expect(post_update(http, good, good_secret, rid, b"not safetensors"), 400, "malformed")
        expect(post_update(http, good, good_secret, rid, variant(manifest_hash="a" * 64)), 400, "wrong_manifest")
        expect(post_update(http, good, good_secret, rid, variant(round_id=rid + 7)), 400, "wrong_round")
        expect(post_update(http, good, good_secret, rid + 7, variant(round_id=rid + 7)), 400, "wrong_round")
        expect(post_update(http, good, good_secret, rid, variant(global_adapter_version=5)), 400, "wrong_round")
        missing = {k: v for k, v in tensors.items() if k != first}
        expect(post_update(http, good, good_secret, rid, variant(tensors=missing)), 400, "wrong_keys")
        shaped = {**tensors, first: np.zeros((3, 3), np.float32)}
        expect(post_update(http, good, good_secret, rid, variant(tensors=shaped)), 400, "wrong_shape")
        fp16 = {k: v.astype(np.float16) for k, v in tensors.items()}
        expect(post_update(http, good, good_secret, rid, variant(tensors=fp16)), 400, "wrong_dtype")
        big = {k: v * (2.0 / global_norm(tensors)) for k, v in tensors.items()}
        expect(post_update(http, good, good_secret, rid, variant(tensors=big)), 400, "norm_exceeded")
        nan_blob = bytearray(encode_update(make_update(cfg, good, v0, seed=3)))
        nan_blob[-4:] = np.array([np.nan], np.float32).tobytes()
        expect(post_update(http, good, good_secret, rid, bytes(nan_blob)), 400, "non_finite")
        not_selected = encode_update(make_update(cfg, late, v0, seed=4))
        expect(post_update(http, late, late_secret, rid, not_selected), 403, "not_selected")

        # the good update once; the same bytes → same receipt; other bytes → conflict; replayed request → 401
        headers = upload_headers(good, good_secret, rid, body)
        first_response = http.post(f"/v1/rounds/{rid}/updates", content=body, headers=headers)
        assert first_response.status_code == 201
        expect(http.post(f"/v1/rounds/{rid}/updates", content=body, headers=headers), 401, "replayed_nonce")
        again = post_update(http, good, good_secret, rid, body)
        assert again.status_code == 200 and again.json() == first_response.json()
        conflict = encode_update(make_update(cfg, good, v0, seed=9))
        expect(post_update(http, good, good_secret, rid, conflict), 409, "duplicate_conflict")

        admin(http, "POST", f"/v1/admin/rounds/{rid}/close")
        other_body = encode_update(make_update(cfg, other, v0, seed=5))
        expect(post_update(http, other, other_secret, rid, other_body), 409, "round_not_open")

        status = _status(http)
        assert status["rejected_by_reason"] == expected
        assert status["accepted_total"] == 1
        # only the good update was merged: v1 = v0 + Δ_good / (q·N), q·N = 4 (population 3 active, q = 1 → 3)
        delta = decode_update(body).tensors
        expected_clients = status["rounds"][0]["sampling_rate"] * status["rounds"][0]["population"]
        v1 = service.adapter_params(1)
        for k in v0:
            np.testing.assert_allclose(v1[k], v0[k] + delta[k].astype(np.float64) / expected_clients, atol=2e-7)
    service.close()


def test_admin_endpoints_need_the_token_and_devices_need_signatures(tmp_config) -> None:  # type: ignore[no-untyped-def]
    service = Aggregator(tmp_config())
    with LiveServer(service) as server, httpx.Client(base_url=server.url) as http:
        assert http.post("/v1/admin/devices", json={}).status_code == 401
        wrong = http.post("/v1/admin/devices", json={}, headers={"Authorization": "Bearer " + "x" * 40})
        assert wrong.status_code == 401 and "Bearer" in wrong.json()["error"]
        assert http.get("/v1/status").status_code == 401
        assert http.post("/v1/checkin", content=b"{}").status_code == 400  # unsigned
        assert http.get("/openapi.json").json()["paths"]["/v1/rounds/{round_id}/updates"]
        device_id, secret = enroll(http)
        assert admin(http, "POST", "/v1/admin/devices", {"device_id": device_id}).status_code == 409
        with AggregatorClient(server.url, device_id, secret) as client:
            assert client.check_in().round_config is None  # no round open
            with pytest.raises(AggregatorError, match="404"):
                client.fetch_adapter(3, service.manifest.trainable)
        with AggregatorClient(server.url, device_id, b"w" * 32) as forged, pytest.raises(AggregatorError) as info:
            forged.check_in()
        assert info.value.status == 401 and info.value.error is not None
        assert info.value.error.reason.value == "bad_signature"
        assert _open(http).round_id == 0
        second = admin(http, "POST", "/v1/admin/rounds")
        assert second.status_code == 409 and "round 0 is still open" in second.json()["error"]
    service.close()


def test_budget_refusal_states_the_numbers_and_eps_matches_dp_accounting(tmp_config) -> None:  # type: ignore[no-untyped-def]
    """Rounds until the budget refuses one; ε from the ledger equals a direct dp_accounting computation."""
    config = tmp_config(clients_per_round=1, noise_multiplier=1.2, epsilon_budget=4.0, delta=1e-6)
    service = Aggregator(config)
    with LiveServer(service) as server, httpx.Client(base_url=server.url) as http:
        for i in range(4):
            enroll(http, f"phone-{i}")  # q = 1/4
        opened = 0
        while True:
            response = admin(http, "POST", "/v1/admin/rounds")
            if response.status_code != 201:
                break
            admin(http, "POST", f"/v1/admin/rounds/{response.json()['round_id']}/close")
            opened += 1
            assert opened < 50
        assert response.status_code == 409
        message = response.json()["error"]
        privacy = _status(http)["privacy"]
        assert f"budget={4.0:.4f}" in message and f"spent={privacy['epsilon_spent']:.4f}" in message

    event = dp_accounting.PoissonSampledDpEvent(0.25, dp_accounting.GaussianDpEvent(1.2))
    pld = pld_privacy_accountant.PLDAccountant(value_discretization_interval=1e-4)
    pld.compose(event, opened)
    rdp = rdp_privacy_accountant.RdpAccountant()
    rdp.compose(event, opened)
    eps_pld, eps_rdp = pld.get_epsilon(1e-6), rdp.get_epsilon(1e-6)
    assert opened >= 1 and privacy["rounds"] == opened and privacy["enforced_on"] == "amplified"
    assert privacy["epsilon_amplified_pld"] == pytest.approx(eps_pld, rel=0.01)
    assert privacy["epsilon_amplified_rdp"] == pytest.approx(eps_rdp, rel=0.01)
    assert privacy["epsilon_spent"] == privacy["epsilon_amplified_pld"] <= 4.0
    plain = dp_accounting.GaussianDpEvent(1.2)
    unamplified = pld_privacy_accountant.PLDAccountant(value_discretization_interval=1e-4)
    unamplified.compose(plain, opened)
    assert privacy["epsilon_unamplified_pld"] == pytest.approx(unamplified.get_epsilon(1e-6), rel=0.01)
    assert privacy["epsilon_unamplified_pld"] > privacy["epsilon_amplified_pld"]
    # one more round would have crossed the budget: recompute independently
    pld_next = pld_privacy_accountant.PLDAccountant(value_discretization_interval=1e-4)
    pld_next.compose(event, opened + 1)
    assert pld_next.get_epsilon(1e-6) > 4.0 * 0.99
    service.close()


def test_upload_client_delivers_exactly_once_and_restart_keeps_everything(tmp_config) -> None:  # type: ignore[no-untyped-def]
    config = tmp_config(clients_per_round=2, noise_multiplier=0.5, epsilon_budget=50.0, round_duration_s=3600.0)
    service = Aggregator(config)
    with LiveServer(service) as server, httpx.Client(base_url=server.url) as http:
        device_id, secret = enroll(http, "phone-a")
        enroll(http, "phone-b")
        cfg = _open(http)
        v0 = service.adapter_params(0)
        assert AggregatorClient(server.url, device_id, secret).check_in().selected
        outbox = Outbox(Path(config.publish_dir).parent / "outbox")
        body = encode_update(make_update(cfg, device_id, v0, seed=11))
        outbox.put(cfg.round_id, body)
        with UploadClient(server.url, device_id, secret, outbox, sleep=lambda s: None) as client:
            receipt = client.deliver(cfg.round_id)
        # a restarted device that lost its receipt sends the same bytes again: same receipt, stored once
        fresh = Outbox(Path(config.publish_dir).parent / "outbox2")
        fresh.put(cfg.round_id, body)
        with UploadClient(server.url, device_id, secret, fresh, sleep=lambda s: None) as client:
            assert client.deliver(cfg.round_id) == receipt
        stale_headers = upload_headers(device_id, secret, cfg.round_id, body)
        first = http.post(f"/v1/rounds/{cfg.round_id}/updates", content=body, headers=stale_headers)
        assert first.status_code == 200 and first.json() == receipt.to_dict()
    service.close()

    restarted = Aggregator(config)  # same database: the update, the open round and the nonces survive
    with LiveServer(restarted) as server, httpx.Client(base_url=server.url) as http:
        replay = http.post(f"/v1/rounds/{cfg.round_id}/updates", content=body, headers=stale_headers)
        assert replay.status_code == 401 and replay.json()["reason"] == "replayed_nonce"  # nonces are durable
        status = _status(http)
        assert status["accepted_total"] == 1 and status["rounds"][0]["state"] == "open"
        summary = admin(http, "POST", f"/v1/admin/rounds/{cfg.round_id}/close").json()
        assert summary["updates"] == 1
        # the secure noise is really there: v1 − v0 − Δ/(q·N) ~ N(0, (z·S/(q·N))²), here 0.5·1/2 = 0.25
        delta = decode_update(body).tensors
        v1 = restarted.adapter_params(1)
        residual = np.concatenate([(v1[k] - v0[k] - delta[k].astype(np.float64) / 2.0).ravel() for k in v0])
        assert residual.size == 74_498
        assert np.std(residual) == pytest.approx(0.25, rel=0.03) and abs(np.mean(residual)) < 5 * 0.25 / 273
        tampered = bytearray(body)
        tampered[-1] ^= 1
        outbox3 = Outbox(Path(config.publish_dir).parent / "outbox3")
        outbox3.put(cfg.round_id, bytes(tampered))
        with (
            UploadClient(server.url, device_id, secret, outbox3, sleep=lambda s: None) as client,
            pytest.raises(UploadRejected),
        ):
            client.deliver(cfg.round_id)
    restarted.close()


def test_operator_cli_against_a_live_server(tmp_config, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    import json

    from typer.testing import CliRunner

    from privtune.cli import app
    from tests.server_harness import ADMIN_TOKEN

    service = Aggregator(tmp_config(clients_per_round=1, epsilon_budget=50.0))
    runner = CliRunner()
    with LiveServer(service) as server:
        monkeypatch.delenv("PRIVTUNE_ADMIN_TOKEN", raising=False)
        refused = runner.invoke(app, ["status", "--url", server.url])
        assert refused.exit_code == 2 and "admin token" in refused.output
        monkeypatch.setenv("PRIVTUNE_ADMIN_TOKEN", ADMIN_TOKEN)
        enrolled = runner.invoke(app, ["enroll", "cli-phone", "--url", server.url])
        assert enrolled.exit_code == 0, enrolled.output
        assert json.loads(enrolled.stdout)["device_id"] == "cli-phone"
        opened = runner.invoke(app, ["open-round", "--url", server.url, "--duration", "60"])
        assert opened.exit_code == 0 and json.loads(opened.stdout)["round_id"] == 0
        closed = runner.invoke(app, ["close-round", "0", "--url", server.url])
        assert closed.exit_code == 0 and json.loads(closed.stdout)["version"] == 1
        status = runner.invoke(app, ["status", "--url", server.url, "--json"])
        body = json.loads(status.stdout)
        assert body["rounds"][0]["state"] == "published" and body["privacy"]["rounds"] == 1
        human = runner.invoke(app, ["status", "--url", server.url])
        assert "published versions: [0, 1]" in human.stdout and "epsilon_spent" in human.stdout
        missing = runner.invoke(app, ["close-round", "9", "--url", server.url])
        assert missing.exit_code == 1 and "no round 9" in missing.output
    service.close()


def test_body_framing_limits_are_4xx_and_counted(tmp_config) -> None:  # type: ignore[no-untyped-def]
    """Over the size cap → 413 before the body is read; no Content-Length (chunked) → 411."""
    service = Aggregator(tmp_config(clients_per_round=1, max_body_bytes=200_000))
    with LiveServer(service) as server, httpx.Client(base_url=server.url) as http:
        device_id, secret = enroll(http)
        cfg = _open(http)
        body = encode_update(make_update(cfg, device_id, service.adapter_params(0), seed=1))
        assert len(body) > 200_000
        assert AggregatorClient(server.url, device_id, secret).check_in().selected
        too_big = post_update(http, device_id, secret, cfg.round_id, body)
        assert too_big.status_code == 413 and too_big.json()["reason"] == "too_large"
        headers = upload_headers(device_id, secret, cfg.round_id, body)
        chunked = http.post(f"/v1/rounds/{cfg.round_id}/updates", content=iter([body]), headers=headers)
        assert chunked.status_code == 411 and chunked.json()["reason"] == "malformed"
        status = _status(http)
        assert status["rejected_by_reason"] == {"too_large": 1, "malformed": 1} and status["accepted_total"] == 0
    service.close()
