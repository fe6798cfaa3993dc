"""The settings of one search, as plain JSON-able data (saved as ``runs/NAME/settings.json``).

``DEFAULTS`` is what ``nas search`` with no arguments runs (README command 1): edit it here, or
pass ``--settings FILE.json`` (any subset of the fields below) to run something else.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from nas.errors import NasError, check_fields, read_user_text

SAMPLERS = ("nsga2", "tpe", "gp", "random")
# Settings earlier versions wrote that no longer decide anything: read and dropped, so their runs resume.
# hold_s, a rehearsal hook, is now nas.search.trial.HOLD_ENV.
_RETIRED = ("hold_s",)


@dataclass
class SearchSettings:
    """Everything that decides what a search does; ``runs/NAME/settings.json`` holds a copy."""

    space: str = "mobile"
    objectives: list[str] = field(default_factory=lambda: ["distill", "latency_ms@pixel4"])
    constraints: list[str] = field(default_factory=lambda: ["latency_ms@pixel4<=80"])
    sampler: str = "tpe"  # tpe (multi-objective TPE), nsga2 (NSGA-II), gp (Gaussian process) or random; bench/search.py efficiency
    trials: int = 200  # candidates evaluated by a Ray trial (screened-out ones are free and not counted)
    # No new candidate after this many seconds of a session (running trials finish); None: no limit.
    # The default search ends by this budget (about 10 minutes with start-up, the last trials and
    # the report on 2 cores); `trials` caps it on bigger machines.
    time_budget_s: float | None = 540.0
    seed: int = 0
    seq_len: int = 128  # sequence length of the FLOP count
    cpus_per_trial: int = 1  # each trial sets torch threads to this
    # GPUs each trial reserves; a fraction lets several small candidates share one GPU. A trial
    # given one trains on it (the distill device "auto" becomes the GPU Ray assigned), else on its CPUs.
    gpus_per_trial: float = 0.0
    concurrency: int | None = None  # trials at once; None: as many as the cluster's nodes hold
    population_size: int | None = None  # NSGA-II generation size; None: min(50, max(8, trials // 12))
    # Distillation: the preset of nas.distill.DistillConfig ("search": the default run, scored
    # once at its end; "quick" for smoke tests) and fields to override.
    distill_preset: str = "search"
    distill: dict[str, Any] = field(default_factory=dict)
    # Successive halving (ASHA) on the distillation score reported at each checkpoint.
    asha: bool = True
    asha_reduction_factor: int = 3
    asha_grace_fraction: float = 0.25  # first rung at this fraction of the distillation steps
    # Reference designs placed on the quality axis of the report: distilled with the search's own
    # settings once, then cached (nas.distill.run.cached_score). [] to skip.
    quality_references: list[str] = field(default_factory=lambda: ["mobilebert", "mobilebert-tiny"])
    keep_students: bool = False  # save Pareto students' weights (safetensors) for `nas export`
    max_failures: int = 2  # Ray retries of a trial whose worker or node died

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "settings") -> "SearchSettings":
        if isinstance(data, dict):
            data = {k: v for k, v in data.items() if k not in _RETIRED}  # runs written by earlier versions resume
        check_fields(data, cls, source, what="setting", objects="search settings")
        settings = cls(**data)
        settings.check(source)
        return settings

    @classmethod
    def load(cls, path: str | Path) -> "SearchSettings":
        path = Path(path)
        try:
            data = json.loads(read_user_text(path))
        except json.JSONDecodeError as err:
            raise NasError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
        return cls.from_dict(data, str(path))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def check(self, source: str = "settings") -> None:
        """NasError naming the field for values no search can run with."""

        def fail(name: str, why: str) -> NasError:
            return NasError(f"{source}: {name}: {why}")

        if self.sampler not in SAMPLERS:
            raise fail("sampler", f"{self.sampler!r} is not one of {', '.join(SAMPLERS)}")
        for name in ("trials", "cpus_per_trial", "seq_len", "asha_reduction_factor"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise fail(name, f"{value!r} must be a positive integer")
        gpus = self.gpus_per_trial
        if isinstance(gpus, bool) or not isinstance(gpus, (int, float)) or not math.isfinite(gpus) or gpus < 0:
            raise fail("gpus_per_trial", f"{gpus!r} must be a number of GPUs, 0 or more (a fraction shares a GPU)")
        if gpus > 1 and gpus != int(gpus):
            raise fail("gpus_per_trial", f"{gpus!r}: above 1 it must be a whole number (Ray shares a GPU only below 1)")
        if self.asha_reduction_factor < 2:
            raise fail("asha_reduction_factor", "must be at least 2")
        for name in ("concurrency", "population_size"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise fail(name, f"{value!r} must be a positive integer or null")
        if self.population_size is not None and self.population_size < 2:
            raise fail("population_size", "NSGA-II needs at least 2")
        if not 0 < self.asha_grace_fraction <= 1:
            raise fail("asha_grace_fraction", "must be in (0, 1]")
        if self.time_budget_s is not None and (isinstance(self.time_budget_s, bool) or not isinstance(self.time_budget_s, (int, float)) or self.time_budget_s <= 0):
            raise fail("time_budget_s", f"{self.time_budget_s!r} must be a positive number of seconds or null")
        if self.max_failures < 0:
            raise fail("max_failures", "must not be negative")
        if not isinstance(self.objectives, list) or not all(isinstance(o, str) for o in self.objectives):
            raise fail("objectives", "must be a list of names")
        if not isinstance(self.constraints, list) or not all(isinstance(c, str) for c in self.constraints):
            raise fail("constraints", "must be a list of strings such as 'params<=30e6'")
        if not isinstance(self.distill, dict):
            raise fail("distill", "must be an object of DistillConfig fields")
        if self.distill.get("device", "auto") not in ("auto", "cpu"):
            raise fail("distill", f"device {self.distill['device']!r}: a trial trains on the GPU Ray gives it; "
                       "set gpus_per_trial (--gpus-per-trial) and leave device auto, or set cpu")  # fmt: skip
        from nas.references import reference_names

        known = reference_names()
        if not isinstance(self.quality_references, list) or not all(n in known for n in self.quality_references):
            raise fail("quality_references", f"must be a list of reference names ({', '.join(known)})")

    def distill_config(self):
        """The nas.distill.DistillConfig each trial runs: the preset, the overrides, and torch
        threads = the trial's CPUs. A bad preset or field is a NasError."""
        from nas.distill import DistillConfig
        from nas.distill.config import BEFORE_ADDED

        preset = getattr(DistillConfig, self.distill_preset, None) if self.distill_preset else DistillConfig
        if not callable(preset):
            raise NasError(f"settings distill_preset: {self.distill_preset!r} is not a DistillConfig preset (e.g. quick)")
        check_fields(self.distill, DistillConfig, "settings distill", what="DistillConfig field")
        overrides = self.distill
        written_out = {f.name for f in fields(DistillConfig)} - {"threads"} - set(ADDED_SINCE_PINNING)
        if written_out <= set(overrides):  # pinned by an older version: what it lacks, it ran without
            overrides = {name: BEFORE_ADDED[name] for name in ADDED_SINCE_PINNING} | overrides
        return preset(**(overrides | {"threads": self.cpus_per_trial}))

    def pinned(self) -> "SearchSettings":
        """These settings with the distillation written out in full (every DistillConfig field but
        the threads, which follow cpus_per_trial): what a new run saves, so that resuming it after
        the library's defaults change (the default run went 120 -> 360 -> 240 steps) still scores
        its remaining trials as it scored the first ones."""
        if "distill" not in self.objectives:
            return self
        resolved = self.distill_config().to_dict()
        return replace(self, distill={k: v for k, v in resolved.items() if k != "threads"})

    @property
    def nsga2_population(self) -> int:
        # Small generations evolve sooner: bench/search.py found 16 best for 200 evaluations.
        return self.population_size or min(50, max(8, self.trials // 12))


# DistillConfig fields added after pinned() began writing the distillation out in full: resuming a
# run pinned before them sets them to nas.distill.config.BEFORE_ADDED, so it keeps scoring as it began.
ADDED_SINCE_PINNING = ("params_weight", "stop_fraction", "lp_examples", "divergence_retries", "lp_crossfit")


# What `nas search` with no arguments runs: the embedded mobile space, the shipped Pixel 4 profile,
# the default teacher and corpus with the search distillation preset; about ten minutes on 2 cores.
# Its time budget, not `trials`, ends it (some 10-30 default-run distillations on 2 cores), so
# generations of 8 should --sampler nsga2 be asked for (TPE, the default, has no generations).
DEFAULTS = SearchSettings(population_size=8)
