"""Corpora for distillation: loaded through ``datasets``, tokenized with the teacher's tokenizer into
fixed-length windows, split train / held-out deterministically, and cached.

A record (a line group, a CSV row, a manual topic) is cut into windows of ``seq_len - 2`` tokens,
each framed as ``[CLS] ... [SEP]``; short tails are padded. The split is a fixed permutation of the
windows (independent of the run's seed), so every candidate is scored on the same held-out text.

Teacher outputs for the windows are computed lazily in fixed chunks and kept (fp16, on the run's
device) for the life of the process: a search scores hundreds of students against the same teacher targets, so each
candidate pays for its own forward and backward passes only.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch

from nas.distill.config import DistillConfig, DistillError
from nas.distill.teacher import Teacher, tokenizer_fingerprint

EMBEDDED_CORPUS = "python-reference"  # data=None: the Python reference manual, pydoc_data.topics
SPLIT_SEED = 1234  # the train/held-out permutation; fixed so the held-out text never depends on a run's seed
MIN_WINDOW_TOKENS = 4  # a tail window with fewer real tokens is dropped, not padded
TARGET_CHUNK = 64  # teacher outputs are computed and kept in chunks of this many windows
_CACHE_VERSION = 1
_TEXT_BUILDERS = {".txt": "text", ".text": "text", ".md": "text", ".csv": "csv", ".tsv": "csv",
                  ".json": "json", ".jsonl": "json", ".parquet": "parquet"}  # fmt: skip


# ---- texts ---------------------------------------------------------------------------------


def load_texts(spec: str | None, text_column: str = "text", cache_dir: str | None = None) -> tuple[list[str], str]:
    """The non-empty texts of a corpus and a one-line description of where they came from.

    ``spec``: None (the embedded Python reference manual), a local .txt/.md (one record per
    paragraph), .csv/.tsv, .json/.jsonl or .parquet file, or a hub dataset ``NAME[:CONFIG]`` (online).
    """
    if spec is None or spec == EMBEDDED_CORPUS:
        return _embedded_texts()
    import datasets  # seconds to import: only for files and hub datasets

    bars_were_on = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # a search loads corpora in many workers; keep their logs clean
    try:
        return _load_texts(datasets, spec, text_column, cache_dir)
    finally:
        if bars_were_on:
            datasets.enable_progress_bars()


def _load_texts(datasets, spec: str, text_column: str, cache_dir: str | None) -> tuple[list[str], str]:
    hf_cache = str(Path(cache_dir) / "datasets") if cache_dir else None
    if Path(spec).expanduser().exists():
        path = Path(spec).expanduser()
        builder = _TEXT_BUILDERS.get(path.suffix.lower())
        if path.is_dir() or builder is None:
            raise DistillError(
                f"corpus {spec}: give one file ending in {', '.join(sorted(_TEXT_BUILDERS))}, or a hub dataset name"
            )
        kwargs: dict[str, Any] = {"sample_by": "paragraph"} if builder == "text" else {}
        if path.suffix.lower() == ".tsv":
            kwargs["sep"] = "\t"
        try:
            dataset = datasets.load_dataset(builder, data_files=str(path), split="train", cache_dir=hf_cache, **kwargs)
        except Exception as err:  # noqa: BLE001 - datasets raises many types; the user needs one message
            raise DistillError(f"corpus {spec}: cannot be read as {builder} ({_first_line(err)})") from None
        where = str(path)
    else:
        name, _, config_name = spec.partition(":")
        try:
            dataset = datasets.load_dataset(name, config_name or None, split="train", cache_dir=hf_cache)
        except Exception as err:  # noqa: BLE001
            raise DistillError(
                f"corpus {spec}: no such file, and not loadable as a hub dataset ({_first_line(err)}); "
                "the hub needs a network connection"
            ) from None
        where = f"hub dataset {spec}"
    if text_column not in dataset.column_names:
        raise DistillError(
            f"corpus {spec}: no column {text_column!r}; columns: {', '.join(dataset.column_names) or 'none'} "
            "(choose one with --text-column)"
        )
    texts = _usable(dataset[text_column])
    if not texts:
        raise DistillError(
            f"corpus {spec}: no usable text (column {text_column!r} holds no non-empty strings)"
        )
    return texts, where


def _embedded_texts() -> tuple[list[str], str]:
    import pydoc_data.topics

    topics = pydoc_data.topics.topics
    where = f"{EMBEDDED_CORPUS} (pydoc_data.topics of CPython {sys.version.split()[0]}, {len(topics)} topics)"
    return _usable(topics[name] for name in sorted(topics)), where


def _usable(texts) -> list[str]:
    """The non-empty strings, stripped."""
    return [t.strip() for t in texts if isinstance(t, str) and t.strip()]


# ---- windows -------------------------------------------------------------------------------


@dataclass
class Windows:
    """Token windows of a corpus, split: ids (N, T) and masks (N, T) of 1 = token, 0 = padding."""

    train_ids: torch.Tensor
    train_mask: torch.Tensor
    heldout_ids: torch.Tensor
    heldout_mask: torch.Tensor
    source: str
    fingerprint: str  # of the texts, the tokenizer and the window length

    def describe(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "fingerprint": self.fingerprint,
            "train_windows": len(self.train_ids),
            "heldout_windows": len(self.heldout_ids),
            "train_tokens": int(self.train_mask.sum()),
            "heldout_tokens": int(self.heldout_mask.sum()),
        }


def tokenize_windows(texts: list[str], tokenizer: Any, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every record cut into [CLS] + up to seq_len-2 tokens + [SEP], padded: (ids, mask), each (N, seq_len)."""
    cls_id, sep_id, pad_id = tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id
    if cls_id is None or sep_id is None:
        raise DistillError("teacher tokenizer: it has no [CLS]/[SEP] tokens; a BERT-family tokenizer is needed")
    body = seq_len - 2
    windows: list[list[int]] = []
    for ids in _token_ids(texts, tokenizer):
        for start in range(0, len(ids), body):
            piece = ids[start : start + body]
            if len(piece) >= MIN_WINDOW_TOKENS:
                windows.append([cls_id, *piece, sep_id])
    ids_out = torch.full((len(windows), seq_len), pad_id or 0, dtype=torch.int32)
    mask_out = torch.zeros((len(windows), seq_len), dtype=torch.int8)
    for row, window in enumerate(windows):
        ids_out[row, : len(window)] = torch.tensor(window, dtype=torch.int32)
        mask_out[row, : len(window)] = 1
    return ids_out, mask_out


