"""Contracts: construction checks, lossless JSON, update encoding, MACs, and fuzzed decoding."""

from __future__ import annotations

import json
import struct
from dataclasses import replace

import numpy as np
import pytest
import safetensors.numpy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ondevice.protocol import (
    MAX_UPDATE_BYTES,
    PROTOCOL_VERSION,
    AdapterUpdate,
    ArtifactFile,
    ArtifactManifest,
    DpConfig,
    ErrorBody,
    LoraSpec,
    ProtocolError,
    RejectionReason,
    RoundConfig,
    TensorSpec,
    UpdateReceipt,
    decode_update,
    encode_update,
    update_mac,
    verify_update_mac,
)

SHA = "ab" * 32
SECRET = b"s" * 32


def make_dp(**overrides: object) -> DpConfig:
    values: dict[str, object] = dict(
        clip_norm=1.0, noise_multiplier=1.1, sampling_rate=0.05, local_steps=10, learning_rate=0.01
    )
    values.update(overrides)
    return DpConfig(**values)  # type: ignore[arg-type]


def make_manifest(**overrides: object) -> ArtifactManifest:
    values: dict[str, object] = dict(
        base_model_id="sentence-transformers/all-MiniLM-L6-v2",
        base_model_sha256=SHA,
        lora=LoraSpec(),
        trainable=(
            TensorSpec("encoder.layer.0.attention.self.query.lora_A.weight", (8, 384)),
            TensorSpec("head.bias", (2,)),
        ),
        max_seq_len=128,
        labels=("safe", "unsafe"),
        tokenizer_sha256=SHA,
        files=(ArtifactFile("ort/training_model.onnx", SHA, "ort", "training_model", 1234),),
        privtune_version="0.1.0",
    )
    values.update(overrides)
    return ArtifactManifest(**values)  # type: ignore[arg-type]


def make_update(**overrides: object) -> AdapterUpdate:
    rng = np.random.default_rng(0)
    values: dict[str, object] = dict(
        round_id=3,
        device_id="device-0001",
        manifest_hash=SHA,
        global_adapter_version=2,
        tensors={
            "a.lora_A.weight": rng.standard_normal((8, 384)).astype(np.float32),
            "head.bias": np.zeros(2, np.float32),
        },
        dp=make_dp(),
        local_epsilon=1.25,
        local_delta=1e-5,
        nonce="0123456789abcdef0123456789abcdef",
    )
    values.update(overrides)
    return AdapterUpdate(**values)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- construction checks


@pytest.mark.parametrize(
    ("factory", "field", "bad"),
    [
        (LoraSpec, "rank", 0),
        (LoraSpec, "rank", 2.5),
        (LoraSpec, "alpha", -1.0),
        (LoraSpec, "alpha", float("nan")),
        (LoraSpec, "targets", ()),
        (LoraSpec, "targets", ("query", "query")),
        (LoraSpec, "dropout", 1.0),
    ],
)
def test_lora_spec_rejects_bad_values_naming_field_and_value(factory, field, bad) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ProtocolError) as info:
        factory(**{field: bad})
    assert f"LoraSpec.{field}" in str(info.value)
    assert repr(bad) in str(info.value)


@pytest.mark.parametrize(
    ("field", "bad"),
    [
        ("clip_norm", 0.0),
        ("clip_norm", float("inf")),
        ("noise_multiplier", -0.1),
        ("sampling_rate", 0.0),
        ("sampling_rate", 1.5),
        ("local_steps", 0),
        ("local_steps", True),
        ("learning_rate", 0),
        ("optimizer", "adam"),
        ("local_delta", 0.5),
        ("local_epsilon_budget", -1.0),
        ("class_weights", (1.0,)),
        ("class_weights", [0.5, 1.0]),
        ("class_weights", (0.5, 1.5)),
        ("class_weights", (0.0, 1.0)),
        ("class_weights", (0.5, float("nan"))),
    ],
)
def test_dp_config_rejects_bad_values(field: str, bad: object) -> None:
    with pytest.raises(ProtocolError, match=f"DpConfig.{field}"):
        make_dp(**{field: bad})


