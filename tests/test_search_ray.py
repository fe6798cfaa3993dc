"""nas.search end to end on a local Ray (one instance shared by the module): a search on the tiny
space, its trials.csv and Optuna journal, a killed driver and its resume, export, report, CLI errors."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from nas.arch import ArchConfig  # noqa: E402
from nas.cli import main  # noqa: E402
from nas.search import study as optuna_study  # noqa: E402
from nas.search.objectives import CheapScorer  # noqa: E402
from nas.search.pareto import non_dominated  # noqa: E402
from nas.search.run_dir import RunDir, read_trials_csv  # noqa: E402
from nas.search.settings import SearchSettings  # noqa: E402
from nas.search.trial import HOLD_ENV  # noqa: E402
from nas.space import load_space  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield
    ray.shutdown()


def _median_flops() -> float:
    scorer = CheapScorer(["flops"])
    flops = sorted(scorer.scores(a)["flops"] for a in load_space("tiny").iter_samples(60, seed=11))
    return flops[len(flops) // 2]


@pytest.fixture(scope="module")
def finished_run(local_ray, tmp_path_factory):
    from nas.search.tune import run_search

    limit = _median_flops()
    settings = SearchSettings(
        space="tiny", objectives=["params", "flops"], constraints=[f"flops<={limit:.0f}"], trials=8,
        sampler="nsga2", population_size=4, seed=1,
    )
    run = RunDir(tmp_path_factory.mktemp("runs") / "tiny")
    outcome = run_search(settings, run, progress=False)
    return run, settings, outcome, limit


def test_every_trial_has_one_row_that_agrees_with_the_optuna_journal(finished_run):
    run, settings, outcome, limit = finished_run
    assert not outcome.interrupted and outcome.ray_trials == settings.trials
    records = read_trials_csv(run.trials_csv)
    records_by_trial = {r["trial"]: r for r in records}
    study = optuna_study.load_study(run.journal_path)
    trials = {t.number: t for t in study.trials}
    assert sorted(r["trial"] for r in records) == sorted(trials)  # every Optuna trial, once
    ray_rows = [r for r in records if r["tune_trial_id"]]
    assert len(ray_rows) == settings.trials and len({r["tune_trial_id"] for r in ray_rows}) == settings.trials
    assert {r["status"] for r in ray_rows} == {"ok"}
    assert len({r["genome_id"] for r in ray_rows}) == settings.trials  # no genome ran twice
    assert study.metric_names == ["params", "flops"] and study.user_attrs["constraints"] == settings.constraints
    for r in records:
        trial = trials[r["trial"]]
        state, constraints = trial.state.name, trial.system_attrs.get("constraints")
        assert trial.user_attrs["status"] == r["status"] and trial.user_attrs["reason"] == r["reason"]
        assert trial.user_attrs["genome_id"] == r["genome_id"]
        if r["status"] == "ok":
            assert state == "COMPLETE" and r["scores"]["flops"] <= limit and constraints[0] <= 0
            assert [r["scores"]["params"], r["scores"]["flops"]] == trial.values
        elif r["status"] == "infeasible":  # never trained: constraint values, no objective values
            assert state == "PRUNED" and trial.values is None
            assert r["scores"]["flops"] > limit and constraints == [pytest.approx(r["scores"]["flops"] / limit - 1)]
            assert r["reason"].startswith("flops=")
        elif r["status"] == "invalid":
            assert state == "FAIL" and r["genome"] is None and r["reason"]
        else:
            assert r["status"] == "duplicate" and state == "FAIL"
            assert records_by_trial[trial.user_attrs["duplicate_of"]]["genome_id"] == r["genome_id"]
    # Ray Tune ran exactly the ok trials, one trial folder each.
    assert len([p for p in run.tune_dir.iterdir() if p.is_dir() and p.name.startswith("trial_")]) == settings.trials
    assert not run.lock_path.exists()


def test_pareto_json_is_the_non_dominated_set_of_trials_csv(finished_run):
    run, _, outcome, _ = finished_run
    records = [r for r in read_trials_csv(run.trials_csv) if r["status"] == "ok"]
    points = [(r["scores"]["params"], r["scores"]["flops"]) for r in records]
    expected = {records[i]["genome_id"] for i in non_dominated(points, ["min", "min"])}
    front = json.loads(run.pareto_json.read_text())["front"]
    assert {p["genome_id"] for p in front} == expected == {p["genome_id"] for p in outcome.front}
    for point in front:
        assert ArchConfig.from_dict(point["genome"]).id == point["genome_id"]
    # Optuna and optuna-dashboard (which ignores constraints) show the same front, trial for trial.
    study = optuna_study.load_study(run.journal_path)
    assert sorted(t.number for t in study.best_trials) == sorted(p["trial"] for p in front)
    shown = _dashboard_study(run.journal_path)
    assert sorted(t["number"] for t in shown["best_trials"]) == sorted(p["trial"] for p in front)


def _dashboard_study(journal: Path) -> dict:
    """The run's study as optuna-dashboard's own web API serves it to the browser."""
    from wsgiref.util import setup_testing_defaults

    from optuna_dashboard import wsgi

    app = wsgi(optuna_study.journal_storage(journal))

    def get(path: str) -> dict:
        environ: dict = {}
        setup_testing_defaults(environ)
        environ["PATH_INFO"] = path
        status: list[str] = []
        body = b"".join(app(environ, lambda code, headers, exc_info=None: status.append(code)))
        assert status[0].startswith("200"), (path, status, body[:300])
        return json.loads(body)

    (summary,) = get("/api/studies")["study_summaries"]
    return get(f"/api/studies/{summary['study_id']}")


def test_optuna_dashboard_shows_metric_names_statuses_and_constraints(finished_run):
    run, settings, _, _ = finished_run
    records = {r["trial"]: r for r in read_trials_csv(run.trials_csv)}
    shown = _dashboard_study(run.journal_path)
    assert shown["objective_names"] == ["params", "flops"]
    study_attrs = {a["key"]: a["value"] for a in shown["user_attrs"]}
    assert json.loads(study_attrs["constraints"]) == settings.constraints and "trial_states" in study_attrs
    for trial in shown["trials"]:
        record = records[trial["number"]]
        attrs = {a["key"]: a["value"] for a in trial["user_attrs"]}
        assert attrs["status"] == record["status"] and attrs["reason"] == record["reason"]
        state = {"ok": "Complete", "infeasible": "Pruned"}.get(record["status"], "Fail")
        assert trial["state"] == state
        if record["genome"] is not None:  # scored: its constraint value is shown, > 0 when broken
            assert len(trial["constraints"]) == 1 and (trial["constraints"][0] > 0) == (record["status"] == "infeasible")


def test_node_names_the_ray_node_by_ip_and_id(finished_run):
    run, *_ = finished_run
    nodes = {f"{n['NodeManagerAddress']}/{n['NodeID']}" for n in ray.nodes()}
    ray_rows = [r for r in read_trials_csv(run.trials_csv) if r["tune_trial_id"]]
    assert ray_rows and {r["node"] for r in ray_rows} <= nodes


def test_asha_stopped_and_errored_trials_are_told_to_optuna_as_pruned_and_failed(local_ray, tmp_path):
    import optuna

    from nas.search import searcher as search_driver

    settings = SearchSettings(space="tiny", objectives=["params", "flops"], constraints=[], trials=3, sampler="random")
    run = RunDir(tmp_path / "unit")
    run.root.mkdir()
    driver = search_driver.Driver(run, settings, load_space("tiny"), progress=False)
    search_driver.DRIVERS[str(run.root)] = driver
    try:
        searcher = search_driver.ParetoOptunaSearch(
            str(run.root), space=optuna_study.distributions(driver.space), metric=["params", "flops"], mode=["min", "min"],
            sampler=optuna.samplers.RandomSampler(seed=0), storage=optuna_study.journal_storage(run.journal_path),
            study_name=optuna_study.STUDY_NAME,
        )
        configs = {tid: searcher.suggest(tid) for tid in ("stopped", "errored", "done")}
        stopped = configs["stopped"]["scores"] | {"status": "running", "step": 5, "distill": 0.97}
        searcher.on_trial_complete("stopped", result=stopped)
        searcher.on_trial_complete("errored", error=True)
        searcher.on_trial_complete("done", result=configs["done"]["scores"] | {"status": "ok", "elapsed_s": 0.1})
        for config in configs.values():  # what the Tune callback does next, with what only Tune knows
            driver.finish(config["trial"], restarts=0)
        states = {t.number: t.state.name for t in searcher._ot_study.trials}
        rows = {tid: driver.log.records[configs[tid]["trial"]] for tid in configs}
        assert states[configs["stopped"]["trial"]] == "PRUNED" and rows["stopped"]["status"] == "pruned"
        assert rows["stopped"]["reason"] == "stopped by ASHA at step 5 with distill=0.97"
        assert searcher._ot_study.trials[configs["stopped"]["trial"]].intermediate_values == {5: 0.97}
        assert states[configs["errored"]["trial"]] == "FAIL" and rows["errored"]["status"] == "failed"
        assert states[configs["done"]["trial"]] == "COMPLETE" and rows["done"]["status"] == "ok"
        assert [p["trial"] for p in json.loads(run.pareto_json.read_text())["front"]] == [configs["done"]["trial"]]
    finally:
        search_driver.DRIVERS.pop(str(run.root), None)


def test_a_time_budget_ends_the_search_early_and_cleanly(local_ray, tmp_path):
    from nas.search.tune import run_search

    settings = SearchSettings(space="tiny", objectives=["params", "flops"], constraints=[], trials=40, sampler="random",
                              time_budget_s=2.0)
    run = RunDir(tmp_path / "budget")
    outcome = run_search(settings, run, progress=False, trial_hold_s=0.5)
    assert outcome.stopped == "time budget of 2 s spent" and not outcome.interrupted
    assert outcome.ray_trials < settings.trials
    study = optuna_study.load_study(run.journal_path)
    assert sorted(t.number for t in study.trials) == sorted(outcome.records)
    assert not [t for t in study.trials if t.state.name == "RUNNING"]


def _descendants(pid: int) -> list[int]:
    out, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        for child in Path(f"/proc/{parent}/task/{parent}/children").read_text().split() if Path(f"/proc/{parent}").exists() else []:
            out.append(int(child))
            frontier.append(int(child))
    return out


def _ray_rows(run: RunDir) -> list[dict]:
    return [r for r in read_trials_csv(run.trials_csv, skip_bad_lines=True) if r["tune_trial_id"]] if run.trials_csv.exists() else []


# When the driver is killed: before its first Ray trial finished; with trials in flight; the moment
# a trial's row appeared (the kill races Optuna's tell); the moment ASHA pruned a trial.
_KILL_MOMENTS = {
    "before_any_trial": lambda run, rows, seen: run.settings_path.exists() and run.journal_path.exists() and not rows,
    "trials_in_flight": lambda run, rows, seen: len(rows) >= 2,
    "right_after_a_trial_finished": lambda run, rows, seen: len(rows) > seen,
    "while_asha_prunes": lambda run, rows, seen: any(r["status"] == "pruned" for r in rows),
}


@pytest.mark.parametrize("moment", list(_KILL_MOMENTS))
def test_a_search_killed_at_any_moment_resumes_exactly(moment, local_ray, tmp_path):
    """kill -9 of the driver, then --resume: exactly `trials` Ray trials in all, each genome
    trained by one, every row that was finished before the kill unchanged, Optuna in step."""
    from nas.search.tune import run_search

    if moment == "while_asha_prunes":
        settings = SearchSettings(
            space="tiny", objectives=["params", "distill"], constraints=[], trials=6, sampler="random", seed=5,
            concurrency=2, asha_reduction_factor=2, time_budget_s=None,
            distill={"steps": 8, "num_checkpoints": 2, "seq_len": 16, "batch_size": 4, "heldout_examples": 8, "score": "cosine"},
        )
    else:
        settings = SearchSettings(space="tiny", objectives=["params", "flops"], constraints=[], trials=6, sampler="tpe",
                                  seed=2, concurrency=2)
    settings_path = tmp_path / "settings.json"
    settings_path.write_text(json.dumps(settings.to_dict()))
    run = RunDir(tmp_path / "killed")
    # The driver joins this module's Ray (starting a second one would double the test's time).
    env = os.environ | {"PYTHONPATH": str(REPO), "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    if moment != "while_asha_prunes":  # trials that hold their CPUs 1.5 s, so the kill finds some running
        env[HOLD_ENV] = "1.5"
    driver = subprocess.Popen(
        [sys.executable, "-m", "nas.cli", "search", "--settings", str(settings_path), "--name", str(run.root), "--quiet", "--no-report"],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    ready, seen = _KILL_MOMENTS[moment], None
    try:
        deadline = time.time() + 240
        while time.time() < deadline and driver.poll() is None:
            rows = _ray_rows(run)
            seen = len(rows) if seen is None and run.trials_csv.exists() else seen
            if ready(run, rows, seen if seen is not None else 10**9):
                break
            time.sleep(0.05)
        assert driver.poll() is None, "the search ended before it could be killed"
        leftovers = _descendants(driver.pid)
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    for pid in leftovers:  # the Ray processes that driver started, by PID
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    before = _ray_rows(run)  # as the kill left it
    assert len(before) < settings.trials
    outcome = run_search(None, run, resume=True, progress=False)  # takes over the dead driver's lock
    after = read_trials_csv(run.trials_csv)
    ray_rows = [r for r in after if r["tune_trial_id"]]
    assert not outcome.interrupted and len(ray_rows) == settings.trials
    assert len({r["genome_id"] for r in ray_rows}) == settings.trials  # no genome trained by two Ray trials
    for old in before:  # finished before the kill: kept as it was, not run again
        assert next(r for r in after if r["trial"] == old["trial"]) == old
    # The resumed session ran exactly the missing Ray trials, none of the finished genomes.
    resumed = [json.loads((p / "params.json").read_text()) for p in run.tune_dirs()[-1].glob("trial_*")]
    assert len(resumed) == settings.trials - len(before)
    assert not {c["genome_id"] for c in resumed} & {r["genome_id"] for r in before}
    study = optuna_study.load_study(run.journal_path)
    assert not [t for t in study.trials if t.state.name in ("RUNNING", "WAITING")]
    assert sorted(t.number for t in study.trials) == sorted(r["trial"] for r in after)
    for trial in study.trials:  # the journal holds every row (what a torn trials.csv is rebuilt from)
        row = next(r for r in after if r["trial"] == trial.number)
        assert trial.user_attrs["status"] == row["status"] and trial.user_attrs["genome_id"] == row["genome_id"]


def test_a_row_a_kill_cut_between_its_journal_lines_is_run_again_and_the_stale_lock_removed(tmp_path):
    """The journal takes a row one field per line: "status" is written last, and a row a kill left
    as "ok" without its scores (a journal written before that order) has its genome proposed again."""
    from optuna.storages.journal import JournalFileSymlinkLock

    from nas.search import searcher as search_driver

    settings = SearchSettings(space="tiny", objectives=["params", "flops"], constraints=[], trials=3, sampler="random")
    run = RunDir(tmp_path / "cut")
    run.root.mkdir()
    space = load_space("tiny")
    driver = search_driver.Driver(run, settings, space, progress=False)
    whole, cut = driver.study.ask(), driver.study.ask()
    archs = [space.genome(optuna_study.suggest_genome_values(space, t)) for t in (whole, cut)]
    optuna_study.set_trial_attrs(driver.study, whole.number, {"status": "ok", "genome_id": archs[0].id, "scores": {"params": 1.0, "flops": 2.0}})
    ops = [json.loads(line) for line in run.journal_path.read_text().splitlines()]
    assert [list(op["user_attr"]) for op in ops if "user_attr" in op][-1] == ["status"]
    optuna_study.set_trial_attrs(driver.study, cut.number, {"status": "ok", "genome_id": archs[1].id})  # scores cut off
    JournalFileSymlinkLock(str(run.journal_path)).acquire()  # held by the killed driver, never released
    lock = Path(str(run.journal_path) + optuna_study.JOURNAL_LOCK_SUFFIX)
    assert os.path.lexists(lock)

    resumed = search_driver.Driver(run, settings, space, progress=False, resume=True)
    assert not os.path.lexists(lock)
    trials = {t.number: t for t in resumed.study.get_trials(deepcopy=False)}
    assert trials[whole.number].state.name == "COMPLETE" and trials[whole.number].values == [1.0, 2.0]
    assert trials[cut.number].state.name == "FAIL" and resumed.log.records[cut.number]["status"] == "interrupted"
    retry = [t for t in trials.values() if t.state.name == "WAITING"]
    assert len(retry) == 1 and retry[0].user_attrs["retry_of"] == cut.number
    assert retry[0].system_attrs["fixed_params"] == cut.params  # the same genome, proposed again


@pytest.mark.parametrize("cut", ["mid_line", "line_end"])
def test_a_torn_trials_csv_is_rebuilt_from_the_journal_on_resume(cut, finished_run, tmp_path):
    import shutil

    from nas.search.tune import run_search

    run = RunDir(tmp_path / "torn")
    shutil.copytree(finished_run[0].root, run.root)
    original = run.trials_csv.read_text()
    lines = original.splitlines(keepends=True)
    keep = len(lines) // 2
    torn = "".join(lines[:keep]) + (lines[keep][: len(lines[keep]) // 2] if cut == "mid_line" else "")
    run.trials_csv.write_text(torn)
    outcome = run_search(None, run, resume=True, progress=False)
    assert not outcome.interrupted and outcome.ray_trials == finished_run[1].trials  # nothing run again
    assert run.trials_csv.read_text() == original
    assert json.loads(run.pareto_json.read_text()) == json.loads((finished_run[0].pareto_json).read_text())


def test_export_writes_loadable_genomes_configs_and_onnx(finished_run, tmp_path):
    from transformers import AutoConfig

    from nas.hf import arch_from_config
    from nas.search.export import export_front

    run, *_ = finished_run
    index = export_front(run, tmp_path / "out", onnx=True, seq_len=16)
    front = json.loads(run.pareto_json.read_text())["front"]
    assert [e["genome_id"] for e in index] == [p["genome_id"] for p in front]
    for entry, point in zip(index, front):
        folder = tmp_path / "out" / entry["folder"]
        assert ArchConfig.load(folder / "genome.json").to_dict() == point["genome"]
        # every genome is a transformers model (nas_encoder where no native family reloads it exactly)
        config = AutoConfig.from_pretrained(folder / "transformers")
        assert config.model_type == entry["transformers"] and entry["config_only"]
        assert arch_from_config(config, pooler=point["genome"]["pooler"]) == ArchConfig.from_dict(point["genome"])
        import onnxruntime

        session = onnxruntime.InferenceSession(str(folder / "model.onnx"))
        feeds = {i.name: __import__("numpy").ones((1, 16), dtype="int64") for i in session.get_inputs()}
        hidden = session.run(None, feeds)[0]
        assert hidden.shape == (1, 16, point["genome"]["hidden_size"])
    assert json.loads((tmp_path / "out" / "index.json").read_text())["genomes"] == index
    with pytest.raises(Exception, match="not empty"):
        export_front(run, tmp_path / "out")


def test_report_writes_png_html_and_a_table_with_the_references(finished_run, tmp_path):
    import matplotlib.image

    from nas.references import reference_names
    from nas.search.report import write_report

    run, *_ = finished_run
    paths = write_report(run, tmp_path / "report")
    assert matplotlib.image.imread(paths["png"]).ndim == 3
    assert "plotly" in paths["html"].read_text()[:200000].lower()
    text = paths["markdown"].read_text()
    for point in json.loads(run.pareto_json.read_text())["front"]:
        assert point["genome_id"] in text
    for name in reference_names():
        assert f"| {name} |" in text


@pytest.mark.parametrize("argv, fragment", [
    (["--objectives", "params,accuracy"], "unknown objective 'accuracy'"),
    (["--space", "tiny", "--objectives", "params,flops", "--constraints", "params<=10"], "no genome of space tiny meets params<=10"),
    (["--space", "tiny", "--objectives", "params,flops", "--constraints", "", "--address", "127.0.0.1:1"], "no Ray cluster answers"),
    (["--space", "tiny", "--objectives", "latency_ms@no-such-phone", "--constraints", ""], "latency_ms@no-such-phone"),
])
def test_bad_searches_fail_in_one_line_before_any_work(argv, fragment, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["search", *argv]) == 2
    err = capsys.readouterr().err
    assert fragment in err and err.count("\n") == 1
    assert not (tmp_path / "runs").exists()  # nothing was started


def test_a_second_search_into_a_run_in_use_is_refused(finished_run, capsys):
    run, *_ = finished_run
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        run.lock_path.write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname(), "started": None}))
        assert main(["search", "--resume", str(run.root)]) == 2
        assert f"in use by another search (PID {holder.pid})" in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()
        run.lock_path.unlink()


@pytest.fixture(scope="module")
def distill_run(local_ray, tmp_path_factory):
    """A search with the distillation score: a tiny MobileBERT-like space (every genome has a
    transformers family) where half the genomes have a vocabulary the teacher's tokenizer does not
    match (their distillation raises), ASHA on, students kept."""
    import yaml

    from nas.search.tune import run_search

    root = tmp_path_factory.mktemp("distill")
    space = yaml.safe_load((REPO / "search_spaces" / "tiny.yaml").read_text())
    for name in ("qkv_groups", "intermediate_groups", "output_groups", "intra_bottleneck_size", "attention_input"):
        del space["dimensions"][name]
    space["fixed"] |= {"intra_bottleneck_size": 32, "attention_input": "shared_bottleneck"}
    del space["fixed"]["vocab_size"]
    space["dimensions"]["vocab_size"] = {"choices": [30522, 30000]}
    space_path = root / "tiny_vocab.yaml"
    space_path.write_text(yaml.safe_dump(space))
    settings = SearchSettings(
        space=str(space_path), objectives=["params", "distill"], constraints=[], trials=10, sampler="random", seed=4,
        concurrency=1, keep_students=True, asha_reduction_factor=2, time_budget_s=None,  # trials, not a busy machine's clock, end it
        # lr pinned: with seed 4 these settings give trials that ASHA stops at lr 2e-3, and none at
        # the default 1e-3, whose scores at the rung fall in another order
        distill={"steps": 8, "num_checkpoints": 2, "seq_len": 16, "batch_size": 4, "heldout_examples": 8, "score": "probe",
                 "lr": 2e-3, "params_weight": 0.0},
    )
    run = RunDir(root / "run")
    outcome = run_search(settings, run, progress=False)
    return run, settings, outcome


def test_distillation_trials_report_checkpoints_asha_prunes_and_crashes_are_recorded(distill_run):
    run, settings, outcome = distill_run
    records = read_trials_csv(run.trials_csv)
    ray_rows = [r for r in records if r["tune_trial_id"]]
    assert not outcome.interrupted and len(ray_rows) == settings.trials
    study = optuna_study.load_study(run.journal_path)
    states = {t.number: t.state.name for t in study.trials}
    statuses = {r["status"] for r in ray_rows}
    assert {"ok", "crashed", "pruned"} <= statuses <= {"ok", "crashed", "pruned"}
    for r in ray_rows:
        if r["status"] == "crashed":  # the search went on; the reason is the scorer's error
            assert r["genome"]["vocab_size"] == 30000 and "does not match the teacher's tokenizer" in r["reason"]
            assert states[r["trial"]] == "FAIL"
        elif r["status"] == "pruned":  # stopped at the first checkpoint, told PRUNED, never on the front
            assert r["step"] == 4 and r["reason"].startswith("stopped by ASHA at step 4")
            assert states[r["trial"]] == "PRUNED" and -1 <= r["scores"]["distill"] <= 1
        else:
            assert r["step"] == 8 and states[r["trial"]] == "COMPLETE" and -1 <= r["scores"]["distill"] <= 1
            assert -1 <= r["scores"]["distill_cosine"] <= 1  # the cosine beside the probe score the search read
    front = json.loads(run.pareto_json.read_text())["front"]
    ok = {r["trial"] for r in ray_rows if r["status"] == "ok"}
    assert front and {p["trial"] for p in front} <= ok
    # Every checkpoint is an intermediate value in Optuna, pruned trials' included; the dashboard
    # shows them, names the metrics and draws the same front.
    shown = _dashboard_study(run.journal_path)
    steps = {t["number"]: [v["step"] for v in t["intermediate_values"]] for t in shown["trials"]}
    for r in ray_rows:
        assert steps[r["trial"]] == ([] if r["status"] == "crashed" else [4] if r["status"] == "pruned" else [4, 8])
        if r["status"] == "pruned":
            (checkpoint,) = [t for t in shown["trials"] if t["number"] == r["trial"]][0]["intermediate_values"]
            assert checkpoint["value"] == pytest.approx(r["scores"]["distill"])
    assert shown["objective_names"] == ["params", "distill"] and shown["has_intermediate_values"]
    assert sorted(t["number"] for t in shown["best_trials"]) == sorted(p["trial"] for p in front)
    # Students are kept for exactly the Pareto-optimal genomes.
    kept = sorted(p.name for p in run.students_dir.iterdir())
    assert kept == sorted(p["genome_id"] for p in front) and all(p["student"] for p in front)
    # The quality objective is the score the settings ask for: here the downstream probe, an accuracy.
    for point in front:
        record = json.loads((run.root / point["student"] / "distill.json").read_text())
        assert record["config"]["score"] == "probe"
        assert point["scores"]["distill"] == record["score"] == record["checkpoints"][-1]["probe"]
        assert 0.0 <= point["scores"]["distill"] <= 1.0


def test_export_carries_a_kept_students_weights_into_transformers(distill_run, tmp_path):
    import torch
    from transformers import AutoModel, AutoTokenizer

    from nas.distill import load_student
    from nas.hf import export_family
    from nas.search.export import export_front

    run, *_ = distill_run
    index = export_front(run, tmp_path / "out")
    front = json.loads(run.pareto_json.read_text())["front"]
    entry, point = index[0], front[0]
    assert entry["transformers"] == export_family(ArchConfig.from_dict(point["genome"]))
    assert entry["weights"] == "distilled student"
    folder = tmp_path / "out" / entry["folder"] / "transformers"
    hf_model = AutoModel.from_pretrained(folder, attn_implementation="eager").eval()
    tokens = AutoTokenizer.from_pretrained(folder)("a kept student", return_tensors="pt")
    ours = load_student(run.root / point["student"])
    with torch.no_grad():
        expected = ours(tokens["input_ids"], tokens["attention_mask"]).last_hidden_state
        got = hf_model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]).last_hidden_state
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_report_places_references_as_lines_on_the_distillation_axis(distill_run, tmp_path):
    from nas.search.report import RunResults, front_figure, write_report

    run, *_ = distill_run
    paths = write_report(run, tmp_path / "report")
    text = paths["markdown"].read_text()
    assert "Not distilled" in text and "| mobilebert |" in text
    assert "not distilled" in paths["html"].read_text()
    # The constant-embedding floor is drawn; pruned partial scores do not stretch the score axis.
    results = RunResults.load(run)
    records = read_trials_csv(run.trials_csv)
    ok = [r["scores"]["distill"] for r in records if r["status"] == "ok"]
    assert results.baseline is not None and 0 < results.baseline < max(ok) and "constant embedding" in text
    figure = front_figure(results)
    ax = figure.axes[0]
    low, high = ax.get_ylim()
    shown = ok + [results.baseline] + [s["distill"] for s in results.references.values() if "distill" in s]
    assert low <= min(shown) and high >= max(shown) and high - low <= 1.2 * (max(shown) - min(shown))
    assert any(line.get_label().startswith("constant embedding") for line in ax.lines)
    _assert_no_label_overlaps(figure)


def _assert_no_label_overlaps(figure) -> None:
    from matplotlib.text import Annotation

    renderer = figure.canvas.get_renderer()
    for ax in figure.axes:
        boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in ax.texts if isinstance(t, Annotation) and t.get_text()]
        for i, (name, box) in enumerate(boxes):
            for other, other_box in boxes[i + 1:]:
                assert not box.overlaps(other_box), f"labels {name!r} and {other!r} overlap"


def test_report_draws_constraints_and_optunas_views_of_the_study(finished_run, tmp_path):
    from PIL import Image

    from nas.search.report import RunResults, front_figure, write_report

    run, settings, _, limit = finished_run
    paths = write_report(run, tmp_path / "report")
    for name in ("hypervolume", "importances", "parallel"):
        assert Image.open(paths[name]).size[0] > 500  # a real picture, beside the front
    text = paths["markdown"].read_text()
    assert "hypervolume history" in text and "optuna-dashboard" in text
    figure = front_figure(RunResults.load(run))
    constraint_lines = [line for ax in figure.axes for line in ax.lines if line.get_label() == f"constraint {settings.constraints[0]}"]
    assert constraint_lines and all(limit in line.get_xdata() or limit in line.get_ydata() for line in constraint_lines)
    _assert_no_label_overlaps(figure)
