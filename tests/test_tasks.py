"""Fine-tuning tasks: the embedded WordNet tasks, local files through ``datasets``, and every load error."""

from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path

import pandas as pd
import pytest

from nas.errors import NasError
from nas.finetune.tasks import EMBEDDED_TASKS, Task, TaskError, load_task

# ---- embedded WordNet tasks ----------------------------------------------------------------


def test_default_task_is_wordnet_supersense():
    task = load_task()
    assert task.name == "wordnet-supersense" and task == load_task("wordnet-supersense")
    assert "WordNet 3.0" in task.source and "license" in task.source
    assert task.num_labels == 45 and not task.is_pair
    assert {"noun.artifact", "verb.motion", "adj.ppl", "noun.Tops"} <= set(task.label_names)
    assert list(task.label_names) == sorted(task.label_names)
    assert len(task.train_labels) + len(task.dev_labels) > 100_000
    assert 0.05 < len(task.dev_labels) / (len(task.train_labels) + len(task.dev_labels)) < 0.15
    assert set(task.train_labels) == set(task.dev_labels) == set(range(45))
    assert task.majority_accuracy() < 0.35
    assert task.train_pairs is None and task.dev_pairs is None


def test_embedded_texts_are_definitions_without_examples():
    task = load_task()
    entity = task.label_names.index("noun.Tops")
    assert "that which is perceived or known or inferred to have its own distinct existence (living or nonliving)" in {
        text for text, label in zip(task.train_texts + task.dev_texts, task.train_labels + task.dev_labels)
        if label == entity
    }  # fmt: skip
    # "able": "(usually followed by `to') having the necessary means ...; "able to swim"; ..."
    able = [t for t in task.train_texts + task.dev_texts if t.startswith("(usually followed by `to') having the")]
    assert able and all('"' not in t and "swim" not in t for t in able)


def test_embedded_task_is_deterministic_and_describable():
    first = load_task("wordnet-supersense", max_train=300, max_dev=50, seed=3)
    assert first == load_task("wordnet-supersense", max_train=300, max_dev=50, seed=3)
    assert first.train_texts != load_task("wordnet-supersense", max_train=300, max_dev=50, seed=4).train_texts
    info = first.describe()
    assert json.loads(json.dumps(info)) == info
    assert info["num_labels"] == 45 and info["train_examples"] == 300 and info["dev_examples"] == 50
    assert info["is_pair"] is False and info["majority_accuracy"] == round(first.majority_accuracy(), 4)


def test_max_train_caps_to_a_subset_and_keeps_the_dev_split():
    full = load_task("wordnet-pos")
    capped = load_task("wordnet-pos", max_train=1000, seed=7)
    assert len(capped.train_labels) == 1000
    assert set(zip(capped.train_texts, capped.train_labels)) <= set(zip(full.train_texts, full.train_labels))
    assert capped.dev_texts == full.dev_texts and capped.dev_labels == full.dev_labels
    bigger = load_task("wordnet-pos", max_train=2000, seed=7)
    assert set(capped.train_texts) <= set(bigger.train_texts)  # a larger cap extends the same permutation


def test_pos_task_has_four_labels():
    task = load_task("wordnet-pos")
    assert task.label_names == ("adj", "adv", "noun", "verb")
    counts = [task.train_labels.count(i) for i in range(4)]
    assert counts[2] > counts[0] > counts[1] and counts[3] > counts[1]  # nouns most, adverbs fewest
    assert 0.6 < task.majority_accuracy() < 0.8


def test_pair_task_is_balanced_and_pairs_share_supersenses_as_labelled():
    task = load_task("wordnet-pair")
    assert task.is_pair and task.label_names == ("different", "same")
    assert len(task.train_pairs) == len(task.train_texts) and len(task.dev_pairs) == len(task.dev_texts)
    for labels in (task.train_labels, task.dev_labels):
        assert sum(labels) * 2 == len(labels)
    assert task.majority_accuracy() == 0.5
    supersense = load_task("wordnet-supersense")
    senses: dict[str, set[int]] = {}
    every = zip(supersense.train_texts + supersense.dev_texts, supersense.train_labels + supersense.dev_labels)
    for text, label in every:
        senses.setdefault(text, set()).add(label)
    pairs = list(zip(task.dev_texts, task.dev_pairs, task.dev_labels))
    same = [bool(senses[a] & senses[b]) for a, b, label in pairs if label == 1]
    different = [senses[a] != senses[b] or len(senses[a]) > 1 for a, b, label in pairs if label == 0]
    assert all(same) and all(different)


