"""One short distillation run: the quality score of a candidate architecture.

    result = distill(arch, DistillConfig(steps=120, seed=0), on_checkpoint=report)

builds the student from the genome, trains it for ``steps`` AdamW steps (linear warm-up, linear
decay, gradient clipping) against the teacher's hidden states, attention maps and sentence
embeddings, and evaluates the held-out split at ``num_checkpoints`` evenly spaced steps. Each
checkpoint goes to ``on_checkpoint``; returning True stops the run (status "pruned", as a search's
ASHA scheduler prunes). A NaN or a blow-up ends the run with status "diverged"; bad input
(teacher, corpus, genome vocabulary) raises DistillError before any training.

Same genome, teacher, corpus, seed, steps, precision, thread count and hardware: the same numbers,
bit for bit on a CPU. On CUDA some backward kernels add with atomics (docs/distill.md).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from nas.arch import ArchConfig
from nas.distill.config import BEFORE_ADDED, DistillConfig, DistillError
from nas.distill.data import DistillData, TargetStore, mean_pool, prepare_data
from nas.distill.losses import LinearReadout, LossWeights, Projections, distillation_losses, layer_mapping
from nas.distill.quality import lp_score, probe_score
from nas.distill.teacher import Teacher, load_teacher
from nas.model import Encoder, EncoderOutput, build_model
from nas.precision import autocast, device_model
from nas.progress import progress_bar

EVAL_BATCH = 32
PROJECTION_FIT_BATCHES = 4


@dataclass(frozen=True)
class Checkpoint:
    """The held-out evaluation after ``step`` of ``steps`` training steps.

    ``score`` is the quality signal the run was configured to read (``DistillConfig.score``):
    ``cosine``, the mean cosine similarity in [-1, 1] between the student's projected, mean-pooled
    sentence embedding and the teacher's on the held-out windows (1 = the teacher's embedding
    exactly), or ``lp`` / ``probe``, the accuracy in [0, 1] of a linear probe of the student's
    features on the embedded downstream task (``nas.distill.quality``), plus ``params_weight * ln(parameters /
    1M)`` when the config sets that weight. ``cosine`` is always reported, ``probe`` when it was
    computed. ``heldout_loss`` is the weighted distillation loss there (lower is better).
    """

    index: int  # 1-based: Ray Tune's training_iteration
    step: int
    steps: int
    heldout_loss: float
    score: float
    cosine: float
    probe: float | None
    feature_loss: float
    attention_loss: float
    output_loss: float
    train_loss: float  # mean training loss over the steps since the previous checkpoint
    tokens_seen: int  # real (non-padding) training tokens so far
    elapsed_s: float  # wall time since the run began, evaluation and teacher targets included
    train_s: float  # student forward, backward and optimizer steps only

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DistillResult:
    """How a run ended, its checkpoints, and the trained student when it finished (status "ok")."""

    status: str  # "ok" | "diverged" | "pruned": nas.statuses.DISTILL_STATUSES, the search's vocabulary
    reason: str
    arch: ArchConfig
    config: DistillConfig
    checkpoints: list[Checkpoint]
    score: float | None  # the last checkpoint's score; None when no checkpoint was reached
    heldout_loss: float | None
    baseline_score: float | None  # held-out score of the best constant embedding, for scale
    params: int
    teacher: dict[str, Any]
    data: dict[str, Any]
    tokens_seen: int
    train_s: float
    elapsed_s: float
    precision: str = "fp32"  # what the run trained in: "fp32" or "bf16" (autocast)
    hardware: str = ""  # the model of the CPU or GPU it ran on
    device: str = "cpu"  # the torch device it ran on: "cpu" or "cuda:N"
    student: Encoder | None = field(default=None, repr=False)
    snapshots: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict, repr=False)  # step -> weights
    projections: Projections | None = field(default=None, repr=False)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens_seen / self.train_s if self.train_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Everything but the weights, as JSON-able data."""
        return {
            "status": self.status,
            "reason": self.reason,
            "arch_id": self.arch.id,
            "arch": self.arch.to_dict(),
            "config": self.config.to_dict(),
            "score": self.score,
            "heldout_loss": self.heldout_loss,
            "baseline_score": self.baseline_score,
            "params": self.params,
            "teacher": self.teacher,
            "data": self.data,
            "tokens_seen": self.tokens_seen,
            "tokens_per_s": self.tokens_per_s,
            "train_s": self.train_s,
            "elapsed_s": self.elapsed_s,
            "precision": self.precision,
            "device": self.device,
            "hardware": self.hardware,
            "checkpoints": [c.to_dict() for c in self.checkpoints],
        }


