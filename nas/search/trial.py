"""The Ray Tune trial of a search: one candidate's expensive scores, computed in a Ray worker.

It knows the genome, the settings and the resources Ray gave it, nothing of the driver.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import ray
from ray import tune

from nas.arch import ArchConfig
from nas.search.settings import SearchSettings

if TYPE_CHECKING:
    from nas.distill import DistillConfig

# Seconds each trial keeps its CPUs after scoring: a rehearsal hook for node loss, kills and
# scheduling overhead (tests, bench/search.py), read by the driver; never part of a run's settings.
HOLD_ENV = "NAS_TRIAL_HOLD_S"


@dataclass(frozen=True)
class TrialSpec:
    """What every Ray trial of a search needs from the driver, fixed when the search starts."""

    cpus: int  # torch threads: the CPUs Ray reserved for the trial
    distill: "DistillConfig | None"  # the run each trial distils; None when distill is not an objective
    keep_students: bool
    hold_s: float = 0.0  # see HOLD_ENV

    @classmethod
    def for_search(cls, settings: SearchSettings, objectives: list[str], hold_s: float | None = None) -> "TrialSpec":
        """The spec of a search with these settings; ``hold_s`` None reads HOLD_ENV (0 when unset)."""
        if hold_s is None:
            hold_s = float(os.environ.get(HOLD_ENV) or 0)
        distill = settings.distill_config() if "distill" in objectives else None
        return cls(settings.cpus_per_trial, distill, settings.keep_students, max(0.0, hold_s))


def evaluate_candidate(config: dict[str, Any], spec: TrialSpec) -> None:
    """One Ray Tune trial: the expensive scores of one genome, reported to Tune.

    The cheap scores arrive in the config (the driver computed them while screening). Every report
    carries them and a ``status``: "running" at a distillation checkpoint (with the score so far),
    then "ok", "diverged" or "crashed" in the last one. A scorer's
    exception ends the trial with status "crashed" and its message; it does not crash the actor,
    so Ray's retries are kept for workers and nodes that die.
    """
    import torch

    torch.set_num_threads(spec.cpus)  # the CPUs Ray reserved for this trial, no more
    # The device comes from what Ray gave the trial; reported, so placement can be read from the results.
    placement = {"device": trial_device(), "gpu_ids": ",".join(str(i) for i in ray.get_gpu_ids())}
    started = time.perf_counter()
    base: dict[str, Any] = dict(config["scores"]) | {
        "trial": config["trial"], "genome_id": config["genome_id"], "status": "running", "reason": "", "node": node_label(),
    } | placement
    if spec.distill is not None:
        base["step"] = 0  # ASHA's clock
    final: dict[str, Any] = {"status": "ok"}
    checkpoint = None
    try:
        if spec.distill is not None:
            final, checkpoint = _distill(ArchConfig.from_dict(config["genome"]), spec, base, started)
    except Exception as err:  # noqa: BLE001 - any scorer failure is the candidate's outcome, not the search's
        final = {"status": "crashed", "reason": f"{type(err).__name__}: {err}".splitlines()[0][:500]}
    if spec.hold_s:
        time.sleep(spec.hold_s)
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


def _distill(arch: ArchConfig, spec: TrialSpec, base: dict[str, Any], started: float):
    from nas.distill import distill

    config = spec.distill
    if config.device == "auto":
        config = config.replace(device=base["device"])

    def on_checkpoint(point) -> None:
        base.update(
            distill=float(point.score), distill_cosine=float(point.cosine), distill_heldout_loss=float(point.heldout_loss),
            step=int(point.step),
            tokens_seen=int(point.tokens_seen), elapsed_s=round(time.perf_counter() - started, 6),
        )
        tune.report(dict(base))  # blocks until Tune has seen it; raises SystemExit if ASHA stops us

    result = distill(arch, config, on_checkpoint=on_checkpoint)
    final: dict[str, Any] = {"status": result.status, "reason": result.reason or ""}  # nas.statuses: one vocabulary
    if result.status == "ok":
        final["distill"] = float(result.score)
        baseline = _constant_embedding_score(config, result)
        if baseline is not None:
            final["distill_baseline"] = float(baseline)
    checkpoint = None
    if result.status == "ok" and spec.keep_students and result.student is not None:
        checkpoint = _StudentCheckpoint(result)
    return final, checkpoint


def _constant_embedding_score(config, result) -> float | None:
    """What a student with one embedding for every input scores, on the search's scale: the floor
    the report draws under the distillation axis; None where the score adds a parameter term, which
    gives every genome a floor of its own."""
    if config.params_weight:
        return None
    if config.score == "cosine":
        return result.baseline_score  # the cosine's, computed by the run
    from nas.distill.quality import lp_baseline, probe_baseline
    from nas.distill.teacher import load_teacher

    tokenizer = load_teacher(config.teacher, config.resolved_cache_dir).tokenizer  # cached teacher
    return lp_baseline(tokenizer, config.lp_examples, config.lp_crossfit) if config.score == "lp" else probe_baseline(tokenizer)


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
