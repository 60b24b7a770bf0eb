"""PyTorch classifier costs, each against a baseline measured in the same process.

1. ``forward``: batch 8 × 64 tokens. Baseline: the base encoder with LoRA disabled
   (``disable_adapter``); cases: unmerged LoRA forward, LoRA train step (forward + backward
   into LoRA + head only).
2. ``bucketing``: classify 256 real tweets. Baseline: pad every batch to ``max_seq_len``;
   case: length-bucketed batches padded only to their own longest text (what
   ``Classifier.classify`` does).
"""

from __future__ import annotations

import torch

from bench.harness import build_result, time_fn, write_result
from export.classifier import Classifier, build_classifier
from ondevice.data import load_tweeteval, tweeteval_task_dir


def _forward_cases(clf: Classifier, threads: int) -> None:
    torch.manual_seed(0)
    ids = torch.randint(1000, 20000, (8, 64))  # [B, T]
    mask = torch.ones(8, 64, dtype=torch.long)  # [B, T]
    model = clf.model
    model.eval()

    def base_forward() -> None:
        with torch.no_grad(), model.encoder.disable_adapter():
            model(ids, mask)

    def lora_forward() -> None:
        with torch.no_grad():
            model(ids, mask)

    labels = torch.randint(0, 2, (8,))

    def train_step() -> None:
        model.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(ids, mask), labels)
        loss.backward()  # type: ignore[no-untyped-call]

    timings = [
        time_fn("base_forward", base_forward),
        time_fn("lora_forward", lora_forward),
        time_fn("lora_train_step", train_step, repeats=5),
    ]
    result = build_result(
        "classifier_forward",
        timings,
        baseline="base_forward",
        threads=threads,
        params={"batch": 8, "seq_len": 64, "lora": clf.spec.lora.to_dict(), "attn": "eager"},
    )
    print(write_result(result))


def _bucketing_cases(clf: Classifier, threads: int) -> None:
    texts = list(load_tweeteval(tweeteval_task_dir("offensive"), "test").texts[:256])
    model = clf.model

    def padded_to_max() -> None:
        with torch.no_grad():
            for start in range(0, len(texts), 32):
                batch = clf.tokenizer(
                    texts[start : start + 32],
                    padding="max_length",
                    truncation=True,
                    max_length=clf.spec.max_seq_len,
                    return_tensors="pt",
                )
                model(batch["input_ids"], batch["attention_mask"])

    def bucketed() -> None:
        clf.classify(texts, batch_size=32)

    timings = [
        time_fn("padded_to_max_len", padded_to_max, repeats=3, warmup=1),
        time_fn("length_bucketed", bucketed, repeats=3, warmup=1),
    ]
    result = build_result(
        "classifier_bucketing",
        timings,
        baseline="padded_to_max_len",
        threads=threads,
        params={
            "texts": len(texts),
            "batch": 32,
            "max_seq_len": clf.spec.max_seq_len,
            "data": "tweeteval/offensive test[:256]",
        },
    )
    print(write_result(result))


def main() -> None:
    clf = build_classifier(seed=0)
    for threads in (1, 2):
        torch.set_num_threads(threads)
        _forward_cases(clf, threads)
        _bucketing_cases(clf, threads)


if __name__ == "__main__":
    main()
