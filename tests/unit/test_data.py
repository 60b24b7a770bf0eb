"""Data loaders on the real shared TweetEval data and on crafted bad files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ondevice.data import (
    DataError,
    LabelledTexts,
    default_data_root,
    load_csv,
    load_jsonl,
    load_labelled,
    load_tweeteval,
)


@pytest.mark.parametrize(
    ("split", "size", "offensive"),
    [("train", 11_916, 3_941), ("val", 1_324, 459), ("test", 860, 240)],
)
def test_offensive_splits_match_the_published_sizes(offensive_dir: Path, split: str, size: int, offensive: int) -> None:
    data = load_tweeteval(offensive_dir, split)
    assert len(data) == size
    assert data.label_names == ("not-offensive", "offensive")
    assert data.label_counts()["offensive"] == offensive
    assert all(t and t == t.strip() for t in data.texts)


def test_hate_mapping_without_trailing_newline_loads(hate_dir: Path) -> None:
    data = load_tweeteval(hate_dir, "test")
    assert len(data) == 2_970
    assert data.label_names == ("not-hate", "hate")


def test_real_empty_tweets_are_named_or_skipped_with_a_record(hate_dir: Path) -> None:
    with pytest.raises(DataError, match=r"hate/train_text.txt:1468: empty text"):
        load_tweeteval(hate_dir, "train")
    data = load_tweeteval(hate_dir, "train", empty="skip")
    assert len(data) == 9_000 - 7
    assert len(data.dropped) == 7
    assert data.dropped[0].endswith("train_text.txt:1468: empty text")


def test_texts_align_with_labels_line_by_line(offensive_dir: Path) -> None:
    data = load_tweeteval(offensive_dir, "train")
    raw_texts = (offensive_dir / "train_text.txt").read_text(encoding="utf-8").split("\n")
    raw_labels = (offensive_dir / "train_labels.txt").read_text().split("\n")
    for i in (0, 1, 5000, 11_915):
        assert data.texts[i] == raw_texts[i].strip()
        assert data.labels[i] == int(raw_labels[i])


def _copy_task(src: Path, dst: Path, n: int = 5) -> Path:
    dst.mkdir()
    shutil.copy(src / "mapping.txt", dst / "mapping.txt")
    for kind in ("text", "labels"):
        lines = (src / f"val_{kind}.txt").read_text(encoding="utf-8").split("\n")[:n]
        (dst / f"val_{kind}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return dst


def test_line_count_mismatch_names_both_files(offensive_dir: Path, tmp_path: Path) -> None:
    task = _copy_task(offensive_dir, tmp_path / "t")
    with (task / "val_labels.txt").open("a") as handle:
        handle.write("0\n")
    with pytest.raises(DataError, match=r"val_text.txt has 5 lines but .*val_labels.txt has 6"):
        load_tweeteval(task, "val")


def test_unknown_label_names_file_and_line(offensive_dir: Path, tmp_path: Path) -> None:
    task = _copy_task(offensive_dir, tmp_path / "t")
    lines = (task / "val_labels.txt").read_text().split("\n")
    lines[2] = "7"
    (task / "val_labels.txt").write_text("\n".join(lines))
    with pytest.raises(DataError, match=r"val_labels.txt:3: unknown label '7'"):
        load_tweeteval(task, "val")


def test_empty_text_names_file_and_line(offensive_dir: Path, tmp_path: Path) -> None:
    task = _copy_task(offensive_dir, tmp_path / "t")
    lines = (task / "val_text.txt").read_text(encoding="utf-8").split("\n")
    lines[3] = "   "
    (task / "val_text.txt").write_text("\n".join(lines), encoding="utf-8")
    with pytest.raises(DataError, match=r"val_text.txt:4: empty text"):
        load_tweeteval(task, "val")


def test_missing_folder_file_and_bad_split(offensive_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="task folder not found"):
        load_tweeteval(tmp_path / "nope", "val")
    task = _copy_task(offensive_dir, tmp_path / "t")
    with pytest.raises(DataError, match=r"train_text.txt: file not found"):
        load_tweeteval(task, "train")
    with pytest.raises(DataError, match="split must be one of"):
        load_tweeteval(task, "dev")
    (task / "mapping.txt").write_text("0 safe\n")
    with pytest.raises(DataError, match=r"mapping.txt:1: expected"):
        load_tweeteval(task, "val")


def test_csv_accepts_names_and_indices(tmp_path: Path) -> None:
    path = tmp_path / "mine.csv"
    path.write_text('text,label\n"hello, friend",safe\nyou idiot,1\n', encoding="utf-8")
    data = load_csv(path, ("safe", "unsafe"))
    assert data.texts == ("hello, friend", "you idiot")
    assert data.labels == (0, 1)


def test_csv_errors_name_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("text,label\nfine,safe\nbad,toxic\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.csv:3: unknown label 'toxic'"):
        load_csv(path, ("safe", "unsafe"))
    path.write_text("body,label\nx,safe\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.csv:1: header must name"):
        load_csv(path, ("safe", "unsafe"))
    path.write_text('text,label\n"",safe\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.csv:2: empty text"):
        load_csv(path, ("safe", "unsafe"))


def test_jsonl_loads_and_reports_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "mine.jsonl"
    rows = [{"text": "nice 😀 day", "label": "safe"}, {"text": "trash", "label": 1}]
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    data = load_jsonl(path, ("safe", "unsafe"))
    assert data.texts == ("nice 😀 day", "trash") and data.labels == (0, 1)
    path.write_text('{"text": "ok", "label": 0}\n{"text": "x", "label": true}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"mine.jsonl:2: unknown label True"):
        load_jsonl(path, ("safe", "unsafe"))
    path.write_text('{"text": "ok", "label": 0}\nnot json\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"mine.jsonl:2: not valid JSON"):
        load_jsonl(path, ("safe", "unsafe"))


def test_load_labelled_dispatches(offensive_dir: Path, tmp_path: Path) -> None:
    assert len(load_labelled(offensive_dir, "test")) == 860
    path = tmp_path / "a.jsonl"
    path.write_text('{"text": "hi", "label": "unsafe"}\n')
    assert load_labelled(path, label_names=("safe", "unsafe")).labels == (1,)
    with pytest.raises(DataError, match="label names are needed"):
        load_labelled(path)
    with pytest.raises(DataError, match="not a TweetEval folder"):
        load_labelled(tmp_path / "x.parquet")
    with pytest.raises(DataError, match="hub:tweet_eval/<config>"):
        load_labelled("hub:glue/sst2")


def test_subset_and_validation() -> None:
    data = LabelledTexts(("a", "b", "c"), (0, 1, 0), ("x", "y"), "mem")
    sub = data.subset([2, 0])
    assert sub.texts == ("c", "a") and sub.labels == (0, 0)
    with pytest.raises(DataError, match="outside 0..1"):
        LabelledTexts(("a",), (2,), ("x", "y"), "mem")


def test_default_data_root_honours_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "tweeteval").mkdir()
    monkeypatch.setenv("PRIVTUNE_DATA_DIR", str(tmp_path))
    assert default_data_root() == tmp_path
