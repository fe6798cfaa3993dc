"""How fast short distillation runs are, and how well their score ranks architectures.

    python bench/distill.py [all|fidelity|throughput|ranking|isa|compile|readout] [--genomes 14] [--steps 120]
                            [--factor 10] [--threads 1] [--throughput-threads 1,2] [--rounds 2]
                            [--default-run-threads 1] [--compile-genome mobilebert]
                            [--json runs/bench-distill.json]

fidelity: genomes spread over a small space (widths 64-256, 1-4 layers; the space is written out
below) are distilled with the default settings for ``--steps`` steps (the short run, the score a
search sees) and for ``--factor`` times as many with another seed (the reference). Printed: Kendall
tau between the short-run score and the long-run score, beside the tau of the parameter count (a
training-free proxy) against the same long-run score, the tau at every checkpoint of the short run
(the rungs ASHA prunes at), and how stable the short score's ranking is between two seeds.

throughput: student training tokens/s for the SqueezeBERT and MobileBERT genomes (default run
settings), fp32 and bf16 autocast at 1 and 2 threads, interleaved in alternating order, and the wall
time of MobileBERT's default run in each precision with the teacher targets already in memory (the
per-candidate cost in a search). On a shared machine, 2 threads can be slower than 1: compare
thread counts only from one run.

ranking: Kendall tau and mean absolute difference between fp32 and bf16 scores of the same default
runs, read from bench/results/quality_proxies.csv (bench/quality.py ran them).

isa: a bf16 matmul against fp32, natively and with oneDNN held to fewer instructions
(ONEDNN_MAX_CPU_ISA): what bf16 costs on a CPU without AVX512-BF16/AMX.

readout: what the lp read-out (``DistillConfig(score="lp")``) adds to a candidate's cost, for D (the
240-step run, 4,000 + 4,000 glosses) and F (320 steps, 8,000 + 8,000; E, the same cut short of a
640-step schedule, costs the same): each of
``--readout-genomes`` gets the run (one checkpoint, read by its cosine), then the lp read-out of the
same student is timed, twice (the first includes loading and tokenising its glosses, once per
process), then cross-fitted (``lp_crossfit``, the default since session 16). Printed: the run's
seconds, the read-out's, their ratio, and F's cost over D's.

compile: torch.compile of the student for one default run (training time read at each checkpoint;
the first includes the compilation): compile time against the time it saves at 1x and 10x budgets.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
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
from scipy.stats import kendalltau  # noqa: E402

import nas  # noqa: E402
import nas.precision  # noqa: E402
from nas.distill import DistillConfig, distill  # noqa: E402
from nas.space import parse_space  # noqa: E402

PRECISIONS = ("fp32", "bf16")

# Small genomes, so that 14 of them, each trained for 120 and 1200 steps, fit in ~20 minutes on 2 cores.
BENCH_SPACE = {
    "name": "distill-bench",
    "description": "small encoders of every kind the full space holds (widths 64-256, 1-4 layers)",
    "fixed": {"vocab_size": 30522, "pooler": True},
    "dimensions": {
        "embedding_size": {"choices": [32, 64, 128]},
        "trigram_input": {"choices": [False, True]},
        "num_layers": {"choices": [1, 2, 3, 4]},
        "hidden_size": {"choices": [64, 128, 192, 256]},
        "intra_bottleneck_size": {"choices": [None, 32, 64]},
        "attention_input": {"choices": ["hidden", "bottleneck", "shared_bottleneck"]},
        "num_attention_heads": {"choices": [2, 4]},
        "qkv_groups": {"choices": [1, 2]},
        "intermediate_size": {"range": [64, 512], "step": 64},
        "num_ffn": {"choices": [1, 2]},
        "intermediate_groups": {"choices": [1, 2]},
        "output_groups": {"choices": [1, 2]},
        "activation": {"choices": ["gelu", "relu"]},
        "norm": {"choices": ["layer_norm", "no_norm"]},
    },
    "conditions": ["intra_bottleneck_size is None or intra_bottleneck_size < hidden_size", "embedding_size <= hidden_size"],
}


def bench_genomes(n: int, seed: int = 0) -> list[nas.ArchConfig]:
    """n genomes spread over the parameter range: 40 x n samples, sorted by size, taken at even ranks."""
    space = parse_space(BENCH_SPACE)
    pool = {arch.id: arch for arch in space.iter_samples(40 * n, seed)}
    ranked = sorted(pool.values(), key=lambda a: (nas.count(a).params, a.id))
    return [ranked[round(i * (len(ranked) - 1) / (n - 1))] for i in range(n)]


def tau(a: list[float], b: list[float]) -> float:
    return float(kendalltau(a, b).statistic)


def fidelity(args) -> dict:
    genomes = bench_genomes(args.genomes, args.seed)
    short_config = DistillConfig(steps=args.steps, threads=args.threads, seed=args.seed)
    # The reference run uses another seed (student init and data order): the short score should rank
    # architectures, not reward an init that happens to suit both runs.
    other_seed = args.seed + 1
    long_config = short_config.replace(steps=args.steps * args.factor, seed=other_seed)
    print(
        f"fidelity: {len(genomes)} genomes; short run {short_config.steps} steps (seed {args.seed}, and seed "
        f"{other_seed} for the seed check), long run {long_config.steps} steps (seed {other_seed}); "
        f"batch {short_config.batch_size} x {short_config.seq_len} tokens, lr {short_config.lr:g}, "
        f"{short_config.resolved_threads} thread(s)",
        flush=True,
    )
    rows = []
    began = time.perf_counter()
    for i, arch in enumerate(genomes):
        short = distill(arch, short_config)
        short_other = distill(arch, short_config.replace(seed=other_seed))
        long = distill(arch, long_config)
        row = {
            "arch_id": arch.id,
            "arch": arch.to_dict(),
            "params": nas.count(arch).params,
            "short": short.to_dict(),
            "short_other_seed": short_other.to_dict(),
            "long": long.to_dict(),
        }
        rows.append(row)
        print(
            f"  [{i + 1:>2}/{len(genomes)}] {arch.id} {row['params'] / 1e6:6.2f}M params  "
            f"short {_fmt(short.score)} / {_fmt(short_other.score)} ({short.status}, {short.elapsed_s:5.1f}s)  "
            f"long {_fmt(long.score)} ({long.status}, {long.elapsed_s:6.1f}s)  [{time.perf_counter() - began:6.0f}s]",
            flush=True,
        )
    runs = ("short", "short_other_seed", "long")
    ok = [r for r in rows if all(r[k]["status"] == "ok" for k in runs)]
    truth = [r["long"]["score"] for r in ok]
    summary = {
        "genomes": len(rows),
        "ok": len(ok),
        "short_steps": short_config.steps,
        "long_steps": long_config.steps,
        "tau_short_score": tau([r["short"]["score"] for r in ok], truth),
        "tau_short_score_same_seed": tau([r["short_other_seed"]["score"] for r in ok], truth),
        "tau_short_score_between_seeds": tau(
            [r["short"]["score"] for r in ok], [r["short_other_seed"]["score"] for r in ok]
        ),
        "tau_params": tau([r["params"] for r in ok], truth),
        "tau_short_heldout_loss": tau([-r["short"]["heldout_loss"] for r in ok], truth),
        "tau_short_output_cosine": tau([-r["short"]["checkpoints"][-1]["output_loss"] for r in ok], truth),
        "tau_by_checkpoint": [
            {"step": ck["step"], "tau": tau([r["short"]["checkpoints"][k]["score"] for r in ok], truth)}
            for k, ck in enumerate(ok[0]["short"]["checkpoints"])
        ]
        if ok
        else [],
        "short_score_range": [min(r["short"]["score"] for r in ok), max(r["short"]["score"] for r in ok)] if ok else None,
        "long_score_range": [min(truth), max(truth)] if ok else None,
        "short_elapsed_s_median": statistics.median(r["short"]["elapsed_s"] for r in rows),
        "long_elapsed_s_median": statistics.median(r["long"]["elapsed_s"] for r in rows),
        "baseline_score": rows[0]["short"]["baseline_score"],
        "wall_s": time.perf_counter() - began,
    }
    print(
        f"\nKendall tau against the long-run score ({summary['ok']} genomes; long run seed {other_seed}):\n"
        f"  short-run score ({summary['short_steps']} steps, seed {args.seed})      {summary['tau_short_score']:+.3f}\n"
        f"  short-run score, same seed as the long run    {summary['tau_short_score_same_seed']:+.3f}\n"
        f"  parameter count (training-free proxy)         {summary['tau_params']:+.3f}\n"
        f"  short-run held-out loss (negated)             {summary['tau_short_heldout_loss']:+.3f}\n"
        f"  short-run learned-head cosine                 {summary['tau_short_output_cosine']:+.3f}\n"
        "  short-run score at each checkpoint: "
        + ", ".join(f"step {c['step']}: {c['tau']:+.3f}" for c in summary["tau_by_checkpoint"])
        + f"\nshort-run score, seed {args.seed} vs seed {other_seed}: tau {summary['tau_short_score_between_seeds']:+.3f}\n"
        f"constant-embedding baseline score {summary['baseline_score']:.3f}; "
        f"median wall per genome: short {summary['short_elapsed_s_median']:.1f}s, long {summary['long_elapsed_s_median']:.1f}s; "
        f"total {summary['wall_s'] / 60:.1f} min",
        flush=True,
    )
    return {"summary": summary, "rows": rows}


def throughput(args) -> dict:
    """Tokens/s of the reference-sized students, fp32 against bf16 autocast, at each thread count, interleaved;
    then the wall time of MobileBERT's default run in each precision."""
    from nas.references import reference

    config = DistillConfig(seed=args.seed)
    print(f"throughput: batch {config.batch_size} x {config.seq_len} tokens, default run {config.steps} steps; "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)
    # Warm the per-process caches (teacher, corpus, teacher targets of the default run's windows) with
    # a default-length run of a small genome, so no timing below includes them.
    first = time.perf_counter()
    small = bench_genomes(2, args.seed)[0]  # teacher targets are per window, not per student: any genome warms them
    distill(small, config.replace(threads=args.default_run_threads, num_checkpoints=1, score="cosine"))
    warm_s = time.perf_counter() - first
    results: dict = {"warm_up_s": warm_s, "students": {}, "load_average_before": os.getloadavg()}
    # The cosine read-out: a throughput run should not spend a minute on the probe it does not time.
    short = config.replace(steps=args.throughput_steps, num_checkpoints=1, score="cosine")
    cells = [(t, p) for t in args.throughput_threads for p in PRECISIONS]
    for name in args.students:
        arch = reference(name).arch
        rates: dict[tuple[int, str], list[float]] = {cell: [] for cell in cells}
        for round_ in range(args.rounds):  # interleaved, alternating order: every cell sees the same load
            for threads, precision in cells if round_ % 2 == 0 else cells[::-1]:
                run = distill(arch, short.replace(threads=threads, precision=precision))
                rates[(threads, precision)].append(run.tokens_per_s)
        row = {"params": nas.count(arch).params, "tokens_per_s": {}, "bf16_speedup": {}}
        for threads in args.throughput_threads:
            fp32, bf16 = rates[(threads, "fp32")], rates[(threads, "bf16")]
            row["tokens_per_s"][threads] = {"fp32": statistics.median(fp32), "bf16": statistics.median(bf16)}
            row["bf16_speedup"][threads] = statistics.median(b / f for b, f in zip(bf16, fp32))  # per round
        results["students"][name] = row
    print(f"\n{'student':<12} {'params':>7} {'threads':>7} {'fp32 tok/s':>10} {'bf16 tok/s':>10} {'bf16/fp32':>9}")
    for name, row in results["students"].items():
        for threads in args.throughput_threads:
            rate = row["tokens_per_s"][threads]
            print(f"{name:<12} {row['params'] / 1e6:6.1f}M {threads:>7} {rate['fp32']:>10.0f} {rate['bf16']:>10.0f} "
                  f"{row['bf16_speedup'][threads]:>8.2f}x")
    print(f"(median of {args.rounds} interleaved rounds of {args.throughput_steps} steps; speed-up = median of the per-round ratios)")
    results["load_average_after"] = os.getloadavg()
    if not args.default_run:
        return results
    runs = {}
    for precision in PRECISIONS:
        run = distill(reference("mobilebert").arch, config.replace(threads=args.default_run_threads, precision=precision))
        runs[precision] = run
        results.setdefault("mobilebert_default_run", {})[precision] = {
            "elapsed_s": run.elapsed_s, "train_s": run.train_s, "steps": config.steps, "score": run.score,
            "status": run.status, "threads": args.default_run_threads, "hardware": run.hardware,
        }
    print(f"\nMobileBERT default run ({config.steps} steps, probe score, {args.default_run_threads} thread(s), teacher targets warm):")
    for precision, run in runs.items():
        print(f"  {precision}: {run.elapsed_s:6.1f}s wall, of which {run.train_s:5.1f}s training; score {_fmt(run.score)}")
    print(f"  bf16 / fp32 wall: {runs['fp32'].elapsed_s / runs['bf16'].elapsed_s:.2f}x faster; the first call of a "
          f"process adds {warm_s:.0f}s (teacher, corpus, targets); load average now {os.getloadavg()[0]:.2f}", flush=True)
    results["load_average_after"] = os.getloadavg()
    return results