def distill(
    arch: ArchConfig,
    config: DistillConfig | None = None,
    on_checkpoint: Callable[[Checkpoint], bool | None] | None = None,
    *,
    progress: bool = False,
    snapshot_steps: tuple[int, ...] = (),
) -> DistillResult:
    """Distil the teacher into the genome ``arch`` for ``config.steps`` steps and score it.

    ``on_checkpoint`` is called with each Checkpoint; if it returns True the run stops early.
    ``snapshot_steps``: checkpoint steps at which a copy of the student's weights is kept in
    ``result.snapshots`` (learning curves and half-budget comparisons without a second run).
    Raises DistillError for bad input before training; never raises for a diverging run.
    """
    config = config or DistillConfig()
    if not isinstance(arch, ArchConfig):
        raise DistillError(f"distill: expected an ArchConfig genome, got {type(arch).__name__}")
    start = time.perf_counter()
    device, precision = config.resolved_hardware  # no such device: a DistillError before anything loads
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(config.resolved_threads)
    try:
        teacher = load_teacher(config.teacher, config.resolved_cache_dir)
        check_compatible(arch, teacher, config)
        data = prepare_data(config, teacher, device)

        def attempt(run_config: DistillConfig, report) -> DistillResult:
            if run_config.repeats == 1:
                return _Run(arch, run_config, teacher, data, report, progress, start, snapshot_steps, device, precision).train()
            return _repeated(arch, run_config, teacher, data, report, progress, start, snapshot_steps, device, precision)

        return _retrying(attempt, config, on_checkpoint, start)
    finally:
        torch.set_num_threads(previous_threads)


def _retrying(attempt, config: DistillConfig, on_checkpoint, start: float) -> DistillResult:
    """``attempt(config, report)``, and while it diverges, again from the start at half the peak
    rate (``config.divergence_retries`` times at most). The result's config holds the rate that
    trained and its reason names the rates that diverged. A retry's checkpoints reach
    ``on_checkpoint`` only past the last step it saw: a search's clock (ASHA's) never runs back,
    and a rung the diverged run passed is not judged twice."""
    seen = [0]

    def report(point: Checkpoint) -> bool | None:
        if point.step <= seen[0]:
            return None
        seen[0] = point.step
        return on_checkpoint(point)

    results: list[DistillResult] = []
    lr = config.lr
    while True:
        result = attempt(config.replace(lr=lr), report if on_checkpoint is not None else None)
        results.append(result)
        if result.status != "diverged" or len(results) > config.divergence_retries:
            break
        lr /= 2
    if len(results) == 1:
        return result
    failed = "; ".join(f"at lr {r.config.lr:g}: {r.reason}" for r in results if r.status == "diverged")
    reason = f"{result.reason} at lr {lr:g}, retried after divergence ({failed})" if result.status != "diverged" else f"each rate tried diverged: {failed}"
    return dataclasses.replace(result, reason=reason, tokens_seen=sum(r.tokens_seen for r in results),
                               train_s=sum(r.train_s for r in results), elapsed_s=time.perf_counter() - start)


