"""Measurements for the transfer study (issue 13): every genome and kernel once on each target
setting of this machine, appended to ``bench/results/transfer_measurements.csv`` as they finish.

    .venv/bin/python bench/transfer_measure.py           # resumes: skips (target, id) already in the CSV
    .venv/bin/python bench/transfer_measure.py --pass 2  # a second pass (the analysis keeps the lower, as the harness does)

Targets differ from the base setting (ONNX Runtime fp32, 1 thread) the way a phone differs from a
host: int8 dynamic quantization, bf16 and fp32 torch eager, 2 threads, and the base setting with a
second process streaming memory on the other core ("busy"). Genomes: 40 calibration-pool and 40
held-out genomes sampled from mobile.yaml with fixed seeds, disjoint, small and medium only (the
shipped host predictor's estimate <= MAX_BASE_MS; the largest genomes take minutes to export).
Within a chunk, the quiet 1-thread targets are timed interleaved in one set of rounds (thread CPU
clock), so they see the same machine state; 2 threads use the wall clock. Latencies are analysed by
``bench/latency.py transfer`` from the CSV in seconds.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from nas.space import load_space  # noqa: E402
from predictors.data import now_iso, write_json_atomic  # noqa: E402
from predictors.harness import Protocol, genome_onnx, load_average, ort_runner, time_runners, torch_call  # noqa: E402
from predictors.microbench import kernel_runner, select_kernels  # noqa: E402
from predictors.predictor import Predictor  # noqa: E402

RESULTS = ROOT / "bench" / "results"
CSV_PATH = RESULTS / "transfer_measurements.csv"
DESIGN_PATH = RESULTS / "transfer_design.json"
CACHE = ROOT / "runs" / "transfer-onnx"
COLUMNS = ("target", "role", "id", "latency_ms", "spread", "rounds", "clock", "load_average", "measured_at")
POOL_SEED, HELDOUT_SEED, KERNEL_SEED = 11, 12, 0
POOL_N, HELDOUT_N = 40, 40
MAX_BASE_MS = 60.0
PROTOCOL = Protocol(warmup=1, rounds=5, runs_per_round=2, max_spread=0.10, max_rounds=8, passes=1, max_passes=1)
KERNEL_PROTOCOL = Protocol(warmup=2, rounds=5, runs_per_round=3, max_spread=0.10, max_rounds=8, passes=1, max_passes=1)
CHUNK = 8
# A second process on the other core: copies 32 MB arrays (memory bandwidth, shared cache) and
# multiplies small matrices, one BLAS thread.
BUSY = ("import numpy as np\na = np.random.rand(2048, 2048); b = np.empty_like(a); c = np.random.rand(256, 256)\n"
        "while True:\n    np.copyto(b, a); c @ c\n")


@dataclass(frozen=True)
class Target:
    """One setting of this machine treated as a device."""

    name: str
    runtime: str
    threads: int
    precision: str
    busy: bool = False

    @property
    def clock(self) -> str:
        return "cpu" if self.threads == 1 else "wall"


BASE = Target("ort-fp32-1t", "onnxruntime", 1, "fp32")
TARGETS = (
    BASE,
    Target("ort-int8-1t", "onnxruntime", 1, "int8"),
    Target("torch-fp32-1t", "torch", 1, "fp32"),
    Target("torch-bf16-1t", "torch", 1, "bf16"),
    Target("ort-fp32-2t", "onnxruntime", 2, "fp32"),
    Target("ort-fp32-1t-busy", "onnxruntime", 1, "fp32", busy=True),
)
# Timed together in one set of interleaved rounds; the others each alone.
GROUPS = (TARGETS[:4], (TARGETS[4],), (TARGETS[5],))


def shipped_host() -> Predictor:
    """The host predictor the shipped phone profiles were derived from (only to skip large genomes)."""
    data = json.loads((ROOT / "predictors" / "profiles" / "pixel4.json").read_text())
    return Predictor("host", "onnxruntime", 1, 128, data["provenance"]["base"]["coefficients"])


def design() -> dict:
    """Genomes (pool and held-out, disjoint) and kernels; written once and then read back."""
    if DESIGN_PATH.exists():
        return json.loads(DESIGN_PATH.read_text())
    host = shipped_host()
    space = load_space("mobile")
    chosen: dict[str, str] = {}
    genomes: dict[str, dict] = {}
    for role, seed, n in (("pool", POOL_SEED, POOL_N), ("heldout", HELDOUT_SEED, HELDOUT_N)):
        taken = 0
        for arch in space.iter_samples(n * 10, seed):
            if arch.id in chosen or host.predict(arch) > MAX_BASE_MS:
                continue
            chosen[arch.id], genomes[arch.id] = role, arch.to_dict()
            taken += 1
            if taken == n:
                break
    kernels = select_kernels(space, 128, 60, 3, KERNEL_SEED)
    data = {
        "format": "nas-transfer-design",
        "created": now_iso(),
        "space": "mobile", "seq_len": 128, "batch": 1,
        "seeds": {"pool": POOL_SEED, "heldout": HELDOUT_SEED, "kernels": KERNEL_SEED},
        "filter": f"shipped host predictor estimate <= {MAX_BASE_MS} ms (largest genomes skipped)",
        "targets": [t.__dict__ for t in TARGETS],
        "protocol": PROTOCOL.__dict__, "kernel_protocol": KERNEL_PROTOCOL.__dict__,
        "roles": chosen,
        "genomes": genomes,
        "kernels": [{"name": k.name, "kind": k.kind, "shape": k.params, "features": k.features()} for k in kernels],
    }
    write_json_atomic(DESIGN_PATH, data)
    return data


def done_pairs(passes: int = 1) -> set[tuple[str, str]]:
    """(target, id) pairs already measured `passes` times."""
    if not CSV_PATH.exists():
        return set()
    with CSV_PATH.open() as handle:
        counts = Counter((row["target"], row["id"]) for row in csv.DictReader(handle))
    return {pair for pair, n in counts.items() if n >= passes}


def append_rows(rows: list[dict]) -> None:
    new = not CSV_PATH.exists()
    with CSV_PATH.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        if new:
            writer.writeheader()
        writer.writerows(rows)
        handle.flush()
        os.fsync(handle.fileno())


class Busy:
    """A second process keeping the other core busy while a group is timed; stopped by its PID."""

    def __init__(self, on: bool) -> None:
        self.on, self.process = on, None

    def __enter__(self):
        if self.on:
            env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
            self.process = subprocess.Popen([sys.executable, "-c", BUSY], env=env)
            time.sleep(1.0)
        return self

    def __exit__(self, *exc) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)


def time_group(group: tuple[Target, ...], runners: dict[tuple[str, str], object], role: dict[str, str], protocol: Protocol,
               seed: int) -> list[dict]:
    keyed = {f"{t}|{i}": run for (t, i), run in runners.items()}
    if not keyed:
        return []
    clock = group[0].clock
    timer = time.thread_time_ns if clock == "cpu" else time.perf_counter_ns
    with Busy(group[0].busy):
        timings = time_runners(keyed, protocol, timer=timer, seed=seed, refuse=False)
    load = load_average()
    rows = []
    for key, timing in timings.items():
        target, item = key.split("|", 1)
        rows.append({"target": target, "role": role[item], "id": item, "latency_ms": f"{timing.median_ms:.5f}",
                     "spread": f"{timing.spread:.4f}", "rounds": len(timing.round_ms), "clock": clock,
                     "load_average": f"{load:.2f}", "measured_at": now_iso()})
    return rows


def measure_kernels(data: dict, done: set) -> None:
    from predictors.microbench import Kernel

    by_name = {k.name: k for k in select_kernels(load_space("mobile"), 128, 60, 3, KERNEL_SEED)}
    kernels: list[Kernel] = [by_name[k["name"]] for k in data["kernels"]]
    role = {k.name: "kernel" for k in kernels}
    folder = CACHE / "kernels"
    folder.mkdir(parents=True, exist_ok=True)
    for g, group in enumerate(GROUPS):
        for start in range(0, len(kernels), 24):
            batch = kernels[start:start + 24]
            runners = {(t.name, k.name): kernel_runner(k, t.runtime, t.threads, folder, t.precision)
                       for t in group for k in batch if (t.name, k.name) not in done}
            rows = time_group(group, runners, role, KERNEL_PROTOCOL, seed=start + 100 * g)
            append_rows(rows)
            print(f"kernels {start + len(batch)}/{len(kernels)} on {', '.join(t.name for t in group)}", flush=True)


def genome_runners(arch, group: tuple[Target, ...], done: set) -> dict[tuple[str, str], object]:
    from nas.model import build_model
    from nas.onnx import example_inputs

    runners = {}
    model = None
    for t in group:
        if (t.name, arch.id) in done:
            continue
        if t.runtime == "onnxruntime":
            runners[(t.name, arch.id)] = ort_runner(genome_onnx(arch, 128, CACHE, t.precision), t.threads)
        else:
            if model is None:  # one model for fp32 and bf16
                torch.set_num_threads(t.threads)
                torch.manual_seed(0)
                model = build_model(arch, attention_implementation="eager").eval()
            runners[(t.name, arch.id)] = torch_call(model, example_inputs(128, 1, arch.vocab_size), t.precision)
    return runners


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pass", dest="passes", type=int, default=1, help="measure until every pair has this many rows")
    args = parser.parse_args()
    torch.set_num_threads(1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    data = design()
    from predictors.data import _genome

    archs = [_genome(g, f"{DESIGN_PATH}: genomes.{gid}", expected_id=gid) for gid, g in data["genomes"].items()]
    random.Random(3 + args.passes).shuffle(archs)  # chunks mix pool and held-out genomes; new chunk mates every pass
    started = time.perf_counter()
    print(f"{len(archs)} genomes, {len(data['kernels'])} kernels, {len(TARGETS)} targets; load {load_average():.2f}", flush=True)
    measure_kernels(data, done_pairs(args.passes))
    done = done_pairs(args.passes)
    for start in range(0, len(archs), CHUNK):
        batch = archs[start:start + CHUNK]
        if all((t.name, a.id) in done for t in TARGETS for a in batch):
            continue
        for g, group in enumerate(GROUPS):
            runners = {}
            for arch in batch:
                runners.update(genome_runners(arch, group, done))
            append_rows(time_group(group, runners, data["roles"], PROTOCOL, seed=start + 1000 * g))
            del runners
        print(f"genomes {start + len(batch)}/{len(archs)}, {time.perf_counter() - started:.0f} s, load {load_average():.2f}", flush=True)
    print(f"done in {time.perf_counter() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
