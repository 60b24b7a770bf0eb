"""One contract class for the upload endpoint, run against the real aggregator and against the
fault-injecting stand-in (tests/upload_endpoint.py) that the upload-client retry tests use.

The stand-in exists because a real server cannot be told to drop a connection after storing, send
a captive-portal page or stall past a timeout; this class proves that, where both answer, they
answer alike (status, reason code, receipt), so the client tests exercise the real contract.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from ondevice.protocol import RoundConfig, encode_update, sha256_hex
from ondevice.server_client import AggregatorClient
from server_aggregator.config import DEFAULT_LOCAL_DP
from server_aggregator.service import Aggregator
from tests.server_harness import LiveServer, admin, enroll, make_config, make_update, post_update, upload_headers
from tests.upload_endpoint import UploadEndpoint

pytestmark = pytest.mark.slow


@dataclass
class Endpoint:
    """What the contract needs from an implementation."""

    url: str
    device_id: str
    secret: bytes
    round_id: int
    bodies: Callable[[int], bytes]  # seed -> a valid encoded update for (device_id, round_id)
    close_round: Callable[[], None]
    store_count: Callable[[], int]


@pytest.fixture(scope="module")
def real_parts(tmp_path_factory: pytest.TempPathFactory, bundle_dir: Path, classifier_dir: Path) -> Iterator[tuple]:  # type: ignore[type-arg]
    tmp = tmp_path_factory.mktemp("contract")
    service = Aggregator(make_config(tmp, bundle_dir, classifier_dir, clients_per_round=10_000, epsilon_budget=1e6))
    with LiveServer(service) as server:
        yield service, server
    service.close()


@pytest.fixture(params=["aggregator", "stand-in"])
def endpoint(request: pytest.FixtureRequest) -> Iterator[Endpoint]:
    if request.param == "aggregator":
        service, server = request.getfixturevalue("real_parts")
        with httpx.Client(base_url=server.url) as http:
            device_id, secret = enroll(http)
            active = service.status()["rounds"]
            if active and active[-1]["state"] == "open":
                admin(http, "POST", f"/v1/admin/rounds/{active[-1]['round_id']}/close").raise_for_status()
            config = RoundConfig.from_dict(admin(http, "POST", "/v1/admin/rounds").json())
        with AggregatorClient(server.url, device_id, secret) as api:
            assert api.check_in().selected  # clients_per_round ≥ N: q = 1
        base = service.adapter_params(config.global_adapter_version)

        def close() -> None:
            service.close_round(config.round_id)

        def accepted() -> int:
            return int(service.status()["rounds"][config.round_id]["accepted"])

        yield Endpoint(
            server.url,
            device_id,
            secret,
            config.round_id,
            lambda seed: encode_update(make_update(config, device_id, base, seed=seed)),
            close,
            accepted,
        )
        return
    secret = b"0123456789abcdef-contract"
    with UploadEndpoint({"phone-contract": secret}) as stand_in:
        # The stand-in accepts any decodable update: reuse the real-shaped bytes for the same round id.
        stand_config = RoundConfig(4, "b" * 64, 0, DEFAULT_LOCAL_DP, 1.0, 4e9)
        yield Endpoint(
            stand_in.base_url,
            "phone-contract",
            secret,
            4,
            lambda seed: encode_update(make_update(stand_config, "phone-contract", _zeros(), seed=seed)),
            lambda: stand_in.close_round(4),
            lambda: stand_in.store_count,
        )


def _zeros() -> dict[str, np.ndarray]:
    return {"head.weight": np.zeros((2, 384), np.float32), "head.bias": np.zeros(2, np.float32)}


def _reason(response: httpx.Response) -> str:
    return str(response.json()["reason"])


class TestUploadContract:
    def test_first_store_201_same_bytes_200_same_receipt(self, endpoint: Endpoint) -> None:
        body = endpoint.bodies(1)
        with httpx.Client(base_url=endpoint.url) as http:
            first = post_update(http, endpoint.device_id, endpoint.secret, endpoint.round_id, body)
            again = post_update(http, endpoint.device_id, endpoint.secret, endpoint.round_id, body)
        assert first.status_code == 201 and again.status_code == 200
        assert first.json() == again.json() and first.json()["update_sha256"] == sha256_hex(body)
        assert endpoint.store_count() == 1

    def test_other_bytes_for_the_same_round_are_a_conflict(self, endpoint: Endpoint) -> None:
        with httpx.Client(base_url=endpoint.url) as http:
            assert (
                post_update(
                    http, endpoint.device_id, endpoint.secret, endpoint.round_id, endpoint.bodies(1)
                ).status_code
                == 201
            )
            other = post_update(http, endpoint.device_id, endpoint.secret, endpoint.round_id, endpoint.bodies(2))
        assert other.status_code == 409 and _reason(other) == "duplicate_conflict"
        assert endpoint.store_count() == 1

    def test_authentication_failures(self, endpoint: Endpoint) -> None:
        body = endpoint.bodies(3)
        rid = endpoint.round_id
        path = f"/v1/rounds/{rid}/updates"
        with httpx.Client(base_url=endpoint.url) as http:
            unknown = post_update(http, "nobody-here", endpoint.secret, rid, body)
            forged = post_update(http, endpoint.device_id, b"x" * 32, rid, body)
            stale = post_update(http, endpoint.device_id, endpoint.secret, rid, body, now=1_000_000.0)
            headers = upload_headers(endpoint.device_id, endpoint.secret, rid, body)
            headers["X-Privtune-Update-Mac"] = "f" * 64
            bad_mac = http.post(path, content=body, headers=headers)
            headers = upload_headers(endpoint.device_id, endpoint.secret, rid, body)
            ok = http.post(path, content=body, headers=headers)
            replay = http.post(path, content=body, headers=headers)
        assert (forged.status_code, _reason(forged)) == (401, "bad_signature")
        assert (unknown.status_code, unknown.content) == (forged.status_code, forged.content)  # no id enumeration
        assert (stale.status_code, _reason(stale)) == (401, "stale_timestamp")
        assert (bad_mac.status_code, _reason(bad_mac)) == (401, "bad_signature")
        assert ok.status_code == 201
        assert (replay.status_code, _reason(replay)) == (401, "replayed_nonce")

    def test_framing_failures(self, endpoint: Endpoint) -> None:
        body = endpoint.bodies(4)
        rid = endpoint.round_id
        path = f"/v1/rounds/{rid}/updates"
        with httpx.Client(base_url=endpoint.url) as http:
            headers = upload_headers(endpoint.device_id, endpoint.secret, rid, body)
            headers["Content-Type"] = "text/plain"
            wrong_type = http.post(path, content=body, headers=headers)
            headers = upload_headers(endpoint.device_id, endpoint.secret, rid, body)
            headers["Idempotency-Key"] = "0" * 64  # the signature covers the declared body hash
            wrong_key = http.post(path, content=body, headers=headers)
            signed_for_other = upload_headers(endpoint.device_id, endpoint.secret, rid, body + b"x")
            mismatch = http.post(path, content=body, headers=signed_for_other)
            garbage = post_update(http, endpoint.device_id, endpoint.secret, rid, b"\x00" * 64)
        assert (wrong_type.status_code, _reason(wrong_type)) == (415, "malformed")
        assert (wrong_key.status_code, _reason(wrong_key)) == (401, "bad_signature")
        assert (mismatch.status_code, _reason(mismatch)) == (401, "bad_signature")
        assert (garbage.status_code, _reason(garbage)) == (400, "malformed")
        assert endpoint.store_count() == 0

    def test_a_closed_round_refuses_new_updates(self, endpoint: Endpoint) -> None:
        endpoint.close_round()
        with httpx.Client(base_url=endpoint.url) as http:
            late = post_update(http, endpoint.device_id, endpoint.secret, endpoint.round_id, endpoint.bodies(5))
        assert (late.status_code, _reason(late)) == (409, "round_not_open")
