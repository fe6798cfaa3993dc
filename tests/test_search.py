"""nas.search without Ray: objectives, constraints, feasibility, Pareto fronts, run folder, CSV."""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import subprocess
import sys

import pytest

from nas.arch import ArchError
from nas.errors import NasError
from nas.graph import count
from nas.search.objectives import CheapScorer, check_feasible, non_embedding_params, parse_constraint, parse_objectives
from nas.search.pareto import dominates, hypervolume, non_dominated
from nas.search.run_dir import RunDir, TrialLog, pareto_records, read_trials_csv, trials_csv_text
from nas.search.settings import SearchSettings
from nas.space import load_space

# ---- objectives and constraints ------------------------------------------------------------------


def test_objectives_parse_with_directions_cheap_first():
    objectives = parse_objectives(["distill", "latency_ms@pixel4", "params"])
    assert [(o.name, o.direction, o.expensive) for o in objectives] == [
        ("latency_ms@pixel4", "min", False),
        ("params", "min", False),
        ("distill", "max", True),
    ]


@pytest.mark.parametrize("specs, fragment", [
    (["params", "accuracy"], "unknown objective 'accuracy'"),
    (["params", "params"], "listed twice"),
    ([], "at least one"),
    (["latency_ms@"], "unknown objective"),
])
def test_bad_objectives_are_one_line_errors(specs, fragment):
    with pytest.raises(NasError, match=fragment) as err:
        parse_objectives(specs)
    assert "\n" not in str(err.value)


def test_constraints_parse_numbers_and_suffixes():
    c = parse_constraint("params<=30e6")
    assert (c.metric, c.op, c.limit) == ("params", "<=", 30e6)
    assert parse_constraint(" flops <= 4G ").limit == 4e9
    assert parse_constraint("params<=30M").limit == 30e6
    lat = parse_constraint("latency_ms@pixel4<=80")
    assert lat.metric == "latency_ms@pixel4" and lat.holds(80.0) and not lat.holds(80.5)
    assert lat.violation(100.0) == pytest.approx(0.25)
    assert lat.describe(95.1) == "latency_ms@pixel4=95.1 > 80"
    low = parse_constraint("non_embedding_params>=1e6")
    assert low.holds(2e6) and not low.holds(5e5)


@pytest.mark.parametrize("spec, fragment", [
    ("params<30e6", "use <= or >="),
    ("distill>=0.5", "checked before training"),
    ("accuracy<=3", "unknown metric"),
    ("params<=lots", "cannot read"),
])
def test_bad_constraints_are_one_line_errors(spec, fragment):
    with pytest.raises(NasError, match=fragment):
        parse_constraint(spec)


def test_unknown_latency_profile_is_an_error_naming_the_objective():
    with pytest.raises(NasError, match="latency_ms@no-such-phone"):
        CheapScorer(["latency_ms@no-such-phone"])


def test_cheap_scores_are_the_counters():
    space = load_space("tiny")
    arch = next(space.iter_samples(1, seed=3))
    scores = CheapScorer(["params", "flops", "macs", "non_embedding_params"], seq_len=64).scores(arch)
    cost = count(arch, 64)
    assert scores["params"] == cost.params and scores["flops"] == cost.flops and scores["macs"] == cost.macs
    # Word embeddings at embedding_size; position and token-type embeddings at hidden_size.
    tables = arch.vocab_size * arch.embedding_size + (arch.max_position_embeddings + arch.type_vocab_size) * arch.hidden_size
    assert scores["non_embedding_params"] == non_embedding_params(arch) == cost.params - tables


@functools.lru_cache(maxsize=1)
def _tiny_params_extremes() -> tuple[int, int]:
    """The fewest and most parameters of any genome of the tiny space, by enumerating it."""
    space = load_space("tiny")
    names = list(space.dimensions)
    params = []
    for values in itertools.product(*(space.dimensions[n].values for n in names)):
        try:
            params.append(count(space.genome(dict(zip(names, values))), 1).params)
        except ArchError:
            continue
    return min(params), max(params)


