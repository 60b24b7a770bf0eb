"""The real SmolLM2 generator with non-zero LoRA B, and four tokenized tweets: shared by the generator tests."""

from __future__ import annotations

from typing import Any

import torch

from ondevice.data import LabelledTexts
from server_aggregator.synthetic.generator import load_generator, tokenize_examples

TWEETS = (
    "@user have a great weekend everyone!",
    "@user you are the worst, shut up",
    "so tired of this weather, when does summer start #rain",
    "@user lol ok",
)


def generator_with_nonzero_lora_b(threads: int, top_layers: int | None = None) -> Any:
    """lora_B starts at 0, which makes every lora_A gradient 0: give B values so both are tested."""
    torch.set_num_threads(threads)
    gen = load_generator(None, seed=0, top_layers=top_layers)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in gen.model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    return gen


def tweet_examples(tokenizer: Any) -> Any:
    """The four TWEETS labelled 0, 1, 0, 1, tokenized at 32 tokens."""
    data = LabelledTexts(TWEETS, (0, 1, 0, 1), ("not-offensive", "offensive"), source="test")
    return tokenize_examples(tokenizer, data, max_seq_len=32)