def _token_ids(texts: list[str], tokenizer: Any, batch: int = 1024) -> Iterator[list[int]]:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        # A copy without the truncation and padding a saved tokenizer.json may carry (MiniLM's cuts
        # at 128 tokens): long records are cut into windows here, not truncated.
        from tokenizers import Tokenizer

        backend = Tokenizer.from_str(backend.to_str())
        backend.no_truncation()
        backend.no_padding()
    for start in range(0, len(texts), batch):
        chunk = texts[start : start + batch]
        if backend is not None:  # the Rust tokenizer: fast, and no warning about long records
            yield from (enc.ids for enc in backend.encode_batch(chunk, add_special_tokens=False))
        else:
            yield from tokenizer(chunk, add_special_tokens=False, verbose=False)["input_ids"]


def split_windows(
    ids: torch.Tensor, mask: torch.Tensor, heldout_examples: int, train_examples: int | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Held-out = the first windows of a fixed permutation (at most a fifth of them), train = the rest."""
    n = len(ids)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(SPLIT_SEED))
    n_heldout = min(heldout_examples, max(1, n // 5))
    heldout, train = order[:n_heldout], order[n_heldout:]
    if train_examples is not None:
        train = train[:train_examples]
    return ids[train], mask[train], ids[heldout], mask[heldout]


_WINDOWS: dict[tuple, tuple[torch.Tensor, torch.Tensor, str, str]] = {}


def load_windows(config: DistillConfig, teacher: Teacher) -> Windows:
    """The corpus of ``config`` tokenized by ``teacher`` into windows and split; cached in the process
    and on disk (``<cache_dir>/distill/``). Raises DistillError for a corpus with no usable text."""
    # the cache folder is part of the key: a run told to cache elsewhere finds its file there
    key = (config.data, _mtime(config.data), config.text_column, teacher.key, config.seq_len, config.resolved_cache_dir)
    if key not in _WINDOWS:
        _WINDOWS.clear()
        _WINDOWS[key] = _tokenized(config, teacher)
    ids, mask, source, fingerprint = _WINDOWS[key]
    if len(ids) < 2:
        raise DistillError(
            f"corpus {config.data or EMBEDDED_CORPUS}: {len(ids)} window(s) of at least {MIN_WINDOW_TOKENS} tokens; "
            "need at least 2 (one to train on, one held out)"
        )
    train_ids, train_mask, heldout_ids, heldout_mask = split_windows(ids, mask, config.heldout_examples, config.train_examples)
    return Windows(train_ids, train_mask, heldout_ids, heldout_mask, source, fingerprint)


def _tokenized(config: DistillConfig, teacher: Teacher) -> tuple[torch.Tensor, torch.Tensor, str, str]:
    from safetensors.torch import load_file, save_file

    cache_dir = config.resolved_cache_dir
    texts, source = load_texts(config.data, config.text_column, cache_dir)
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode())
        digest.update(b"\0")
    fingerprint = hashlib.sha256(
        json.dumps([_CACHE_VERSION, digest.hexdigest(), tokenizer_fingerprint(teacher.tokenizer), config.seq_len]).encode()
    ).hexdigest()[:16]
    path = Path(cache_dir) / "distill" / f"windows-{fingerprint}.safetensors"
    if path.exists():
        try:
            tensors = load_file(str(path))
            return tensors["ids"], tensors["mask"], source, fingerprint
        except Exception:  # noqa: BLE001 - a damaged cache file is rebuilt, never trusted
            pass
    ids, mask = tokenize_windows(texts, teacher.tokenizer, config.seq_len)
    if len(ids) == 0:
        raise DistillError(
            f"corpus {config.data or EMBEDDED_CORPUS}: no usable text (no record has {MIN_WINDOW_TOKENS} or more tokens)"
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        save_file({"ids": ids.contiguous(), "mask": mask.contiguous()}, str(tmp), metadata={"source": source})
        tmp.replace(path)  # readers never see a half-written cache file
    except OSError:
        pass  # a read-only cache costs a re-tokenization next time, nothing more
    return ids, mask, source, fingerprint


def _mtime(spec: str | None) -> int | None:
    if spec is None:
        return None
    path = Path(spec).expanduser()
    return path.stat().st_mtime_ns if path.exists() else None


# ---- teacher targets -----------------------------------------------------------------------


@dataclass
class TeacherBatch:
    """Teacher outputs for a batch, float32: what the distillation losses compare against."""

    hidden_states: tuple[torch.Tensor, ...]  # L+1 of (B, T, H)
    attentions: tuple[torch.Tensor, ...]  # L of (B, nh, T, T) per head, or (B, T, T) head-averaged
    embedding: torch.Tensor  # (B, H): mean-pooled last hidden state, the sentence embedding


@dataclass
class _Chunk:
    hidden: torch.Tensor  # (C, L+1, T, H) fp16
    attention_mean: torch.Tensor  # (C, L, T, T) fp16
    embedding: torch.Tensor  # (C, H) fp32
    attention_heads: torch.Tensor | None = None  # (C, L, nh, T, T) fp16, only once a student needs it


@dataclass
class TargetStore:
    """Teacher outputs for a fixed set of windows, computed lazily in fixed chunks and kept on ``device``.

    Chunks are always the same windows in the same order, so a window's targets never depend on
    which run asked first: results stay reproducible whatever order a search scores candidates in.
    """

    teacher: Teacher
    ids: torch.Tensor
    mask: torch.Tensor
    device: torch.device = torch.device("cpu")  # where the teacher runs and the chunks are kept
    chunks: dict[int, _Chunk] = field(default_factory=dict)

    def batch(self, index: torch.Tensor, per_head: bool) -> TeacherBatch:
        rows = index.tolist()
        needed = sorted({row // TARGET_CHUNK for row in rows})
        for c in needed:
            self._ensure(c, per_head)
        picks = [(self.chunks[row // TARGET_CHUNK], row % TARGET_CHUNK) for row in rows]
        hidden = torch.stack([chunk.hidden[r] for chunk, r in picks]).float()  # (B, L+1, T, H)
        source = [chunk.attention_heads if per_head else chunk.attention_mean for chunk, _ in picks]
        attn = torch.stack([s[r] for s, (_, r) in zip(source, picks)]).float()  # (B, L, [nh,] T, T)
        embedding = torch.stack([chunk.embedding[r] for chunk, r in picks])
        return TeacherBatch(tuple(hidden.unbind(1)), tuple(attn.unbind(1)), embedding)

    def _ensure(self, c: int, per_head: bool) -> None:
        chunk = self.chunks.get(c)
        if chunk is not None and (not per_head or chunk.attention_heads is not None):
            return
        lo, hi = c * TARGET_CHUNK, min(len(self.ids), (c + 1) * TARGET_CHUNK)
        ids, mask = self.ids[lo:hi].long().to(self.device), self.mask[lo:hi].long().to(self.device)
        hidden, attentions = self.teacher.to(self.device).forward(ids, mask)
        attn = torch.stack(attentions, dim=1)  # (C, L, nh, T, T)
        self.chunks[c] = _Chunk(
            hidden=torch.stack(hidden, dim=1).half(),
            attention_mean=attn.mean(dim=2).half(),
            embedding=mean_pool(hidden[-1], mask),
            attention_heads=attn.half() if per_head else None,
        )


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of the token states over real tokens: (B, T, H), (B, T) -> (B, H). Sentence-BERT's pooling."""
    weights = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)


