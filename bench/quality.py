"""Ground truth for the quality axis, and how well cheap proxies rank architectures against it.

    python bench/quality.py genomes                       # the genome set: names, params, FLOPs
    python bench/quality.py ground  [--threads 1] [--distill-steps 960] [--only NAME,...]
    python bench/quality.py proxies [--threads 1] [--only NAME,...]
    python bench/quality.py regrade                       # the ground truth: a linear head on the kept students
    python bench/quality.py readouts | budgets [--budgets 240 480]   # more proxies: readouts, run lengths
    python bench/quality.py report --gt-tasks lp-supersense,lp-pos   # Kendall tau of every proxy vs the ground truth

ground: each genome gets the long recipe: distillation from the teacher for ``--distill-steps``
(640 on CPU: 16x the search's quick preset, 1.8x the default run; ask for more on a GPU), held-out checkpoints every 80 steps, a
copy of the weights at half and at the full budget, and each copy fine-tuned on two downstream
tasks built from real data (WordNet supersense of a gloss, 45 classes; and a sentence-pair view:
do two glosses share a supersense), at the learning rates of ``--lrs`` (best dev accuracy kept). Ground truth = mean dev accuracy
of the two tasks at the full budget; the same at half the budget shows whether the ranking has
converged. One CSV row per genome is appended as soon as it is done, so a stopped run resumes
where it was (``bench/results/quality_ground_truth.csv``).

proxies: the cheap scores a search could afford per candidate, on the same genomes, appended to
``bench/results/quality_proxies.csv``; ``report`` joins both files and prints the taus, over all
genomes and over those above 10M parameters.

Deterministic: same settings, hardware and thread count give the same rows.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
warnings.filterwarnings("ignore")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

import nas  # noqa: E402
from nas.arch import ArchConfig  # noqa: E402
from nas.space import load_space  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
GROUND_CSV = RESULTS / "quality_ground_truth.csv"
PROXY_CSV = RESULTS / "quality_proxies.csv"
TASKS = {"supersense": ("wordnet-supersense", 48), "pair": ("wordnet-pair", 64)}  # task, fine-tune seq_len
TEACHER_SHAPE = dict(num_layers=6, hidden_size=384, num_attention_heads=12, intermediate_size=1536, embedding_size=384)


def genome_set() -> dict[str, ArchConfig]:
    """At least 20 genomes over 1-30M parameters and every kind the full space holds."""
    named = {
        "mobilebert": nas.reference("mobilebert").arch,
        "mobilebert-tiny": nas.reference("mobilebert-tiny").arch,
        "teacher-shape": ArchConfig(**TEACHER_SHAPE),
        "squeezebert-6x384": ArchConfig(num_layers=6, hidden_size=384, num_attention_heads=6, intermediate_size=1536,
                                        embedding_size=384, qkv_groups=4, intermediate_groups=4, output_groups=4),
        "bert-4x512": ArchConfig(num_layers=4, hidden_size=512, num_attention_heads=8, intermediate_size=2048, embedding_size=512),
        "bert-4x256": ArchConfig(num_layers=4, hidden_size=256, num_attention_heads=4, intermediate_size=1024, embedding_size=256),
        "bert-2x128": ArchConfig(num_layers=2, hidden_size=128, num_attention_heads=2, intermediate_size=512, embedding_size=128),
        "bert-2x64-e32": ArchConfig(num_layers=2, hidden_size=64, num_attention_heads=2, intermediate_size=256, embedding_size=32),
        "mobilebert-12l": ArchConfig(**(nas.reference("mobilebert").arch.to_dict() | {"num_layers": 12})),
        # the old demo front's best and fastest kinds: 2 layers, a 64-wide bottleneck
        "demo-2x768-b64": ArchConfig(num_layers=2, hidden_size=768, intra_bottleneck_size=64, embedding_size=256,
                                     num_attention_heads=4, intermediate_size=512, attention_input="bottleneck"),
        "demo-2x512-b64": ArchConfig(num_layers=2, hidden_size=512, intra_bottleneck_size=64, embedding_size=384,
                                     num_attention_heads=4, intermediate_size=512, attention_input="bottleneck"),
    }
    # the rest: seeded draws from the full space, 1-30M parameters, at most 12 layers (CPU cost)
    space = load_space("mobile")
    drawn = 0
    for arch in space.iter_samples(400, seed=7):
        params = nas.count(arch).params
        if 1e6 <= params <= 30e6 and arch.num_layers <= 12:
            named[f"mobile-s7-{drawn:02d}"] = arch
            drawn += 1
            if drawn == 11:
                break
    return named


# ---- CSV rows, appended one at a time -------------------------------------------------------


def done_names(path: Path) -> set[str]:
    return {row["name"] for row in _read_list(path)}


def append_row(path: Path, row: dict) -> None:
    """Append one row (header first on a new file), flushed and fsynced: a stop loses no finished row."""
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists() or path.stat().st_size == 0
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)
        f.flush()
        os.fsync(f.fileno())


def read_rows(path: Path) -> dict[str, dict]:
    return {row["name"]: row for row in _read_list(path)}


def provenance(threads: int) -> dict:
    from nas.precision import cpu_model

    import transformers

    return {
        "hardware": cpu_model(),
        "machine": platform.node(),
        "threads": threads,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "date": time.strftime("%Y-%m-%d"),
    }


def selected(args) -> dict[str, ArchConfig]:
    genomes = genome_set()
    if args.only:
        wanted = args.only.split(",")
        unknown = [n for n in wanted if n not in genomes]
        if unknown:
            sys.exit(f"quality.py: error: --only {unknown[0]}: not in the genome set (see `genomes`)")
        genomes = {n: genomes[n] for n in wanted}
    return genomes


# ---- ground truth ------------------------------------------------------------------------------


def finetune_both(student, tasks: dict, config) -> dict[str, dict]:
    from nas.finetune.run import finetune

    out = {}
    for key, (task, seq_len) in tasks.items():
        result = finetune(student, task, config.replace(seq_len=seq_len))
        out[key] = result
    return out


STUDENTS = Path(__file__).resolve().parent.parent / "runs" / "quality" / "students"


def distill_with_retries(arch: ArchConfig, config, snapshot_steps: tuple[int, ...], retries: int = 2):
    """A long run that diverges says the learning rate was too high, not that the genome is bad:
    retry at half the rate (twice at most), and record the rate that trained."""
    from nas.distill import distill

    lr = config.lr
    for attempt in range(retries + 1):
        result = distill(arch, config.replace(lr=lr), snapshot_steps=snapshot_steps)
        if result.status != "diverged" or attempt == retries:
            return result, lr
        lr /= 2


def save_snapshots(name: str, result) -> None:
    """Keep each snapshot's weights (runs/quality/students/NAME/STEP.safetensors), so that another
    fine-tuning protocol can be tried without distilling again."""
    from safetensors.torch import save_file

    folder = STUDENTS / name
    folder.mkdir(parents=True, exist_ok=True)
    result.arch.save(folder / "genome.json")
    for step, state in result.snapshots.items():
        save_file({k: v.contiguous() for k, v in state.items()}, str(folder / f"{step}.safetensors"))


def _claimed_by_another(marker: Path) -> bool:
    try:
        pid = int(marker.read_text())
    except (OSError, ValueError):
        return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False  # a stopped run: its genome is free again
    except PermissionError:
        pass
    return True


def run_ground(args) -> None:
    from nas.distill import DistillConfig
    from nas.finetune.run import FinetuneConfig
    from nas.finetune.tasks import load_task
    from tqdm import tqdm

    torch.set_num_threads(args.threads)
    genomes = selected(args)
    todo = [n for n in genomes if n not in done_names(GROUND_CSV)]
    tasks = {key: (load_task(name, max_train=args.train_examples, max_dev=args.dev_examples), seq)
             for key, (name, seq) in TASKS.items()}
    ft_config = FinetuneConfig(lrs=tuple(args.lrs), epochs=args.epochs, threads=args.threads, seed=0)
    steps = args.distill_steps
    half = steps // 2
    config = DistillConfig(steps=steps, seed=0, threads=args.threads, num_checkpoints=steps // 80, heldout_examples=64)
    if half not in config.checkpoint_steps:
        sys.exit(f"quality.py: error: --distill-steps {steps}: must be a multiple of 160")
    prov = provenance(args.threads)
    if args.reverse:
        todo.reverse()
    for name in tqdm(todo, desc="ground truth", unit="genome"):
        if name in done_names(GROUND_CSV) or _claimed_by_another(STUDENTS / name / "claimed"):
            continue  # finished, or being run by another live process (one per core)
        (STUDENTS / name).mkdir(parents=True, exist_ok=True)
        (STUDENTS / name / "claimed").write_text(str(os.getpid()))
        arch = genomes[name]
        began = time.perf_counter()
        result, lr = distill_with_retries(arch, config, (half, steps))
        row = {"name": name, "arch_id": arch.id, "params": nas.count(arch).params, "flops": 2 * nas.count(arch, 128).macs,
               "layers": arch.num_layers, "status": result.status, "distill_steps": steps, "distill_lr": lr}
        if result.status != "ok":
            row |= {"reason": result.reason}
            append_row(GROUND_CSV, _complete_ground_row(row))
            continue
        save_snapshots(name, result)
        row["score_curve"] = json.dumps({c.step: round(c.score, 5) for c in result.checkpoints})
        row["heldout_curve"] = json.dumps({c.step: round(c.heldout_loss, 5) for c in result.checkpoints})
        distill_s = time.perf_counter() - began
        student = result.student
        accs = {}
        for label, step in (("half", half), ("full", steps)):
            student.load_state_dict(result.snapshots[step])
            for key, ft in finetune_both(student, tasks, ft_config).items():
                accs[f"{label}_{key}_acc"] = round(ft.accuracy, 5)
                accs[f"{label}_{key}_f1"] = round(ft.macro_f1, 5)
                accs[f"{label}_{key}_lr"] = ft.best_lr
        row |= accs
        row["gt_half"] = round((accs["half_supersense_acc"] + accs["half_pair_acc"]) / 2, 5)
        row["gt"] = round((accs["full_supersense_acc"] + accs["full_pair_acc"]) / 2, 5)
        row["distill_s"] = round(distill_s, 1)
        row["total_s"] = round(time.perf_counter() - began, 1)
        row["precision"] = result.precision
        row["reason"] = ""
        append_row(GROUND_CSV, _complete_ground_row(row | {"settings": json.dumps({
            "distill": {k: v for k, v in config.to_dict().items() if k in ("steps", "batch_size", "seq_len", "lr", "seed")},
            "finetune": ft_config.to_dict() | {"train_examples": args.train_examples, "dev_examples": args.dev_examples},
            "tasks": {k: v[0].describe() for k, v in tasks.items()}, "provenance": prov})}))
        tqdm.write(f"{name}: gt {row['gt']:.4f} (half {row['gt_half']:.4f}) in {row['total_s']:.0f}s")


GROUND_FIELDS = ["name", "arch_id", "params", "flops", "layers", "status", "distill_steps", "distill_lr", "score_curve", "heldout_curve",
                 *[f"{b}_{t}_{m}" for b in ("half", "full") for t in TASKS for m in ("acc", "f1", "lr")],
                 "gt_half", "gt", "distill_s", "total_s", "precision", "reason", "settings"]


def _complete_ground_row(row: dict) -> dict:
    return {k: row.get(k, "") for k in GROUND_FIELDS}


def run_extra_task(args) -> None:
    """Fine-tune the kept students (both snapshots) on one more task: quality_ground_truth_TASK.csv."""
    from safetensors.torch import load_file
    from tqdm import tqdm

    from nas.finetune.run import FinetuneConfig, finetune
    from nas.finetune.tasks import load_task
    from nas.model import build_model

    torch.set_num_threads(args.threads)
    path = RESULTS / f"quality_ground_truth_{args.task}.csv"
    ground = read_rows(GROUND_CSV)
    task = load_task(args.task, max_train=args.train_examples, max_dev=args.dev_examples)
    ft_config = FinetuneConfig(lrs=tuple(args.lrs), epochs=args.epochs, threads=args.threads, seed=0, seq_len=48)
    for name in tqdm([n for n in ground if ground[n]["status"] == "ok"], desc=args.task, unit="genome"):
        if name in done_names(path):
            continue
        steps = int(ground[name]["distill_steps"])
        folder = STUDENTS / name
        encoder = build_model(ArchConfig.load(folder / "genome.json"))
        row = {"name": name}
        for label, step in (("half", steps // 2), ("full", steps)):
            encoder.load_state_dict(load_file(str(folder / f"{step}.safetensors")))
            result = finetune(encoder, task, ft_config)
            row |= {f"{label}_acc": round(result.accuracy, 5), f"{label}_f1": round(result.macro_f1, 5), f"{label}_lr": result.best_lr}
        append_row(path, row | {"settings": json.dumps(ft_config.to_dict() | {"task": task.describe()})})
        tqdm.write(f"{name}: {args.task} {row['full_acc']:.4f} (half {row['half_acc']:.4f})")


# ---- the linear-probe ground truth: the kept students, many more examples ---------------------

LP_CSV = RESULTS / "quality_ground_truth_lp.csv"
FEATURES = STUDENTS.parent / "features"
LP_TASKS = ("supersense", "pos")  # one set of glosses, two label sets: the lexicographer file, its part of speech


def run_regrade(args) -> None:
    """Grade the kept students again with a protocol whose noise is far below the gaps between them.

    The first ground truth fine-tuned on 1,000 examples and read 400 dev examples: a standard error
    of about 2.5 points per accuracy, as large as most gaps, and in most rows the fitted head alone
    (the LP of LP-FT) beat the fine-tune. Here every kept student (half and full budget) gets that
    linear head fit on ``--lp-train`` glosses and read on ``--lp-dev`` dev glosses, for the supersense
    labels and for the part of speech of the same glosses. The pooled features are cached
    (runs/quality/features/NAME/STEP.safetensors) and each dev example's outcome is kept, so the
    report can bootstrap over dev examples and split the dev set in halves.
    """
    from safetensors.torch import load_file, save_file
    from tqdm import tqdm

    from nas.distill.teacher import load_teacher
    from nas.finetune.run import encode, fit_linear_head, pooled_features
    from nas.finetune.tasks import load_task
    from nas.model import build_model
    from nas.precision import resolve_precision

    torch.set_num_threads(args.threads)
    ground = read_rows(GROUND_CSV)
    task = load_task("wordnet-supersense", max_train=args.lp_train, max_dev=args.lp_dev)
    tokenizer = load_teacher(None).tokenizer
    splits = {"train": encode(tokenizer, task.train_texts, None, task.train_labels, TASKS["supersense"][1]),
              "dev": encode(tokenizer, task.dev_texts, None, task.dev_labels, TASKS["supersense"][1])}
    pos_names = sorted({label.split(".")[0] for label in task.label_names})
    to_pos = torch.tensor([pos_names.index(label.split(".")[0]) for label in task.label_names])
    labels = {"supersense": {k: v.labels for k, v in splits.items()}, "pos": {k: to_pos[v.labels] for k, v in splits.items()}}
    counts = {"supersense": task.num_labels, "pos": len(pos_names)}
    precision = resolve_precision("auto", torch.device("cpu"))
    names = [n for n in ground if ground[n]["status"] == "ok"]
    if args.reverse:
        names.reverse()
    for name in tqdm(names, desc="linear-probe ground truth", unit="genome"):
        if name in done_names(LP_CSV) or _claimed_by_another(FEATURES / name / "claimed"):
            continue
        (FEATURES / name).mkdir(parents=True, exist_ok=True)
        (FEATURES / name / "claimed").write_text(str(os.getpid()))
        began = time.perf_counter()
        steps = int(ground[name]["distill_steps"])
        encoder = None
        row = {"name": name, "params": ground[name]["params"]}
        for label, step in (("half", steps // 2), ("full", steps)):
            cache = FEATURES / name / f"{step}-{args.lp_train}-{args.lp_dev}.safetensors"
            if cache.exists():
                features = load_file(str(cache))
            else:
                if encoder is None:
                    encoder = build_model(ArchConfig.load(STUDENTS / name / "genome.json"))
                encoder.load_state_dict(load_file(str(STUDENTS / name / f"{step}.safetensors")))
                features = {k: pooled_features(encoder, v, 64, precision) for k, v in splits.items()}
                save_file(features, str(cache))
            for key in LP_TASKS:
                head, _ = fit_linear_head(features["train"], labels[key]["train"], counts[key])
                predicted = (features["dev"] @ head["weight"].T + head["bias"]).argmax(1)
                correct = (predicted == labels[key]["dev"]).numpy()
                row[f"{label}_{key}_acc"] = round(float(correct.mean()), 5)
                row[f"{label}_{key}_correct"] = _pack(correct)
        row["seconds"] = round(time.perf_counter() - began, 1)
        row["settings"] = json.dumps({"train_examples": len(splits["train"].labels), "dev_examples": len(splits["dev"].labels),
                                      "seq_len": TASKS["supersense"][1], "precision": precision, "head": "fit_linear_head",
                                      "provenance": provenance(args.threads)})
        append_row(LP_CSV, row)
        tqdm.write(f"{name}: supersense {row['full_supersense_acc']:.4f} (half {row['half_supersense_acc']:.4f}), "
                   f"pos {row['full_pos_acc']:.4f} in {row['seconds']:.0f}s")


def _pack(correct) -> str:
    """A dev set's per-example outcomes (bools) as base64 of their packed bits."""
    import base64

    import numpy as np

    return base64.b64encode(np.packbits(correct.astype(bool)).tobytes()).decode("ascii")


