"""The Optuna side of a search: the space as Optuna distributions, the samplers, the study storage.

Imports optuna but not ray, so the sample-efficiency benchmark can drive Optuna directly.
"""

from __future__ import annotations

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
