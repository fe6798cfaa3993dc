"""bench/quality.py proxies, readouts and budgets: the cheap scores a search could afford per candidate."""

from __future__ import annotations

import json
import os
import time

import torch

import nas
from quality_common import (
    MEASURED, PROXY_CSV, READOUT_CSV, STUDENTS, TASKS, _claimed_by_another, _read_list, append_row, done_names, selected, budget_csv, usage_error,
)  # fmt: skip


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
            ("quick", DistillConfig.quick(seed=0, threads=args.threads, **MEASURED, precision="fp32")),
            ("default", DistillConfig(steps=120, seed=0, threads=args.threads, **MEASURED, precision="fp32", num_checkpoints=4)),
            ("default_bf16", DistillConfig(steps=120, seed=0, threads=args.threads, **MEASURED, num_checkpoints=4)),
            ("long3x", DistillConfig(steps=360, seed=0, threads=args.threads, **MEASURED, num_checkpoints=6)),
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
    from nas.finetune.run import encode, linear_head_outcomes
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
    config = DistillConfig(steps=120, seed=0, threads=args.threads, **MEASURED, num_checkpoints=4)  # the 120-step run measured
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
                correct = linear_head_outcomes(last[f], data.labels[f], last[r], data.labels[r], task.num_labels)
                row[f"lp{step}{suffix}"] = round(float(correct.double().mean()), 5)
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



def run_budgets(args) -> None:
    """The default run (bf16 where the CPU has it) at each of ``--budgets`` steps and peak learning
    rate ``--lr``, one row per (genome, budget, seed, lr): how the ranking and the cost move with
    them. Read by its cosine (quality_budgets.csv), or with ``--score lp`` by the lp probe, the
    cosine beside it (quality_budgets_lp.csv)."""
    from tqdm import tqdm

    from nas.distill import DistillConfig, distill
    from nas.distill import DistillError

    torch.set_num_threads(args.threads)
    genomes = selected(args)
    if args.reverse:
        genomes = dict(reversed(list(genomes.items())))
    lr = args.lr if args.lr is not None else DistillConfig().lr
    if args.crossfit and args.score != "lp":
        usage_error("--crossfit reads the lp probe's heads both ways: it needs --score lp")
    csv_path = budget_csv(args.score, args.stop_fraction, args.lp_examples, args.crossfit)
    for steps in args.budgets:  # a bad pair is one line before anything runs
        try:
            DistillConfig(steps=steps, stop_fraction=args.stop_fraction, lp_examples=args.lp_examples)
        except DistillError as err:
            usage_error(f"--budgets {steps}: {err}")

    def done() -> set[tuple[str, int, int, float]]:
        return {(r["name"], int(r["steps"]), int(r["seed"]), float(r["lr"])) for r in _read_list(csv_path)}

    finished = done()
    todo = [(n, b, s) for s in args.seeds for b in args.budgets for n in genomes if (n, b, s, lr) not in finished]
    for name, steps, seed in tqdm(todo, desc=f"budgets ({args.score}, lr {lr:g})", unit="run"):
        if (name, steps, seed, lr) in done():  # a second process got there first
            continue
        began = time.perf_counter()
        config = DistillConfig(steps=steps, seed=seed, threads=args.threads, num_checkpoints=1, lr=lr, params_weight=0.0,
                               score=args.score, stop_fraction=args.stop_fraction, lp_examples=args.lp_examples,
                               divergence_retries=0)  # a retry is a row at half the rate (front-report reads it so)
        result = distill(genomes[name], config)
        row = {"name": name, "steps": steps, "seed": seed, "lr": lr, "status": result.status,
               "score": round(result.score, 5) if result.score is not None else "",
               "heldout": round(result.heldout_loss, 5) if result.heldout_loss is not None else "",
               "seconds": round(time.perf_counter() - began, 1), "precision": result.precision}
        if args.score == "lp":  # the cosine of the same run, and its training time (the read-out is the rest)
            last = result.checkpoints[-1] if result.checkpoints else None
            row["cosine"] = round(last.cosine, 5) if last else ""
            row["train_seconds"] = round(last.train_s, 1) if last else ""
        if args.crossfit and result.student is not None:  # the same student read again, and cross-fitted
            from nas.distill.quality import lp_readings

            again, crossfit = lp_readings(result.student, None, result.precision, torch.device("cpu"), args.lp_examples)
            row |= {"score_again": round(again, 5), "score_crossfit": round(crossfit, 5)}
        append_row(csv_path, row)
        tqdm.write(f"{name} @ {steps} steps, seed {seed}, lr {lr:g}: {result.score}")