def test_embedded_splits_never_share_a_synset():
    from nas.finetune import tasks

    train, dev = tasks._wordnet_splits()
    assert not {s.id for s in train} & {s.id for s in dev}
    assert len(train) + len(dev) == len(tasks._wordnet_synsets()) == 117_659
    # The pair task draws each split's pairs from that split's own synsets.
    pair = load_task("wordnet-pair")
    assert set(pair.dev_texts + pair.dev_pairs) <= {s.text for s in dev}
    assert set(pair.train_texts + pair.train_pairs) <= {s.text for s in train}


def test_embedded_tasks_refuse_file_options():
    assert EMBEDDED_TASKS[0] == "wordnet-supersense"
    with pytest.raises(TaskError, match="--text-column.*embedded"):
        load_task("wordnet-pos", text_column="gloss")


# ---- local files ---------------------------------------------------------------------------


def _write_csv(path: Path, header: list[str], rows: list[list[object]], delimiter: str = ",") -> str:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows(rows)
    return str(path)


def _sentiment_rows(count: int) -> list[list[object]]:
    moods = ("positive", "negative", "neutral")
    return [[f"review number {i} was {moods[i % 3]}", moods[i % 3]] for i in range(count)]


def _load(spec: str, tmp_path: Path, **kwargs) -> Task:
    return load_task(spec, cache_dir=str(tmp_path / "cache"), **kwargs)


def test_csv_with_string_labels(tmp_path):
    path = _write_csv(tmp_path / "reviews.csv", ["text", "label"], _sentiment_rows(40))
    task = _load(path, tmp_path)
    assert task.name == path and path in task.source and not task.is_pair
    assert task.label_names == ("negative", "neutral", "positive")
    assert len(task.dev_labels) == 4 and len(task.train_labels) == 36
    assert not set(task.train_texts) & set(task.dev_texts)
    for text, label in zip(task.train_texts + task.dev_texts, task.train_labels + task.dev_labels):
        assert text.endswith(task.label_names[label])
    assert task == _load(path, tmp_path)
    assert task.dev_texts != _load(path, tmp_path, seed=1).dev_texts


def test_csv_with_a_pair_column_and_numeric_labels(tmp_path):
    rows = [[f"first {i}", f"second {i}", 10 if i % 2 else 2] for i in range(20)]
    path = _write_csv(tmp_path / "pairs.csv", ["sentence1", "sentence2", "gold"], rows)
    task = _load(path, tmp_path, text_column="sentence1", text_pair_column="sentence2", label_column="gold")
    assert task.is_pair and task.label_names == ("2", "10")  # numeric order, not string order
    for first, second, label in zip(task.train_texts, task.train_pairs, task.train_labels):
        assert first.split()[1] == second.split()[1]
        assert task.label_names[label] == ("10" if int(first.split()[1]) % 2 else "2")


def test_tsv_reads_the_sentence_column_by_default(tmp_path):
    path = _write_csv(tmp_path / "data.tsv", ["sentence", "label"], _sentiment_rows(30), delimiter="\t")
    task = _load(path, tmp_path, max_dev=2)
    assert len(task.train_labels) + len(task.dev_labels) == 29 and len(task.dev_labels) == 2
    assert task.train_texts[0].startswith("review number")


def test_jsonl_and_parquet(tmp_path):
    records = [{"body": f"item {i}", "topic": ["sport", "news"][i % 2]} for i in range(20)]
    jsonl = tmp_path / "data.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    parquet = tmp_path / "data.parquet"
    pd.DataFrame(records).to_parquet(parquet)
    from_json = _load(str(jsonl), tmp_path, text_column="body", label_column="topic")
    from_parquet = _load(str(parquet), tmp_path, text_column="body", label_column="topic")
    assert from_json.label_names == from_parquet.label_names == ("news", "sport")
    assert from_json.train_texts == from_parquet.train_texts and from_json.dev_labels == from_parquet.dev_labels