def test_class_weights_travel_only_when_set_and_map_labels_to_weights() -> None:
    plain = make_dp()
    assert "class_weights" not in plain.to_dict()  # the wire form older devices (and Android) accept
    assert DpConfig.from_dict(plain.to_dict()) == plain
    weighted = make_dp(class_weights=(0.25, 1.0))
    wire = json.loads(json.dumps(weighted.to_dict()))
    assert wire["class_weights"] == [0.25, 1.0]
    assert DpConfig.from_dict(wire) == weighted
    assert plain.label_weights(np.array([0, 1])) is None
    np.testing.assert_array_equal(weighted.label_weights(np.array([1, 0, 1])), [1.0, 0.25, 1.0])
    with pytest.raises(ValueError, match="cover labels 0..1, found label 2"):
        weighted.label_weights(np.array([0, 2]))


def test_tensor_spec_checks_shape_and_dtype() -> None:
    assert TensorSpec("x", (8, 384)).numel == 3072
    with pytest.raises(ProtocolError, match="shape"):
        TensorSpec("x", (8, 0))
    with pytest.raises(ProtocolError, match="shape"):
        TensorSpec("x", ())
    with pytest.raises(ProtocolError, match="dtype"):
        TensorSpec("x", (2,), "int8")


def test_artifact_file_refuses_paths_leaving_the_bundle() -> None:
    for bad in ("/etc/passwd", "../x", "a/../../b", "a\\b"):
        with pytest.raises(ProtocolError, match="relative POSIX path"):
            ArtifactFile(bad, SHA, "ort", "x", 1)
    with pytest.raises(ProtocolError, match="sha256"):
        ArtifactFile("a", "ABC", "ort", "x", 1)
    with pytest.raises(ProtocolError, match="backend"):
        ArtifactFile("a", SHA, "tflite", "x", 1)


def test_manifest_rejects_duplicates_and_single_label() -> None:
    spec = TensorSpec("head.bias", (2,))
    with pytest.raises(ProtocolError, match="repeat tensor names"):
        make_manifest(trainable=(spec, spec))
    file = ArtifactFile("x.onnx", SHA, "ort", "r", 1)
    with pytest.raises(ProtocolError, match="path twice"):
        make_manifest(files=(file, file))
    with pytest.raises(ProtocolError, match="at least two"):
        make_manifest(labels=("safe",))


def test_round_config_and_update_reject_unknown_protocol_version() -> None:
    with pytest.raises(ProtocolError, match="not supported by this build"):
        RoundConfig(1, SHA, 0, make_dp(), 1.0, 1e9, protocol_version=PROTOCOL_VERSION + 1)
    data = RoundConfig(1, SHA, 0, make_dp(), 1.0, 1e9).to_dict()
    data["protocol_version"] = 99
    with pytest.raises(ProtocolError, match="99 is not supported"):
        RoundConfig.from_dict(data)


# --------------------------------------------------------------------------- JSON round trips


def test_manifest_json_round_trip_and_hash_identity() -> None:
    manifest = make_manifest()
    again = ArtifactManifest.from_json(manifest.to_json())
    assert again == manifest
    assert again.manifest_hash() == manifest.manifest_hash()
    assert make_manifest(max_seq_len=64).manifest_hash() != manifest.manifest_hash()
    assert manifest.file("training_model").path == "ort/training_model.onnx"
    with pytest.raises(KeyError, match="ort:training_model"):
        manifest.file("inference_model")


def test_manifest_from_dict_names_missing_and_unknown_fields() -> None:
    data = make_manifest().to_dict()
    del data["labels"]
    with pytest.raises(ProtocolError, match=r"missing field\(s\) \['labels'\]"):
        ArtifactManifest.from_dict(data)
    data = make_manifest().to_dict()
    data["surprise"] = 1
    with pytest.raises(ProtocolError, match=r"unknown field\(s\) \['surprise'\]"):
        ArtifactManifest.from_dict(data)


