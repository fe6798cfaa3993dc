"""The Optuna side of a search: the space as Optuna distributions, the samplers, the study storage.

Imports optuna but not ray, so the sample-efficiency benchmark can drive Optuna directly.
"""

from __future__ import annotations

import copy
import logging
import os
import warnings
from pathlib import Path
from typing import Any, Sequence

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from nas.errors import NasError
from nas.space import Space

STUDY_NAME = "nas"
# Beside the journal while a process appends to it: the lock file of JournalFileBackend's default lock.
JOURNAL_LOCK_SUFFIX = ".lock"


def distributions(space: Space) -> dict[str, BaseDistribution]:
    """One Optuna distribution per dimension of `space`: ranges stay ordinal, choices categorical."""
    out: dict[str, BaseDistribution] = {}
    for name, dim in space.dimensions.items():
        if dim.choices is not None:
            out[name] = CategoricalDistribution(list(dim.choices))
        elif all(isinstance(v, int) for v in (dim.low, dim.high, dim.step)):
            out[name] = IntDistribution(int(dim.low), int(dim.high), step=int(dim.step))
        else:
            out[name] = FloatDistribution(float(dim.low), float(dim.high), step=float(dim.step))
    return out


def suggest_genome_values(space: Space, trial: optuna.Trial) -> dict[str, Any]:
    """Define-by-run: one value per dimension, in the space's order, each drawn from the values that
    still complete to a valid genome, so every proposal is one (no invalid trials to learn nothing from).

    A dimension whose every value is open is suggested under its own name and distribution. One
    narrowed by what came before (heads that divide the chosen width, groups that divide both
    widths) is a categorical named by its open values, e.g. ``num_attention_heads|2/4/8``: Optuna
    needs one fixed set of choices per name, and the sampler learns per context.
    """
    chosen: dict[str, Any] = {}
    witness = space.first_witness()
    full = distributions(space)
    for name, dim in space.dimensions.items():
        options = space.completable_values(name, chosen, witness)
        if len(options) == len(dim.values):
            value = _suggest(trial, name, full[name])
        else:
            open_values = list(options)
            value = trial.suggest_categorical(f"{name}|{'/'.join(map(str, open_values))}", open_values)
        chosen[name] = value
        witness = options[value]
    return chosen


def _suggest(trial: optuna.Trial, name: str, distribution: BaseDistribution) -> Any:
    if isinstance(distribution, CategoricalDistribution):
        return trial.suggest_categorical(name, list(distribution.choices))
    if isinstance(distribution, IntDistribution):
        return trial.suggest_int(name, distribution.low, distribution.high, step=distribution.step)
    return trial.suggest_float(name, distribution.low, distribution.high, step=distribution.step)


def genome_values(params: dict[str, Any]) -> dict[str, Any]:
    """A trial's params as dimension values (the context after ``|`` dropped)."""
    return {name.split("|", 1)[0]: value for name, value in params.items()}


def make_sampler(name: str, seed: int, population_size: int = 50) -> optuna.samplers.BaseSampler:
    """NSGA-II (``nsga2``), multi-objective TPE (``tpe``), Optuna's Gaussian-process sampler
    (``gp``) or ``random``, seeded.

    TPE models the dimensions jointly (multivariate), per group of trials that share parameters
    (the define-by-run space names a narrowed dimension by its context), and, with trials in
    flight, imputes their results (constant liar) so parallel workers do not all propose the same point.
    Its kernels keep the width the good trials give them (no "magic clip" to a floor of 1/100 of
    the range) and it picks from 64 candidates, not 24: on the sample-efficiency bench that
    reaches random search's 200-evaluation hypervolume in a median of 24 evaluations instead of 39
    (docs/search.md; both arguments are in Optuna 5, which the project pins below 6).
    """
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(population_size=population_size, seed=seed)
    if name == "tpe":
        return tpe_sampler(seed, **TPE_SETTINGS)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, warn_independent_sampling=False)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise NasError(f"sampler {name!r}: use nsga2, tpe, gp or random")


# The search's TPE (make_sampler); bench/search.py tpe-settings measures variants of it.
TPE_SETTINGS = dict(multivariate=True, group=True, constant_liar=True, consider_magic_clip=False, n_ei_candidates=64)


def tpe_sampler(seed: int, **settings: Any) -> "CheckpointTolerantTPESampler":
    """The search's TPE class with these constructor arguments, without Optuna's warnings about
    them (`group` is "experimental" since Optuna 2.8, `consider_magic_clip` deprecated in 4.9)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.simplefilter("ignore", FutureWarning)
        return CheckpointTolerantTPESampler(seed=seed, **settings)


class CheckpointTolerantTPESampler(optuna.samplers.TPESampler):
    """Optuna's TPE, for multi-objective studies whose pruned trials carry intermediate values.

    Optuna 5.0's TPE ranks a pruned trial by its last intermediate value read as a single-objective
    score (``_get_pruned_trial_score``), which raises on a study with several directions. A search
    records each distillation checkpoint as an intermediate value, so this sampler shows TPE its
    pruned trials without them: TPE then ranks them as it ranks pruned trials that reported nothing
    (the same proposals as before checkpoints were recorded).
    """

    def _sample(self, study: optuna.Study, trial: Any, search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        if len(study.directions) > 1:
            study = _PrunedWithoutCheckpoints(study)  # type: ignore[assignment]
        return super()._sample(study, trial, search_space)


class _PrunedWithoutCheckpoints:
    """A read-only view of a study whose pruned trials have no intermediate values."""

    def __init__(self, study: optuna.Study) -> None:
        self._study = study

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    def _get_trials(self, deepcopy: bool = True, states: Any = None, use_cache: bool = False) -> list[Any]:
        out = []
        for trial in self._study._get_trials(deepcopy=deepcopy, states=states, use_cache=use_cache):
            if trial.state == optuna.trial.TrialState.PRUNED and trial.intermediate_values:
                trial = copy.copy(trial)
                trial.intermediate_values = {}
            out.append(trial)
        return out


def journal_storage(path: Path) -> optuna.storages.BaseStorage:
    """A journal file (safe with several processes; ``optuna-dashboard PATH`` reads it)."""
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


def quiet_optuna() -> None:
    """Optuna logs one INFO line per trial; a search prints its own progress."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def load_study(path: Path) -> optuna.Study:
    return optuna.load_study(study_name=STUDY_NAME, storage=journal_storage(path))


