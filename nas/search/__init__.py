"""Multi-objective architecture search: Optuna proposes, Ray Tune runs, the Pareto front is ours.

Only this package imports ray and optuna. ``nas.search.tune`` (Ray) is imported on first use, so
reading a run's results, exporting and reporting never start Ray.
"""

from nas.search.objectives import CheapScorer, Constraint, Objective, parse_constraint, parse_objectives
from nas.search.pareto import dominates, hypervolume, non_dominated
from nas.search.run_dir import RunDir, load_front, read_trials_csv, resolve_run
from nas.search.settings import DEFAULTS, SearchSettings

__all__ = [
    "CheapScorer",
    "Constraint",
    "DEFAULTS",
    "Objective",
    "RunDir",
    "SearchSettings",
    "dominates",
    "hypervolume",
    "load_front",
    "non_dominated",
    "parse_constraint",
    "parse_objectives",
    "read_trials_csv",
    "resolve_run",
    "run_search",
]


def run_search(settings, run, **kwargs):
    """Run or resume a search (see ``nas.search.tune.run_search``); imports Ray on first use."""
    from nas.search.tune import run_search as _run

    return _run(settings, run, **kwargs)
