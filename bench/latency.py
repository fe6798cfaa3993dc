"""Latency predictor benchmark (issue 3): held-out accuracy on this machine, side by side with the
two baselines, plus the clock check, the prediction cost and the phone profiles' leave-one-out.

    .venv/bin/python bench/latency.py                      # profile (if missing), 100 held-out, report
    .venv/bin/python bench/latency.py --heldout 120 --seed 7
    .venv/bin/python bench/latency.py --write-profiles     # also rewrite predictors/profiles/*.json
    .venv/bin/python bench/latency.py transfer             # issue 13: N measurements for a new device (seconds)

It takes about an hour on the shared 2-vCPU VM (most of it exporting 200 genomes to ONNX); the
measurement files it leaves in runs/latency/ make a rerun take a minute.

Conditions: ONNX Runtime CPU, 1 intra-op thread, batch 1, seq len 128, genomes sampled uniformly
from search_spaces/mobile.yaml (training seed 0, held-out seed 1, no genome in both), thread CPU
time (see predictors.harness), interleaved rounds, median of rounds. Everything it measures is
written under runs/latency/ as JSON; the tables are printed in Markdown.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import nas  # noqa: E402
from nas.space import load_space  # noqa: E402
from predictors.data import merge_sets  # noqa: E402
from predictors.train import fit_predictor  # noqa: E402
from predictors.data import MeasurementSet, now_iso  # noqa: E402
from predictors.evaluate import evaluate, format_table, save_report  # noqa: E402
from predictors.fit import Rows, fit_structural, kernel_rows, predict_rows, scores  # noqa: E402
from predictors.harness import (  # noqa: E402
    Protocol,
    host_description,
    library_versions,
    load_average,
    measure_genomes,
    ort_runner,
    runtime_version,
)
from predictors.predictor import Predictor  # noqa: E402

OUT = ROOT / "runs" / "latency"


def section(title: str) -> None:
    print(f"\n## {title}\n", flush=True)


def clock_check(n: int, cache: Path) -> None:
    """Wall-clock and thread-CPU medians of the same runs, side by side."""
    section("Clock check: wall time vs thread CPU time of the same inferences")
    archs = list(load_space("mobile").iter_samples(n, 42))
    from nas.onnx import export_onnx

    rows = []
    for arch in archs:
        path = cache / f"{arch.id}-seq128.onnx"
        if not path.exists():
            export_onnx(arch, path)
        run = ort_runner(path, 1)
        pairs = []
        for _ in range(2):
            run()
        for _ in range(10):
            w0, c0 = time.perf_counter_ns(), time.thread_time_ns()
            run()
            c1, w1 = time.thread_time_ns(), time.perf_counter_ns()
            pairs.append(((w1 - w0) / 1e6, (c1 - c0) / 1e6))
        wall, cpu = np.array(pairs).T
        rows.append((arch.id, np.median(wall), wall.min(), np.median(cpu), cpu.min(), (cpu.max() - cpu.min()) / np.median(cpu)))
    print(f"load average {load_average():.2f} on {host_description()['logical_cpus']} CPUs\n")
    print("| genome | wall median | wall min | CPU median | CPU min | CPU range/median | wall median / CPU median |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for gid, wm, wn, cm, cn, rr in rows:
        print(f"| {gid} | {wm:.2f} | {wn:.2f} | {cm:.2f} | {cn:.2f} | {rr:.1%} | {wm / cm:.2f} |")


def ensure_profile(genomes: int, cache: Path) -> Path:
    predictor_path = OUT / "host.json"
    if predictor_path.exists():
        print(f"using the existing profile {predictor_path} (delete it to re-measure)")
        return predictor_path
    from nas.cli import main

    started = time.perf_counter()
    code = main(["latency", "profile", "--device", "host", "--genomes", str(genomes), "--cache", str(cache), "--out", str(predictor_path)])
    if code:
        raise SystemExit(code)
    print(f"profile took {time.perf_counter() - started:.0f} s")
    return predictor_path


def measure_heldout(predictor: Predictor, train: MeasurementSet, n: int, seed: int, cache: Path) -> MeasurementSet:
    path = OUT / f"heldout-seed{seed}-n{n}.json"
    if path.exists():
        print(f"using existing held-out measurements {path}")
        data = MeasurementSet.load(path)
        return data
    train_ids = {r["genome_id"] for r in train.records}
    archs, seen = [], set()
    for arch in load_space("mobile").iter_samples(n * 3, seed):
        if arch.id not in train_ids and arch.id not in seen:
            seen.add(arch.id)
            archs.append(arch)
        if len(archs) == n:
            break
    protocol = Protocol(warmup=1, rounds=5, runs_per_round=2, max_spread=0.10, max_rounds=12)
    meta = {
        "description": host_description(),
        "runtime_version": runtime_version("onnxruntime"),
        "clock": "cpu",
        "protocol": protocol.__dict__.copy(),
        "library_versions": library_versions(),
        "started_at": now_iso(),
        "load_average_start": load_average(),
        "source": f"bench/latency.py held-out: {len(archs)} genomes from mobile.yaml, seed {seed}, none in the training set",
    }
    started = time.perf_counter()
    results = measure_genomes(archs, protocol=protocol, clock="cpu", cache_dir=cache, seed=seed)
    meta.update(finished_at=now_iso(), load_average_end=load_average(), seconds=round(time.perf_counter() - started, 1))
    data = MeasurementSet(predictor.device, "onnxruntime", 1, 128, [m.to_dict() for m in results], {a.id: a for a in archs}, [], meta)
    data.save(path)
    data.path = str(path)
    print(f"measured {len(archs)} held-out genomes in {meta['seconds']:.0f} s")
    return data


def same_session(train: MeasurementSet, heldout: MeasurementSet, cache: Path, tag: str) -> tuple[MeasurementSet, MeasurementSet]:
    """Kernels, training and held-out genomes measured again in one session, mixed together (the
    ONNX files are cached, so this is only timing): the same machine state for fitting and
    scoring. Returns (training set with kernels, held-out set)."""
    import random

    from predictors.microbench import run_microbenchmarks, select_kernels, shuffled

    train_path, heldout_path = OUT / f"same-session-{tag}-train.json", OUT / f"same-session-{tag}-heldout.json"
    if train_path.exists() and heldout_path.exists():
        print(f"using existing same-session measurements {train_path}, {heldout_path}")
        a, b = MeasurementSet.load(train_path), MeasurementSet.load(heldout_path)
        return a, b
    protocol = Protocol(warmup=1, rounds=5, runs_per_round=2, max_spread=0.10, max_rounds=12)
    kernel_protocol = Protocol(warmup=3, rounds=5, runs_per_round=3, max_spread=0.10, max_rounds=12)
    train_archs = [train.genomes[r["genome_id"]] for r in train.records]
    heldout_archs = [heldout.genomes[r["genome_id"]] for r in heldout.records]
    mixed = train_archs + heldout_archs
    random.Random(5).shuffle(mixed)
    meta = {
        "description": host_description(), "runtime_version": runtime_version("onnxruntime"), "clock": "cpu",
        "protocol": protocol.__dict__.copy(), "library_versions": library_versions(), "started_at": now_iso(),
        "load_average_start": load_average(),
    }
    started = time.perf_counter()
    kernels = run_microbenchmarks(shuffled(select_kernels(load_space("mobile"), 128, 60, 8, 0), 0), protocol=kernel_protocol, clock="cpu")
    results = {m.genome_id: m for m in measure_genomes(mixed, protocol=protocol, clock="cpu", cache_dir=cache, seed=5)}
    meta.update(finished_at=now_iso(), load_average_end=load_average(), seconds=round(time.perf_counter() - started, 1))
    sets = []
    for archs, path, what, ks in ((train_archs, train_path, "training", kernels), (heldout_archs, heldout_path, "held-out", [])):
        data = MeasurementSet("host", "onnxruntime", 1, 128, [results[a.id].to_dict() for a in archs], {a.id: a for a in archs}, ks,
                              dict(meta, source=f"bench/latency.py same session: {len(train_archs)} training and {len(heldout_archs)} "
                                                f"held-out genomes measured together in random order; this file holds the {what} ones"))
        data.save(path)
        data.path = str(path)
        sets.append(data)
    print(f"measured {len(kernels)} kernels and {len(mixed)} genomes in one session in {meta['seconds']:.0f} s")
    return sets[0], sets[1]


def ablation(train: MeasurementSet, heldout: MeasurementSet) -> None:
    """The same structural model fitted on kernels only, genomes only, and both."""
    section("Ablation: what the structural model is fitted on (same held-out genomes)")
    records = [r for r in heldout.trusted_records() if r["genome_id"] not in {t["genome_id"] for t in train.records}]
    archs = [heldout.genomes[r["genome_id"]] for r in records]
    y = np.array([r["latency_ms"] for r in records])
    from predictors.fit import genome_rows

    x_heldout = genome_rows(archs, y, 128).x
    kernels = [k for k in train.kernels if k.get("trusted", True)]
    e2e_records = train.trusted_records()
    e2e = genome_rows([train.genomes[r["genome_id"]] for r in e2e_records], [r["latency_ms"] for r in e2e_records], 128)
    variants: dict[str, dict] = {}
    if kernels:
        kr = kernel_rows(kernels)
        # kernels alone cannot see the per-inference constant: take it from the genomes' median residual
        coefficients = fit_structural(Rows(kr.x, kr.y, kr.kernel, kr.ids), kernel_weight=1.0)
        offset = float(np.median(e2e.y - predict_rows(coefficients, e2e.x)))
        variants[f"kernels only ({len(kernels)} kernels, nn-Meter style sum) + fitted constant"] = scores(y, predict_rows(coefficients, x_heldout) + max(offset, 0.0))
    variants[f"end-to-end only ({len(e2e.y)} genomes)"] = scores(y, predict_rows(fit_structural(e2e), x_heldout))
    if kernels:
        from predictors.fit import stack

        for weight in (0.1, 0.3, 1.0):
            both = stack(e2e, kernel_rows(kernels))
            variants[f"both, kernel weight {weight}"] = scores(y, predict_rows(fit_structural(both, kernel_weight=weight), x_heldout))
    for count in (10, 25, 50):
        if len(e2e.y) > count:
            sub = Rows(e2e.x[:count], e2e.y[:count], e2e.kernel[:count], e2e.ids[:count])
            variants[f"end-to-end only, first {count} genomes"] = scores(y, predict_rows(fit_structural(sub), x_heldout))
            if kernels:
                from predictors.fit import stack

                both = stack(sub, kernel_rows(kernels))
                variants[f"first {count} genomes + kernels (weight 0.3)"] = scores(y, predict_rows(fit_structural(both), x_heldout))
    print("| fitted on | MAPE | within +-5 % | within +-10 % | Kendall tau |")
    print("|---|---:|---:|---:|---:|")
    for name, s in variants.items():
        print(f"| {name} | {s['mape']:.1%} | {s['within_5']:.1%} | {s['within_10']:.1%} | {s['kendall_tau']:.3f} |")


def prediction_cost(predictor: Predictor) -> None:
    section("Prediction cost (thread CPU time per call)")
    import predictors.features as features

    archs = list(load_space("mobile").iter_samples(300, 99))
    features._genome_features.cache_clear()
    t0 = time.thread_time_ns()
    for arch in archs:
        predictor.predict(arch)
    cold = (time.thread_time_ns() - t0) / len(archs) / 1e3
    t0 = time.thread_time_ns()
    for _ in range(10):
        for arch in archs:
            predictor.predict(arch)
    warm = (time.thread_time_ns() - t0) / (10 * len(archs)) / 1e3
    t0 = time.thread_time_ns()
    for arch in archs:
        nas.count(arch, 128)
    counting = (time.thread_time_ns() - t0) / len(archs) / 1e3
    print(f"| | us per genome |\n|---|---:|\n| predict, new genome | {cold:.0f} |\n| predict, seen genome (cached features) | {warm:.1f} |"
          f"\n| nas.count, for scale | {counting:.0f} |")
    assert all(predictor.predict(a) == predictor.predict(a) for a in archs[:20])


def phone_profiles(host: Predictor, write: bool) -> None:
    from predictors.phones import Point, calibrate

    section("Phone profiles: scale factors on the host structure, fitted on published latencies")
    settings = {
        "pixel4": dict(runtime="tflite", threads=4, refs=("bert-base", "mobilebert", "mobilebert-tiny", "mobilebert-no-opt"),
                       groups=("compute", "norm_act", "memory_overhead"),
                       description={"phone": "Google Pixel 4", "soc": "Snapdragon 855", "as_published": "MobileBERT paper: TFLite, 4 threads, seq 128"}),
        "pixel3": dict(runtime="pytorch-mobile", threads=4, refs=("bert-base", "squeezebert"), groups=("grouped_linear", "rest"),
                       description={"phone": "Google Pixel 3", "soc": "Snapdragon 845",
                                    "as_published": "SqueezeBERT paper: PyTorch mobile, seq 128; thread count not stated, recorded as 4 (the SoC's big cores)"}),
    }
    alternatives = {"pixel4": [("all",), ("compute", "rest"), ("compute", "norm_act", "memory_overhead")],
                    "pixel3": [("all",), ("grouped_linear", "rest"), ("dense_compute", "rest")]}
    for device, s in settings.items():
        points = [Point(r, nas.reference(r).arch, nas.reference(r).latency_ms[device].value, nas.reference(r).latency_ms[device].source) for r in s["refs"]]
        print(f"### {device}: {len(points)} published points\n")
        print("| groups (free scales) | fit MAPE | leave-one-out MAPE | " + " | ".join(f"{p.name} pub/fit/LOO" for p in points) + " |")
        print("|---|---:|---:|" + "---|" * len(points))
        for groups in alternatives[device]:
            cal = calibrate(host, points, device=device, runtime=s["runtime"], threads=s["threads"], group_names=groups)
            prov = cal.provenance
            loo = "undefined" if prov["leave_one_out_mape"] is None else f"{prov['leave_one_out_mape']:.1%}"
            cells = []
            for p in prov["fitted_on"]:
                lo = "-" if p["leave_one_out_ms"] is None else f"{p['leave_one_out_ms']:.0f}"
                cells.append(f"{p['latency_ms']:.0f}/{p['fitted_ms']:.0f}/{lo}")
            print(f"| {'+'.join(groups)} ({len(groups)}) | {prov['fit_mape']:.1%} | {loo} | " + " | ".join(cells) + " |")
        print()
        if write:
            cal = calibrate(host, points, device=device, runtime=s["runtime"], threads=s["threads"], group_names=s["groups"],
                            description=s["description"], source="published latencies in nas.references")
            # a shipped file names the base's measurements relative to the repository, not this checkout
            base_fit = cal.provenance["base"]["fitted_on"]
            base_fit["measurements"] = [_relative(m) for m in base_fit.get("measurements") or []]
            cal.provenance["base"]["produced_by"] = "bench/latency.py --write-profiles"
            path = cal.save(ROOT / "predictors" / "profiles" / f"{device}.json")
            print(f"wrote {path} with groups {'+'.join(s['groups'])}\n")


def _relative(path: str) -> str:
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return path


def main() -> int:
    if sys.argv[1:2] == ["transfer"]:  # the transfer study (issue 13), from bench/results/transfer_measurements.csv
        sys.path.insert(0, str(ROOT / "bench"))
        from transfer_table import main as transfer_main

        return transfer_main(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-genomes", type=int, default=100)
    parser.add_argument("--heldout", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1, help="held-out seed (training uses 0)")
    parser.add_argument("--write-profiles", action="store_true", help="rewrite predictors/profiles/pixel4.json and pixel3.json")
    parser.add_argument("--skip-clock-check", action="store_true")
    parser.add_argument("--keep-onnx", action="store_true",
                        help="keep runs/latency/onnx-cache (about 24 GB for 200 genomes) for a faster rerun")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cache = OUT / "onnx-cache"
    cache.mkdir(parents=True, exist_ok=True)
    print(f"# Latency predictor benchmark ({now_iso()})\n")
    print(f"machine: {host_description()}; onnxruntime {runtime_version('onnxruntime')}, torch {torch.__version__}; "
          f"load average at start {load_average():.2f}")
    if not args.skip_clock_check:
        clock_check(6, cache)
    section("Host profile (training)")
    predictor_path = ensure_profile(args.train_genomes, cache)
    predictor = Predictor.load(predictor_path)
    train = merge_sets(predictor.provenance["fitted_on"]["measurements"])
    print(f"fitted on {predictor.provenance['fitted_on']['genomes']} genomes and {predictor.provenance['fitted_on']['kernels']} kernels; "
          f"5-fold CV MAPE {predictor.provenance['cross_validation_5fold']['mape']:.1%}")
    section(f"Held-out evaluation: {args.heldout} genomes of mobile.yaml, ONNX Runtime, 1 thread, seq 128")
    heldout = measure_heldout(predictor, train, args.heldout, args.seed, cache)
    print("### A. The profile's predictor, held-out genomes measured afterwards (another session)\n")
    report = evaluate(predictor, heldout, train)
    save_report(report, OUT / f"eval-seed{args.seed}-cross-session")
    lat = np.array([p["measured_ms"] for p in report["points"]])
    print(f"held-out latencies {lat.min():.1f}-{lat.max():.1f} ms (median {np.median(lat):.1f}); "
          f"{report['untrusted_heldout_excluded']} refused as too noisy\n")
    print(format_table(report))

    print("### B. Training and held-out genomes measured again, together, in one session\n")
    train_c, heldout_c = same_session(train, heldout, cache, f"seed{args.seed}-n{args.heldout}")
    repeat = {r["genome_id"]: r["latency_ms"] for r in heldout_c.trusted_records()}
    ratios = [repeat[r["genome_id"]] / r["latency_ms"] for r in heldout.trusted_records() if r["genome_id"] in repeat]
    print(f"held-out genomes, this session over the earlier one: median x{np.median(ratios):.3f} "
          f"(quartiles {np.percentile(ratios, 25):.3f}-{np.percentile(ratios, 75):.3f}): the machine's speed between sessions\n")
    print("B1. The profile's predictor on this session's held-out genomes, drift measured on this session's training genomes:\n")
    report_b1 = evaluate(predictor, heldout_c, train, anchors=train_c)
    save_report(report_b1, OUT / f"eval-seed{args.seed}-drift")
    print(format_table(report_b1))
    print("B2. A predictor fitted on this session's training genomes and kernels, scored on this session's held-out genomes "
          "(the headline: same machine state for fitting and scoring):\n")
    same = fit_predictor(train_c, sources=[train_c.path])
    same.save(OUT / f"host-same-session-seed{args.seed}.json")
    report_b2 = evaluate(same, heldout_c, train_c)
    paths = save_report(report_b2, OUT / f"eval-seed{args.seed}")
    print(format_table(report_b2))
    print(f"plot: {paths['plot']}")
    ablation(train_c, heldout_c)
    prediction_cost(predictor)
    phone_profiles(predictor, args.write_profiles)
    if not args.keep_onnx:
        import shutil

        shutil.rmtree(cache, ignore_errors=True)  # tens of GB of exported genomes on a shared disk
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
