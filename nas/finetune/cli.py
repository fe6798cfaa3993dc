"""``nas finetune``: fine-tune a distilled student (or distil one first) on a labelled task; dev accuracy and macro-F1."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from nas.cli import positive_int

HELP = "fine-tune a distilled student on a labelled task and report dev accuracy and macro-F1"


def register(subparsers) -> None:
    from nas.finetune.run import FinetuneConfig

    defaults = FinetuneConfig()
    p = subparsers.add_parser("finetune", help=HELP, description=HELP)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--student", type=Path, metavar="DIR", help="a student folder written by `nas distill --save`")
    which.add_argument("--arch", help="GENOME.json or a reference name: distil it first (the default run, or --distill-steps)")
    p.add_argument("--distill-steps", type=positive_int, help="with --arch: distillation steps before fine-tuning (default 120)")
    p.add_argument("--task", help="wordnet-supersense (default), wordnet-pos, wordnet-pair, a .csv/.tsv/.json/.jsonl/.parquet "
                   "file, or a hub dataset such as glue:sst2 (needs a network connection)")  # fmt: skip
    p.add_argument("--text-column", help="column of the text (default: text, or sentence)")
    p.add_argument("--text-pair-column", help="column of the second text of a sentence-pair task")
    p.add_argument("--label-column", help="column of the class label (default: label)")
    p.add_argument("--dev-file", help="a file of the same columns to report on (default: 10 %% held out of --task)")
    p.add_argument("--max-train", type=positive_int, help="use at most this many training examples (a seeded subsample)")
    p.add_argument("--max-dev", type=positive_int, help="report on at most this many dev examples")
    p.add_argument("--lr", type=_lrs, dest="lrs", metavar="LR[,LR...]",
                   help=f"learning rates to sweep; the best dev accuracy is reported (default {','.join(f'{v:g}' for v in defaults.lrs)})")  # fmt: skip
    p.add_argument("--epochs", type=positive_int, help=f"passes over the training set (default {defaults.epochs})")
    p.add_argument("--batch-size", type=positive_int, help=f"examples per step (default {defaults.batch_size})")
    p.add_argument("--seq-len", type=positive_int, help=f"tokens per example, a pair included (default {defaults.seq_len})")
    p.add_argument("--seed", type=int, help="seed of the head's init, dropout and data order (default 0)")
    p.add_argument("--threads", type=positive_int, help="torch threads (default: all this process may use)")
    p.add_argument("--device", metavar="auto|cpu|cuda|cuda:N", help="where to train (default auto: the first CUDA device "
                   "torch sees, else the CPU)")  # fmt: skip
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], help="auto (default): bf16 autocast where the CPU has "
                   "AVX512-BF16/AMX or the GPU has bf16, else fp32")  # fmt: skip
    p.add_argument("--cache-dir", help="where datasets keeps its files (default $NAS_CACHE_DIR or ~/.cache/nas)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.set_defaults(func=_finetune)


def _lrs(text: str) -> tuple[float, ...]:
    values = []
    for part in text.split(","):
        try:
            value = float(part)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{part!r} is not a number") from None
        if not value > 0 or value == float("inf"):
            raise argparse.ArgumentTypeError(f"{part} must be a positive, finite learning rate")
        values.append(value)
    return tuple(values)


def _finetune(args) -> int:
    from nas.finetune.run import FinetuneConfig, finetune
    from nas.finetune.tasks import load_task

    changes = {name: getattr(args, name) for name in ("lrs", "epochs", "batch_size", "seq_len", "seed", "threads", "precision", "device")
               if getattr(args, name) is not None}  # fmt: skip
    config = FinetuneConfig(**changes)
    config.resolved_hardware  # no such device: one line before the task loads or anything trains
    # The task is read and checked first: a bad file, column or label set fails before any training.
    task = load_task(args.task, text_column=args.text_column, text_pair_column=args.text_pair_column,
                     label_column=args.label_column, dev_file=args.dev_file, max_train=args.max_train,
                     max_dev=args.max_dev, cache_dir=args.cache_dir, seed=config.seed)  # fmt: skip
    encoder, tokenizer, origin = _student(args)
    out = sys.stdout
    if not args.json:
        described = task.describe()
        out.write(f"task {task.name}: {described['train_examples']:,} train / {described['dev_examples']:,} dev examples, "
                  f"{task.num_labels} labels (majority class {task.majority_accuracy():.4f}); student {origin}\n")  # fmt: skip
        out.flush()
    result = finetune(encoder, task, config, tokenizer, progress=not args.json)
    if args.json:
        out.write(json.dumps({"student": origin, "arch_id": encoder.arch.id} | result.to_dict()) + "\n")
        return 0
    for r in result.sweep:
        mark = "  <- best" if r.lr == result.best_lr else ""
        what = "head only (LP)" if r.lr == 0 else f"lr {r.lr:g}"
        out.write(f"  {what:<14} dev accuracy {r.accuracy:.4f}  macro-F1 {r.macro_f1:.4f}  train loss {r.train_loss:.4f}{mark}\n")
    out.write(f"dev accuracy {result.accuracy:.4f}, macro-F1 {result.macro_f1:.4f} (lr {result.best_lr:g}; {result.precision}, "
              f"{result.examples_per_s:,.0f} examples/s, {result.train_s:.1f}s)\n")  # fmt: skip
    return 0


def _student(args):
    """(encoder, tokenizer, description) from --student, or from distilling --arch first."""
    from nas.distill.teacher import load_teacher

    if args.student is not None:
        from nas.distill.store import load_student

        path = args.student
        if not path.is_dir():
            from nas.finetune.run import FinetuneError

            raise FinetuneError(f"--student {path}: not a folder; give one written by `nas distill --save`")
        encoder = load_student(path)
        tokenizer = _folder_tokenizer(path) or load_teacher(None).tokenizer
        return encoder, tokenizer, str(path)
    from nas.references import load_genome
    from nas.distill import DistillConfig, distill

    arch = load_genome(args.arch)
    config = DistillConfig(steps=args.distill_steps or DistillConfig().steps, threads=args.threads,
                           device=args.device or "auto", precision=args.precision or "auto")
    result = distill(arch, config, progress=not args.json)
    if result.student is None:
        from nas.finetune.run import FinetuneError

        raise FinetuneError(f"--arch {args.arch}: distillation ended {result.status}: {result.reason}")
    return result.student, load_teacher(config.teacher).tokenizer, f"{arch.id} distilled {config.steps} steps (score {result.score:.4f})"


def _folder_tokenizer(path: Path):
    if not (path / "tokenizer_config.json").exists():
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))
