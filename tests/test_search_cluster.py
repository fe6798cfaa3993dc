"""A search on a multi-node Ray cluster (ray.cluster_utils, all nodes on this machine) that loses a
worker node mid-search: the trial that ran there is retried, and every trial is accounted for."""

from __future__ import annotations

import shutil
import tempfile
import threading
import time

import pytest

ray = pytest.importorskip("ray")

from nas.search import study as optuna_study  # noqa: E402
from nas.search.run_dir import RunDir, read_trials_csv  # noqa: E402
from nas.search.settings import SearchSettings  # noqa: E402


@pytest.fixture
def cluster(monkeypatch):
    from ray.cluster_utils import Cluster

    # Ray's sockets live under its temp dir and Unix socket paths are short: keep it near /.
    ray_tmp = tempfile.mkdtemp(prefix="nasray", dir="/tmp")
    monkeypatch.setenv("RAY_TMPDIR", ray_tmp)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    yield cluster, workers
    if ray.is_initialized():
        ray.shutdown()
    cluster.shutdown()
    shutil.rmtree(ray_tmp, ignore_errors=True)


def test_a_search_survives_losing_a_worker_node(cluster, tmp_path):
    from nas.search.tune import run_search

    cluster, workers = cluster
    # One CPU per node and per trial: each node runs exactly one trial at a time, so a node
    # removed while the first three trials hold their CPUs takes one running trial with it.
    settings = SearchSettings(space="tiny", objectives=["params", "flops"], constraints=[], trials=6, sampler="random",
                              seed=3, concurrency=3, max_failures=2)
    run = RunDir(tmp_path / "cluster")
    removed = threading.Event()

    def remove_a_worker_mid_search() -> None:
        deadline = time.time() + 180
        while time.time() < deadline:
            started = [p for p in run.tune_dir.glob("trial_*") if p.is_dir()] if run.tune_dir.exists() else []
            if len(started) >= 3:
                time.sleep(1.5)
                cluster.remove_node(workers[0])
                removed.set()
                return
            time.sleep(0.1)

    watcher = threading.Thread(target=remove_a_worker_mid_search, daemon=True)
    watcher.start()
    outcome = run_search(settings, run, address=cluster.address, progress=False, trial_hold_s=6.0)
    watcher.join(timeout=5)
    assert removed.is_set(), "the worker was not removed while the search ran"
    records = read_trials_csv(run.trials_csv)
    ray_rows = [r for r in records if r["tune_trial_id"]]
    assert not outcome.interrupted
    assert len(ray_rows) == settings.trials and {r["status"] for r in ray_rows} == {"ok"}
    assert sum(r["restarts"] for r in ray_rows) >= 1  # the trial on the lost node ran again elsewhere
    # Three nodes on one host: one hostname and IP, but `node` tells them apart by node id.
    nodes = {f"{node.node_ip_address}/{node.node_id}" for node in [cluster.head_node, *workers]}
    assert {r["node"] for r in ray_rows} <= nodes and len({r["node"] for r in ray_rows}) >= 2
    study = optuna_study.load_study(run.journal_path)
    assert sorted(t.number for t in study.trials) == sorted(r["trial"] for r in records)
    assert not [t for t in study.trials if t.state.name == "RUNNING"]
