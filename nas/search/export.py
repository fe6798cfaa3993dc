"""``nas export``: each Pareto-optimal genome of a run as files other tools load.

    DIR/
      index.json                     what was written for each genome, and why a format was skipped
      00-<genome id>/
        genome.json                  our genome (``ArchConfig.load``)
        scores.json                  its scores in the search
        transformers/config.json     BertConfig / SqueezeBertConfig / MobileBertConfig, where the family allows
        transformers/model.safetensors   the distilled student's weights, when the run kept it (--keep-students),
                                     with the teacher's tokenizer beside them
        model.onnx                   with --onnx: the student (or random-init weights) at --seq-len

Each genome's folder is assembled under a temporary name and renamed into place, so a folder
that exists is complete.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from nas.arch import ArchConfig
from nas.errors import NasError
from nas.search.run_dir import RunDir, atomic_write_json, load_front


def export_front(run: RunDir, to: str | Path, *, onnx: bool = False, seq_len: int = 128, overwrite: bool = False) -> list[dict[str, Any]]:
    """Write every Pareto-optimal genome of `run` under `to`; returns the index entries."""
    run.require()
    to = Path(to)
    objectives, front = load_front(run)
    if not front:
        raise NasError(f"{run.root}: the Pareto front is empty (no trial finished with status ok); nothing to export")
    if to.exists() and any(to.iterdir()) and not overwrite:
        raise NasError(f"--to {to}: not empty; choose a new folder or pass --overwrite")
    to.mkdir(parents=True, exist_ok=True)
    index = []
    for rank, point in enumerate(front):
        arch = ArchConfig.from_dict(point["genome"], source=f"{run.pareto_json} front[{rank}]")
        target = to / f"{rank:02d}-{arch.id}"
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=to))
        try:
            entry = _export_one(run, arch, point, staging, onnx=onnx, seq_len=seq_len)
            if target.exists():
                shutil.rmtree(target)  # --overwrite: replace this genome's folder as a whole
            staging.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        entry = {"rank": rank, "folder": target.name} | entry
        index.append(entry)
    atomic_write_json(to / "index.json", {"run": str(run.root), "objectives": [o.name for o in objectives], "genomes": index})
    return index


def _export_one(run: RunDir, arch: ArchConfig, point: dict[str, Any], folder: Path, *, onnx: bool, seq_len: int) -> dict[str, Any]:
    arch.save(folder / "genome.json")
    atomic_write_json(folder / "scores.json", {"trial": point["trial"], "genome_id": arch.id, "scores": point["scores"]})
    entry: dict[str, Any] = {"genome_id": arch.id, "trial": point["trial"], "scores": point["scores"], "files": ["genome.json", "scores.json"]}
    student = _load_student(run, arch, point.get("student"))
    entry["weights"] = "distilled student" if student is not None else None
    try:
        from nas.hf import config_for, to_transformers, transformers_family

        family = transformers_family(arch)
        if student is not None:
            to_transformers(student, family).save_pretrained(folder / "transformers")
            _tokenizer(run).save_pretrained(str(folder / "transformers"))
            entry["files"] += ["transformers/config.json", "transformers/model.safetensors", "transformers/tokenizer files"]
        else:
            config_for(arch, family).save_pretrained(folder / "transformers")
            entry["files"].append("transformers/config.json")
        entry["transformers"] = family
    except NasError as err:
        entry["transformers"] = None
        entry["transformers_skipped"] = str(err)
    if onnx:
        from nas.onnx import export_onnx

        export_onnx(student if student is not None else arch, folder / "model.onnx", seq_len=seq_len)
        entry["files"].append("model.onnx")
        entry["onnx_weights"] = "distilled student" if student is not None else "random init (seed 0): for latency, not accuracy"
    return entry


def _tokenizer(run: RunDir):
    """The tokenizer of the teacher the run distilled from (the students speak its vocabulary)."""
    from nas.distill import load_teacher
    from nas.search.settings import SearchSettings

    config = SearchSettings.load(run.settings_path).distill_config()
    return load_teacher(config.teacher, config.resolved_cache_dir).tokenizer


def _load_student(run: RunDir, arch: ArchConfig, relative: str | None):
    """The kept student as a nas.Encoder (eager attention, for export), or None."""
    if not relative:
        return None
    path = run.root / relative
    if not path.is_dir():
        raise NasError(f"{path}: the student folder pareto.json names is missing")
    from nas.distill import load_student

    model = load_student(path)
    if model.arch != arch:
        raise NasError(f"{path}: holds genome {model.arch.id}, not {arch.id}")
    return model
