"""Fuzzing the real aggregator app (FastAPI over the real service and database, in process) with hostile
device requests: no input may make it answer 5xx.

Every request is authenticated as an enrolled, selected device (fresh nonce, request signature, update
MAC and Idempotency-Key computed over the mutated bytes), so it passes authentication and reaches the
update parser: byte flips, truncation, spliced junk, and header JSON a library would never write
(repeated tensor names, nesting 30,000 deep, 5,000-digit ints, num_examples >= 2**63, non-ASCII text,
megabytes of metadata, byte ranges that do not tile the data). The check-in endpoint and the
authentication headers are fuzzed the same way (non-ASCII MACs, huge timestamps, junk bodies).

Runtime: ~500 requests in about 10 s on two cores (``FUZZ`` below sets ``max_examples``), after the
session's bundle export.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from ondevice.auth import HEADER_DEVICE, HEADER_NONCE, HEADER_SIGNATURE, HEADER_TIMESTAMP, signed_headers
from ondevice.protocol import RoundConfig, encode_update, sha256_hex, update_mac
from ondevice.server_client import CHECKIN_PATH
from ondevice.upload import CONTENT_TYPE, IDEMPOTENCY_HEADER, UPDATE_MAC_HEADER
from server_aggregator.app import create_app
from server_aggregator.service import Aggregator
from tests import update_mutations as mutations
from tests.server_harness import ADMIN_TOKEN, make_config, make_update

pytestmark = pytest.mark.slow

FUZZ = settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)


@dataclass(frozen=True)
class Device:
    http: TestClient
    device_id: str
    secret: bytes
    round_config: RoundConfig
    valid_body: bytes

    @property
    def upload_path(self) -> str:
        return f"/v1/rounds/{self.round_config.round_id}/updates"

    def upload_headers(self, body: bytes) -> dict[str, str]:
        return {
            "Content-Type": CONTENT_TYPE,
            UPDATE_MAC_HEADER: update_mac(body, self.secret),
            IDEMPOTENCY_HEADER: sha256_hex(body),
            **signed_headers(self.device_id, self.secret, "POST", self.upload_path, body),
        }


def _raw(headers: dict[str, str]) -> dict[bytes, bytes]:
    """Headers as UTF-8 bytes: the server reads them as latin-1 text, so non-ASCII stays non-ASCII."""
    return {name.encode("ascii"): value.encode("utf-8") for name, value in headers.items()}


@pytest.fixture(scope="module")
def device(tmp_path_factory: pytest.TempPathFactory, bundle_dir: Path, classifier_dir: Path) -> Iterator[Device]:
    """One enrolled device, selected (q = 1) for an open round, and a valid update of its own."""
    config = make_config(tmp_path_factory.mktemp("fuzz"), bundle_dir, classifier_dir, clients_per_round=1)
    service = Aggregator(config)
    try:
        with TestClient(create_app(service, run_closer=False), raise_server_exceptions=False) as http:
            operator = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
            enrolled = http.post("/v1/admin/devices", json={"device_id": "fuzz-phone"}, headers=operator)
            assert enrolled.status_code == 201, enrolled.text
            device_id, secret = enrolled.json()["device_id"], bytes.fromhex(enrolled.json()["secret"])
            opened = http.post("/v1/admin/rounds", json={"duration_s": 3600}, headers=operator)
            assert opened.status_code == 201, opened.text
            round_config = RoundConfig.from_dict(opened.json())
            checkin = http.post(
                CHECKIN_PATH, content=b"", headers=signed_headers(device_id, secret, "POST", CHECKIN_PATH, b"")
            )
            assert checkin.status_code == 200 and checkin.json()["selected"], checkin.text
            valid = encode_update(make_update(round_config, device_id, service.adapter_params(0), seed=0))
            yield Device(http, device_id, secret, round_config, valid)
    finally:
        service.close()


def _post_update(device: Device, body: bytes, headers: dict[str, str] | None = None) -> int:
    sent = _raw(headers if headers is not None else device.upload_headers(body))
    response = device.http.post(device.upload_path, content=body, headers=sent)
    assert response.status_code < 500, f"{response.status_code}: {response.text[:300]}"
    if response.status_code >= 400:
        assert "reason" in response.json() or "error" in response.json() or "detail" in response.json()
    return response.status_code


@pytest.mark.parametrize("name", sorted(mutations.NAMED))
def test_each_named_hostile_update_is_refused_with_a_4xx(device: Device, name: str) -> None:
    status = _post_update(device, mutations.NAMED[name](device.valid_body))
    assert 400 <= status < 500


def test_32_mib_of_metadata_is_refused_with_a_4xx(device: Device) -> None:
    assert 400 <= _post_update(device, mutations.huge_metadata(device.valid_body)) < 500


@FUZZ
@given(data=st.data())
def test_fuzzed_updates_never_get_a_5xx(device: Device, data: st.DataObject) -> None:
    _post_update(device, data.draw(mutations.hostile_bodies(device.valid_body)))


HOSTILE_TEXT = st.sampled_from(
    [
        "é" * 64,
        "٠" * 64,  # Arabic-Indic zeros: str.isdigit() says digits, and int() would accept them
        "²" * 12,  # superscript two: str.isdigit() says digit, int() raises
        "9" * 5000,  # past int()'s 4,300-digit limit
        "-1",
        "1" * 40,
        "ab" * 32 + " ",
        "AB" * 32,
        "",
        "x" * 8000,
    ]
) | st.text(max_size=80)
AUTH_FIELDS = [UPDATE_MAC_HEADER, IDEMPOTENCY_HEADER, HEADER_DEVICE, HEADER_TIMESTAMP, HEADER_NONCE, HEADER_SIGNATURE]


@FUZZ
@given(field=st.sampled_from(AUTH_FIELDS), value=HOSTILE_TEXT)
def test_fuzzed_upload_auth_headers_never_get_a_5xx(device: Device, field: str, value: str) -> None:
    body = device.valid_body
    headers = device.upload_headers(body)
    headers[field] = value
    assert 400 <= _post_update(device, body, headers) < 500


@FUZZ
@given(
    body=st.binary(max_size=4096),
    field=st.none() | st.sampled_from([HEADER_DEVICE, HEADER_TIMESTAMP, HEADER_NONCE, HEADER_SIGNATURE]),
    value=HOSTILE_TEXT,
)
def test_fuzzed_checkins_never_get_a_5xx(device: Device, body: bytes, field: str | None, value: str) -> None:
    headers = signed_headers(device.device_id, device.secret, "POST", CHECKIN_PATH, body)
    if field is not None:
        headers[field] = value
    response = device.http.post(CHECKIN_PATH, content=body, headers=_raw(headers))
    assert response.status_code < 500, f"{response.status_code}: {response.text[:300]}"
    assert response.status_code == 200 if field is None else 400 <= response.status_code < 500


@FUZZ
@given(length=HOSTILE_TEXT)
def test_a_fuzzed_content_length_never_gets_a_5xx(device: Device, length: str) -> None:
    body = b""
    headers = {**signed_headers(device.device_id, device.secret, "POST", CHECKIN_PATH, body), "Content-Length": length}
    response = device.http.post(CHECKIN_PATH, content=body, headers=_raw(headers))
    assert response.status_code < 500, f"Content-Length {length[:20]!r}: {response.status_code} {response.text[:300]}"


def test_the_fuzz_left_the_valid_update_acceptable(device: Device) -> None:
    """The fuzzing refused bytes without harming state: the device's real update is still taken (201, or
    200/409 if a harmless mutation happened to be stored first) and the service still answers."""
    assert _post_update(device, device.valid_body) in (200, 201, 409)
    assert device.http.get("/v1/health").status_code == 200
