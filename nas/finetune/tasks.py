"""Labelled downstream tasks for fine-tuning: text (or text pairs) with class labels, split train / dev.

``load_task(spec)`` reads one of:

* an embedded task, built from WordNet 3.0 glosses shipped in ``nas/finetune/data`` (no network):

  - ``wordnet-supersense`` (the default): a gloss labelled with its synset's lexicographer file,
    45 classes such as ``noun.artifact`` or ``verb.motion``;
  - ``wordnet-pos``: the same glosses labelled with their part of speech, noun / verb / adj / adv
    (satellite adjectives count as adj);
  - ``wordnet-pair``: two glosses, label 1 (``same``) if their synsets share the lexicographer file,
    else 0 (``different``); balanced 50/50, as many pairs as the split has synsets, drawn with a
    fixed seed from the split's own synsets.

  The text is the gloss's *definition* only, without its ``; "usage examples"``: 95 % of the examples
  quote the synset's own word (``able``: "able to swim"), which would turn the task into a word
  lookup. A synset is in dev when a hash of its id says so (10 %), so the split never changes with
  ``max_train`` and train and dev never share a synset.
* a local ``.csv``/``.tsv``/``.json``/``.jsonl``/``.parquet`` file, read through ``datasets``, with a text
  column, an optional second-text column and a label column; dev is ``dev_file`` or a seeded 10 %
  held out of the file;
* a hub dataset ``NAME[:CONFIG]`` (e.g. ``glue:sst2``), splits train and validation; this needs a
  network connection.

Labels become indices in sorted order (numerically when they are all numbers); a hub or parquet column
typed as ``ClassLabel`` keeps the dataset's own order. Everything is deterministic: the same arguments
give an identical ``Task``.
"""

from __future__ import annotations

import codecs
import csv
import functools
import gzip
import hashlib
import math
import os
import random
from collections import Counter
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple

from nas.errors import NasError

DEFAULT_TASK = "wordnet-supersense"
EMBEDDED_TASKS = ("wordnet-supersense", "wordnet-pos", "wordnet-pair")
DEV_PERCENT = 10  # of the embedded synsets (by hash) and of a local file without dev_file (by permutation)
PAIR_SEED = 20060101  # the wordnet-pair draw; fixed so the pairs never depend on a run's seed
MAX_LABELS = 1000
MIN_EXAMPLES = 2  # per split
WORDNET_FILE = "wordnet_glosses.tsv.gz"
WORDNET_SOURCE = (
    "WordNet 3.0 (Princeton University), WordNet 3.0 license, shipped in nas/finetune/data "
    f"({WORDNET_FILE}, built by scripts/build_wordnet_task.py)"
)
_POS_NAMES = {"n": "noun", "v": "verb", "a": "adj", "s": "adj", "r": "adv"}
_BUILDERS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
_TEXT_FORMATS = frozenset({".csv", ".tsv", ".json", ".jsonl"})
# A missing path with one of these endings was meant as a file, not as a hub dataset name.
_FILE_LOOKING = frozenset(_BUILDERS) | {".txt", ".xlsx", ".xls", ".gz", ".zip", ".arrow", ".xml"}
_ENCODING_PROBE_BYTES = 1 << 20
# Hub datasets whose columns are known: (name, config) -> (text, second text or None).
_HUB_COLUMNS: dict[tuple[str, str], tuple[str, str | None]] = {
    ("glue", "sst2"): ("sentence", None),
    ("glue", "cola"): ("sentence", None),
    ("glue", "mrpc"): ("sentence1", "sentence2"),
    ("glue", "rte"): ("sentence1", "sentence2"),
    ("glue", "wnli"): ("sentence1", "sentence2"),
    ("glue", "qqp"): ("question1", "question2"),
    ("glue", "qnli"): ("question", "sentence"),
    ("glue", "mnli"): ("premise", "hypothesis"),
    ("super_glue", "boolq"): ("question", "passage"),
    ("super_glue", "cb"): ("premise", "hypothesis"),
    ("super_glue", "rte"): ("premise", "hypothesis"),
}
_HUB_ALIASES = {"nyu-mll/glue": "glue", "aps/super_glue": "super_glue"}
_HUB_REGRESSION = {("glue", "stsb")}
_HUB_DEV_SPLITS = ("validation", "validation_matched", "dev")