def test_feasibility_finds_the_space_extreme_and_refuses_beyond_it():
    space = load_space("tiny")
    scorer = CheapScorer(["params"])
    smallest, _ = _tiny_params_extremes()
    # Exactly at the extreme: few random draws hit it, the coordinate descent must find it.
    check_feasible(space, [parse_constraint(f"params<={smallest}")], scorer, samples=20)
    with pytest.raises(NasError, match=r"no genome of space tiny meets params<=") as err:
        check_feasible(space, [parse_constraint(f"params<={smallest - 1}")], scorer, samples=20)
    assert f"params={smallest}" in str(err.value)


def test_feasibility_names_constraints_that_conflict_only_together():
    space = load_space("tiny")
    smallest, largest = _tiny_params_extremes()
    both = [parse_constraint(f"params<={smallest}"), parse_constraint(f"params>={largest}")]
    with pytest.raises(NasError, match="together"):
        check_feasible(space, both, CheapScorer(["params"]), samples=50)


def test_feasibility_estimates_the_feasible_share():
    space = load_space("tiny")
    result = check_feasible(space, [parse_constraint("params<=1.1e6")], CheapScorer(["params"]), samples=100)
    assert result.sampled == 100 and 0 < result.feasible < 100


# ---- Pareto fronts and hypervolume ---------------------------------------------------------------


def test_non_dominated_respects_directions_and_drops_repeats():
    points = [(1, 5), (2, 3), (3, 4), (4, 1), (2, 3), (5, 5)]
    assert non_dominated(points, ["min", "min"]) == [0, 1, 3]
    # Maximising the second objective turns the front around.
    assert non_dominated(points, ["min", "max"]) == [0]
    assert dominates((1, 1), (1, 2), ["min", "min"]) and not dominates((1, 2), (1, 2), ["min", "min"])
    # Distinct genomes that score alike are all on the front when asked (as Optuna keeps them).
    assert non_dominated(points, ["min", "min"], keep_equal=True) == [0, 1, 3, 4]


def test_tpe_proposes_after_pruned_trials_that_carry_checkpoints():
    import optuna

    from nas.search.study import make_sampler, record_checkpoint

    study = optuna.create_study(directions=["minimize", "maximize"], sampler=optuna.samplers.RandomSampler(seed=0))
    space = {"x": optuna.distributions.FloatDistribution(0, 1)}
    for number in range(12):
        trial = study.ask(space)
        if number % 3 == 0:
            record_checkpoint(trial, 4, 0.3)
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, [trial.params["x"], 1 - trial.params["x"] ** 2])
    assert study.trials[0].intermediate_values == {4: 0.3}
    # Optuna's own TPE reads a pruned trial's checkpoint as a single-objective score and raises.
    study.sampler = optuna.samplers.TPESampler(seed=0, multivariate=True)
    with pytest.raises(RuntimeError, match="multi-objective"):
        study.ask(space)
    study.sampler = make_sampler("tpe", seed=0)
    for _ in range(3):
        trial = study.ask(space)
        study.tell(trial, [trial.params["x"], 1 - trial.params["x"] ** 2])
    assert study.trials[-1].state.name == "COMPLETE"


def test_hypervolume_2d_matches_the_staircase():
    points = [(1, 3), (2, 2), (3, 1)]
    # Reference (4, 4): three rectangles of a staircase: 3x1 + 2x1 + 1x1 plus ... = 6.
    assert hypervolume(points, ["min", "min"], (4, 4)) == pytest.approx(6.0)
    # A maximised objective: same geometry mirrored.
    assert hypervolume([(1, -3), (2, -2), (3, -1)], ["min", "max"], (4, -4)) == pytest.approx(6.0)
    # Points beyond the reference add nothing.
    assert hypervolume([(5, 0)], ["min", "min"], (4, 4)) == 0.0


def test_hypervolume_3d_equals_counting_unit_cubes():
    points = [(0, 2, 1), (1, 0, 2), (2, 1, 0), (1, 1, 1)]
    ref = (3, 3, 3)
    cubes = sum(
        any(all(p[k] <= c[k] for k in range(3)) for p in points)
        for c in itertools.product(range(3), repeat=3)
    )
    assert hypervolume(points, ["min"] * 3, ref) == pytest.approx(cubes)


