"""Ray Tune runs the trials, Optuna proposes them: the only place that knows both.

Flow of one candidate:

1. Optuna's sampler (NSGA-II, TPE or random) proposes dimension values (``ParetoOptunaSearch.suggest``).
2. In the driver, in milliseconds: the values become a genome (or an "invalid" row), its cheap
   scores are computed (params, FLOPs, predicted latency), the constraints are checked and told to
   Optuna (``Trial.set_constraint``), and a genome already evaluated is not run again. Screened
   candidates get their row and their Optuna result at once and never reach Ray.
3. A Ray Tune trial runs the rest on its own CPUs (``evaluate_candidate``): the distillation, last,
   reporting the score at each checkpoint so ASHA can stop weak candidates early.
4. The outcome is written to trials.csv and pareto.json first, then told to Optuna; a trial ASHA
   stopped is told as PRUNED, never as a complete point (Ray's OptunaSearch would tell it
   COMPLETE with its partial score).

Multi-objective notes (../shared/STACK-NOTES.md): metric and mode lists go to OptunaSearch only,
never to TuneConfig; the Pareto front is computed here (``nas.search.pareto``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from nas.arch import ArchConfig, ArchError
from nas.errors import NasError
from nas.search import study as optuna_study
from nas.search.objectives import CheapScorer, Constraint, Objective, check_feasible, parse_constraints, parse_objectives
from nas.search.run_dir import RunDir, TrialLog
from nas.search.settings import SearchSettings
from nas.space import Space, load_space

import ray
from ray import tune
from ray.tune.experiment import Trial
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import ConcurrencyLimiter, Searcher
from ray.tune.search.optuna import OptunaSearch

log = logging.getLogger("nas.search")

# Candidates screened one after another without one reaching Ray before the search gives up:
# the sampler keeps proposing invalid, infeasible or already evaluated genomes.
MAX_SCREENED_IN_A_ROW = 1000
# Statuses a Ray trial ends with, and how Optuna hears of each.
_OPTUNA_STATE = {
    "ok": "COMPLETE",
    "pruned": "PRUNED",
    "diverged": "FAIL",
    "crashed": "FAIL",
    "failed": "FAIL",
    "lost": "FAIL",
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

# The searcher and the callback are pickled by Tune (into the experiment, for resuming) and find
# the driver's live state again through the run folder's path.
_DRIVERS: dict[str, "_Driver"] = {}


class _Driver:
    """Driver-side state of one search: the space, scorers, constraints and the trial log."""

    def __init__(self, run: RunDir, settings: SearchSettings, space: Space, progress: bool) -> None:
        self.run = run
        self.settings = settings
        self.space = space
        self.objectives = parse_objectives(settings.objectives)
        self.constraints = parse_constraints(settings.constraints)
        cheap = [o.name for o in self.objectives if not o.expensive] + [c.metric for c in self.constraints]
        self.scorer = CheapScorer(cheap, settings.seq_len)
        self.log = TrialLog(run, self.objectives)
        self.in_flight: dict[str, int] = {}  # genome id -> Optuna trial number of its running Ray trial
        # Why the searcher stopped proposing before `trials` Ray trials: the time budget ran out, or
        # the sampler kept proposing candidates not worth running. None while it proposes.
        self.stopped: str | None = None
        self.deadline = time.monotonic() + settings.time_budget_s if settings.time_budget_s else None
        self._last_flush = 0.0
        done = sum(1 for r in self.log.records.values() if r.get("tune_trial_id"))
        budget = f" (or {settings.time_budget_s / 60:g} min)" if settings.time_budget_s else ""
        self.bar = _progress_bar(settings.trials, progress, done=done, desc=f"trials{budget}")

    @property
    def expensive(self) -> list[Objective]:
        return [o for o in self.objectives if o.expensive]

    def record(self, record: dict[str, Any], urgent: bool) -> None:
        """Keep a row; urgent rows (Ray trials) reach disk at once, screened ones within a second."""
        self.log.add(record, flush=False)
        now = time.monotonic()
        if urgent or now - self._last_flush > 1.0:
            self.log.flush()
            self._last_flush = now

    def values_for_optuna(self, scores: dict[str, Any]) -> list[float]:
        """Objective values in order; an expensive score a screened candidate never got is its worst."""
        return [float(scores[o.name]) if scores.get(o.name) is not None else _worst(o) for o in self.objectives]


def _worst(objective: Objective) -> float:
    # The distillation score is a cosine similarity, bounded below by -1 (nas.distill); an
    # infeasible candidate told with the floor sits behind every feasible one anyway
    # (constrained domination), the floor just keeps the value finite.
    return -1.0 if objective.direction == "max" else float("inf")


def _record(number: int, status: str, reason: str = "", arch: ArchConfig | None = None, scores: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "trial": number,
        "status": status,
        "reason": reason,
        "genome_id": arch.id if arch else "",
        "genome": arch.to_dict() if arch else None,
        "scores": {k: float(v) for k, v in (scores or {}).items() if v is not None},
        "elapsed_s": extra.get("elapsed_s"),
        "step": extra.get("step"),
        "restarts": extra.get("restarts"),
        "tune_trial_id": extra.get("tune_trial_id", ""),
        "node": extra.get("node", ""),
    }


# ---- the searcher: Optuna proposes, the driver screens -------------------------------------------


class ParetoOptunaSearch(OptunaSearch):
    """OptunaSearch that screens candidates before Ray sees them and tells Optuna the truth:
    constraint violations as constraints, ASHA-stopped trials as PRUNED, failures as FAIL."""

    def __init__(self, run_root: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._run_root = run_root

    @property
    def _driver(self) -> _Driver:
        return _DRIVERS[self._run_root]

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        driver = self._driver
        if driver.deadline is not None and time.monotonic() > driver.deadline:
            driver.stopped = f"time budget of {driver.settings.time_budget_s:g} s spent"
            return Searcher.FINISHED
        for _ in range(MAX_SCREENED_IN_A_ROW):
            ot_trial = self._ot_study.ask(fixed_distributions=self._space)
            config = self._screen(driver, ot_trial)
            if config is not None:
                self._ot_trials[trial_id] = ot_trial
                return config
        driver.log.flush()
        driver.stopped = f"the sampler proposed {MAX_SCREENED_IN_A_ROW} candidates in a row not worth running"
        log.warning(
            "the sampler proposed %d candidates in a row that were invalid, infeasible or already evaluated; "
            "ending the search", MAX_SCREENED_IN_A_ROW,
        )
        return Searcher.FINISHED

    def _screen(self, driver: _Driver, ot_trial: Any) -> dict[str, Any] | None:
        """The Ray trial's config for a candidate worth running, else None after telling Optuna why not."""
        number = ot_trial.number
        try:
            arch = driver.space.genome(ot_trial.params)
        except ArchError as err:
            driver.record(_record(number, "invalid", str(err)), urgent=False)
            self._ot_study.tell(ot_trial, state=optuna_study.trial_state("FAIL"))
            return None
        scores = driver.scorer.scores(arch)
        broken = []
        for constraint in driver.constraints:
            value = scores[constraint.metric]
            ot_trial.set_constraint(constraint.source, constraint.violation(value))
            if not constraint.holds(value):
                broken.append(constraint.describe(value))
        if broken:
            driver.record(_record(number, "infeasible", "; ".join(broken), arch, scores), urgent=False)
            self._ot_study.tell(ot_trial, driver.values_for_optuna(scores))
            return None
        if arch.id in driver.in_flight:
            first = driver.in_flight[arch.id]
            driver.record(_record(number, "duplicate", f"same genome as trial {first}, still running", arch, scores), urgent=False)
            self._ot_study.tell(ot_trial, state=optuna_study.trial_state("FAIL"))
            return None
        earlier = driver.log.evaluated().get(arch.id)
        if earlier is not None:
            reason = f"same genome as trial {earlier['trial']} ({earlier['status']})"
            driver.record(_record(number, "duplicate", reason, arch, earlier["scores"] | scores), urgent=False)
            state = _OPTUNA_STATE.get(earlier["status"], "FAIL")
            if state == "COMPLETE":
                self._ot_study.tell(ot_trial, driver.values_for_optuna(earlier["scores"]))
            else:
                self._ot_study.tell(ot_trial, state=optuna_study.trial_state(state))
            return None
        driver.in_flight[arch.id] = number
        return {"trial": number, "genome": arch.to_dict(), "genome_id": arch.id, "scores": scores}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        # Optuna takes no intermediate values for multi-objective studies; ASHA reads them instead.
        return

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self._completed_trials:
            return
        self._completed_trials.add(trial_id)
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is None:
            return
        driver = self._driver
        try:
            arch = driver.space.genome(ot_trial.params)
        except ArchError:  # cannot happen for a screened candidate; keep the row anyway
            arch = None
        record = outcome_record(driver, ot_trial.number, trial_id, arch, result, error)
        driver.in_flight.pop(record["genome_id"], None)
        driver.record(record, urgent=True)  # on disk before Optuna hears of it
        _tell(self._ot_study, driver, ot_trial.number, record)

    # OptunaSearch pickles its whole __dict__; the driver is found again by path, never pickled.