class TaskError(NasError):
    """A task that cannot be loaded: a missing file or column, bad labels, an unreachable hub."""


@dataclass(frozen=True)
class Task:
    """A classification task: train and dev texts (and second texts for pair tasks) with label indices."""

    name: str
    source: str
    label_names: tuple[str, ...]
    train_texts: tuple[str, ...]
    train_pairs: tuple[str, ...] | None
    train_labels: tuple[int, ...]
    dev_texts: tuple[str, ...]
    dev_pairs: tuple[str, ...] | None
    dev_labels: tuple[int, ...]

    def __post_init__(self) -> None:
        for split, texts, pairs, labels in (("train", self.train_texts, self.train_pairs, self.train_labels),
                                            ("dev", self.dev_texts, self.dev_pairs, self.dev_labels)):  # fmt: skip
            if len(labels) != len(texts) or (pairs is not None and len(pairs) != len(texts)):
                raise ValueError(f"task {self.name}: {split} texts, pairs and labels differ in length")
        if (self.train_pairs is None) != (self.dev_pairs is None):
            raise ValueError(f"task {self.name}: train and dev disagree on being a pair task")

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    @property
    def is_pair(self) -> bool:
        return self.train_pairs is not None

    def majority_accuracy(self) -> float:
        """Dev accuracy of always predicting the most frequent train label (the smallest index on a tie)."""
        counts = Counter(self.train_labels)
        majority = min(counts, key=lambda label: (-counts[label], label))
        return sum(label == majority for label in self.dev_labels) / len(self.dev_labels)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "num_labels": self.num_labels,
            "train_examples": len(self.train_labels),
            "dev_examples": len(self.dev_labels),
            "is_pair": self.is_pair,
            "majority_accuracy": round(self.majority_accuracy(), 4),
        }


class _Split(NamedTuple):
    texts: list[str]
    pairs: list[str] | None
    labels: list[int]

    def take(self, rows: list[int]) -> _Split:
        pairs = None if self.pairs is None else [self.pairs[i] for i in rows]
        return _Split([self.texts[i] for i in rows], pairs, [self.labels[i] for i in rows])


def load_task(
    spec: str | None = None,
    *,
    text_column: str | None = None,
    text_pair_column: str | None = None,
    label_column: str | None = None,
    dev_file: str | None = None,
    max_train: int | None = None,
    max_dev: int | None = None,
    cache_dir: str | None = None,
    seed: int = 0,
) -> Task:
    """The task ``spec`` (see the module docstring), with train / dev capped at ``max_train`` / ``max_dev``.

    The caps keep a seeded random subset (a fixed permutation of the split for each ``seed``), in the
    split's original order. Raises ``TaskError`` with a one-line reason before anything is trained.
    """
    spec = spec or DEFAULT_TASK
    for flag, limit in (("max_train", max_train), ("max_dev", max_dev)):
        if limit is not None and limit < MIN_EXAMPLES:
            raise TaskError(f"task {spec}: {flag}={limit}; a split needs at least {MIN_EXAMPLES} examples")
    columns = (text_column, text_pair_column, label_column)
    if spec in EMBEDDED_TASKS:
        _refuse_options(spec, columns, dev_file)
        name, source, label_names, train, dev = _embedded_task(spec)
    else:
        name, source, label_names, train, dev = _table_task(spec, columns, dev_file, cache_dir, seed)
    train = _cap(train, max_train, "train", seed)
    dev = _cap(dev, max_dev, "dev", seed)
    for split, examples in (("train", train), ("dev", dev)):
        if len(examples.labels) < MIN_EXAMPLES:
            raise TaskError(f"task {name}: the {split} split has {len(examples.labels)} example(s); "
                            f"at least {MIN_EXAMPLES} are needed (a bigger file, or a bigger max_{split})")  # fmt: skip
    return Task(
        name=name,
        source=source,
        label_names=tuple(label_names),
        train_texts=tuple(train.texts),
        train_pairs=None if train.pairs is None else tuple(train.pairs),
        train_labels=tuple(train.labels),
        dev_texts=tuple(dev.texts),
        dev_pairs=None if dev.pairs is None else tuple(dev.pairs),
        dev_labels=tuple(dev.labels),
    )


