"""``nas distill``: distil the teacher into one genome for a short budget and print its checkpoints."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from pathlib import Path

from nas.cli import non_negative_float as _non_negative_float, positive_int as _positive_int
from nas.errors import NasError, read_user_text

HELP = ("distil a teacher into a genome for a short, fixed budget and score it (the held-out cosine to the "
        "teacher, or a downstream linear probe)")


def register(subparsers) -> None:
    from nas.distill.config import SCORES, DistillConfig

    defaults = DistillConfig()
    p = subparsers.add_parser("distill", help=HELP, description=HELP)
    p.add_argument("--arch", required=True, help="GENOME.json, or a reference name (mobilebert, squeezebert, ...)")
    p.add_argument("--preset", choices=["default", "search", "quick"], default="default",
                   help=f"default: the default run ({defaults.steps} steps, read by the lp probe); search: the same scored once, as the search does; "
                   "quick: a cheap smoke test (teacher cosine, not a quality signal)")  # fmt: skip
    p.add_argument("--score", choices=SCORES, help="the quality read-out: lp (default; linear heads for the supersense "
                   f"and part of speech of {defaults.lp_examples:,} WordNet training glosses, read on as many more), cosine (the held-out "
                   "cosine to the teacher's sentence embedding) or probe (a ridge probe of the supersenses)")  # fmt: skip
    p.add_argument("--steps", type=_positive_int, help=f"training steps (default run: {defaults.steps})")
    p.add_argument("--seed", type=int, help="seed of the student's init and the data order (default 0)")
    p.add_argument("--repeats", type=_positive_int, help="independent runs (seeds SEED, SEED+1, ...); the score is "
                   f"their mean (default {defaults.repeats})")  # fmt: skip
    p.add_argument("--teacher", help="a transformers BERT-family model folder or hub id, or a folder saved by --save "
                   "(default: the embedded all-MiniLM-L6-v2)")  # fmt: skip
    p.add_argument("--data", help="a .txt/.md/.csv/.tsv/.json/.jsonl/.parquet file or a hub dataset NAME[:CONFIG] "
                   "(default: the embedded Python reference manual)")  # fmt: skip
    p.add_argument("--text-column", help="the column holding the text (default: text)")
    p.add_argument("--seq-len", type=_positive_int, help=f"tokens per window (default {defaults.seq_len})")
    p.add_argument("--batch-size", type=_positive_int, help=f"windows per step (default {defaults.batch_size})")
    p.add_argument("--lr", type=_positive_float, help=f"peak AdamW learning rate (default {defaults.lr:g})")
    p.add_argument("--stop-fraction", type=_positive_float, help="train this fraction of the learning-rate schedule: 0.5 "
                   f"lays warm-up and decay out over twice --steps and stops halfway (default {defaults.stop_fraction:g})")
    p.add_argument("--lp-examples", type=_positive_int, help="--score lp: glosses the heads are fit on, and read on as many "
                   f"more (default {defaults.lp_examples})")
    p.add_argument("--lp-crossfit", action=argparse.BooleanOptionalAction, help="--score lp: also fit heads on the "
                   f"second half of the glosses and read them on the first; the score is the mean of both readings (default "
                   f"{'on' if defaults.lp_crossfit else 'off'})")  # fmt: skip
    p.add_argument("--divergence-retries", type=int, metavar="N", help="a run that diverges trains again from the start "
                   f"at half the peak rate, N times at most (0-3; default {defaults.divergence_retries})")  # fmt: skip
    p.add_argument("--params-weight", type=_non_negative_float, help="add W * ln(parameters / 1M) to the score, a "
                   f"training-free capacity term (default {defaults.params_weight:g}; docs/quality.md)")  # fmt: skip
    p.add_argument("--checkpoints", type=_positive_int, dest="num_checkpoints", metavar="N",
                   help=f"held-out evaluations, evenly spaced (default {defaults.num_checkpoints})")  # fmt: skip
    p.add_argument("--feature-weight", type=_non_negative_float, help="weight of feature-map transfer (default 1)")
    p.add_argument("--attention-weight", type=_non_negative_float, help="weight of attention transfer (default 1)")
    p.add_argument("--output-weight", type=_non_negative_float, help="weight of embedding distillation (default 1)")
    p.add_argument("--init-embeddings", choices=["teacher", "random"], help="student token vectors start as the "
                   "teacher's (PCA) or random (default teacher)")  # fmt: skip
    p.add_argument("--threads", type=_positive_int, help="torch threads (default: the CPUs this process may use)")
    p.add_argument("--device", metavar="auto|cpu|cuda|cuda:N", help="where to train (default auto: the first CUDA device "
                   "torch sees, else the CPU)")  # fmt: skip
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], help="auto (default): bf16 autocast where the CPU has "
                   "AVX512-BF16/AMX or the GPU has bf16, else fp32")  # fmt: skip
    p.add_argument("--cache-dir", help="where tokenized corpora are cached (default $NAS_CACHE_DIR or ~/.cache/nas)")
    p.add_argument("--config", type=Path, help="a JSON file of DistillConfig fields; flags override it")
    p.add_argument("--save", type=Path, metavar="DIR", help="keep the distilled student in DIR (a new folder)")
    p.add_argument("--json", action="store_true", help="print each checkpoint, then the result, as JSON lines")
    p.set_defaults(func=_distill)




def _positive_float(text: str) -> float:
    value = _non_negative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be above 0")
    return value


def _score_name(config) -> str:
    """What the score adds up: the read-out, and the parameter term when it has a weight."""
    return config.score + (f" + {config.params_term}" if config.params_term else "")


def config_from_args(args) -> "DistillConfig":  # noqa: F821 - imported lazily to keep `nas --help` fast
    """The DistillConfig the flags describe: preset, then --config's JSON, then each flag given."""
    from nas.distill.config import DistillConfig, DistillError

    data: dict = getattr(DistillConfig, args.preset)().to_dict() if args.preset != "default" else {}
    if args.config is not None:
        try:
            data |= json.loads(read_user_text(args.config))
        except NasError as err:
            raise DistillError(f"--config {err}") from None
        except (json.JSONDecodeError, TypeError) as err:
            raise DistillError(f"--config {args.config}: not a JSON object of settings ({err})") from None
    for f in fields(DistillConfig):
        value = getattr(args, f.name, None)
        if value is not None:
            data[f.name] = value
    return DistillConfig.from_dict(data, source=str(args.config or "flags"))


