"""One emulated phone for one round: real ``ondevice`` code against a real aggregator URL.

The phone's fate (``conditions.DeviceRound``) decides what happens: it stays away, or checks in;
if selected it trains with the bundle's runtime, or dies after some local steps (``dropped``: its
checkpoint and ledger stay on disk, and running it again in the same round resumes and uploads
once), or finishes too late (``straggled``: the update waits in its outbox and is sent after the
round closed, where the server must refuse it), or uploads through a flaky network, or, for an
adversary, sends its attack requests instead.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx

from ondevice.accounting import PrivacyBudgetExceeded
from ondevice.bundle import load_manifest
from ondevice.data import LabelledTexts
from ondevice.device import outbox_dir, participate, prepare_update
from ondevice.randomness import SeededRandomSource
from ondevice.server_client import AggregatorClient
from ondevice.train_backends import StepStats
from ondevice.trainer import LocalTrainer, StepSourceFactory
from ondevice.upload import Outbox, UploadClient, UploadRejected
from privtune.fleet.adversary import attack_requests, honest_update
from privtune.fleet.conditions import DeviceRound
from privtune.fleet.network import FlakyTransport

OUTCOMES = (
    "away",
    "no_round",
    "not_selected",
    "dropped",
    "straggled",
    "delivered",
    "rejected",
    "attacked",
    "budget_exhausted",
)


class DeviceKilled(Exception):
    """Raised inside a device's training to emulate the OS killing it after some local steps."""


@dataclass(frozen=True)
class EmulatedDevice:
    device_id: str
    secret: bytes = field(repr=False)
    runtime: str
    state_dir: Path
    threads: int = 1
    noise_seed: int | None = None
    """None: noise and sampling from the OS CSPRNG (a real phone). An int: seeded, reproducible and
    NOT private — for tests and benchmarks only."""


@dataclass(frozen=True)
class DeviceRoundResult:
    device_id: str
    round_id: int | None
    outcome: str
    steps_done: int = 0
    upload_bytes: int = 0
    local_epsilon: float | None = None
    detail: str = ""
    attack_statuses: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_device_round(
    device: EmulatedDevice,
    shard: LabelledTexts,
    fate: DeviceRound,
    server_url: str,
    bundle_dir: Path,
    *,
    sleep: Any = None,
) -> DeviceRoundResult:
    """Play ``fate`` for ``device`` against the aggregator at ``server_url`` (see the module docstring)."""
    if not fate.available:
        return DeviceRoundResult(device.device_id, None, "away")
    with AggregatorClient(server_url, device.device_id, device.secret) as api:
        answer = api.check_in()
        round_config = answer.round_config
        if not answer.selected and answer.open_round_id is not None:
            return DeviceRoundResult(device.device_id, answer.open_round_id, "not_selected")
        if round_config is None:
            return DeviceRoundResult(device.device_id, None, "no_round")
        trainable = load_manifest(bundle_dir).trainable  # the trainer verifies every file below
        global_params = api.fetch_adapter(round_config.global_adapter_version, trainable)
    rid = round_config.round_id
    if fate.adversary is not None:
        update = honest_update(round_config, device.device_id, global_params, seed=fate.device_index * 1009 + rid)
        statuses = []
        with httpx.Client(base_url=server_url, timeout=30) as http:
            for attack in attack_requests(fate.adversary, update, device.secret, round_config.update_clip_norm):
                statuses.append(http.post(attack.path, content=attack.body, headers=attack.headers).status_code)
        return DeviceRoundResult(
            device.device_id, rid, "attacked", detail=fate.adversary, attack_statuses=tuple(statuses)
        )

    trainer = LocalTrainer.from_bundle(
        bundle_dir, shard, device.state_dir, runtime=device.runtime, threads=device.threads,
        random_source=_step_sources(device, fate.device_index),
    )  # fmt: skip
    steps_done = [0]

    def on_step(step: int, _: StepStats) -> None:
        steps_done[0] = step + 1
        if fate.drops_after_step is not None and step + 1 >= fate.drops_after_step:
            raise DeviceKilled(f"{device.device_id} killed after {step + 1} local step(s) of round {rid}")

    outbox = Outbox(outbox_dir(device.state_dir))
    try:
        if fate.drops_after_step == 0:
            raise DeviceKilled(f"{device.device_id} killed before its first local step of round {rid}")
        if fate.straggles:
            prepare_update(trainer, outbox, device.device_id, round_config, global_params, on_step=on_step)
            return DeviceRoundResult(device.device_id, rid, "straggled", steps_done[0], len(outbox.get(rid) or b""))
        transport = FlakyTransport(fate.network_faults)
        kwargs: dict[str, Any] = {"transport": transport}
        if sleep is not None:
            kwargs["sleep"] = sleep
        with UploadClient(server_url, device.device_id, device.secret, outbox, **kwargs) as client:
            outcome = participate(trainer, client, device.device_id, round_config, global_params, on_step=on_step)
    except DeviceKilled as killed:
        return DeviceRoundResult(device.device_id, rid, "dropped", steps_done[0], detail=str(killed))
    except UploadRejected as rejected:
        return DeviceRoundResult(device.device_id, rid, "rejected", steps_done[0], detail=str(rejected))
    except PrivacyBudgetExceeded as refused:  # the phone's own example-level budget says no
        return DeviceRoundResult(device.device_id, rid, "budget_exhausted", steps_done[0], detail=str(refused))
    body = outbox.get(rid) or b""
    epsilon = outcome.training.local_epsilon if outcome.training is not None else None
    return DeviceRoundResult(device.device_id, rid, "delivered", steps_done[0], len(body), epsilon)


def _step_sources(device: EmulatedDevice, index: int) -> StepSourceFactory | None:
    if device.noise_seed is None:
        return None
    base = device.noise_seed * 1_000_003 + index * 10_007
    return lambda round_id, step: SeededRandomSource(base + round_id * 101 + step)


def deliver_late(device: EmulatedDevice, server_url: str, round_id: int) -> DeviceRoundResult:
    """A straggler's upload after its round closed: the server must refuse it (reason in ``detail``)."""
    outbox = Outbox(outbox_dir(device.state_dir))
    with UploadClient(server_url, device.device_id, device.secret, outbox, max_attempts=1) as client:
        try:
            client.deliver(round_id)
        except UploadRejected as rejected:
            return DeviceRoundResult(device.device_id, round_id, "rejected", detail=rejected.error.reason.value)
    return DeviceRoundResult(device.device_id, round_id, "delivered", detail="accepted after the deadline")


def resumed(fate: DeviceRound) -> DeviceRound:
    """The same device restarted later in the same round: it no longer dies."""
    return replace(fate, drops_after_step=None)