def ranking(args) -> dict:
    """How much bf16 moves the ranking: fp32 against bf16 scores of the same default runs, read from
    bench/results/quality_proxies.csv (written by bench/quality.py; no run here)."""
    import csv

    with open(args.proxies, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("default_score") and r.get("default_bf16_score")]
    fp32 = [float(r["default_score"]) for r in rows]
    bf16 = [float(r["default_bf16_score"]) for r in rows]
    diffs = [abs(a - b) for a, b in zip(fp32, bf16)]
    summary = {"genomes": len(rows), "kendall_tau": tau(fp32, bf16), "mean_abs_diff": statistics.mean(diffs),
               "max_abs_diff": max(diffs), "score_range": [min(fp32), max(fp32)],
               "fp32_s": statistics.median(float(r["default_s"]) for r in rows),
               "bf16_s": statistics.median(float(r["default_bf16_s"]) for r in rows)}  # fmt: skip
    print(f"ranking cost of bf16 ({args.proxies}, {summary['genomes']} genomes, default run, cosine score): "
          f"Kendall tau fp32 vs bf16 {summary['kendall_tau']:.3f}, mean |diff| {summary['mean_abs_diff']:.4f} "
          f"(max {summary['max_abs_diff']:.4f}) on scores spanning {summary['score_range'][0]:.3f}-{summary['score_range'][1]:.3f}; "
          f"median wall per genome fp32 {summary['fp32_s']:.1f}s, bf16 {summary['bf16_s']:.1f}s", flush=True)
    return summary


