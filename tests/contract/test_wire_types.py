"""One contract, run against every JSON wire type: lossless round trip through real JSON
text, named rejection of missing and unknown fields, immutability."""

from __future__ import annotations

import dataclasses
import json
from typing import Any, ClassVar

import pytest

from ondevice.protocol import (
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
)
from tests.unit.test_protocol import SHA, make_dp, make_manifest


class WireTypeContract:
    """Subclasses set ``cls`` and implement ``make``."""

    cls: ClassVar[Any]

    def make(self) -> Any:
        raise NotImplementedError

    def test_round_trip_through_json_text(self) -> None:
        value = self.make()
        assert self.cls.from_dict(json.loads(json.dumps(value.to_dict()))) == value

    def test_every_missing_field_is_named(self) -> None:
        data = self.make().to_dict()
        for key in data:
            broken = {k: v for k, v in data.items() if k != key}
            with pytest.raises(ProtocolError, match=rf"missing field\(s\) \['{key}'\]"):
                self.cls.from_dict(broken)

    def test_unknown_field_is_named(self) -> None:
        with pytest.raises(ProtocolError, match=r"unknown field\(s\) \['zz_extra'\]"):
            self.cls.from_dict({**self.make().to_dict(), "zz_extra": 1})

    def test_not_an_object_is_refused(self) -> None:
        with pytest.raises(ProtocolError, match="must be a JSON object"):
            self.cls.from_dict([1, 2])

    def test_is_frozen(self) -> None:
        value = self.make()
        field = dataclasses.fields(value)[0].name
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(value, field, None)


class TestLoraSpec(WireTypeContract):
    cls = LoraSpec

    def make(self) -> LoraSpec:
        return LoraSpec(rank=4, alpha=8.0, targets=("query", "key", "value"), dropout=0.1)


class TestTensorSpec(WireTypeContract):
    cls = TensorSpec

    def make(self) -> TensorSpec:
        return TensorSpec("head.weight", (2, 384), "float16")


class TestArtifactFile(WireTypeContract):
    cls = ArtifactFile

    def make(self) -> ArtifactFile:
        return ArtifactFile("executorch/model_int8.pte", SHA, "executorch", "inference_int8", 58_700_000)


class TestArtifactManifest(WireTypeContract):
    cls = ArtifactManifest

    def make(self) -> ArtifactManifest:
        return make_manifest()


class TestDpConfig(WireTypeContract):
    cls = DpConfig

    def make(self) -> DpConfig:
        return make_dp(optimizer="adamw", local_delta=1e-6)


class TestRoundConfig(WireTypeContract):
    cls = RoundConfig

    def make(self) -> RoundConfig:
        return RoundConfig(12, SHA, 11, make_dp(), 0.5, 1_790_000_000.25, "float16")


class TestUpdateReceipt(WireTypeContract):
    cls = UpdateReceipt

    def make(self) -> UpdateReceipt:
        return UpdateReceipt(12, "phone-7", SHA, 1_790_000_000.5)


class TestErrorBody(WireTypeContract):
    cls = ErrorBody

    def make(self) -> ErrorBody:
        return ErrorBody(RejectionReason.REPLAYED_NONCE, "nonce already used")
