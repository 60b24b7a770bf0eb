"""The safety classifier: MiniLM-L6 encoder with LoRA (peft) + mean pooling + linear head.

Shared by synth (trains it), export (turns it into phone artifacts) and the publisher
(merges federated updates into it). Saved in Hugging Face form::

    classifier.json            labels, LoRA spec, max_seq_len, base model id + sha256
    adapter_config.json        } the encoder's PEFT LoRA adapter:
    adapter_model.safetensors  }   PeftModel.from_pretrained(AutoModel(base), dir) loads it
    head.safetensors           head.weight [L, H], head.bias [L]
    tokenizer files            the base model's tokenizer
    encoder/                   optional copy of the base encoder (self-contained folder)

The attention mask is built here as an additive 4-D float mask: transformers 5.x's own mask
builder uses index ops that break ExecuTorch quantized export; this form gives
bit-identical outputs (tested).
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from export.model_store import ModelNotFoundError, ResolvedModel, resolve_encoder, weights_sha256
from ondevice.protocol import LoraSpec, TensorSpec, canonical_name

DEFAULT_LABELS = ("safe", "unsafe")
FORMAT_NAME = "privtune-classifier"
FORMAT_VERSION = 1
MASK_FILL = -1e9
CONFIG_FILE = "classifier.json"
HEAD_FILE = "head.safetensors"
ENCODER_SUBDIR = "encoder"


class ClassifierFormatError(ValueError):
    """A folder is not a loadable privtune classifier; the message says what is wrong."""


@dataclass(frozen=True)
class ClassifierSpec:
    """Label names, LoRA shape and the longest input (in tokens) the classifier takes."""

    labels: tuple[str, ...] = DEFAULT_LABELS
    lora: LoraSpec = field(default_factory=LoraSpec)
    max_seq_len: int = 128

    def __post_init__(self) -> None:
        if not isinstance(self.labels, tuple) or len(self.labels) < 2:
            raise ValueError(f"labels must be a tuple of >= 2 names, found {self.labels!r}")
        if len(set(self.labels)) != len(self.labels) or not all(isinstance(x, str) and x.strip() for x in self.labels):
            raise ValueError(f"labels must be distinct non-empty strings, found {self.labels!r}")
        if not isinstance(self.lora, LoraSpec):
            raise ValueError(f"lora must be a LoraSpec, found {self.lora!r}")
        if (
            isinstance(self.max_seq_len, bool)
            or not isinstance(self.max_seq_len, int)
            or not 2 <= self.max_seq_len <= 512
        ):
            raise ValueError(
                f"max_seq_len must be an int in 2..512 (MiniLM's position table), found {self.max_seq_len!r}"
            )


def additive_attention_mask(attention_mask: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """[B, T] 0/1 mask → [B, 1, 1, T] additive mask: 0 where attended, -1e9 where padded."""
    return (1.0 - attention_mask[:, None, None, :].to(dtype)) * MASK_FILL


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``hidden`` [B, T, H] over positions where ``attention_mask`` [B, T] is 1 → [B, H]."""
    weights = attention_mask.to(hidden.dtype)[:, :, None]  # [B, T, 1]
    total = (hidden * weights).sum(dim=1)  # [B, H]
    count = weights.sum(dim=1).clamp(min=1.0)  # [B, 1]
    return total / count