def genome_study(study: optuna.Study, space: Space) -> optuna.Study:
    """An in-memory copy of the study's finished trials whose parameters are the genome's dimensions
    under their own names and full distributions (the context of a narrowed dimension dropped), so
    importances and parallel coordinates see one ``num_attention_heads``, not one per context."""
    full = distributions(space)
    quiet_optuna()  # no INFO line about the in-memory study in a report's output
    view = optuna.create_study(directions=study.directions)
    for trial in study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.COMPLETE]):
        values = genome_values(trial.params)
        params = {name: values[name] for name in full if name in values}
        view.add_trial(optuna.trial.create_trial(params=params, distributions={n: full[n] for n in params}, values=trial.values))
    return view


def trial_state(name: str) -> Any:
    return getattr(optuna.trial.TrialState, name)


# ---- the journal as the record of every trial ------------------------------------------------------

# The fields of a trials.csv row that are kept as Optuna user attributes, so the journal alone can
# rebuild trials.csv (a torn or lost CSV) and optuna-dashboard shows each trial's status and reason.
# The genome is not among them: it is the trial's params, mapped through the run's space.
RECORD_ATTRS = ("status", "reason", "genome_id", "scores", "elapsed_s", "step", "restarts", "tune_trial_id", "node")


def open_study(path: Path, directions: list[str]) -> optuna.Study:
    """The run's study, created on first use (``describe_study`` names its objectives)."""
    return optuna.create_study(
        storage=journal_storage(path),
        study_name=STUDY_NAME,
        directions=["minimize" if d == "min" else "maximize" for d in directions],
        load_if_exists=True,
    )


def set_trial_attrs(study: optuna.Study, number: int, attrs: dict[str, Any]) -> None:
    """Set user attributes on trial `number`, whatever its state (a finished trial's attributes
    can still be written through the storage, which the Trial API does not allow).

    The journal takes one attribute per line, so "status" goes last: a driver killed between two
    lines leaves a row that still reads as its old status, never an "ok" without its scores.
    """
    storage = study._storage
    trial_id = storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
    try:
        for key, value in sorted(attrs.items(), key=lambda item: item[0] == "status"):
            storage.set_trial_user_attr(trial_id, key, value)
    except optuna.exceptions.UpdateFinishedTrialError:
        # Finished trials take no attributes; trials.csv keeps the row. Not a reason to stop a search.
        logging.getLogger("nas.search").warning("trial %d: finished in Optuna before its row was complete; %s kept in trials.csv only", number, ", ".join(attrs))


def repair_journal(path: Path) -> bool:
    """Undo what a driver killed mid-append leaves: its journal lock, and a torn last line (cut
    off; True when one was cut). Only for the one driver that holds the run's lock.

    Optuna skips a torn last line when reading, but its next append would join it and leave a bad
    line inside the file, which fails every later read. A lock left behind makes the next append
    wait 30 s before Optuna breaks it.
    """
    lock = Path(str(path) + JOURNAL_LOCK_SUFFIX)
    if os.path.lexists(lock):
        logging.getLogger("nas.search").warning("%s: removed the journal lock a stopped driver left", lock)
        lock.unlink()
    try:
        with open(path, "rb+") as handle:
            data = handle.read()
            if not data or data.endswith(b"\n"):
                return False
            handle.truncate(data.rfind(b"\n") + 1)
            return True
    except FileNotFoundError:
        return False


# ---- what the study records, for Optuna's own tools (optuna-dashboard, optuna.visualization) ------

# The system attribute Optuna's samplers and optuna-dashboard both read a trial's constraint values
# from: a list, one value per constraint, feasible when every value is <= 0. (Optuna 5's
# ``Trial.set_constraint`` writes ``constraints:<name>`` keys, which optuna-dashboard 0.21 ignores.)
CONSTRAINTS_ATTR = "constraints"


def set_constraint_values(trial: optuna.Trial, values: Sequence[float]) -> None:
    """Record `values` (one per constraint, in the study's ``constraints`` user attribute order) on a
    running trial, where samplers and optuna-dashboard read them."""
    trial.storage.set_trial_system_attr(trial._trial_id, CONSTRAINTS_ATTR, [float(v) for v in values])


def record_checkpoint(trial: optuna.Trial, step: int, value: float) -> None:
    """Record a score reached at `step` as the trial's intermediate value at that step.

    ``Trial.report`` refuses multi-objective studies; the storage call it makes does not. The first
    value at a step is kept (a restarted trial reporting the step again changes nothing).
    """
    if step not in trial.storage.get_trial(trial._trial_id).intermediate_values:
        trial.storage.set_trial_intermediate_value(trial._trial_id, step, float(value))


def describe_study(study: optuna.Study, metric_names: Sequence[str], constraints: Sequence[str], notes: dict[str, Any]) -> None:
    """Name the objectives and say, in study user attributes, what the trials' records mean."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # stable in practice since 3.2
        study.set_metric_names(list(metric_names))
    study.set_user_attr(CONSTRAINTS_ATTR, list(constraints))
    for key, value in notes.items():
        study.set_user_attr(key, value)
