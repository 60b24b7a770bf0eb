"""Update validation against a round: every rejection reason, and what passes."""

from __future__ import annotations

import dataclasses
import json
import struct

import numpy as np
import pytest

from ondevice.protocol import (
    AdapterUpdate,
    DpConfig,
    RejectionReason,
    RoundConfig,
    TensorSpec,
    encode_update,
)
from server_aggregator.validation import Rejection, RoundTerms, check_update, expected_shapes, parse_update

SPECS = (
    TensorSpec("encoder.layer.0.attention.self.query.lora_A.weight", (4, 6), "float32"),
    TensorSpec("encoder.layer.0.attention.self.query.lora_B.weight", (6, 4), "float32"),
    TensorSpec("head.weight", (2, 6), "float32"),
    TensorSpec("head.bias", (2,), "float32"),
)
DP = DpConfig(clip_norm=1.0, noise_multiplier=1.0, sampling_rate=0.5, local_steps=2, learning_rate=0.1)
CONFIG = RoundConfig(3, "b" * 64, 2, DP, update_clip_norm=1.0, deadline_unix=1e10)
TERMS = RoundTerms.for_round(CONFIG, SPECS, norm_slack=1e-4)


def _tensors(norm: float = 0.5, dtype: str = "float32", rank: int | None = None) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    shapes = expected_shapes(SPECS, rank)
    raw = {k: rng.standard_normal(s) for k, s in shapes.items()}
    total = np.sqrt(sum(float(np.sum(v**2)) for v in raw.values()))
    return {k: (v * norm / total).astype(dtype) for k, v in raw.items()}


def _update(**changes: object) -> AdapterUpdate:
    fields: dict[str, object] = {
        "round_id": 3,
        "device_id": "phone-1",
        "manifest_hash": "b" * 64,
        "global_adapter_version": 2,
        "tensors": _tensors(),
        "num_examples": 5,
        "dp": DP,
        "local_epsilon": 1.0,
        "local_delta": 1e-5,
        "nonce": "c" * 32,
    }
    fields.update(changes)
    return AdapterUpdate(**fields)  # type: ignore[arg-type]


def _reason(update: AdapterUpdate, terms: RoundTerms = TERMS, round_id: int = 3) -> RejectionReason:
    with pytest.raises(Rejection) as info:
        check_update(parse_update(encode_update(update)), terms, round_id=round_id, device_id="phone-1")
    assert 400 <= info.value.status < 500
    return info.value.reason


def test_a_good_update_passes_and_its_norm_is_returned() -> None:
    update = _update()
    norm = check_update(parse_update(encode_update(update)), TERMS, round_id=3, device_id="phone-1")
    assert norm == pytest.approx(0.5, rel=1e-6)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"round_id": 4}, RejectionReason.WRONG_ROUND),
        ({"device_id": "phone-2"}, RejectionReason.MALFORMED),
        ({"manifest_hash": "a" * 64}, RejectionReason.WRONG_MANIFEST),
        ({"global_adapter_version": 1}, RejectionReason.WRONG_ROUND),
        ({"dp": dataclasses.replace(DP, noise_multiplier=0.1)}, RejectionReason.MALFORMED),
        ({"tensors": _tensors(dtype="float16")}, RejectionReason.WRONG_DTYPE),
        ({"tensors": _tensors(norm=1.001)}, RejectionReason.NORM_EXCEEDED),
        ({"tensors": {k: v for k, v in _tensors().items() if k != "head.bias"}}, RejectionReason.WRONG_KEYS),
        ({"tensors": {**_tensors(), "extra": np.zeros(2, np.float32)}}, RejectionReason.WRONG_KEYS),
        ({"tensors": {**_tensors(), "head.bias": np.zeros(3, np.float32)}}, RejectionReason.WRONG_SHAPE),
        ({"tensors": _tensors(rank=2)}, RejectionReason.WRONG_SHAPE),
    ],
)
def test_each_mismatch_has_its_reason(changes: dict[str, object], reason: RejectionReason) -> None:
    assert _reason(_update(**changes)) is reason


def test_norm_within_the_slack_passes_and_just_over_it_fails() -> None:
    check_update(_update(tensors=_tensors(norm=1.00005)), TERMS, round_id=3, device_id="phone-1")
    assert _reason(_update(tensors=_tensors(norm=1.0002))) is RejectionReason.NORM_EXCEEDED


def test_server_fixed_rank_expects_sliced_shapes() -> None:
    ranked = RoundConfig(3, "b" * 64, 2, dataclasses.replace(DP, train_rank=2), 1.0, 1e10)
    terms = RoundTerms.for_round(ranked, SPECS, 1e-4)
    assert terms.shapes[SPECS[0].name] == (2, 6) and terms.shapes[SPECS[1].name] == (6, 2)
    update = _update(dp=ranked.dp, tensors=_tensors(rank=2))
    check_update(parse_update(encode_update(update)), terms, round_id=3, device_id="phone-1")
    assert _reason(_update(dp=ranked.dp), terms) is RejectionReason.WRONG_SHAPE


def _set_header_field(blob: bytes, key: str, value: object) -> bytes:
    (length,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + length])
    meta = json.loads(header["__metadata__"]["privtune"])
    meta[key] = value
    header["__metadata__"]["privtune"] = json.dumps(meta)
    raw = json.dumps(header).encode()
    raw += b" " * ((8 - len(raw) % 8) % 8)
    data_start = 8 + length
    return struct.pack("<Q", len(raw)) + raw + blob[data_start:]


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda b: b"", RejectionReason.MALFORMED),
        (lambda b: b[:100], RejectionReason.MALFORMED),
        (lambda b: b"\xff" * 64, RejectionReason.MALFORMED),
        (lambda b: _set_header_field(b, "protocol_version", 99), RejectionReason.UNSUPPORTED_VERSION),
        (lambda b: _set_header_field(b, "num_examples", -1), RejectionReason.MALFORMED),
        (lambda b: b[:-4] + np.array([np.inf], np.float32).tobytes(), RejectionReason.NON_FINITE),
        (lambda b: b[:-4] + np.array([np.nan], np.float32).tobytes(), RejectionReason.NON_FINITE),
    ],
)
def test_bytes_that_do_not_decode(mutate, reason: RejectionReason) -> None:  # type: ignore[no-untyped-def]
    blob = mutate(encode_update(_update()))
    with pytest.raises(Rejection) as info:
        parse_update(blob)
    assert info.value.reason is reason and info.value.status == 400


def test_wrong_dtype_in_raw_tensors_is_named() -> None:
    import safetensors.numpy

    blob = encode_update(_update())
    (length,) = struct.unpack("<Q", blob[:8])
    meta = json.loads(blob[8 : 8 + length])["__metadata__"]
    tensors = {k: v.astype(np.float64) for k, v in _tensors().items()}
    with pytest.raises(Rejection) as info:
        parse_update(safetensors.numpy.save(tensors, metadata=meta))
    assert info.value.reason is RejectionReason.WRONG_DTYPE
