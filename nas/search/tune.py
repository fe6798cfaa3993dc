"""Ray Tune runs the trials, Optuna proposes them: this module puts the two together.

By job: ``nas.search.searcher`` (Optuna's proposals screened in the driver, one row per trial),
``nas.search.trial`` (the Ray trial), ``nas.search.cluster`` (the Ray connection), and here
starting, resuming and finishing a search, and Tune's callback.

Flow of one candidate:

1. Optuna's sampler (TPE, NSGA-II, GP or random) proposes a valid genome, one dimension at a time
   (``ParetoOptunaSearch.suggest``, ``nas.search.study.suggest_genome_values``).
2. In the driver, in milliseconds: the values become a genome (or an "invalid" row), its cheap
   scores are computed (params, FLOPs, predicted latency), the constraints are checked and told to
   Optuna (``Trial.set_constraint``), and a genome already evaluated is not run again. Screened
   candidates get their row and their Optuna result at once and never reach Ray.
3. A Ray Tune trial runs the rest on its own CPUs (``evaluate_candidate``): the distillation, last,
   reporting the score at each checkpoint so ASHA can stop weak candidates early.
4. The outcome is written to trials.csv and pareto.json first, then told to Optuna; a trial ASHA
   stopped is told as PRUNED, never as a complete point (Ray's OptunaSearch would tell it
   COMPLETE with its partial score).

Multi-objective notes: metric and mode lists go to OptunaSearch only,
never to TuneConfig; the Pareto front is computed here (``nas.search.pareto``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.tune.experiment import Trial
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import ConcurrencyLimiter

from nas.errors import NasError, atomic_write_json, atomic_write_text, check_writable_folder
from nas.search import study as optuna_study
from nas.search.cluster import check_address, check_resources, concurrency, connect
from nas.search.objectives import CheapScorer, Constraint, Objective, check_feasible, parse_scoring
from nas.search.run_dir import RunDir
from nas.search.searcher import DRIVERS, Driver, ParetoOptunaSearch, settle_orphans
from nas.search.settings import SearchSettings
from nas.search.trial import TrialSpec, evaluate_candidate
from nas.space import Space, load_space

log = logging.getLogger("nas.search")

# What a search writes into its Optuna study besides the trials, for optuna-dashboard readers.
_STUDY_NOTES = {
    "trial_user_attrs": "the trial's row of trials.csv (status, reason, genome_id, scores, elapsed_s, step, restarts, tune_trial_id, node; the genome is its params); duplicate_of: the trial whose genome it repeats; retry_of: the interrupted trial it runs again",
    "trial_states": (
        "COMPLETE: status ok (evaluated in full; the only trials on the front). PRUNED: status pruned (stopped by ASHA; "
        "Optuna copies its last intermediate value as its single value) or infeasible (broke a constraint, never trained, "
        "no values). FAIL: invalid, duplicate, diverged, crashed, failed or lost"
    ),
    "constraint_values": "per trial, one per entry of `constraints`, relative to the limit: > 0 broken, <= 0 met",
    "intermediate_values": "the distillation score at each distillation checkpoint; step = distillation step",
}


@dataclasses.dataclass
class SearchOutcome:
    """What ``run_search`` returns: every row, the Pareto front, and how the session ended."""

    run: RunDir
    records: dict[int, dict[str, Any]]  # Optuna trial number -> row of trials.csv
    front: list[dict[str, Any]]  # Pareto-optimal rows
    interrupted: bool  # Ctrl-C before every trial ran: `--resume` continues
    wall_s: float  # Tuner.fit's wall time
    ray_trials: int  # rows that a Ray trial produced
    stopped: str | None = None  # why fewer than `trials` ran without an interruption (time budget, ...)


# ---- what the driver knows -----------------------------------------------------------------------


# ---- the searcher: Optuna proposes, the driver screens -------------------------------------------


    # OptunaSearch pickles its whole __dict__; the driver is found again by path, never pickled.


# ---- the Ray trial -------------------------------------------------------------------------------


def asha_rungs(settings: SearchSettings) -> tuple[int, int] | None:
    """(first rung, last rung) in distillation steps for ASHA, or None when the distillation has
    fewer than two checkpoints (nothing to stop early on). Rungs sit on checkpoints before the last."""
    checkpoints = settings.distill_config().reported_steps  # over all repeats: the clock trials report on
    if len(checkpoints) < 2:
        return None
    last_rung = checkpoints[-2]
    grace = next((c for c in checkpoints if c >= settings.asha_grace_fraction * checkpoints[-1]), last_rung)
    return min(grace, last_rung), last_rung


# ---- the callback: errors, students, progress ----------------------------------------------------


class _Recorder(tune.Callback):
    """Adds what only Tune's Trial objects know: error messages, the student checkpoint, progress."""

    def __init__(self, run_root: str) -> None:
        self._run_root = run_root

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        driver = DRIVERS[self._run_root]
        driver.finish(trial.config.get("trial"), restarts=trial.num_failures)
        _keep_student(driver, trial)
        driver.log.flush()
        _advance(driver)

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        driver = DRIVERS[self._run_root]
        driver.finish(trial.config.get("trial"), restarts=trial.num_failures, error=_error_line(trial))
        _advance(driver)


