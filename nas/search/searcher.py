"""The driver side of a search: Optuna proposes, the driver screens and keeps one row per trial.

The searcher (``ParetoOptunaSearch``) and the driver state (``Driver``) live in the driver process;
the row of every trial is kept in the Optuna journal first (the record a resume rebuilds from),
then in trials.csv. Tune pickles the searcher; it finds the live driver again through
``DRIVERS`` by the run folder's path.
"""

from __future__ import annotations

import copy
import logging
import time
from typing import Any

from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from nas.arch import ArchConfig, ArchError
from nas.progress import progress_bar
from nas.search import study as optuna_study
from nas.search.objectives import Objective, parse_scoring
from nas.search.run_dir import RunDir, TrialLog
from nas.search.settings import SearchSettings
from nas.space import Space

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


# The searcher and the callback are pickled by Tune (into the experiment, for resuming) and find
# the driver's live state again through the run folder's path.
DRIVERS: dict[str, "Driver"] = {}


class Driver:
    """Driver-side state of one search: the space, scorers, constraints and the trial log."""

    def __init__(self, run: RunDir, settings: SearchSettings, space: Space, progress: bool, resume: bool = False,
                 scoring: tuple | None = None) -> None:
        """`scoring`: (objectives, constraints, scorer) as ``parse_scoring`` returns them for these
        settings, when the caller has them already; else parsed here."""
        self.run = run
        self.settings = settings
        self.space = space
        if scoring is None:
            scoring = parse_scoring(settings.objectives, settings.constraints, settings.seq_len)
        self.objectives, self.constraints, self.scorer = scoring
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
        self.bar = progress_bar(settings.trials, f"trials{budget}", "trial", enabled=progress, initial=done, leave=True)

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


class ParetoOptunaSearch(OptunaSearch):
    """OptunaSearch that screens candidates before Ray sees them and tells Optuna the truth:
    constraint violations as constraints, ASHA-stopped trials as PRUNED, failures as FAIL."""

    def __init__(self, run_root: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._run_root = run_root

    @property
    def _driver(self) -> Driver:
        return DRIVERS[self._run_root]

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

    def _screen(self, driver: Driver, ot_trial: Any) -> dict[str, Any] | None:
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

    def _screened_out(self, driver: Driver, ot_trial: Any, record: dict[str, Any], **attrs: Any) -> None:
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


def _record_checkpoint(ot_trial: Any, result: dict[str, Any]) -> None:
    score, step = result.get("distill"), result.get("step")
    if result.get("status") != "running" or not isinstance(score, float) or not step:
        return
    try:
        optuna_study.record_checkpoint(ot_trial, int(step), score)
    except RuntimeError as err:  # finished already (a resumed run re-reporting)
        log.debug("trial %d: %s", ot_trial.number, err)


def _tell(ot_study: Any, driver: Driver, trial: Any, record: dict[str, Any]) -> None:
    """Tell Optuna the outcome of `trial` (an Optuna Trial or its number) that its row says.
    The row itself is in the journal already (``Driver.record``)."""
    state = _OPTUNA_STATE.get(record["status"], "FAIL")
    try:
        if state == "COMPLETE":
            ot_study.tell(trial, driver.values_for_optuna(record["scores"]))
        else:
            ot_study.tell(trial, state=optuna_study.trial_state(state))
    except (RuntimeError, ValueError) as err:  # told already
        log.debug("trial %d: %s", record["trial"], err)


def outcome_record(driver: Driver, number: int, tune_trial_id: str, arch: ArchConfig | None, result: dict | None, error: bool) -> dict[str, Any]:
    """The row for a finished Ray trial, from its last reported result."""
    result = result or {}
    # Cheap scores again from the genome (milliseconds): a trial that died reported none.
    scores: dict[str, Any] = driver.scorer.scores(arch) if arch is not None else {}
    for name in [o.name for o in driver.expensive] + ["distill_baseline", "distill_cosine", "distill_heldout_loss", "tokens_seen"]:
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


def _rebuild_from_journal(driver: Driver) -> None:
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
        if record is not None and _finished_whole(driver, record):  # Optuna not told yet
            _tell(study, driver, frozen.number, record)
            continue
        arch = _genome_or_none(driver, frozen.params)
        reason = "running when the search stopped; its genome is proposed again" if arch else "proposed when the search stopped"
        driver.record(_record(frozen.number, "interrupted", reason, arch, driver.scorer.scores(arch) if arch else None), urgent=False)
        study.tell(frozen.number, state=optuna_study.trial_state("FAIL"))
        if arch is not None:
            study.enqueue_trial(frozen.params, user_attrs={"retry_of": frozen.number})
    driver.log.flush()


def _finished_whole(driver: Driver, record: dict[str, Any]) -> bool:
    """A finished trial's row, with every objective value when it reads "ok" (a run journalled
    before "status" was written last can hold an "ok" whose scores the kill cut off)."""
    if record["status"] == "interrupted":
        return False
    return record["status"] != "ok" or all(o.name in record["scores"] for o in driver.objectives)


def _genome_or_none(driver: Driver, params: dict[str, Any]) -> ArchConfig | None:
    try:
        return driver.space.genome(optuna_study.genome_values(params))
    except ArchError:
        return None


def _record_from_journal(driver: Driver, frozen: Any) -> dict[str, Any]:
    attrs = frozen.user_attrs
    arch = _genome_or_none(driver, frozen.params) if attrs["status"] != "invalid" else None
    record = _record(frozen.number, attrs["status"], attrs.get("reason") or "", arch, attrs.get("scores"))
    for key in ("genome_id", "elapsed_s", "step", "restarts", "tune_trial_id", "node"):
        record[key] = attrs.get(key) if attrs.get(key) is not None else record[key]
    return record


def _recover_screened_row(driver: Driver, frozen: Any) -> None:
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


def settle_orphans(driver: Driver) -> None:
    """After the last trial: Optuna trials still RUNNING were proposed but never ran (the driver
    stopped first) or ran without Optuna hearing of it; each gets its row and a final state."""
    study = driver.study
    for frozen in study.get_trials(deepcopy=False, states=[optuna_study.trial_state("RUNNING")]):
        record = driver.log.records.get(frozen.number)
        if record is None:
            record = _record(frozen.number, "lost", "proposed just before the driver stopped; never ran", _genome_or_none(driver, frozen.params))
            driver.record(record, urgent=False)
        _tell(study, driver, frozen.number, record)