def _refuse_options(spec: str, columns: tuple[str | None, ...], dev_file: str | None) -> None:
    flags = ("--text-column", "--text-pair-column", "--label-column")
    given = [flag for flag, value in zip(flags, columns) if value is not None]
    if dev_file is not None:
        given.append("--dev-file")
    if given:
        raise TaskError(f"task {spec}: {', '.join(given)} apply to a local file or a hub dataset, "
                        "not to an embedded task")  # fmt: skip


def cap_order(size: int, split: str = "train", seed: int = 0) -> list[int]:
    """The seeded order in which ``load_task(..., max_train=N)`` keeps a split's examples: the cap is
    the first N positions of it, so a caller can also take examples beyond any cap (disjoint from it)."""
    order = list(range(size))
    random.Random(f"{split}-cap-{seed}").shuffle(order)
    return order


def _cap(examples: _Split, limit: int | None, split: str, seed: int) -> _Split:
    if limit is None or limit >= len(examples.labels):
        return examples
    return examples.take(sorted(cap_order(len(examples.labels), split, seed)[:limit]))


# ---- embedded WordNet tasks ----------------------------------------------------------------


class _Synset(NamedTuple):
    id: str
    pos: str  # noun / verb / adj / adv
    lexname: str
    text: str  # the gloss's definition


@functools.lru_cache(maxsize=1)
def _wordnet_synsets() -> tuple[_Synset, ...]:
    """Every synset of the shipped gloss table, in file (id) order."""
    table = resources.files("nas.finetune") / "data" / WORDNET_FILE
    try:
        with table.open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8", newline="") as handle:
            reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
            header = next(reader)
            rows = list(reader)
    except (OSError, EOFError, UnicodeDecodeError, StopIteration) as err:
        raise TaskError(f"embedded task data {table}: cannot be read ({type(err).__name__}); reinstall nas or "
                        "rebuild it with scripts/build_wordnet_task.py") from None  # fmt: skip
    if header != ["id", "pos", "lexname", "gloss"]:
        raise TaskError(f"embedded task data {table}: unexpected header {header}; rebuild it with "
                        "scripts/build_wordnet_task.py")  # fmt: skip
    return tuple(_Synset(sid, _POS_NAMES[pos], lexname, _definition(gloss)) for sid, pos, lexname, gloss in rows)


def _definition(gloss: str) -> str:
    """The gloss up to its first quoted usage example."""
    definition = gloss.split('; "', 1)[0].strip().rstrip(";").strip()
    return definition or gloss


def _in_dev(synset_id: str) -> bool:
    digest = hashlib.sha256(synset_id.encode("ascii")).digest()
    return int.from_bytes(digest[:8], "big") % 100 < DEV_PERCENT


@functools.lru_cache(maxsize=1)
def _wordnet_splits() -> tuple[tuple[_Synset, ...], tuple[_Synset, ...]]:
    """(train, dev) synsets, in id order."""
    train: list[_Synset] = []
    dev: list[_Synset] = []
    for synset in _wordnet_synsets():
        (dev if _in_dev(synset.id) else train).append(synset)
    return tuple(train), tuple(dev)


def _embedded_task(spec: str) -> tuple[str, str, list[str], _Split, _Split]:
    train, dev = _wordnet_splits()
    if spec == "wordnet-pair":
        train_pairs = _gloss_pairs(train, random.Random(f"{PAIR_SEED}-train"))
        dev_pairs = _gloss_pairs(dev, random.Random(f"{PAIR_SEED}-dev"))
        return spec, WORDNET_SOURCE, ["different", "same"], train_pairs, dev_pairs
    field = "lexname" if spec == "wordnet-supersense" else "pos"
    label_names = sorted({getattr(s, field) for s in train + dev})
    index = {name: i for i, name in enumerate(label_names)}

    def labelled(split: tuple[_Synset, ...]) -> _Split:
        return _Split([s.text for s in split], None, [index[getattr(s, field)] for s in split])

    return spec, WORDNET_SOURCE, label_names, labelled(train), labelled(dev)