def test_class_label_column_keeps_the_dataset_order(tmp_path):
    import datasets

    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["pos", "neg"])})
    rows = {"text": [f"t{i}" for i in range(20)], "label": [i % 2 for i in range(20)]}
    path = tmp_path / "typed.parquet"
    datasets.Dataset.from_dict(rows, features=features).to_parquet(str(path))
    task = _load(str(path), tmp_path)
    assert task.label_names == ("pos", "neg")
    assert all(label == int(text[1:]) % 2 for text, label in zip(task.train_texts, task.train_labels))
    dev = _write_csv(tmp_path / "dev.csv", ["text", "label"], [["a", "neg"], ["b", "pos"]])
    assert _load(str(path), tmp_path, dev_file=dev).dev_labels == (1, 0)  # matched by name across files


def test_dev_file(tmp_path):
    train = _write_csv(tmp_path / "train.csv", ["text", "label"], _sentiment_rows(12))
    dev = _write_csv(tmp_path / "dev.csv", ["text", "label"], _sentiment_rows(5))
    task = _load(train, tmp_path, dev_file=dev)
    assert len(task.train_labels) == 12 and len(task.dev_labels) == 5 and dev in task.source
    assert task.dev_labels == (2, 0, 1, 2, 0)  # positive, negative, neutral, ...
    unseen = _write_csv(tmp_path / "unseen.csv", ["text", "label"], [["a", "positive"], ["b", "sarcastic"]])
    with pytest.raises(TaskError, match=r"'sarcastic'.*unseen\.csv|unseen\.csv.*'sarcastic'"):
        _load(train, tmp_path, dev_file=unseen)
    no_label = _write_csv(tmp_path / "nolabel.csv", ["text", "gold"], [["a", "positive"], ["b", "negative"]])
    with pytest.raises(TaskError, match=r"nolabel\.csv.*'label'.*--label-column"):
        _load(train, tmp_path, dev_file=no_label)
    with pytest.raises(TaskError, match=r"dev file .*nodev\.csv: no such file"):
        _load(train, tmp_path, dev_file=str(tmp_path / "nodev.csv"))


# ---- errors --------------------------------------------------------------------------------


def test_path_errors(tmp_path):
    with pytest.raises(TaskError, match=r"missing\.csv: no such file"):
        _load(str(tmp_path / "missing.csv"), tmp_path)
    (tmp_path / "folder").mkdir()
    with pytest.raises(TaskError, match=r"folder: is a folder"):
        _load(str(tmp_path / "folder"), tmp_path)
    (tmp_path / "sheet.xlsx").write_bytes(b"PK\x03\x04")
    with pytest.raises(TaskError, match=r"sheet\.xlsx: unknown file type '\.xlsx'"):
        _load(str(tmp_path / "sheet.xlsx"), tmp_path)
    (tmp_path / "empty.csv").write_bytes(b"")
    with pytest.raises(TaskError, match=r"empty\.csv: is empty"):
        _load(str(tmp_path / "empty.csv"), tmp_path)
    assert issubclass(TaskError, NasError) and issubclass(TaskError, ValueError)


def test_binary_non_utf8_and_corrupt_files(tmp_path):
    (tmp_path / "binary.csv").write_bytes(b"text,label\n\x00\x01\x02\xff,1\n")
    with pytest.raises(TaskError, match=r"binary\.csv: is binary or not UTF-8"):
        _load(str(tmp_path / "binary.csv"), tmp_path)
    (tmp_path / "latin1.tsv").write_bytes("text\tlabel\ncaf\u00e9\ta\n".encode("latin-1"))
    with pytest.raises(TaskError, match=r"latin1\.tsv: is binary or not UTF-8"):
        _load(str(tmp_path / "latin1.tsv"), tmp_path)
    (tmp_path / "broken.parquet").write_bytes(b"this is not parquet")
    with pytest.raises(TaskError, match=r"broken\.parquet: cannot be read as parquet"):
        _load(str(tmp_path / "broken.parquet"), tmp_path)
    (tmp_path / "broken.json").write_text('{"text": "a", "label": ', encoding="utf-8")
    with pytest.raises(TaskError, match=r"broken\.json: cannot be read as json"):
        _load(str(tmp_path / "broken.json"), tmp_path)


