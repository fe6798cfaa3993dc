"""Short distillation runs as the quality score of a candidate architecture.

    from nas.distill import DistillConfig, distill
    result = distill(arch, DistillConfig.quick(seed=0), on_checkpoint=lambda c: print(c.step, c.score))

The teacher (default: the embedded pretrained all-MiniLM-L6-v2) and the tokenized corpus (default:
the Python reference manual shipped with CPython) are loaded once per process and reused by every
later call. Nothing here imports Ray or Optuna: a search reports checkpoints through the callback.
"""

from nas.distill.config import DistillConfig, DistillError
from nas.distill.data import clear_data
from nas.distill.losses import layer_mapping
from nas.distill.run import Checkpoint, DistillResult, check_compatible, distill
from nas.distill.store import load_student, save_student
from nas.distill.teacher import DEFAULT_TEACHER, Teacher, clear_teachers, load_teacher


def clear_caches() -> None:
    """Drop the per-process teacher, tokenized corpus and teacher targets (frees their memory)."""
    clear_data()
    clear_teachers()


__all__ = [
    "DEFAULT_TEACHER",
    "Checkpoint",
    "DistillConfig",
    "DistillError",
    "DistillResult",
    "Teacher",
    "check_compatible",
    "clear_caches",
    "distill",
    "layer_mapping",
    "load_student",
    "load_teacher",
    "save_student",
]
