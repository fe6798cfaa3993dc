"""``nas latency ...``: measure, microbench, fit, predict, evaluate, profile, export-bench, ingest."""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path


from nas.cli import positive_int as _positive_int
from nas.references import load_genome
from nas.errors import NasError
from predictors.data import merge_sets
from predictors.train import fit_predictor

# Readings of one genome in an ingest that differ by more than this (max - min over the median)
# are a conflict: kept in the file, refused for the fit (the harness's own default max spread).
INGEST_MAX_SPREAD = 0.10


def register(subparsers) -> None:
    latency = subparsers.add_parser("latency", help="measure, fit and use per-device latency predictors")
    sub = latency.add_subparsers(dest="latency_command", required=True, parser_class=type(latency))

    p = sub.add_parser("measure", help="measure genomes' end-to-end latency on this machine")
    _genome_args(p)
    _setting_args(p)
    _protocol_args(p)
    p.add_argument("--device", default="host", help="name of this machine in the file (default host)")
    p.add_argument("--cache", help="folder to keep the exported ONNX models in (reused on the next run)")
    _out_args(p, required=True)
    p.set_defaults(func=_measure)

    p = sub.add_parser("microbench", help="time the kernels genomes of a space decompose into")
    p.add_argument("--space", default="mobile", help="space the kernel shapes are drawn from (default mobile)")
    p.add_argument("--per-kind", type=_positive_int, default=8, help="kernels per op kind (default 8)")
    p.add_argument("--sample", type=_positive_int, default=60, help="genomes sampled to collect shapes (default 60)")
    p.add_argument("--seed", type=int, default=0)
    _setting_args(p)
    _protocol_args(p, rounds=5, runs=3, warmup=3)
    p.add_argument("--device", default="host")
    _out_args(p, required=True)
    p.set_defaults(func=_microbench)

    p = sub.add_parser("fit", help="fit a structural predictor on measurement files")
    p.add_argument("measurements", nargs="+", help="measurement set files (nas latency measure / microbench / ingest)")
    p.add_argument("--no-kernels", action="store_true", help="fit on end-to-end measurements only")
    p.add_argument("--kernel-weight", type=float, default=0.3, help="weight of a kernel row against a genome row (default 0.3)")
    _out_args(p, required=True)
    p.set_defaults(func=_fit)

    p = sub.add_parser("predict", help="predicted latency (ms) of genomes on a device")
    p.add_argument("--device", required=True, help="shipped profile (pixel4, pixel3), device fitted here, or predictor file")
    p.add_argument("genomes", nargs="+", help="GENOME.json files, .jsonl files or reference names")
    p.add_argument("--seq-len", type=_positive_int, help="refuse unless the predictor is for this sequence length")
    p.add_argument("--breakdown", action="store_true", help="also split each prediction by kind of work")
    p.add_argument("--json", action="store_true", help="print JSON lines")
    p.set_defaults(func=_predict)

    p = sub.add_parser("evaluate", help="score a predictor and two baselines on held-out measured genomes")
    p.add_argument("--device", required=True, help="the predictor: device fitted here or predictor file")
    p.add_argument("--heldout", help="measurement set of held-out genomes (default: measure --n genomes now)")
    p.add_argument("--train", help="measurement set the baselines are fitted on (default: the predictor's own)")
    p.add_argument("--space", default="mobile")
    p.add_argument("-n", type=_positive_int, default=100, help="held-out genomes to sample and measure (default 100)")
    p.add_argument("--seed", type=int, default=1, help="seed of the held-out sample (default 1)")
    p.add_argument("--mlp-steps", type=_positive_int, default=2000, help="training steps of the HAT-style MLP baseline (default 2000)")
    p.add_argument("--anchors", type=int, default=10,
                   help="training genomes re-measured among the held-out ones to tell machine drift from error (default 10)")
    p.add_argument("--anchors-file", help="with --heldout: training genomes re-measured in the held-out session")
    p.add_argument("--write-corrected", metavar="PATH",
                   help="also write the predictor with its prices multiplied by the measured drift (needs anchors)")
    p.add_argument("--force", action="store_true", help="replace --write-corrected if it exists")
    _protocol_args(p)
    p.add_argument("--out-dir", help="folder for evaluation.json/.md, the plot and held-out measurements "
                   "(default runs/latency/eval-DEVICE-TIME)")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("profile", help="measure and fit a predictor for this machine in bounded time")
    p.add_argument("--device", default="host", help="name of this machine (default host)")
    p.add_argument("--space", default="mobile")
    p.add_argument("--genomes", type=_positive_int, default=100, help="training genomes to measure (default 100)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="few kernels, 3 rounds: minutes, for trying it out and tests")
    p.add_argument("--no-kernels", action="store_true", help="skip the kernel microbenchmarks")
    _setting_args(p)
    p.add_argument("--cache", help="folder to keep exported ONNX models in")
    _out_args(p, required=False)
    p.set_defaults(func=_profile)

    p = sub.add_parser("export-bench", help="write ONNX models + manifest to measure on a phone")
    p.add_argument("--space", default="mobile")
    p.add_argument("-n", type=int, default=30, help="genomes sampled from the space (default 30)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--references", default="default",
                   help="reference designs to include: default (5 with published phone latencies), none, or a comma list")
    p.add_argument("--kernels-per-kind", type=int, default=4, help="microbenchmark kernels per op kind (0: none)")
    p.add_argument("--seq-len", type=_positive_int, default=128)
    p.add_argument("--threads", type=_positive_int, default=4, help="threads the run script uses (default 4)")
    p.add_argument("--runs", type=_positive_int, default=50, help="timed runs per model in the run script (default 50)")
    p.add_argument("--precision", default="fp32", choices=("fp32", "int8"),
                   help="fp32 (default) or int8: every model dynamically quantized with ONNX Runtime (TFLite: see docs)")
    p.add_argument("--out", required=True, help="bundle folder to create (must not exist)")
    p.set_defaults(func=_export_bench)

    p = sub.add_parser("ingest", help="read phone benchmark outputs or a CSV and fit a predictor for that device")
    p.add_argument("results", nargs="+", help="result files or folders (perf_test / benchmark_model outputs, CSV)")
    p.add_argument("--manifest", help="the bundle's manifest.json (or the bundle folder)")
    p.add_argument("--genomes", help="genome source for CSV ids, when there is no manifest (.jsonl, folder, .json)")
    p.add_argument("--device", required=True, help="name for the device (e.g. pixel7)")
    p.add_argument("--runtime", required=True, help="what ran the models (onnxruntime, tflite, pytorch-mobile, ...)")
    p.add_argument("--threads", type=_positive_int, required=True)
    p.add_argument("--precision", choices=("fp32", "int8", "bf16"),
                   help="precision the models ran at, part of the device's identity (default: the manifest's, else fp32)")
    p.add_argument("--seq-len", type=_positive_int, help="sequence length (default: the manifest's, else 128)")
    p.add_argument("--base", help="predictor to transfer from (e.g. runs/latency/host.json); needed below --min-genomes")
    p.add_argument("--method", default="auto", choices=("auto", "global", "groups", "prior", "scratch"),
                   help="how to get the device's prices: auto (with --base, the method the transfer study "
                        "(bench/latency.py transfer) found best at this many genomes; without, a fit from scratch), "
                        "global / groups (scales on the base), prior (every price refitted towards the base), scratch")
    p.add_argument("--groups", help="feature groups that get one scale each with --method groups "
                                    "(default compute,norm_act,memory_overhead; giving it implies --method groups)")
    p.add_argument("--min-genomes", type=_positive_int, default=30,
                   help="genomes needed for a fit from scratch without --base (default 30)")
    p.add_argument("--description", default="", help="free text about the device (model, OS, governor)")
    _out_args(p, required=False)
    p.set_defaults(func=_ingest)


# ---- shared arguments -------------------------------------------------------------------------


def _genome_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("genomes", nargs="*", help="GENOME.json, .jsonl (nas space sample output), folders, or reference names")
    p.add_argument("--space", help="sample genomes from this space instead")
    p.add_argument("-n", type=_positive_int, default=10, help="genomes to sample with --space (default 10)")
    p.add_argument("--seed", type=int, default=0)


def _setting_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runtime", default="onnxruntime", choices=("onnxruntime", "torch"))
    p.add_argument("--precision", default="fp32", choices=("fp32", "int8", "bf16"),
                   help="fp32 (default), int8 (ONNX Runtime dynamic quantization) or bf16 (torch autocast)")
    p.add_argument("--threads", type=_positive_int, default=1)
    p.add_argument("--seq-len", type=_positive_int, default=128)
    p.add_argument("--clock", default="auto", choices=("auto", "cpu", "wall"),
                   help="auto: the thread's CPU time with 1 thread (robust on a shared machine), wall time otherwise")


def _protocol_args(p: argparse.ArgumentParser, rounds: int = 5, runs: int = 2, warmup: int = 2) -> None:
    p.add_argument("--warmup", type=int, default=warmup, help=f"warm-up runs per model (default {warmup})")
    p.add_argument("--rounds", type=_positive_int, default=rounds, help=f"interleaved rounds (default {rounds})")
    p.add_argument("--runs-per-round", type=_positive_int, default=runs, help=f"runs per model per round; the fastest counts (default {runs})")
    p.add_argument("--max-spread", type=float, default=0.10, help="refuse a model whose rounds vary more than this (IQR/median, default 0.10)")
    p.add_argument("--max-rounds", type=_positive_int, default=15, help="rounds allowed to settle a noisy model (default 15)")
    p.add_argument("--passes", type=_positive_int, default=2, help="passes over all genomes; two must agree (default 2)")
    p.add_argument("--max-passes", type=_positive_int, default=4, help="passes allowed until two agree (default 4)")


def _out_args(p: argparse.ArgumentParser, required: bool) -> None:
    p.add_argument("--out", required=required, help="file to write" + ("" if required else " (default runs/latency/DEVICE.json)"))
    p.add_argument("--force", action="store_true", help="replace --out if it exists")


def _protocol(args):
    from predictors.harness import Protocol

    return Protocol(warmup=args.warmup, rounds=args.rounds, runs_per_round=args.runs_per_round,
                    max_spread=args.max_spread, max_rounds=max(args.max_rounds, args.rounds),
                    passes=args.passes, max_passes=max(args.max_passes, args.passes))


def _genomes(args) -> list:
    from nas.space import load_space
    from predictors.data import load_genomes

    archs: dict[str, object] = {}
    if args.space:
        for arch in load_space(args.space).iter_samples(args.n, args.seed):
            archs.setdefault(arch.id, arch)
    for spec in args.genomes:
        archs.update(load_genomes(spec))
    if not archs:
        raise NasError("no genomes given: name GENOME files or references, or --space SPACE -n N")
    return list(archs.values())


def _conditions(args, clock: str, protocol=None) -> dict:
    from predictors.harness import host_description, library_versions, load_average, runtime_version

    meta = {
        "description": host_description(),
        "runtime_version": runtime_version(args.runtime),
        "clock": clock,
        "library_versions": library_versions(),
        "started_at": _now(),
        "load_average_start": load_average(),
    }
    if protocol is not None:
        meta["protocol"] = protocol.__dict__.copy()
    return meta


def _now() -> str:
    from predictors.data import now_iso

    return now_iso()


def _out_path(args, default_device: str | None = None) -> Path:
    from predictors.data import check_writable
    from predictors.predictor import USER_PROFILES_DIR

    out = Path(args.out) if args.out else USER_PROFILES_DIR / f"{default_device}.json"
    return check_writable(out, args.force)


def _companion(out: Path, suffix: str) -> Path:
    return out.with_name(out.stem + suffix)


# ---- handlers ---------------------------------------------------------------------------------


def _measure(args) -> int:
    from predictors.data import MeasurementSet
    from predictors.harness import clock_for, load_average, measure_genomes, refusal_reason

    out = _out_path(args)
    archs = _genomes(args)
    clock, _ = clock_for(args.clock, args.threads)
    protocol = _protocol(args)
    meta = _conditions(args, clock, protocol)
    meta["source"] = f"nas latency measure, {len(archs)} genomes"
    results = measure_genomes(archs, runtime=args.runtime, threads=args.threads, seq_len=args.seq_len,
                              protocol=protocol, clock=clock, cache_dir=args.cache, seed=args.seed, precision=args.precision)
    meta["finished_at"], meta["load_average_end"] = _now(), load_average()
    data = MeasurementSet(args.device, args.runtime, args.threads, args.seq_len,
                          [m.to_dict() for m in results], {a.id: a for a in archs}, [], meta, precision=args.precision)
    data.save(out)
    print(f"{'genome':<14} {'latency_ms':>11} {'spread':>7}  status")
    refused = 0
    for m in results:
        status = "ok" if m.trusted else "REFUSED: " + refusal_reason(m, protocol)
        refused += not m.trusted
        print(f"{m.genome_id:<14} {m.latency_ms:>11.3f} {m.spread:>7.1%}  {status}")
    print(f"wrote {out} ({len(results) - refused} trusted, {refused} refused; {clock} clock)")
    return 1 if refused else 0


def _microbench(args) -> int:
    from nas.space import load_space
    from predictors.data import MeasurementSet
    from predictors.harness import clock_for, load_average
    from predictors.microbench import run_microbenchmarks, select_kernels, shuffled

    out = _out_path(args)
    clock, _ = clock_for(args.clock, args.threads)
    protocol = _protocol(args)
    kernels = shuffled(select_kernels(load_space(args.space), args.seq_len, args.sample, args.per_kind, args.seed), args.seed)
    meta = _conditions(args, clock, protocol)
    meta["source"] = f"nas latency microbench, {len(kernels)} kernels from space {args.space}"
    records = run_microbenchmarks(kernels, runtime=args.runtime, threads=args.threads, protocol=protocol, clock=clock,
                                  precision=args.precision)
    meta["finished_at"], meta["load_average_end"] = _now(), load_average()
    MeasurementSet(args.device, args.runtime, args.threads, args.seq_len, [], {}, records, meta, precision=args.precision).save(out)
    trusted = sum(r["trusted"] for r in records)
    print(f"{'kernel':<44} {'latency_ms':>11} {'spread':>7}")
    for r in sorted(records, key=lambda r: r["name"]):
        print(f"{r['name']:<44} {r['latency_ms']:>11.4f} {r['spread']:>7.1%}{'' if r['trusted'] else '  REFUSED'}")
    print(f"wrote {out} ({trusted} of {len(records)} kernels trusted)")
    return 0


def _fit(args) -> int:
    out = _out_path(args)
    data = merge_sets(args.measurements)
    predictor = fit_predictor(data, use_kernels=not args.no_kernels, kernel_weight=args.kernel_weight,
                              sources=[str(Path(p).resolve()) for p in args.measurements])
    predictor.save(out)
    _print_fit(predictor, out)
    return 0


def _print_fit(predictor, out: Path) -> None:
    prov = predictor.provenance
    tr, cv = prov["train_scores"], prov.get("cross_validation_5fold")
    print(f"fitted {predictor.device} ({predictor.runtime} {predictor.precision}, {predictor.threads} thread(s), seq {predictor.seq_len}) on "
          f"{prov['fitted_on']['genomes']} genomes and {prov['fitted_on']['kernels']} kernels")
    print(f"  training: MAPE {tr['mape']:.1%}, within 10 % {tr['within_10']:.0%}, Kendall tau {tr['kendall_tau']:.3f}")
    if cv:
        print(f"  5-fold cross-validation: MAPE {cv['mape']:.1%}, within 10 % {cv['within_10']:.0%}, Kendall tau {cv['kendall_tau']:.3f}")
    print(f"wrote {out}")


def _predict(args) -> int:
    from predictors.data import load_genomes
    from predictors.predictor import load

    predictor = load(args.device, seq_len=args.seq_len)
    rows = []
    for spec in args.genomes:
        if spec.endswith(".jsonl") or Path(spec).is_dir():
            rows.extend((f"{spec}:{gid}", arch) for gid, arch in load_genomes(spec).items())
        else:
            rows.append((spec, load_genome(spec)))
    for label, arch in rows:
        ms = predictor.predict(arch)
        if args.json:
            record = {"genome": label, "genome_id": arch.id, "latency_ms": ms, "device": predictor.device}
            if args.breakdown:
                record["breakdown_ms"] = predictor.breakdown(arch)
            print(json.dumps(record))
        else:
            extra = ""
            if args.breakdown:
                extra = "  (" + ", ".join(f"{k} {v:.1f}" for k, v in predictor.breakdown(arch).items()) + ")"
            print(f"{label:<40} {ms:>10.2f} ms{extra}")
    if not args.json:
        print(f"# {predictor.device}: {predictor.runtime}, {predictor.threads} thread(s), seq {predictor.seq_len}, batch 1")
    return 0


def _evaluate(args) -> int:
    from predictors.data import MeasurementSet, check_writable
    from predictors.evaluate import anchor_set, drift_corrected, evaluate, format_table, save_report
    from predictors.predictor import USER_PROFILES_DIR, load

    predictor = load(args.device)
    out_dir = Path(args.out_dir) if args.out_dir else USER_PROFILES_DIR / f"eval-{predictor.device}-{time.strftime('%Y%m%d-%H%M%S')}"
    train = None
    if args.train:
        train = MeasurementSet.load(args.train)
    else:
        fitted_on = predictor.provenance.get("fitted_on")  # a phone profile lists its published points instead
        sources = (fitted_on.get("measurements") or []) if isinstance(fitted_on, dict) else []
        existing = [s for s in sources if isinstance(s, str) and Path(s).is_file()]
        if existing:
            train = merge_sets(existing)
    anchors = MeasurementSet.load(args.anchors_file) if args.anchors_file else None
    anchors_then = anchor_set(predictor)  # the anchors the predictor file carries, when its training file is gone
    corrected_out = check_writable(args.write_corrected, args.force) if args.write_corrected else None
    if args.heldout:
        heldout = MeasurementSet.load(args.heldout)
    else:
        heldout, measured_anchors = _measure_heldout(args, predictor, train or anchors_then, out_dir)
        anchors = anchors or measured_anchors
    report = evaluate(predictor, heldout, train, mlp_steps=args.mlp_steps, anchors=anchors, anchors_then=anchors_then)
    paths = save_report(report, out_dir)
    sys.stdout.write(format_table(report))
    print(f"wrote {paths['json']}, {paths['markdown']}, {paths['plot']}")
    if corrected_out is not None:
        if "drift" not in report:
            raise NasError(f"--write-corrected: no drift measured (predictor {predictor.name} carries no anchors and no "
                           "training measurements were found); pass --train, or measure anchors with --anchors N")
        drift_corrected(predictor, report["drift"]).save(corrected_out)
        print(f"wrote {corrected_out}: every price x{report['drift']['factor']:.3f}")
    return 0


def _measure_heldout(args, predictor, train, out_dir: Path):
    """Held-out genomes measured now, with `--anchors` training genomes measured again among them
    (same session, same chunks) so the machine's drift since training can be told apart from
    prediction error."""
    from nas.space import load_space
    from predictors.data import MeasurementSet, check_writable
    from predictors.evaluate import anchor_records
    from predictors.harness import clock_for, host_description, load_average, measure_genomes

    here = host_description()
    there = predictor.description.get("cpu")
    if there and there != here["cpu"]:
        raise NasError(f"predictor {predictor.name} was fitted on {there!r}, this machine is {here['cpu']!r}; "
                       "measure held-out genomes on that device and pass --heldout")
    if predictor.runtime not in ("onnxruntime", "torch"):
        raise NasError(f"predictor {predictor.name} is for runtime {predictor.runtime!r}, which this machine cannot run; pass --heldout")
    out = check_writable(out_dir / "heldout.json", force=False)
    anchors_out = check_writable(out_dir / "anchors.json", force=False)
    train_ids = {r["genome_id"] for r in train.records} if train is not None else set()
    archs, seen = [], set()
    for arch in load_space(args.space).iter_samples(args.n * 3, args.seed):
        if arch.id not in train_ids and arch.id not in seen:
            seen.add(arch.id)
            archs.append(arch)
        if len(archs) == args.n:
            break
    anchor_archs = []
    if train is not None and args.anchors > 0:  # spread over the training latencies, smallest to largest
        anchor_archs = [train.genomes[a["genome_id"]] for a in anchor_records(train, args.anchors)]
    clock = (train.meta.get("clock") if train is not None else None) or "auto"
    clock, _ = clock_for(clock, predictor.threads)
    protocol = _protocol(args)
    args.runtime = predictor.runtime
    meta = _conditions(args, clock, protocol)
    meta["source"] = (f"held-out genomes: {len(archs)} from space {args.space}, seed {args.seed}, none in the training set; "
                      f"measured together with {len(anchor_archs)} training genomes (anchors)")
    mixed = archs + anchor_archs
    random.Random(args.seed).shuffle(mixed)
    results = {m.genome_id: m for m in measure_genomes(mixed, runtime=predictor.runtime, threads=predictor.threads,
                                                       precision=predictor.precision,
                                                       seq_len=predictor.seq_len, protocol=protocol, clock=clock, seed=args.seed)}
    meta["finished_at"], meta["load_average_end"] = _now(), load_average()

    def as_set(group, path):
        data = MeasurementSet(predictor.device, predictor.runtime, predictor.threads, predictor.seq_len,
                              [results[a.id].to_dict() for a in group], {a.id: a for a in group}, [], dict(meta),
                              precision=predictor.precision)
        data.save(path)
        data.path = str(path)
        return data

    heldout = as_set(archs, out)
    anchors = as_set(anchor_archs, anchors_out) if anchor_archs else None
    return heldout, anchors


def _profile(args) -> int:
    from nas.space import load_space
    from predictors.data import MeasurementSet, check_writable
    from predictors.harness import Protocol, clock_for, load_average, measure_genomes
    from predictors.microbench import run_microbenchmarks, select_kernels, shuffled

    started, cpu_started = time.perf_counter(), time.process_time()
    out = _out_path(args, default_device=args.device)
    data_out = check_writable(_companion(out, ".measurements.json"), args.force)
    clock, _ = clock_for(args.clock, args.threads)
    space = load_space(args.space)
    if args.quick:
        protocol = Protocol(warmup=1, rounds=3, runs_per_round=2, max_spread=0.15, max_rounds=6)
        kernel_protocol = Protocol(warmup=2, rounds=3, runs_per_round=2, max_spread=0.15, max_rounds=6)
        per_kind, shape_sample = 2, 10
    else:
        protocol = Protocol(warmup=1, rounds=5, runs_per_round=2, max_spread=0.10, max_rounds=12)
        kernel_protocol = Protocol(warmup=3, rounds=5, runs_per_round=3, max_spread=0.10, max_rounds=12)
        per_kind, shape_sample = 8, 60
    archs, seen = [], set()
    for arch in space.iter_samples(args.genomes * 3, args.seed):
        if arch.id not in seen:
            seen.add(arch.id)
            archs.append(arch)
        if len(archs) == args.genomes:
            break
    meta = _conditions(args, clock, protocol)
    meta["source"] = (f"nas latency profile: {len(archs)} genomes sampled from space {args.space} (seed {args.seed})"
                      + ("" if args.no_kernels else f", kernels from {shape_sample} genomes, {per_kind} per kind"))
    kernels = []
    if not args.no_kernels:
        chosen = shuffled(select_kernels(space, args.seq_len, shape_sample, per_kind, args.seed), args.seed)
        kernels = run_microbenchmarks(chosen, runtime=args.runtime, threads=args.threads, protocol=kernel_protocol, clock=clock,
                                      precision=args.precision)
    results = measure_genomes(archs, runtime=args.runtime, threads=args.threads, seq_len=args.seq_len,
                              protocol=protocol, clock=clock, cache_dir=args.cache, seed=args.seed, precision=args.precision)
    meta["finished_at"], meta["load_average_end"] = _now(), load_average()
    meta["seconds"] = round(time.perf_counter() - started, 1)
    # CPU seconds of this process: what the wall time would be on an idle machine (one thread)
    meta["cpu_seconds"] = round(time.process_time() - cpu_started, 1)
    data = MeasurementSet(args.device, args.runtime, args.threads, args.seq_len,
                          [m.to_dict() for m in results], {a.id: a for a in archs}, kernels, meta, precision=args.precision)
    data.save(data_out)
    data.path = str(data_out.resolve())
    predictor = fit_predictor(data, use_kernels=bool(kernels), sources=[data.path])
    predictor.save(out)
    refused = sum(not m.trusted for m in results)
    print(f"measured {len(results) - refused} genomes ({refused} refused as too noisy) and {len(kernels)} kernels "
          f"in {meta['seconds']:.0f} s ({meta['cpu_seconds']:.0f} s of CPU, {clock} clock); measurements in {data_out}")
    _print_fit(predictor, out)
    busiest, cpus = max(meta["load_average_start"], meta["load_average_end"]), meta["description"].get("logical_cpus") or 1
    if busiest > cpus / 2:
        # a busy neighbour slows every genome alike (here about 9 % with one busy process on the other core)
        print(f"measured under load average {busiest:.1f} on {cpus} CPUs: every price may be biased by the neighbours' load. "
              f"When the machine is quiet, 'nas latency evaluate --device {out} --write-corrected FILE' re-measures the "
              f"{len(predictor.provenance['anchors'])} anchor genomes this profile carries, reports the drift and writes the corrected predictor")
    return 0


def _export_bench(args) -> int:
    from nas.space import load_space
    from predictors.bundle import DEFAULT_REFERENCES, export_bundle, reference_archs
    from predictors.microbench import select_kernels

    if Path(args.out).exists():
        raise NasError(f"{args.out}: already exists; export-bench writes a new folder (choose another --out)")
    names = () if args.references == "none" else DEFAULT_REFERENCES if args.references == "default" else tuple(
        n.strip() for n in args.references.split(",") if n.strip())
    archs, labels = reference_archs(names)
    space = load_space(args.space)
    if args.n > 0:
        for arch in space.iter_samples(args.n * 3, args.seed):
            if arch.id not in labels and arch.id not in {a.id for a in archs}:
                archs.append(arch)
            if len(archs) == len(names) + args.n:
                break
    kernels = select_kernels(space, args.seq_len, 40, args.kernels_per_kind, args.seed) if args.kernels_per_kind > 0 else []
    out = export_bundle(args.out, archs, kernels, seq_len=args.seq_len, threads=args.threads, runs=args.runs, names=labels,
                        precision=args.precision)
    print(f"wrote {out}: {len(archs)} genomes ({len(labels)} reference designs) and {len(kernels)} kernels, {args.precision}; "
          f"next: see {out}/README.txt")
    return 0


def _ingest(args) -> int:
    from nas.references import reference, reference_names
    from predictors.bundle import load_manifest
    from predictors.data import MeasurementSet, check_writable, load_genomes
    from predictors.harness import library_versions
    from predictors.ingest import read_results
    from predictors.phones import Point, calibrate
    from predictors.predictor import load
    from predictors.transfer import DEFAULT_GROUPS, expected_error, recommend, transfer_predictor

    out = _out_path(args, default_device=args.device)
    data_out = check_writable(_companion(out, ".measurements.json"), args.force)
    genomes, kernels, names, seq_len, precision = {}, {}, {}, args.seq_len, args.precision
    if args.manifest:
        manifest = load_manifest(args.manifest)
        if precision is not None and precision != manifest["precision"]:
            raise NasError(f"{manifest['path']}: the bundle's models are {manifest['precision']}, --precision says {precision}; "
                           "ingest each precision as its own device (drop --precision to take the manifest's)")
        precision = manifest["precision"]
        genomes = dict(manifest["genomes"])
        kernels = {k["id"]: k for k in manifest.get("kernels", [])}
        names = {m["id"]: m.get("name") for m in manifest.get("models", []) if m.get("name")}
        if seq_len is not None and seq_len != manifest["seq_len"]:
            raise NasError(f"{manifest['path']}: the bundle is for seq_len {manifest['seq_len']}, --seq-len says {seq_len}")
        seq_len = manifest["seq_len"]
    if args.genomes:
        genomes.update(load_genomes(args.genomes))
    seq_len = seq_len or 128
    precision = precision or "fp32"
    readings = read_results(args.results)
    by_genome: dict[str, list] = {}
    by_kernel: dict[str, list] = {}
    for r in readings:
        if r.model_id in genomes:
            by_genome.setdefault(r.model_id, []).append(r)
        elif r.model_id in kernels:
            by_kernel.setdefault(r.model_id, []).append(r)
        elif r.model_id in reference_names():
            arch = reference(r.model_id).arch
            genomes[arch.id] = arch
            names[arch.id] = r.model_id
            by_genome.setdefault(arch.id, []).append(r)
        else:
            hint = "the manifest" if args.manifest else "--genomes (or give --manifest)"
            raise NasError(f"{r.source}: unknown genome id {r.model_id!r}: not in {hint}, not a kernel and not a reference name")
    if not by_genome:
        raise NasError("no genome latencies among the results (only kernels?)")
    import statistics

    records = []
    for gid, rs in by_genome.items():
        values = [r.latency_ms for r in rs]
        median = statistics.median(values)
        # Readings of one genome that disagree are kept, flagged and left out of the fit: a mean of
        # 62 and 90 ms is neither measurement.
        spread = (max(values) - min(values)) / median
        conflict = spread > INGEST_MAX_SPREAD
        records.append({"genome_id": gid, "latency_ms": median, "spread": spread, "trusted": not conflict,
                        "readings": [{"latency_ms": r.latency_ms, "source": r.source, "format": r.format, "statistic": r.statistic} for r in rs],
                        **({"name": names[gid]} if gid in names else {}),
                        **({"refused": f"its {len(values)} readings disagree by {spread:.0%} ({', '.join(f'{v:g}' for v in values)} ms); measure it again or drop a reading"} if conflict else {})})
        if conflict:
            print(f"warning: {names.get(gid, gid)}: {records[-1]['refused']}; left out of the fit", file=sys.stderr)
    kernel_records = []
    for kid, rs in by_kernel.items():
        k = kernels[kid]
        kernel_records.append({"name": kid, "kind": k["kind"], "shape": k.get("shape"), "features": k["features"],
                               "latency_ms": statistics.median(r.latency_ms for r in rs), "spread": 0.0, "trusted": True})
    formats = sorted({r.format for r in readings})
    meta = {"description": {"text": args.description} if args.description else {}, "runtime_version": None,
            "clock": "as reported by the tool", "library_versions": library_versions(), "started_at": _now(),
            "source": f"nas latency ingest of {len(readings)} readings ({', '.join(formats)}) from {', '.join(map(str, args.results))}"}
    used = {gid: genomes[gid] for gid in by_genome}
    data = MeasurementSet(args.device, args.runtime, args.threads, seq_len, records, used, kernel_records, meta, precision=precision)
    method, use_kernels = args.method, bool(kernel_records)
    trusted = sum(r["trusted"] for r in records)  # conflicting readings are kept but not fitted on
    if method == "auto":
        if args.groups:
            method = "groups"
        elif args.base:
            method, use_kernels = recommend(trusted, bool(kernel_records))
        elif trusted >= args.min_genomes:
            method = "scratch"
        else:
            raise NasError(f"only {trusted} genomes measured (a fit from scratch needs --min-genomes {args.min_genomes}); "
                           "give --base PREDICTOR (e.g. runs/latency/host.json) to transfer it to this device")
    if method == "scratch":
        data.save(data_out)
        data.path = str(data_out.resolve())
        predictor = fit_predictor(data, use_kernels=use_kernels, sources=[data.path])
        predictor.provenance["expected_error"] = expected_error("scratch", bool(predictor.provenance["fitted_on"]["kernels"]), trusted)
        predictor.save(out)
        _print_fit(predictor, out)
        _print_expected(predictor)
        return 0
    if not args.base:
        raise NasError(f"--method {method} transfers a base predictor: give --base PREDICTOR (e.g. runs/latency/host.json)")
    base = load(args.base, seq_len=seq_len)  # any precision: int8 on a phone is priced from the fp32 host structure
    if method == "prior":
        data.save(data_out)
        data.path = str(data_out.resolve())
        predictor = transfer_predictor(base, data, "prior", use_kernels=use_kernels)
        predictor.save(out)
        prov = predictor.provenance
        print(f"transferred {base.name} to {predictor.device} ({predictor.runtime} {predictor.precision}, {predictor.threads} threads, "
              f"seq {predictor.seq_len}): every price refitted towards the base on {prov['fitted_on']['genomes']} genomes"
              f" and {prov['fitted_on']['kernels']} kernels")
        print(f"wrote {out}")
        _print_expected(predictor)
        return 0
    points = [Point(names.get(r["genome_id"], r["genome_id"]), genomes[r["genome_id"]], r["latency_ms"],
                    "; ".join(x["source"] for x in r["readings"])) for r in records if r["trusted"]]
    groups = ["all"] if method == "global" else [g.strip() for g in (args.groups or ",".join(DEFAULT_GROUPS)).split(",") if g.strip()]
    predictor = calibrate(base, points, device=args.device, runtime=args.runtime, threads=args.threads, group_names=groups,
                          description=meta["description"], source=meta["source"], precision=precision)
    if groups in (["all"], list(DEFAULT_GROUPS)):  # the study measured these two
        predictor.provenance["expected_error"] = expected_error(method, False, len(points))
    data.save(data_out)
    predictor.provenance["measurements"] = str(data_out.resolve())
    predictor.save(out)
    _print_calibration(predictor, out)
    _print_expected(predictor)
    return 0


def _print_expected(predictor) -> None:
    """The error the transfer study measured for this method at about this many genomes."""
    e = predictor.provenance.get("expected_error")
    if e:
        print(f"expected on new genomes ({e['method']}, N={e['n']} in bench/latency.py transfer, {len(e['settings'])} host settings "
              f"as new devices): MAPE {e['mape_median']:.1%} (range {e['mape_range'][0]:.1%}-{e['mape_range'][1]:.1%}), "
              f"within +-10 % {e['within_10_median']:.0%}, Kendall tau {e['kendall_tau_median']:.2f}")


def _print_calibration(predictor, out: Path) -> None:
    prov = predictor.provenance
    print(f"calibrated {predictor.device} ({predictor.runtime} {predictor.precision}, {predictor.threads} threads, seq {predictor.seq_len}) "
          f"on {len(prov['fitted_on'])} genomes: scales " + ", ".join(f"{g} x{s:.3g}" for g, s in prov["scales"].items()))
    print(f"{'genome':<20} {'measured':>9} {'fitted':>9} {'leave-one-out':>14}")
    for p in prov["fitted_on"]:
        loo = "-" if p["leave_one_out_ms"] is None else f"{p['leave_one_out_ms']:.1f} ({p['leave_one_out_ms'] / p['latency_ms'] - 1:+.0%})"
        print(f"{p['name']:<20} {p['latency_ms']:>9.1f} {p['fitted_ms']:>9.1f} {loo:>14}")
    loo = prov["leave_one_out_mape"]
    print(f"fit MAPE {prov['fit_mape']:.1%}; leave-one-out MAPE " + ("undefined" if loo is None else f"{loo:.1%}") + f" ({prov['leave_one_out_note']})")
    print(f"wrote {out}")
