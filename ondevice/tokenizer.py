"""The phone-side tokenizer: the bundle's ``tokenizer/tokenizer.json`` through the ``tokenizers`` library.

No ``transformers`` import. The packaged ``tokenizer.json`` pads every text to 128 tokens; a device
pads per batch instead, so padding is switched off here and done by ``pad_batch`` to the batch's own
longest text. Truncation is set to the manifest's ``max_seq_len`` (what the exporter's transformers
tokenizer does with ``truncation=True, max_length=max_seq_len``), so ids are identical to it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from ondevice.bundle import TOKENIZER_ROLE, BundleError
from ondevice.protocol import ArtifactManifest

TOKENIZER_CONFIG = "tokenizer_config.json"


class DeviceTokenizer:
    """Encodes texts to int64 ids (no padding, truncated to ``max_seq_len``) and pads batches."""

    def __init__(self, tokenizer: Tokenizer, max_seq_len: int, pad_id: int) -> None:
        if isinstance(max_seq_len, bool) or not isinstance(max_seq_len, int) or max_seq_len < 2:
            raise ValueError(f"max_seq_len must be an int >= 2, found {max_seq_len!r}")
        if isinstance(pad_id, bool) or not isinstance(pad_id, int) or pad_id < 0:
            raise ValueError(f"pad_id must be an int >= 0, found {pad_id!r}")
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_seq_len)
        self._tokenizer = tokenizer
        self.max_seq_len = max_seq_len
        self.pad_id = pad_id

    @classmethod
    def from_bundle(cls, bundle_dir: str | Path, manifest: ArtifactManifest) -> DeviceTokenizer:
        """Tokenizer of a (verified) bundle; the pad id comes from the tokenizer's own files."""
        path = Path(bundle_dir) / manifest.file(TOKENIZER_ROLE).path
        return cls.from_file(path, manifest.max_seq_len)

    @classmethod
    def from_file(cls, path: str | Path, max_seq_len: int) -> DeviceTokenizer:
        """Tokenizer from a ``tokenizer.json`` (the pad token may also come from a sibling tokenizer_config.json)."""
        path = Path(path)
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as exc:  # the Rust side raises a bare Exception on malformed JSON
            raise BundleError(f"{path}: not a valid tokenizer.json ({exc})") from exc
        return cls(tokenizer, max_seq_len, _pad_id(tokenizer, path))

    def encode(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Token ids per text (int64 [T_i], [CLS] … [SEP], T_i ≤ max_seq_len)."""
        check_texts(texts)
        return [np.asarray(e.ids, dtype=np.int64) for e in self._tokenizer.encode_batch(list(texts))]

    def pad_batch(self, ids: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Right-pad to the batch's longest → (input_ids, attention_mask), both int64 [B, T]."""
        if not ids:
            raise ValueError("pad_batch needs at least one sequence")
        longest = max(len(row) for row in ids)
        if longest == 0:
            raise ValueError("pad_batch got only empty sequences")
        input_ids = np.full((len(ids), longest), self.pad_id, dtype=np.int64)  # [B, T]
        mask = np.zeros((len(ids), longest), dtype=np.int64)  # [B, T]
        for b, row in enumerate(ids):
            input_ids[b, : len(row)] = row
            mask[b, : len(row)] = 1
        return input_ids, mask


def check_texts(texts: Sequence[str]) -> None:
    """A non-empty sequence of strings, each with at least one non-space character."""
    if isinstance(texts, (str, bytes)):
        raise TypeError(f"texts must be a sequence of strings, not a single {type(texts).__name__}")
    if len(texts) == 0:
        raise ValueError("texts is empty; give at least one text")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"text {i} must be a str, found {type(text).__name__}")
        if not text.strip():
            raise ValueError(f"text {i} is empty or whitespace-only; the classifier needs at least one character")


def length_batches(lengths: Sequence[int], max_batch: int) -> list[list[int]]:
    """Indices grouped into batches of ≤ ``max_batch`` texts of similar length.

    Indices are sorted by (length, index) — deterministic — and cut into consecutive chunks, so each
    batch pads only to its own longest text. Callers scatter results back to input order.
    """
    if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
        raise ValueError(f"max_batch must be an int >= 1, found {max_batch!r}")
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    return [order[start : start + max_batch] for start in range(0, len(order), max_batch)]


def _pad_id(tokenizer: Tokenizer, path: Path) -> int:
    padding = tokenizer.padding
    if padding is not None:
        return int(padding["pad_id"])
    config = path.with_name(TOKENIZER_CONFIG)
    token = json.loads(config.read_text(encoding="utf-8")).get("pad_token") if config.is_file() else None
    pad_id = tokenizer.token_to_id(token) if isinstance(token, str) else None
    if pad_id is None:
        raise BundleError(f"{path}: defines no padding token (and {config.name} names none in the vocabulary)")
    return int(pad_id)