def _unpack(text: str, n: int):
    import base64

    import numpy as np

    return np.unpackbits(np.frombuffer(base64.b64decode(text), dtype=np.uint8))[:n].astype(bool)


# ---- proxies -----------------------------------------------------------------------------------


def run_proxies(args) -> None:
    from nas.distill import DistillConfig, distill
    from nas.distill.quality import probe_score
    from tqdm import tqdm

    torch.set_num_threads(args.threads)
    genomes = selected(args)
    todo = [n for n in genomes if n not in done_names(PROXY_CSV)]
    for name in tqdm(todo, desc="proxies", unit="genome"):
        arch = genomes[name]
        row = {"name": name, "params": nas.count(arch).params, "flops": 2 * nas.count(arch, 128).macs}
        for label, config in (
            ("quick", DistillConfig.quick(seed=0, threads=args.threads, precision="fp32")),
            ("default", DistillConfig(steps=120, score="cosine", seed=0, threads=args.threads, precision="fp32", num_checkpoints=4)),
            ("default_bf16", DistillConfig(steps=120, score="cosine", seed=0, threads=args.threads, num_checkpoints=4)),
            ("long3x", DistillConfig(steps=360, score="cosine", seed=0, threads=args.threads, num_checkpoints=6)),
        ):
            began = time.perf_counter()
            result = distill(arch, config)
            row[f"{label}_score"] = round(result.score, 5) if result.score is not None else ""
            row[f"{label}_heldout"] = round(result.heldout_loss, 5) if result.heldout_loss is not None else ""
            row[f"{label}_curve"] = json.dumps({c.step: round(c.score, 5) for c in result.checkpoints})
            row[f"{label}_s"] = round(time.perf_counter() - began, 1)
            if label == "default_bf16" and result.student is not None:
                began = time.perf_counter()
                row["probe_score"] = round(probe_score(result.student), 5)
                row["probe_s"] = round(time.perf_counter() - began, 1)
        append_row(PROXY_CSV, row)
        tqdm.write(f"{name}: " + ", ".join(f"{k} {v}" for k, v in row.items() if k.endswith("_score")))


