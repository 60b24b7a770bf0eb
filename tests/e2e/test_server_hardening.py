"""Issue 16: the aggregator under abuse, at rest and after crashes (a real server on loopback, real signatures).

Each test names the class of problem it covers: nothing is read before authentication, refusals
cannot grow the database, slow or oversized requests are cut, files and secrets at rest are
private, an unknown id looks like a bad signature, revocation is immediate, crash leftovers and
damaged state are found at start-up, and what leaves the server is only what DP covers.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import stat
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from ondevice.auth import signed_headers
from ondevice.protocol import RoundConfig, encode_update, sha256_hex
from ondevice.upload import CONTENT_TYPE, IDEMPOTENCY_HEADER, UPDATE_MAC_HEADER
from server_aggregator import sealing
from server_aggregator.db import Database, DatabaseError
from server_aggregator.http_guard import HttpLimits
from server_aggregator.server import Transport
from server_aggregator.service import Aggregator, ServiceError
from tests.server_harness import (
    ADMIN_TOKEN,
    LiveServer,
    admin,
    enroll,
    make_update,
    post_update,
    upload_headers,
)

pytestmark = pytest.mark.slow


def _open(http: httpx.Client) -> RoundConfig:
    response = admin(http, "POST", "/v1/admin/rounds", {"duration_s": 600})
    assert response.status_code == 201, response.text
    return RoundConfig.from_dict(response.json())


def _raw_request(port: int, head: bytes, *, timeout: float = 5.0) -> tuple[bytes, float]:
    """Send only ``head`` (request line + headers, no body) and read the answer; (bytes, seconds)."""
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    return answer, time.monotonic() - start


def _status_code(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def _closed_within(sock: socket.socket, seconds: float, dribble: bytes | None = None) -> float | None:
    """Seconds until the server closes ``sock`` (sending ``dribble`` every 0.2 s meanwhile), or None."""
    start = time.monotonic()
    sock.settimeout(0.2)
    while time.monotonic() - start < seconds:
        try:
            if dribble is not None:
                sock.sendall(dribble)
            if sock.recv(65536) == b"":
                return time.monotonic() - start
        except TimeoutError:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return time.monotonic() - start
    return None


def _is_closed(sock: socket.socket) -> bool:
    """True if the server has closed ``sock`` (a non-blocking read sees EOF or a reset)."""
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True
    finally:
        sock.setblocking(True)


# --------------------------------------------------------------------------- nothing read before authentication


def test_no_body_is_read_before_authentication_round_and_selection(tmp_config) -> None:  # type: ignore[no-untyped-def]
    """Announced 100 MiB bodies are answered from the headers alone (the body is never sent)."""
    service = Aggregator(tmp_config(clients_per_round=1))
    with LiveServer(service) as server, httpx.Client(base_url=server.url) as http:
        chosen, chosen_secret = enroll(http, "chosen")
        cfg = _open(http)
        big = 100 * 2**20
        # admin: no token → 401; the right token but an oversized body → 413; neither reads the body
        for token, want in ((None, 401), (ADMIN_TOKEN, 413)):
            auth = f"Authorization: Bearer {token}\r\n".encode() if token else b""
            head = b"POST /v1/admin/rounds HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + auth
            answer, seconds = _raw_request(server.port, head + f"Content-Length: {big}\r\n\r\n".encode())
            assert _status_code(answer) == want and seconds < 2.0, (answer[:80], seconds)

        body = encode_update(make_update(cfg, chosen, service.adapter_params(0), seed=1))
        path = f"/v1/rounds/{cfg.round_id}/updates"

        def upload_head(device: str, secret: bytes, length: int) -> bytes:
            headers = upload_headers(device, secret, cfg.round_id, body)
            headers["Content-Length"] = str(length)
            lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
            return f"POST {path} HTTP/1.1\r\nHost: x\r\n{lines}\r\n".encode()

        # a bad signature → 401, before the body
        answer, seconds = _raw_request(server.port, upload_head(chosen, b"\x01" * 32, big))
        assert _status_code(answer) == 401 and seconds < 2.0
        # an enrolled device that has not been selected → 403, before the body
        other, other_secret = enroll(http, "other")
        answer, _ = _raw_request(server.port, upload_head(other, other_secret, big))
        assert _status_code(answer) == 403
        # the selected device announcing more than the round's exact update size → 413, before the body
        assert http.post(
            "/v1/checkin", content=b"{}", headers=signed_headers(chosen, chosen_secret, "POST", "/v1/checkin", b"{}")
        ).json()["selected"]
        limit = service.upload_body_limit(cfg.round_id)
        assert len(body) <= limit < len(body) + 70_000  # the exact tensor bytes plus header room
        answer, _ = _raw_request(server.port, upload_head(chosen, chosen_secret, limit + 1))
        assert _status_code(answer) == 413
        # and the real update still goes through
        assert post_update(http, chosen, chosen_secret, cfg.round_id, body).status_code == 201
        status = admin(http, "GET", "/v1/status").json()
        assert status["rejected_by_reason"] == {"bad_signature": 1, "not_selected": 1, "too_large": 1}
    service.close()


def test_refusals_are_counters_and_cannot_grow_the_database(tmp_config, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """400 refusals carrying 8 KiB device headers add counts, not rows; nothing the client sent is stored."""
    service = Aggregator(tmp_config())
    db_file = tmp_path / "state.db"
    with LiveServer(service) as server, httpx.Client(base_url=server.url) as http:
        enroll(http, "phone")
        service.flush_rejections()
        before = db_file.stat().st_size + Path(f"{db_file}-wal").stat().st_size
        marker = "Z" * 8000
        for i in range(400):
            headers = signed_headers("phone", b"\x02" * 32, "POST", "/v1/checkin", b"{}")
            headers["X-Privtune-Device"] = f"{marker}{i}" if i % 2 else "phone"
            response = http.post("/v1/checkin", content=b"{}", headers=headers)
            assert 400 <= response.status_code < 500
        status = admin(http, "GET", "/v1/status").json()
        assert status["rejected_total"] == 400
        after = db_file.stat().st_size + Path(f"{db_file}-wal").stat().st_size
    service.close()
    assert after - before < 200_000, after - before  # one header alone was 8 KB: 400 rows would be 3.2 MB
    with sqlite3.connect(db_file) as conn:
        rows = conn.execute("SELECT reason, status, count FROM rejection_counts").fetchall()
        assert len(rows) <= 2 and sum(r[2] for r in rows) == 400
        dump = "\n".join(conn.iterdump())
    assert marker[:100] not in dump


# --------------------------------------------------------------------------- slow and oversized requests


def test_slow_oversized_and_excess_connections_are_cut(tmp_config) -> None:  # type: ignore[no-untyped-def]
    limits = HttpLimits(header_timeout_s=1.0, body_timeout_s=1.5, max_connections=16, max_header_bytes=8192)
    service = Aggregator(tmp_config())
    with LiveServer(service, limits=limits) as server:
        port = server.port
        # headers dribbled one byte at a time are cut at the header deadline, not kept alive by the dribble
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n")
            closed = _closed_within(sock, 6.0, dribble=b"X")
        assert closed is not None and closed < 3.0, closed
        # a connection that sends nothing is cut too
        with socket.create_connection(("127.0.0.1", port)) as sock:
            closed = _closed_within(sock, 6.0)
        assert closed is not None and closed < 3.0, closed
        # a body that never completes is cut at the body deadline
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(b"POST /v1/checkin HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{")
            closed = _closed_within(sock, 6.0, dribble=b" ")
        assert closed is not None and closed < 4.0, closed
        # a header block over the cap is refused
        answer, _ = _raw_request(port, b"GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n")
        assert answer == b"" or 400 <= _status_code(answer) < 500
        # at the cap, the connections that have waited longest for their request are evicted first,
        # so a client that sends its request at once is still served while idle sockets pile up
        idle = []
        try:
            for _ in range(limits.max_connections + 4):
                idle.append(socket.create_connection(("127.0.0.1", port)))
                time.sleep(0.01)
            time.sleep(0.3)  # well inside the 1 s header deadline: only evictions have closed sockets yet
            evicted = [_is_closed(sock) for sock in idle]
            assert evicted[:4] == [True] * 4 and not any(evicted[8:]), evicted
            for _ in range(3):
                assert httpx.get(f"{server.url}/v1/health", timeout=5).json()["status"] == "ok"
        finally:
            for sock in idle:
                sock.close()
    service.close()


# --------------------------------------------------------------------------- secrets and transport


def test_state_files_are_private_and_secrets_sealed(tmp_config, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    db_file = tmp_path / "state.db"
    db_file.write_bytes(b"")
    os.chmod(db_file, 0o644)  # an operator-made file is tightened
    service = Aggregator(tmp_config())
    secret = service.enroll("phone").secret
    service.close()
    for name in (db_file, Path(f"{db_file}-wal"), Path(f"{db_file}-shm")):
        if name.exists():
            assert stat.S_IMODE(name.stat().st_mode) == 0o600, name
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("state.db*"))
    assert secret not in raw and secret.hex().encode() not in raw
    with sqlite3.connect(db_file) as conn:
        (blob,) = conn.execute("SELECT secret FROM devices WHERE device_id = 'phone'").fetchone()
    assert sealing.unseal(bytes(range(32)), "phone", blob) == secret
    with pytest.raises(sealing.SealError):
        sealing.unseal(bytes(range(32)), "another-phone", blob)  # a blob moved to another id fails its tag
    # another key is refused at start-up with a clear message (not every device failing its signature)
    with pytest.raises(ServiceError, match="sealed under another device key"):
        Aggregator(tmp_config(device_key=b"\x07" * 32))


def test_key_file_is_created_private_and_refused_when_readable(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv(sealing.KEY_ENV, raising=False)
    path = tmp_path / "device-key"
    key, created = sealing.load_or_create_key(path)
    assert created and len(key) == 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sealing.load_or_create_key(path) == (key, False)
    os.chmod(path, 0o644)
    with pytest.raises(ValueError, match="chmod 600"):
        sealing.load_or_create_key(path)


def test_tls_is_served_and_plain_http_off_loopback_is_refused(tmp_config, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="refusing to serve plain HTTP"):
        Transport(host="0.0.0.0")
    assert Transport(host="0.0.0.0", insecure=True).host == "0.0.0.0"
    assert Transport(host="::1").host == "::1" and Transport(host="localhost").host == "localhost"
    with pytest.raises(ValueError, match="both"):
        Transport(host="0.0.0.0", ssl_certfile=tmp_path / "c.pem")
    openssl = shutil.which("openssl")
    assert openssl is not None, "the TLS test needs the openssl command"
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    assert Transport(host="0.0.0.0", ssl_certfile=cert, ssl_keyfile=key).tls
    service = Aggregator(tmp_config())
    with LiveServer(service, tls=(cert, key)) as server:
        assert server.url.startswith("https://")
        assert httpx.get(f"{server.url}/v1/health", verify=str(cert)).json()["status"] == "ok"
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{server.port}/v1/health", timeout=3).raise_for_status()
    service.close()


def test_unknown_id_is_indistinguishable_and_revocation_is_immediate(tmp_config) -> None:  # type: ignore[no-untyped-def]
    service = Aggregator(tmp_config(clients_per_round=2, round_duration_s=600))
    with LiveServer(service) as server, httpx.Client(base_url=server.url) as http:
        (a, a_secret), (b, b_secret) = enroll(http, "phone-a"), enroll(http, "phone-b")
        cfg = _open(http)
        for device, secret in ((a, a_secret), (b, b_secret)):
            check = http.post(
                "/v1/checkin", content=b"{}", headers=signed_headers(device, secret, "POST", "/v1/checkin", b"{}")
            )
            assert check.json()["selected"]
        v0 = service.adapter_params(0)
        assert (
            post_update(http, a, a_secret, cfg.round_id, encode_update(make_update(cfg, a, v0, seed=1))).status_code
            == 201
        )
        assert (
            post_update(http, b, b_secret, cfg.round_id, encode_update(make_update(cfg, b, v0, seed=2))).status_code
            == 201
        )
        # unknown id vs known id with a wrong secret: the same status and the same bytes
        unknown = http.post(
            "/v1/checkin", content=b"{}", headers=signed_headers("nobody", a_secret, "POST", "/v1/checkin", b"{}")
        )
        wrong = http.post(
            "/v1/checkin", content=b"{}", headers=signed_headers(a, b_secret, "POST", "/v1/checkin", b"{}")
        )
        assert (unknown.status_code, unknown.content) == (wrong.status_code, wrong.content) == (401, wrong.content)
        # revocation: the very next request is refused (no cache window), and the pending update is dropped
        check = http.post(
            "/v1/checkin", content=b"{}", headers=signed_headers(b, b_secret, "POST", "/v1/checkin", b"{}")
        )
        assert check.status_code == 200
        revoked = admin(http, "POST", f"/v1/admin/devices/{b}/revoke")
        assert revoked.json()["pending_updates_dropped"] == 1
        again = http.post(
            "/v1/checkin", content=b"{}", headers=signed_headers(b, b_secret, "POST", "/v1/checkin", b"{}")
        )
        assert again.status_code == 401 and again.json()["reason"] == "revoked_device"
        summary = admin(http, "POST", f"/v1/admin/rounds/{cfg.round_id}/close").json()
        assert summary["updates"] == 1  # only phone-a's update was merged
    service.close()


# --------------------------------------------------------------------------- crash leftovers and integrity


def test_startup_removes_partials_rewrites_damaged_folders_and_refuses_damaged_state(
    tmp_config, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    config = tmp_config()
    Aggregator(config).close()
    published = config.publish_dir
    partial = published / ".v000001.partial-123-abcd"
    partial.mkdir()
    (partial / "adapter_model.safetensors").write_bytes(b"half")
    damaged = published / "v000000" / "adapter_model.safetensors"
    original = damaged.read_bytes()
    damaged.write_bytes(original[:-8] + b"\x00" * 8)
    service = Aggregator(config)
    assert not partial.exists()
    assert damaged.read_bytes() == original  # re-written from the database's verified tensors
    service.close()
    # a damaged tensor blob in the database: never served (503), and start-up refuses with a clear message
    service = Aggregator(config)
    with LiveServer(service) as server, httpx.Client(base_url=server.url) as http:
        device, secret = enroll(http, "phone")
        served = http.get("/v1/adapters/0", headers=signed_headers(device, secret, "GET", "/v1/adapters/0", b""))
        assert served.status_code == 200
        with sqlite3.connect(tmp_path / "state.db") as conn:
            conn.execute("UPDATE versions SET params = zeroblob(length(params)) WHERE version = 0")
        damaged_answer = http.get(
            "/v1/adapters/0", headers=signed_headers(device, secret, "GET", "/v1/adapters/0", b"")
        )
        assert damaged_answer.status_code == 503, damaged_answer.text
    service.close()
    with pytest.raises(ServiceError, match="version 0 is damaged in the database"):
        Aggregator(config)
    # a file that is not a database at all: a DatabaseError naming the file and what to do
    (tmp_path / "state.db").write_bytes(b"this is not a database" * 100)
    for extra in ("state.db-wal", "state.db-shm"):
        (tmp_path / extra).unlink(missing_ok=True)
    with pytest.raises(DatabaseError, match="restore it from a backup"):
        Database(config.db_url)


def test_schema_1_database_is_migrated_in_place(tmp_config, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A schema-1 database (plaintext secrets, one row per refusal, num_examples) opens, sealed and summed."""
    config = tmp_config()
    service = Aggregator(config)
    secret = service.enroll("old-phone").secret
    service.close()
    with sqlite3.connect(tmp_path / "state.db") as conn:  # rewrite it into the schema-1 shape
        conn.execute("UPDATE devices SET secret = ? WHERE device_id = 'old-phone'", (secret,))
        conn.execute("DELETE FROM meta WHERE key = 'device_key_check'")
        conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
        conn.execute("DROP TABLE rejection_counts")
        conn.execute(
            "CREATE TABLE rejections (id INTEGER PRIMARY KEY, reason VARCHAR(32), status INTEGER, "
            "round_id INTEGER, device_id VARCHAR(128), at FLOAT)"
        )
        conn.executemany(
            "INSERT INTO rejections (reason, status, device_id, at) VALUES (?, ?, ?, ?)",
            [("bad_signature", 401, "x" * 100, 1.0)] * 3 + [("malformed", 400, None, 2.0)],
        )
        conn.execute("ALTER TABLE updates ADD COLUMN num_examples INTEGER NOT NULL DEFAULT 0")
        conn.execute("ALTER TABLE versions DROP COLUMN files_json")
    service = Aggregator(config)
    assert service.status()["rejected_by_reason"] == {"bad_signature": 3, "malformed": 1}
    with sqlite3.connect(tmp_path / "state.db") as conn:
        (blob,) = conn.execute("SELECT secret FROM devices WHERE device_id = 'old-phone'").fetchone()
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        columns = {r[1] for r in conn.execute("PRAGMA table_info(updates)")}
        schema = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
    assert sealing.unseal(config.device_key, "old-phone", blob) == secret and blob != secret
    assert "rejections" not in tables and "num_examples" not in columns and schema == "2"
    # the migrated device still authenticates with the secret it was given
    headers = signed_headers("old-phone", secret, "POST", "/v1/checkin", b"{}")
    assert service.authenticate("POST", "/v1/checkin", b"{}", headers) == "old-phone"
    service.close()