def test_json_refuses_non_finite_numbers() -> None:
    text = RoundConfig(1, SHA, 0, make_dp(), 1.0, 1e9).to_json().replace('"clip_norm":1.0', '"clip_norm":NaN')
    with pytest.raises(ProtocolError, match="non-finite"):
        RoundConfig.from_json(text)


finite = st.floats(min_value=1e-6, max_value=1e6, allow_nan=False, allow_infinity=False)


@given(
    clip=finite,
    noise=st.floats(min_value=0, max_value=100, allow_nan=False),
    q=st.floats(min_value=1e-6, max_value=1.0, allow_nan=False),
    steps=st.integers(1, 10_000),
    lr=finite,
    optimizer=st.sampled_from(["sgd", "adamw"]),
    round_id=st.integers(0, 2**40),
    deadline=st.floats(min_value=1.0, max_value=4e9, allow_nan=False),
)
def test_round_config_json_round_trip_is_lossless(clip, noise, q, steps, lr, optimizer, round_id, deadline) -> None:  # type: ignore[no-untyped-def]
    dp = DpConfig(clip, noise, q, steps, lr, optimizer)
    config = RoundConfig(round_id, SHA, 7, dp, clip, deadline)
    again = RoundConfig.from_json(config.to_json())
    assert again == config
    assert again.dp.clip_norm == clip  # bit-exact float, not approximately


def test_receipt_and_error_body_round_trip() -> None:
    receipt = UpdateReceipt(3, "device-1", SHA, 1.7e9)
    assert UpdateReceipt.from_dict(json.loads(json.dumps(receipt.to_dict()))) == receipt
    body = ErrorBody(RejectionReason.NORM_EXCEEDED, "update norm 3.2 > S=1.0")
    assert ErrorBody.from_dict(body.to_dict()) == body
    with pytest.raises(ProtocolError, match="not a known reason code"):
        ErrorBody.from_dict({"reason": "because", "message": "x"})


# --------------------------------------------------------------------------- update encoding


def test_update_round_trip_is_bit_exact_and_deterministic() -> None:
    update = make_update()
    blob = encode_update(update)
    assert encode_update(make_update()) == blob
    again = decode_update(blob)
    assert again.metadata_dict() == update.metadata_dict()
    for name, array in update.tensors.items():
        assert again.tensors[name].dtype == array.dtype
        np.testing.assert_array_equal(again.tensors[name], array)


def test_update_fp16_keeps_dtype_and_norm_is_float64() -> None:
    tensors = {"w": np.full((3, 4), 0.5, np.float16)}
    again = decode_update(encode_update(make_update(tensors=tensors)))
    assert again.dtype == "float16"
    assert again.l2_norm() == pytest.approx(np.sqrt(12 * 0.25), rel=1e-12)


