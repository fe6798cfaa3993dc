"""Where the shipped score errs against the ground truth, and whether a linear mix of cheap features
beats it (exploratory: nothing here is chosen or shipped).

    python bench/quality_errors.py [--tags front8,band8,band8b,draw8c]

The set's ground truth is the mean of its six runs; each tag's genomes the mean of their two seeds.
1. Fits the ground truth on the shipped score (240-step cosine at lr 2e-3, mean of the seeds it has, plus
   0.05 ln(params / 1M)) and compares the residuals of genomes with and without each trait.
2. Leave-one-out Kendall tau of least-squares mixes of the seed-0 score with other cheap features,
   over the genomes that have all of them (session 7's lr 1e-3 run among them).
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from quality_common import BUDGET_CSV, RESULTS, _read_list, genome_set, ground_files, lp_ground_truth, read_rows  # noqa: E402

import nas  # noqa: E402
import numpy as np  # noqa: E402
from nas.arch import ArchConfig  # noqa: E402

TASKS = ["lp-supersense", "lp-pos"]
TRAITS = {
    "no_norm": lambda a: a.norm == "no_norm", "relu": lambda a: a.activation == "relu", "trigram": lambda a: a.trigram_input,
    "num_ffn>1": lambda a: a.num_ffn > 1, "bottleneck": lambda a: a.intra_bottleneck_size is not None,
    "groups>1": lambda a: max(a.qkv_groups, a.intermediate_groups, a.output_groups) > 1,
    "layers<=2": lambda a: a.num_layers <= 2, "layers>=8": lambda a: a.num_layers >= 8,
    "emb>=512": lambda a: a.embedding_size >= 512, "emb<=128": lambda a: a.embedding_size <= 128, "hidden>=512": lambda a: a.hidden_size >= 512,
}


def tau(a, b) -> float:
    pairs = list(itertools.combinations(range(len(a)), 2))
    signs = [np.sign((a[i] - a[j]) * (b[i] - b[j])) for i, j in pairs]
    return float(sum(signs) / len(pairs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tags", default="front8,band8,band8b,draw8c", help="runs of genomes outside the set to include")
    parser.add_argument("--against", metavar="TAG", help="instead: a longer run's genomes (e.g. gpu-b32, 1280 steps, seeds 0 and 1) "
                        "against the CPU ground truth of the same genomes; its own seeds and its half budget")
    args = parser.parse_args()
    if args.against:
        compare_run(args.against, args.tags.split(","))
        return
    runs = [read_rows(r.lp_csv) for r in [ground_files(640, 0), ground_files(1280, 0), *[ground_files(640, s) for s in (1, 2, 3, 4)]]]
    arch = dict(genome_set())
    gt = {n: sum(lp_ground_truth(r[n], TASKS) for r in runs) / len(runs) for n in arch}
    for tag in args.tags.split(","):
        seeds = [read_rows(ground_files(640, s, tag).lp_csv) for s in (0, 1)]
        for path in sorted((RESULTS / tag).glob("*.json")):
            values = [lp_ground_truth(run[path.stem], TASKS) for run in seeds if path.stem in run]
            gt[path.stem], arch[path.stem] = sum(values) / len(values), ArchConfig.load(path)
    cosine: dict[tuple[float, str], dict[str, float]] = {}
    heldout: dict[str, float] = {}
    for row in _read_list(BUDGET_CSV):
        if row["steps"] == "240" and row["status"] == "ok":
            cosine.setdefault((float(row["lr"]), row["seed"]), {})[row["name"]] = float(row["score"])
            if float(row["lr"]) == 2e-3 and row["seed"] == "0":
                heldout[row["name"]] = -float(row["heldout"])
    log_params = {n: math.log(nas.count(a).params / 1e6) for n, a in arch.items()}

    seeds = [values for (lr, _), values in cosine.items() if lr == 2e-3]
    names = [n for n in gt if n in cosine[(2e-3, "0")]]
    score = np.array([np.mean([values[n] for values in seeds if n in values]) + 0.05 * log_params[n] for n in names])
    y = np.array([gt[n] for n in names])
    slope, intercept = np.polyfit(score, y, 1)
    residual = y - (slope * score + intercept)
    print(f"1. {len(names)} genomes: ground truth = {slope:.2f} x score + {intercept:.3f}; residuals (points of ground truth), with the trait minus without")
    for trait, has in TRAITS.items():
        mask = np.array([bool(has(arch[n])) for n in names])
        if 3 <= mask.sum() <= len(mask) - 3:
            diff = residual[mask].mean() - residual[~mask].mean()
            se = math.sqrt(residual[mask].var() / mask.sum() + residual[~mask].var() / (~mask).sum())
            print(f"   {trait:<12} n={mask.sum():>2}  {100 * diff:+.2f}  (se {100 * se:.2f})")
    seed0 = np.array([cosine[(2e-3, "0")][n] + 0.05 * log_params[n] for n in names])
    stacked = np.array([arch[n].num_ffn > 1 for n in names], float)
    print("   the seed-0 score plus w x [num_ffn > 1], tau: " + ", ".join(f"w {w:g} {tau(seed0 + w * stacked, y):.3f}" for w in (0, 0.005, 0.01, 0.02)))

    names = [n for n in gt if all(n in c for c in (cosine[(2e-3, "0")], cosine[(2e-3, "1")], cosine[(1e-3, "0")], heldout))]
    features = {
        "cosine": [cosine[(2e-3, "0")][n] for n in names], "cosine_seed1": [cosine[(2e-3, "1")][n] for n in names],
        "cosine_lr1e-3": [cosine[(1e-3, "0")][n] for n in names], "-heldout": [heldout[n] for n in names],
        "ln_params": [log_params[n] for n in names], "ln_layers": [math.log(arch[n].num_layers) for n in names],
        "ln_embedding": [math.log(arch[n].embedding_size) for n in names], "ln_hidden": [math.log(arch[n].hidden_size) for n in names],
        "num_ffn": [arch[n].num_ffn for n in names],
    }
    y = np.array([gt[n] for n in names])
    shipped = np.array(features["cosine"]) + 0.05 * np.array(features["ln_params"])
    print(f"\n2. {len(names)} genomes: the shipped score (seed 0) {tau(shipped, y):.3f}; least-squares mixes, leave-one-out tau / in-sample")
    extras = ["cosine_seed1", "ln_layers", "num_ffn", "ln_embedding", "ln_hidden", "cosine_lr1e-3", "-heldout"]
    for cols in [["cosine", "ln_params"], *[["cosine", "ln_params", e] for e in extras]]:
        x = np.column_stack([np.ones(len(y)), *[np.array(features[c]) for c in cols]])
        loo = np.array([x[i] @ np.linalg.lstsq(np.delete(x, i, 0), np.delete(y, i), rcond=None)[0] for i in range(len(y))])
        fitted = x @ np.linalg.lstsq(x, y, rcond=None)[0]
        print(f"   {' + '.join(cols):<40} {tau(loo, y):.3f} / {tau(fitted, y):.3f}")


def compare_run(tag: str, tags: list[str], steps: int = 1280) -> None:
    cpu_runs = [ground_files(640, 0), ground_files(1280, 0), *[ground_files(640, s) for s in (1, 2, 3, 4)],
                *[ground_files(640, s, t) for t in tags for s in (0, 1)]]
    cpu: dict[str, list[float]] = {}
    for run in cpu_runs:
        for name, row in read_rows(run.lp_csv).items():
            cpu.setdefault(name, []).append(lp_ground_truth(row, TASKS))
    seeds = [read_rows(ground_files(steps, s, tag).lp_csv) for s in (0, 1)]
    names = sorted(set(seeds[0]) & set(seeds[1]) & set(cpu))
    full = [[lp_ground_truth(run[n], TASKS) for n in names] for run in seeds]
    half = [[lp_ground_truth(run[n], TASKS, "half") for n in names] for run in seeds]
    mean, cpu_mean = np.mean(full, axis=0), [np.mean(cpu[n]) for n in names]
    for i, n in enumerate(names):
        print(f"{n:<24} {tag} {full[0][i]:.4f} / {full[1][i]:.4f}   CPU runs ({len(cpu[n])}) {cpu_mean[i]:.4f}")
    print(f"mean: {tag} {mean.mean():.4f} (half budget {np.mean(half):.4f}), CPU {np.mean(cpu_mean):.4f}")
    print(f"tau: seed 0 vs seed 1 {tau(full[0], full[1]):.2f}; {tag} mean vs CPU mean {tau(mean, cpu_mean):.2f}; "
          f"half vs full (means of seeds) {tau(np.mean(half, axis=0), mean):.2f}")


if __name__ == "__main__":
    main()
