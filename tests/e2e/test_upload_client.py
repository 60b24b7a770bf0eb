"""The device's outbox and upload client against a real HTTP server on loopback.

The server is ``tests/upload_endpoint.py``, a stand-in for the issue-5 aggregator's upload
endpoint (same contract; to be replaced by the real service once it lands). Sleeps are injected
(recorded, never waited) and the jitter source is seeded, so nothing here depends on time.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from ondevice.auth import signed_headers
from ondevice.protocol import (
    PROTOCOL_VERSION,
    AdapterUpdate,
    DpConfig,
    ErrorBody,
    ProtocolError,
    RejectionReason,
    UpdateReceipt,
    encode_update,
    sha256_hex,
    update_mac,
)
from ondevice.upload import (
    CONTENT_TYPE,
    IDEMPOTENCY_HEADER,
    UPDATE_MAC_HEADER,
    Outbox,
    OutboxConflict,
    UploadClient,
    UploadError,
    UploadRejected,
    UploadUnavailable,
)
from tests.upload_endpoint import Fault, UploadEndpoint

DEVICE = "phone-0042"
SECRET = b"device-secret-0123456789abcdef"


def make_body(round_id: int, device_id: str = DEVICE, seed: int = 0) -> bytes:
    """A real encoded ``AdapterUpdate`` with small tensors."""
    rng = np.random.default_rng(seed)
    tensors = {
        "encoder.layer.0.attention.self.query.lora_A.weight": rng.standard_normal((4, 16)).astype(np.float32),
        "encoder.layer.0.attention.self.query.lora_B.weight": rng.standard_normal((16, 4)).astype(np.float32),
        "head.bias": rng.standard_normal((2,)).astype(np.float32),
    }
    update = AdapterUpdate(
        round_id=round_id,
        device_id=device_id,
        manifest_hash=sha256_hex(b"manifest"),
        global_adapter_version=round_id,
        tensors=tensors,
        dp=DpConfig(clip_norm=1.0, noise_multiplier=1.1, sampling_rate=0.05, local_steps=10, learning_rate=0.01),
        local_epsilon=1.25,
        local_delta=1e-5,
        nonce=f"{seed:032x}",
    )
    return encode_update(update)


class UpperBound(random.Random):
    """Jitter source that always draws the top of the interval: exposes the backoff ceilings."""

    def uniform(self, a: float, b: float) -> float:
        return b


@pytest.fixture
def endpoint() -> Iterator[UploadEndpoint]:
    with UploadEndpoint({DEVICE: SECRET}) as ep:
        yield ep


@pytest.fixture
def outbox(tmp_path: Path) -> Outbox:
    return Outbox(tmp_path / "outbox")


@pytest.fixture
def sleeps() -> list[float]:
    return []


def client_for(base_url: str, outbox: Outbox, sleeps: list[float], **overrides: object) -> UploadClient:
    options: dict[str, object] = dict(
        timeout_s=5.0, max_attempts=6, backoff_base_s=0.5, backoff_max_s=30.0, rng=random.Random(7)
    )
    options.update(overrides)
    secret = options.pop("secret", SECRET)
    device = options.pop("device_id", DEVICE)
    return UploadClient(base_url, device, secret, outbox, sleep=sleeps.append, **options)  # type: ignore[arg-type]


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def assert_within_backoff(sleeps: list[float], base: float, cap: float) -> None:
    for attempt, delay in enumerate(sleeps, start=1):
        assert 0.0 <= delay <= min(cap, base * 2 ** (attempt - 1)), (attempt, delay)


# --------------------------------------------------------------------------- delivery


def test_happy_path_delivers_once_with_the_contract_headers(
    endpoint: UploadEndpoint, outbox: Outbox, sleeps: list[float]
) -> None:
    body = make_body(3)
    outbox.put(3, body)
    with client_for(endpoint.base_url, outbox, sleeps) as client:
        receipt = client.deliver(3)
    assert (receipt.round_id, receipt.device_id, receipt.update_sha256) == (3, DEVICE, sha256_hex(body))
    stored = endpoint.stored(DEVICE, 3)
    assert stored is not None and stored.body == body and stored.receipt == receipt
    assert endpoint.store_count == 1
    [request] = endpoint.requests
    assert (request.method, request.path, request.status) == ("POST", "/v1/rounds/3/updates", 201)
    assert request.idempotency_key == sha256_hex(body) == request.body_sha256
    assert outbox.receipt(3) == receipt
    assert outbox.pending() == []
    assert sleeps == []


RETRIED_FAULTS = [
    Fault.HTTP_500,
    Fault.HTTP_503,
    Fault.DROP_BEFORE_RESPONSE,
    Fault.SLEEP_PAST_TIMEOUT,
    Fault.DROP_AFTER_PROCESSING,
]


@pytest.mark.parametrize("fault", RETRIED_FAULTS)
def test_each_fault_is_retried_and_delivered_exactly_once(
    endpoint: UploadEndpoint, outbox: Outbox, sleeps: list[float], fault: Fault
) -> None:
    body = make_body(5)
    outbox.put(5, body)
    endpoint.fail_next(fault, count=2)
    timeout = 1.0 if fault is Fault.SLEEP_PAST_TIMEOUT else 5.0
    with client_for(endpoint.base_url, outbox, sleeps, timeout_s=timeout) as client:
        receipt = client.deliver(5)
    endpoint.stop()  # joins every handler, including stalled ones that answer late
    stored = endpoint.stored(DEVICE, 5)
    assert stored is not None and stored.body == body
    assert receipt == stored.receipt == outbox.receipt(5)
    assert endpoint.store_count == 1
    requests = endpoint.requests
    assert len(requests) == 3
    assert {r.idempotency_key for r in requests} == {r.body_sha256 for r in requests} == {sha256_hex(body)}
    assert len({r.nonce for r in requests}) == 3  # a fresh nonce per attempt
    assert len(sleeps) == 2
    assert_within_backoff(sleeps, base=0.5, cap=30.0)
    if fault is Fault.SLEEP_PAST_TIMEOUT:
        late = [r for r in requests if r.outcome.startswith("late")]
        assert len(late) == 2 and all(r.outcome == "late (duplicate, same receipt)" for r in late)


def test_lost_ack_retry_gets_the_same_receipt_and_one_stored_update(
    endpoint: UploadEndpoint, outbox: Outbox, sleeps: list[float]
) -> None:
    body = make_body(8)
    outbox.put(8, body)
    endpoint.fail_next(Fault.DROP_AFTER_PROCESSING)
    with client_for(endpoint.base_url, outbox, sleeps) as client:
        receipt = client.deliver(8)
    first, second = endpoint.requests
    assert (first.status, first.outcome) == (None, "stored, connection dropped before the response")
    assert (second.status, second.outcome) == (200, "duplicate, same receipt")
    stored = endpoint.stored(DEVICE, 8)
    assert stored is not None
    assert receipt == stored.receipt  # including accepted_at_unix from the first, unanswered request
    assert endpoint.store_count == 1
    assert len(sleeps) == 1


@pytest.mark.parametrize(("retry_after", "expected"), [("1", [1.0, 1.0]), ("7", [5.0, 5.0]), ("0", [0.0, 0.0])])
def test_retry_after_seconds_is_honoured_and_capped(
    endpoint: UploadEndpoint, outbox: Outbox, sleeps: list[float], retry_after: str, expected: list[float]
) -> None:
    outbox.put(1, make_body(1))
    endpoint.fail_next(Fault.HTTP_503, count=2, retry_after=retry_after)
    with client_for(endpoint.base_url, outbox, sleeps, backoff_max_s=5.0) as client:
        client.deliver(1)
    assert sleeps == expected
    assert endpoint.store_count == 1


def test_retry_after_as_http_date_falls_back_to_backoff(
    endpoint: UploadEndpoint, outbox: Outbox, sleeps: list[float]
) -> None:
    outbox.put(1, make_body(1))
    endpoint.fail_next(Fault.HTTP_503, count=2, retry_after="Wed, 21 Oct 2015 07:28:00 GMT")
    with client_for(endpoint.base_url, outbox, sleeps, rng=UpperBound()) as client:
        client.deliver(1)
    assert sleeps == [0.5, 1.0]


def test_unreachable_server_exhausts_attempts_then_a_later_deliver_succeeds(
    outbox: Outbox, sleeps: list[float]
) -> None:
    port = closed_port()
    body = make_body(2)
    outbox.put(2, body)
    with client_for(
        f"http://127.0.0.1:{port}", outbox, sleeps, max_attempts=5, backoff_max_s=3.0, rng=UpperBound()
    ) as c:
        with pytest.raises(UploadUnavailable, match="after 5 attempt"):
            c.deliver(2)
        assert sleeps == [0.5, 1.0, 2.0, 3.0]  # base·2^(n-1), capped at backoff_max_s; none after the last
        assert outbox.pending() == [2] and outbox.receipt(2) is None and outbox.get(2) == body
        with UploadEndpoint({DEVICE: SECRET}, port=port) as endpoint:
            receipt = c.deliver(2)
            assert endpoint.store_count == 1 and len(endpoint.requests) == 1
    assert receipt.update_sha256 == sha256_hex(body)
    assert outbox.pending() == []


def test_backoff_is_full_jitter_below_the_capped_exponential_ceiling(outbox: Outbox, sleeps: list[float]) -> None:
    client = client_for("http://127.0.0.1:9", outbox, sleeps, backoff_base_s=0.5, backoff_max_s=10.0)
    for attempt in range(1, 9):
        ceiling = min(10.0, 0.5 * 2 ** (attempt - 1))
        draws = [client.backoff_delay(attempt) for _ in range(300)]
        assert min(draws) >= 0.0 and max(draws) <= ceiling
        assert min(draws) < 0.1 * ceiling and max(draws) > 0.9 * ceiling  # spread over the whole interval
    assert 0.0 <= client.backoff_delay(10_000) <= 10.0  # no overflow for absurd attempt numbers
    client.close()


def test_every_attempt_is_logged(
    endpoint: UploadEndpoint, outbox: Outbox, sleeps: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    outbox.put(4, make_body(4))
    endpoint.fail_next(Fault.HTTP_500)
    caplog.set_level(logging.INFO, logger="ondevice.upload")
    with client_for(endpoint.base_url, outbox, sleeps) as client:
        client.deliver(4)
    attempts = [r for r in caplog.records if hasattr(r, "attempt")]
    assert [(r.round_id, r.attempt, r.outcome) for r in attempts] == [  # type: ignore[attr-defined]
        (4, 1, "HTTP 500"),
        (4, 2, "HTTP 201 delivered"),
    ]
    assert "attempt 1/6: HTTP 500" in caplog.text


# --------------------------------------------------------------------------- rejections


def test_4xx_is_rejected_with_its_reason_and_not_retried(
    endpoint: UploadEndpoint, outbox: Outbox, sleeps: list[float]
) -> None:
    body = make_body(6)
    outbox.put(6, body)
    endpoint.close_round(6)
    with client_for(endpoint.base_url, outbox, sleeps) as client, pytest.raises(UploadRejected) as excinfo:
        client.deliver(6)
    assert excinfo.value.status == 409
    assert excinfo.value.error.reason is RejectionReason.ROUND_NOT_OPEN
    assert len(endpoint.requests) == 1 and sleeps == []
    assert endpoint.store_count == 0
    assert outbox.get(6) == body  # kept
    assert outbox.rejection(6) == excinfo.value.error
    assert outbox.pending() == [] and outbox.receipt(6) is None


@pytest.mark.parametrize(
    ("device_id", "secret", "body_round", "status", "reason"),
    [
        (DEVICE, b"another-secret-0123456789", 9, 401, RejectionReason.BAD_SIGNATURE),
        ("phone-unknown", SECRET, 9, 401, RejectionReason.BAD_SIGNATURE),
        (DEVICE, SECRET, 10, 400, RejectionReason.WRONG_ROUND),
    ],
)
def test_server_side_checks_reject_with_a_reason(
    endpoint: UploadEndpoint,
    outbox: Outbox,
    sleeps: list[float],
    device_id: str,
    secret: bytes,
    body_round: int,
    status: int,
    reason: RejectionReason,
) -> None:
    outbox.put(9, make_body(body_round, device_id=device_id))
    client = client_for(endpoint.base_url, outbox, sleeps, device_id=device_id, secret=secret)
    with client, pytest.raises(UploadRejected) as excinfo:
        client.deliver(9)
    assert (excinfo.value.status, excinfo.value.error.reason) == (status, reason)
    assert len(endpoint.requests) == 1 and endpoint.store_count == 0


def test_different_bytes_for_a_delivered_round_get_409_duplicate_conflict(
    endpoint: UploadEndpoint, tmp_path: Path, sleeps: list[float]
) -> None:
    first, second = Outbox(tmp_path / "a"), Outbox(tmp_path / "b")  # b: a device that lost its storage
    first.put(11, make_body(11, seed=1))
    second.put(11, make_body(11, seed=2))
    with client_for(endpoint.base_url, first, sleeps) as client:
        receipt = client.deliver(11)
    with client_for(endpoint.base_url, second, sleeps) as client, pytest.raises(UploadRejected) as excinfo:
        client.deliver(11)
    assert (excinfo.value.status, excinfo.value.error.reason) == (409, RejectionReason.DUPLICATE_CONFLICT)
    stored = endpoint.stored(DEVICE, 11)
    assert stored is not None and stored.receipt == receipt and stored.body == make_body(11, seed=1)
    assert endpoint.store_count == 1 and len(endpoint.requests) == 2


def test_a_body_tampered_in_transit_is_rejected_and_a_later_deliver_recovers(
    endpoint: UploadEndpoint, outbox: Outbox, sleeps: list[float]
) -> None:
    body = make_body(12)
    outbox.put(12, body)
    endpoint.fail_next(Fault.TAMPER_BODY)
    with client_for(endpoint.base_url, outbox, sleeps) as client:
        with pytest.raises(UploadRejected) as excinfo:
            client.deliver(12)
        assert (excinfo.value.status, excinfo.value.error.reason) == (401, RejectionReason.BAD_SIGNATURE)
        assert endpoint.store_count == 0 and outbox.rejection(12) is not None
        receipt = client.deliver(12)  # an explicit deliver tries again; the outbox kept the bytes
    assert receipt.update_sha256 == sha256_hex(body)
    assert outbox.rejection(12) is None and endpoint.store_count == 1


def test_server_checks_the_update_mac_separately_from_the_request_signature(endpoint: UploadEndpoint) -> None:
    body = make_body(13)
    path = "/v1/rounds/13/updates"

    def headers_with(mac: str) -> dict[str, str]:
        extra = {UPDATE_MAC_HEADER: mac, IDEMPOTENCY_HEADER: sha256_hex(body), "Content-Type": CONTENT_TYPE}
        return {**signed_headers(DEVICE, SECRET, "POST", path, body), **extra}

    with httpx.Client(base_url=endpoint.base_url, timeout=5.0) as http:
        wrong_mac = http.post(path, content=body, headers=headers_with(update_mac(body + b"x", SECRET)))
        assert (wrong_mac.status_code, wrong_mac.json()["reason"]) == (401, "bad_signature")
        assert "update MAC" in wrong_mac.json()["message"]
        with_query = http.post(path + "?x=1", content=body, headers=headers_with(update_mac(body, SECRET)))
        assert (with_query.status_code, with_query.json()["reason"]) == (400, "malformed")
        assert endpoint.store_count == 0
        good = headers_with(update_mac(body, SECRET))
        assert http.post(path, content=body, headers=good).status_code == 201
        replay = http.post(path, content=body, headers=good)
        assert (replay.status_code, replay.json()["reason"]) == (401, "replayed_nonce")
    assert endpoint.store_count == 1


# --------------------------------------------------------------------------- contract violations


def test_a_receipt_for_other_bytes_is_an_error_and_leaves_the_round_pending(
    endpoint: UploadEndpoint, outbox: Outbox, sleeps: list[float]
) -> None:
    outbox.put(14, make_body(14))
    endpoint.fail_next(Fault.WRONG_RECEIPT)
    with client_for(endpoint.base_url, outbox, sleeps) as client:
        with pytest.raises(UploadError, match="expected") as excinfo:
            client.deliver(14)
        assert type(excinfo.value) is UploadError and excinfo.value.status == 200
        assert outbox.receipt(14) is None and outbox.pending() == [14]
        assert len(endpoint.requests) == 1 and sleeps == []
        client.deliver(14)
    assert endpoint.store_count == 1


@pytest.mark.parametrize(
    ("fault", "status", "snippet"), [(Fault.NOT_JSON_200, 200, "Wi-Fi"), (Fault.HTML_404, 404, "404")]
)
def test_a_non_json_response_is_an_upload_error_with_status_and_snippet(
    endpoint: UploadEndpoint, outbox: Outbox, sleeps: list[float], fault: Fault, status: int, snippet: str
) -> None:
    outbox.put(15, make_body(15))
    endpoint.fail_next(fault)
    with client_for(endpoint.base_url, outbox, sleeps) as client, pytest.raises(UploadError) as excinfo:
        client.deliver(15)
    assert type(excinfo.value) is UploadError
    assert excinfo.value.status == status and snippet in str(excinfo.value) and "<html>" in str(excinfo.value)
    assert len(endpoint.requests) == 1 and sleeps == []
    assert outbox.pending() == [15] and outbox.rejection(15) is None


@pytest.mark.parametrize(
    "fields",
    [{"round_id": 17}, {"device_id": "phone-9"}, {"accepted_at_unix": "x"}, {"protocol_version": PROTOCOL_VERSION + 1}],
)
def test_a_receipt_naming_another_round_or_device_or_malformed_is_refused(
    endpoint: UploadEndpoint, outbox: Outbox, sleeps: list[float], fields: dict[str, object]
) -> None:
    outbox.put(16, make_body(16))
    endpoint.fail_next(Fault.WRONG_RECEIPT, receipt_fields=fields)
    with client_for(endpoint.base_url, outbox, sleeps) as client:
        with pytest.raises(UploadError) as excinfo:
            client.deliver(16)
        assert type(excinfo.value) is UploadError and excinfo.value.status == 200
        assert outbox.receipt(16) is None and outbox.pending() == [16]
        receipt = client.deliver(16)
    assert receipt == outbox.receipt(16) and endpoint.store_count == 1


# --------------------------------------------------------------------------- restart


def test_a_new_client_on_the_same_outbox_resumes_and_a_delivered_round_makes_no_request(
    endpoint: UploadEndpoint, tmp_path: Path, sleeps: list[float]
) -> None:
    directory = tmp_path / "outbox"
    body = make_body(20)
    Outbox(directory).put(20, body)
    endpoint.fail_next(Fault.HTTP_503)
    client = client_for(endpoint.base_url, Outbox(directory), sleeps, max_attempts=1)
    with client, pytest.raises(UploadUnavailable):
        client.deliver(20)
    assert Outbox(directory).pending() == [20]

    with client_for(endpoint.base_url, Outbox(directory), sleeps) as client:  # "after a restart"
        receipt = client.deliver(20)
    assert endpoint.store_count == 1 and len(endpoint.requests) == 2

    with client_for(endpoint.base_url, Outbox(directory), sleeps) as client:
        assert client.deliver(20) == receipt
    with client_for(f"http://127.0.0.1:{closed_port()}", Outbox(directory), sleeps, max_attempts=1) as client:
        assert client.deliver(20) == receipt  # no network needed at all
    assert len(endpoint.requests) == 2 and endpoint.store_count == 1
    assert Outbox(directory).receipt(20) == receipt and Outbox(directory).pending() == []


# --------------------------------------------------------------------------- outbox


def test_outbox_put_is_idempotent_and_refuses_different_bytes(outbox: Outbox) -> None:
    body = make_body(1)
    path = outbox.put(1, body)
    assert outbox.put(1, body) == path and path.read_bytes() == body
    with pytest.raises(OutboxConflict, match="round 1 already holds"):
        outbox.put(1, make_body(1, seed=9))
    assert outbox.get(1) == body
    assert outbox.get(2) is None and outbox.receipt(1) is None


def test_outbox_pending_is_numeric_and_excludes_delivered_and_rejected(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path)
    for round_id in (10, 2, 33, 4):
        outbox.put(round_id, make_body(round_id))
    (tmp_path / "notes.txt").write_text("ignored")
    assert outbox.pending() == [2, 4, 10, 33]
    outbox.mark_delivered(4, UpdateReceipt(4, DEVICE, sha256_hex(make_body(4)), 5.0))
    outbox.mark_rejected(33, ErrorBody(RejectionReason.NOT_SELECTED, "not selected"))
    reopened = Outbox(tmp_path)
    assert reopened.pending() == [2, 10]
    assert reopened.receipt(4) == UpdateReceipt(4, DEVICE, sha256_hex(make_body(4)), 5.0)
    assert reopened.rejection(33) == ErrorBody(RejectionReason.NOT_SELECTED, "not selected")


def test_outbox_refuses_bad_arguments_and_mismatched_receipts(outbox: Outbox) -> None:
    for bad in (-1, True, 1.0, "1"):
        with pytest.raises(ValueError, match="round_id"):
            outbox.put(bad, b"x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-empty bytes"):
        outbox.put(1, b"")
    body = make_body(1)
    outbox.put(1, body)
    with pytest.raises(ValueError, match="does not match"):
        outbox.mark_delivered(1, UpdateReceipt(1, DEVICE, sha256_hex(b"other"), 5.0))
    with pytest.raises(ValueError, match="does not match"):
        outbox.mark_delivered(1, UpdateReceipt(2, DEVICE, sha256_hex(body), 5.0))
    with pytest.raises(ValueError, match="no update"):
        outbox.mark_delivered(3, UpdateReceipt(3, DEVICE, sha256_hex(body), 5.0))
    outbox.mark_delivered(1, UpdateReceipt(1, DEVICE, sha256_hex(body), 5.0))
    outbox.mark_delivered(1, UpdateReceipt(1, DEVICE, sha256_hex(body), 5.0))  # same receipt: no-op
    with pytest.raises(OutboxConflict):
        outbox.mark_delivered(1, UpdateReceipt(1, DEVICE, sha256_hex(body), 6.0))


def test_outbox_writes_fsync_the_file_then_the_directory(outbox: Outbox, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    outbox.put(1, make_body(1))
    assert synced == ["file", "dir"]
    outbox.mark_delivered(1, UpdateReceipt(1, DEVICE, sha256_hex(make_body(1)), 5.0))
    assert synced == ["file", "dir", "file", "dir"]
    assert sorted(p.name for p in outbox.directory.iterdir()) == ["round-1.receipt.json", "round-1.update"]


def test_a_crash_before_the_rename_leaves_no_update_and_no_temp_file(
    outbox: Outbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(src: object, dst: object) -> None:
        raise OSError("simulated power loss")

    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", crash)
        with pytest.raises(OSError, match="power loss"):
            outbox.put(1, make_body(1))
    assert outbox.get(1) is None and outbox.pending() == []
    assert list(outbox.directory.iterdir()) == []
    outbox.put(1, make_body(1))
    assert outbox.get(1) == make_body(1)


CRASH_BODIES = {round_id: bytes([round_id + 1]) * (256 * 1024) for round_id in range(2)}
_IO_CALLS = ("open", "write", "fsync", "close", "replace")


def _write_then_die_at(directory: Path, crash_at: int) -> int:
    """Fork a writer that SIGKILLs itself just before its ``crash_at``-th os-level I/O call; its exit status."""
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        try:
            calls = 0

            def hooked(real):  # type: ignore[no-untyped-def]
                def call(*args, **kwargs):  # type: ignore[no-untyped-def]
                    nonlocal calls
                    calls += 1
                    if calls == crash_at:
                        os.kill(os.getpid(), signal.SIGKILL)
                    if real is real_write:  # short writes (legal POSIX): several calls per file
                        return real(args[0], bytes(args[1][: 64 * 1024]))
                    return real(*args, **kwargs)

                return call

            real_write = os.write
            for name in _IO_CALLS:
                setattr(os, name, hooked(getattr(os, name)))
            outbox = Outbox(directory)
            for round_id, body in CRASH_BODIES.items():
                outbox.put(round_id, body)
            os._exit(0)
        finally:
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    return status


def test_a_writer_killed_at_any_io_call_never_leaves_a_torn_update(tmp_path: Path) -> None:
    seen: set[tuple[bool, ...]] = set()
    for crash_at in range(1, 200):
        directory = tmp_path / f"crash-{crash_at}"
        status = _write_then_die_at(directory, crash_at)
        outbox = Outbox(directory)  # also clears the killed writer's temp file
        present = tuple(outbox.get(r) is not None for r in CRASH_BODIES)
        for round_id, body in CRASH_BODIES.items():
            assert outbox.get(round_id) in (None, body), f"torn update for round {round_id} at crash point {crash_at}"
        assert present in {(False, False), (True, False), (True, True)}
        assert not [p.name for p in directory.iterdir() if p.name.endswith(".tmp")]
        seen.add(present)
        if os.WIFEXITED(status):  # crash_at beyond the last I/O call: the writer finished
            assert os.WEXITSTATUS(status) == 0 and present == (True, True)
            break
        assert os.WTERMSIG(status) == signal.SIGKILL
    else:
        pytest.fail("the writer never finished: more I/O calls than expected")
    assert seen == {(False, False), (True, False), (True, True)}


def test_client_refuses_bad_configuration(outbox: Outbox) -> None:
    for url in ("ftp://host", "http://host/base?x=1", "not a url"):
        with pytest.raises(ValueError, match="base_url"):
            UploadClient(url, DEVICE, SECRET, outbox)
    with pytest.raises(ProtocolError, match="at least 16 bytes"):
        UploadClient("http://host", DEVICE, b"short", outbox)
    with pytest.raises(ValueError, match="device_id"):
        UploadClient("http://host", "bad device", SECRET, outbox)
    with pytest.raises(ValueError, match="max_attempts"):
        UploadClient("http://host", DEVICE, SECRET, outbox, max_attempts=0)
    with pytest.raises(ValueError, match="backoff_max_s"):
        UploadClient("http://host", DEVICE, SECRET, outbox, backoff_base_s=2.0, backoff_max_s=1.0)
    with UploadClient("http://host", DEVICE, SECRET, outbox) as client, pytest.raises(ValueError, match="no update"):
        client.deliver(99)


def test_a_base_url_path_prefix_is_part_of_the_signed_path(tmp_path: Path, sleeps: list[float]) -> None:
    outbox = Outbox(tmp_path)
    outbox.put(3, make_body(3))
    with UploadEndpoint({DEVICE: SECRET}, prefix="/api") as endpoint:
        assert endpoint.base_url.endswith("/api")
        with client_for(endpoint.base_url + "/", outbox, sleeps) as client:
            client.deliver(3)
        [request] = endpoint.requests
    assert (request.path, request.status) == ("/api/v1/rounds/3/updates", 201)