def _tell(ot_study: Any, driver: _Driver, number: int, record: dict[str, Any]) -> None:
    state = _OPTUNA_STATE.get(record["status"], "FAIL")
    try:
        if state == "COMPLETE":
            ot_study.tell(number, driver.values_for_optuna(record["scores"]))
        else:
            ot_study.tell(number, state=optuna_study.trial_state(state))
    except (RuntimeError, ValueError) as err:  # told already (a resumed run re-reporting a finished trial)
        log.debug("trial %d: %s", number, err)


def outcome_record(driver: _Driver, number: int, tune_trial_id: str, arch: ArchConfig | None, result: dict | None, error: bool) -> dict[str, Any]:
    """The row for a finished Ray trial, from its last reported result."""
    result = result or {}
    # Cheap scores again from the genome (milliseconds): a trial that died reported none.
    scores: dict[str, Any] = driver.scorer.scores(arch) if arch is not None else {}
    for name in [o.name for o in driver.expensive] + ["distill_heldout_loss", "tokens_seen"]:
        scores[name] = result.get(name)
    extra = {
        "elapsed_s": result.get("elapsed_s"),
        "step": result.get("step"),
        "tune_trial_id": tune_trial_id,
        "node": result.get("hostname", ""),
    }
    if error:
        return _record(number, "failed", "the Ray trial errored more often than max_failures allows", arch, scores, **extra)
    status = result.get("status")
    if status == "running":
        at = f" at step {result['step']}" if result.get("step") is not None else ""
        score = f" with distill={result['distill']:.4g}" if isinstance(result.get("distill"), float) else ""
        return _record(number, "pruned", f"stopped by ASHA{at}{score}", arch, scores, **extra)
    if status is None:
        return _record(number, "lost", "stopped before it reported a result", arch, scores, **extra)
    return _record(number, status, result.get("reason", ""), arch, scores, **extra)


