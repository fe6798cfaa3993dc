"""The search's targets: sample efficiency of the samplers, and Ray Tune's scheduling overhead.

    python bench/search.py efficiency [--seeds 5] [--evals 200] [--space mobile]
    python bench/search.py overhead [--trials 8,24] [--hold-s 2] [--default-run runs/NAME]
    python bench/search.py cpus [--genomes 3]
    python bench/search.py tpe-settings [--seeds 5] [--first-seed 0] [--evals 80] [--only shipped,...]

efficiency (Optuna directly, no Ray): two cheap objectives on the mobile space, minimise predicted
latency (latency_ms@pixel4; FLOPs when no pixel4 profile is installed) and maximise non-embedding
parameters (a training-free quality proxy, as Archai's LTS uses decoder parameters). NSGA-II and
TPE against random search, same screening as ``nas search`` (an invalid genome or a repeated one
costs no evaluation), several seeds. Hypervolume in objectives scaled to [0, 1] by the space's
range (from 5000 random genomes), reference point at the worst corner. Goal: reach random search's
200-evaluation hypervolume within 30 evaluations (median over seeds). Proposals come through the
search's define-by-run space (nas.search.study.suggest_genome_values), so none is invalid.

overhead (through Ray Tune, the search's own code path and settings): searches whose trials do
nothing but hold their CPU for --hold-s seconds, at two trial counts; the difference removes the
fixed start-up (Ray, actors), leaving the per-trial scheduling overhead (searcher, screening,
Tune, actor reuse, result handling). Its share of trial time in the default run uses the mean
trial time of --default-run's trials.csv, or else of a few quick distillations timed here.

cpus: one trial of 2 CPUs against two trials of 1 CPU each on 2 cores, for the quick
distillation of feasible mobile genomes (threads=1 and threads=2 timed interleaved).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import torch  # noqa: E402

torch.set_num_threads(1)

from nas.arch import ArchError  # noqa: E402
from nas.errors import NasError  # noqa: E402
from nas.search.objectives import CheapScorer, non_embedding_params  # noqa: E402
from nas.search.pareto import hypervolume  # noqa: E402
from nas.search.study import TPE_SETTINGS as TPE_SHIPPED  # noqa: E402
from nas.space import load_space  # noqa: E402

SAMPLERS = ("random", "nsga2", "tpe", "gp")
MARKS = (25, 30, 50, 100, 150, 200)
GOAL_EVALS = 30


def _median_reach(reach: list[int | None], evals: int) -> float:
    """Median evaluations to reach the target; a seed that never reached it counts as past `evals`."""
    return statistics.median(evals + 1 if x is None else x for x in reach)


# ---- sample efficiency ------------------------------------------------------------------------


def _latency_metric() -> str:
    try:
        CheapScorer(["latency_ms@pixel4"])
        return "latency_ms@pixel4"
    except NasError:
        return "flops"


def _scales(space, metric: str, scorer: CheapScorer, n: int = 5000) -> dict[str, tuple[float, float]]:
    cost, proxy = [], []
    for arch in space.iter_samples(n, seed=12345):
        cost.append(scorer.scores(arch)[metric])
        proxy.append(float(non_embedding_params(arch)))
    return {metric: (min(cost), max(cost)), "proxy": (min(proxy), max(proxy))}


def _normalised_hv(points: list[tuple[float, float]], scales) -> float:
    (c_lo, c_hi), (p_lo, p_hi) = scales
    scaled = [((c - c_lo) / (c_hi - c_lo), (p - p_lo) / (p_hi - p_lo)) for c, p in points]
    return hypervolume(scaled, ["min", "max"], (1.0, 0.0))


def run_sampler(name: str, seed: int, evals: int, space, metric: str, scorer: CheapScorer, scales, population: int | None = None) -> dict:
    """HV after each evaluation of one sampler on one seed, screening as `nas search` does."""
    import optuna

    from nas.search.settings import SearchSettings
    from nas.search.study import genome_values, make_sampler, quiet_optuna, suggest_genome_values

    quiet_optuna()
    population = population or SearchSettings(trials=evals).nsga2_population  # what `nas search --trials evals` uses
    study = optuna.create_study(directions=["minimize", "maximize"], sampler=make_sampler(name, seed, population))
    seen: dict[str, list[float]] = {}
    points: list[tuple[float, float]] = []
    curve: list[float] = []
    proposals = invalid = repeats = 0
    while len(points) < evals:
        trial = study.ask()
        suggest_genome_values(space, trial)  # as `nas search` proposes: valid genomes only
        proposals += 1
        try:
            arch = space.genome(genome_values(trial.params))
        except ArchError:
            invalid += 1
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            continue
        if arch.id in seen:
            repeats += 1
            study.tell(trial, seen[arch.id])
            continue
        values = [scorer.scores(arch)[metric], float(non_embedding_params(arch))]
        seen[arch.id] = values
        study.tell(trial, values)
        points.append((values[0], values[1]))
        curve.append(_normalised_hv(points, scales))
    return {"curve": curve, "proposals": proposals, "invalid": invalid, "repeats": repeats}


def _setup(space_name: str):
    """(space, latency metric, scorer, the two objectives' scales) of the efficiency benches."""
    space = load_space(space_name)
    metric = _latency_metric()
    scorer = CheapScorer([metric])
    scales = _scales(space, metric, scorer)
    return space, metric, scorer, (scales[metric], scales["proxy"])


def efficiency(args) -> None:
    space, metric, scorer, scale_pair = _setup(args.space)
    print(f"space {space.name}; objectives: minimise {metric}, maximise non-embedding params; "
          f"{args.evals} evaluations, seeds {', '.join(map(str, range(args.seeds)))}")
    samplers = ["random"] + [s for s in args.samplers.split(",") if s and s != "random"]
    results = {name: [] for name in samplers}
    started = time.perf_counter()
    for seed in range(args.seeds):
        for name in samplers:
            t = time.perf_counter()
            evals = min(args.evals, args.gp_evals) if name == "gp" else args.evals  # GP's cost grows with the trials
            results[name].append(run_sampler(name, seed, evals, space, metric, scorer, scale_pair, args.population))
            results[name][-1]["seconds"] = time.perf_counter() - t
    marks = [m for m in MARKS if m <= args.evals]
    random_final = [r["curve"][-1] for r in results["random"]]
    print(f"\nhypervolume (scaled objectives, 1 = the whole box), mean over seeds; "
          f"in brackets: / random search's at {args.evals} on the same seed")
    print(f"{'sampler':<8} " + " ".join(f"{'@' + str(m):>16}" for m in marks) + f" {'evals to reach random@' + str(args.evals):>28}")
    summary = {}
    for name in samplers:
        cells = []
        for m in marks:
            if any(len(r["curve"]) < m for r in results[name]):
                cells.append("-")
                continue
            hv = [r["curve"][m - 1] for r in results[name]]
            ratio = [h / rf for h, rf in zip(hv, random_final)]
            cells.append(f"{statistics.mean(hv):.4f} ({statistics.mean(ratio):.3f})")
        reach = []
        for r, target in zip(results[name], random_final):
            hit = next((i + 1 for i, h in enumerate(r["curve"]) if h >= target), None)
            reach.append(hit)
        reached = [x for x in reach if x is not None]
        reach_text = f"median {statistics.median(reached):.0f}" if len(reached) == len(reach) else f"{len(reached)}/{len(reach)} seeds"
        reach_text += " [" + ", ".join("-" if x is None else str(x) for x in reach) + "]"
        print(f"{name:<8} " + " ".join(f"{c:>16}" for c in cells) + f" {reach_text:>28}")
        summary[name] = {"reach": reach}
    print("\nproposals per evaluation (invalid genomes and repeats are screened in the driver, not evaluated):")
    for name in samplers:
        rs = results[name]
        print(f"  {name:<8} {statistics.mean(r['proposals'] / len(r['curve']) for r in rs):.2f} "
              f"(invalid {statistics.mean(r['invalid'] for r in rs):.0f}, repeats {statistics.mean(r['repeats'] for r in rs):.0f}); "
              f"{statistics.mean(r['seconds'] / len(r['curve']) for r in rs) * 1e3:.1f} ms per evaluation")
    print(f"\ngoal (random's {args.evals}-evaluation hypervolume within {GOAL_EVALS} evaluations, median over seeds): "
          + ", ".join(f"{name} {_median_reach(summary[name]['reach'], args.evals)} ({'met' if _median_reach(summary[name]['reach'], args.evals) <= GOAL_EVALS else 'not met'})"
                      for name in samplers if name != "random"))
    print(f"({time.perf_counter() - started:.0f} s)")


_TPE_BASE = dict(multivariate=True, group=True, constant_liar=True)
TPE_SETTINGS = {  # constructor arguments of the search's TPE (nas.search.study.TPE_SETTINGS) and variants of it
    "shipped": TPE_SHIPPED,
    "until-session-5": _TPE_BASE,
    "magic-clip": _TPE_BASE | dict(n_ei_candidates=64),  # = "ei64" of earlier sessions
    "ei24": _TPE_BASE | dict(consider_magic_clip=False),
    "endpoints": _TPE_BASE | dict(consider_endpoints=True),
    "startup5": _TPE_BASE | dict(n_startup_trials=5),
    "independent": dict(constant_liar=True),
}


def _variant_names(text: str) -> list[str]:
    """--only: known TPE_SETTINGS names (an argparse type: a bad one is the usage line and exit 2)."""
    import argparse

    names = text.split(",")
    unknown = [n for n in names if n not in TPE_SETTINGS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown variant {', '.join(unknown)}; choose from {', '.join(TPE_SETTINGS)}")
    return names


def tpe_settings(args) -> None:
    """Evaluations each TPE variant needs to reach random search's --random-evals hypervolume, per seed."""
    from nas.search import study as study_module

    space, metric, scorer, scale_pair = _setup(args.space)
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    targets = [run_sampler("random", seed, args.random_evals, space, metric, scorer, scale_pair)["curve"][-1] for seed in seeds]
    shipped = study_module.make_sampler
    names = args.only or list(TPE_SETTINGS)
    print(f"evaluations to reach random search's {args.random_evals}-evaluation hypervolume (seeds {seeds[0]}-{seeds[-1]}; "
          f"'-' = not within {args.evals}); goal {GOAL_EVALS}")
    try:
        for name in names:
            def variant(sampler, seed, population=50, settings=TPE_SETTINGS[name]):
                if sampler != "tpe":
                    return shipped(sampler, seed, population)
                return study_module.tpe_sampler(seed, **settings)

            study_module.make_sampler = variant  # run_sampler looks it up at call time
            reach = []
            for seed, target in zip(seeds, targets):
                curve = run_sampler("tpe", seed, args.evals, space, metric, scorer, scale_pair)["curve"]
                reach.append(next((i + 1 for i, h in enumerate(curve) if h >= target), None))
            print(f"  {name:<14} median {_median_reach(reach, args.evals):>5}  [" + ", ".join("-" if r is None else str(r) for r in reach) + "]")
    finally:
        study_module.make_sampler = shipped


# ---- scheduling overhead ----------------------------------------------------------------------


def _timed_search(trials: int, hold_s: float, root: Path) -> tuple[float, list[dict]]:
    from nas.search.run_dir import RunDir, read_trials_csv
    from nas.search.settings import DEFAULTS, SearchSettings
    from nas.search.tune import run_search

    settings = SearchSettings.from_dict(DEFAULTS.to_dict() | {
        "space": "mobile", "objectives": ["params", "flops"], "constraints": [], "trials": trials, "seed": trials,
    })
    run = RunDir(root / f"overhead-{trials}")
    outcome = run_search(settings, run, progress=False, trial_hold_s=hold_s)
    rows = [r for r in read_trials_csv(run.trials_csv) if r["tune_trial_id"]]
    return outcome.wall_s, rows


def overhead(args) -> None:
    import ray

    from nas.search.settings import DEFAULTS

    counts = [int(x) for x in args.trials.split(",")]
    root = Path(tempfile.mkdtemp(prefix="nas-bench-"))
    cpus = os.cpu_count() or 1
    concurrency = DEFAULTS.concurrency or max(1, cpus // DEFAULTS.cpus_per_trial)
    ray.init(num_cpus=cpus, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        walls = {}
        for n in counts:
            wall, rows = _timed_search(n, args.hold_s, root)
            work = sum(r["elapsed_s"] for r in rows)
            walls[n] = (wall, work)
            print(f"{n:>4} trials x {args.hold_s:g} s hold, {concurrency} at once ({DEFAULTS.cpus_per_trial} CPU each): "
                  f"Tuner.fit {wall:.2f} s; slot-time {wall * concurrency:.1f} s, trial work {work:.1f} s")
    finally:
        ray.shutdown()
        shutil.rmtree(root, ignore_errors=True)
    (n1, (w1, k1)), (n2, (w2, k2)) = sorted(walls.items())[0], sorted(walls.items())[-1]
    per_trial = ((w2 - w1) * concurrency - (k2 - k1)) / (n2 - n1)
    fixed = w1 * concurrency - k1 - per_trial * n1
    print(f"\nscheduling overhead per trial (difference of the two runs): {per_trial:.3f} s of a CPU slot")
    print(f"fixed start-up (Ray actors and the first trials' imports), slot-seconds: {fixed:.1f}")
    trial_s, source = _default_trial_time(args)
    share = per_trial / (per_trial + trial_s)
    print(f"mean trial time in the default run: {trial_s:.1f} s ({source})")
    print(f"overhead share of trial time: {share:.2%} (goal < 5 %)")


def _default_trial_time(args) -> tuple[float, str]:
    if args.default_run:
        from nas.search.run_dir import RunDir, read_trials_csv

        run = RunDir(args.default_run)
        rows = [r for r in read_trials_csv(run.trials_csv) if r["tune_trial_id"] and r["elapsed_s"]]
        return statistics.mean(r["elapsed_s"] for r in rows), f"{len(rows)} Ray trials of {run.root}"
    times = _quick_distillations(args.genomes, threads=1)
    return statistics.mean(times), f"{len(times)} quick distillations of feasible mobile genomes timed here, 1 thread"


def _feasible_genomes(n: int):
    """The first `n` random genomes of the default space that meet the default constraints."""
    from nas.search.objectives import parse_constraint
    from nas.search.settings import DEFAULTS

    space = load_space(DEFAULTS.space)
    parsed = [parse_constraint(c) for c in DEFAULTS.constraints]
    try:
        scorer = CheapScorer([c.metric for c in parsed])
    except NasError:
        parsed, scorer = [parse_constraint("params<=30e6")], CheapScorer(["params"])
    out = []
    for arch in space.iter_samples(500, seed=7):
        scores = scorer.scores(arch)
        if all(c.holds(scores[c.metric]) for c in parsed):
            out.append(arch)
        if len(out) == n:
            break
    return out


def _quick_distillations(n: int, threads: int) -> list[float]:
    from nas.distill import DistillConfig, distill

    archs = _feasible_genomes(n)
    distill(archs[0], DistillConfig.quick(threads=threads, steps=2, num_checkpoints=1))  # teacher and corpus load once
    times = []
    for arch in archs:
        t = time.perf_counter()
        distill(arch, DistillConfig.quick(threads=threads))
        times.append(time.perf_counter() - t)
    return times


# ---- CPUs per trial ---------------------------------------------------------------------------


def cpus(args) -> None:
    from nas.distill import DistillConfig, distill

    archs = _feasible_genomes(args.genomes)
    distill(archs[0], DistillConfig.quick(threads=2, steps=2, num_checkpoints=1))
    one, two = [], []
    for arch in archs:  # interleaved: the machine's load drifts
        for threads, out in ((1, one), (2, two), (2, two), (1, one)):
            t = time.perf_counter()
            distill(arch, DistillConfig.quick(threads=threads))
            out.append(time.perf_counter() - t)
    t1, t2 = statistics.median(one), statistics.median(two)
    print(f"quick distillation, median of {len(one)}: 1 thread {t1:.1f} s, 2 threads {t2:.1f} s (speed-up {t1 / t2:.2f}x)")
    print(f"throughput on 2 cores: 2 trials x 1 CPU = {2 / t1 * 60:.1f} trials/min, 1 trial x 2 CPUs = {1 / t2 * 60:.1f} trials/min "
          f"(ratio {2 * t2 / t1:.2f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="part", required=True)
    e = sub.add_parser("efficiency")
    e.add_argument("--seeds", type=int, default=5)
    e.add_argument("--evals", type=int, default=200)
    e.add_argument("--space", default="mobile")
    e.add_argument("--gp-evals", type=int, default=60, help="evaluations for the GP sampler, whose cost per proposal grows with the trials (default 60)")
    e.add_argument("--samplers", default=",".join(SAMPLERS[1:]), help="comma-separated, besides random (default nsga2,tpe,gp)")
    e.add_argument("--population", type=int, help="NSGA-II population (default: what nas search uses for --trials EVALS)")
    e.set_defaults(func=efficiency)
    o = sub.add_parser("overhead")
    o.add_argument("--trials", default="8,24", help="two trial counts, comma-separated")
    o.add_argument("--hold-s", type=float, default=2.0)
    o.add_argument("--default-run", help="a finished default search (runs/NAME) for the mean trial time")
    o.add_argument("--genomes", type=int, default=3, help="quick distillations to time when no --default-run")
    o.set_defaults(func=overhead)
    t = sub.add_parser("tpe-settings", help="variants of the search's TPE settings on the efficiency objectives")
    t.add_argument("--seeds", type=int, default=5)
    t.add_argument("--first-seed", type=int, default=0,
                   help="seeds FIRST..FIRST+SEEDS-1: choose settings on seeds other than the efficiency bench's 0-4")
    t.add_argument("--evals", type=int, default=80)
    t.add_argument("--random-evals", type=int, default=200)
    t.add_argument("--only", type=_variant_names, help=f"comma-separated variant names (default: all): {', '.join(TPE_SETTINGS)}")
    t.add_argument("--space", default="mobile")
    t.set_defaults(func=tpe_settings)
    c = sub.add_parser("cpus")
    c.add_argument("--genomes", type=int, default=2)
    c.set_defaults(func=cpus)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
