"""kill -9 the aggregator at random moments under concurrent uploads and mid-close: nothing lost, nothing doubled."""

from __future__ import annotations

import contextlib
import random
import threading
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, func, select

from ondevice.protocol import RoundConfig, encode_update
from server_aggregator import db as tables
from server_aggregator.publish import params_sha256
from tests.server_harness import (
    admin,
    enroll,
    free_port,
    make_config,
    make_update,
    post_update,
    server_process,
)

pytestmark = pytest.mark.slow

DEVICES = 16
KILLS_DURING_UPLOADS = 3


def _uploader(  # type: ignore[no-untyped-def]
    url: str,
    device: str,
    secret: bytes,
    round_id: int,
    body: bytes,
    receipts: dict,
    attempts: dict,
    start_after: float,
    stop,
) -> None:
    """Wait ``start_after`` s, then retry until a receipt arrives (the server may be dead or restarting)."""
    time.sleep(start_after)
    with httpx.Client(base_url=url, timeout=5) as http:
        while not stop.is_set():
            attempts[device] = attempts.get(device, 0) + 1
            try:
                response = post_update(http, device, secret, round_id, body)
            except httpx.HTTPError:
                time.sleep(0.05)
                continue
            if response.status_code in (200, 201):
                receipts.setdefault(device, []).append(response.json())
                return
            if response.status_code >= 500:
                time.sleep(0.05)
                continue
            receipts.setdefault(device, []).append({"rejected": response.json()})
            return


def _restart(config, port: int, log: Path, stack: list) -> None:  # type: ignore[no-untyped-def]
    if stack:
        stack.pop().__exit__(None, None, None)
    manager = server_process(config, port, log)
    manager.__enter__()
    stack.append(manager)


def test_kill_9_under_concurrent_uploads_and_mid_close_loses_and_doubles_nothing(
    tmp_path: Path, bundle_dir: Path, classifier_dir: Path
) -> None:
    rng = random.Random(20261122)
    config = make_config(
        tmp_path, bundle_dir, classifier_dir, clients_per_round=DEVICES, noise_multiplier=0.5,
        epsilon_budget=1e6, round_duration_s=3600.0,
    )  # fmt: skip
    port, log = free_port(), tmp_path / "server.log"
    url = f"http://127.0.0.1:{port}"
    stack: list = []  # type: ignore[type-arg]
    _restart(config, port, log, stack)
    try:
        with httpx.Client(base_url=url, timeout=30) as http:
            devices = [enroll(http, f"phone-{i}") for i in range(DEVICES)]
            for round_no in range(2):
                cfg = RoundConfig.from_dict(admin(http, "POST", "/v1/admin/rounds").json())
                assert cfg.round_id == round_no
                v_base = _fetch_params(url, devices[0], cfg.global_adapter_version, bundle_dir)
                bodies = {}
                for i, (device_id, secret) in enumerate(devices):
                    checkin = _signed_checkin(url, device_id, secret)
                    assert checkin["selected"] is True  # q = 1
                    bodies[device_id] = encode_update(make_update(cfg, device_id, v_base, seed=100 * round_no + i))

                receipts: dict[str, list] = {}  # type: ignore[type-arg]
                attempts: dict[str, int] = {}
                stop = threading.Event()
                threads = [
                    threading.Thread(
                        target=_uploader,
                        args=(url, d, s, cfg.round_id, bodies[d], receipts, attempts, rng.uniform(0, 2.0), stop),
                    )
                    for d, s in devices
                ]
                for t in threads:
                    t.start()
                for _ in range(KILLS_DURING_UPLOADS):
                    time.sleep(rng.uniform(0.0, 0.4))
                    _restart(config, port, log, stack)  # kill -9 + start again
                for t in threads:
                    t.join(timeout=120)
                stop.set()
                assert sorted(receipts) == sorted(bodies), receipts
                for got in receipts.values():
                    assert len(got) == 1 and "rejected" not in got[0], got
                assert sum(attempts.values()) > DEVICES  # some uploads really met a dead server and retried

                # kill mid-close: the close request is in flight when the process dies
                closer = threading.Thread(
                    target=lambda rid=cfg.round_id: _quiet(lambda: admin(http, "POST", f"/v1/admin/rounds/{rid}/close"))
                )
                closer.start()
                time.sleep(rng.uniform(0.0, 0.3))
                _restart(config, port, log, stack)
                closer.join()
                summary = admin(http, "POST", f"/v1/admin/rounds/{cfg.round_id}/close").json()
                assert summary["updates"] == DEVICES and summary["version"] == round_no + 1

            status = admin(http, "GET", "/v1/status").json()
    finally:
        while stack:
            stack.pop().__exit__(None, None, None)

    engine = create_engine(config.db_url)
    with engine.connect() as conn:
        per_round = dict(
            conn.execute(select(tables.updates.c.round_id, func.count()).group_by(tables.updates.c.round_id)).all()
        )
        ledger = conn.execute(select(tables.ledger.c.round_id)).scalars().all()
        versions = conn.execute(
            select(
                tables.versions.c.version,
                tables.versions.c.round_id,
                tables.versions.c.sha256,
                tables.versions.c.published_at,
            )
        ).all()
        stored = conn.execute(
            select(tables.updates.c.device_id, tables.updates.c.round_id, tables.updates.c.sha256)
        ).all()
    engine.dispose()
    assert per_round == {0: DEVICES, 1: DEVICES}
    assert sorted(ledger) == [0, 1]  # one DP event per released round, none doubled
    assert sorted((v.version, v.round_id) for v in versions) == [(0, None), (1, 0), (2, 1)]
    assert all(v.published_at is not None for v in versions)
    assert len({(s.device_id, s.round_id) for s in stored}) == len(stored) == 2 * DEVICES
    assert status["accepted_total"] == 2 * DEVICES
    assert [r["state"] for r in status["rounds"]] == ["published", "published"]
    # the published folders hold exactly the versions the database recorded
    from ondevice.bundle import verify_bundle
    from server_aggregator.publish import Publisher

    publisher = Publisher(classifier_dir, config.publish_dir, verify_bundle(bundle_dir))
    for version in (1, 2):
        folder_params = publisher.read_params(publisher.version_dir(version))
        info = (publisher.version_dir(version) / "version.json").read_text()
        assert params_sha256(folder_params) in info


def _quiet(call) -> None:  # type: ignore[no-untyped-def]
    with contextlib.suppress(httpx.HTTPError):
        call()


def _signed_checkin(url: str, device_id: str, secret: bytes) -> dict:  # type: ignore[type-arg]
    from ondevice.server_client import AggregatorClient

    with AggregatorClient(url, device_id, secret) as client:
        result = client.check_in()
    return {"selected": result.selected, "round": result.round_config}


def _fetch_params(url: str, device: tuple[str, bytes], version: int, bundle_dir: Path) -> dict:  # type: ignore[type-arg]
    from ondevice.bundle import verify_bundle
    from ondevice.server_client import AggregatorClient

    with AggregatorClient(url, device[0], device[1]) as client:
        return client.fetch_adapter(version, verify_bundle(bundle_dir).trainable)