def isa(args) -> dict:
    """bf16 against fp32 on this CPU, and with oneDNN held to fewer instructions (ONEDNN_MAX_CPU_ISA):
    the closest this machine gets to a CPU without AVX512-BF16/AMX. One thread, 1024x512 @ 512x512."""
    import subprocess

    script = (
        "import time, torch; torch.set_num_threads(1); a, b = torch.randn(1024, 512), torch.randn(512, 512)\n"
        "def t(f, n=30):\n f(); s = time.perf_counter()\n for _ in range(n): f()\n return (time.perf_counter() - s) / n\n"
        "ab, bb = a.bfloat16(), b.bfloat16(); print(t(lambda: a @ b) / t(lambda: ab @ bb))"
    )
    out = {}
    for limit in ("", "AVX512_CORE", "AVX2"):
        env = dict(os.environ, ONEDNN_MAX_CPU_ISA=limit) if limit else dict(os.environ)
        ratios = [float(subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True).stdout)
                  for _ in range(3)]  # fmt: skip
        out[limit or "native"] = statistics.median(ratios)
        print(f"  oneDNN ISA {limit or 'native (' + ('AVX512-BF16/AMX' if nas.precision.cpu_has_fast_bf16() else 'no bf16') + ')':<28} "
              f"bf16 matmul is {out[limit or 'native']:.2f}x the speed of fp32", flush=True)
    return out


