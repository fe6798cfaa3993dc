"""``nas export``: each Pareto-optimal genome of a run as files other tools load.

    DIR/
      index.json                     what was written for each genome (family, weights or config only, files)
      00-<genome id>/
        genome.json                  our genome (``ArchConfig.load``)
        scores.json                  its scores in the search
        transformers/                a transformers model folder, for every genome:
          config.json                  BERT / SqueezeBERT / MobileBERT where that family rebuilds the genome
                                       exactly, else our own type nas_encoder, whose code travels beside it
                                       (configuration_nas.py, modeling_nas.py and the files they import;
                                       load with trust_remote_code=True, or plainly with nas installed)
          model.safetensors            the distilled student's weights, when the run kept it (--keep-students);
                                       without it the folder is config only, and says so
          tokenizer files              the teacher's tokenizer (the students speak its vocabulary)
          README.md                    what the folder holds and how to load it
        model.onnx                   with --onnx: the student (or random-init weights); batch and sequence
                                     axes dynamic, or fixed at [1, --seq-len] when that is given

Each genome's folder is assembled under a temporary name and renamed into place, so a folder
that exists is complete.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from nas.arch import ArchConfig
from nas.errors import NasError, atomic_write_json
from nas.search.run_dir import RunDir, load_front


def export_front(
    run: RunDir, to: str | Path, *, onnx: bool = False, seq_len: int | None = None, overwrite: bool = False
) -> list[dict[str, Any]]:
    """Write every Pareto-optimal genome of `run` under `to`; returns the index entries.

    ``seq_len=None``: the ONNX models take any batch and sequence length; a number fixes their
    input shape to [1, seq_len] (what a latency measurement on a device wants).
    """
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


def _export_one(
    run: RunDir, arch: ArchConfig, point: dict[str, Any], folder: Path, *, onnx: bool, seq_len: int | None
) -> dict[str, Any]:
    from nas.hf import NAS_FAMILY, save_config, to_transformers

    arch.save(folder / "genome.json")
    atomic_write_json(folder / "scores.json", {"trial": point["trial"], "genome_id": arch.id, "scores": point["scores"]})
    entry: dict[str, Any] = {"genome_id": arch.id, "trial": point["trial"], "scores": point["scores"]}
    student = _load_student(run, arch, point.get("student"))
    hf_folder = folder / "transformers"
    if student is not None:
        hf_model = to_transformers(student)
        hf_model.save_pretrained(str(hf_folder))
        family = hf_model.config.model_type
    else:
        family = save_config(arch, hf_folder)
    _save_tokenizer(_tokenizer(run), hf_folder)
    entry["transformers"] = family
    entry["trust_remote_code"] = family == NAS_FAMILY
    entry["weights"] = "distilled student" if student is not None else None
    entry["config_only"] = student is None
    (hf_folder / "README.md").write_text(_model_card(arch, point, family, student is not None, run))
    if onnx:
        from nas.onnx import export_onnx

        traced_at = seq_len or min(128, arch.max_position_embeddings)  # dynamic: only the length it is traced at
        export_onnx(student if student is not None else arch, folder / "model.onnx", seq_len=traced_at, dynamic=seq_len is None)
        entry["onnx_weights"] = "distilled student" if student is not None else "random init (seed 0): for latency, not accuracy"
        entry["onnx_input_shape"] = "dynamic [batch, sequence]" if seq_len is None else f"fixed [1, {seq_len}]"
    entry["files"] = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    return entry


def _model_card(arch: ArchConfig, point: dict[str, Any], family: str, has_weights: bool, run: RunDir) -> str:
    """The folder's README.md: what it holds, whether it has weights, and the loading code."""
    from nas.hf import NAS_FAMILY

    if family == NAS_FAMILY:
        kind = (
            "our encoder as a transformers model (model type `nas_encoder`): no transformers family holds "
            "this genome exactly, so its code travels in this folder (`configuration_nas.py`, `modeling_nas.py` "
            "and the files they import). Load it with `trust_remote_code=True`, or `import nas` first (which "
            "registers the type) and leave the flag out"
        )
        remote = ", trust_remote_code=True"
    else:
        kind = f"a native transformers `{family}` model"
        remote = ""
    if has_weights:
        weights = f"Weights: the student distilled in run `{run.root.name}`, trial {point['trial']} (`model.safetensors`)."
        load = f'model = AutoModel.from_pretrained("path/to/this/folder"{remote})'
    else:
        weights = (
            "Config only: no weights (the run kept no student; search with --keep-students to keep them). "
            "`AutoModel.from_config` builds the architecture with random weights."
        )
        load = (
            f'config = AutoConfig.from_pretrained("path/to/this/folder"{remote})\n'
            f"model = AutoModel.from_config(config{remote})"
        )
    return (
        f"# Genome {arch.id}, exported by nas\n\n"
        f"This folder is {kind}.\n\n{weights} Tokenizer: the distillation teacher's.\n\n"
        "```python\nfrom transformers import AutoConfig, AutoModel, AutoTokenizer\n\n"
        f'{load}\ntokenizer = AutoTokenizer.from_pretrained("path/to/this/folder"{remote})\n'
        'outputs = model(**tokenizer("an example", return_tensors="pt"))  # last_hidden_state, pooler_output\n```\n'
    )


def _save_tokenizer(tokenizer: Any, folder: Path) -> None:
    """The tokenizer's own files (tokenizer.json), plus BERT's vocab.txt for a WordPiece vocabulary:
    what mobile runtimes and older tools read (transformers 5 no longer writes it)."""
    tokenizer.save_pretrained(str(folder))
    backend = getattr(tokenizer, "backend_tokenizer", None)
    vocab = tokenizer.get_vocab()
    if type(getattr(backend, "model", None)).__name__ == "WordPiece" and sorted(vocab.values()) == list(range(len(vocab))):
        by_id = sorted(vocab, key=vocab.__getitem__)
        (folder / "vocab.txt").write_text("".join(f"{token}\n" for token in by_id), encoding="utf-8")


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
