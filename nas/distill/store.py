"""A distilled student on disk: one folder, written atomically, loadable again (also as a teacher).

    DIR/genome.json              the architecture (ArchConfig JSON)
    DIR/model.safetensors        the encoder's weights (nas.Encoder state dict)
    DIR/projections.safetensors  the student-to-teacher width maps, when the widths differ
    DIR/distill.json             settings, teacher, corpus, checkpoints and final score
    DIR/tokenizer files          the teacher's tokenizer, so the folder is self-contained
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from nas.arch import ArchConfig
from nas.distill.config import DistillError
from nas.model import Encoder, build_model

if TYPE_CHECKING:
    from nas.distill.run import DistillResult


def check_save_dir(path: str | Path) -> Path:
    """Refuse a destination that already holds files, before any training: nothing is overwritten."""
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise DistillError(f"--save {path}: already exists and is not an empty folder; choose a new folder")
    return path


def save_student(result: "DistillResult", path: str | Path, tokenizer: Any | None = None) -> Path:
    """Write the student of a finished run to ``path`` (a new or empty folder) and return it."""
    from safetensors.torch import save_file

    if result.student is None:
        raise DistillError(f"--save {path}: the run ended with status {result.status!r}; there is no trained student to save")
    path = check_save_dir(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        result.arch.save(tmp / "genome.json")
        save_file(_state(result.student), str(tmp / "model.safetensors"), metadata={"arch_id": result.arch.id})
        if result.projections is not None and len(result.projections.state_dict()):
            save_file(_state(result.projections), str(tmp / "projections.safetensors"))
        (tmp / "distill.json").write_text(json.dumps(result.to_dict(), indent=2) + "\n")
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp))
        if path.exists():
            path.rmdir()  # empty (checked above); rename needs the name free
        os.replace(tmp, path)  # the folder appears complete or not at all
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def load_student(path: str | Path) -> Encoder:
    """The encoder saved in ``path`` by ``save_student`` (eval mode)."""
    from safetensors.torch import load_file

    path = Path(path)
    arch = ArchConfig.load(path / "genome.json")
    weights = path / "model.safetensors"
    if not weights.exists():
        raise DistillError(f"{path}: genome.json has no model.safetensors beside it")
    model = build_model(arch, attention_implementation="eager")
    try:
        model.load_state_dict(load_file(str(weights)), strict=True)
    except Exception as err:  # noqa: BLE001 - torch and safetensors raise different types
        raise DistillError(f"{weights}: does not hold the weights of genome {arch.id} ({str(err).splitlines()[0]})") from None
    return model.eval()


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().cpu().contiguous().clone() for name, tensor in module.state_dict().items()}