@dataclass
class DistillData:
    """Windows plus the teacher's targets for them; one per (teacher, corpus, window length) in a process."""

    windows: Windows
    train: TargetStore
    heldout: TargetStore
    baseline_score: float | None = None  # the held-out score of the best constant embedding

    def describe(self) -> dict[str, Any]:
        return self.windows.describe() | {"baseline_score": self.baseline_score}


_DATA: dict[tuple, DistillData] = {}


def prepare_data(config: DistillConfig, teacher: Teacher, device: torch.device = torch.device("cpu")) -> DistillData:
    """Windows and target stores for this config's corpus and teacher, reused across calls in a process;
    the teacher's targets are computed and kept on ``device``."""
    key = (teacher.key, config.data, _mtime(config.data), config.text_column, config.seq_len,
           config.heldout_examples, config.train_examples, str(device), config.resolved_cache_dir)  # fmt: skip
    if key not in _DATA:
        _DATA.clear()  # keep one set of teacher targets in memory, not one per setting ever used
        windows = load_windows(config, teacher)
        data = DistillData(
            windows,
            TargetStore(teacher, windows.train_ids, windows.train_mask, device),
            TargetStore(teacher, windows.heldout_ids, windows.heldout_mask, device),
        )
        _DATA[key] = data
    return _DATA[key]


def clear_data() -> None:
    _DATA.clear()
    _WINDOWS.clear()


def _first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__
