"""A device's participation in one round: train (or resume) → clipped update → outbox → upload.

The encoded update is written to the outbox *before* the first upload attempt, so a retry
after a crash sends the very same bytes (same nonce, same idempotency key) and the server
stores it exactly once. A round whose update is already in the outbox is never trained again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ondevice.protocol import AdapterUpdate, RoundConfig, UpdateReceipt, decode_update, encode_update
from ondevice.train_backends import StepStats
from ondevice.trainer import LocalTrainer, RoundResult
from ondevice.update import build_update
from ondevice.upload import Outbox, UploadClient


@dataclass(frozen=True)
class Participation:
    """The outcome of ``participate``: the update sent, its receipt, and the training run (None if the
    update was already in the outbox from an earlier run)."""

    update: AdapterUpdate
    receipt: UpdateReceipt
    training: RoundResult | None


def prepare_update(
    trainer: LocalTrainer,
    outbox: Outbox,
    device_id: str,
    round_config: RoundConfig,
    global_params: Mapping[str, np.ndarray],
    *,
    on_step: Callable[[int, StepStats], None] | None = None,
) -> tuple[AdapterUpdate, RoundResult | None]:
    """The round's update from the outbox, or train (resuming if needed), build, clip and store it."""
    existing = outbox.get(round_config.round_id)
    if existing is not None:
        return decode_update(existing), None
    result = trainer.run_round(round_config, global_params, on_step=on_step)
    update = build_update(
        round_config,
        device_id,
        global_params,
        result.parameters,
        local_epsilon=result.local_epsilon,
        local_delta=result.local_delta,
    )
    outbox.put(round_config.round_id, encode_update(update))
    return update, result


def participate(
    trainer: LocalTrainer,
    client: UploadClient,
    device_id: str,
    round_config: RoundConfig,
    global_params: Mapping[str, np.ndarray],
    *,
    on_step: Callable[[int, StepStats], None] | None = None,
) -> Participation:
    """Train (or resume) and deliver the round's update exactly once."""
    update, result = prepare_update(trainer, client.outbox, device_id, round_config, global_params, on_step=on_step)
    receipt = client.deliver(round_config.round_id)
    return Participation(update=update, receipt=receipt, training=result)


def outbox_dir(state_dir: Path) -> Path:
    """Where a device keeps its outbox under its state folder."""
    return Path(state_dir) / "outbox"