def compile_payback(args) -> dict:
    """Does torch.compile pay back for a candidate trained once? The MobileBERT genome's default run,
    eager against compiled (precision auto), training time read at each checkpoint: the first includes
    the compilation, the steps after it give the steady per-step time."""
    from nas.distill.data import prepare_data
    from nas.distill.run import _Run
    from nas.distill.teacher import load_teacher
    from nas.references import reference

    arch = reference(args.compile_genome).arch
    config = DistillConfig(seed=args.seed, threads=args.default_run_threads, score="cosine", num_checkpoints=4)
    device, precision = config.resolved_hardware
    torch.set_num_threads(config.resolved_threads)
    teacher = load_teacher(None)
    data = prepare_data(config, teacher, device)
    out = {}
    for mode in ("eager", "compiled", "eager again"):
        marks: list[tuple[int, float]] = []
        run = _Run(arch, config, teacher, data, lambda c: marks.append((c.step, c.train_s)), False, time.perf_counter(),
                   device=device, precision=precision)  # fmt: skip
        if mode == "compiled":
            torch._dynamo.reset()
            run.student = torch.compile(run.student)
        run.train()
        (first_step, first_s), (last_step, last_s) = marks[0], marks[-1]
        per_step = (last_s - first_s) / (last_step - first_step)
        out[mode] = {"first_checkpoint_s": first_s, "first_checkpoint_step": first_step, "steady_step_s": per_step,
                     "train_s": last_s}  # fmt: skip
        print(f"  {mode:<11} train {last_s:6.1f}s for {last_step} steps; steady {per_step * 1000:6.1f} ms/step; "
              f"first {first_step} steps {first_s:6.1f}s", flush=True)
    eager_step = min(out["eager"]["steady_step_s"], out["eager again"]["steady_step_s"])
    compiled = out["compiled"]
    compile_s = compiled["first_checkpoint_s"] - compiled["first_checkpoint_step"] * compiled["steady_step_s"]
    saved_per_step = eager_step - compiled["steady_step_s"]
    summary = {"genome": args.compile_genome, "precision": precision, "threads": config.resolved_threads,
               "compile_s": compile_s, "saved_per_step_s": saved_per_step}  # fmt: skip
    print(f"{args.compile_genome}, {precision}, {config.resolved_threads} thread(s): compilation costs {compile_s:.1f}s; "
          f"a compiled step saves {saved_per_step * 1000:.1f} ms ({eager_step / compiled['steady_step_s']:.2f}x)")
    for factor in (1, 10):
        steps = config.steps * factor
        net = saved_per_step * steps - compile_s
        summary[f"net_saved_s_at_{steps}_steps"] = net
        print(f"  {steps:>5} steps: saves {saved_per_step * steps:6.1f}s of training for {compile_s:.1f}s of compiling: "
              f"net {net:+.1f}s ({'pays back' if net > 0 else 'does not pay back'})")
    if saved_per_step > 0:
        summary["break_even_steps"] = compile_s / saved_per_step
        print(f"  break-even at {summary['break_even_steps']:.0f} steps")
    return {"runs": out, "summary": summary}