# ---- the Ray trial -------------------------------------------------------------------------------


def evaluate_candidate(config: dict[str, Any], setup: dict[str, Any]) -> None:
    """One Ray Tune trial: the expensive scores of one genome, reported to Tune.

    The cheap scores arrive in the config (the driver computed them while screening). Every report
    carries them and a ``status``: "running" at a distillation checkpoint (with the score so far),
    then "ok", "diverged" or "crashed" in the last one. A scorer's
    exception ends the trial with status "crashed" and its message; it does not crash the actor,
    so Ray's retries are kept for workers and nodes that die.
    """
    import torch

    cpus = setup["cpus_per_trial"]
    torch.set_num_threads(cpus)  # the CPUs Ray reserved for this trial, no more
    # The device comes from what Ray gave the trial; reported, so placement can be read from the results.
    placement = {"device": trial_device(), "gpu_ids": ",".join(str(i) for i in ray.get_gpu_ids())}
    trial_id = tune.get_context().get_trial_id()
    finished = setup["finished"].get(trial_id)
    if finished is not None:
        # A resumed search: this trial finished before the driver stopped, after Tune's last
        # snapshot. Its recorded outcome is reported again instead of running it again.
        tune.report(finished)
        return
    started = time.perf_counter()
    base: dict[str, Any] = dict(config["scores"]) | {"trial": config["trial"], "genome_id": config["genome_id"], "status": "running", "reason": ""} | placement
    if "distill" in setup["objectives"]:
        base["step"] = 0  # ASHA's clock
    final: dict[str, Any] = {"status": "ok"}
    checkpoint = None
    try:
        if "distill" in setup["objectives"]:
            final, checkpoint = _distill(ArchConfig.from_dict(config["genome"]), setup, base, started)
    except Exception as err:  # noqa: BLE001 - any scorer failure is the candidate's outcome, not the search's
        final = {"status": "crashed", "reason": f"{type(err).__name__}: {err}".splitlines()[0][:500]}
    if setup["hold_s"]:
        time.sleep(setup["hold_s"])
    final["elapsed_s"] = round(time.perf_counter() - started, 6)
    if checkpoint is not None:
        with checkpoint as directory:
            tune.report(base | final, checkpoint=tune.Checkpoint.from_directory(directory))
    else:
        tune.report(base | final)


