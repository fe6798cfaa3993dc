"""Our counter vs fvcore on the same genomes: exactness and the speed ratio.

    python bench/cost.py [--genomes 30] [--seq-len 128] [--seed 0]

For each genome (the references, then random genomes of mobile.yaml), fvcore traces the built model
(eager attention, so the attention matmuls are counted) and ``nas.count`` reads the op graph. Both
are timed in the same loop, interleaved; fvcore's time excludes building the model.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
warnings.filterwarnings("ignore")

import torch  # noqa: E402

import nas  # noqa: E402
from nas.graph import fvcore_macs  # noqa: E402
from nas.space import load_space  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--genomes", type=int, default=30, help="random genomes of mobile.yaml")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)

    genomes = [(name, nas.reference(name).arch) for name in nas.reference_names() if name != "ib-bert-large"]
    space = load_space("mobile")
    rng = random.Random(args.seed)
    genomes += [(f"mobile#{i}", space.sample(rng)) for i in range(args.genomes)]

    rows, ratios = [], []
    for label, arch in genomes:
        model = nas.build_model(arch).eval()
        start = time.perf_counter()
        theirs = fvcore_macs(model, args.seq_len)
        fvcore_s = time.perf_counter() - start
        ours_times = []
        for _ in range(20):
            start = time.perf_counter()
            cost = nas.count(arch, args.seq_len)
            ours_times.append(time.perf_counter() - start)
        ours_s = statistics.median(ours_times)
        exact = cost.macs == theirs and cost.params == sum(p.numel() for p in model.parameters())
        rows.append((label, arch.id, cost.macs, theirs, exact, fvcore_s, ours_s))
        ratios.append(fvcore_s / ours_s)

    print(f"seq_len={args.seq_len}, batch 1, torch {torch.__version__}, 1 thread; {len(rows)} genomes")
    print(f"{'genome':<20} {'id':<13} {'ours MACs':>15} {'fvcore MACs':>15} {'exact':>6} {'fvcore ms':>10} {'ours ms':>8} {'ratio':>7}")
    for label, arch_id, ours, theirs, exact, fv, us in rows:
        print(f"{label:<20} {arch_id:<13} {ours:>15,} {theirs:>15,} {str(exact):>6} {fv * 1e3:>10.1f} {us * 1e3:>8.3f} {fv / us:>6.0f}x")
    exact_count = sum(r[4] for r in rows)
    print(f"\nexact (MACs and params): {exact_count}/{len(rows)}")
    print(f"speed ratio fvcore/ours: median {statistics.median(ratios):.0f}x, min {min(ratios):.0f}x, max {max(ratios):.0f}x")


if __name__ == "__main__":
    main()
