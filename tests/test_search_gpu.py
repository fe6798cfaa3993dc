"""GPUs per trial: settings, the request Ray Tune gets, its refusal when no node can hold it, and the
placement of trials on a GPU. The GPU is a resource Ray is told about (``ray.init(num_gpus=1)``):
Ray schedules on it and assigns it like a real one; without CUDA the trial trains on its CPUs."""

from __future__ import annotations

import json

import pytest

ray = pytest.importorskip("ray")
torch = pytest.importorskip("torch")

from nas.cli import main  # noqa: E402
from nas.errors import NasError  # noqa: E402
from nas.search.run_dir import RunDir, read_trials_csv  # noqa: E402
from nas.search.settings import SearchSettings  # noqa: E402

TINY_SEARCH = dict(space="tiny", objectives=["params", "flops"], constraints=[], sampler="random", seed=3)


@pytest.fixture
def ray_with_a_gpu():
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.parametrize("gpus, fragment", [(-0.5, "0 or more"), (1.5, "whole number"), (float("nan"), "0 or more"),
                                            (True, "0 or more")])  # fmt: skip
def test_gpus_per_trial_is_validated(gpus, fragment):
    with pytest.raises(NasError, match=f"gpus_per_trial: .*{fragment}"):
        SearchSettings.from_dict({"gpus_per_trial": gpus})
    assert SearchSettings.from_dict({"gpus_per_trial": 0.25}).gpus_per_trial == 0.25
    assert SearchSettings.from_dict({"gpus_per_trial": 2}).gpus_per_trial == 2


def test_a_search_refuses_to_pick_the_distillation_device_itself():
    with pytest.raises(NasError, match=r"distill: device 'cuda': a trial trains on the GPU Ray gives it"):
        SearchSettings.from_dict({"distill": {"device": "cuda"}})
    assert SearchSettings.from_dict({"distill": {"device": "cpu"}}).distill_config().device == "cpu"


def test_gpus_per_trial_without_gpus_in_the_cluster_is_one_line_before_any_work(capsys, tmp_path, monkeypatch):
    if ray.is_initialized():
        pytest.skip("needs this test to start its own Ray")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    # a local Ray of this machine: the check reads what Ray detected
    code = main(["search", "--space", "tiny", "--objectives", "params,flops", "--constraints", "", "--trials", "1",
                 "--gpus-per-trial", "0.5", "--name", "gpu-run", "--quiet", "--no-report"])  # fmt: skip
    err = capsys.readouterr().err
    if code == 0:
        pytest.skip("this machine has a GPU Ray detected")
    assert code == 2 and err.count("\n") == 1, err
    assert "--gpus-per-trial 0.5: the Ray cluster has no GPUs" in err
    run = RunDir(tmp_path / "runs" / "gpu-run")
    assert not run.settings_path.exists() and not run.tune_dir.exists()  # no trial, no settings: nothing started


def test_a_request_no_node_can_hold_is_refused(ray_with_a_gpu, tmp_path):
    from nas.search.tune import run_search

    settings = SearchSettings(**TINY_SEARCH, trials=1, gpus_per_trial=2)
    with pytest.raises(NasError, match=r"^--cpus-per-trial 1 --gpus-per-trial 2: no Ray node has both .*1 GPU\(s\) and 2 CPUs\)$"):
        run_search(settings, RunDir(tmp_path / "too-big"), progress=False)
    assert not (tmp_path / "too-big" / "settings.json").exists()


def test_trials_are_placed_on_the_gpu_and_share_it(ray_with_a_gpu, tmp_path):
    from nas.search.cluster import concurrency
    from nas.search.tune import run_search

    settings = SearchSettings(**TINY_SEARCH, trials=4, gpus_per_trial=0.5)
    # 2 CPUs and 1 GPU: two trials of half a GPU fit at once, one of a whole GPU
    assert concurrency(settings) == 2
    assert concurrency(SearchSettings(**TINY_SEARCH, trials=4, gpus_per_trial=1)) == 1
    run = RunDir(tmp_path / "gpu")
    outcome = run_search(settings, run, progress=False)
    assert outcome.ray_trials == 4 and {r["status"] for r in read_trials_csv(run.trials_csv) if r["tune_trial_id"]} == {"ok"}
    results = [json.loads(path.read_text().splitlines()[-1]) for path in run.tune_dir.glob("trial_*/result.json")]
    assert len(results) == 4
    expected_device = "cuda:0" if torch.cuda.is_available() else "cpu"  # a resource Ray knows, not a device torch sees
    for result in results:
        assert result["gpu_ids"] == "0"  # Ray assigned the cluster's one GPU to every trial
        assert result["device"] == expected_device
    assert json.loads(run.settings_path.read_text())["gpus_per_trial"] == 0.5
