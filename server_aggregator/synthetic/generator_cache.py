"""The generator's DP stage on cached hidden states: LoRA only on the top k layers, the rest run once.

With LoRA on the top k of the 30 decoder layers only (``load_generator(..., top_layers=k)``), the
embeddings and the first 30 − k layers are frozen, so their output for an example never changes
during training. ``compute_hidden_cache`` runs them once per private example (``torch.no_grad``)
and keeps each example's hidden states at its real tokens; every DP step then runs only the
``TopStack`` (top k layers with their LoRA, final norm, tied lm_head)::

    tokens ──[embed + layers 0..30−k−1]──► cache [L_i, 576] (once)
    cache (padded) [b, T, 576] ──[layers 30−k..29 + LoRA, norm, lm_head]──► logits at text positions [N, V]

``cached_per_example_loss`` is ``per_example_lm_loss`` of the full model (same prefix-LM loss: the
mean over each example's own text tokens), and Opacus wraps the ``TopStack`` exactly as it wraps the
full model. The LoRA modules are the generator's own (shared, not copied): training the top stack
trains ``generator.model``'s adapter in place, so ``save_generator_adapter`` writes a normal PEFT
adapter. The lm_head runs only at the positions whose next token is scored (text + ``<|im_end|>``),
which skips the prompt and the padding: with k = 2 it is the costliest op of the stack.

Cache dtype: float32 by default (≈ 89 KB per example at ≤ 48 tokens, ≈ 1.1 GB for the 11,916
TweetEval-offensive train tweets). bfloat16 halves that but moves per-example losses by up to
~9e-4 relative (measured on 64 tweets, ``bench/bench_generator_cache.py``) and breaks the 1e-4
per-sample-gradient oracle match, so it is opt-in.

Memory: the lm_head's cross-entropy and its gradient are computed together in 256-token chunks
(``_HeadCrossEntropy``), so no [N, V] tensor is kept for backward; measured peak growth of one
Opacus step: ~7.6 MB per example at k = 2, ~11.6 MB at k = 4 (batch 128; 18.7 MB at k = 2 with
plain autograd cross-entropy). Batches of many hundreds therefore go through ``train_dp_sgd``'s
``micro_batch_size`` (tested with the top stack in ``tests/e2e/test_generator_layer_cache.py``).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from server_aggregator.synthetic.dp_sgd import PerExampleLoss
from server_aggregator.synthetic.generator import Generator, TokenizedExamples, collate


def _causal_lm(generator: Generator) -> Any:
    """The transformers causal LM under the PEFT wrapper (LlamaForCausalLM)."""
    return generator.model.get_base_model()


def lora_layer_indices(generator: Generator) -> list[int]:
    """Indices of the decoder layers that hold a trainable (LoRA) parameter."""
    layers = _causal_lm(generator).model.layers
    return [i for i, layer in enumerate(layers) if any(p.requires_grad for p in layer.parameters())]


def _top_layers_of(generator: Generator, top_layers: int | None) -> int:
    """k such that the LoRA sits exactly on the top k decoder layers (checked against ``top_layers``)."""
    n = len(_causal_lm(generator).model.layers)
    found = lora_layer_indices(generator)
    if not found:
        raise ValueError("the generator has no trainable decoder layer: nothing for the top stack to train")
    k = n - found[0]
    if found != list(range(n - k, n)):
        raise ValueError(f"the LoRA must sit on a top block of layers to cache the rest, found it on layers {found}")
    if top_layers is not None and top_layers != k:
        raise ValueError(
            f"top_layers={top_layers} but the generator's LoRA is on the top {k} layers ({found}); "
            f"load it with load_generator(..., top_layers={top_layers})"
        )
    outside = [
        name
        for name, p in generator.model.named_parameters()
        if p.requires_grad and not any(f".layers.{i}." in name for i in found)
    ]
    if outside:
        raise ValueError(f"trainable parameters outside the decoder layers cannot be trained on a cache: {outside}")
    return k


def _decoder_inputs(
    config: Any, rotary: nn.Module, hidden: torch.Tensor, attention_mask: torch.Tensor
) -> dict[str, Any]:
    """What a transformers 5.x Llama decoder layer needs besides its input: the causal + padding mask
    (built exactly as ``LlamaModel.forward`` builds it) and the rotary (cos, sin) of positions 0..T-1."""
    from transformers.masking_utils import create_causal_mask

    position_ids = torch.arange(hidden.shape[1]).unsqueeze(0)  # [1, T]: right padding, positions start at 0
    mask = create_causal_mask(
        config=config,
        inputs_embeds=hidden,
        attention_mask=attention_mask,
        past_key_values=None,
        position_ids=position_ids,
    )
    return {
        "attention_mask": mask,
        "position_ids": position_ids,
        "position_embeddings": rotary(hidden, position_ids=position_ids),
    }


@dataclass(frozen=True)
class HiddenCache:
    """Per example, the output of the frozen lower layers at its real tokens: ``states[i]`` [L_i, H]."""

    states: tuple[torch.Tensor, ...]
    lower_layers: int  # decoder layers run before caching (the top stack starts at this index)
    fingerprint: str  # sha256 of token ids, split, model path, dtype: a saved cache only reloads for the same

    def __len__(self) -> int:
        return len(self.states)

    @property
    def nbytes(self) -> int:
        return sum(s.numel() * s.element_size() for s in self.states)

    def padded(self, indices: Sequence[int]) -> torch.Tensor:
        """Right-padded float32 batch [b, T, H] (zeros after each example's L_i tokens)."""
        rows = [self.states[i] for i in indices]
        width = max(r.shape[0] for r in rows)
        out = torch.zeros((len(rows), width, rows[0].shape[1]), dtype=torch.float32)  # [b, T, H]
        for row, states in enumerate(rows):
            out[row, : states.shape[0]] = states
        return out

    def save(self, path: Path) -> None:
        """One .pt file: all states concatenated [Σ L_i, H], their lengths, the layer split, the fingerprint."""
        torch.save(
            {
                "states": torch.cat(self.states),
                "lengths": torch.tensor([s.shape[0] for s in self.states]),
                "lower_layers": self.lower_layers,
                "fingerprint": self.fingerprint,
            },
            path,
        )

    @classmethod
    def load(
        cls, path: Path, examples: TokenizedExamples, lower_layers: int, model_key: str, dtype: torch.dtype
    ) -> HiddenCache:
        """A cache saved by ``save``; ``ValueError`` if it was computed for other tokens, split, model or dtype."""
        blob = torch.load(path, weights_only=True)
        want = _fingerprint(examples, lower_layers, model_key, dtype)
        if blob["fingerprint"] != want:
            raise ValueError(
                f"{path} holds a cache of other data, layer split, model or dtype "
                f"(fingerprint {blob['fingerprint'][:12]}…, expected {want[:12]}…)"
            )
        states = torch.split(blob["states"], blob["lengths"].tolist())
        return cls(tuple(states), int(blob["lower_layers"]), want)


def model_key_of(causal_lm: Any) -> str:
    """What names the frozen weights a cache was computed with: the folder they were loaded from."""
    return str(getattr(causal_lm.config, "_name_or_path", ""))


def _fingerprint(examples: TokenizedExamples, lower_layers: int, model_key: str, dtype: torch.dtype) -> str:
    digest = hashlib.sha256(f"{lower_layers};{examples.pad_id};{model_key};{dtype}".encode())
    for ids, prompt in zip(examples.ids, examples.prompt_lengths, strict=True):
        digest.update(repr((prompt, ids)).encode())
    return digest.hexdigest()


def compute_hidden_cache(
    causal_lm: Any,
    examples: TokenizedExamples,
    lower_layers: int,
    *,
    batch_size: int = 32,
    dtype: torch.dtype = torch.float32,
    progress: Callable[[int, int], None] | None = None,
) -> HiddenCache:
    """Run embeddings + decoder layers ``0..lower_layers-1`` of ``causal_lm`` once over every example
    (length-sorted batches, right padding, ``torch.no_grad``) and keep each example's real tokens."""
    if dtype not in (torch.float32, torch.bfloat16):
        raise ValueError(f"cache dtype must be torch.float32 or torch.bfloat16, found {dtype}")
    body = causal_lm.model
    if not 0 <= lower_layers < len(body.layers):
        raise ValueError(f"lower_layers must be in 0..{len(body.layers) - 1}, found {lower_layers}")
    order = sorted(range(len(examples)), key=lambda i: len(examples.ids[i]))  # similar lengths share a batch
    states: list[torch.Tensor | None] = [None] * len(examples)
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            batch = collate(examples, chunk)
            hidden = body.embed_tokens(batch["input_ids"])  # [b, T, H]
            extra = _decoder_inputs(body.config, body.rotary_emb, hidden, batch["attention_mask"])
            for layer in body.layers[:lower_layers]:
                hidden = layer(hidden, **extra)  # [b, T, H]
            lengths = batch["attention_mask"].sum(dim=1).tolist()
            for row, (i, length) in enumerate(zip(chunk, lengths, strict=True)):
                states[i] = hidden[row, :length].to(dtype).clone()  # [L_i, H]
            if progress is not None:
                progress(min(start + batch_size, len(order)), len(order))
    key = _fingerprint(examples, lower_layers, model_key_of(causal_lm), dtype)
    return HiddenCache(tuple(s for s in states if s is not None), lower_layers, key)


HEAD_CHUNK_TOKENS = 256
"""Tokens per lm_head chunk in ``_HeadCrossEntropy``: the transient logits are chunk × V × 4 B (50 MB)."""


class _HeadCrossEntropy(torch.autograd.Function):
    """Per-token cross-entropy of a FROZEN lm_head, ``CE(hidden @ Wᵀ, target)`` → [N], in chunks.

    Its only gradient is the one w.r.t. ``hidden`` (W has none), ∂ℓ_n/∂h_n = (softmax_n − onehot_n) W,
    so the forward computes it chunk by chunk and keeps just that [N, H]: no [N, V] tensor outlives
    a chunk (autograd would keep the log-softmax, then build the [N, V] gradient: ~13 MB per tweet).
    Backward scales it by each token's incoming gradient. Exact, and no recomputation."""

    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        losses = torch.empty(hidden.shape[0], dtype=hidden.dtype)  # [N]
        grads = torch.empty_like(hidden) if hidden.requires_grad else None  # [N, H]
        for start in range(0, hidden.shape[0], HEAD_CHUNK_TOKENS):
            part = slice(start, start + HEAD_CHUNK_TOKENS)
            logits = hidden[part] @ weight.T  # [c, V]
            log_probs = torch.log_softmax(logits, dim=-1)  # [c, V]
            picked = targets[part].unsqueeze(1)  # [c, 1]
            losses[part] = -log_probs.gather(1, picked).squeeze(1)
            if grads is not None:
                probs = log_probs.exp_()  # [c, V], in place: softmax
                probs.scatter_add_(1, picked, torch.full_like(picked, -1.0, dtype=probs.dtype))  # softmax − onehot
                grads[part] = probs @ weight  # [c, H]
        ctx.save_for_backward(grads)
        return losses

    @staticmethod
    def backward(ctx: Any, grad_losses: torch.Tensor) -> tuple[torch.Tensor | None, None, None]:
        (grads,) = ctx.saved_tensors  # [N, H]
        if grads is None:
            return None, None, None
        return grads * grad_losses.unsqueeze(1), None, None  # [N, H]


class TopStack(nn.Module):
    """The top decoder layers of a causal LM (with their LoRA), its final norm and lm_head, fed with
    cached hidden states. Shares its modules with the generator: nothing is copied."""

    def __init__(self, causal_lm: Any, lower_layers: int) -> None:
        super().__init__()
        body = causal_lm.model
        self.config = body.config
        self.layers = nn.ModuleList(list(body.layers[lower_layers:]))
        self.norm = body.norm
        self.rotary_emb = body.rotary_emb
        self.lm_head = causal_lm.lm_head
        self.lower_layers = lower_layers
        if self.lm_head.weight.requires_grad or getattr(self.lm_head, "bias", None) is not None:
            raise ValueError("the top stack expects a frozen lm_head without bias (the generator trains LoRA only)")

    def forward(
        self,
        hidden: torch.Tensor,
        attention_mask: torch.Tensor,
        select: torch.Tensor | None = None,
        targets: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """hidden [b, T, H] (cached, right-padded), attention_mask [b, T] → logits [b, T, V]; with
        ``select`` (bool [b, T]) only at the selected positions, row-major: [N, V]; with ``select``
        and ``targets`` [N] (the next token at each selected position) the per-token cross-entropy
        [N] instead of logits, computed without materialising [N, V] for backward."""
        extra = _decoder_inputs(self.config, self.rotary_emb, hidden, attention_mask)
        for layer in self.layers:
            hidden = layer(hidden, **extra)  # [b, T, H]
        hidden = self.norm(hidden)  # [b, T, H]
        if select is not None:
            hidden = hidden[select]  # [N, H]
        if targets is not None:
            if select is None:
                raise ValueError("targets need select: the positions they belong to")
            losses: torch.Tensor = _HeadCrossEntropy.apply(hidden, self.lm_head.weight, targets)  # type: ignore[no-untyped-call]  # [N]
            return losses
        logits: torch.Tensor = self.lm_head(hidden)  # [b, T, V] or [N, V]
        return logits


def cached_per_example_loss(cache: HiddenCache, examples: TokenizedExamples) -> PerExampleLoss:
    """``per_example_loss(model, indices) -> [b]`` on a ``TopStack`` (or Opacus' wrapper of one): the
    full model's ``per_example_lm_loss`` on the same examples, computed from the cache."""
    if len(cache) != len(examples):
        raise ValueError(f"the cache holds {len(cache)} examples but there are {len(examples)}")

    def per_example_loss(model: nn.Module, indices: Sequence[int]) -> torch.Tensor:
        batch = collate(examples, indices)
        hidden = cache.padded(indices)  # [b, T, H]
        scored = batch["loss_mask"] > 0  # [b, T-1]: target t+1 is a text token
        select = nn.functional.pad(scored, (0, 1))  # [b, T]: positions whose next token is scored
        targets = batch["input_ids"][:, 1:][scored]  # [N]
        token_loss = model(hidden, batch["attention_mask"], select, targets)  # [N]
        b, width = scored.shape
        rows = torch.arange(b).unsqueeze(1).expand(b, width)[scored]  # [N]: example of each token
        sums = torch.zeros(b, dtype=token_loss.dtype).index_add(0, rows, token_loss)  # [b]
        return sums / scored.sum(dim=1).clamp(min=1)  # [b]

    return per_example_loss


@dataclass(frozen=True)
class CachedTraining:
    """What ``train_dp_sgd`` needs for the cached generator stage: the model to wrap, its trainables, the loss."""

    model: TopStack
    parameters: list[nn.Parameter]
    per_example_loss: PerExampleLoss
    cache: HiddenCache


def prepare_cached_training(
    generator: Generator,
    examples: TokenizedExamples,
    top_layers: int | None = None,
    *,
    dtype: torch.dtype = torch.float32,
    batch_size: int = 32,
    cache_path: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> CachedTraining:
    """Cache the frozen lower layers over ``examples`` and return the top stack, its LoRA parameters
        and the per-example loss: ``train_dp_sgd(t.model, t.parameters, t.per_example_loss, plan, ...)``.

        ``generator`` must carry its LoRA on the top k layers only (``load_generator(..., top_layers=k)``);
        ``top_layers``, if given, is checked against it. With ``cache_path`` the cache is reloaded from
        that file when it matches (same examples, layer split, model folder and dtype), else computed and
    written there (atomically).
    """
    k = _top_layers_of(generator, top_layers)
    causal_lm = _causal_lm(generator)
    lower = len(causal_lm.model.layers) - k
    cache = None
    if cache_path is not None and cache_path.is_file():
        try:
            cache = HiddenCache.load(cache_path, examples, lower, model_key_of(causal_lm), dtype)
        except ValueError:
            cache = None  # stale (other examples, split, model or dtype): recompute and overwrite
    if cache is None:
        cache = compute_hidden_cache(causal_lm, examples, lower, batch_size=batch_size, dtype=dtype, progress=progress)
        if cache_path is not None:
            staging = cache_path.with_name(cache_path.name + ".partial")
            cache.save(staging)
            os.replace(staging, cache_path)
    stack = TopStack(causal_lm, lower)
    parameters = [p for p in stack.parameters() if p.requires_grad]
    expected = {id(p) for p in generator.trainable_parameters()}
    if {id(p) for p in parameters} != expected:  # pragma: no cover - guarded by _top_layers_of
        raise RuntimeError("the top stack does not hold exactly the generator's trainable parameters")
    return CachedTraining(stack, parameters, cached_per_example_loss(cache, examples), cache)