def _repeated(arch, config: DistillConfig, teacher, data, on_checkpoint, progress, start, snapshot_steps, device, precision) -> DistillResult:
    """``config.repeats`` independent runs (seeds seed, seed + 1, ...) on the same windows and
    teacher targets, pooled: each checkpoint reports the mean of the finished runs' final scores and
    the current run's score, on one clock over all runs; the result's score is the mean of the
    final scores, its student the first run's (seed ``config.seed``)."""
    results: list[DistillResult] = []
    pooled: list[Checkpoint] = []
    stop = [False]  # the callback asked to stop at a run's last checkpoint: no further run starts

    def relay(repeat: int):
        def pool(checkpoint: Checkpoint) -> bool | None:
            point = _pooled(checkpoint, repeat, config, [r.checkpoints[-1] for r in results], len(pooled))
            pooled.append(point)
            stop[0] = on_checkpoint is not None and on_checkpoint(point) is True
            return stop[0]

        return pool

    for repeat in range(config.repeats):
        single = config.replace(seed=config.seed + repeat, repeats=1)
        result = _Run(arch, single, teacher, data, relay(repeat), progress, start, snapshot_steps if repeat == 0 else (),
                      device, precision).train()
        results.append(result)
        if result.status != "ok" or stop[0]:
            break
    first, last = results[0], results[-1]
    if last.status != "ok":  # diverged, or pruned inside a run
        status, reason = last.status, f"{last.reason} (run {len(results)} of {config.repeats}, seed {config.seed + len(results) - 1})"
    elif len(results) < config.repeats:  # stopped by the callback at a run's end
        status, reason = "pruned", f"stopped by the callback after checkpoint {pooled[-1].index} (step {pooled[-1].step} of {pooled[-1].steps})"
    else:
        status, reason = "ok", f"mean of {config.repeats} runs of {config.steps} steps (seeds {config.seed}-{config.seed + config.repeats - 1})"
    done = status == "ok"
    return dataclasses.replace(
        first,
        status=status,
        reason=reason,
        config=config,
        checkpoints=pooled,
        score=pooled[-1].score if pooled and status != "diverged" else None,
        heldout_loss=pooled[-1].heldout_loss if pooled and status != "diverged" else None,
        tokens_seen=sum(r.tokens_seen for r in results),
        train_s=sum(r.train_s for r in results),
        elapsed_s=time.perf_counter() - start,
        student=first.student if done else None,
        snapshots=first.snapshots if done else {},
        projections=first.projections if done else None,
    )


def _pooled(checkpoint: Checkpoint, repeat: int, config: DistillConfig, finals: list[Checkpoint], index: int) -> Checkpoint:
    """A checkpoint of repeat ``repeat`` as the pooled run reports it: the mean over the finished
    runs' last checkpoints and this one, at its step counted over all repeats."""
    def mean(name: str) -> float | None:
        values = [getattr(c, name) for c in (*finals, checkpoint)]
        return None if any(v is None for v in values) else sum(values) / len(values)

    return dataclasses.replace(
        checkpoint,
        index=index + 1,
        step=repeat * config.steps + checkpoint.step,
        steps=config.repeats * config.steps,
        heldout_loss=mean("heldout_loss"),
        score=mean("score"),
        cosine=mean("cosine"),
        probe=mean("probe"),
        tokens_seen=sum(c.tokens_seen for c in finals) + checkpoint.tokens_seen,
        train_s=sum(c.train_s for c in finals) + checkpoint.train_s,
    )  # elapsed_s: each run's clock already starts with the pooled run


def check_compatible(arch: ArchConfig, teacher: Teacher, config: DistillConfig) -> None:
    """Raise DistillError if this genome cannot be distilled from this teacher at this window length."""
    if arch.vocab_size != teacher.vocab_size:
        raise DistillError(
            f"genome {arch.id}: vocab_size {arch.vocab_size} does not match the teacher's tokenizer "
            f"({teacher.name}: {teacher.vocab_size} tokens); set vocab_size to {teacher.vocab_size}"
        )
    if arch.max_position_embeddings < config.seq_len:
        raise DistillError(
            f"genome {arch.id}: max_position_embeddings {arch.max_position_embeddings} is below seq_len "
            f"{config.seq_len}; lower --seq-len"
        )
    if teacher.max_positions < config.seq_len:
        raise DistillError(f"teacher {teacher.name}: takes at most {teacher.max_positions} tokens; lower --seq-len")
    check_fits_in_memory(arch)