def _distill(arch: ArchConfig, setup: dict[str, Any], base: dict[str, Any], started: float):
    from nas.distill import distill

    config = SearchSettings.from_dict(setup["settings"]).distill_config()
    if config.device == "auto":
        config = config.replace(device=base["device"])

    def on_checkpoint(point) -> None:
        base.update(
            distill=float(point.score), distill_heldout_loss=float(point.heldout_loss), step=int(point.step),
            tokens_seen=int(point.tokens_seen), elapsed_s=round(time.perf_counter() - started, 6),
        )
        tune.report(dict(base))  # blocks until Tune has seen it; raises SystemExit if ASHA stops us

    result = distill(arch, config, on_checkpoint=on_checkpoint)
    final: dict[str, Any] = {"status": "ok" if result.status == "ok" else "diverged" if result.status == "diverged" else "crashed", "reason": result.reason or ""}
    if result.status == "ok":
        final["distill"] = float(result.score)
    checkpoint = None
    if result.status == "ok" and setup["keep_students"] and result.student is not None:
        checkpoint = _StudentCheckpoint(result)
    return final, checkpoint


def trial_device() -> str:
    """The device this Ray trial trains on: the first GPU Ray assigned to it ("cuda:0": Ray sets
    CUDA_VISIBLE_DEVICES to the trial's GPUs) when torch can use it, else "cpu". A trial that
    reserved no GPU never takes one, even on a GPU node."""
    import torch

    return "cuda:0" if ray.get_gpu_ids() and torch.cuda.is_available() else "cpu"


class _StudentCheckpoint:
    """A temporary folder holding the student as ``nas.distill.save_student`` writes it (genome,
    safetensors weights, distill.json), for Tune to persist with the trial; removed after reporting."""

    def __init__(self, result) -> None:
        from nas.distill import save_student

        self.directory = tempfile.mkdtemp(prefix="nas-student-")
        save_student(result, os.path.join(self.directory, "student"))

    def __enter__(self) -> str:
        return self.directory

    def __exit__(self, *exc: Any) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def asha_rungs(settings: SearchSettings) -> tuple[int, int] | None:
    """(first rung, last rung) in distillation steps for ASHA, or None when the distillation has
    fewer than two checkpoints (nothing to stop early on). Rungs sit on checkpoints before the last."""
    checkpoints = settings.distill_config().checkpoint_steps
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
        driver = _DRIVERS[self._run_root]
        record = driver.log.records.get(trial.config.get("trial"))
        if record is not None and record.get("tune_trial_id") == trial.trial_id:
            record["restarts"] = trial.num_failures
        _keep_student(driver, trial)
        driver.log.flush()
        _advance(driver)

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        driver = _DRIVERS[self._run_root]
        number = trial.config.get("trial")
        record = driver.log.records.get(number)
        if record is not None and record["status"] == "failed":
            message = _error_line(trial)
            if message:
                record["reason"] = message
            record["restarts"] = trial.num_failures
            driver.record(record, urgent=True)
        _advance(driver)


def _advance(driver: _Driver) -> None:
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


