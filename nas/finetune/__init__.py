"""Downstream fine-tuning: the ground truth a quality score is judged against.

    from nas.finetune import FinetuneConfig, finetune, load_task
    task = load_task("wordnet-supersense", max_train=2000)       # or a CSV/JSON/parquet file, or glue:sst2
    result = finetune(student, task, FinetuneConfig(seed=0))     # result.accuracy, result.macro_f1
"""

from nas.finetune.run import FinetuneConfig, FinetuneError, FinetuneResult, finetune
from nas.finetune.tasks import DEFAULT_TASK, EMBEDDED_TASKS, Task, TaskError, load_task

__all__ = [
    "DEFAULT_TASK",
    "EMBEDDED_TASKS",
    "FinetuneConfig",
    "FinetuneError",
    "FinetuneResult",
    "Task",
    "TaskError",
    "finetune",
    "load_task",
]
