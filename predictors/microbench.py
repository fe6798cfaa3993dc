"""Kernel microbenchmarks: the op types genomes decompose into, at shapes drawn from a space.

Kernels are read off the ops (``nas.ops``, by role) of genomes sampled from the space, so they are
exactly the projections, attention cores, norms, activations, adds and embeddings those genomes
run, at their shapes. Each kernel runs the model's own module or function for its part
(``nas.model``), exported to ONNX for ONNX Runtime or a phone, or run eagerly for PyTorch. A
kernel's features are the features of its ops, so its latency is a row of the same least squares
as a whole genome's.
"""

from __future__ import annotations

import math
import random
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from nas.arch import ArchConfig
from nas.block import Projection
from nas.errors import NasError
from nas.graph import Op, ops
from nas.model import AttentionCore, GroupedLinear, ProjectAddNorm, make_activation, make_norm, trigram
from nas.space import Space
from predictors.features import FEATURES, features_of_ops
from predictors.harness import Protocol, Timer, ort_runner, time_runners

KERNEL_KINDS = ("linear", "grouped_linear", "attention", "softmax", "layer_norm", "no_norm", "residual_layer_norm",
                "gelu", "relu", "add", "embedding", "trigram")


@dataclass(frozen=True)
class Kernel:
    """One microbenchmark: a kind, its shape parameters, and the ops it runs (for its features)."""

    kind: str
    shape: tuple[tuple[str, int], ...]  # sorted (name, value) pairs
    ops: tuple[Op, ...]

    @property
    def name(self) -> str:
        return self.kind + "_" + "_".join(f"{k}{v}" for k, v in self.shape)

    @property
    def params(self) -> dict[str, int]:
        return dict(self.shape)

    def features(self) -> dict[str, float]:
        vector = features_of_ops(list(self.ops))
        return {n: float(v) for n, v in zip(FEATURES, vector) if v}

    @property
    def size(self) -> float:
        """A scalar to spread the chosen kernels over (MACs, else elements)."""
        return float(sum(op.macs for op in self.ops) or sum(math.prod(op.out_shape) for op in self.ops))


ATTENTION_CHAIN = ("attention.scores", "attention.scale", "attention.mask", "attention.softmax", "attention.context",
                   "attention.merge_heads")


def kernels_from_arch(arch: ArchConfig, seq_len: int) -> list[Kernel]:
    """The kernels one encoder layer (and the embeddings) of `arch` runs."""
    op_list = ops(arch.replace(num_layers=1), seq_len)
    by_name = {op.name: op for op in op_list}
    found: list[Kernel] = []
    for op in op_list:
        T = op.out_shape[0]
        if op.role == "projection" and len(op.out_shape) == 2 and T == seq_len:
            k, n = op.in_shapes[0][-1], op.out_shape[-1]
            kind = "linear" if op.groups == 1 else "grouped_linear"
            found.append(Kernel(kind, (("T", T), ("K", k), ("N", n), ("g", op.groups)), (op,)))
        elif op.role == "attention.scores":
            core = [op]  # follow the chain scores -> ... -> merge_heads through each op's consumers
            while core[-1].role != ATTENTION_CHAIN[-1]:
                core.append(next(by_name[c] for c in core[-1].consumers if by_name[c].role in ATTENTION_CHAIN))
            heads, tokens = op.out_shape[0], op.out_shape[1]
            found.append(Kernel("attention", (("T", tokens), ("W", op.in_shapes[0][-1]), ("h", heads)), tuple(core)))
            softmax = next(o for o in core if o.role == "attention.softmax")
            found.append(Kernel("softmax", (("T", tokens), ("h", heads)), (softmax,)))
        elif op.role == "norm" and len(op.out_shape) == 2:
            found.append(Kernel(op.kind, (("T", T), ("W", op.out_shape[-1])), (op,)))
        elif op.role == "activation" and op.kind in ("gelu", "relu"):
            found.append(Kernel(op.kind, (("T", T), ("W", op.out_shape[-1])), (op,)))
        elif op.role == "residual":
            after = [by_name[c] for c in op.consumers]
            if after and after[0].kind == "layer_norm":
                found.append(Kernel("residual_layer_norm", (("T", T), ("W", op.out_shape[-1])), (op, after[0])))
            else:
                found.append(Kernel("add", (("T", T), ("W", op.out_shape[-1])), (op,)))
        elif op.role == "embedding.word":
            rows = op.params // op.out_shape[-1]
            found.append(Kernel("embedding", (("T", T), ("V", rows), ("E", op.out_shape[-1])), (op,)))
        elif op.role == "embedding.trigram":
            found.append(Kernel("trigram", (("T", T), ("E", op.in_shapes[0][-1])), (op,)))
    return found


def select_kernels(space: Space, seq_len: int = 128, genomes: int = 60, per_kind: int = 8, seed: int = 0) -> list[Kernel]:
    """Up to `per_kind` distinct kernels of each kind from `genomes` genomes sampled from `space`,
    spread evenly over size (smallest to largest)."""
    distinct: dict[str, Kernel] = {}
    for arch in space.iter_samples(genomes, seed):
        for kernel in kernels_from_arch(arch, seq_len):
            distinct.setdefault(kernel.name, kernel)
    chosen: list[Kernel] = []
    for kind in KERNEL_KINDS:
        pool = sorted((k for k in distinct.values() if k.kind == kind), key=lambda k: (k.size, k.name))
        if len(pool) > per_kind:
            picks = np.linspace(0, len(pool) - 1, per_kind).round().astype(int)
            pool = [pool[i] for i in sorted(set(picks.tolist()))]
        chosen.extend(pool)
    return chosen