def _keep_student(driver: _Driver, trial: Trial) -> None:
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


def _progress_bar(total: int, enabled: bool, done: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=min(done, total), desc=desc, unit="trial", disable=not enabled, file=sys.stderr, dynamic_ncols=True)


# ---- starting, resuming, finishing ---------------------------------------------------------------


def prepare(settings: SearchSettings, space: Space) -> tuple[list[Objective], list[Constraint], CheapScorer]:
    """Every check that needs no Ray: objectives, profiles, constraints, distillation settings.

    Raises NasError with one line before any work starts.
    """
    settings.check()
    objectives = parse_objectives(settings.objectives)
    constraints = parse_constraints(settings.constraints)
    cheap = [o.name for o in objectives if not o.expensive] + [c.metric for c in constraints]
    scorer = CheapScorer(cheap, settings.seq_len)
    if any(o.expensive for o in objectives):
        try:
            import nas.distill  # noqa: F401
        except ImportError:
            raise NasError("objective distill: the distillation scorer (nas.distill) is not installed in this checkout; use params, flops or latency_ms@PROFILE meanwhile") from None
        settings.distill_config()  # a bad field fails here, not in every trial
    check_feasible(space, constraints, scorer, seed=settings.seed)
    return objectives, constraints, scorer


def check_address(address: str) -> None:
    """NasError unless a Ray cluster answers at `address` (host:port); a quick TCP probe."""
    if address == "auto" or address.startswith("local"):
        return
    target = address.split("://", 1)[-1]
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise NasError(f"--address {address!r}: expected HOST:PORT (the head's GCS port, 6379 by default), or auto")
    try:
        with socket.create_connection((host, int(port)), timeout=3):
            pass
    except OSError as err:
        raise NasError(f"--address {address}: no Ray cluster answers there ({err.strerror or err}); start one with `ray start --head` or drop --address") from None


def connect(address: str | None, num_cpus: int | None = None) -> bool:
    """Join the cluster at `address` (or RAY_ADDRESS), else start a local Ray. True when this call
    initialised Ray, so the caller shuts it down again (a local Ray stops; a cluster is only left)."""
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    quiet = dict(logging_level=logging.ERROR, log_to_driver=False, configure_logging=True)
    if address:
        check_address(address)
        try:
            ray.init(address=address, **quiet)
        except ConnectionError as err:
            hint = ""
            if os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
                # Ray 2.60 turns token authentication on for a head that has a token; a driver
                # without RAY_AUTH_MODE=token is then refused with nothing but retries.
                hint = "; if the cluster uses token authentication, set RAY_AUTH_MODE=token (and its token in ~/.ray/auth_token or RAY_AUTH_TOKEN)"
            raise NasError(f"--address {address}: {str(err).splitlines()[0]}{hint}") from None
        except Exception as err:  # token auth mismatch and the like
            if "auth" in type(err).__name__.lower() or "token" in str(err).lower():
                raise NasError(f"--address {address}: the cluster uses token authentication; set RAY_AUTH_MODE=token and the cluster's token (~/.ray/auth_token or RAY_AUTH_TOKEN)") from None
            raise
        return True
    ray.init(num_cpus=num_cpus, include_dashboard=False, **quiet)
    return True