def _gloss_pairs(synsets: tuple[_Synset, ...], rng: random.Random) -> _Split:
    """As many gloss pairs as synsets (rounded down to even): half share a lexicographer file, half don't."""
    by_lexname: dict[str, list[_Synset]] = {}
    for synset in synsets:
        by_lexname.setdefault(synset.lexname, []).append(synset)
    # A positive pair needs a second synset from the same file, so its first one comes from a file of 2+.
    pairable = [s for s in synsets if len(by_lexname[s.lexname]) > 1]
    labels = [0, 1] * (len(synsets) // 2)
    rng.shuffle(labels)
    texts, seconds = [], []
    for label in labels:
        first = rng.choice(pairable if label else synsets)
        second = _partner(first, label, synsets, by_lexname[first.lexname], rng)
        texts.append(first.text)
        seconds.append(second.text)
    return _Split(texts, seconds, labels)


def _partner(
    first: _Synset, same: int, synsets: tuple[_Synset, ...], group: list[_Synset], rng: random.Random
) -> _Synset:
    while True:  # rejection sampling: no file holds more than an eighth of the synsets: few draws
        second = rng.choice(group if same else synsets)
        if second.id != first.id and (second.lexname == first.lexname) == bool(same):
            return second


# ---- local files and hub datasets ----------------------------------------------------------


class _Columns(NamedTuple):
    text: str
    pair: str | None
    label: str


def _table_task(
    spec: str, columns: tuple[str | None, ...], dev_file: str | None, cache_dir: str | None, seed: int
) -> tuple[str, str, list[str], _Split, _Split]:
    import datasets

    bars_were_on = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # fine-tuning loads a task in each search worker; keep their logs clean
    try:
        if _is_local(spec):
            return _file_task(datasets, spec, columns, dev_file, cache_dir, seed)
        if dev_file is not None:
            raise TaskError(f"task {spec}: --dev-file applies to a local train file, not to a hub dataset")
        return _hub_task(datasets, spec, columns, cache_dir, seed)
    finally:
        if bars_were_on:
            datasets.enable_progress_bars()


def _is_local(spec: str) -> bool:
    path = Path(spec).expanduser()
    return path.exists() or path.suffix.lower() in _FILE_LOOKING or spec.startswith(("/", ".", "~"))


def _file_task(
    datasets: Any, spec: str, columns: tuple[str | None, ...], dev_file: str | None, cache_dir: str | None, seed: int
) -> tuple[str, str, list[str], _Split, _Split]:
    table = _read_file(datasets, spec, cache_dir)
    chosen = _choose_columns(table.column_names, spec, *columns, defaults=(None, None))
    label_names, keys = _label_index(table, chosen.label, spec)
    examples = _split_from(table, chosen, spec, keys, label_names, where=spec)
    if dev_file is None:
        train, dev = _hold_out(examples, seed)
        return spec, f"file {spec} ({DEV_PERCENT} % held out as dev, seed {seed})", label_names, train, dev
    dev_table = _read_file(datasets, dev_file, cache_dir, role="dev file")
    _require_columns(dev_table.column_names, dev_file, chosen)
    dev = _split_from(dev_table, chosen, dev_file, keys, label_names, where=dev_file)
    return spec, f"file {spec}, dev file {dev_file}", label_names, examples, dev


def _hold_out(examples: _Split, seed: int) -> tuple[_Split, _Split]:
    count = len(examples.labels)
    dev_count = max(MIN_EXAMPLES, round(count * DEV_PERCENT / 100))
    order = list(range(count))
    random.Random(f"holdout-{seed}").shuffle(order)
    return examples.take(sorted(order[dev_count:])), examples.take(sorted(order[:dev_count]))


def _read_file(datasets: Any, spec: str, cache_dir: str | None, role: str = "task file") -> Any:
    """The file's rows as a ``datasets.Dataset``; every way of failing becomes one TaskError line."""
    path = Path(spec).expanduser()
    builder = _BUILDERS.get(path.suffix.lower())
    kinds = ", ".join(sorted(_BUILDERS))
    if not path.exists():
        alternatives = f", a hub dataset NAME[:CONFIG], or an embedded task: {', '.join(EMBEDDED_TASKS)}"
        raise TaskError(f"{role} {spec}: no such file (give a {kinds} file"
                        f"{alternatives if role == 'task file' else ''})")  # fmt: skip
    if path.is_dir():
        raise TaskError(f"{role} {spec}: is a folder; give one {kinds} file")
    if builder is None:
        raise TaskError(f"{role} {spec}: unknown file type {path.suffix or '(no suffix)'!r}; give a {kinds} file")
    _check_readable(path, spec, role)
    kwargs: dict[str, Any] = {"sep": "\t"} if path.suffix.lower() == ".tsv" else {}
    kwargs["cache_dir"] = _hf_cache(cache_dir)
    try:
        return datasets.load_dataset(builder, data_files=str(path), split="train", **kwargs)
    except Exception as err:  # noqa: BLE001 - datasets, pyarrow and pandas raise many types; one message for all
        raise TaskError(f"{role} {spec}: cannot be read as {path.suffix.lower()[1:]} ({_first_line(err)})") from None


def _check_readable(path: Path, spec: str, role: str) -> None:
    """Fail early on an unreadable, empty or non-UTF-8 file: a csv reader may take binary bytes for text."""
    try:
        with path.open("rb") as handle:
            head = handle.read(_ENCODING_PROBE_BYTES)
    except OSError as err:
        raise TaskError(f"{role} {spec}: cannot be read ({err.strerror or type(err).__name__})") from None
    if not head:
        raise TaskError(f"{role} {spec}: is empty")
    if path.suffix.lower() not in _TEXT_FORMATS:
        return
    try:
        if b"\x00" in head:
            raise ValueError("NUL byte")
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)  # a cut multi-byte tail is fine
    except ValueError:  # UnicodeDecodeError is a ValueError
        raise TaskError(f"{role} {spec}: is binary or not UTF-8 text; save it as UTF-8 "
                        f"{path.suffix.lower()[1:]}") from None  # fmt: skip


