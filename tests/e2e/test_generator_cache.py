"""SmolLM2 from the packaged GGUF: converted once into the cache, then reloaded fast."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from export.model_store import resolve_generator


@pytest.mark.slow
def test_gguf_is_converted_once_and_generates(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    first = resolve_generator(cache=tmp_path)
    assert first.source == "cache"
    marker = json.loads((first.path / "privtune-converted.json").read_text())
    assert marker["source_gguf"].endswith(".gguf") and len(marker["source_sha256"]) == 64
    assert not [p for p in tmp_path.glob("models/.*")], "staging folder left behind"

    stamp = (first.path / "model.safetensors").stat().st_mtime_ns
    again = resolve_generator(cache=tmp_path)
    assert again.path == first.path
    assert (first.path / "model.safetensors").stat().st_mtime_ns == stamp  # no second conversion

    tokenizer = AutoTokenizer.from_pretrained(first.path)
    model = AutoModelForCausalLM.from_pretrained(first.path).eval()
    assert 130e6 < sum(p.numel() for p in model.parameters()) < 140e6
    prompt = tokenizer("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**prompt, max_new_tokens=3, do_sample=False)
    text = tokenizer.decode(out[0, prompt["input_ids"].shape[1] :])
    assert "Paris" in text, text
