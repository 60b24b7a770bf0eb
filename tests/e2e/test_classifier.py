"""The safety classifier on the real packaged MiniLM: structure, masks, pooling, save/load, training."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from export.classifier import (
    Classifier,
    ClassifierFormatError,
    ClassifierSpec,
    additive_attention_mask,
    build_classifier,
    load_classifier,
    mean_pool,
)
from export.model_store import ModelNotFoundError, resolve_encoder
from ondevice.data import load_tweeteval
from ondevice.protocol import LoraSpec

TEXTS = [
    "@user you are a wonderful person, thank you!",
    "@user shut up you idiot, nobody cares",
    "ok",
    "Emoji test 😀🔥 #hashtag https://t.co/x",
]


@pytest.fixture
def restored(classifier: Classifier) -> Iterator[Classifier]:
    """The session classifier, with its trainable weights restored afterwards."""
    saved = classifier.trainable_state()
    yield classifier
    classifier.load_trainable_state(saved)


def test_trainable_parameters_are_lora_and_head_only(classifier: Classifier) -> None:
    trainable = classifier.trainable_parameters()
    # 6 layers x (query, value) x (A, B) + head weight/bias; numbers from an independent probe.
    assert len(trainable) == 26
    assert sum(p.numel() for p in trainable.values()) == 74_498
    assert all(".lora_A." in n or ".lora_B." in n or n.startswith("head.") for n in trainable)
    frozen = [n for n, p in classifier.model.named_parameters() if not p.requires_grad]
    assert len(frozen) > 90 and not any("lora" in n or n.startswith("head") for n in frozen)
    assert list(trainable)[:2] == [
        "encoder.layer.0.attention.self.query.lora_A.weight",
        "encoder.layer.0.attention.self.query.lora_B.weight",
    ]
    assert classifier.trainable_specs()[0].shape == (8, 384)


def test_additive_4d_mask_matches_transformers_own_masking(classifier: Classifier) -> None:
    batch = classifier.encode(TEXTS)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert (mask == 0).any(), "the batch must contain padding for this test to mean anything"
    encoder = classifier.model.encoder
    with torch.no_grad():
        ours = encoder(input_ids=ids, attention_mask=additive_attention_mask(mask)).last_hidden_state
        theirs = encoder(input_ids=ids, attention_mask=mask).last_hidden_state
    valid = mask.bool()
    assert torch.equal(ours[valid], theirs[valid])


def test_mean_pool_matches_a_numpy_oracle() -> None:
    rng = np.random.default_rng(0)
    hidden = rng.standard_normal((3, 5, 4)).astype(np.float32)
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    expected = np.stack([hidden[b, mask[b] == 1].mean(axis=0) for b in range(3)])
    got = mean_pool(torch.from_numpy(hidden), torch.from_numpy(mask)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)


def test_fresh_lora_is_the_identity_on_the_base_encoder(classifier: Classifier) -> None:
    batch = classifier.encode(TEXTS)
    encoder = classifier.model.encoder
    with torch.no_grad():
        with_lora = encoder(**batch).last_hidden_state
        with encoder.disable_adapter():
            base = encoder(**batch).last_hidden_state
    assert torch.equal(with_lora, base)  # lora_B starts at zero


def test_classify_gives_probabilities_independent_of_batch_padding(classifier: Classifier) -> None:
    probs = classifier.classify(TEXTS, batch_size=4)
    assert probs.shape == (4, 2)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    alone = np.concatenate([classifier.classify([t]) for t in TEXTS])
    np.testing.assert_allclose(probs, alone, atol=2e-6)


def test_classify_refuses_empty_text_and_truncates_long_text(classifier: Classifier) -> None:
    with pytest.raises(ValueError, match="text 1 is empty"):
        classifier.classify(["fine", "   "])
    with pytest.raises(ValueError, match="non-empty sequence"):
        classifier.classify([])
    long_text = "word " * 2000
    assert classifier.encode([long_text])["input_ids"].shape[1] == classifier.spec.max_seq_len
    assert classifier.classify([long_text]).shape == (1, 2)


def _perturb(classifier: Classifier, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in classifier.trainable_parameters().values():
            param.add_(0.05 * torch.randn(param.shape, generator=generator))


def test_save_load_round_trip_is_exact_and_peft_loadable(restored: Classifier, tmp_path: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModel

    _perturb(restored, 1)
    expected = restored.classify(TEXTS)
    folder = restored.save(tmp_path / "clf")
    for name in (
        "classifier.json",
        "adapter_config.json",
        "adapter_model.safetensors",
        "head.safetensors",
        "tokenizer.json",
    ):
        assert (folder / name).is_file(), name

    loaded = load_classifier(folder)
    np.testing.assert_array_equal(loaded.classify(TEXTS), expected)
    for name, value in restored.trainable_state().items():
        np.testing.assert_array_equal(loaded.trainable_state()[name], value)

    # A plain PEFT user can load the adapter onto the base encoder with no privtune code.
    base = AutoModel.from_pretrained(resolve_encoder().path, attn_implementation="eager")
    peft_model = PeftModel.from_pretrained(base, folder).eval()
    batch = restored.encode(TEXTS)
    with torch.no_grad():
        ours = restored.model.encoder(**batch).last_hidden_state
        theirs = peft_model(**batch).last_hidden_state
    assert torch.equal(ours, theirs)


def test_self_contained_folder_and_hash_mismatch(restored: Classifier, tmp_path: Path) -> None:
    folder = restored.save(tmp_path / "clf", include_encoder=True)
    assert (folder / "encoder" / "model.safetensors").is_file()
    assert load_classifier(folder).spec == restored.spec

    config = json.loads((folder / "classifier.json").read_text())
    config["base_model_sha256"] = "0" * 64
    (folder / "classifier.json").write_text(json.dumps(config))
    with pytest.raises(ModelNotFoundError, match="was trained on 000000000000"):
        load_classifier(folder)


def test_load_errors_are_clear(restored: Classifier, tmp_path: Path) -> None:
    with pytest.raises(ClassifierFormatError, match="not a privtune classifier"):
        load_classifier(resolve_encoder().path)
    folder = restored.save(tmp_path / "clf")
    (folder / "head.safetensors").unlink()
    with pytest.raises(ClassifierFormatError, match="head.safetensors is missing"):
        load_classifier(folder)
    shutil.rmtree(folder)


def test_configurable_labels_and_lora_shape() -> None:
    spec = ClassifierSpec(labels=("ok", "spam", "abuse"), lora=LoraSpec(rank=4, alpha=8.0, targets=("query",)))
    clf = build_classifier(spec=spec, seed=3)
    trainable = clf.trainable_parameters()
    assert len(trainable) == 6 * 2 + 2
    assert trainable["head.weight"].shape == (3, 384)
    assert trainable["encoder.layer.0.attention.self.query.lora_A.weight"].shape == (4, 384)
    assert clf.classify(["hello"]).shape == (1, 3)
    with pytest.raises(ValueError, match="labels must be a tuple of >= 2"):
        ClassifierSpec(labels=("only",))
    with pytest.raises(ValueError, match="max_seq_len"):
        ClassifierSpec(max_seq_len=1024)


def test_training_moves_only_lora_and_head_and_lowers_loss(restored: Classifier, offensive_dir: Path) -> None:
    data = load_tweeteval(offensive_dir, "val").subset(range(16))
    batch = restored.encode(list(data.texts))
    labels = torch.tensor(data.labels)
    model = restored.model
    frozen_before = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    trainable_before = restored.trainable_state()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-3)
    model.train()
    losses = []
    for _ in range(8):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(batch["input_ids"], batch["attention_mask"]), labels)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    assert losses[-1] < 0.7 * losses[0], losses
    after = restored.trainable_state()
    moved = [n for n in after if not np.array_equal(after[n], trainable_before[n])]
    assert len(moved) == 26
    for name, param in model.named_parameters():
        if not param.requires_grad:
            assert torch.equal(param, frozen_before[name]), name