SMALL_GENOME = Path(__file__).parent / "results" / "draw8c" / "draw8c-5f9bc3b62e45.json"  # 4.1M, 6 layers


READOUT_SETTINGS = {  # what a candidate costs under each lp-scored setting the bench measured
    "D (240 steps, 4,000 + 4,000 glosses)": {"steps": 240, "stop_fraction": 1.0, "lp_examples": 4000},
    "F (320 steps, 8,000 + 8,000 glosses)": {"steps": 320, "stop_fraction": 1.0, "lp_examples": 8000},  # E's cost too
}


def readout_cost(args) -> dict:
    """For each genome and lp-scored setting: the run (one checkpoint, read by its cosine), then the
    lp read-out of its student, timed in the same process; each candidate's cost beside the others'."""
    from nas.distill import distill
    from nas.distill.quality import lp_score
    from nas.errors import NasError
    from nas.references import load_genome

    try:
        genomes = {name: load_genome(name) for name in args.readout_genomes}
    except NasError as err:
        print(f"bench/distill.py readout: --readout-genomes {err}", file=sys.stderr)
        sys.exit(2)
    out = {}
    for name, arch in genomes.items():
        out[name] = {}
        for label, setting in READOUT_SETTINGS.items():
            config = DistillConfig.search(seed=args.seed, threads=args.default_run_threads, params_weight=0.0, score="cosine",
                                          **setting)
            began = time.perf_counter()
            result = distill(arch, config)
            run_s = time.perf_counter() - began
            _, precision = config.resolved_hardware
            timings, values = [], []
            for crossfit in (False, False, True):  # the first reads and tokenises the glosses; a search process pays that once
                began = time.perf_counter()
                values.append(lp_score(result.student, None, precision, examples=config.lp_examples, crossfit=crossfit))
                timings.append(time.perf_counter() - began)
            value = values[0]
            out[name][label] = {"run_s": run_s, "readout_first_s": timings[0], "readout_s": timings[1], "lp": value,
                                "cosine": result.score, "readout_crossfit_s": timings[2]}
            print(f"  {Path(name).stem:<20} {label}: run {run_s:6.1f}s  lp read-out {timings[1]:5.1f}s (first {timings[0]:5.1f}s, "
                  f"cross-fitted {timings[2]:5.1f}s)  +{timings[1] / run_s:.0%} on the run  lp {value:.4f}, cosine {result.score:.4f}", flush=True)
        totals = [v["run_s"] + v["readout_s"] for v in out[name].values()]
        print(f"  {Path(name).stem:<20} a candidate costs {totals[-1] / totals[0]:.2f}x under F what it costs under D", flush=True)
    return out