# --------------------------------------------------------------------------- what leaves the server


def test_published_versions_hold_only_dp_released_information(tmp_config, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    config = tmp_config(clients_per_round=1, update_retention_s=0.0)
    card = {
        "format": "privtune-card", "model": "probe", "description": "d",
        "privacy": {"epsilon": 4.0, "ledger": {"releases": []}},
        "data": {"seed_examples": 5958, "label_counts": [4000, 1958]},
        "settings": {"plan": {"num_examples": 5958}},
        "metrics": {"real_test": {"macro_f1": 0.7}, "real_val": {"macro_f1": 0.7}},
    }  # fmt: skip
    classifier = tmp_path / "classifier-with-card"
    shutil.copytree(config.adapter_dir, classifier)
    (classifier / "card.json").write_text(json.dumps(card))
    config = tmp_config(clients_per_round=1, adapter_dir=classifier)
    service = Aggregator(config)
    with LiveServer(service) as server, httpx.Client(base_url=server.url) as http:
        device, secret = enroll(http, "phone")
        cfg = _open(http)
        http.post("/v1/checkin", content=b"{}", headers=signed_headers(device, secret, "POST", "/v1/checkin", b"{}"))
        body = encode_update(make_update(cfg, device, service.adapter_params(0), seed=1))
        first = post_update(http, device, secret, cfg.round_id, body)
        assert first.status_code == 201
        admin(http, "POST", f"/v1/admin/rounds/{cfg.round_id}/close")
        # retention 0: the body is dropped once the round is published, the receipt survives a late retry
        assert service.apply_retention() >= 0
        with sqlite3.connect(config.db_url.removeprefix("sqlite:///")) as conn:
            (length,) = conn.execute("SELECT length(body) FROM updates").fetchone()
        assert length == 0
        retry = post_update(http, device, secret, cfg.round_id, body)
        assert retry.status_code == 200 and retry.json() == first.json()
    service.close()
    for version in ("v000000", "v000001"):
        folder = config.publish_dir / version
        public = json.loads((folder / "card.json").read_text())
        assert set(public) <= {
            "format",
            "format_version",
            "model",
            "description",
            "privacy",
            "metrics",
            "published_note",
        }
        assert public["metrics"] == {"real_test": {"macro_f1": 0.7}}
        text = "\n".join(p.read_text(errors="replace") for p in (folder / "card.json", folder / "version.json"))
        assert "5958" not in text and "label_counts" not in text
        info = json.loads((folder / "version.json").read_text())
        assert set(info) == {"version", "round_id", "params_sha256", "manifest_hash"}  # no participant counts


def test_upload_headers_are_checked_before_the_body(tmp_config) -> None:  # type: ignore[no-untyped-def]
    """Idempotency-Key must be a sha256: garbage (non-hex, non-ASCII) is a 4xx, never a 500."""
    service = Aggregator(tmp_config())
    with LiveServer(service) as server, httpx.Client(base_url=server.url) as http:
        device, secret = enroll(http, "phone")
        body = b"x" * 100
        for key in ("nothex", "Z" * 64, "é" * 64):
            headers = upload_headers(device, secret, 0, body)
            headers[IDEMPOTENCY_HEADER] = key
            response = http.post(
                "/v1/rounds/0/updates",
                content=body,
                headers={k: v.encode() if k == IDEMPOTENCY_HEADER else v for k, v in headers.items()},
            )
            assert 400 <= response.status_code < 500, (key, response.status_code)
        headers = upload_headers(device, secret, 0, body)
        headers[UPDATE_MAC_HEADER] = "é"
        headers["Content-Type"] = CONTENT_TYPE
        response = http.post("/v1/rounds/0/updates", content=body, headers={k: v.encode() for k, v in headers.items()})
        assert 400 <= response.status_code < 500
        assert sha256_hex(body) == upload_headers(device, secret, 0, body)[IDEMPOTENCY_HEADER]
    service.close()


def test_a_full_disk_is_a_retryable_503_and_the_retry_lands(tmp_config) -> None:  # type: ignore[no-untyped-def]
    """SQLite's own 'database or disk is full' (page cap) on an upload: 503 + Retry-After, nothing stored."""
    from sqlalchemy import event

    service = Aggregator(tmp_config(clients_per_round=1))
    with LiveServer(service) as server, httpx.Client(base_url=server.url) as http:
        device, secret = enroll(http, "phone")
        cfg = _open(http)
        http.post("/v1/checkin", content=b"{}", headers=signed_headers(device, secret, "POST", "/v1/checkin", b"{}"))
        body = encode_update(make_update(cfg, device, service.adapter_params(0), seed=1))
        with service.db.write() as conn:  # use up the free pages first, so the cap below binds
            free = int(conn.exec_driver_sql("PRAGMA freelist_count").scalar() or 0)
            conn.exec_driver_sql("CREATE TABLE filler (b BLOB)")
            conn.exec_driver_sql(f"INSERT INTO filler VALUES (zeroblob({(free + 4) * 4096}))")
        with service.db.read() as conn:
            pages = int(conn.exec_driver_sql("PRAGMA page_count").scalar() or 0)

        def cap(dbapi_connection, _record):  # type: ignore[no-untyped-def]
            dbapi_connection.execute(f"PRAGMA max_page_count = {pages + 2}")

        event.listen(service.db.engine, "connect", cap)
        service.db.engine.dispose()
        full = post_update(http, device, secret, cfg.round_id, body)
        assert full.status_code == 503 and full.headers["retry-after"] == "30", full.text
        event.remove(service.db.engine, "connect", cap)
        service.db.engine.dispose()
        assert post_update(http, device, secret, cfg.round_id, body).status_code == 201
        assert admin(http, "GET", "/v1/status").json()["accepted_total"] == 1
    service.close()
