"""The aggregator on a real PostgreSQL, by configuration alone (a throwaway cluster made with initdb).

Skipped, visibly, where no PostgreSQL server binaries are installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ondevice.protocol import encode_update, update_mac
from server_aggregator.service import Aggregator
from tests.server_harness import free_port, make_config, make_update

pytestmark = pytest.mark.slow


def _tool(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for root in Path("/usr/lib/postgresql").glob("*/bin"):
        if (root / name).is_file():
            return str(root / name)
    return None


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    initdb, pg_ctl = _tool("initdb"), _tool("pg_ctl")
    if initdb is None or pg_ctl is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed here")
    # Outside pytest's 0700 tmp root: the server may have to run as another user.
    root = Path(tempfile.mkdtemp(prefix="privtune-pg-"))
    root.chmod(0o755)
    data = root / "data"
    data.mkdir()
    as_user: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        shutil.chown(data, "nobody")
        as_user = ["runuser", "-u", "nobody", "--"]
    port = free_port()

    def run(*args: str) -> None:
        done = subprocess.run([*as_user, *args], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({done.returncode}): {done.stderr[-1000:]}")

    run(initdb, "-D", str(data), "-U", "privtune", "--auth=trust")
    options = f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=on"
    run(pg_ctl, "-D", str(data), "-o", options, "-l", str(data / "log.txt"), "-w", "start")
    try:
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={port} user=privtune dbname=postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE a")
        yield f"postgresql+psycopg://privtune@127.0.0.1:{port}/a"
    finally:
        run(pg_ctl, "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)


def test_a_round_on_postgresql_and_a_restart(
    postgres_url: str, tmp_path: Path, bundle_dir: Path, classifier_dir: Path
) -> None:
    config = make_config(tmp_path, bundle_dir, classifier_dir, db_url=postgres_url, clients_per_round=2)
    service = Aggregator(config)
    devices = [service.enroll(f"pg-{i}") for i in range(2)]
    round_config = service.open_round()
    v0 = service.adapter_params(0)
    for i, device in enumerate(devices):
        assert service.check_in(device.device_id).selected
        body = encode_update(make_update(round_config, device.device_id, v0, seed=i))
        mac = update_mac(body, device.secret)
        first, created = service.submit_update(0, device.device_id, body, mac)
        again, created_again = service.submit_update(0, device.device_id, body, mac)
        assert created and not created_again and first == again
    summary = service.close_round(0)
    assert summary["updates"] == 2 and summary["version"] == 1
    spent = service.privacy()["epsilon_spent"]
    service.close()

    restarted = Aggregator(config)  # everything comes back from PostgreSQL
    status = restarted.status()
    assert status["accepted_total"] == 2 and [v["version"] for v in status["published_versions"]] == [0, 1]
    assert status["privacy"]["epsilon_spent"] == spent
    assert restarted.close_round(0) == summary  # idempotent after a restart
    restarted.close()