def _advance(driver: Driver) -> None:
    front = driver.log.front()
    driver.bar.set_postfix_str(f"pareto {len(front)}, rows {len(driver.log.records)}", refresh=False)
    driver.bar.update(1)


def _error_line(trial: Trial) -> str:
    try:
        text = Path(trial.error_file).read_text() if trial.error_file else ""
    except OSError:
        text = ""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    # The last line of a Ray error is the exception; keep it short enough for a CSV cell.
    for line in reversed(lines):
        if "Error" in line or "error" in line or "died" in line:
            return line[:300]
    return lines[-1][:300] if lines else ""


def _keep_student(driver: Driver, trial: Trial) -> None:
    """Copy a Pareto student's weights into the run; drop those that left the front."""
    if not driver.settings.keep_students:
        return
    number = trial.config.get("trial")
    record = driver.log.records.get(number)
    checkpoint = trial.checkpoint
    front_ids = {r["trial"] for r in driver.log.front()}
    if record is not None and record["status"] == "ok" and checkpoint is not None and number in front_ids:
        source = Path(checkpoint.path) / "student"
        target = driver.run.students_dir / record["genome_id"]
        if source.is_dir() and not target.exists():
            staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=_mkdir(driver.run.students_dir)))
            shutil.copytree(source, staging, dirs_exist_ok=True)
            os.replace(staging, target)  # complete or absent
        if target.is_dir():
            record["student"] = str(target.relative_to(driver.run.root))
    kept = {r["genome_id"] for r in driver.log.front()}
    for record in driver.log.records.values():
        if record.get("student") and record["genome_id"] not in kept:
            shutil.rmtree(driver.run.root / record["student"], ignore_errors=True)
            record["student"] = None


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


# ---- starting, resuming, finishing ---------------------------------------------------------------


def prepare(settings: SearchSettings, space: Space) -> tuple[list[Objective], list[Constraint], CheapScorer]:
    """Every check that needs no Ray: objectives, profiles, constraints, distillation settings.

    Raises NasError with one line before any work starts.
    """
    settings.check()
    objectives, constraints, scorer = parse_scoring(settings.objectives, settings.constraints, settings.seq_len)
    if any(o.expensive for o in objectives):
        settings.distill_config()  # a bad field fails here, not in every trial
    check_feasible(space, constraints, scorer, seed=settings.seed)
    return objectives, constraints, scorer


def run_search(
    settings: SearchSettings,
    run: RunDir,
    *,
    address: str | None = None,
    resume: bool = False,
    progress: bool = True,
    num_cpus: int | None = None,
    trial_hold_s: float | None = None,
) -> SearchOutcome:
    """Run (or resume) the search in `run`; return its trials and Pareto front.

    Checks everything checkable first (NasError, one line, before any work); takes the run's lock;
    joins `address` or starts (and later stops) a local Ray. `trial_hold_s` is a rehearsal hook
    (``nas.search.trial.HOLD_ENV``): seconds each trial keeps its CPUs after scoring.
    """
    if resume:
        run.require()
        settings = SearchSettings.load(run.settings_path)
        space = load_space(run.space_path)
    else:
        if run.exists():
            if run.in_use():
                raise NasError(f"{run.root}: in use by another search; pick another --name")
            raise NasError(f"{run.root}: a search already ran here; continue it with --resume {run.name} or pick another --name")
        if run.root.is_dir() and any(run.root.iterdir()):
            raise NasError(f"--name {run.root}: a folder with files that is not a search run; pick another --name (nothing was written)")
        space = load_space(settings.space)
    check_writable_folder(run.root, "--resume" if resume else "--name")
    scoring = prepare(settings, space)  # parsed once: the driver takes it as it is
    if address or os.environ.get("RAY_ADDRESS"):
        check_address(address or os.environ["RAY_ADDRESS"])
    created = not run.root.exists()
    run.acquire()
    started_ray = False
    driver: Driver | None = None
    try:
        # Reports carry the distillation score only from its first checkpoint on, and a crashed
        # trial never has one; Tune's strict check would reject such results.
        os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0: no tables, our progress bar only
        started_ray = connect(address, num_cpus)
        check_resources(settings)
        if not resume:  # the run exists from here on (all checks passed)
            atomic_write_text(run.space_path, Path(space.path).read_text())
            settings = settings.pinned()  # the distillation as it runs today, kept for a resume after an upgrade
            atomic_write_json(run.settings_path, settings.to_dict())
        optuna_study.quiet_optuna()
        driver = Driver(run, settings, space, progress, resume=resume, scoring=scoring)
        DRIVERS[str(run.root)] = driver
        started = time.perf_counter()
        # A resumed search is a fresh Tune experiment for the Ray trials still to run; what ran
        # before is in the journal and trials.csv (never Tune's snapshot, which lags behind).
        remaining = settings.trials - driver.ray_rows()
        tuner = _new_tuner(driver, remaining, trial_hold_s) if remaining > 0 else None
        _describe_study(driver)
        if tuner is not None:
            tuner.fit()
        wall = time.perf_counter() - started
        # Tune returns normally after Ctrl-C (a resume proposes the trials it stopped again); the
        # search is complete when every Ray trial it was to run has a row.
        for number in sorted(driver.unrecorded):  # rows whose Tune callback never came (Ctrl-C)
            driver.finish(number)
        ray_rows = driver.ray_rows()
        interrupted = ray_rows < settings.trials and driver.stopped is None
        if not interrupted:
            settle_orphans(driver)
        driver.log.flush()
        driver.bar.close()
        return SearchOutcome(run, dict(driver.log.records), driver.log.front(), interrupted, wall, ray_rows, driver.stopped)
    finally:
        if driver is not None:
            driver.log.flush()
            driver.bar.close()
        DRIVERS.pop(str(run.root), None)
        if started_ray:
            ray.shutdown()  # stops the local Ray we started, or leaves the cluster; never `ray stop`
        run.release()
        if created and not run.settings_path.exists():  # refused before it began: leave nothing behind
            shutil.rmtree(run.root, ignore_errors=True)