# ---- readouts: what to read from a short run --------------------------------------------------

READOUT_CSV = RESULTS / "quality_readouts.csv"
READOUT_STEPS = (0, 30, 120)  # before training (the teacher-initialised student), a quarter of the default run, all of it
READOUT_FIT, READOUT_READ = 4000, 2000  # glosses of the task's train split: fit a readout, score it (the dev split is never read)
READOUT_FIELDS = ["name", "params", "distill_s", "heldout",
                  *[c for s in READOUT_STEPS for c in (f"ridge{s}", f"lp{s}", f"ridge{s}_small", f"lp{s}_small", f"readout{s}_s")],
                  "status"]


def run_readouts(args) -> None:
    """Several readouts of the same default run (bf16, 120 steps) at several of its steps.

    Per genome and step: a logistic head on the last layer's pooled features (``lp``, the ground
    truth's own readout, on fewer examples), the shipped ridge probe on the pooled embedding output
    and last layer (``ridge``), each at the full (4,000 / 2,000) and at the shipped probe's size
    (2,000 / 1,000, ``_small``), and at step 0 (``init``: no distillation at all, a training-free
    proxy). One forward pass per step feeds all four.
    """
    from tqdm import tqdm

    from nas.distill import DistillConfig, distill
    from nas.distill.quality import ridge_probe_accuracy
    from nas.distill.run import _init_word_embeddings
    from nas.distill.teacher import load_teacher
    from nas.finetune.run import encode, fit_linear_head
    from nas.finetune.tasks import load_task
    from nas.model import build_model

    torch.set_num_threads(args.threads)
    genomes = selected(args)
    teacher = load_teacher(None)
    task = load_task("wordnet-supersense", max_train=READOUT_FIT + READOUT_READ, max_dev=2)
    data = encode(teacher.tokenizer, task.train_texts, None, task.train_labels, TASKS["supersense"][1])
    order = torch.randperm(len(data.labels), generator=torch.Generator().manual_seed(0))
    fit, read = order[:READOUT_FIT], order[READOUT_FIT:]
    small = (fit[: READOUT_FIT // 2], read[: READOUT_READ // 2])
    config = DistillConfig(steps=120, score="cosine", seed=0, threads=args.threads, num_checkpoints=4)  # the 120-step run measured
    todo = [n for n in genomes if n not in done_names(READOUT_CSV)]
    if args.reverse:
        todo.reverse()
    claims = STUDENTS.parent / "readout-claims"
    claims.mkdir(parents=True, exist_ok=True)
    for name in tqdm(todo, desc="readouts", unit="genome"):
        if name in done_names(READOUT_CSV) or _claimed_by_another(claims / name):
            continue  # finished, or being read by another live process (one per core)
        (claims / name).write_text(str(os.getpid()))
        arch = genomes[name]
        row: dict = {"name": name, "params": nas.count(arch).params}
        began = time.perf_counter()
        result = distill(arch, config, snapshot_steps=READOUT_STEPS[1:])
        row["distill_s"] = round(time.perf_counter() - began, 1)
        row["heldout"] = result.heldout_loss if result.heldout_loss is not None else ""
        if result.status != "ok":
            append_row(READOUT_CSV, {k: row.get(k, "") for k in READOUT_FIELDS} | {"status": result.status})
            continue
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            student = build_model(arch, dropout=0.0)
        _init_word_embeddings(student, teacher)
        states = {0: student.state_dict()} | result.snapshots
        for step in READOUT_STEPS:
            student.load_state_dict(states[step])
            t = time.perf_counter()
            embedded, last = _both_features(student, data, result.precision)
            both = torch.cat([embedded, last], 1).double()
            for suffix, (f, r) in (("", (fit, read)), ("_small", small)):
                row[f"ridge{step}{suffix}"] = round(ridge_probe_accuracy(both[f], data.labels[f], both[r], data.labels[r], task.num_labels), 5)
                head, _ = fit_linear_head(last[f], data.labels[f], task.num_labels)
                predicted = (last[r] @ head["weight"].T + head["bias"]).argmax(1)
                row[f"lp{step}{suffix}"] = round(float((predicted == data.labels[r]).double().mean()), 5)
            row[f"readout{step}_s"] = round(time.perf_counter() - t, 1)
        row["status"] = "ok"
        append_row(READOUT_CSV, {k: row.get(k, "") for k in READOUT_FIELDS})
        tqdm.write(f"{name}: " + ", ".join(f"{k} {v}" for k, v in row.items() if k[:2] in ("lp", "ri") and not k.endswith("_small")))


def _both_features(encoder, data, precision: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean-pooled embedding output and last hidden state (fp32): the shipped probe's features, under ``precision``."""
    from nas.distill.quality import probe_features
    from nas.precision import autocast

    with autocast(precision):
        both = probe_features(encoder, data.ids, data.mask)
    embedded, last = both.split(both.shape[1] // 2, dim=1)
    return embedded.float(), last.float()


# ---- budgets: the default run's length -------------------------------------------------------

BUDGET_CSV = RESULTS / "quality_budgets.csv"


def run_budgets(args) -> None:
    """The default run (cosine, bf16 where the CPU has it) at each of ``--budgets`` steps, one row per
    (genome, budget): how the ranking and the cost move with the budget."""
    from tqdm import tqdm

    from nas.distill import DistillConfig, distill

    torch.set_num_threads(args.threads)
    genomes = selected(args)
    if args.reverse:
        genomes = dict(reversed(list(genomes.items())))
    def done() -> set[tuple[str, int, int]]:
        return {(r["name"], int(r["steps"]), int(r["seed"])) for r in _read_list(BUDGET_CSV)}

    todo = [(n, b, s) for s in args.seeds for b in args.budgets for n in genomes if (n, b, s) not in done()]
    for name, steps, seed in tqdm(todo, desc="budgets", unit="run"):
        if (name, steps, seed) in done():  # a second process got there first
            continue
        began = time.perf_counter()
        result = distill(genomes[name], DistillConfig(steps=steps, seed=seed, threads=args.threads, num_checkpoints=1))
        append_row(BUDGET_CSV, {"name": name, "steps": steps, "seed": seed, "status": result.status,
                                "score": round(result.score, 5) if result.score is not None else "",
                                "heldout": round(result.heldout_loss, 5) if result.heldout_loss is not None else "",
                                "seconds": round(time.perf_counter() - began, 1), "precision": result.precision})
        tqdm.write(f"{name} @ {steps} steps, seed {seed}: {result.score}")


def _read_list(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


# ---- report ------------------------------------------------------------------------------------


def run_report(args) -> None:
    ground, proxies = read_rows(GROUND_CSV), read_rows(PROXY_CSV)
    for row in _read_list(BUDGET_CSV):  # the default run at other budgets
        if row["name"] in proxies and row["status"] == "ok":
            seed = "" if row["seed"] == "0" else f"_seed{row['seed']}"
            proxies[row["name"]][f"cosine{row['steps']}{seed}_score"] = row["score"]
    for name, row in read_rows(READOUT_CSV).items():  # the default run's other readouts, as proxies of their own
        if name in proxies and row["status"] == "ok":
            proxies[name] |= {f"readout_{k}_score": v for k, v in row.items() if k.startswith(("lp", "ridge"))}
    tasks = args.gt_tasks.split(",")
    accuracy: dict[str, dict[str, dict[str, float]]] = {}  # task -> half/full -> name -> accuracy
    outcomes: dict[str, dict] = {}  # task -> name -> the full budget's per-dev-example outcomes (lp- tasks)
    for task in tasks:
        if task.startswith("lp-"):
            key = task[3:]
            lp = read_rows(LP_CSV)
            rows = {n: {"half": r[f"half_{key}_acc"], "full": r[f"full_{key}_acc"]} for n, r in lp.items()}
            size = json.loads(next(iter(lp.values()))["settings"])["dev_examples"]
            outcomes[task] = {n: _unpack(r[f"full_{key}_correct"], size) for n, r in lp.items()}
        elif task in TASKS:
            rows = {n: {"half": r.get(f"half_{task}_acc"), "full": r.get(f"full_{task}_acc")} for n, r in ground.items()}
        else:
            rows = {n: {"half": r["half_acc"], "full": r["full_acc"]} for n, r in read_rows(RESULTS / f"quality_ground_truth_{task}.csv").items()}
        accuracy[task] = {b: {n: float(v[b]) for n, v in rows.items() if v[b]} for b in ("half", "full")}
    names = [n for n in ground if ground[n]["status"] == "ok" and all(n in accuracy[t]["full"] for t in tasks)]
    for n in names:
        ground[n]["gt"] = sum(accuracy[t]["full"][n] for t in tasks) / len(tasks)
        ground[n]["gt_half"] = sum(accuracy[t]["half"][n] for t in tasks) / len(tasks)
    print(f"{len(names)} genomes with ground truth = mean dev accuracy of {', '.join(tasks)}")
    print(f"{'genome':<20} {'params':>7} {'gt':>7} {'half':>7} " + " ".join(f"{t:>14}" for t in tasks))
    for n in sorted(names, key=lambda n: -float(ground[n]["gt"])):
        g = ground[n]
        print(f"{n:<20} {int(g['params']) / 1e6:6.1f}M {float(g['gt']):7.4f} {float(g['gt_half']):7.4f} "
              + " ".join(f"{accuracy[t]['full'][n]:14.4f}" for t in tasks))
    for t in tasks:
        print(f"  {t}: tau half vs full {_tau(accuracy[t]['half'], accuracy[t]['full'], names):.3f}")
    gt = {n: float(ground[n]["gt"]) for n in names}
    half = {n: float(ground[n]["gt_half"]) for n in names}
    print(f"\nconvergence: Kendall tau of the half-budget ranking vs the full one: {_tau(half, gt, names):.3f}")
    resample = _dev_resampler(outcomes, tasks, names) if len(outcomes) == len(tasks) else None
    if resample is not None:
        halves = [_tau(*resample("halves", seed), names) for seed in range(200)]
        print(f"reliability: tau between the ground truths of two disjoint halves of the dev set: "
              f"median {_median(halves):.3f} (200 random splits)")
    both = [n for n in names if n in proxies]
    big = [n for n in both if int(ground[n]["params"]) > 10e6]
    columns = sorted({k for n in both for k in _derived(proxies[n])})
    print(f"\nproxies on {len(both)} genomes ({len(big)} above 10M params): Kendall tau vs ground truth"
          + (" [5th, 95th percentile over 1,000 bootstrap draws of the dev set]" if resample else ""))
    draws = [resample("bootstrap", seed)[0] for seed in range(1000)] if resample else []
    resolved = _resolved_pairs(draws, both) if draws else []
    if draws:
        print(f"(pairs the ground truth orders the same way in >= 95 % of the bootstrap draws: {len(resolved)} of "
              f"{len(both) * (len(both) - 1) // 2}; 'agree' = the share of them the proxy orders that way too)")
        print(f"{'proxy':<28} {'all':>6} {'>10M':>6}   {'bootstrap all':>16}  {'bootstrap >10M':>16}  {'agree':>6}")
    else:
        print(f"{'proxy':<28} {'all':>6} {'>10M':>6}")
    for column in columns:
        values = {n: _derived(proxies[n]).get(column) for n in both}
        keep = [n for n in both if values[n] is not None]
        keep_big = [n for n in big if values[n] is not None]
        line = f"{column:<28} {_tau(values, gt, keep):6.3f} {_tau(values, gt, keep_big):6.3f}"
        if draws:
            spread = [sorted(_tau(values, d, subset) for d in draws) for subset in (keep, keep_big)]
            line += "   " + "  ".join(f"[{s[50]:6.3f}, {s[949]:6.3f}]" for s in spread)
            judged = [(a, b) for a, b in resolved if values.get(a) is not None and values.get(b) is not None]
            line += f"  {sum(values[a] > values[b] for a, b in judged) / max(1, len(judged)):6.3f}"
        print(line)
    print("\nASHA: of the genomes in the top third at a run's last checkpoint, how many a first-rung cut "
          "(keep the top third) would have stopped; tau of the first rung vs the last")
    for label in ("quick", "default_bf16", "long3x"):
        curves = {n: {int(k): v for k, v in json.loads(proxies[n][f"{label}_curve"]).items()} for n in proxies
                  if proxies[n].get(f"{label}_curve")}  # fmt: skip
        if len(curves) < 6:
            continue
        for rung_index in range(len(next(iter(curves.values()))) - 1):
            rung = sorted(next(iter(curves.values())))[rung_index]
            first = {n: c[rung] for n, c in curves.items()}
            last = {n: c[max(c)] for n, c in curves.items()}
            k = max(1, len(curves) // 3)
            top_last = set(sorted(curves, key=lambda n: -last[n])[:k])
            kept = set(sorted(curves, key=lambda n: -first[n])[:k])
            print(f"  {label:<14} rung at step {rung:>4}: {len(top_last - kept)}/{k} of the final top third stopped; "
                  f"tau {_tau(first, last, list(curves)):.3f}")


def _dev_resampler(outcomes: dict, tasks: list[str], names: list[str]):
    """resample(kind, seed) -> ground truths recomputed from the dev examples' outcomes: ("bootstrap")
    one draw with replacement, or ("halves") the two halves of a random split."""
    import numpy as np

    size = len(next(iter(outcomes[tasks[0]].values())))

    def mean_accuracy(index) -> dict[str, float]:
        return {n: float(np.mean([outcomes[t][n][index].mean() for t in tasks])) for n in names}

    def resample(kind: str, seed: int):
        rng = np.random.default_rng(seed)
        if kind == "bootstrap":
            return (mean_accuracy(rng.integers(0, size, size)),)
        order = rng.permutation(size)
        return mean_accuracy(order[: size // 2]), mean_accuracy(order[size // 2 :])

    return resample


def _resolved_pairs(draws: list[dict[str, float]], names: list[str]) -> list[tuple[str, str]]:
    """(better, worse) pairs whose ground-truth order holds in at least 95 % of the bootstrap draws."""
    pairs = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            share = sum(d[a] > d[b] for d in draws) / len(draws)
            if share >= 0.95:
                pairs.append((a, b))
            elif share <= 0.05:
                pairs.append((b, a))
    return pairs


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def _derived(row: dict) -> dict[str, float]:
    """Every proxy a row supports, oriented so that higher means better."""
    out: dict[str, float] = {}
    for key, value in row.items():
        if value in ("", None) or key == "name":
            continue
        if key.endswith("_score"):
            out[key] = float(value)
        elif key.endswith("_heldout"):
            out[f"-{key}"] = -float(value)
        elif key.endswith("_curve"):
            curve = {int(k): v for k, v in json.loads(value).items()}
            if len(curve) >= 3:
                out[f"{key[:-6]}_extrapolated"] = extrapolate(curve, EXTRAPOLATE_TO)
    if row.get("params"):
        out["params"] = float(row["params"])
        out["flops"] = float(row["flops"])
    return out


EXTRAPOLATE_TO = 640  # the ground truth's distillation budget


def extrapolate(curve: dict[int, float], to_step: int) -> float:
    """A learning-curve extrapolation: the least-squares fit of s(t) = a - b * t^-c (c on a grid) at ``to_step``.

    Uses the second half of the checkpoints: the first ones sit in the warm-up, where the score can dip.
    """
    import numpy as np

    steps = sorted(curve)[len(curve) // 2 - 1 :]
    t = np.array(steps, dtype=float)
    y = np.array([curve[k] for k in steps])
    best = None
    for c in (0.25, 0.5, 1.0, 2.0):
        x = np.stack([np.ones_like(t), -(t ** -c)], axis=1)
        (a, b), *_ = np.linalg.lstsq(x, y, rcond=None)
        error = float(((x @ np.array([a, b]) - y) ** 2).sum())
        if best is None or error < best[0]:
            best = (error, a - b * to_step ** -c)
    return float(best[1])


def _tau(values: dict, gt: dict, names: list[str]) -> float:
    from scipy.stats import kendalltau

    if len(names) < 3:
        return float("nan")
    return float(kendalltau([values[n] for n in names], [gt[n] for n in names]).statistic)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["genomes", "ground", "extra-task", "regrade", "proxies", "readouts", "budgets", "report"])
    parser.add_argument("--task", default="wordnet-pos", help="extra-task: the embedded task to fine-tune the kept students on")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", help="comma-separated genome names")
    parser.add_argument("--gt-tasks", default="supersense,pair", help="report: the tasks whose mean accuracy is the ground truth")
    parser.add_argument("--reverse", action="store_true", help="work through the genomes from the end (a second process)")
    parser.add_argument("--distill-steps", type=int, default=640)
    parser.add_argument("--train-examples", type=int, default=1000)
    parser.add_argument("--dev-examples", type=int, default=400)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--lrs", type=float, nargs="+", default=[1e-3])
    parser.add_argument("--budgets", type=int, nargs="+", default=[240, 480], help="budgets: distillation steps")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="budgets: the runs' seeds (student init and data order)")
    parser.add_argument("--lp-train", type=int, default=8000, help="regrade: glosses the linear head is fit on")
    parser.add_argument("--lp-dev", type=int, default=6000, help="regrade: dev glosses it is read on")
    args = parser.parse_args()
    if args.command == "genomes":
        for name, arch in genome_set().items():
            cost = nas.count(arch, 128)
            print(f"{name:<20} {cost.params / 1e6:6.2f}M {2 * cost.macs / 1e9:7.2f} GFLOPs  {arch.id}")
        return
    {"ground": run_ground, "extra-task": run_extra_task, "regrade": run_regrade, "readouts": run_readouts, "budgets": run_budgets, "proxies": run_proxies, "report": run_report}[args.command](args)


if __name__ == "__main__":
    main()