@pytest.mark.parametrize(
    ("tensors", "message"),
    [
        ({"w": np.array([1.0, np.nan], np.float32)}, "finite"),
        ({"w": np.array([1.0, np.inf], np.float32)}, "finite"),
        ({"w": np.array([1, 2], np.int32)}, "dtype"),
        ({"w": np.ones((), np.float32)}, "at least one dimension"),
        ({"a": np.ones(2, np.float32), "b": np.ones(2, np.float16)}, "one dtype"),
        ({}, "non-empty"),
    ],
)
def test_update_rejects_bad_tensors(tensors: dict[str, np.ndarray], message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        make_update(tensors=tensors)


def _blob_with(tensors: dict[str, np.ndarray], metadata: dict[str, str] | None) -> bytes:
    return bytes(safetensors.numpy.save(tensors, metadata=metadata))


def test_decode_rejects_nan_smuggled_past_the_encoder() -> None:
    meta = json.dumps(make_update().metadata_dict())
    blob = _blob_with({"w": np.array([np.nan], np.float32)}, {"privtune": meta})
    with pytest.raises(ProtocolError, match="finite"):
        decode_update(blob)


def test_decode_rejects_missing_metadata_truncation_and_oversize() -> None:
    with pytest.raises(ProtocolError, match="metadata lacks"):
        decode_update(_blob_with({"w": np.ones(2, np.float32)}, None))
    blob = encode_update(make_update())
    with pytest.raises(ProtocolError):
        decode_update(blob[: len(blob) // 2])
    with pytest.raises(ProtocolError, match="too short"):
        decode_update(b"\x01")
    with pytest.raises(ProtocolError, match="over the cap"):
        decode_update(b"\x00" * (MAX_UPDATE_BYTES + 1))
    with pytest.raises(ProtocolError, match="header claims"):
        decode_update(struct.pack("<Q", 10**9) + b"{}")


def test_decode_rejects_wrong_metadata_types() -> None:
    meta = make_update().metadata_dict()
    meta["round_id"] = "three"
    blob = _blob_with({"w": np.ones(2, np.float32)}, {"privtune": json.dumps(meta)})
    with pytest.raises(ProtocolError, match="round_id"):
        decode_update(blob)


def test_mac_detects_any_tampering() -> None:
    blob = encode_update(make_update())
    mac = update_mac(blob, SECRET)
    assert verify_update_mac(blob, SECRET, mac)
    assert not verify_update_mac(blob, b"t" * 32, mac)
    tampered = bytearray(blob)
    tampered[-1] ^= 1
    assert not verify_update_mac(bytes(tampered), SECRET, mac)
    with pytest.raises(ProtocolError, match="at least 16 bytes"):
        update_mac(blob, b"short")


names = st.text(alphabet="abcdefghij._0123456789", min_size=1, max_size=20)
arrays = st.sampled_from([np.float32, np.float16]).flatmap(
    lambda dtype: st.dictionaries(
        names,
        hnp.arrays(
            dtype,
            hnp.array_shapes(min_dims=1, max_dims=3, max_side=6),
            elements=st.floats(-1e3, 1e3, allow_nan=False, width=16 if dtype == np.float16 else 32),
        ),
        min_size=1,
        max_size=4,
    )
)


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(tensors=arrays, round_id=st.integers(0, 10**9), eps=st.floats(0, 1e3, allow_nan=False))
def test_update_round_trip_property(tensors: dict[str, np.ndarray], round_id: int, eps: float) -> None:
    update = make_update(tensors=tensors, round_id=round_id, local_epsilon=eps)
    again = decode_update(encode_update(update))
    assert again.metadata_dict() == update.metadata_dict()
    assert set(again.tensors) == set(tensors)
    for name, array in tensors.items():
        assert again.tensors[name].dtype == array.dtype
        assert again.tensors[name].shape == array.shape
        np.testing.assert_array_equal(again.tensors[name], array)


@settings(max_examples=300)
@given(data=st.binary(max_size=400))
def test_decode_of_random_bytes_raises_only_protocol_error(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_update(data)


@settings(max_examples=300)
@given(position=st.integers(0, 10**6), flip=st.integers(1, 255))
def test_decode_of_corrupted_update_never_crashes_differently(position: int, flip: int) -> None:
    blob = bytearray(encode_update(make_update()))
    blob[position % len(blob)] ^= flip
    try:
        update = decode_update(bytes(blob))
    except ProtocolError:
        return
    # A flip inside tensor data can still decode: then it must be a valid, finite update.
    assert all(np.all(np.isfinite(a)) for a in update.tensors.values())


def test_dataclasses_are_frozen() -> None:
    dp = make_dp()
    with pytest.raises(AttributeError):
        dp.clip_norm = 2.0  # type: ignore[misc]
    assert replace(dp, clip_norm=2.0).clip_norm == 2.0