def test_unreadable_file(tmp_path, monkeypatch):
    path = _write_csv(tmp_path / "locked.csv", ["text", "label"], _sentiment_rows(10))
    real_open = Path.open

    def refuse(self, *args, **kwargs):  # chmod 0 does not stop root, who runs CI here
        if self.name == "locked.csv":
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", refuse)
    with pytest.raises(TaskError, match=r"locked\.csv: cannot be read \(Permission denied\)"):
        _load(path, tmp_path)


def test_missing_columns_list_the_columns_and_the_flag(tmp_path):
    path = _write_csv(tmp_path / "cols.csv", ["body", "gold"], _sentiment_rows(10))
    missing_text = r"cols\.csv: no text column 'text'; columns: body, gold \(pick one with --text-column\)"
    with pytest.raises(TaskError, match=missing_text):
        _load(path, tmp_path)
    with pytest.raises(TaskError, match=r"no label column 'label'; columns: body, gold .*--label-column"):
        _load(path, tmp_path, text_column="body")
    with pytest.raises(TaskError, match=r"no second-text column 'hypothesis'.*--text-pair-column"):
        _load(path, tmp_path, text_column="body", label_column="gold", text_pair_column="hypothesis")


def test_label_errors(tmp_path):
    one = _write_csv(tmp_path / "one.csv", ["text", "label"], [[f"t{i}", "same"] for i in range(10)])
    with pytest.raises(TaskError, match=r"one\.csv: label column 'label' holds 1 distinct label"):
        _load(one, tmp_path)
    blank = _write_csv(tmp_path / "blank.csv", ["text", "label"], [["a", "x"], ["b", ""], ["c", "y"], ["d", "x"]])
    with pytest.raises(TaskError, match=r"blank\.csv: row 2 has an empty label in column 'label'"):
        _load(blank, tmp_path)
    many = _write_csv(tmp_path / "ids.csv", ["text", "label"], [[f"t{i}", f"id{i}"] for i in range(1001)])
    too_many = r"ids\.csv: label column 'label' holds 1001 distinct labels \(over 1000\): probably not a label column"
    with pytest.raises(TaskError, match=too_many):
        _load(many, tmp_path)
    scores = _write_csv(tmp_path / "scores.csv", ["text", "label"], [[f"t{i}", i / 4] for i in range(8)])
    with pytest.raises(TaskError, match=r"scores\.csv: .*regression is not supported"):
        _load(scores, tmp_path)


def test_text_and_size_errors(tmp_path):
    empty_text = _write_csv(tmp_path / "gaps.csv", ["text", "label"], [["a", "x"], ["  ", "y"], ["c", "x"]])
    with pytest.raises(TaskError, match=r"gaps\.csv: row 2 has an empty text in column 'text'"):
        _load(empty_text, tmp_path)
    numbers = _write_csv(tmp_path / "numbers.csv", ["text", "label"], [[1, "x"], [2, "y"], [3, "x"]])
    with pytest.raises(TaskError, match=r"numbers\.csv: column 'text' holds int values.*--text-column"):
        _load(numbers, tmp_path)
    tiny = _write_csv(tmp_path / "tiny.csv", ["text", "label"], [["a", "x"], ["b", "y"], ["c", "x"]])
    with pytest.raises(TaskError, match=r"tiny\.csv: the train split has 1 example"):
        _load(tiny, tmp_path)
    with pytest.raises(TaskError, match=r"max_train=1"):
        load_task("wordnet-pos", max_train=1)


def test_hub_dataset_offline_fails_fast_naming_the_network():
    assert os.environ.get("HF_DATASETS_OFFLINE") == "1"  # set by conftest
    started = time.monotonic()
    with pytest.raises(TaskError, match=r"glue:sst2: .*network connection.*--text-column/--label-column") as err:
        load_task("glue:sst2")
    assert time.monotonic() - started < 10
    assert "\n" not in str(err.value)
    with pytest.raises(TaskError, match=r"glue:stsb: a regression task"):
        load_task("glue:stsb")
