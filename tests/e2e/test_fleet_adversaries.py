"""The fleet's adversarial devices and flaky network against the real aggregator on loopback: every
attack is refused with its reason, counted, nothing an adversary broke is merged; lost acks and resets
still deliver an honest update exactly once."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest

from ondevice.protocol import encode_update, sha256_hex
from ondevice.server_client import AggregatorClient
from ondevice.upload import Outbox, UploadClient
from privtune.fleet.adversary import attack_requests, honest_update
from privtune.fleet.conditions import ADVERSARY_KINDS
from privtune.fleet.network import FlakyTransport
from server_aggregator.service import Aggregator
from tests.server_harness import LiveServer, admin, enroll, make_config

pytestmark = pytest.mark.slow


def test_every_adversary_is_refused_counted_and_never_merged(
    tmp_path: Path, bundle_dir: Path, classifier_dir: Path
) -> None:
    devices = [f"attacker-{kind.replace('_', '-')}" for kind in ADVERSARY_KINDS]
    config = make_config(
        tmp_path, bundle_dir, classifier_dir, clients_per_round=len(devices), epsilon_budget=100.0,
        update_clip_norm=0.5,
    )  # fmt: skip
    service = Aggregator(config)
    with LiveServer(service) as server, httpx.Client(base_url=server.url) as http:
        secrets_ = dict(enroll(http, device) for device in devices)
        admin(http, "POST", "/v1/admin/rounds").raise_for_status()
        sent: dict[str, list[int]] = {}
        expected: dict[str, int] = {}
        for index, (kind, device) in enumerate(zip(ADVERSARY_KINDS, devices, strict=True)):
            with AggregatorClient(server.url, device, secrets_[device]) as api:
                answer = api.check_in()
                assert answer.selected and answer.round_config is not None  # q = 1: everyone is selected
                round_config = answer.round_config
                global_params = api.fetch_adapter(round_config.global_adapter_version, service.manifest.trainable)
            update = honest_update(round_config, device, global_params, seed=index)
            statuses = []
            for attack in attack_requests(kind, update, secrets_[device], round_config.update_clip_norm):
                response = http.post(attack.path, content=attack.body, headers=attack.headers)
                assert response.status_code == attack.expected_status, (kind, response.text)
                if attack.expected_reason is not None:
                    assert response.json()["reason"] == attack.expected_reason, (kind, response.text)
                    expected[attack.expected_reason] = expected.get(attack.expected_reason, 0) + 1
                statuses.append(response.status_code)
            sent[kind] = statuses
        status = admin(http, "GET", "/v1/status").json()
        assert status["accepted_total"] == 1  # only the replayer's honest first request
        assert status["rejected_total"] == len(ADVERSARY_KINDS)
        assert status["rejected_by_reason"] == expected
        summary = admin(http, "POST", f"/v1/admin/rounds/{round_config.round_id}/close").json()
        assert summary["updates"] == 1
    assert sent["replay"] == [201, 401]
    v0, v1 = service.adapter_params(0), service.adapter_params(1)
    assert all(np.isfinite(v).all() for v in v1.values())
    assert {k: v.shape for k, v in v1.items()} == {k: v.shape for k, v in v0.items()}
    service.close()


class CountingTransport(httpx.HTTPTransport):
    """The real transport, counting the requests that actually reach the server."""

    def __init__(self) -> None:
        super().__init__()
        self.sent = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sent += 1
        return super().handle_request(request)


def test_a_flaky_network_still_delivers_exactly_once(tmp_path: Path, bundle_dir: Path, classifier_dir: Path) -> None:
    config = make_config(tmp_path, bundle_dir, classifier_dir, clients_per_round=1, epsilon_budget=100.0)
    service = Aggregator(config)
    with LiveServer(service) as server, httpx.Client(base_url=server.url) as http:
        device, secret = enroll(http, "phone-flaky")
        admin(http, "POST", "/v1/admin/rounds").raise_for_status()
        with AggregatorClient(server.url, device, secret) as api:
            round_config = api.check_in().round_config
            assert round_config is not None
            global_params = api.fetch_adapter(round_config.global_adapter_version, service.manifest.trainable)
        body = encode_update(honest_update(round_config, device, global_params, seed=3))
        outbox = Outbox(tmp_path / "outbox")
        outbox.put(round_config.round_id, body)
        faults = ("timeout", "reset", "timeout")  # two lost acknowledgements around a dropped connection
        wire = CountingTransport()
        transport = FlakyTransport(faults, inner=wire)
        with UploadClient(server.url, device, secret, outbox, transport=transport, sleep=lambda s: None) as client:
            receipt = client.deliver(round_config.round_id)
        assert tuple(transport.injected) == faults
        assert wire.sent == 3  # timeout, timeout and the final attempt reached the server; the reset did not
        status = admin(http, "GET", "/v1/status").json()
        assert status["accepted_total"] == 1 and status["rejected_total"] == 0  # counted once, never refused
        assert receipt.update_sha256 == sha256_hex(body)
        summary = admin(http, "POST", f"/v1/admin/rounds/{round_config.round_id}/close").json()
        assert summary["updates"] == 1
    service.close()


def test_flaky_transport_refuses_unknown_faults() -> None:
    with pytest.raises(ValueError, match=r"unknown network fault\(s\) \['dns'\]"):
        FlakyTransport(["dns"])
