"""bench/quality.py ground, extra-task and regrade: the ground truth (long distillation, then downstream
heads on the kept students)."""

from __future__ import annotations

import json
import os
import time

import torch

import nas
from nas.arch import ArchConfig
from quality_common import (
    LP_TASKS, MEASURED, RESULTS, TASKS, GroundFiles, _claimed_by_another, _pack, _read_list, _unpack, append_row, done_names, ground_files,
    provenance, read_rows, selected, usage_error,
)  # fmt: skip


def finetune_both(student, tasks: dict, config) -> dict[str, dict]:
    from nas.finetune.run import finetune

    out = {}
    for key, (task, seq_len) in tasks.items():
        result = finetune(student, task, config.replace(seq_len=seq_len))
        out[key] = result
    return out




def distill_with_retries(arch: ArchConfig, config, snapshot_steps: tuple[int, ...], retries: int = 2):
    """A long run that diverges says the learning rate was too high, not that the genome is bad:
    retry at half the rate (twice at most), and record the rate that trained."""
    from nas.distill import distill

    result = distill(arch, config.replace(divergence_retries=retries), snapshot_steps=snapshot_steps)
    return result, result.config.lr


def save_snapshots(name: str, result, files: GroundFiles) -> None:
    """Keep each snapshot's weights (runs/quality/students[-STEPS]/NAME/STEP.safetensors), so that
    another fine-tuning protocol can be tried without distilling again."""
    from safetensors.torch import save_file

    folder = files.students / name
    folder.mkdir(parents=True, exist_ok=True)
    result.arch.save(folder / "genome.json")
    for step, state in result.snapshots.items():
        save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(folder / f"{step}.safetensors"))