# Bytes per parameter while training: fp32 weights, gradients and AdamW's two moments.
TRAINING_BYTES_PER_PARAM = 16


def check_fits_in_memory(arch: ArchConfig) -> None:
    """DistillError when training `arch` needs more memory than this machine has (its exact
    parameter count, no allocation tried): a typo such as a 1e12 width fails in one line."""
    from nas.graph import count

    need = count(arch, seq_len=min(128, arch.max_position_embeddings)).params * TRAINING_BYTES_PER_PARAM
    have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if need > have:
        raise DistillError(
            f"genome {arch.id}: training it needs about {need / 2**30:,.0f} GiB for weights, gradients and "
            f"optimizer state; this machine has {have / 2**30:,.0f} GiB (check its widths: hidden_size {arch.hidden_size}, "
            f"intermediate_size {arch.intermediate_size})"
        )


class _Diverged(Exception):
    pass


class _Run:
    """The state of one run; ``train`` drives it to a DistillResult."""

    def __init__(self, arch, config: DistillConfig, teacher: Teacher, data: DistillData, on_checkpoint, progress, start,
                 snapshot_steps=(), device: torch.device = torch.device("cpu"), precision: str = "fp32"):
        self.arch, self.config, self.teacher, self.data = arch, config, teacher, data
        self.on_checkpoint, self.progress, self.start = on_checkpoint, progress, start
        self.mapping = layer_mapping(arch.num_layers, teacher.num_layers)
        self.per_head = arch.num_attention_heads == teacher.num_heads
        self.weights = LossWeights(config.feature_weight, config.attention_weight, config.output_weight)
        # Attention maps need the eager path; without attention transfer SDPA trains faster.
        implementation = "eager" if config.attention_weight else "sdpa"
        with torch.random.fork_rng(devices=[]):  # seed the student without touching the caller's RNG
            torch.manual_seed(config.seed)
            self.student = build_model(arch, attention_implementation=implementation, dropout=0.0)
            self.projections = Projections(arch.hidden_size, teacher.hidden_size)
        if config.init_embeddings == "teacher":
            _init_word_embeddings(self.student, teacher)
        # initialised on the CPU (the same numbers on every device), trained on the run's device;
        # the master weights and AdamW's state stay fp32 whatever the precision
        self.device, self.precision = device, precision
        self.student.to(device)
        self.projections.to(device)
        self.readout = LinearReadout(arch.hidden_size, teacher.hidden_size)
        self.params = sum(p.numel() for p in self.student.parameters())
        self.checkpoints: list[Checkpoint] = []
        self.tokens_seen, self.train_s = 0, 0.0
        self.snapshot_steps = set(snapshot_steps)
        self.snapshots: dict[int, dict[str, torch.Tensor]] = {}

    # ---- training ---------------------------------------------------------------------------

    def train(self) -> DistillResult:
        config = self.config
        trainable = [p for m in (self.student, self.projections) for p in m.parameters()]
        optimizer = torch.optim.AdamW(
            [
                # BERT's practice: no weight decay on biases and norm weights
                {"params": [p for p in trainable if p.dim() >= 2], "weight_decay": config.weight_decay},
                {"params": [p for p in trainable if p.dim() < 2], "weight_decay": 0.0},
            ],
            lr=config.lr,
            fused=True,  # one kernel per step on CPU: 3x faster than the per-tensor loop here
        )
        warmup, steps, length = config.warmup_steps, config.steps, config.schedule_length
        schedule = torch.optim.lr_scheduler.LambdaLR(  # linear warm-up, then linear decay to zero at the schedule's end
            optimizer, lambda s: (s + 1) / warmup if s < warmup else max(0.0, (length - s) / max(1, length - warmup))
        )
        # A run trains on the first steps x batch_size windows of the (already shuffled) pool, in a
        # seeded order: a short run reads each window once, and only those need teacher targets.
        used = min(len(self.data.windows.train_ids), steps * config.batch_size)
        order = _batches(used, config.batch_size, config.seed)
        self._fit_projections(order)
        order = _batches(used, config.batch_size, config.seed)  # the fit only looked; training starts afresh
        checkpoint_steps = set(config.checkpoint_steps)
        first_checkpoint = min(checkpoint_steps)
        early_loss, smoothed, window_losses = 0.0, None, []
        status, reason = "ok", f"trained {steps} steps"
        bar = progress_bar(steps, "distill", "step", enabled=self.progress, tty_only=True)
        self.student.train()
        try:
            for step in range(1, steps + 1):
                index = next(order)
                ids, mask = self._window(self.data.train, index)
                targets = self.data.train.batch(index, self.per_head)
                began = time.perf_counter()
                out = self._forward(ids, mask)
                loss = distillation_losses(out, targets, mask, self.mapping, self.projections, self.weights).total
                self.readout.add(out.last_hidden_state, targets.hidden_states[-1], mask)
                value = float(loss.detach())
                if not math.isfinite(value):
                    raise _Diverged(f"training loss became {value} at step {step} (lr {config.lr:g}); try a lower lr")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = float(torch.nn.utils.clip_grad_norm_(trainable, config.max_grad_norm))
                if not math.isfinite(grad_norm):
                    raise _Diverged(f"gradient norm became {grad_norm} at step {step} (lr {config.lr:g}); try a lower lr")
                optimizer.step()
                schedule.step()
                self.train_s += time.perf_counter() - began
                self.tokens_seen += int(mask.sum())
                window_losses.append(value)
                smoothed = value if smoothed is None else 0.9 * smoothed + 0.1 * value
                # The reference is the highest loss before the first checkpoint, not the first loss:
                # with projections fit by least squares the first loss can be near 0, and Adam's first
                # full-size steps raise it before it falls.
                if step <= first_checkpoint:
                    early_loss = max(early_loss, value)
                elif config.divergence_factor is not None and smoothed > config.divergence_factor * early_loss:
                    raise _Diverged(
                        f"training loss rose to {smoothed:.4g} (smoothed) by step {step}, over "
                        f"{config.divergence_factor:g}x its highest value before the first checkpoint "
                        f"({early_loss:.4g}); try a lower lr"
                    )
                bar.update(1)
                bar.set_postfix(loss=f"{value:.4f}", refresh=False)
                if step in checkpoint_steps:
                    checkpoint = self._checkpoint(step, sum(window_losses) / len(window_losses))
                    if step in self.snapshot_steps:
                        self.snapshots[step] = {k: v.detach().clone() for k, v in self.student.state_dict().items()}
                    window_losses = []
                    if self.on_checkpoint is not None and self.on_checkpoint(checkpoint) is True and step < steps:
                        status = "pruned"
                        reason = f"stopped by the callback after checkpoint {checkpoint.index} (step {step} of {steps})"
                        break
                    self.student.train()
        except _Diverged as err:
            status, reason = "diverged", str(err)
        finally:
            bar.close()
        self.student.eval()
        last = self.checkpoints[-1] if self.checkpoints else None
        done = status == "ok"
        return DistillResult(
            status=status,
            reason=reason,
            arch=self.arch,
            config=config,
            checkpoints=list(self.checkpoints),
            score=last.score if last and status != "diverged" else None,
            heldout_loss=last.heldout_loss if last and status != "diverged" else None,
            baseline_score=self.data.baseline_score,
            params=self.params,
            teacher=self.teacher.describe(),
            data=self.data.describe(),
            tokens_seen=self.tokens_seen,
            train_s=self.train_s,
            elapsed_s=time.perf_counter() - self.start,
            precision=self.precision,
            hardware=device_model(self.device),
            device=str(self.device),
            student=self.student if done else None,
            snapshots=self.snapshots if done else {},
            projections=self.projections if done else None,
        )

    @torch.no_grad()
    def _fit_projections(self, order, batches: int = PROJECTION_FIT_BATCHES) -> None:
        """Start the width projections at the least-squares fit of the student's initial states.

        Random projections would pull the student's states toward arbitrary directions in the first
        steps and undo the teacher's embeddings it starts from (the "feature distortion" of
        Kumar et al., 2022, whose fix, LP-FT, fits the head before fine-tuning). A forward pass
        over the first few training batches and two least-squares solves cost about one step.
        """
        if isinstance(self.projections.hidden, torch.nn.Identity):
            return
        teacher_width, student_width = self.teacher.hidden_size, self.arch.hidden_size
        embedding_fit, hidden_fit = LinearReadout(student_width, teacher_width), LinearReadout(student_width, teacher_width)
        for _ in range(batches):
            index = next(order)
            ids, mask = self._window(self.data.train, index)
            out = self._forward(ids, mask, hidden=True)
            targets = self.data.train.batch(index, self.per_head)
            embedding_fit.add(out.hidden_states[0], targets.hidden_states[0], mask)
            for s, t in self.mapping:
                hidden_fit.add(out.hidden_states[s], targets.hidden_states[t], mask)
        for linear, fit in ((self.projections.embedding, embedding_fit), (self.projections.hidden, hidden_fit)):
            weights = fit.solve().float()  # (Hs + 1, Ht)
            linear.weight.copy_(weights[:-1].T)
            linear.bias.copy_(weights[-1])

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor, *, hidden: bool | None = None) -> EncoderOutput:
        """The student's outputs, computed under the run's precision and handed on in fp32."""
        with autocast(self.precision, self.device):
            out = self.student(
                ids,
                attention_mask=mask,
                output_hidden_states=bool(self.weights.feature) if hidden is None else hidden,
                output_attentions=bool(self.weights.attention) and hidden is None,
            )
        if self.precision == "fp32":
            return out
        return EncoderOutput(
            last_hidden_state=out.last_hidden_state.float(),
            pooler_output=out.pooler_output.float(),
            hidden_states=tuple(h.float() for h in out.hidden_states),
            attentions=tuple(a.float() for a in out.attentions),
        )

    def _window(self, store: TargetStore, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return store.ids[index].long().to(self.device), store.mask[index].long().to(self.device)

    # ---- evaluation -------------------------------------------------------------------------

    @torch.no_grad()
    def _checkpoint(self, step: int, train_loss: float) -> Checkpoint:
        self.student.eval()
        store = self.data.heldout
        n = len(store.ids)
        # The read-out is fit on the training tokens seen since the previous checkpoint: recent
        # enough to match the current weights, many enough (thousands) for the least squares.
        try:
            readout = self.readout.solve()
        except RuntimeError as err:  # non-finite or overflowing states: the run has blown up
            detail = str(err).splitlines()[0]
            raise _Diverged(f"the student's states overflowed by step {step} ({detail}); try a lower lr") from None
        self.readout.reset()
        sums = {"total": 0.0, "feature": 0.0, "attention": 0.0, "output": 0.0, "cosine": 0.0}
        for lo in range(0, n, EVAL_BATCH):
            index = torch.arange(lo, min(n, lo + EVAL_BATCH))
            ids, mask = self._window(store, index)
            out, targets = self._forward(ids, mask), store.batch(index, self.per_head)
            losses = distillation_losses(out, targets, mask, self.mapping, self.projections, self.weights)
            for name in ("total", "feature", "attention", "output"):
                sums[name] += float(getattr(losses, name)) * len(index)
            predicted = LinearReadout.apply(readout, mean_pool(out.last_hidden_state, mask))
            sums["cosine"] += float(torch.nn.functional.cosine_similarity(predicted, targets.embedding, dim=-1).sum())
        if self.data.baseline_score is None:
            self.data.baseline_score = _constant_baseline(store)
        means = {name: value / n for name, value in sums.items()}
        probe = self._probe()
        if not all(math.isfinite(v) for v in means.values()):
            raise _Diverged(f"held-out loss became {means['total']} at step {step}; try a lower lr")
        checkpoint = Checkpoint(
            index=len(self.checkpoints) + 1,
            step=step,
            steps=self.config.steps,
            heldout_loss=means["total"],
            score=self.config.scored(means["cosine"] if probe is None else probe, self.params),
            cosine=means["cosine"],
            probe=probe,
            feature_loss=means["feature"],
            attention_loss=means["attention"],
            output_loss=means["output"],
            train_loss=train_loss,
            tokens_seen=self.tokens_seen,
            elapsed_s=time.perf_counter() - self.start,
            train_s=self.train_s,
        )
        self.checkpoints.append(checkpoint)
        return checkpoint

    def _probe(self) -> float | None:
        """The downstream read-out the config asks for instead of the cosine (None: the cosine)."""
        if self.config.score == "lp":
            return lp_score(self.student, self.teacher.tokenizer, self.precision, self.device, self.config.lp_examples,
                            self.config.lp_crossfit)
        if self.config.score == "probe":
            return probe_score(self.student, self.teacher.tokenizer)
        return None


@torch.no_grad()
def _init_word_embeddings(student: Encoder, teacher: Teacher) -> None:
    """Start the student's token vectors as the teacher's, in their top principal components.

    From random token vectors a short run learns little beyond the mean embedding; starting from
    the teacher's lets it spend its steps on what the architecture does with them. Columns beyond
    the teacher's width keep their random init.
    """
    table = student.embeddings.word_embeddings.weight  # (vocab, E)
    pca = teacher.word_embedding_pca(table.shape[1])
    table[:, : pca.shape[1]] = pca


def _batches(n: int, batch_size: int, seed: int):
    """Endless batches of training-window indices: a fresh seeded permutation each epoch."""
    generator = torch.Generator().manual_seed(seed)
    pending = torch.empty(0, dtype=torch.long)
    while True:
        while len(pending) < batch_size:
            pending = torch.cat([pending, torch.randperm(n, generator=generator)])
        yield pending[:batch_size]
        pending = pending[batch_size:]


def _constant_baseline(store: TargetStore) -> float:
    """The held-out score of the best single constant embedding (the mean unit teacher embedding)."""
    embeddings = store.batch(torch.arange(len(store.ids)), per_head=False).embedding
    unit = torch.nn.functional.normalize(embeddings, dim=-1)
    direction = torch.nn.functional.normalize(unit.mean(dim=0), dim=0)
    return float((unit @ direction).mean())




def cached_score(arch: ArchConfig, config: DistillConfig) -> dict[str, Any]:
    """The outcome of ``distill(arch, config)`` without the weights, computed once per genome and settings.

    Kept as JSON in ``<cache>/quality/`` under the genome's id and a hash of the settings that decide
    the numbers (not threads, the device or the cache folder), so ``nas reproduce --quality`` and ``nas report``
    place the reference designs on the quality axis without distilling them again.
    """
    # Settings added after the key was fixed are left out of it at the value that reproduces what
    # came before (BEFORE_ADDED), so a library upgrade that adds one keeps every cached score.
    # The retries decide nothing but a run that diverges: a diverged record is computed again when
    # the settings allow more retries than it had.
    decisive = {k: v for k, v in config.to_dict().items()
                if k not in ("threads", "device", "cache_dir", "divergence_retries") and BEFORE_ADDED.get(k, BEFORE_ADDED) != v}
    digest = hashlib.sha256(json.dumps(decisive, sort_keys=True).encode()).hexdigest()[:12]
    path = Path(config.resolved_cache_dir) / "quality" / f"{arch.id}-{digest}.json"
    try:
        cached = json.loads(path.read_text())
        if cached.get("status") != "diverged" or cached.get("divergence_retries", 0) >= config.divergence_retries:
            return cached
    except (OSError, ValueError, AttributeError):
        pass  # not cached yet, or unreadable: compute it again
    result = distill(arch, config)
    last = result.checkpoints[-1] if result.checkpoints else None
    record = {
        "arch_id": arch.id, "status": result.status, "score": result.score,
        "cosine": last.cosine if last else None, "probe": last.probe if last else None,
        "heldout_loss": result.heldout_loss, "params": result.params,
        "seconds": round(result.elapsed_s, 1), "precision": result.precision,
        "device": result.device, "hardware": result.hardware, "settings": decisive,
        "lr": result.config.lr, "divergence_retries": config.divergence_retries,
    }  # fmt: skip
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(record, indent=2) + "\n")
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache only costs a recomputation next time
    return record
