"""Tiny TweetEval-format folders cut from the shared data, for fast end-to-end runs (temporary files only)."""

from __future__ import annotations

from pathlib import Path


def tiny_tweeteval(source: Path, target: Path, train: int = 200, test: int = 40, only_label: str | None = None) -> Path:
    """A TweetEval-format folder of the first lines of ``source`` (temporary; never committed)."""
    target.mkdir(parents=True)
    for split, count in (("train", train), ("test", test)):
        texts = (source / f"{split}_text.txt").read_text().splitlines()
        labels = (source / f"{split}_labels.txt").read_text().splitlines()
        rows = [(t, y) for t, y in zip(texts, labels, strict=True) if only_label is None or y == only_label][:count]
        (target / f"{split}_text.txt").write_text("".join(t + "\n" for t, _ in rows))
        (target / f"{split}_labels.txt").write_text("".join(y + "\n" for _, y in rows))
    (target / "mapping.txt").write_text((source / "mapping.txt").read_text())
    return target