# ---- kernels as torch modules: the model's own parts -------------------------------------------


class _Call(nn.Module):
    """A module around one of the model's functions or methods, so it can be exported and timed."""

    def __init__(self, function: Callable, owner: nn.Module | None = None) -> None:
        super().__init__()
        self.function, self.owner = function, owner  # owner: the module whose weights the function uses

    def forward(self, *args):
        return self.function(*args)


def kernel_module(kernel: Kernel) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """The model's module for the kernel's part (eval mode), and named example inputs (batch 1, seed 0)."""
    p = kernel.params
    g = torch.Generator().manual_seed(0)
    rand = lambda *shape: torch.randn(*shape, generator=g)  # noqa: E731
    T = p["T"]
    if kernel.kind in ("linear", "grouped_linear"):
        return GroupedLinear(p["K"], p["N"], p["g"]), {"x": rand(1, T, p["K"])}
    if kernel.kind == "attention":
        w = p["W"]
        core = AttentionCore(p["h"], w // p["h"])
        module = _Call(lambda q, k, v, mask: core(q, k, v, mask)[0], core)
        return module, {"q": rand(1, T, w), "k": rand(1, T, w), "v": rand(1, T, w), "mask": torch.zeros(1, 1, 1, T)}
    if kernel.kind == "softmax":
        return _Call(lambda x: x.softmax(dim=-1)), {"x": rand(1, p["h"], T, T)}
    if kernel.kind in ("layer_norm", "no_norm"):
        return make_norm(kernel.kind, p["W"]), {"x": rand(1, T, p["W"])}
    if kernel.kind == "residual_layer_norm":
        step = ProjectAddNorm(Projection("", p["W"], p["W"]), "layer_norm", 0.0).eval()
        return _Call(step.add_norm, step), {"a": rand(1, T, p["W"]), "b": rand(1, T, p["W"])}
    if kernel.kind in ("gelu", "relu"):
        return make_activation(kernel.kind), {"x": rand(1, T, p["W"])}
    if kernel.kind == "add":
        return _Call(torch.add), {"a": rand(1, T, p["W"]), "b": rand(1, T, p["W"])}
    if kernel.kind == "embedding":
        return nn.Embedding(p["V"], p["E"]), {"ids": torch.randint(1, p["V"], (1, T), generator=g)}
    if kernel.kind == "trigram":
        return _Call(trigram), {"x": rand(1, T, p["E"])}
    raise NasError(f"unknown kernel kind {kernel.kind!r}")


def export_kernel(kernel: Kernel, path: str | Path) -> Path:
    """Export one kernel to ONNX (legacy exporter, opset 17, static shapes); written to a
    temporary name and renamed, like every artifact."""
    module, inputs = kernel_module(kernel)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module.eval(), tuple(inputs.values()), str(tmp), dynamo=False, opset_version=17,
                              input_names=list(inputs), output_names=["y"])
        tmp.replace(path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def kernel_runner(kernel: Kernel, runtime: str, threads: int, folder: Path, precision: str = "fp32") -> Callable[[], object]:
    """One call = one run of the kernel on `runtime` at `precision` (ONNX files written to `folder`)."""
    from predictors.harness import torch_call
    from predictors.quantize import check_precision, quantize_int8

    check_precision(runtime, precision)
    if runtime == "onnxruntime":
        path = export_kernel(kernel, folder / f"{kernel.name}.onnx")
        if precision == "int8":
            path = quantize_int8(path, folder / f"{kernel.name}-int8.onnx")
        return ort_runner(path, threads)
    module, inputs = kernel_module(kernel)
    module.eval()
    torch.set_num_threads(threads)
    return torch_call(module, inputs, precision)


def run_microbenchmarks(
    kernels: list[Kernel],
    *,
    runtime: str = "onnxruntime",
    threads: int = 1,
    protocol: Protocol = Protocol(warmup=3, rounds=5, runs_per_round=3),
    chunk: int = 24,
    clock: str = "auto",
    timer: Timer | None = None,
    progress: bool = True,
    precision: str = "fp32",
) -> list[dict]:
    """Time every kernel (interleaved within chunks); one record per kernel, untrusted ones marked."""
    from nas.progress import progress_bar
    from predictors.harness import clock_for

    if timer is None:
        timer = clock_for(clock, threads)[1]
    if len({k.name for k in kernels}) != len(kernels):
        raise NasError("run_microbenchmarks: a kernel is listed twice")
    records: list[dict] = []
    bar = progress_bar(len(kernels), f"kernels ({runtime}, {threads} thread{'s' * (threads > 1)})", "kernel", enabled=progress)
    with tempfile.TemporaryDirectory(prefix="nas-kernels-") as tmp:
        for start in range(0, len(kernels), chunk):
            batch = kernels[start : start + chunk]
            runners = {k.name: kernel_runner(k, runtime, threads, Path(tmp), precision) for k in batch}
            timings = time_runners(runners, protocol, timer=timer, seed=start, refuse=False)
            for k in batch:
                t = timings[k.name]
                records.append({
                    "name": k.name,
                    "kind": k.kind,
                    "shape": k.params,
                    "features": k.features(),
                    "latency_ms": t.median_ms,
                    "spread": t.spread,
                    "trusted": t.spread <= protocol.max_spread,
                    "round_ms": t.round_ms,
                })
            bar.update(len(batch))
    bar.close()
    return records


def shuffled(kernels: list[Kernel], seed: int = 0) -> list[Kernel]:
    """Kernels in a seeded random order, so chunks mix kinds and sizes."""
    out = kernels[:]
    random.Random(seed).shuffle(out)
    return out
