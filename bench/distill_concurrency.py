"""How many distillation steps a second one GPU gives to N concurrent processes.

    python bench/distill_concurrency.py GENOME.json --workers 1 8 [--steps 480] [--batch-size 32] [--teacher DIR]

Each of N processes distils the same genome (seeds 0..N-1) with one torch thread; the script
prints, per N, the wall time and the steps a second all N together trained (from each run's own
training time, so the teacher's targets and the start-up are left out). Small students are bound by
kernel launches, not arithmetic: without CUDA MPS the GPU runs one process's kernels at a time, so N
processes train little faster than one. Run it once plainly and once under the MPS daemon
(``nvidia-cuda-mps-control -d``) to see what MPS buys.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def child(args) -> None:
    import torch

    from nas.arch import ArchConfig
    from nas.distill import DistillConfig, distill

    torch.set_num_threads(1)
    config = DistillConfig(steps=args.steps, batch_size=args.batch_size, num_checkpoints=1, teacher=args.teacher, score="cosine",
                           seed=args.seed, params_weight=0.0)
    result = distill(ArchConfig.load(args.genome), config)
    print(json.dumps({"train_s": result.train_s, "status": result.status, "device": result.device}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("genome")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--steps", type=int, default=480)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--teacher")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    base = [sys.executable, __file__, args.genome, "--steps", str(args.steps), "--batch-size", str(args.batch_size), "--child"]
    if args.teacher:
        base += ["--teacher", args.teacher]
    print(f"{Path(args.genome).stem}: {args.steps} steps of {args.batch_size} per process")
    for n in args.workers:
        began = time.perf_counter()
        procs = [subprocess.Popen(base + ["--seed", str(k)], stdout=subprocess.PIPE, text=True) for k in range(n)]
        outs = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
        wall = time.perf_counter() - began
        slowest = max(o["train_s"] for o in outs)
        print(f"{n:>3} processes: wall {wall:6.1f}s, training {slowest:6.1f}s (slowest), "
              f"{n * args.steps / slowest:7.1f} steps/s together, {1000 * slowest / args.steps:6.1f} ms a step each "
              f"[{outs[0]['device']}, {', '.join(sorted({o['status'] for o in outs}))}]", flush=True)


if __name__ == "__main__":
    main()
