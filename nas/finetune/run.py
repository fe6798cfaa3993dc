"""Fine-tune an encoder on a labelled task and report its dev accuracy and macro-F1.

    result = finetune(student, load_task("wordnet-supersense"), FinetuneConfig(seed=0), tokenizer)

The head is a linear classifier on the mean-pooled last hidden state (the pooling the student was
distilled with), trained with the whole encoder: AdamW, linear warm-up and decay, gradient
clipping, dropout 0.1 before the head. A single learning rate leaves many small students at the
majority class, so the run sweeps ``lrs`` (the GLUE practice of BERT, MobileBERT and SqueezeBERT)
and reports the best dev accuracy together with every learning rate's figures.

Same encoder weights, task, settings, seed, thread count and hardware: the same numbers, bit for
bit on a CPU (on CUDA, see docs/distill.md).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nas.distill.data import mean_pool
from nas.errors import NasError, check_fields
from nas.finetune.tasks import Task
from nas.model import Encoder
from nas.precision import DEVICE_FORMS, PRECISIONS, autocast, check_device, device_model, resolve_run
from nas.progress import progress_bar


HEAD_INITS = ("probe", "random")
HEAD_FIT_ITERATIONS = 150  # L-BFGS iterations of the linear head (fit_linear_head)
HEAD_L2 = 1e-3


class FinetuneError(NasError):
    """Bad fine-tuning settings; raised before any training."""


@dataclass(frozen=True)
class FinetuneConfig:
    """How to fine-tune: plain values that round-trip to JSON."""

    lrs: tuple[float, ...] = (1e-4, 3e-4, 1e-3)
    epochs: int = 3
    batch_size: int = 32
    seq_len: int = 48  # tokens per example, pair included ([CLS] a [SEP] b [SEP])
    warmup_fraction: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    dropout: float = 0.1
    seed: int = 0
    threads: int | None = None
    precision: str = "auto"  # "auto", "fp32" or "bf16" autocast (nas.precision)
    device: str = "auto"  # "auto", "cpu", "cuda" or "cuda:N"
    # "probe": LP-FT (Kumar et al., 2022): the head starts as a logistic regression fit on the frozen
    # encoder's features, and that head alone is scored too (reported as lr 0); "random": a random head.
    head_init: str = "probe"

    def __post_init__(self) -> None:
        if isinstance(self.lrs, list):
            object.__setattr__(self, "lrs", tuple(self.lrs))
        if not self.lrs or not all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in self.lrs):
            raise FinetuneError(f"fine-tune setting lrs={list(self.lrs)!r}: give one or more positive learning rates")
        for name in ("epochs", "batch_size", "seq_len"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise FinetuneError(f"fine-tune setting {name}={value!r}: must be an integer of at least 1")
        if self.seq_len < 8:
            raise FinetuneError(f"fine-tune setting seq_len={self.seq_len}: must be at least 8 tokens")
        if not 0 <= self.warmup_fraction < 1:
            raise FinetuneError(f"fine-tune setting warmup_fraction={self.warmup_fraction!r}: must be in [0, 1)")
        if not 0 <= self.dropout < 1:
            raise FinetuneError(f"fine-tune setting dropout={self.dropout!r}: must be in [0, 1)")
        if self.precision not in PRECISIONS:
            raise FinetuneError(f"fine-tune setting precision={self.precision!r}: must be one of {', '.join(PRECISIONS)}")
        try:
            check_device(self.device)
        except ValueError:
            raise FinetuneError(f"fine-tune setting device={self.device!r}: must be one of {DEVICE_FORMS}") from None
        if self.head_init not in HEAD_INITS:
            raise FinetuneError(f"fine-tune setting head_init={self.head_init!r}: must be one of {', '.join(HEAD_INITS)}")
        if self.threads is not None and self.threads < 1:
            raise FinetuneError(f"fine-tune setting threads={self.threads!r}: must be at least 1 (or null)")

    @property
    def resolved_hardware(self) -> tuple[torch.device, str]:
        """(device, precision) for this machine; a FinetuneError naming the setting when it has no such device."""
        try:
            return resolve_run(self.device, self.precision)
        except ValueError as err:
            raise FinetuneError(f"fine-tune setting {err}") from None

    def replace(self, **changes: Any) -> "FinetuneConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["lrs"] = list(self.lrs)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "fine-tune config") -> "FinetuneConfig":
        check_fields(data, cls, source, FinetuneError)
        return cls(**data)


@dataclass
class LrResult:
    lr: float
    accuracy: float
    macro_f1: float
    train_loss: float  # mean over the last epoch


@dataclass
class FinetuneResult:
    task: dict[str, Any]
    config: FinetuneConfig
    accuracy: float  # dev accuracy at the best learning rate
    macro_f1: float
    best_lr: float
    sweep: list[LrResult]
    majority_accuracy: float
    precision: str
    hardware: str
    train_s: float
    examples_per_s: float
    device: str = "cpu"

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "config": self.config.to_dict(),
            "accuracy": self.accuracy,
            "macro_f1": self.macro_f1,
            "best_lr": self.best_lr,
            "sweep": [dataclasses.asdict(r) for r in self.sweep],
            "majority_accuracy": self.majority_accuracy,
            "precision": self.precision,
            "device": self.device,
            "hardware": self.hardware,
            "train_s": self.train_s,
            "examples_per_s": self.examples_per_s,
        }


class Classifier(nn.Module):
    """An encoder with a linear head on its mean-pooled last hidden state."""

    def __init__(self, encoder: Encoder, num_labels: int, dropout: float) -> None:
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(encoder.arch.hidden_size, num_labels)
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor, token_types: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(ids, attention_mask=mask, token_type_ids=token_types).last_hidden_state.float()
        return self.head(self.dropout(mean_pool(hidden, mask)))


@dataclass
class Encoded:
    ids: torch.Tensor  # (N, T) int
    mask: torch.Tensor
    token_types: torch.Tensor
    labels: torch.Tensor  # (N,)


def encode(tokenizer: Any, texts, pairs, labels, seq_len: int) -> Encoded:
    """Tokenize a split to fixed-length tensors (truncating the longer text of a pair first)."""
    out = tokenizer(
        list(texts),
        list(pairs) if pairs is not None else None,
        max_length=seq_len,
        truncation="longest_first" if pairs is not None else True,
        padding="max_length",
        return_tensors="pt",
        return_token_type_ids=True,
    )
    return Encoded(out["input_ids"], out["attention_mask"], out["token_type_ids"], torch.tensor(list(labels)))


def finetune(encoder: Encoder, task: Task, config: FinetuneConfig | None = None, tokenizer: Any = None,
             *, progress: bool = False) -> FinetuneResult:
    """Fine-tune copies of ``encoder`` at each learning rate of the sweep; the encoder itself is untouched.

    ``tokenizer``: the one the encoder was trained with (default: the embedded teacher's).
    """
    config = config or FinetuneConfig()
    if tokenizer is None:
        from nas.distill.teacher import load_teacher

        tokenizer = load_teacher(None).tokenizer
    if encoder.arch.vocab_size != len(tokenizer):
        raise FinetuneError(
            f"genome {encoder.arch.id}: vocab_size {encoder.arch.vocab_size} does not match the tokenizer's {len(tokenizer)} tokens"
        )
    if encoder.arch.max_position_embeddings < config.seq_len:
        raise FinetuneError(f"genome {encoder.arch.id}: takes at most {encoder.arch.max_position_embeddings} tokens; lower seq_len")
    device, precision = config.resolved_hardware
    previous_threads = torch.get_num_threads()
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    try:
        train = encode(tokenizer, task.train_texts, task.train_pairs, task.train_labels, config.seq_len)
        dev = encode(tokenizer, task.dev_texts, task.dev_pairs, task.dev_labels, config.seq_len)
        sweep, train_s, head = [], 0.0, None
        began = time.perf_counter()
        if config.head_init == "probe":
            head, head_loss = fit_head(encoder, train, task.num_labels, config.batch_size * 2, precision, device)
            probe = Classifier(_on(encoder, device), task.num_labels, config.dropout).to(device)
            probe.head.load_state_dict(head)
            accuracy, macro_f1 = classification_scores(_predict(probe, dev, config.batch_size * 2, precision, device), dev.labels, task.num_labels)
            sweep.append(LrResult(lr=0.0, accuracy=accuracy, macro_f1=macro_f1, train_loss=head_loss))
        for lr in config.lrs:
            sweep.append(_train_one(encoder, task.num_labels, train, dev, lr, config, precision, device, progress, head))
        train_s += time.perf_counter() - began
    finally:
        torch.set_num_threads(previous_threads)
    best = max(sweep, key=lambda r: (r.accuracy, r.macro_f1))
    seen = len(train.labels) * config.epochs * len(config.lrs)
    return FinetuneResult(
        task=task.describe(),
        config=config,
        accuracy=best.accuracy,
        macro_f1=best.macro_f1,
        best_lr=best.lr,
        sweep=sweep,
        majority_accuracy=task.majority_accuracy(),
        precision=precision,
        hardware=device_model(device),
        device=str(device),
        train_s=train_s,
        examples_per_s=seen / train_s if train_s > 0 else 0.0,
    )


def fit_head(encoder: Encoder, data: Encoded, num_labels: int, batch_size: int, precision: str,
             device: torch.device = torch.device("cpu")) -> tuple[dict[str, torch.Tensor], float]:
    """A linear head fit by multinomial logistic regression on the frozen encoder's pooled features.

    Returns the head's state (on the CPU) and its final training loss. The encoder runs on
    ``device``, the fit on the CPU. Deterministic.
    """
    return fit_linear_head(pooled_features(encoder, data, batch_size, precision, device), data.labels, num_labels)


@torch.no_grad()
def pooled_features(encoder: Encoder, data: Encoded, batch_size: int, precision: str,
                    device: torch.device = torch.device("cpu")) -> torch.Tensor:
    """(N, H) fp32 on the CPU: the mean-pooled last hidden state, the features the head reads."""
    encoder = _on(encoder, device).eval()
    features = []
    for lo in range(0, len(data.labels), batch_size):
        ids, mask, types = _trimmed(data, torch.arange(lo, min(lo + batch_size, len(data.labels))), device)
        with autocast(precision, device):
            hidden = encoder(ids, attention_mask=mask, token_type_ids=types).last_hidden_state.float()
        features.append(mean_pool(hidden, mask).cpu())
    return torch.cat(features)


def fit_linear_head(x: torch.Tensor, labels: torch.Tensor, num_labels: int) -> tuple[dict[str, torch.Tensor], float]:
    """Multinomial logistic regression on features ``x`` (L2 penalty ``HEAD_L2``), solved by full-batch
    L-BFGS on standardised features (any encoder's scale, NoNorm's included, fits the same way) and
    folded back into a head (``weight``, ``bias``) that reads the raw features. Returns the head and
    its final training loss.

    A solved problem, not a fixed number of first-order steps: 300 steps of Adam left some students'
    heads 3-5 points of dev accuracy short of the optimum (their features are badly conditioned after
    long distillation), which read as a difference between encoders. ``HEAD_FIT_ITERATIONS`` L-BFGS
    iterations land within 0.2 points of the converged head."""
    with torch.no_grad():
        mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
        z = (x - mean) / std
    weight = torch.zeros(num_labels, x.shape[1], requires_grad=True)
    bias = torch.zeros(num_labels, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1, max_iter=HEAD_FIT_ITERATIONS, history_size=20,
                                  tolerance_grad=1e-6, tolerance_change=1e-10, line_search_fn="strong_wolfe")

    def objective() -> torch.Tensor:
        return nn.functional.cross_entropy(z @ weight.T + bias, labels) + HEAD_L2 * weight.square().sum()

    def closure() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        loss = objective()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        scaled = weight / std  # W z + b = (W / std) x + (b - (W / std) mean)
        head = {"weight": scaled.clone(), "bias": (bias - scaled @ mean).clone()}
        return head, float(objective())


def linear_head_outcomes(train_x: torch.Tensor, train_y: torch.Tensor, eval_x: torch.Tensor, eval_y: torch.Tensor,
                         num_labels: int) -> torch.Tensor:
    """Fit ``fit_linear_head`` on the training features; whether it labels each evaluation example
    right (a bool per example: its mean is the accuracy, and the report bootstraps over them)."""
    head, _ = fit_linear_head(train_x, train_y, num_labels)
    return (eval_x @ head["weight"].T + head["bias"]).argmax(1) == eval_y


def _train_one(encoder, num_labels, train: Encoded, dev: Encoded, lr, config: FinetuneConfig, precision, device,
               progress, head: dict[str, torch.Tensor] | None = None) -> LrResult:
    # dropout draws from the device's generator: seed it, and give the caller's state back after
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        torch.manual_seed(config.seed)
        model = Classifier(copy.deepcopy(encoder), num_labels, config.dropout)
        if head is not None:
            model.head.load_state_dict(head)
        model.to(device)
        params = list(model.parameters())
        optimizer = torch.optim.AdamW(
            [
                {"params": [p for p in params if p.dim() >= 2], "weight_decay": config.weight_decay},
                {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
            ],
            lr=lr,
            fused=True,
        )
        n = len(train.labels)
        per_epoch = math.ceil(n / config.batch_size)
        steps = per_epoch * config.epochs
        warmup = max(1, round(config.warmup_fraction * steps))
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: (s + 1) / warmup if s < warmup else max(0.0, (steps - s) / max(1, steps - warmup))
        )
        generator = torch.Generator().manual_seed(config.seed)
        bar = progress_bar(steps, f"fine-tune lr {lr:g}", "step", enabled=progress, tty_only=True)
        losses: list[float] = []
        model.train()
        for epoch in range(config.epochs):
            order = torch.randperm(n, generator=generator)
            losses = []
            for lo in range(0, n, config.batch_size):
                batch = order[lo : lo + config.batch_size]
                ids, mask, types = _trimmed(train, batch, device)
                with autocast(precision, device):
                    logits = model(ids, mask, types)
                loss = nn.functional.cross_entropy(logits.float(), train.labels[batch].to(device))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
                optimizer.step()
                schedule.step()
                losses.append(float(loss.detach()))
                bar.update(1)
        bar.close()
        predicted = _predict(model, dev, config.batch_size * 2, precision, device)
    accuracy, macro_f1 = classification_scores(predicted, dev.labels, num_labels)
    train_loss = sum(losses) / len(losses) if losses else float("nan")
    return LrResult(lr=lr, accuracy=accuracy, macro_f1=macro_f1, train_loss=train_loss)


def _on(encoder: Encoder, device: torch.device) -> Encoder:
    """The encoder itself when it is on ``device`` already, else a copy there (the caller's stays put)."""
    return encoder if next(encoder.parameters()).device == device else copy.deepcopy(encoder).to(device)


@torch.no_grad()
def _predict(model: Classifier, data: Encoded, batch_size: int, precision: str, device: torch.device) -> torch.Tensor:
    model.eval()
    out = []
    for lo in range(0, len(data.labels), batch_size):
        with autocast(precision, device):
            logits = model(*_trimmed(data, torch.arange(lo, min(lo + batch_size, len(data.labels))), device))
        out.append(logits.float().argmax(-1).cpu())
    return torch.cat(out)


def _trimmed(data: Encoded, index: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A batch cut to its longest example, on ``device``: glosses are short, so most of a fixed window is padding."""
    mask = data.mask[index]
    length = max(1, int(mask.sum(1).max()))
    return tuple(t.to(device) for t in (data.ids[index, :length], mask[:, :length], data.token_types[index, :length]))


def classification_scores(predicted: torch.Tensor, labels: torch.Tensor, num_labels: int) -> tuple[float, float]:
    """Accuracy and macro-F1 (mean over the labels present in ``labels`` or ``predicted``)."""
    accuracy = float((predicted == labels).float().mean())
    f1s = []
    for c in range(num_labels):
        tp = int(((predicted == c) & (labels == c)).sum())
        fp = int(((predicted == c) & (labels != c)).sum())
        fn = int(((predicted != c) & (labels == c)).sum())
        if tp + fp + fn:
            f1s.append(2 * tp / (2 * tp + fp + fn))
    return accuracy, sum(f1s) / len(f1s) if f1s else 0.0