# ---- settings, run folder, trials.csv ------------------------------------------------------------


def test_settings_round_trip_and_refuse_unknown_fields(tmp_path):
    settings = SearchSettings(space="tiny", objectives=["params", "flops"], constraints=[], trials=3)
    path = tmp_path / "s.json"
    path.write_text(json.dumps(settings.to_dict()))
    assert SearchSettings.load(path) == settings
    with pytest.raises(NasError, match="unknown setting 'trails'"):
        SearchSettings.from_dict({"trails": 3})
    with pytest.raises(NasError, match="sampler"):
        SearchSettings.from_dict({"sampler": "cmaes"})


def test_pinned_settings_keep_the_distillation_a_run_started_with(tmp_path):
    from nas.distill import DistillConfig

    settings = SearchSettings(space="tiny", distill={"lr": 1e-3}, cpus_per_trial=2)
    path = tmp_path / "settings.json"
    path.write_text(json.dumps(settings.pinned().to_dict()))
    saved = SearchSettings.load(path)
    # every field is written out (none is left to a default a later release may change), threads
    # still follow the trial's CPUs, and the run distils exactly as the unpinned settings do
    assert set(saved.distill) == {f.name for f in dataclasses.fields(DistillConfig)} - {"threads"}
    assert saved.distill["lr"] == 1e-3 and saved.distill["steps"] == DistillConfig().steps
    assert saved.distill_config() == settings.distill_config()
    assert SearchSettings(space="tiny", objectives=["params", "flops"]).pinned().distill == {}
    # a run pinned before params_weight (session 8), stop_fraction and lp_examples (session 12) or
    # divergence_retries (session 13) or lp_crossfit (session 16) existed resumes as it ran, whatever today's defaults
    added = ("params_weight", "stop_fraction", "lp_examples", "divergence_retries", "lp_crossfit")
    older = {k: v for k, v in saved.distill.items() if k not in added}
    resumed = SearchSettings(space="tiny", distill=older).distill_config()
    assert tuple(getattr(resumed, k) for k in added) == (0.0, 1.0, 4000, 0, False)
    assert saved.distill["divergence_retries"] == DistillConfig().divergence_retries == 1  # a new run pins today's
    partial = SearchSettings(space="tiny", distill={"lr": 1e-3})  # a user's overrides are not a pinned run
    assert partial.distill_config().params_weight == DistillConfig().params_weight


