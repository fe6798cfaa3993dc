"""``nas search``, ``nas export``, ``nas report``.

Ray is imported only when a search starts, so ``nas --help``, export and report stay quick.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from nas.search.run_dir import RUNS_DIR, RunDir, resolve_run
from nas.search.settings import DEFAULTS, SAMPLERS, SearchSettings
from nas.cli import non_negative_float, positive_int as _positive_int


def register(subparsers) -> None:
    search = subparsers.add_parser(
        "search",
        help="multi-objective architecture search (Optuna proposes, Ray Tune runs); ends with the report",
        description="With no arguments: the embedded default search (space mobile, distillation score vs predicted "
        "Pixel 4 latency, latency_ms@pixel4<=80), about ten minutes on 2 cores, ending with the report.",
    )
    search.add_argument("--space", help=f"a shipped space name or a .yaml path (default {DEFAULTS.space})")
    search.add_argument("--objectives", action="append", metavar="A,B",
                        help=f"comma-separated: params, flops, latency_ms@PROFILE, distill (default {','.join(DEFAULTS.objectives)})")
    search.add_argument("--constraints", action="append", metavar="C,D",
                        help="comma-separated bounds on cheap scores, e.g. 'latency_ms@pixel4<=80,params<=30e6'; "
                        f"'' for none (default {','.join(DEFAULTS.constraints) or 'none'})")
    search.add_argument("--trials", type=_positive_int, help=f"candidates to evaluate with Ray trials (default {DEFAULTS.trials})")
    search.add_argument("--time-budget", type=non_negative_float, metavar="MINUTES",
                        help="propose no new candidate after this many minutes (running trials finish); 0 for none"
                        + (f" (default {DEFAULTS.time_budget_s / 60:g})" if DEFAULTS.time_budget_s else ""))
    search.add_argument("--sampler", choices=SAMPLERS, help=f"Optuna sampler (default {DEFAULTS.sampler})")
    search.add_argument("--seed", type=int)
    search.add_argument("--cpus-per-trial", type=_positive_int, help=f"CPUs (and torch threads) per trial (default {DEFAULTS.cpus_per_trial})")
    search.add_argument("--gpus-per-trial", type=non_negative_float, metavar="G",
                        help="GPUs per trial; a fraction such as 0.25 lets four trials share a GPU (default 0: CPUs only)")
    search.add_argument("--concurrency", type=_positive_int, help="trials at once (default: cluster CPUs / CPUs per trial)")
    search.add_argument("--keep-students", action="store_true", default=None, help="keep Pareto students' weights for `nas export`")
    search.add_argument("--distill-repeats", type=_positive_int, metavar="N",
                        help="score each candidate by the mean of N distillation runs (seeds SEED..SEED+N-1): N times the cost "
                        "for a steadier ranking (docs/quality.md: over 80 genomes two runs rank like the ground truth at tau 0.80 on average, one run at 0.78; "
                        "default 1)")
    search.add_argument("--no-asha", dest="asha", action="store_false", default=None, help="no early stopping of weak distillations")
    search.add_argument("--settings", metavar="FILE.json", help="settings to start from (e.g. another run's settings.json); flags override it")
    search.add_argument("--name", help="run folder runs/NAME (default search-DATE-TIME), or a path")
    search.add_argument("--resume", metavar="NAME", help="continue runs/NAME after a crash, kill or Ctrl-C; other flags are ignored but --address")
    search.add_argument("--address", help="join the Ray cluster at HOST:PORT (or set RAY_ADDRESS); default: a local Ray on this machine")
    search.add_argument("--no-report", dest="report", action="store_false", help="skip `nas report` at the end")
    search.add_argument("--quiet", action="store_true", help="no progress bar")
    search.set_defaults(func=_search)

    export = subparsers.add_parser("export", help="write a run's Pareto-optimal genomes: our JSON, a transformers model folder (+ weights), ONNX")
    export.add_argument("run", help="runs/NAME or NAME")
    export.add_argument("--to", required=True, help="output folder (must be new or empty unless --overwrite)")
    export.add_argument("--onnx", action="store_true", help="also write model.onnx for each genome")
    export.add_argument("--seq-len", type=_positive_int, default=None,
                        help="fix the ONNX input shape to [1, SEQ_LEN] (default: dynamic batch and sequence axes)")
    export.add_argument("--overwrite", action="store_true")
    export.set_defaults(func=_export)

    report = subparsers.add_parser("report", help="Pareto plot (PNG + interactive HTML) with the reference designs, and a markdown table")
    report.add_argument("run", help="runs/NAME or NAME")
    report.add_argument("--out", help="output folder (default runs/NAME/report)")
    report.add_argument("--overwrite", action="store_true", help="replace report files already in --out")
    report.set_defaults(func=_report)




def _split(values: list[str] | None) -> list[str] | None:
    if values is None:
        return None
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def settings_from_args(args) -> SearchSettings:
    """DEFAULTS, then --settings FILE, then the flags given."""
    data = DEFAULTS.to_dict()
    if args.settings:
        data |= SearchSettings.load(args.settings).to_dict()
    flags = {
        "space": args.space,
        "objectives": _split(args.objectives),
        "constraints": _split(args.constraints),
        "trials": args.trials,
        "sampler": args.sampler,
        "seed": args.seed,
        "cpus_per_trial": args.cpus_per_trial,
        "gpus_per_trial": args.gpus_per_trial,
        "concurrency": args.concurrency,
        "keep_students": args.keep_students,
        "asha": args.asha,
    }
    data |= {k: v for k, v in flags.items() if v is not None}
    if args.distill_repeats is not None:  # over --settings' own distillation fields, which it keeps
        data["distill"] = {**data.get("distill", {}), "repeats": args.distill_repeats}
    if args.time_budget is not None:
        data["time_budget_s"] = args.time_budget * 60 if args.time_budget > 0 else None  # 0: no budget
    return SearchSettings.from_dict(data, "nas search")


def _search(args) -> int:
    from nas.search.tune import run_search

    if args.resume:
        run = RunDir(resolve_run(args.resume)).require()
        settings = None
    else:
        settings = settings_from_args(args)
        run = RunDir(resolve_run(args.name) if args.name else RUNS_DIR / time.strftime("search-%Y%m%d-%H%M%S"))
    outcome = run_search(settings, run, address=args.address, resume=bool(args.resume), progress=not args.quiet)
    _summary(outcome)
    if outcome.interrupted:
        sys.stderr.write(f"nas: search interrupted; continue it with: nas search --resume {_run_arg(run)}\n")
        return 130
    if args.report and outcome.front:
        from nas.search.report import write_report

        paths = write_report(run)
        print(f"report: {paths['markdown']} ({paths['png'].name}, {paths['html'].name})")
    return 0


def _run_arg(run: RunDir) -> str:
    try:
        if run.root.parent == (Path.cwd() / RUNS_DIR).absolute():
            return run.name
    except OSError:
        pass
    return str(run.root)


def _summary(outcome) -> None:
    counts: dict[str, int] = {}
    for record in outcome.records.values():
        counts[record["status"]] = counts.get(record["status"], 0) + 1
    print(f"run {outcome.run.root}: {outcome.ray_trials} Ray trials in {outcome.wall_s:.0f} s; rows by status: "
          + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    if outcome.stopped:
        print(f"stopped proposing: {outcome.stopped}")
    print(f"Pareto front: {len(outcome.front)} genomes (pareto.json); every trial: trials.csv")
    for point in outcome.front[:10]:
        scores = ", ".join(f"{k}={v:.4g}" for k, v in point["scores"].items() if k in _objective_names(outcome))
        print(f"  trial {point['trial']:>4}  {point['genome_id']}  {scores}")
    if len(outcome.front) > 10:
        print(f"  ... {len(outcome.front) - 10} more")


def _objective_names(outcome) -> set[str]:
    import json

    return {o["name"] for o in json.loads(outcome.run.pareto_json.read_text())["objectives"]}


def _export(args) -> int:
    from nas.search.export import export_front

    run = RunDir(resolve_run(args.run)).require()
    index = export_front(run, args.to, onnx=args.onnx, seq_len=args.seq_len, overwrite=args.overwrite)
    for entry in index:
        hf = entry["transformers"] + (" (trust_remote_code=True, or import nas)" if entry["trust_remote_code"] else "")
        weights = "with the distilled student's weights" if entry["weights"] else "config only (no student kept: search with --keep-students)"
        print(f"{entry['folder']}: transformers {hf}, {weights}" + (", model.onnx" if "model.onnx" in entry["files"] else ""))
    print(f"index: {Path(args.to) / 'index.json'}")
    return 0


def _report(args) -> int:
    from nas.search.report import write_report

    run = RunDir(resolve_run(args.run)).require()
    paths = write_report(run, args.out, overwrite=args.overwrite)
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0
