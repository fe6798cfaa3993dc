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

import copy
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
from nas.errors import NasError, check_writable_folder
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
# How Optuna hears of each status. Only "ok" trials are COMPLETE, so Optuna's Pareto front (and
# optuna-dashboard's, which ignores constraints) is pareto.json's: an infeasible candidate was never
# trained and has no distillation score to tell; a duplicate's point is its first trial's.
_OPTUNA_STATE = {
    "ok": "COMPLETE",
    "pruned": "PRUNED",
    "infeasible": "PRUNED",  # cut before training; its constraint values say why
    "invalid": "FAIL",
    "duplicate": "FAIL",
    "diverged": "FAIL",
    "crashed": "FAIL",
    "failed": "FAIL",
    "lost": "FAIL",
    "interrupted": "FAIL",
}
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

# The searcher and the callback are pickled by Tune (into the experiment, for resuming) and find
# the driver's live state again through the run folder's path.
_DRIVERS: dict[str, "_Driver"] = {}


class _Driver:
    """Driver-side state of one search: the space, scorers, constraints and the trial log."""

    def __init__(self, run: RunDir, settings: SearchSettings, space: Space, progress: bool, resume: bool = False) -> None:
        self.run = run
        self.settings = settings
        self.space = space
        self.objectives = parse_objectives(settings.objectives)
        self.constraints = parse_constraints(settings.constraints)
        cheap = [o.name for o in self.objectives if not o.expensive] + [c.metric for c in self.constraints]
        self.scorer = CheapScorer(cheap, settings.seq_len)
        if optuna_study.repair_journal(run.journal_path):
            log.warning("%s: cut a torn last line (the driver was killed while writing it)", run.journal_path)
        self.study = optuna_study.open_study(run.journal_path, [o.direction for o in self.objectives])
        self.log = TrialLog(run, self.objectives)
        self._in_journal: dict[int, dict[str, Any]] = {}  # trial number -> the row's fields the journal holds
        self.in_flight: dict[str, int] = {}  # genome id -> Optuna trial number of its running Ray trial
        self.unrecorded: dict[int, dict[str, Any]] = {}  # Ray trials that ended, waiting for Tune's callback
        # Why the searcher stopped proposing before `trials` Ray trials: the time budget ran out, or
        # the sampler kept proposing candidates not worth running. None while it proposes.
        self.stopped: str | None = None
        self.deadline = time.monotonic() + settings.time_budget_s if settings.time_budget_s else None
        self._last_flush = 0.0
        self.tune_dir = run.next_tune_dir()  # this session's Ray Tune experiment
        if resume:
            _rebuild_from_journal(self)
        done = self.ray_rows()
        budget = f" (or {settings.time_budget_s / 60:g} min)" if settings.time_budget_s else ""
        self.bar = _progress_bar(settings.trials, progress, done=done, desc=f"trials{budget}")

    def finish(self, number: int, restarts: int | None = None, error: str = "") -> None:
        """Keep the row of Ray trial `number` (journal, then trials.csv), then tell Optuna."""
        record = self.unrecorded.pop(number, None)
        if record is None:
            return
        record["restarts"] = restarts
        if record["status"] == "failed" and error:
            record["reason"] = error
        self.record(record, urgent=True)
        _tell(self.study, self, number, record)

    def ray_rows(self) -> int:
        """Rows that a Ray trial produced (every session's)."""
        return sum(1 for r in self.log.records.values() if r.get("tune_trial_id"))

    def remember_journal(self, number: int, attrs: dict[str, Any]) -> None:
        """Note a row's fields as the journal already holds them (nothing to write again)."""
        self._in_journal[number] = copy.deepcopy({key: attrs.get(key) for key in optuna_study.RECORD_ATTRS})

    @property
    def expensive(self) -> list[Objective]:
        return [o for o in self.objectives if o.expensive]

    def record(self, record: dict[str, Any], urgent: bool) -> None:
        """Keep a row: in the Optuna journal first (the record a resume rebuilds from), then in
        trials.csv, at once for Ray trials, within a second for screened ones."""
        fields = {key: record.get(key) for key in optuna_study.RECORD_ATTRS}
        written = self._in_journal.get(record["trial"], {})
        changed = {key: value for key, value in fields.items() if key not in written or written[key] != value}
        if changed:
            optuna_study.set_trial_attrs(self.study, record["trial"], changed)
            self._in_journal[record["trial"]] = copy.deepcopy(fields)
        self.log.add(record, flush=False)
        now = time.monotonic()
        if urgent or now - self._last_flush > 1.0:
            self.log.flush()
            self._last_flush = now

    def values_for_optuna(self, scores: dict[str, Any]) -> list[float]:
        """Objective values in order (only "ok" rows are told with values, and they have all)."""
        return [float(scores[o.name]) for o in self.objectives]


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
            ot_trial = self._ot_study.ask()
            optuna_study.suggest_genome_values(driver.space, ot_trial)  # define-by-run: valid genomes only
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
            arch = driver.space.genome(optuna_study.genome_values(ot_trial.params))
        except ArchError as err:  # not from suggest_genome_values; kept for any other proposer
            return self._screened_out(driver, ot_trial, _record(number, "invalid", str(err)))
        scores = driver.scorer.scores(arch)
        values = [scores[c.metric] for c in driver.constraints]
        if driver.constraints:
            optuna_study.set_constraint_values(ot_trial, [c.violation(v) for c, v in zip(driver.constraints, values)])
        broken = [c.describe(v) for c, v in zip(driver.constraints, values) if not c.holds(v)]
        if broken:
            return self._screened_out(driver, ot_trial, _record(number, "infeasible", "; ".join(broken), arch, scores))
        if arch.id in driver.in_flight:
            first = driver.in_flight[arch.id]
            record = _record(number, "duplicate", f"same genome as trial {first}, still running", arch, scores)
            return self._screened_out(driver, ot_trial, record, duplicate_of=first)
        earlier = driver.log.evaluated().get(arch.id)
        if earlier is not None:
            reason = f"same genome as trial {earlier['trial']} ({earlier['status']})"
            record = _record(number, "duplicate", reason, arch, earlier["scores"] | scores)
            return self._screened_out(driver, ot_trial, record, duplicate_of=earlier["trial"])
        driver.in_flight[arch.id] = number
        return {"trial": number, "genome": arch.to_dict(), "genome_id": arch.id, "scores": scores}

    def _screened_out(self, driver: _Driver, ot_trial: Any, record: dict[str, Any], **attrs: Any) -> None:
        """Keep the row of a candidate that will not run and tell Optuna; None: nothing for Ray."""
        driver.record(record, urgent=False)
        if attrs:
            optuna_study.set_trial_attrs(driver.study, ot_trial.number, attrs)
        _tell(self._ot_study, driver, ot_trial, record)
        return None

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        # Each distillation checkpoint becomes an intermediate value of the Optuna trial (ASHA reads
        # the same reports to stop trials early).
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is not None:
            _record_checkpoint(ot_trial, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self._completed_trials:
            return
        self._completed_trials.add(trial_id)
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is None:
            return
        driver = self._driver
        try:
            arch = driver.space.genome(optuna_study.genome_values(ot_trial.params))
        except ArchError:  # cannot happen for a screened candidate; keep the row anyway
            arch = None
        if result:  # the checkpoint ASHA stopped the trial at reaches here, not on_trial_result
            _record_checkpoint(ot_trial, result)
        record = outcome_record(driver, ot_trial.number, trial_id, arch, result, error)
        driver.in_flight.pop(record["genome_id"], None)
        # The row is kept, then told to Optuna, by the callback (_Recorder) that Tune calls next: it
        # adds what only Tune's Trial knows (restarts, the error message), and a row is written once.
        driver.unrecorded[ot_trial.number] = record

    # OptunaSearch pickles its whole __dict__; the driver is found again by path, never pickled.


def _record_checkpoint(ot_trial: Any, result: dict[str, Any]) -> None:
    score, step = result.get("distill"), result.get("step")
    if result.get("status") != "running" or not isinstance(score, float) or not step:
        return
    try:
        optuna_study.record_checkpoint(ot_trial, int(step), score)
    except RuntimeError as err:  # finished already (a resumed run re-reporting)
        log.debug("trial %d: %s", ot_trial.number, err)


def _tell(ot_study: Any, driver: _Driver, trial: Any, record: dict[str, Any]) -> None:
    """Tell Optuna the outcome of `trial` (an Optuna Trial or its number) that its row says.
    The row itself is in the journal already (``_Driver.record``)."""
    state = _OPTUNA_STATE.get(record["status"], "FAIL")
    try:
        if state == "COMPLETE":
            ot_study.tell(trial, driver.values_for_optuna(record["scores"]))
        else:
            ot_study.tell(trial, state=optuna_study.trial_state(state))
    except (RuntimeError, ValueError) as err:  # told already
        log.debug("trial %d: %s", record["trial"], err)


def outcome_record(driver: _Driver, number: int, tune_trial_id: str, arch: ArchConfig | None, result: dict | None, error: bool) -> dict[str, Any]:
    """The row for a finished Ray trial, from its last reported result."""
    result = result or {}
    # Cheap scores again from the genome (milliseconds): a trial that died reported none.
    scores: dict[str, Any] = driver.scorer.scores(arch) if arch is not None else {}
    for name in [o.name for o in driver.expensive] + ["distill_baseline", "distill_heldout_loss", "tokens_seen"]:
        scores[name] = result.get(name)
    extra = {
        "elapsed_s": result.get("elapsed_s"),
        "step": result.get("step"),
        "tune_trial_id": tune_trial_id,
        "node": result.get("node", ""),
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
    started = time.perf_counter()
    base: dict[str, Any] = dict(config["scores"]) | {
        "trial": config["trial"], "genome_id": config["genome_id"], "status": "running", "reason": "", "node": node_label(),
    } | placement
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


def node_label() -> str:
    """The Ray node this process runs on, as ``IP/NODE_ID``: two nodes on one host share a hostname
    and an IP, never a node id (``ray list nodes`` shows the same ids)."""
    context = ray.get_runtime_context()
    return f"{ray.util.get_node_ip_address()}/{context.get_node_id()}"


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
        baseline = _constant_embedding_score(config, result)
        if baseline is not None:
            final["distill_baseline"] = float(baseline)
    checkpoint = None
    if result.status == "ok" and setup["keep_students"] and result.student is not None:
        checkpoint = _StudentCheckpoint(result)
    return final, checkpoint


def _constant_embedding_score(config, result) -> float | None:
    """What a student with one embedding for every input scores, on the search's scale: the floor
    the report draws under the distillation axis."""
    if config.score != "probe":
        return result.baseline_score  # the cosine's, computed by the run
    from nas.distill.quality import probe_baseline
    from nas.distill.teacher import load_teacher

    return probe_baseline(load_teacher(config.teacher, config.resolved_cache_dir).tokenizer)  # cached teacher


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
        driver.finish(trial.config.get("trial"), restarts=trial.num_failures)
        _keep_student(driver, trial)
        driver.log.flush()
        _advance(driver)

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        driver = _DRIVERS[self._run_root]
        driver.finish(trial.config.get("trial"), restarts=trial.num_failures, error=_error_line(trial))
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
        if run.root.is_dir() and any(run.root.iterdir()):
            raise NasError(f"--name {run.root}: a folder with files that is not a search run; pick another --name (nothing was written)")
        space = load_space(settings.space)
    check_writable_folder(run.root, "--resume" if resume else "--name")
    objectives, _, _ = prepare(settings, space)
    if address or os.environ.get("RAY_ADDRESS"):
        check_address(address or os.environ["RAY_ADDRESS"])
    created = not run.root.exists()
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
        driver = _Driver(run, settings, space, progress, resume=resume)
        _DRIVERS[str(run.root)] = driver
        started = time.perf_counter()
        # A resumed search is a fresh Tune experiment for the Ray trials still to run; what ran
        # before is in the journal and trials.csv (never Tune's snapshot, which lags behind).
        remaining = settings.trials - driver.ray_rows()
        tuner = _new_tuner(driver, num_samples=remaining) if remaining > 0 else None
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
        if created and not run.settings_path.exists():  # refused before it began: leave nothing behind
            shutil.rmtree(run.root, ignore_errors=True)


def _describe_study(driver: _Driver) -> None:
    """Metric names, constraint names and what the records mean, on the study (the searcher created it)."""
    from nas.search.run_dir import STATUSES

    notes = _STUDY_NOTES | {"statuses": STATUSES, "run": str(driver.run.root)}
    optuna_study.describe_study(driver.study, [o.name for o in driver.objectives], [c.source for c in driver.constraints], notes)


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
    setup = {
        "objectives": [o.name for o in driver.objectives],
        "cpus_per_trial": settings.cpus_per_trial,
        "settings": settings.to_dict(),
        "keep_students": settings.keep_students,
        "hold_s": settings.hold_s,
    }
    trainable = tune.with_parameters(evaluate_candidate, setup=setup)
    resources = {"cpu": settings.cpus_per_trial} | ({"gpu": settings.gpus_per_trial} if settings.gpus_per_trial else {})
    return tune.with_resources(trainable, resources)


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
        name=driver.tune_dir.name,
        storage_path=str(driver.tune_dir.parent),
        failure_config=tune.FailureConfig(max_failures=driver.settings.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        callbacks=[_Recorder(str(driver.run.root))],
        verbose=0,
    )


def _rebuild_from_journal(driver: _Driver) -> None:
    """Before a resumed session: every trial's row from the Optuna journal (the record; a torn or
    stale trials.csv is repaired from it), and the trials that were running when the search stopped
    told FAIL, with their genomes queued to be proposed again. A finished trial never runs again."""
    study = driver.study
    for frozen in study.get_trials(deepcopy=False):
        if "status" in frozen.user_attrs:
            driver.log.add(_record_from_journal(driver, frozen), flush=False)
            driver.remember_journal(frozen.number, frozen.user_attrs)
        elif frozen.number not in driver.log.records and frozen.state.is_finished():
            _recover_screened_row(driver, frozen)
    for frozen in study.get_trials(deepcopy=False, states=[optuna_study.trial_state("RUNNING")]):
        record = driver.log.records.get(frozen.number)
        if record is not None and record["status"] != "interrupted":  # finished; Optuna not told yet
            _tell(study, driver, frozen.number, record)
            continue
        arch = _genome_or_none(driver, frozen.params)
        reason = "running when the search stopped; its genome is proposed again" if arch else "proposed when the search stopped"
        driver.record(_record(frozen.number, "interrupted", reason, arch, driver.scorer.scores(arch) if arch else None), urgent=False)
        study.tell(frozen.number, state=optuna_study.trial_state("FAIL"))
        if arch is not None:
            study.enqueue_trial(frozen.params, user_attrs={"retry_of": frozen.number})
    driver.log.flush()


def _genome_or_none(driver: _Driver, params: dict[str, Any]) -> ArchConfig | None:
    try:
        return driver.space.genome(optuna_study.genome_values(params))
    except ArchError:
        return None


def _record_from_journal(driver: _Driver, frozen: Any) -> dict[str, Any]:
    attrs = frozen.user_attrs
    arch = _genome_or_none(driver, frozen.params) if attrs["status"] != "invalid" else None
    record = _record(frozen.number, attrs["status"], attrs.get("reason") or "", arch, attrs.get("scores"))
    for key in ("genome_id", "elapsed_s", "step", "restarts", "tune_trial_id", "node"):
        record[key] = attrs.get(key) if attrs.get(key) is not None else record[key]
    return record


def _recover_screened_row(driver: _Driver, frozen: Any) -> None:
    """A finished Optuna trial without a row or journal attributes (a run from before the journal
    kept rows): a screened candidate, rebuilt with its cheap scores computed again."""
    try:
        arch = driver.space.genome(optuna_study.genome_values(frozen.params))
    except ArchError as err:
        driver.record(_record(frozen.number, "invalid", str(err)), urgent=False)
        return
    scores = driver.scorer.scores(arch)
    broken = [c.describe(scores[c.metric]) for c in driver.constraints if not c.holds(scores[c.metric])]
    if broken:
        driver.record(_record(frozen.number, "infeasible", "; ".join(broken), arch, scores), urgent=False)
    else:
        driver.record(_record(frozen.number, "duplicate", "same genome as an earlier trial (rebuilt from the journal)", arch, scores), urgent=False)


def _settle_orphans(driver: _Driver) -> None:
    """After the last trial: Optuna trials still RUNNING were proposed but never ran (the driver
    stopped first) or ran without Optuna hearing of it; each gets its row and a final state."""
    study = driver.study
    for frozen in study.get_trials(deepcopy=False, states=[optuna_study.trial_state("RUNNING")]):
        record = driver.log.records.get(frozen.number)
        if record is None:
            record = _record(frozen.number, "lost", "proposed just before the driver stopped; never ran", _genome_or_none(driver, frozen.params))
            driver.record(record, urgent=False)
        _tell(study, driver, frozen.number, record)