def _distill(args) -> int:
    from nas.references import load_genome
    from nas.distill.run import distill
    from nas.distill.store import check_save_dir, save_student
    from nas.distill.teacher import load_teacher

    config = config_from_args(args)
    arch = load_genome(args.arch)
    if args.save is not None:
        check_save_dir(args.save)  # before any training: never overwrite, never train for nothing
    out = sys.stdout

    def report(checkpoint) -> None:
        if args.json:
            out.write(json.dumps({"type": "checkpoint", "arch_id": arch.id} | checkpoint.to_dict()) + "\n")
        else:
            out.write(
                f"step {checkpoint.step:>6}/{checkpoint.steps}  score {checkpoint.score:.4f} (cosine {checkpoint.cosine:.4f})  "
                f"held-out loss {checkpoint.heldout_loss:.4f} (feature {checkpoint.feature_loss:.4f}, "
                f"attention {checkpoint.attention_loss:.4f}, output {checkpoint.output_loss:.4f})  "
                f"train loss {checkpoint.train_loss:.4f}  {checkpoint.tokens_seen:,} tokens  {checkpoint.elapsed_s:.1f}s\n"
            )
        out.flush()

    result = distill(arch, config, on_checkpoint=report, progress=not args.json)
    if args.save is not None and result.status == "ok":
        teacher = load_teacher(config.teacher, config.resolved_cache_dir)  # cached: no second load
        save_student(result, args.save, tokenizer=teacher.tokenizer)
    if args.json:
        summary = {k: v for k, v in result.to_dict().items() if k != "checkpoints"}
        out.write(json.dumps({"type": "result"} | summary) + "\n")
    else:
        baseline = (f" (a constant embedding scores {result.baseline_score:.4f} on the cosine)"
                    if result.baseline_score is not None else "")  # fmt: skip
        score = "-" if result.score is None else f"{result.score:.4f}"
        out.write(
            f"{result.status}: {result.reason}\n"
            f"genome {arch.id} ({result.params:,} params), teacher {result.teacher['name']}, "
            f"corpus {result.data['source']}\n"
            f"score {score} ({_score_name(result.config)}){baseline}; {result.tokens_seen:,} training tokens, "
            f"{result.tokens_per_s:,.0f} tokens/s, {result.elapsed_s:.1f}s\n"
        )
        if args.save is not None and result.status == "ok":
            out.write(f"saved the student to {args.save}\n")
    if result.status == "diverged":
        sys.stderr.write(f"nas distill: diverged: {result.reason}\n")
        return 1
    return 0
