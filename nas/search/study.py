"""The Optuna side of a search: the space as Optuna distributions, the samplers, the study storage.

Imports optuna but not ray, so the sample-efficiency benchmark can drive Optuna directly.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from nas.errors import NasError
from nas.space import Space

STUDY_NAME = "nas"


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


def make_sampler(name: str, seed: int, population_size: int = 50) -> optuna.samplers.BaseSampler:
    """NSGA-II (``nsga2``), multi-objective TPE (``tpe``) or ``random``, seeded.

    TPE models the dimensions jointly (multivariate) and, with trials in flight, imputes their
    results (constant liar) so parallel workers do not all propose the same point.
    """
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(population_size=population_size, seed=seed)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise NasError(f"sampler {name!r}: use nsga2, tpe or random")


def journal_storage(path: Path) -> optuna.storages.BaseStorage:
    """A journal file (safe with several processes; ``optuna-dashboard PATH`` reads it)."""
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


def quiet_optuna() -> None:
    """Optuna logs one INFO line per trial; a search prints its own progress."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def load_study(path: Path) -> optuna.Study:
    return optuna.load_study(study_name=STUDY_NAME, storage=journal_storage(path))


def trial_state(name: str) -> Any:
    return getattr(optuna.trial.TrialState, name)


# ---- the journal as the record of every trial ------------------------------------------------------

# The fields of a trials.csv row that are kept as Optuna user attributes, so the journal alone can
# rebuild trials.csv (a torn or lost CSV) and optuna-dashboard shows each trial's status and reason.
# The genome is not among them: it is the trial's params, mapped through the run's space.
RECORD_ATTRS = ("status", "reason", "genome_id", "scores", "elapsed_s", "step", "restarts", "tune_trial_id", "node")


def open_study(path: Path, directions: list[str], metric_names: list[str]) -> optuna.Study:
    """The run's study (created on first use), its objectives named so Optuna's tools show them."""
    study = optuna.create_study(
        storage=journal_storage(path),
        study_name=STUDY_NAME,
        directions=["minimize" if d == "min" else "maximize" for d in directions],
        load_if_exists=True,
    )
    if study.metric_names != metric_names:
        with warnings.catch_warnings():  # "experimental" since Optuna 3.2; optuna-dashboard reads it
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(metric_names)
    return study


def set_trial_attrs(study: optuna.Study, number: int, attrs: dict[str, Any]) -> None:
    """Set user attributes on trial `number`, whatever its state (a finished trial's attributes
    can still be written through the storage, which the Trial API does not allow)."""
    storage = study._storage
    trial_id = storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
    try:
        for key, value in attrs.items():
            storage.set_trial_user_attr(trial_id, key, value)
    except optuna.exceptions.UpdateFinishedTrialError:
        # Finished trials take no attributes; trials.csv keeps the row. Not a reason to stop a search.
        logging.getLogger("nas.search").warning("trial %d: finished in Optuna before its row was complete; %s kept in trials.csv only", number, ", ".join(attrs))


def repair_journal(path: Path) -> bool:
    """Cut a torn last line (a kill mid-append) off the journal; True when one was cut.

    Optuna skips a torn last line when reading, but its next append would join it and leave a bad
    line inside the file, which fails every later read.
    """
    try:
        with open(path, "rb+") as handle:
            data = handle.read()
            if not data or data.endswith(b"\n"):
                return False
            handle.truncate(data.rfind(b"\n") + 1)
            return True
    except FileNotFoundError:
        return False
