"""Update validation against a round: every rejection reason, and what passes."""

from __future__ import annotations

import dataclasses
import json
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ondevice.protocol import (
    MAX_UPDATE_HEADER_BYTES,
    MAX_UPDATE_METADATA_BYTES,
    AdapterUpdate,
    DpConfig,
    RejectionReason,
    RoundConfig,
    TensorSpec,
    encode_update,
    update_mac,
    verify_update_mac,
)
from server_aggregator.validation import Rejection, RoundTerms, check_update, expected_shapes, parse_update
from tests import update_mutations as mutations

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
        (lambda b: _set_header_field(b, "round_id", -1), RejectionReason.MALFORMED),
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


# ---------------------------------------------------------------- hostile bodies: bounded, strict parsing


def _malformed(blob: bytes) -> Rejection:
    with pytest.raises(Rejection) as info:
        parse_update(blob)
    assert info.value.status == 400 and info.value.reason is RejectionReason.MALFORMED, info.value
    return info.value


@pytest.mark.parametrize("name", sorted(mutations.NAMED))
def test_each_hostile_body_is_refused_as_malformed(name: str) -> None:
    _malformed(mutations.NAMED[name](encode_update(_update())))


def test_duplicate_tensor_names_are_refused() -> None:
    body = encode_update(_update())
    rejection = _malformed(mutations.duplicate_tensor_name(body))
    assert "repeats the key" in rejection.message
    assert "repeats the key 'round_id'" in _malformed(mutations.duplicate_metadata_key(body)).message


def test_32_mib_of_metadata_is_refused_by_the_header_cap() -> None:
    blob = mutations.huge_metadata(encode_update(_update()))
    assert len(blob) > 32 * 1024 * 1024
    rejection = _malformed(blob)
    assert f"over the cap of {MAX_UPDATE_HEADER_BYTES}" in rejection.message


def test_metadata_over_its_own_cap_is_refused_even_in_a_small_header() -> None:
    body = encode_update(_update())
    size = MAX_UPDATE_METADATA_BYTES + 1 - len(mutations.metadata(body).__repr__())
    rejection = _malformed(mutations.with_field(body, "padding", "x" * max(size, MAX_UPDATE_METADATA_BYTES)))
    assert f"over the cap of {MAX_UPDATE_METADATA_BYTES}" in rejection.message


@pytest.mark.parametrize("nest", [mutations.deep_header, mutations.deep_metadata])
def test_deep_nesting_is_refused(nest) -> None:  # type: ignore[no-untyped-def]
    _malformed(nest(encode_update(_update())))


@pytest.mark.parametrize("raw", [str(2**63), str(-(2**63) - 1), "1" + "0" * 19, "9" * 3000])
def test_huge_ints_in_the_metadata_are_refused(raw: str) -> None:
    rejection = _malformed(mutations.with_field_text(encode_update(_update()), "round_id", raw))
    assert "64-bit" in rejection.message


def test_a_5000_digit_int_is_refused_before_python_converts_it() -> None:
    """Past 4,300 digits ``int()`` raises a ValueError of its own; the parser must refuse first, as malformed."""
    body = encode_update(_update())
    header, data = mutations.split(body)
    for digits in ("9" * 5000, "-" + "9" * 5000):
        text = json.dumps(header)[:-1] + f', "x": {digits}' + "}"
        assert "64-bit" in _malformed(mutations.assemble(text, data)).message
    _malformed(mutations.huge_int(body))  # in the metadata the length cap answers first


def test_int64_bounds_hold_for_every_int_field() -> None:
    body = encode_update(_update())
    for key in ("round_id", "global_adapter_version"):
        _malformed(mutations.with_field(body, key, 2**63))
    dp = dataclasses.replace(DP).to_dict() | {"local_steps": 2**63}
    _malformed(mutations.with_field(body, "dp", dp))


@pytest.mark.parametrize("device_id", ["dévice-1", "phone-1\n", "phone\u00a01", "p" * 129])
def test_non_ascii_or_overlong_strings_are_refused(device_id: str) -> None:
    _malformed(mutations.with_field(encode_update(_update()), "device_id", device_id))


def test_an_old_devices_update_is_unsupported_version_not_malformed() -> None:
    """A protocol-1 device still sends num_examples: the version answers first, so it learns to update."""
    body = encode_update(_update())
    old = mutations.with_field(mutations.with_field(body, "num_examples", 5), "protocol_version", 1)
    with pytest.raises(Rejection) as info:
        parse_update(old)
    assert (info.value.status, info.value.reason) == (400, RejectionReason.UNSUPPORTED_VERSION)
    assert "num_examples" in _malformed(mutations.with_field(body, "num_examples", 5)).message


def test_offsets_must_tile_the_data_exactly() -> None:
    body = encode_update(_update())
    assert "starts at byte" in _malformed(mutations.shifted_offsets(body)).message
    assert "needs" in _malformed(mutations.out_of_bounds_offsets(body)).message
    assert "needs" in _malformed(mutations.wrong_shape_for_offsets(body)).message
    assert "cover" in _malformed(body + b"\x00" * 4).message  # trailing bytes after the last tensor


def test_tensor_count_is_capped() -> None:
    assert "1..512 tensors" in _malformed(mutations.many_tensors(encode_update(_update()), 600)).message


@pytest.mark.parametrize(
    "mac",
    ["é" * 64, "\u0660" * 64, "ab" * 32 + "\n", "AB" * 32, "ab" * 31, "ab" * 4096, "", None, b"ab" * 32],
)
def test_a_malformed_update_mac_is_refused_without_an_exception(mac: object) -> None:
    body = encode_update(_update())
    secret = b"k" * 32
    assert verify_update_mac(body, secret, update_mac(body, secret))
    assert verify_update_mac(body, secret, mac) is False


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_parse_update_only_ever_rejects_with_a_4xx(data: st.DataObject) -> None:
    blob = data.draw(mutations.hostile_bodies(encode_update(_update())))
    try:
        update = parse_update(blob)
    except Rejection as rejection:
        assert 400 <= rejection.status < 500
        return
    assert isinstance(update, AdapterUpdate)