def _choose_columns(
    available: list[str],
    where: str,
    text: str | None,
    pair: str | None,
    label: str | None,
    *,
    defaults: tuple[str | None, str | None],
) -> _Columns:
    """The text / second-text / label columns: as given, else the known defaults, else text (or sentence) and label."""
    default_text, default_pair = defaults
    if text is None:
        text = default_text or ("sentence" if "text" not in available and "sentence" in available else "text")
    chosen = _Columns(text, pair if pair is not None else default_pair, label or "label")
    _require_columns(available, where, chosen)
    return chosen


def _require_columns(available: list[str], where: str, chosen: _Columns) -> None:
    flags = (("text", chosen.text, "--text-column"), ("second-text", chosen.pair, "--text-pair-column"),
             ("label", chosen.label, "--label-column"))  # fmt: skip
    for role, column, flag in flags:
        if column is not None and column not in available:
            raise TaskError(f"task {where}: no {role} column {column!r}; columns: {', '.join(available) or 'none'} "
                            f"(pick one with {flag})")  # fmt: skip


def _label_index(table: Any, column: str, where: str) -> tuple[list[str], dict[str, int]]:
    """Label names in index order and the index of each name, from the train table's label column."""
    feature = table.features.get(column)
    if _is_class_label(feature):
        label_names = list(feature.names)
    else:
        values = list(table[column])
        names = {_label_name(value, where, column, row) for row, value in enumerate(values, 1)}
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        label_names = sorted(names, key=float) if numeric else sorted(names)
    if len(label_names) < 2:
        raise TaskError(f"task {where}: label column {column!r} holds {len(label_names)} distinct label(s); "
                        "a classification task needs at least 2 (pick another with --label-column)")  # fmt: skip
    if len(label_names) > MAX_LABELS:
        raise TaskError(f"task {where}: label column {column!r} holds {len(label_names)} distinct labels "
                        f"(over {MAX_LABELS}): probably not a label column; pick one with --label-column")  # fmt: skip
    return label_names, {name: i for i, name in enumerate(label_names)}


def _is_class_label(feature: Any) -> bool:
    import datasets

    return isinstance(feature, datasets.ClassLabel)