def run_search(
    settings: SearchSettings,
    run: RunDir,
    *,
    address: str | None = None,
    resume: bool = False,
    progress: bool = True,
    num_cpus: int | None = None,
) -> SearchOutcome:
    """Run (or resume) the search in `run`; return its trials and Pareto front.

    Checks everything checkable first (NasError, one line, before any work); takes the run's lock;
    joins `address` or starts (and later stops) a local Ray.
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
        space = load_space(settings.space)
    objectives, _, _ = prepare(settings, space)
    if address or os.environ.get("RAY_ADDRESS"):
        check_address(address or os.environ["RAY_ADDRESS"])
    run.acquire()
    started_ray = False
    driver: _Driver | None = None
    try:
        # Reports carry the distillation score only from its first checkpoint on, and a crashed
        # trial never has one; Tune's strict check would reject such results.
        os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0: no tables, our progress bar only
        started_ray = connect(address, num_cpus)
        _check_resources(settings)
        if not resume:  # the run exists from here on (all checks passed)
            from nas.search.run_dir import atomic_write_json, atomic_write_text

            atomic_write_text(run.space_path, Path(space.path).read_text())
            atomic_write_json(run.settings_path, settings.to_dict())
        optuna_study.quiet_optuna()
        driver = _Driver(run, settings, space, progress)
        _DRIVERS[str(run.root)] = driver
        if resume:
            _recover_screened_rows(driver)
        started = time.perf_counter()
        tuner = _restore_tuner(driver) if resume else _new_tuner(driver)
        if tuner is not None:
            tuner.fit()
        wall = time.perf_counter() - started
        # Tune returns normally after Ctrl-C (its snapshot still lists the running trials, which a
        # resume restarts); the search is complete when every Ray trial it was to run has a row.
        ray_rows = sum(1 for r in driver.log.records.values() if r.get("tune_trial_id"))
        interrupted = ray_rows < settings.trials and driver.stopped is None
        if not interrupted:
            _settle_orphans(driver)
        driver.log.flush()
        driver.bar.close()
        return SearchOutcome(run, dict(driver.log.records), driver.log.front(), interrupted, wall, ray_rows, driver.stopped)
    finally:
        if driver is not None:
            driver.log.flush()
            driver.bar.close()
        _DRIVERS.pop(str(run.root), None)
        if started_ray:
            ray.shutdown()  # stops the local Ray we started, or leaves the cluster; never `ray stop`
        run.release()


def _check_resources(settings: SearchSettings) -> None:
    """NasError when no node of the cluster can hold one trial's CPUs and GPUs (Tune would wait for ever)."""
    nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    cpus, gpus = settings.cpus_per_trial, settings.gpus_per_trial
    largest = max((node.get("CPU", 0) for node in nodes), default=0)
    if gpus and not any(node.get("GPU", 0) for node in nodes):
        raise NasError(f"--gpus-per-trial {gpus:g}: the Ray cluster has no GPUs ({len(nodes)} node(s), CPUs only); "
                       "drop --gpus-per-trial, or join a cluster with GPU nodes (--address)")  # fmt: skip
    if any(node.get("CPU", 0) >= cpus and node.get("GPU", 0) >= gpus for node in nodes):
        return
    if largest < cpus:
        raise NasError(f"--cpus-per-trial {cpus}: no Ray node has that many CPUs (the largest has {largest:g})")
    most = max(node.get("GPU", 0) for node in nodes)
    with_most = max(node.get("CPU", 0) for node in nodes if node.get("GPU", 0) == most)
    raise NasError(f"--cpus-per-trial {cpus} --gpus-per-trial {gpus:g}: no Ray node has both (the node with most GPUs "
                   f"has {most:g} GPU(s) and {with_most:g} CPUs)")  # fmt: skip


def _trainable(driver: _Driver):
    settings = driver.settings
    finished = {
        r["tune_trial_id"]: _as_result(r)
        for r in driver.log.records.values()
        if r.get("tune_trial_id") and r["status"] in ("ok", "diverged", "crashed")
    }
    setup = {
        "objectives": [o.name for o in driver.objectives],
        "cpus_per_trial": settings.cpus_per_trial,
        "settings": settings.to_dict(),
        "keep_students": settings.keep_students,
        "hold_s": settings.hold_s,
        "finished": finished,
    }
    trainable = tune.with_parameters(evaluate_candidate, setup=setup)
    resources = {"cpu": settings.cpus_per_trial} | ({"gpu": settings.gpus_per_trial} if settings.gpus_per_trial else {})
    return tune.with_resources(trainable, resources)


def _as_result(record: dict[str, Any]) -> dict[str, Any]:
    result = dict(record["scores"]) | {
        "trial": record["trial"], "genome_id": record["genome_id"],
        "status": record["status"], "reason": record["reason"], "elapsed_s": record["elapsed_s"], "step": record["step"],
    }
    return {k: v for k, v in result.items() if v is not None}


