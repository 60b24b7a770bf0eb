"""Validation of an uploaded update against its round, before anything is stored.

Every failure is a ``Rejection`` carrying the HTTP status and a ``RejectionReason`` code; the
service turns it into a 4xx ``ErrorBody`` and counts it. Nothing here touches the database.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ondevice.protocol import (
    AdapterUpdate,
    ErrorBody,
    ProtocolError,
    RejectionReason,
    RoundConfig,
    TensorSpec,
    decode_update,
)
from ondevice.seed_methods import LORA_A, LORA_B


class Rejection(Exception):
    """An update or request the service refuses: ``status`` (4xx) + reason code + message."""

    def __init__(self, status: int, reason: RejectionReason, message: str) -> None:
        super().__init__(f"{status} {reason.value}: {message}")
        self.status = status
        self.reason = reason
        self.message = message

    def error_body(self) -> ErrorBody:
        return ErrorBody(self.reason, self.message)


@dataclass(frozen=True)
class RoundTerms:
    """What an update for one round must look like."""

    config: RoundConfig
    shapes: Mapping[str, tuple[int, ...]]
    norm_slack: float

    @classmethod
    def for_round(cls, config: RoundConfig, trainable: Sequence[TensorSpec], norm_slack: float) -> RoundTerms:
        return cls(config, expected_shapes(trainable, config.dp.train_rank), norm_slack)


def expected_shapes(trainable: Sequence[TensorSpec], train_rank: int | None) -> dict[str, tuple[int, ...]]:
    """Upload shapes: the manifest's, with LoRA rank cut to ``train_rank`` (A [r′, in], B [out, r′])."""
    shapes: dict[str, tuple[int, ...]] = {}
    for spec in trainable:
        shape = tuple(spec.shape)
        if train_rank is not None and spec.name.endswith(LORA_A):
            shape = (train_rank, *shape[1:])
        elif train_rank is not None and spec.name.endswith(LORA_B):
            shape = (*shape[:-1], train_rank)
        shapes[spec.name] = shape
    return shapes


def parse_update(body: bytes) -> AdapterUpdate:
    """``decode_update`` with its failures mapped to reason codes: every malformed body, whatever its bytes,
    is a 400 ``Rejection`` (``unsupported_version``, ``too_large``, ``wrong_dtype``, ``non_finite`` or
    ``malformed``), never another exception. The bounds are ``decode_update``'s (header, metadata and
    tensor-count caps in ``ondevice.protocol``)."""
    try:
        return decode_update(body)
    except ProtocolError as exc:
        status = 413 if exc.reason is RejectionReason.TOO_LARGE else 400
        raise Rejection(status, exc.reason, str(exc)) from exc


def check_update(update: AdapterUpdate, terms: RoundTerms, *, round_id: int, device_id: str) -> float:
    """Check ``update`` against the round; return its L2 norm. Raises ``Rejection``."""
    config = terms.config
    if update.round_id != round_id or round_id != config.round_id:
        raise Rejection(400, RejectionReason.WRONG_ROUND, f"update is for round {update.round_id}, not {round_id}")
    if update.device_id != device_id:
        raise Rejection(400, RejectionReason.MALFORMED, f"update names device {update.device_id!r}, not {device_id!r}")
    if update.manifest_hash != config.manifest_hash:
        raise Rejection(
            400,
            RejectionReason.WRONG_MANIFEST,
            f"manifest {update.manifest_hash[:12]}…, round uses {config.manifest_hash[:12]}…",
        )
    if update.global_adapter_version != config.global_adapter_version:
        raise Rejection(
            400,
            RejectionReason.WRONG_ROUND,
            f"update starts from adapter v{update.global_adapter_version}, "
            f"round {round_id} uses v{config.global_adapter_version}",
        )
    if update.dp != config.dp:
        raise Rejection(400, RejectionReason.MALFORMED, "the update's DP parameters differ from the round's")
    missing, extra = sorted(set(terms.shapes) - set(update.tensors)), sorted(set(update.tensors) - set(terms.shapes))
    if missing or extra:
        raise Rejection(400, RejectionReason.WRONG_KEYS, f"missing {missing[:3]}, unexpected {extra[:3]}")
    if update.dtype != config.update_dtype:
        raise Rejection(
            400, RejectionReason.WRONG_DTYPE, f"tensors are {update.dtype}, round asks {config.update_dtype}"
        )
    for name, shape in terms.shapes.items():
        found = tuple(update.tensors[name].shape)
        if found != shape:
            raise Rejection(400, RejectionReason.WRONG_SHAPE, f"{name}: shape {found}, expected {shape}")
    norm = update.l2_norm()
    limit = config.update_clip_norm * (1 + terms.norm_slack)
    if not math.isfinite(norm) or norm > limit:
        raise Rejection(
            400,
            RejectionReason.NORM_EXCEEDED,
            f"L2 norm {norm:.6g} exceeds the round's S = {config.update_clip_norm:g}",
        )
    return norm
