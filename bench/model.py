"""Our encoder against transformers' implementation of the same reference, with the same weights.

Each reference is built with transformers' default config (random init), ported to ours with
``nas.hf.from_transformers``, and both run side by side in alternating rounds (ours first in odd
rounds, theirs first in even ones) so that drift in machine load hits both alike:

- inference: batch 1, seq len 128, eval, ``torch.inference_mode``, 1 thread;
- training step: batch 8, seq len 128, forward + backward + AdamW step, train mode with the
  config's dropout, 1 and 2 threads.

``--precision bf16`` runs both sides under the same bf16 autocast (the loss in fp32), as a
distillation or fine-tuning run with ``precision="bf16"`` does.

Two pairings: transformers' default attention (SDPA for BERT and MobileBERT, eager for
SqueezeBERT, which has no other) against ours with SDPA, and eager against eager. The table gives
medians and interquartile ranges of wall time, and the median of the per-round ratios
theirs / ours (> 1: ours is faster), from wall time and, steadier on a shared machine, from
process CPU time.

    .venv/bin/python bench/model.py                          # SqueezeBERT and MobileBERT, a few minutes
    .venv/bin/python bench/model.py --models bert-base --rounds 5
    .venv/bin/python bench/model.py --precision bf16 --tasks train   # both sides under bf16 autocast
    .venv/bin/python bench/model.py --profile mobilebert     # top ops of one training step, both sides
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
warnings.filterwarnings("ignore")

import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

import nas  # noqa: E402
import nas.hf  # noqa: E402
from nas.precision import autocast  # noqa: E402

SEQ_LEN = 128
INFERENCE_BATCH, TRAIN_BATCH = 1, 8


def transformers_model(name: str, attn_implementation: str | None) -> torch.nn.Module:
    from transformers import (BertConfig, BertModel, MobileBertConfig, MobileBertModel, SqueezeBertConfig,
                              SqueezeBertModel)

    cls, config_cls = {
        "bert-base": (BertModel, BertConfig),
        "squeezebert": (SqueezeBertModel, SqueezeBertConfig),
        "mobilebert": (MobileBertModel, MobileBertConfig),
    }[name]
    config = config_cls()
    if attn_implementation is not None:
        config._attn_implementation = attn_implementation
    torch.manual_seed(0)
    return cls(config)


@dataclass
class Contender:
    """One model of a pairing: how to call it, and its optimiser for the training step."""

    label: str
    model: torch.nn.Module
    call: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
    optimizer: torch.optim.Optimizer | None = None


def _theirs(model: torch.nn.Module, label: str) -> Contender:
    def call(ids, mask, types):
        out = model(input_ids=ids, attention_mask=mask, token_type_ids=types)
        return out.last_hidden_state, out.pooler_output

    return Contender(label, model, call)


def _ours(model: nas.Encoder, label: str) -> Contender:
    def call(ids, mask, types):
        out = model(ids, mask, types)
        return out.last_hidden_state, out.pooler_output

    return Contender(label, model, call)


def pairings(name: str) -> list[tuple[str, Contender, Contender]]:
    """(pairing, theirs, ours): default attention against ours with SDPA, and eager against eager."""
    default = transformers_model(name, None)
    implementation = default.config._attn_implementation
    ours_sdpa = nas.hf.from_transformers(default, "sdpa")
    ours_eager = nas.hf.from_transformers(default, "eager")
    pairs = [(f"{implementation} vs ours sdpa", _theirs(default, f"hf {implementation}"), _ours(ours_sdpa, "ours sdpa"))]
    if implementation == "eager":  # SqueezeBERT: transformers has only eager attention
        pairs.append(("eager vs ours eager", _theirs(default, "hf eager"), _ours(ours_eager, "ours eager")))
    else:
        eager = transformers_model(name, "eager")
        eager.load_state_dict(default.state_dict())
        pairs.append(("eager vs ours eager", _theirs(eager, "hf eager"), _ours(ours_eager, "ours eager")))
    return pairs


def inputs(batch: int, vocab_size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab_size, (batch, SEQ_LEN), generator=g)
    mask = torch.ones(batch, SEQ_LEN, dtype=torch.long)
    types = torch.zeros_like(ids)
    types[:, SEQ_LEN // 2 :] = 1
    return ids, mask, types


def check_same_outputs(theirs: Contender, ours: Contender, vocab_size: int) -> float:
    ids, mask, types = inputs(2, vocab_size, seed=1)
    mask[1, -16:] = 0
    theirs.model.eval(), ours.model.eval()
    with torch.inference_mode():
        a, _ = theirs.call(ids, mask, types)
        b, _ = ours.call(ids, mask, types)
    return float((a - b).abs().max())


def inference_step(contender: Contender, batch, precision: str = "fp32") -> Callable[[], None]:
    contender.model.eval()

    def run():
        with torch.inference_mode(), autocast(precision):
            contender.call(*batch)

    return run


def training_step(contender: Contender, batch, precision: str = "fp32") -> Callable[[], None]:
    contender.model.train()
    if contender.optimizer is None:
        contender.optimizer = torch.optim.AdamW(contender.model.parameters(), lr=1e-5)

    def run():
        with autocast(precision):
            hidden, pooled = contender.call(*batch)
        loss = hidden.float().square().mean() + pooled.float().square().mean()
        loss.backward()
        contender.optimizer.step()
        contender.optimizer.zero_grad(set_to_none=True)

    return run


@dataclass
class Row:
    model: str
    task: str
    threads: int
    pairing: str
    theirs_ms: float
    theirs_iqr_ms: float
    ours_ms: float
    ours_iqr_ms: float
    ratio: float  # median over rounds of theirs / ours (> 1: ours faster)
    ratio_q1: float
    ratio_q3: float
    cpu_ratio: float  # the same from process CPU time: steadier than wall time on a shared machine
    rounds: int


def _quartiles(values: list[float]) -> tuple[float, float, float]:
    q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else values * 3
    return q1, median, q3


def race(theirs: Callable[[], None], ours: Callable[[], None], rounds: int, calls: int, desc: str):
    """Wall and process-CPU ms per call of each side, per round; the order alternates round by round."""
    theirs(), ours(), theirs(), ours()  # warm-up: allocator, lazy init, weight caches
    wall: dict[str, list[float]] = {"theirs": [], "ours": []}
    cpu: dict[str, list[float]] = {"theirs": [], "ours": []}
    for r in tqdm(range(rounds), desc=desc, leave=False, file=sys.stderr):
        order = [("theirs", theirs), ("ours", ours)] if r % 2 == 0 else [("ours", ours), ("theirs", theirs)]
        for side, fn in order:
            start, start_cpu = time.perf_counter(), time.process_time()
            for _ in range(calls):
                fn()
            wall[side].append((time.perf_counter() - start) * 1000 / calls)
            cpu[side].append((time.process_time() - start_cpu) * 1000 / calls)
    return wall, cpu


def summarise(model: str, task: str, threads: int, pairing: str, wall: dict, cpu: dict) -> Row:
    theirs, ours = wall["theirs"], wall["ours"]
    t1, t, t3 = _quartiles(theirs)
    o1, o, o3 = _quartiles(ours)
    r1, r, r3 = _quartiles([a / b for a, b in zip(theirs, ours)])
    cpu_ratio = _quartiles([a / b for a, b in zip(cpu["theirs"], cpu["ours"])])[1]
    return Row(model, task, threads, pairing, t, t3 - t1, o, o3 - o1, r, r1, r3, cpu_ratio, len(ours))


def run(models: list[str], tasks: list[str], rounds: int, train_threads: list[int], calls: int, precision: str = "fp32") -> list[Row]:
    rows = []
    for name in models:
        vocab = nas.reference(name).arch.vocab_size
        contenders = pairings(name)
        for pairing, theirs, ours in contenders:  # before any training step changes the weights
            diff = check_same_outputs(theirs, ours, vocab)
            print(f"{name}, {pairing}: max |theirs - ours| of the last hidden state = {diff:.2e}", file=sys.stderr)
        for pairing, theirs, ours in contenders:
            if "inference" in tasks:
                torch.set_num_threads(1)
                batch = inputs(INFERENCE_BATCH, vocab)
                wall, cpu = race(inference_step(theirs, batch, precision), inference_step(ours, batch, precision), rounds, calls,
                                 f"{name} inference {pairing}")
                rows.append(summarise(name, f"infer b1 {precision}", 1, pairing, wall, cpu))
                print(format_row(rows[-1]), file=sys.stderr)
            if "train" in tasks:
                batch = inputs(TRAIN_BATCH, vocab)
                for threads in train_threads:
                    torch.set_num_threads(threads)
                    wall, cpu = race(training_step(theirs, batch, precision), training_step(ours, batch, precision), max(3, rounds // 2), 1,
                                     f"{name} train x{threads} {pairing}")
                    rows.append(summarise(name, f"train b8 {precision}", threads, pairing, wall, cpu))
                    print(format_row(rows[-1]), file=sys.stderr)
                torch.set_num_threads(1)
    return rows


HEADER = (f"{'model':<12} {'task':<14} {'thr':>3}  {'pairing':<22} {'theirs ms':>10} {'(IQR)':>8} "
          f"{'ours ms':>10} {'(IQR)':>8}  {'theirs/ours':>11} {'(IQR)':>13} {'cpu ratio':>9}")


def format_row(row: Row) -> str:
    return (f"{row.model:<12} {row.task:<14} {row.threads:>3}  {row.pairing:<22} {row.theirs_ms:>10.1f} "
            f"{row.theirs_iqr_ms:>8.1f} {row.ours_ms:>10.1f} {row.ours_iqr_ms:>8.1f}  {row.ratio:>10.2f}x "
            f"{row.ratio_q1:>6.2f}-{row.ratio_q3:<6.2f} {row.cpu_ratio:>8.2f}x")


def profile(name: str, pairing_index: int = 0, rows: int = 20) -> None:
    """Top ops (self CPU time) of one training step of each side, for finding where time goes."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    torch.set_num_threads(1)
    pairing, theirs, ours = pairings(name)[pairing_index]
    batch = inputs(TRAIN_BATCH, nas.reference(name).arch.vocab_size)
    for contender in (theirs, ours):
        step = training_step(contender, batch)
        step()
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            step()
        print(f"===== {name}, {pairing}: {contender.label}, one training step (batch {TRAIN_BATCH})")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))


