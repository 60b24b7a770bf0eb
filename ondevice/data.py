"""Labelled text loading: TweetEval directories, CSV/JSONL files, and the hub dataset.

Every loader returns a ``LabelledTexts``; bad input raises ``DataError`` naming the file
and the 1-based line. Data is read from where it lies (it stands for private user data):
nothing here copies it.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

SPLITS = ("train", "val", "test")
DATA_ROOT_ENV = "PRIVTUNE_DATA_DIR"


class DataError(ValueError):
    """Input data is missing or malformed; the message names the file and line."""


@dataclass(frozen=True)
class LabelledTexts:
    """Parallel texts and integer labels, with the label names the integers index."""

    texts: tuple[str, ...]
    labels: tuple[int, ...]
    label_names: tuple[str, ...]
    source: str
    dropped: tuple[str, ...] = ()
    """``file:line: reason`` for every input line skipped (only with ``empty="skip"``)."""

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.labels):
            raise DataError(f"{self.source}: {len(self.texts)} texts but {len(self.labels)} labels")
        if len(self.label_names) < 2 or len(set(self.label_names)) != len(self.label_names):
            raise DataError(f"{self.source}: label names must be >= 2 distinct names, found {self.label_names}")
        for i, label in enumerate(self.labels):
            if not 0 <= label < len(self.label_names):
                raise DataError(f"{self.source}: example {i} has label {label}, outside 0..{len(self.label_names) - 1}")

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices: Sequence[int], source: str | None = None) -> LabelledTexts:
        """The examples at ``indices``, in that order."""
        return LabelledTexts(
            texts=tuple(self.texts[i] for i in indices),
            labels=tuple(self.labels[i] for i in indices),
            label_names=self.label_names,
            source=source or f"{self.source}[subset of {len(indices)}]",
        )

    def label_counts(self) -> dict[str, int]:
        counts = dict.fromkeys(self.label_names, 0)
        for label in self.labels:
            counts[self.label_names[label]] += 1
        return counts


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc})") from exc
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.rstrip("\r") for line in lines]


def _parse_mapping(path: Path) -> tuple[str, ...]:
    names: dict[int, str] = {}
    for number, line in enumerate(_read_lines(path), start=1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 2 or not parts[0].strip().isdigit() or not parts[1].strip():
            raise DataError(f"{path}:{number}: expected '<int>\\t<label name>', found {line!r}")
        index = int(parts[0])
        if index in names:
            raise DataError(f"{path}:{number}: label {index} defined twice")
        names[index] = parts[1].strip()
    if sorted(names) != list(range(len(names))) or len(names) < 2:
        raise DataError(f"{path}: labels must be numbered 0..n-1 with n >= 2, found {sorted(names)}")
    return tuple(names[i] for i in range(len(names)))


def _check_text(text: str, path: Path, number: int) -> str:
    stripped = text.strip()
    if not stripped:
        raise DataError(f"{path}:{number}: empty text")
    return stripped


def load_tweeteval(task_dir: str | Path, split: str, *, empty: str = "error") -> LabelledTexts:
    """One split of a TweetEval task folder (``mapping.txt``, ``{split}_text.txt``, ``{split}_labels.txt``).

    ``empty="error"`` (default) raises on an empty tweet; ``"skip"`` drops it and records
    ``file:line`` in ``dropped`` (TweetEval hate has 7 empty train tweets and 1 in val).
    """
    if empty not in ("error", "skip"):
        raise DataError(f"empty must be 'error' or 'skip', found {empty!r}")
    if split not in SPLITS:
        raise DataError(f"split must be one of {list(SPLITS)}, found {split!r}")
    root = Path(task_dir)
    if not root.is_dir():
        raise DataError(
            f"{root}: TweetEval task folder not found; point to e.g. ../shared/data/tweeteval/offensive "
            f"or set {DATA_ROOT_ENV}"
        )
    label_names = _parse_mapping(root / "mapping.txt")
    text_path, label_path = root / f"{split}_text.txt", root / f"{split}_labels.txt"
    texts, raw_labels = _read_lines(text_path), _read_lines(label_path)
    if len(texts) != len(raw_labels):
        raise DataError(
            f"{text_path} has {len(texts)} lines but {label_path} has {len(raw_labels)}: "
            "text and label files must be line-aligned"
        )
    labels: list[int] = []
    for number, raw in enumerate(raw_labels, start=1):
        value = raw.strip()
        if not value.isdigit() or int(value) >= len(label_names):
            raise DataError(
                f"{label_path}:{number}: unknown label {raw!r}; mapping.txt defines 0..{len(label_names) - 1}"
            )
        labels.append(int(value))
    kept_texts: list[str] = []
    kept_labels: list[int] = []
    dropped: list[str] = []
    for number, (text, label) in enumerate(zip(texts, labels, strict=True), start=1):
        if empty == "skip" and not text.strip():
            dropped.append(f"{text_path}:{number}: empty text")
            continue
        kept_texts.append(_check_text(text, text_path, number))
        kept_labels.append(label)
    return LabelledTexts(
        tuple(kept_texts), tuple(kept_labels), label_names, source=f"{root.name}/{split}", dropped=tuple(dropped)
    )


def _label_index(raw: object, label_names: tuple[str, ...], path: Path, number: int) -> int:
    if isinstance(raw, bool):
        raise DataError(
            f"{path}:{number}: unknown label {raw!r}; expected one of {list(label_names)} or 0..{len(label_names) - 1}"
        )
    if isinstance(raw, int) and 0 <= raw < len(label_names):
        return raw
    if isinstance(raw, str):
        value = raw.strip()
        if value in label_names:
            return label_names.index(value)
        if value.isdigit() and int(value) < len(label_names):
            return int(value)
    raise DataError(
        f"{path}:{number}: unknown label {raw!r}; expected one of {list(label_names)} or 0..{len(label_names) - 1}"
    )


def load_csv(path: str | Path, label_names: Sequence[str]) -> LabelledTexts:
    """A CSV file with a header holding ``text`` and ``label`` columns (label: name or index)."""
    file = Path(path)
    names = tuple(label_names)
    if not file.is_file():
        raise DataError(f"{file}: file not found")
    texts: list[str] = []
    labels: list[int] = []
    with file.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or not {"text", "label"} <= set(reader.fieldnames):
            raise DataError(f"{file}:1: header must name 'text' and 'label' columns, found {reader.fieldnames}")
        for row in reader:
            number = reader.line_num
            if row.get("text") is None or row.get("label") is None:
                raise DataError(f"{file}:{number}: row has fewer columns than the header")
            texts.append(_check_text(row["text"], file, number))
            labels.append(_label_index(row["label"], names, file, number))
    return LabelledTexts(tuple(texts), tuple(labels), names, source=str(file))


def load_jsonl(path: str | Path, label_names: Sequence[str]) -> LabelledTexts:
    """A JSON-lines file of ``{"text": ..., "label": ...}`` objects (label: name or index)."""
    file = Path(path)
    names = tuple(label_names)
    texts: list[str] = []
    labels: list[int] = []
    for number, line in enumerate(_read_lines(file), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{file}:{number}: not valid JSON ({exc.msg})") from exc
        if not isinstance(record, dict) or "text" not in record or "label" not in record:
            raise DataError(f"{file}:{number}: expected an object with 'text' and 'label'")
        if not isinstance(record["text"], str):
            raise DataError(f"{file}:{number}: 'text' must be a string, found {type(record['text']).__name__}")
        texts.append(_check_text(record["text"], file, number))
        labels.append(_label_index(record["label"], names, file, number))
    if not texts:
        raise DataError(f"{file}: no examples")
    return LabelledTexts(tuple(texts), tuple(labels), names, source=str(file))


def load_hub_tweet_eval(config: str, split: str) -> LabelledTexts:  # pragma: no cover - needs the hub
    """The ``tweet_eval`` dataset from the Hugging Face hub (needs internet and ``pip install datasets``).

    Not reachable on the development machines (no hub access); the TweetEval folder loader
    reads the same data from disk.
    """
    try:
        import datasets
    except ImportError as exc:
        raise DataError(
            "loading tweet_eval from the hub needs `pip install privtune[hub]` (the datasets package)"
        ) from exc
    hub_split = {"val": "validation"}.get(split, split)
    ds = datasets.load_dataset("tweet_eval", config, split=hub_split)
    label_names = tuple(ds.features["label"].names)
    texts = tuple(_check_text(t, Path(f"hub:tweet_eval/{config}/{hub_split}"), i + 1) for i, t in enumerate(ds["text"]))
    return LabelledTexts(
        texts, tuple(int(x) for x in ds["label"]), label_names, source=f"hub:tweet_eval/{config}/{split}"
    )


def load_labelled(
    spec: str | Path, split: str = "train", label_names: Sequence[str] | None = None, *, empty: str = "error"
) -> LabelledTexts:
    """Dispatch on ``spec``: a TweetEval task folder, a ``.csv`` / ``.jsonl`` file, or ``hub:tweet_eval/<config>``."""
    text = str(spec)
    if text.startswith("hub:"):
        parts = text.removeprefix("hub:").split("/")
        if len(parts) != 2 or parts[0] != "tweet_eval":
            raise DataError(f"hub data must be named hub:tweet_eval/<config>, found {text!r}")
        return load_hub_tweet_eval(parts[1], split)
    path = Path(spec)
    if path.is_dir():
        return load_tweeteval(path, split, empty=empty)
    if path.suffix.lower() in (".csv", ".jsonl"):
        if label_names is None:
            raise DataError(f"{path}: label names are needed to read a {path.suffix} file (e.g. safe,unsafe)")
        return load_csv(path, label_names) if path.suffix.lower() == ".csv" else load_jsonl(path, label_names)
    raise DataError(f"{path}: not a TweetEval folder, .csv or .jsonl file (or it does not exist)")


def default_data_root() -> Path:
    """Where the shared TweetEval data lies: ``$PRIVTUNE_DATA_DIR``, else ``<checkout>/../shared/data``."""
    env = os.environ.get(DATA_ROOT_ENV)
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[2] / "shared" / "data")
    for candidate in candidates:
        if (candidate / "tweeteval").is_dir():
            return candidate
    raise DataError(
        f"TweetEval data not found (looked in {[str(c) for c in candidates]}); set {DATA_ROOT_ENV} "
        "to a folder holding tweeteval/{offensive,hate}"
    )


def tweeteval_task_dir(task: str = "offensive") -> Path:
    """``<data root>/tweeteval/<task>``; ``DataError`` if absent."""
    path = default_data_root() / "tweeteval" / task
    if not path.is_dir():
        raise DataError(f"{path}: TweetEval task {task!r} not found (tasks: offensive, hate)")
    return path