def test_a_live_lock_refuses_a_second_search_and_a_stale_one_is_taken_over(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        run = RunDir(tmp_path / "run")
        run.root.mkdir()
        run.lock_path.write_text(json.dumps({"pid": holder.pid, "host": __import__("socket").gethostname(), "started": None}))
        with pytest.raises(NasError, match=f"in use by another search \\(PID {holder.pid}\\)"):
            run.acquire()
    finally:
        holder.kill()
        holder.wait()
    run.acquire()  # the holder is gone: its lock is stale
    assert json.loads(run.lock_path.read_text())["pid"] == __import__("os").getpid()
    run.release()
    assert not run.lock_path.exists()


def _records():
    space = load_space("tiny")
    archs = list(space.iter_samples(4, seed=5))
    scores = [CheapScorer(["params", "flops"]).scores(a) for a in archs]
    return [
        {"trial": 0, "status": "invalid", "reason": "qkv_groups=2 does not divide, \"quoted\"", "genome_id": "", "genome": None,
         "scores": {}, "elapsed_s": None, "step": None, "restarts": None, "tune_trial_id": "", "node": ""},
        {"trial": 1, "status": "ok", "reason": "", "genome_id": archs[0].id, "genome": archs[0].to_dict(),
         "scores": scores[0] | {"distill": 0.625}, "elapsed_s": 1.5, "step": 40, "restarts": 1, "tune_trial_id": "ab12", "node": "vm"},
        {"trial": 2, "status": "infeasible", "reason": "params=2e6 > 1e6", "genome_id": archs[1].id, "genome": archs[1].to_dict(),
         "scores": scores[1], "elapsed_s": None, "step": None, "restarts": None, "tune_trial_id": "", "node": ""},
        {"trial": 3, "status": "pruned", "reason": "stopped by ASHA at step 10", "genome_id": archs[2].id, "genome": archs[2].to_dict(),
         "scores": scores[2] | {"distill": 0.99}, "elapsed_s": 0.5, "step": 10, "restarts": 0, "tune_trial_id": "cd34", "node": "vm"},
        {"trial": 4, "status": "ok", "reason": "", "genome_id": archs[3].id, "genome": archs[3].to_dict(),
         "scores": scores[3] | {"distill": 0.5}, "elapsed_s": 2.0, "step": 40, "restarts": 0, "tune_trial_id": "ef56", "node": "vm"},
    ]


def test_trials_csv_round_trips_every_field(tmp_path):
    objectives = parse_objectives(["params", "distill"])
    records = _records()
    path = tmp_path / "trials.csv"
    path.write_text(trials_csv_text(records, objectives))
    assert read_trials_csv(path) == records
    header = path.read_text().splitlines()[0].split(",")
    assert header[:6] == ["trial", "status", "reason", "genome_id", "params", "distill"]


def test_pruned_trials_never_reach_the_front_even_with_the_best_score(tmp_path):
    objectives = parse_objectives(["params", "distill"])
    records = _records()
    front = pareto_records(records, objectives)
    assert 3 not in {r["trial"] for r in front}  # pruned with the highest (partial) score
    assert {r["trial"] for r in front} <= {1, 4}
    log = TrialLog(RunDir(tmp_path), objectives)
    for record in records:
        log.add(record, flush=False)
    log.flush()
    saved = json.loads((tmp_path / "pareto.json").read_text())
    assert [p["trial"] for p in saved["front"]] == [r["trial"] for r in front]
    assert saved["statuses"] == {"infeasible": 1, "invalid": 1, "ok": 2, "pruned": 1}
    # A new log on the same folder reads the rows back (what a resumed search does).
    assert TrialLog(RunDir(tmp_path), objectives).records == {r["trial"]: r | {"student": None} for r in records}


@pytest.mark.parametrize("sampler", ["nsga2", "tpe", "gp", "random"])
def test_every_proposal_is_a_valid_genome(sampler):
    """The define-by-run space narrows each dimension to values that still complete to a valid
    genome: no invalid proposal, whatever the sampler; the same seed proposes the same genomes."""
    import optuna

    from nas.search import study as optuna_study

    optuna_study.quiet_optuna()
    space = load_space("mobile")

    def proposals(seed: int) -> list[str]:
        study = optuna.create_study(directions=["minimize", "maximize"], sampler=optuna_study.make_sampler(sampler, seed, 8))
        ids = []
        for _ in range(24 if sampler != "gp" else 14):
            trial = study.ask()
            values = optuna_study.suggest_genome_values(space, trial)
            arch = space.genome(optuna_study.genome_values(trial.params))  # raises if not valid
            assert optuna_study.genome_values(trial.params) == values
            ids.append(arch.id)
            study.tell(trial, [arch.hidden_size * arch.num_layers, arch.intermediate_size * arch.num_ffn])
        return ids

    first = proposals(3)
    assert first == proposals(3)
    assert len(set(first)) > len(first) // 2
    # Narrowed dimensions carry their context in the name, so each name has one set of choices.
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(40):
        trial = study.ask()
        optuna_study.suggest_genome_values(space, trial)
        study.tell(trial, 0.0)
    narrowed = {n for t in study.trials for n in t.params if "|" in n}
    assert narrowed and all(n.split("|")[0] in space.dimensions for n in narrowed)
    # The report's view of the study: every trial's genome under the dimensions' own names, so
    # importances see one parameter per dimension (not one per context).
    view = optuna_study.genome_study(study, space)
    assert [optuna_study.genome_values(t.params) for t in study.trials] == [t.params for t in view.trials]
    assert all(set(t.params) == set(space.dimensions) for t in view.trials)