def _fmt(value: float | None) -> str:
    return "  -   " if value is None else f"{value:.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", nargs="?", default="all", choices=["all", "fidelity", "throughput", "ranking", "isa", "compile", "readout"])
    parser.add_argument("--genomes", type=int, default=14)
    parser.add_argument("--steps", type=int, default=DistillConfig().steps, help="short-run steps (the default run's)")
    parser.add_argument("--factor", type=int, default=10, help="long run = factor x short run")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for the fidelity runs")
    parser.add_argument("--throughput-steps", type=int, default=6)
    parser.add_argument("--students", type=lambda t: t.split(","), default=["squeezebert", "mobilebert"],
                        help="throughput: reference genomes to time, comma-separated (default squeezebert,mobilebert)")
    parser.add_argument("--no-default-run", dest="default_run", action="store_false",
                        help="throughput: skip the timed default runs of MobileBERT")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds of the throughput cells (default 2)")
    parser.add_argument("--proxies", type=Path, default=Path(__file__).parent / "results" / "quality_proxies.csv",
                        help="ranking: the CSV of bench/quality.py with fp32 and bf16 default-run scores")
    parser.add_argument("--compile-genome", default="mobilebert", help="compile: the reference genome to train (default mobilebert)")
    parser.add_argument("--throughput-threads", type=lambda t: [int(x) for x in t.split(",")], default=[1, 2],
                        help="thread counts to measure tokens/s at, comma-separated (default 1,2)")
    parser.add_argument("--default-run-threads", type=int, default=1, help="threads of the timed default runs (default 1)")
    parser.add_argument("--readout-genomes", type=lambda t: t.split(","), default=[str(SMALL_GENOME), "mobilebert-tiny", "mobilebert"],
                        help="readout: reference names or genome files, comma-separated (default a 4.1M draw, "
                        "mobilebert-tiny, mobilebert)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write every number to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(1)
    report: dict = {"args": {k: str(v) for k, v in vars(args).items()}, "torch": torch.__version__}
    if args.what in ("all", "throughput"):
        report["throughput"] = throughput(args)
    if args.what in ("all", "ranking"):
        report["ranking"] = ranking(args)
    if args.what in ("all", "isa"):
        report["isa"] = isa(args)
    if args.what in ("all", "compile"):
        report["compile"] = compile_payback(args)
    if args.what in ("all", "readout"):
        report["readout"] = readout_cost(args)
    if args.what in ("all", "fidelity"):
        report["fidelity"] = fidelity(args)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.json.with_suffix(".tmp")
        tmp.write_text(json.dumps(report, indent=2) + "\n")
        tmp.replace(args.json)


if __name__ == "__main__":
    main()