def _write_json(path: Path, rows: list[Row], meta: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as tmp:
        json.dump({"meta": meta, "rows": [asdict(r) for r in rows]}, tmp, indent=2)
    Path(tmp.name).replace(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["squeezebert", "mobilebert"],
                        choices=["squeezebert", "mobilebert", "bert-base"])
    parser.add_argument("--tasks", nargs="+", default=["inference", "train"], choices=["inference", "train"])
    parser.add_argument("--rounds", type=int, default=10, help="inference rounds; training uses half (at least 3)")
    parser.add_argument("--calls", type=int, default=3, help="inference calls per round and side")
    parser.add_argument("--train-threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="fp32, or both sides under bf16 autocast")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--profile", choices=["squeezebert", "mobilebert", "bert-base"],
                        help="instead of racing, print the top ops of one training step of each side")
    args = parser.parse_args(argv)
    if args.profile:
        profile(args.profile)
        return 0
    load_before = os.getloadavg()
    started = time.time()
    rows = run(args.models, args.tasks, args.rounds, args.train_threads, args.calls, args.precision)
    meta = {
        "torch": torch.__version__,
        "precision": args.precision,
        "cpu_count": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "seconds": round(time.time() - started, 1),
    }
    print(HEADER)
    for row in rows:
        print(format_row(row))
    print(f"load average before {load_before[0]:.2f}, after {meta['load_average_after'][0]:.2f} "
          f"(on {os.cpu_count()} CPUs); {meta['seconds']} s")
    if args.json:
        _write_json(args.json, rows, meta)
    return 0


if __name__ == "__main__":
    sys.exit(main())
