"""What the fleet's adversarial devices send: real, signed HTTP requests the aggregator must refuse.

Each kind starts from an honest, clipped update of the device's own and breaks one thing:

=================  =====================================================  ======  ==================
kind               what is sent                                           status  reason
=================  =====================================================  ======  ==================
nan                a NaN written into the last tensor's bytes, re-signed  400     non_finite
wrong_shape        one tensor replaced by a 3×3 block, re-signed           400     wrong_shape
over_norm          the delta scaled to 2·S (S = the round's clip norm)     400     norm_exceeded
forged_signature   the honest body signed with a secret it does not hold   401     bad_signature
wrong_round        the update claims another round                         400     wrong_round
replay             its honest request (accepted once), then the same       401     replayed_nonce
                   request again, byte for byte (same nonce)
=================  =====================================================  ======  ==================

Only ``replay`` gets anything merged: its first, honest request.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ondevice.auth import signed_headers
from ondevice.protocol import AdapterUpdate, RoundConfig, encode_update, sha256_hex, update_mac
from ondevice.update import build_update, global_norm
from ondevice.upload import CONTENT_TYPE, IDEMPOTENCY_HEADER, UPDATE_MAC_HEADER
from privtune.fleet.conditions import ADVERSARY_KINDS


@dataclass(frozen=True)
class AttackRequest:
    """One HTTP request an adversarial device sends, and the refusal the server owes it."""

    kind: str
    path: str
    body: bytes
    headers: dict[str, str]
    expected_status: int
    expected_reason: str | None
    """None for the honest first half of a replay (it must be accepted)."""


def honest_update(
    round_config: RoundConfig,
    device_id: str,
    global_params: Mapping[str, np.ndarray],
    seed: int,
    *,
    scale: float = 0.01,
) -> AdapterUpdate:
    """A plausible clipped update without training: global + seeded noise of ``scale``, as a delta."""
    rng = np.random.default_rng(seed)
    local = {k: (v + scale * rng.standard_normal(v.shape)).astype(np.float32) for k, v in global_params.items()}
    return build_update(round_config, device_id, global_params, local, local_epsilon=1.0, local_delta=1e-5)


def signed_upload(path_round: int, device_id: str, secret: bytes, body: bytes) -> tuple[str, dict[str, str]]:
    """The path and headers an honest client sends for ``body`` (request signature + update MAC)."""
    path = f"/v1/rounds/{path_round}/updates"
    headers = {
        "Content-Type": CONTENT_TYPE,
        UPDATE_MAC_HEADER: update_mac(body, secret),
        IDEMPOTENCY_HEADER: sha256_hex(body),
        **signed_headers(device_id, secret, "POST", path, body),
    }
    return path, headers


def _with(update: AdapterUpdate, **changes: object) -> bytes:
    return encode_update(dataclasses.replace(update, **changes))  # type: ignore[arg-type]


def attack_requests(kind: str, update: AdapterUpdate, secret: bytes, clip_norm: float) -> list[AttackRequest]:
    """The requests of adversary ``kind`` built on the device's honest ``update`` (see the module table)."""
    if kind not in ADVERSARY_KINDS:
        raise ValueError(f"unknown adversary kind {kind!r}; known: {ADVERSARY_KINDS}")
    device, round_id = update.device_id, update.round_id

    def request(body: bytes, status: int, reason: str | None, *, key: bytes = secret) -> AttackRequest:
        path, headers = signed_upload(round_id, device, key, body)
        return AttackRequest(kind, path, body, headers, status, reason)

    honest = encode_update(update)
    if kind == "nan":
        blob = bytearray(honest)
        blob[-4:] = np.array([np.nan], np.float32).tobytes()  # safetensors: tensor data ends the file
        return [request(bytes(blob), 400, "non_finite")]
    if kind == "wrong_shape":
        first = next(iter(update.tensors))
        shaped = {**update.tensors, first: np.zeros((3, 3), update.tensors[first].dtype)}
        return [request(_with(update, tensors=shaped), 400, "wrong_shape")]
    if kind == "over_norm":
        scale = 2.0 * clip_norm / max(global_norm(update.tensors), 1e-12)
        big = {k: (v.astype(np.float64) * scale).astype(v.dtype) for k, v in update.tensors.items()}
        return [request(_with(update, tensors=big), 400, "norm_exceeded")]
    if kind == "forged_signature":
        return [request(honest, 401, "bad_signature", key=bytes(reversed(secret)))]
    if kind == "wrong_round":
        return [request(_with(update, round_id=round_id + 7), 400, "wrong_round")]
    first_send = request(honest, 201, None)
    return [first_send, dataclasses.replace(first_send, expected_status=401, expected_reason="replayed_nonce")]
