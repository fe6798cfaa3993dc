"""The settings of one short distillation run: plain data that round-trips to JSON."""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, fields
from typing import Any

from nas.errors import NasError, check_fields
from nas.precision import DEVICE_FORMS, PRECISIONS, check_device, resolve_run


INIT_EMBEDDINGS = ("teacher", "random")
SCORES = ("cosine", "lp", "probe")
LP_EXAMPLES_RANGE = (500, 40000)  # the lp read-out's glosses per side: enough for 45 classes; the training split holds 8,000 + 2 x 40,000


# Settings added after results began to be kept (pinned searches, cached reference scores, bench
# CSVs), each at the value that reproduces what ran before it existed. One table for all three.
BEFORE_ADDED: dict[str, Any] = {"repeats": 1, "params_weight": 0.0, "stop_fraction": 1.0, "lp_examples": 4000,
                                "divergence_retries": 0, "lp_crossfit": False}
MAX_DIVERGENCE_RETRIES = 3


class DistillError(NasError):
    """Bad distillation input (teacher, corpus, genome, settings); raised before any training."""


@dataclass(frozen=True)
class DistillConfig:
    """How to distil a candidate. The defaults are the *default run*, the shipped quality signal:
    320 steps at peak lr 2e-3 (linear warm-up and decay to zero), then the lp read-out
    (``score="lp"``, ``nas.distill.quality``): linear heads fit on the student's pooled features of
    8,000 labelled WordNet glosses and read on 8,000 more, and the other way round
    (``lp_crossfit``, session 16), for their supersense and their part of speech, the mean of the
    accuracies. Against the ground truth (the same kind of head on 8,000 other glosses after
    640-step distillations, four to six runs per genome) it ranks the 80 genomes measured (1-34M
    parameters) with Kendall tau 0.82 (0.77 above 10M) at seed 7; read one way only, one run
    averaged 0.78 (0.73) over four seeds, and cross-fitting added 0.006 and 0.010 at the two seeds
    it was measured at. The 8 drawn to test the run got 0.93; the 240-step run read on 4,000 + 4,000
    glosses that it replaced in session 12 got 0.68 (0.58) over 75 and 0.86 (docs/quality.md).
    ``search()`` is the same with one checkpoint;
    ``quick()`` is a cheap smoke-test preset (the cosine) whose score is not a quality signal.

    ``teacher=None`` is the embedded all-MiniLM-L6-v2; ``data=None`` the embedded corpus (the Python
    reference manual from ``pydoc_data.topics``); ``threads=None`` the CPUs this process may use.
    Loss weights: feature-map transfer (hidden-state MSE), attention transfer (KL of attention
    distributions) and output distillation (1 - cosine of the pooled sentence embeddings).
    """

    steps: int = 320  # 240 in sessions 8-11 (read on 4,000 + 4,000 glosses in session 11)
    # The fraction of its learning-rate schedule the run trains: warm-up and linear decay are laid
    # out over steps / stop_fraction steps and the run stops after ``steps``, the rate still up (a
    # run cut short, as an ASHA rung is). 1: the rate decays to zero at ``steps``.
    stop_fraction: float = 1.0
    seed: int = 0
    repeats: int = 1  # independent runs (seeds seed, seed+1, ...) of `steps` each; the score is their mean
    teacher: str | None = None
    data: str | None = None
    text_column: str = "text"
    threads: int | None = None
    seq_len: int = 32
    batch_size: int = 8
    lr: float = 2e-3  # 1e-3 in session 7; with the parameter term below, 2e-3 ranks better (docs/quality.md)
    warmup_fraction: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    init_embeddings: str = "teacher"  # "teacher": word embeddings start as the teacher's (PCA); or "random"
    feature_weight: float = 1.0
    attention_weight: float = 1.0
    output_weight: float = 1.0
    num_checkpoints: int = 2
    heldout_examples: int = 64
    train_examples: int | None = None  # cap on the training pool (None: every window not held out)
    divergence_factor: float | None = 10.0  # smoothed training loss above this x its maximum before the first checkpoint
    # A run that diverges (NaN, or the blow-up above) trains again from the start at half the peak
    # rate, this many times at most, as the ground truth's runs do: a search keeps the candidate
    # instead of failing it. It costs time only where a run diverges. 0: the diverged run is the result.
    divergence_retries: int = 1
    cache_dir: str | None = None  # tokenized corpora and datasets; None: $NAS_CACHE_DIR or ~/.cache/nas
    # the checkpoint score: "cosine" (teacher embedding), "lp" (the ground truth's linear heads on
    # 4,000 glosses) or "probe" (the ridge probe of sessions 1-2); nas.distill.quality
    score: str = "lp"  # session 11; "cosine" with params_weight 0.05 in sessions 8-10
    lp_examples: int = 8000  # score="lp": the heads are fit on this many glosses and read on as many more (4,000 in session 11)
    # score="lp": also fit heads on the second half and read them on the first, and score the mean of
    # both readings: every gloss read once, two fits averaged, for one more pair of head fits (session 16)
    lp_crossfit: bool = True
    # A training-free term added to every checkpoint's score: params_weight * ln(parameters / 1M).
    # 0 reads the score alone (the default since session 11). With the cosine, 0.05 weighs the term
    # as much as the cosine's spread over the ground truth's 22 genomes (sessions 8-10; docs/quality.md).
    params_weight: float = 0.0
    precision: str = "auto"  # "auto" (bf16 where the CPU has AVX512-BF16/AMX or the GPU has bf16), "fp32" or "bf16" autocast
    device: str = "auto"  # "auto" (the first CUDA device torch sees, else the CPU), "cpu", "cuda" or "cuda:N"

    def __post_init__(self) -> None:
        self._validate()

    @classmethod
    def quick(cls, **changes: Any) -> "DistillConfig":
        """The cheap preset for tests and smoke runs (about 1 s for a tiny genome): 40 steps, teacher cosine.

        Not a quality signal: against the ground truth its ranking has Kendall tau 0.36-0.47 (docs/quality.md).
        """
        base = {"steps": 40, "seq_len": 32, "batch_size": 8, "heldout_examples": 32, "num_checkpoints": 2, "score": "cosine"}
        return cls(**(base | changes))

    @classmethod
    def search(cls, **changes: Any) -> "DistillConfig":
        """The search's preset: the default run scored once, at its end (so no ASHA rung: early rungs
        of these runs stop the genomes that rank best at the end; docs/quality.md)."""
        return cls(**({"num_checkpoints": 1} | changes))

    def replace(self, **changes: Any) -> "DistillConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "distill config") -> "DistillConfig":
        check_fields(data, cls, source, DistillError)
        return cls(**data)

    @property
    def resolved_threads(self) -> int:
        """torch threads for the run: ``threads``, else $OMP_NUM_THREADS (set by Ray per trial), else the
        CPUs this process may run on."""
        if self.threads is not None:
            return self.threads
        env = os.environ.get("OMP_NUM_THREADS", "")
        if env.isdigit() and int(env) > 0:
            return int(env)
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)

    @property
    def resolved_hardware(self) -> tuple["torch.device", str]:  # noqa: F821
        """(device, precision) for this machine; a DistillError naming the setting when it has no such device."""
        try:
            return resolve_run(self.device, self.precision)
        except ValueError as err:
            raise DistillError(f"distill setting {err}") from None

    @property
    def resolved_cache_dir(self) -> str:
        return self.cache_dir or os.environ.get("NAS_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "nas")

    @property
    def checkpoint_steps(self) -> list[int]:
        """The steps after which the held-out split is evaluated (evenly spaced, the last one = steps)."""
        n = min(self.num_checkpoints, self.steps)
        return sorted({max(1, round(k * self.steps / n)) for k in range(1, n + 1)})

    @property
    def reported_steps(self) -> list[int]:
        """The steps, counted over all repeats, at which a checkpoint reaches ``on_checkpoint``: a
        search's ASHA clock (the checkpoints of repeat r sit at r * steps + its checkpoint steps)."""
        return [r * self.steps + step for r in range(self.repeats) for step in self.checkpoint_steps]

    def scored(self, readout: float, params: int) -> float:
        """A checkpoint's score: the read-out (cosine, lp or probe) plus ``params_weight * ln(params / 1M)``."""
        return readout + self.params_weight * math.log(params / 1e6) if self.params_weight else readout

    @property
    def params_term(self) -> str:
        """The parameter term as summaries name it ("0.05 ln(params / 1M)"), or "" when it is off."""
        return f"{self.params_weight:g} ln(params / 1M)" if self.params_weight else ""

    @property
    def schedule_length(self) -> int:
        """The steps the learning-rate schedule is laid out over: ``steps / stop_fraction``."""
        return max(self.steps, round(self.steps / self.stop_fraction))

    @property
    def warmup_steps(self) -> int:
        return min(self.schedule_length, max(1, round(self.warmup_fraction * self.schedule_length)))

    # ---- validation -------------------------------------------------------------------------

    def _validate(self) -> None:
        def fail(name: str, reason: str) -> DistillError:
            return DistillError(f"distill setting {name}={getattr(self, name)!r}: {reason}")

        for f in fields(self):
            value = getattr(self, f.name)
            kind = str(f.type)
            if value is None and "None" in kind:
                continue
            if kind.startswith("int"):
                if isinstance(value, bool) or not isinstance(value, int):
                    raise fail(f.name, "must be an integer")
            elif kind.startswith("float"):
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                    raise fail(f.name, "must be a finite number")
            elif kind.startswith("str") and not isinstance(value, str):
                raise fail(f.name, "must be a string")
            elif kind == "bool" and not isinstance(value, bool):
                raise fail(f.name, "must be true or false")
        for name in ("steps", "repeats", "seq_len", "batch_size", "num_checkpoints", "heldout_examples"):
            if getattr(self, name) < 1:
                raise fail(name, "must be at least 1")
        for name in ("threads", "train_examples"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise fail(name, "must be at least 1 (or null)")
        if not 0 < self.stop_fraction <= 1:
            raise fail("stop_fraction", "must be in (0, 1]: the fraction of its learning-rate schedule the run trains")
        if not LP_EXAMPLES_RANGE[0] <= self.lp_examples <= LP_EXAMPLES_RANGE[1]:
            raise fail("lp_examples", f"must be {LP_EXAMPLES_RANGE[0]}-{LP_EXAMPLES_RANGE[1]} glosses (the heads are fit on that many and read on as many)")
        if self.seq_len < 8:
            raise fail("seq_len", "must be at least 8 tokens ([CLS] and [SEP] take two)")
        if self.score not in SCORES:
            raise fail("score", f"must be one of {', '.join(SCORES)}")
        if self.precision not in PRECISIONS:
            raise fail("precision", f"must be one of {', '.join(PRECISIONS)}")
        try:
            check_device(self.device)  # the spelling only: a search's driver may have no GPU its trials get
        except ValueError:
            raise fail("device", f"must be one of {DEVICE_FORMS}") from None
        if self.init_embeddings not in INIT_EMBEDDINGS:
            raise fail("init_embeddings", f"must be one of {', '.join(INIT_EMBEDDINGS)}")
        if self.lr <= 0:
            raise fail("lr", "must be positive")
        if not 0 <= self.warmup_fraction < 1:
            raise fail("warmup_fraction", "must be in [0, 1)")
        for name in ("weight_decay", "max_grad_norm", "feature_weight", "attention_weight", "output_weight", "params_weight"):
            if getattr(self, name) < 0:
                raise fail(name, "must not be negative")
        if self.feature_weight + self.attention_weight + self.output_weight == 0:
            raise DistillError("distill settings: feature_weight, attention_weight and output_weight are all 0; nothing to learn")
        if not 0 <= self.divergence_retries <= MAX_DIVERGENCE_RETRIES:
            raise fail("divergence_retries", f"must be 0-{MAX_DIVERGENCE_RETRIES} (each retry halves the peak lr)")
        if self.divergence_factor is not None and self.divergence_factor <= 1:
            raise fail("divergence_factor", "must be above 1 (or null to disable)")