def _describe_study(driver: Driver) -> None:
    """Metric names, constraint names and what the records mean, on the study (the searcher created it)."""
    from nas.statuses import STATUSES

    notes = _STUDY_NOTES | {"statuses": STATUSES, "run": str(driver.run.root)}
    optuna_study.describe_study(driver.study, [o.name for o in driver.objectives], [c.source for c in driver.constraints], notes)


def _trainable(driver: Driver, hold_s: float | None):
    settings = driver.settings
    spec = TrialSpec.for_search(settings, [o.name for o in driver.objectives], hold_s)
    trainable = tune.with_parameters(evaluate_candidate, spec=spec)
    resources = {"cpu": settings.cpus_per_trial} | ({"gpu": settings.gpus_per_trial} if settings.gpus_per_trial else {})
    return tune.with_resources(trainable, resources)


def _new_tuner(driver: Driver, num_samples: int, hold_s: float | None) -> tune.Tuner:
    settings, run = driver.settings, driver.run
    searcher = ParetoOptunaSearch(
        str(run.root),
        space=optuna_study.distributions(driver.space),
        metric=[o.name for o in driver.objectives],
        mode=[o.direction for o in driver.objectives],
        sampler=optuna_study.make_sampler(settings.sampler, settings.seed, settings.nsga2_population),
        storage=optuna_study.journal_storage(run.journal_path),
        study_name=optuna_study.STUDY_NAME,
    )
    scheduler: Any = FIFOScheduler()
    rungs = asha_rungs(settings) if settings.asha and driver.expensive else None
    if rungs is not None:
        grace, last_rung = rungs
        scheduler = ASHAScheduler(
            time_attr="step",
            metric="distill",
            mode="max",
            # Rungs only up to the second-to-last checkpoint, and no stop at max_t: a trial that
            # reaches its last checkpoint always finishes and reports its final status, so ASHA
            # never cuts a complete run (which would then be recorded as pruned).
            max_t=last_rung,
            grace_period=grace,
            reduction_factor=settings.asha_reduction_factor,
            stop_last_trials=False,
        )
    return tune.Tuner(
        _trainable(driver, hold_s),
        # No metric or mode here: a scalar pair would silently make the study single-objective.
        tune_config=tune.TuneConfig(
            search_alg=ConcurrencyLimiter(searcher, max_concurrent=concurrency(settings)),
            scheduler=scheduler,
            num_samples=settings.trials if num_samples is None else num_samples,
            reuse_actors=True,  # ~0.2 s per trial instead of ~1.5 s for a fresh actor
            trial_dirname_creator=_trial_dirname,
        ),
        run_config=_run_config(driver),
    )


def _trial_dirname(trial: Trial) -> str:
    return f"trial_{trial.config.get('trial')}_{trial.trial_id}"


def _run_config(driver: Driver) -> tune.RunConfig:
    return tune.RunConfig(
        name=driver.tune_dir.name,
        storage_path=str(driver.tune_dir.parent),
        failure_config=tune.FailureConfig(max_failures=driver.settings.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        callbacks=[_Recorder(str(driver.run.root))],
        verbose=0,
    )


