"""Sampling labelled synthetic texts from the DP-trained generator (post-processing: no ε cost).

Nothing here reads the private data: filters look only at generated text (empties and exact
duplicates are dropped). Filtering against the private examples would be a data-dependent step
outside the DP guarantee, so it is deliberately absent.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ondevice.data import LabelledTexts
from ondevice.durable import atomic_write_bytes
from server_aggregator.synthetic.generator import END_OF_TEXT, Generator, prompt_for


@dataclass(frozen=True)
class SamplingSettings:
    samples_per_label: int = 128
    temperature: float = 1.0
    top_p: float = 0.95
    max_new_tokens: int = 40
    batch_size: int = 32
    max_attempts_factor: float = 3.0
    """Stop a label after generating this many × samples_per_label texts (duplicates, empties)."""
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.samples_per_label, int) or self.samples_per_label < 1:
            raise ValueError(f"samples_per_label must be an int >= 1, found {self.samples_per_label!r}")
        if not math.isfinite(self.temperature) or self.temperature <= 0:
            raise ValueError(f"temperature must be a finite number > 0, found {self.temperature!r}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], found {self.top_p!r}")
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be an int >= 1, found {self.max_new_tokens!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, found {self.batch_size!r}")
        if not self.max_attempts_factor >= 1:
            raise ValueError(f"max_attempts_factor must be >= 1, found {self.max_attempts_factor!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SamplingReport:
    kept: dict[str, int]
    generated: dict[str, int]
    dropped_empty: dict[str, int]
    dropped_duplicate: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def clean_generated(text: str) -> str:
    """Text up to the first end-of-turn marker, whitespace collapsed to single spaces."""
    return " ".join(text.split(END_OF_TEXT, 1)[0].split())


@torch.no_grad()
def generate_texts(
    generator: Generator, label_name: str, count: int, settings: SamplingSettings, *, seed: int
) -> list[str]:
    """``count`` raw continuations of the label's prompt (left-padded batches, nucleus sampling)."""
    model, tokenizer = generator.model, generator.tokenizer
    model.eval()
    tokenizer.padding_side = "left"
    prompt = tokenizer([prompt_for(label_name)], add_special_tokens=False, return_tensors="pt")
    torch.manual_seed(seed)
    texts: list[str] = []
    while len(texts) < count:
        n = min(settings.batch_size, count - len(texts))
        ids = prompt["input_ids"].repeat(n, 1)  # [n, P]
        mask = prompt["attention_mask"].repeat(n, 1)  # [n, P]
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            do_sample=True,
            temperature=settings.temperature,
            top_p=settings.top_p,
            max_new_tokens=settings.max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.convert_tokens_to_ids(END_OF_TEXT),
        )  # [n, P + new]
        texts.extend(tokenizer.batch_decode(out[:, ids.shape[1] :], skip_special_tokens=True))
    return texts


def sample_synthetic(
    generator: Generator,
    label_names: Sequence[str],
    settings: SamplingSettings,
    *,
    progress: Callable[[str, int, int], None] | None = None,
) -> tuple[LabelledTexts, SamplingReport]:
    """Up to ``samples_per_label`` distinct non-empty texts per label, in generation order."""
    texts: list[str] = []
    labels: list[int] = []
    kept: dict[str, int] = {}
    generated: dict[str, int] = {}
    empties: dict[str, int] = {}
    duplicates: dict[str, int] = {}
    budget = math.ceil(settings.samples_per_label * settings.max_attempts_factor)
    for label, name in enumerate(label_names):
        seen: set[str] = set()
        made = empty = dup = 0
        batch_seed = settings.seed * 1_000_003 + label * 7919
        while len(seen) < settings.samples_per_label and made < budget:
            want = min(settings.batch_size, budget - made)
            for raw in generate_texts(generator, name, want, settings, seed=batch_seed + made):
                made += 1
                text = clean_generated(raw)
                if not text:
                    empty += 1
                elif text in seen:
                    dup += 1
                elif len(seen) < settings.samples_per_label:
                    seen.add(text)
                    texts.append(text)
                    labels.append(label)
            if progress is not None:
                progress(name, len(seen), settings.samples_per_label)
        kept[name], generated[name], empties[name], duplicates[name] = len(seen), made, empty, dup
    if not texts:
        raise RuntimeError("the generator produced no usable text; check the generator and the sampling settings")
    data = LabelledTexts(tuple(texts), tuple(labels), tuple(label_names), source="synthetic")
    return data, SamplingReport(kept, generated, empties, duplicates)


def write_jsonl(path: Path, data: LabelledTexts, settings: SamplingSettings) -> None:
    """One JSON object per line: text, label (name), label_id and the generation settings."""
    gen = {k: v for k, v in settings.to_dict().items() if k in ("temperature", "top_p", "max_new_tokens", "seed")}
    lines = [
        json.dumps({"text": t, "label": data.label_names[y], "label_id": y, "generation": gen}, ensure_ascii=False)
        for t, y in zip(data.texts, data.labels, strict=True)
    ]
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())