def _concurrency(settings: SearchSettings) -> int:
    if settings.concurrency:
        return settings.concurrency
    if settings.gpus_per_trial:  # trials that fit on each node at once, counting its CPUs and its GPUs
        nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
        fit = sum(int(min(n.get("CPU", 0) // settings.cpus_per_trial, n.get("GPU", 0) // settings.gpus_per_trial)) for n in nodes)
        return max(1, min(settings.trials, fit))
    cpus = int(ray.cluster_resources().get("CPU", 1))
    return max(1, min(settings.trials, cpus // settings.cpus_per_trial))


def _new_tuner(driver: _Driver, num_samples: int | None = None) -> tune.Tuner:
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
        _trainable(driver),
        # No metric or mode here: a scalar pair would silently make the study single-objective.
        tune_config=tune.TuneConfig(
            search_alg=ConcurrencyLimiter(searcher, max_concurrent=_concurrency(settings)),
            scheduler=scheduler,
            num_samples=settings.trials if num_samples is None else num_samples,
            reuse_actors=True,  # ~0.2 s per trial instead of ~1.5 s for a fresh actor
            trial_dirname_creator=_trial_dirname,
        ),
        run_config=_run_config(driver),
    )


def _trial_dirname(trial: Trial) -> str:
    return f"trial_{trial.config.get('trial')}_{trial.trial_id}"


def _run_config(driver: _Driver) -> tune.RunConfig:
    return tune.RunConfig(
        name=driver.run.tune_dir.name,
        storage_path=str(driver.run.root),
        failure_config=tune.FailureConfig(max_failures=driver.settings.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        callbacks=[_Recorder(str(driver.run.root))],
        verbose=0,
    )


def _restore_tuner(driver: _Driver) -> tune.Tuner | None:
    if not tune.Tuner.can_restore(str(driver.run.tune_dir)):
        # Killed before Tune's first snapshot: nothing of Tune's to restore. The Optuna journal
        # and trials.csv carry on; Tune starts a fresh experiment for the trials still to run.
        log.warning("%s: no Ray Tune snapshot to restore; continuing with a fresh Tune experiment", driver.run.root)
        shutil.rmtree(driver.run.tune_dir, ignore_errors=True)
        remaining = driver.settings.trials - sum(1 for r in driver.log.records.values() if r.get("tune_trial_id"))
        return _new_tuner(driver, num_samples=remaining) if remaining > 0 else None
    return tune.Tuner.restore(str(driver.run.tune_dir), trainable=_trainable(driver), resume_errored=True)


def _recover_screened_rows(driver: _Driver) -> None:
    """Rows for Optuna trials that finished but missed trials.csv (a kill within a second of
    screening them): rebuilt from the journal, their cheap scores computed again."""
    study = optuna_study.load_study(driver.run.journal_path)
    for frozen in study.get_trials(deepcopy=False):
        if frozen.number in driver.log.records or not frozen.state.is_finished():
            continue
        try:
            arch = driver.space.genome(frozen.params)
        except ArchError as err:
            driver.record(_record(frozen.number, "invalid", str(err)), urgent=False)
            continue
        scores = driver.scorer.scores(arch)
        broken = [c.describe(scores[c.metric]) for c in driver.constraints if not c.holds(scores[c.metric])]
        if broken:
            driver.record(_record(frozen.number, "infeasible", "; ".join(broken), arch, scores), urgent=False)
        else:
            driver.record(_record(frozen.number, "duplicate", "same genome as an earlier trial (rebuilt from the journal)", arch, scores), urgent=False)
    driver.log.flush()


def _settle_orphans(driver: _Driver) -> None:
    """After the last trial: Optuna trials still RUNNING were proposed but never ran (the driver
    stopped first) or ran without Optuna hearing of it; each gets its row and a final state."""
    study = optuna_study.load_study(driver.run.journal_path)
    for frozen in study.get_trials(deepcopy=False, states=[optuna_study.trial_state("RUNNING")]):
        record = driver.log.records.get(frozen.number)
        if record is None:
            try:
                arch = driver.space.genome(frozen.params)
            except ArchError:
                arch = None
            record = _record(frozen.number, "lost", "proposed just before the driver stopped; never ran", arch)
            driver.record(record, urgent=False)
        _tell(study, driver, frozen.number, record)
