"""Killing the aggregator (SIGKILL) in the middle of a round and restarting it: no accepted update is
lost and none is counted twice — on the server's side and in the phones' own ledgers.

A real ``privtune serve`` process on SQLite; four emulated phones with the real ``ondevice`` code:
  * phones 0 and 1 upload before the crash;
  * phone 2's upload is accepted but its acknowledgement is lost (a timeout after the server
    answered); while the phone backs off, the server is killed and restarted on the same port;
    the phone's retry must get the original receipt, not a second acceptance;
  * phone 3 is killed by its OS after one local step before the crash, and resumes after the
    restart: it finishes from its checkpoint and uploads once.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from ondevice.data import load_labelled
from ondevice.protocol import DpConfig
from ondevice.trainer import LEDGER_FILE
from privtune.demo import DemoConfig, ServerHandle, server_status, start_server, stop_server
from privtune.fleet.conditions import DeviceRound
from privtune.fleet.device import resumed, run_device_round
from privtune.fleet.runner import FleetConfig, enroll_fleet
from tests.tiny_data import tiny_tweeteval

pytestmark = pytest.mark.slow

LOCAL_DP = DpConfig(
    clip_norm=1.0, noise_multiplier=1.0, sampling_rate=0.5, local_steps=3, learning_rate=0.1, local_epsilon_budget=30.0
)


def fate(index: int, *, drops_after_step: int | None = None, faults: tuple[str, ...] = ()) -> DeviceRound:
    return DeviceRound(index, 0, None, True, drops_after_step, False, faults)


def admin_post(server: ServerHandle, path: str) -> dict:
    response = httpx.post(f"{server.url}{path}", headers={"Authorization": f"Bearer {server.admin_token}"}, timeout=300)
    response.raise_for_status()
    return dict(response.json())


def test_killing_the_server_mid_round_loses_nothing_and_counts_nothing_twice(
    tmp_path: Path, bundle_dir: Path, classifier_dir: Path, offensive_dir: Path
) -> None:
    data = tiny_tweeteval(offensive_dir, tmp_path / "data", train=120)
    config = DemoConfig(
        out_dir=tmp_path / "demo", data=str(data), population=4, clients_per_round=4, rounds=1,
        noise_multiplier=1.0, user_epsilon_budget=100.0, local_dp=LOCAL_DP,
        classifier=classifier_dir, bundle=bundle_dir,
    )  # fmt: skip
    train = load_labelled(str(data), "train")
    shards = [train.subset(range(k * 30, (k + 1) * 30)) for k in range(4)]
    server = start_server(config, classifier_dir, bundle_dir)
    port = int(server.url.rsplit(":", 1)[1])
    restarted: list[ServerHandle] = []
    try:
        with httpx.Client(base_url=server.url) as http:
            fleet = FleetConfig(
                server_url=server.url, admin_token=server.admin_token, bundle_dir=bundle_dir, data=str(data),
                state_root=tmp_path / "fleet", devices=4, rounds=1,
            )  # fmt: skip
            phones = enroll_fleet(fleet, http)
        round_id = int(admin_post(server, "/v1/admin/rounds")["round_id"])
        assert round_id == 0
        for i in (0, 1):
            assert run_device_round(phones[i], shards[i], fate(i), server.url, bundle_dir).outcome == "delivered"
        dropped = run_device_round(phones[3], shards[3], fate(3, drops_after_step=1), server.url, bundle_dir)
        assert dropped.outcome == "dropped" and dropped.steps_done == 1

        def crash_and_restart(_backoff: float) -> None:  # runs while phone 2 waits to retry
            if not restarted:
                stop_server(server.process, kill=True)
                assert server.process.returncode == -9
                restarted.append(start_server(config, classifier_dir, bundle_dir, port=port))

        lost_ack = run_device_round(
            phones[2], shards[2], fate(2, faults=("timeout",)), server.url, bundle_dir, sleep=crash_and_restart
        )
        assert restarted, "the server was not killed"
        assert lost_ack.outcome == "delivered"
        assert run_device_round(phones[3], shards[3], resumed(fate(3)), server.url, bundle_dir).outcome == "delivered"

        after = restarted[0]
        status = server_status(after)
        assert status["accepted_total"] == 4, status  # phones 0, 1 from before the crash; 2 and 3 once each
        assert status["rejected_total"] == 0
        closed = admin_post(after, f"/v1/admin/rounds/{round_id}/close")
        assert closed["updates"] == 4 and closed["version"] == 1
        privacy = server_status(after)["privacy"]
        assert privacy["rounds"] == 1  # one round charged once, across the crash
        for phone in phones:  # each phone's ledger counts each local step once
            steps = json.loads((phone.state_dir / LEDGER_FILE).read_text())["steps"]
            assert [(s["round_id"], s["step"]) for s in steps] == [(0, k) for k in range(LOCAL_DP.local_steps)]
    finally:
        for handle in [server, *restarted]:
            stop_server(handle.process)