class SafetyClassifier(nn.Module):
    """encoder (BertModel, optionally wrapped by peft) → mean pooling → Linear(H, L)."""

    encoder: Any  # transformers / peft models are untyped here

    def __init__(self, encoder: nn.Module, hidden_size: int, num_labels: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(hidden_size, num_labels)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """input_ids, attention_mask: [B, T] int → logits [B, L]."""
        mask = additive_attention_mask(attention_mask)  # [B, 1, 1, T]
        hidden = self.encoder(input_ids=input_ids, attention_mask=mask).last_hidden_state  # [B, T, H]
        return self.head(mean_pool(hidden, attention_mask))  # type: ignore[no-any-return]


@dataclass
class Classifier:
    """A safety classifier with its tokenizer and the identity of its base weights."""

    model: SafetyClassifier
    tokenizer: Any
    spec: ClassifierSpec
    base_model_id: str
    base_model_sha256: str
    base_model_path: Path

    def trainable_parameters(self) -> dict[str, nn.Parameter]:
        """LoRA + head parameters under canonical names, in the model's fixed order."""
        return {canonical_name(n): p for n, p in self.model.named_parameters() if p.requires_grad}

    def trainable_specs(self) -> tuple[TensorSpec, ...]:
        return tuple(TensorSpec(name, tuple(p.shape), "float32") for name, p in self.trainable_parameters().items())

    def trainable_state(self) -> dict[str, np.ndarray]:
        """Copies of the trainable tensors as float32 numpy arrays (canonical names, fixed order)."""
        return {
            n: p.detach().cpu().numpy().astype(np.float32, copy=True) for n, p in self.trainable_parameters().items()
        }

    def load_trainable_state(self, state: dict[str, np.ndarray]) -> None:
        """Overwrite the trainable tensors; the key set and shapes must match exactly."""
        params = self.trainable_parameters()
        if set(state) != set(params):
            missing, extra = sorted(set(params) - set(state)), sorted(set(state) - set(params))
            raise ValueError(f"trainable state keys differ: missing {missing[:3]}..., unexpected {extra[:3]}...")
        with torch.no_grad():
            for name, param in params.items():
                value = torch.from_numpy(np.asarray(state[name], dtype=np.float32))
                if tuple(value.shape) != tuple(param.shape):
                    raise ValueError(f"{name}: shape {tuple(value.shape)} does not match {tuple(param.shape)}")
                param.copy_(value)

    def encode(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Tokenize, truncate to ``max_seq_len`` and pad to the longest text → input_ids, attention_mask [B, T]."""
        _check_texts(texts)
        batch = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.spec.max_seq_len, return_tensors="pt"
        )
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}

    @torch.no_grad()
    def classify(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """Class probabilities [N, L]; batches grouped by length so each pads only to its own longest."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, found {batch_size}")
        _check_texts(texts)
        self.model.eval()
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        probs = np.zeros((len(texts), len(self.spec.labels)), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            batch = self.encode([texts[i] for i in idx])
            logits = self.model(batch["input_ids"], batch["attention_mask"])  # [b, L]
            probs[idx] = torch.softmax(logits, dim=-1).numpy()
        return probs

    def save(self, directory: str | Path, *, include_encoder: bool = False) -> Path:
        """Write the classifier folder (see module docstring); returns its path."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        encoder = self.model.encoder
        if not hasattr(encoder, "peft_config"):
            raise ClassifierFormatError("the classifier's encoder has no peft adapter to save")
        encoder.peft_config["default"].base_model_name_or_path = self.base_model_id
        # save_embedding_layers=False: LoRA never touches the embeddings, and "auto" would
        # query the hub for the base config.
        encoder.save_pretrained(out, save_embedding_layers=False)
        head = self.model.head
        save_file(
            {"head.weight": head.weight.detach().contiguous(), "head.bias": head.bias.detach().contiguous()},
            out / HEAD_FILE,
        )
        self.tokenizer.save_pretrained(out)
        config = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "labels": list(self.spec.labels),
            "lora": self.spec.lora.to_dict(),
            "max_seq_len": self.spec.max_seq_len,
            "pooling": "mean",
            "base_model_id": self.base_model_id,
            "base_model_sha256": self.base_model_sha256,
        }
        (out / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
        if include_encoder:
            # Byte-identical copy, so the recorded weights sha256 still matches.
            target = out / ENCODER_SUBDIR
            if target.exists():
                shutil.rmtree(target)
            target.mkdir()
            for item in sorted(self.base_model_path.iterdir()):
                if item.is_file() and (item.suffix in (".json", ".safetensors", ".txt", ".model")):
                    shutil.copy2(item, target / item.name)
        return out


def _check_texts(texts: Sequence[str]) -> None:
    if isinstance(texts, str) or not texts:
        raise ValueError("texts must be a non-empty sequence of strings")
    for i, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"text {i} is empty; the classifier needs at least one non-space character")


def _load_encoder(path: Path) -> Any:
    from transformers import AutoModel

    # Dropout off everywhere: LoRA fine-tuning does not need it, and per-example gradients must be
    # deterministic so every runtime (eager, ORT, ExecuTorch) computes the same step.
    return AutoModel.from_pretrained(
        path, attn_implementation="eager", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0
    )


def check_spec_fits(spec: ClassifierSpec, base: Any) -> None:
    """Refuse LoRA targets the encoder lacks, a rank above the hidden size, or a max_seq_len
    beyond its position table — with the values that would work."""
    hidden = int(base.config.hidden_size)
    if spec.lora.rank > hidden:
        raise ValueError(f"LoRA rank {spec.lora.rank} exceeds the encoder's hidden size {hidden}")
    positions = int(base.config.max_position_embeddings)
    if spec.max_seq_len > positions:
        raise ValueError(f"max_seq_len {spec.max_seq_len} exceeds the encoder's {positions} positions")
    linear_names = sorted(
        {name.rsplit(".", 1)[-1] for name, module in base.named_modules() if isinstance(module, nn.Linear)}
    )
    missing = [t for t in spec.lora.targets if t not in linear_names]
    if missing:
        raise ValueError(
            f"LoRA target module(s) {missing} not found in the encoder; its linear layers are {linear_names}"
        )


def build_classifier(
    encoder: str | Path | None = None, spec: ClassifierSpec | None = None, *, seed: int = 0
) -> Classifier:
    """A fresh classifier on the given base encoder: LoRA B = 0 (so it starts as the base), seeded head."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer

    spec = spec or ClassifierSpec()
    resolved = resolve_encoder(encoder)
    torch.manual_seed(seed)  # peft initialises lora_A with torch's global RNG
    base = _load_encoder(resolved.path)
    check_spec_fits(spec, base)
    lora = LoraConfig(
        r=spec.lora.rank,
        lora_alpha=spec.lora.alpha,  # type: ignore[arg-type]  # peft annotates int; floats work
        target_modules=list(spec.lora.targets),
        lora_dropout=spec.lora.dropout,
        bias="none",
    )
    peft_encoder = get_peft_model(base, lora)
    model = SafetyClassifier(peft_encoder, base.config.hidden_size, len(spec.labels))
    generator = torch.Generator().manual_seed(seed)
    bound = 1.0 / math.sqrt(base.config.hidden_size)
    with torch.no_grad():
        model.head.weight.copy_(torch.empty_like(model.head.weight).uniform_(-bound, bound, generator=generator))
        model.head.bias.zero_()
    tokenizer = AutoTokenizer.from_pretrained(resolved.path)
    return Classifier(model, tokenizer, spec, resolved.model_id, weights_sha256(resolved.path), resolved.path)


def _read_config(directory: Path) -> dict[str, Any]:
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise ClassifierFormatError(
            f"{directory} is not a privtune classifier (no {CONFIG_FILE}); build one with "
            "`privtune synth` or export.classifier.build_classifier"
        )
    config: dict[str, Any] = json.loads(path.read_text())
    if config.get("format") != FORMAT_NAME or config.get("format_version") != FORMAT_VERSION:
        raise ClassifierFormatError(
            f"{path}: format {config.get('format')!r} v{config.get('format_version')!r} is not "
            f"{FORMAT_NAME} v{FORMAT_VERSION}"
        )
    for name in ("adapter_config.json", "adapter_model.safetensors", HEAD_FILE):
        if not (directory / name).is_file():
            raise ClassifierFormatError(f"{directory}: {name} is missing")
    return config


def load_classifier(directory: str | Path, *, encoder: str | Path | None = None) -> Classifier:
    """Load a saved classifier. The base encoder comes from ``encoder`` if given, else the folder's
    ``encoder/`` copy, else the recorded base model id; its sha256 must match the recorded one."""
    from peft import PeftModel
    from transformers import AutoTokenizer

    folder = Path(directory)
    config = _read_config(folder)
    spec = ClassifierSpec(
        labels=tuple(config["labels"]), lora=LoraSpec.from_dict(config["lora"]), max_seq_len=config["max_seq_len"]
    )
    if encoder is not None:
        resolved = resolve_encoder(encoder)
    elif (folder / ENCODER_SUBDIR / "config.json").is_file():
        resolved = ResolvedModel(config["base_model_id"], folder / ENCODER_SUBDIR, "local")
    else:
        resolved = resolve_encoder(config["base_model_id"])
    found = weights_sha256(resolved.path)
    if found != config["base_model_sha256"]:
        raise ModelNotFoundError(
            f"base encoder at {resolved.path} has weights sha256 {found[:12]}…, but {folder} was trained on "
            f"{config['base_model_sha256'][:12]}… ({config['base_model_id']}); pass the matching encoder"
        )
    base = _load_encoder(resolved.path)
    peft_encoder = PeftModel.from_pretrained(base, folder, is_trainable=True)
    model = SafetyClassifier(peft_encoder, base.config.hidden_size, len(spec.labels))
    head = load_file(folder / HEAD_FILE)
    expected = {"head.weight": (len(spec.labels), base.config.hidden_size), "head.bias": (len(spec.labels),)}
    if {k: tuple(v.shape) for k, v in head.items()} != expected:
        raise ClassifierFormatError(f"{folder / HEAD_FILE}: tensors {sorted(head)} do not have shapes {expected}")
    with torch.no_grad():
        model.head.weight.copy_(head["head.weight"])
        model.head.bias.copy_(head["head.bias"])
    tokenizer = AutoTokenizer.from_pretrained(folder)
    return Classifier(model, tokenizer, spec, config["base_model_id"], found, resolved.path)
