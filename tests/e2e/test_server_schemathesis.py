"""Schemathesis against the served OpenAPI schema on a real uvicorn server: no input gives a 5xx.

Three passes over every operation: anonymous, with the admin token, and signed as an enrolled
device that was selected for the open round (so fuzzed update bodies reach the decoder and the
validator, not only the authentication layer).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from ondevice.auth import signed_headers
from ondevice.protocol import sha256_hex, update_mac
from ondevice.server_client import AggregatorClient
from ondevice.upload import IDEMPOTENCY_HEADER, UPDATE_MAC_HEADER
from server_aggregator.service import Aggregator
from tests.server_harness import ADMIN_TOKEN, LiveServer, admin, enroll, make_config

pytestmark = pytest.mark.slow

EXAMPLES = 25


class Live:
    def __init__(self, server: LiveServer, device_id: str, secret: bytes) -> None:
        self.server = server
        self.device_id = device_id
        self.secret = secret


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, bundle_dir: Path, classifier_dir: Path) -> Iterator[Live]:
    tmp = tmp_path_factory.mktemp("schemathesis")
    service = Aggregator(make_config(tmp, bundle_dir, classifier_dir, clients_per_round=1, epsilon_budget=1e6))
    with LiveServer(service) as server, httpx.Client(base_url=server.url) as http:
        device_id, secret = enroll(http, "fuzz-phone")
        assert admin(http, "POST", "/v1/admin/rounds").status_code == 201
        with AggregatorClient(server.url, device_id, secret) as client:
            assert client.check_in().selected
        yield Live(server, device_id, secret)
    service.close()


FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


def _body_bytes(case: Any) -> bytes:
    body = case.body
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode()
    return b""


def _check(case: Any, response: Any) -> None:
    where = f"{case.method} {case.formatted_path}"
    assert response.status_code < 500, (where, response.status_code, response.text[:500])
    content_type = response.headers.get("content-type") or [""]  # schemathesis: header -> list of values
    if response.status_code >= 400 and content_type[0].startswith("application/json"):
        assert isinstance(response.json(), dict), where


def _signed(live: Live, case: Any) -> dict[str, str]:
    body = _body_bytes(case)
    headers = signed_headers(live.device_id, live.secret, case.method.upper(), case.formatted_path, body)
    if case.body is None or isinstance(case.body, bytes | str):  # a JSON body is re-serialised: leave it unsigned
        headers[UPDATE_MAC_HEADER] = update_mac(body, live.secret)
        headers[IDEMPOTENCY_HEADER] = sha256_hex(body)
    return headers


HEADERS: dict[str, Callable[[Live, Any], dict[str, str]]] = {
    "anonymous": lambda live, case: {},
    "admin": lambda live, case: {"Authorization": f"Bearer {ADMIN_TOKEN}"},
    "signed-device": _signed,
}


@pytest.mark.parametrize("who", sorted(HEADERS))
def test_no_generated_request_gets_a_5xx(live: Live, who: str) -> None:
    """Every operation × ``EXAMPLES`` generated requests (schemathesis' own pytest plugin breaks under
    pytest 9 — ``Item._nodeid`` is gone — so the strategies are driven with hypothesis directly)."""
    schema = schemathesis.openapi.from_url(f"{live.server.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    labels = sorted(op.label for op in operations)
    assert "POST /v1/rounds/{round_id}/updates" in labels and "POST /v1/admin/rounds" in labels
    calls = 0
    for operation in operations:

        @FUZZ
        @given(case=operation.as_strategy())
        def run(case: Any) -> None:
            nonlocal calls
            calls += 1
            _check(case, case.call(base_url=live.server.url, headers=HEADERS[who](live, case)))

        run()
    assert calls >= len(operations) * 5