def _label_name(value: Any, where: str, column: str, row: int) -> str:
    """A label cell as a string: ints as digits, integral floats as ints, strings stripped."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        raise TaskError(f"task {where}: row {row} has an empty label in column {column!r}; fill it or drop the row")
    if isinstance(value, float):
        if not value.is_integer():
            raise TaskError(f"task {where}: label column {column!r} holds a non-integer number ({value} in row "
                            f"{row}): regression is not supported; pick a class column with --label-column")
        value = int(value)
    if isinstance(value, str):
        if not value.strip():
            raise TaskError(f"task {where}: row {row} has an empty label in column {column!r}; fill it or drop the row")
        return value.strip()
    if isinstance(value, int):  # bool included: True / False stay names
        return str(value)
    raise TaskError(f"task {where}: label column {column!r} holds {type(value).__name__} values (row {row}); "
                    "pick a column of strings or integers with --label-column")


def _split_from(
    table: Any, chosen: _Columns, spec: str, keys: dict[str, int], label_names: list[str], *, where: str
) -> _Split:
    texts = _texts(table, chosen.text, where, "--text-column")
    pairs = None if chosen.pair is None else _texts(table, chosen.pair, where, "--text-pair-column")
    feature = table.features.get(chosen.label)
    labels = []
    for row, value in enumerate(table[chosen.label], 1):
        if _is_class_label(feature) and isinstance(value, int) and value >= 0:
            value = feature.names[value]  # the same name -> index lookup as strings, across files
        name = _label_name(value, where, chosen.label, row)
        if name not in keys:
            known = ", ".join(label_names[:20]) + (" ..." if len(label_names) > 20 else "")
            raise TaskError(f"task {where}: label {name!r} (row {row}) does not occur in {spec}'s train data; "
                            f"known labels: {known}")  # fmt: skip
        labels.append(keys[name])
    return _Split(texts, pairs, labels)


def _texts(table: Any, column: str, where: str, flag: str) -> list[str]:
    texts = []
    for row, value in enumerate(table[column], 1):
        if value is not None and not isinstance(value, str):
            raise TaskError(f"task {where}: column {column!r} holds {type(value).__name__} values, not text "
                            f"(row {row}); pick the text column with {flag}")  # fmt: skip
        if value is None or not value.strip():
            raise TaskError(f"task {where}: row {row} has an empty text in column {column!r}; fill it or drop the row")
        texts.append(value.strip())
    return texts


def _hub_task(
    datasets: Any, spec: str, columns: tuple[str | None, ...], cache_dir: str | None, seed: int
) -> tuple[str, str, list[str], _Split, _Split]:
    name, _, config = spec.partition(":")
    known = (_HUB_ALIASES.get(name, name), config)
    if known in _HUB_REGRESSION:
        raise TaskError(f"task {spec}: a regression task; only classification is supported")
    try:
        splits = datasets.load_dataset(name, config or None, cache_dir=_hf_cache(cache_dir))
    except Exception as err:  # noqa: BLE001 - the hub and the network fail in many ways; the user needs one line
        offline = "; HF_DATASETS_OFFLINE is set" if os.environ.get("HF_DATASETS_OFFLINE") not in (None, "", "0") else ""
        raise TaskError(
            f"task {spec}: not a local file, and the hub dataset cannot be loaded ({_first_line(err)}{offline}); "
            "the hub needs a network connection: a local .csv/.tsv/.json/.jsonl/.parquet file with "
            "--text-column/--label-column works offline"
        ) from None
    if "train" not in splits:
        raise TaskError(f"task {spec}: no train split; splits: {', '.join(splits)}")
    train_table = splits["train"]
    chosen = _choose_columns(train_table.column_names, spec, *columns, defaults=_HUB_COLUMNS.get(known, (None, None)))
    label_names, keys = _label_index(train_table, chosen.label, spec)
    train = _split_from(train_table, chosen, spec, keys, label_names, where=f"{spec} (train)")
    dev_split = next((s for s in _HUB_DEV_SPLITS if s in splits), None)
    if dev_split is None:
        train, dev = _hold_out(train, seed)
        source = f"hub dataset {spec} (train, {DEV_PERCENT} % held out as dev, seed {seed})"
        return spec, source, label_names, train, dev
    dev_table = splits[dev_split]
    _require_columns(dev_table.column_names, f"{spec} ({dev_split})", chosen)
    dev = _split_from(dev_table, chosen, spec, keys, label_names, where=f"{spec} ({dev_split})")
    return spec, f"hub dataset {spec} (splits train / {dev_split})", label_names, train, dev


def _hf_cache(cache_dir: str | None) -> str | None:
    return str(Path(cache_dir) / "datasets") if cache_dir else None


def _first_line(err: Exception) -> str:
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__