def run_ground(args) -> None:
    from nas.distill import DistillConfig
    from nas.finetune.run import FinetuneConfig
    from nas.finetune.tasks import load_task
    from tqdm import tqdm

    torch.set_num_threads(args.threads)
    if "," in args.tag:
        usage_error(f"--tag {args.tag}: ground writes one run; give one name")
    if args.genome_files and not args.tag:
        usage_error("--genome-files needs --tag NAME, so that genomes outside the set keep files of their own")
    if args.batch_size <= 0:
        usage_error(f"--batch-size {args.batch_size}: must be a positive number of sequences")
    if args.distill_steps <= 0 or args.distill_steps % 160:
        usage_error(f"--distill-steps {args.distill_steps}: must be a positive multiple of 160 (snapshots at half and at the full budget, checkpoints every 80 steps)")
    genomes = selected(args)
    if args.teacher:  # a bad teacher is one line before anything is distilled
        from nas.distill.teacher import load_teacher
        from nas.errors import NasError

        try:
            load_teacher(args.teacher)
        except NasError as err:
            usage_error(f"--teacher: {err}")
    files = ground_files(args.distill_steps, args.ground_seed, args.tag)
    steps = args.distill_steps
    half = steps // 2
    config = DistillConfig(steps=steps, seed=files.seed, threads=args.threads, num_checkpoints=steps // 80, heldout_examples=64,
                           batch_size=args.batch_size, teacher=args.teacher, **MEASURED)
    device, _ = config.resolved_hardware
    prov = provenance(args.threads, device)
    # --grade lp: no fine-tune; the linear-probe grade (regrade's) runs on each student as soon as it is distilled
    grader = LinearProbeGrader(args, device) if args.grade == "lp" else None
    todo = [n for n in genomes if n not in done_names(files.lp_csv if grader else files.csv)]
    tasks = {} if grader else {key: (load_task(name, max_train=args.train_examples, max_dev=args.dev_examples), seq)
                               for key, (name, seq) in TASKS.items()}
    ft_config = FinetuneConfig(lrs=tuple(args.lrs), epochs=args.epochs, threads=args.threads, seed=0)
    if args.reverse:
        todo.reverse()
    for name in tqdm(todo, desc="ground truth", unit="genome"):
        if name in done_names(files.csv):
            if grader is not None and (files.students / name / f"{steps}.safetensors").exists():
                graded = grader.grade(name, files, steps)  # distilled before a stop, not graded yet
                if graded is not None:
                    tqdm.write(f"{name}: " + grader.summary(graded))
            continue
        if _claimed_by_another(files.students / name / "claimed"):
            continue  # being run by another live process (one per core)
        (files.students / name).mkdir(parents=True, exist_ok=True)
        (files.students / name / "claimed").write_text(str(os.getpid()))
        arch = genomes[name]
        began = time.perf_counter()
        result, lr = distill_with_retries(arch, config, (half, steps))
        row = {"name": name, "arch_id": arch.id, "params": nas.count(arch).params, "flops": 2 * nas.count(arch, 128).macs,
               "layers": arch.num_layers, "status": result.status, "distill_steps": steps, "distill_lr": lr}
        if result.status != "ok":
            row |= {"reason": result.reason}
            append_row(files.csv, _complete_ground_row(row))
            continue
        save_snapshots(name, result, files)
        row["score_curve"] = json.dumps({c.step: round(c.score, 5) for c in result.checkpoints})
        row["heldout_curve"] = json.dumps({c.step: round(c.heldout_loss, 5) for c in result.checkpoints})
        distill_s = time.perf_counter() - began
        if grader is not None:
            row |= {"distill_s": round(distill_s, 1), "precision": result.precision, "reason": "", "settings": json.dumps({
                "distill": {k: v for k, v in config.to_dict().items() if k in ("steps", "batch_size", "seq_len", "lr", "seed", "teacher")},
                "grade": "lp", "provenance": prov})}
            append_row(files.csv, _complete_ground_row(row))  # the distillation is kept before it is graded
            graded = grader.grade(name, files, steps)
            if graded is not None:
                tqdm.write(f"{name}: distilled in {distill_s:.0f}s; " + grader.summary(graded))
            continue
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
        append_row(files.csv, _complete_ground_row(row | {"settings": json.dumps({
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
    files = ground_files(args.distill_steps, args.ground_seed)
    suffix = files.csv.stem.removeprefix("quality_ground_truth")
    path = RESULTS / f"quality_ground_truth_{args.task}{suffix}.csv"
    ground = read_rows(files.csv)
    task = load_task(args.task, max_train=args.train_examples, max_dev=args.dev_examples)
    ft_config = FinetuneConfig(lrs=tuple(args.lrs), epochs=args.epochs, threads=args.threads, seed=0, seq_len=48)
    for name in tqdm([n for n in ground if ground[n]["status"] == "ok"], desc=args.task, unit="genome"):
        if name in done_names(path):
            continue
        steps = int(ground[name]["distill_steps"])
        folder = files.students / name
        encoder = build_model(ArchConfig.load(folder / "genome.json"))
        row = {"name": name}
        for label, step in (("half", steps // 2), ("full", steps)):
            encoder.load_state_dict(load_file(str(folder / f"{step}.safetensors")))
            result = finetune(encoder, task, ft_config)
            row |= {f"{label}_acc": round(result.accuracy, 5), f"{label}_f1": round(result.macro_f1, 5), f"{label}_lr": result.best_lr}
        append_row(path, row | {"settings": json.dumps(ft_config.to_dict() | {"task": task.describe()})})
        tqdm.write(f"{name}: {args.task} {row['full_acc']:.4f} (half {row['half_acc']:.4f})")


# ---- the linear-probe ground truth: the kept students, many more examples ---------------------



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
    from tqdm import tqdm

    torch.set_num_threads(args.threads)
    files = ground_files(args.distill_steps, args.ground_seed)
    ground = read_rows(files.csv)
    grader = LinearProbeGrader(args)
    names = [n for n in ground if ground[n]["status"] == "ok"]
    if args.reverse:
        names.reverse()
    for name in tqdm(names, desc="linear-probe ground truth", unit="genome"):
        row = grader.grade(name, files, int(ground[name]["distill_steps"]))
        if row is not None:
            tqdm.write(f"{name}: {grader.summary(row)}")


class LinearProbeGrader:
    """The linear-probe grade of a kept student's two snapshots: a multinomial logistic head on the
    pooled features of --lp-train glosses, read on --lp-dev dev glosses, for the 45 supersenses and
    the 4 parts of speech of the same glosses. One row per genome in the run's lp CSV."""

    def __init__(self, args, device: torch.device = torch.device("cpu")) -> None:
        from nas.distill.quality import part_of_speech
        from nas.distill.teacher import load_teacher
        from nas.finetune.run import encode
        from nas.finetune.tasks import load_task
        from nas.precision import resolve_precision

        self.args = args
        self.device = device  # where the features are computed (the head is fit on the CPU)
        task = load_task("wordnet-supersense", max_train=args.lp_train, max_dev=args.lp_dev)
        tokenizer = load_teacher(args.teacher).tokenizer
        self.splits = {"train": encode(tokenizer, task.train_texts, None, task.train_labels, TASKS["supersense"][1]),
                       "dev": encode(tokenizer, task.dev_texts, None, task.dev_labels, TASKS["supersense"][1])}
        pos_names, to_pos = part_of_speech(task.label_names)
        self.labels = {"supersense": {k: v.labels for k, v in self.splits.items()},
                       "pos": {k: to_pos[v.labels] for k, v in self.splits.items()}}
        self.counts = {"supersense": task.num_labels, "pos": len(pos_names)}
        self.precision = resolve_precision("auto", device)

    def grade(self, name: str, files: GroundFiles, steps: int) -> dict | None:
        """Grade and append one genome's row; None when it is done already or another process has it."""
        from safetensors.torch import load_file, save_file

        from nas.finetune.run import HEAD_FIT_ITERATIONS, linear_head_outcomes, pooled_features
        from nas.model import build_model

        if name in done_names(files.lp_csv) or _claimed_by_another(files.features / name / "claimed"):
            return None
        (files.features / name).mkdir(parents=True, exist_ok=True)
        (files.features / name / "claimed").write_text(str(os.getpid()))
        began = time.perf_counter()
        encoder = None
        arch = ArchConfig.load(files.students / name / "genome.json")
        row = {"name": name, "params": nas.count(arch).params}
        for label, step in (("half", steps // 2), ("full", steps)):
            cache = files.features / name / f"{step}-{self.args.lp_train}-{self.args.lp_dev}.safetensors"
            if cache.exists():
                features = load_file(str(cache))
            else:
                if encoder is None:
                    encoder = build_model(arch)
                encoder.load_state_dict(load_file(str(files.students / name / f"{step}.safetensors")))
                features = {k: pooled_features(encoder, v, 64, self.precision, self.device) for k, v in self.splits.items()}
                save_file(features, str(cache))
            for key in LP_TASKS:
                correct = linear_head_outcomes(features["train"], self.labels[key]["train"], features["dev"],
                                               self.labels[key]["dev"], self.counts[key]).numpy()
                row[f"{label}_{key}_acc"] = round(float(correct.mean()), 5)
                row[f"{label}_{key}_correct"] = _pack(correct)
        row["seconds"] = round(time.perf_counter() - began, 1)
        row["settings"] = json.dumps({"train_examples": len(self.splits["train"].labels), "dev_examples": len(self.splits["dev"].labels),
                                      "seq_len": TASKS["supersense"][1], "precision": self.precision, "head": f"fit_linear_head: L-BFGS, {HEAD_FIT_ITERATIONS} iterations",
                                      "provenance": provenance(self.args.threads, self.device)})
        append_row(files.lp_csv, row)
        return row

    @staticmethod
    def summary(row: dict) -> str:
        return (f"supersense {row['full_supersense_acc']:.4f} (half {row['half_supersense_acc']:.4f}), "
                f"pos {row['full_pos_acc']:.4f} in {row['seconds']:.0f}s")


def run_readout_noise(args) -> None:
    """How much of a run's noise is its read-out's: on the kept features of a tagged ground-truth run
    (``ground --grade lp``), each genome's accuracy (the mean of the two heads) with the heads fit on
    two disjoint random halves of the training glosses, and read on two halves of the dev glosses,
    beside the difference between the seeds' runs of the same genome (the distillation's noise)."""
    from statistics import pstdev

    from safetensors.torch import load_file

    from nas.finetune.run import linear_head_outcomes

    grader = LinearProbeGrader(args)
    runs = {seed: ground_files(args.distill_steps, seed, args.tag) for seed in args.seeds}
    names = sorted(set.intersection(*({p.name for p in f.features.iterdir() if p.is_dir()} if f.features.is_dir() else set()
                                      for f in runs.values())))
    if not names:
        usage_error(f"no kept features of run {args.tag or 'the set'} at seeds {args.seeds}: run ground --grade lp first")
    generator = torch.Generator().manual_seed(0)
    train, dev = (torch.randperm(len(grader.splits[k].labels), generator=generator) for k in ("train", "dev"))
    halves = {"fit": [(train[: len(train) // 2], slice(None)), (train[len(train) // 2 :], slice(None))],
              "read": [(slice(None), dev[: len(dev) // 2]), (slice(None), dev[len(dev) // 2 : len(dev) // 2 * 2])]}

    def accuracy(features: dict, fit, read) -> float:
        return sum(float(linear_head_outcomes(features["train"][fit], grader.labels[key]["train"][fit], features["dev"][read],
                                              grader.labels[key]["dev"][read], grader.counts[key]).float().mean())
                   for key in LP_TASKS) / len(LP_TASKS)

    rows = {seed: read_rows(files.lp_csv) for seed, files in runs.items()}
    if any(json.loads(row["settings"])["dev_examples"] != len(dev) for by_name in rows.values() for row in by_name.values()):
        usage_error(f"run {args.tag or 'the set'} was graded on another dev set than --lp-dev {args.lp_dev} gives: pass its --lp-dev")
    # each run's whole read-out is in its row already: the per-gloss outcomes of its heads
    full = {(name, seed): sum(float(_unpack(by_name[name][f"full_{key}_correct"], len(dev)).mean()) for key in LP_TASKS) / len(LP_TASKS)
            for seed, by_name in rows.items() for name in names if name in by_name}
    moved = {"fit": [], "read": []}
    for name in names:
        for seed, files in runs.items():
            features = load_file(str(files.features / name / f"{args.distill_steps}-{args.lp_train}-{args.lp_dev}.safetensors"))
            for kind, (a, b) in halves.items():
                moved[kind].append(accuracy(features, *a) - accuracy(features, *b))
    print(f"{len(names)} genomes of run {args.tag or 'the set'}, seeds {', '.join(map(str, args.seeds))}: the standard deviation of")
    print(f"  the heads fit on one half of the {len(train)} training glosses - on the other: {pstdev(moved['fit']):.4f}")
    print(f"  read on one half of the {len(dev)} dev glosses - on the other (how hard each half is included): {pstdev(moved['read']):.4f}")
    first, *others = args.seeds
    for seed in others:
        both = [n for n in names if (n, first) in full and (n, seed) in full]
        print(f"  seed {first}'s run - seed {seed}'s (the whole read-out): {pstdev([full[n, first] - full[n, seed] for n in both]):.4f}")


READOUT_COMPARE_CSV = RESULTS / "quality_readout_compare.csv"
COLLAPSED = 0.6  # a student graded below this learnt nothing (the heads' majority classes): left out of the summary


def run_readout_compare(args) -> None:
    """The read-out or the run? The shipped score's read-out (``lp_score``: heads fit on 8,000
    training glosses and read on 8,000 more, none of them the ground truth's) of each kept student of
    tagged ground-truth runs, beside the ground truth's grade of the same weights (fit on its 8,000
    training glosses, read on the dev glosses). Where the two rank the same students alike, and differ
    by about the read-out's own noise, the read-out is not where a score and the ground truth part.
    One row per (run, genome) in quality_readout_compare.csv; a stopped run resumes."""
    from safetensors.torch import load_file
    from scipy.stats import kendalltau
    from statistics import mean, pstdev

    from nas.distill.quality import lp_score
    from nas.distill.teacher import load_teacher
    from nas.model import build_model
    from nas.precision import resolve_precision

    torch.set_num_threads(args.threads)
    runs = [(tag, seed, ground_files(args.distill_steps, seed, tag)) for tag in args.tag.split(",") if tag for seed in args.seeds]
    if not runs:
        usage_error("readout-compare needs --tag: the tagged ground-truth runs whose kept students to read")
    missing = [f"{tag} seed {seed}" for tag, seed, files in runs if not files.students.is_dir()]
    if len(missing) == len(runs):
        usage_error(f"no kept students of {', '.join(missing)}: run ground --grade lp first")
    tokenizer = load_teacher(args.teacher).tokenizer
    precision = resolve_precision("auto", torch.device("cpu"))
    done = {(r["run"], r["name"]) for r in _read_list(READOUT_COMPARE_CSV)}
    for tag, seed, files in runs:
        graded = read_rows(files.lp_csv)
        kept = sorted(p.name for p in files.students.iterdir() if (p / f"{args.distill_steps}.safetensors").exists()) if files.students.is_dir() else []
        for name in kept:
            run = f"{tag}:{seed}"
            if (run, name) in done or name not in graded:
                continue
            began = time.perf_counter()
            encoder = build_model(ArchConfig.load(files.students / name / "genome.json"))
            encoder.load_state_dict(load_file(str(files.students / name / f"{args.distill_steps}.safetensors")))
            encoder.eval()
            score = lp_score(encoder, tokenizer, precision, torch.device("cpu"), args.lp_examples)
            grade = sum(float(graded[name][f"full_{task}_acc"]) for task in LP_TASKS) / len(LP_TASKS)
            append_row(READOUT_COMPARE_CSV, {"run": run, "name": name, "steps": args.distill_steps, "lp_examples": args.lp_examples,
                                             "score_readout": round(score, 5), "ground_grade": round(grade, 5),
                                             "seconds": round(time.perf_counter() - began, 1), "precision": precision})
            print(f"{run} {name}: read-out {score:.4f}, ground-truth grade {grade:.4f}", flush=True)
    rows = [r for r in _read_list(READOUT_COMPARE_CSV) if float(r["ground_grade"]) > COLLAPSED]
    if len(rows) < 3:
        return
    score, grade = [float(r["score_readout"]) for r in rows], [float(r["ground_grade"]) for r in rows]
    gaps = [s - g for s, g in zip(score, grade)]
    print(f"{len(rows)} kept students (grade above {COLLAPSED}): Kendall tau between the two readings {kendalltau(score, grade).statistic:.3f}; "
          f"read-out - grade {mean(gaps):+.4f} on average, standard deviation {pstdev(gaps):.4f}")
