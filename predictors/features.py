"""Structural features of a genome, read from its ops (``nas.ops``) by their role.

A latency predictor here is linear in these features with non-negative coefficients: the time of
an op kind is a sum of physically meaningful terms (multiply-adds, elements read and written,
weights streamed, a fixed cost per op or per group), each with its own price on a given device.
A GEMM of M x K by K x N costs about ``macs * a + M*K * b + M*N * c + K*N * d + e``: the input and
output terms are the packing and narrow-tile losses that make thin projections slower per MAC
than wide ones, the weight term is streaming weights that do not stay in cache.

The same feature map applies to one op (a kernel microbenchmark) and to a whole genome (the sum
over its ops), so kernel and end-to-end measurements can be fitted together in one least squares.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Iterable

import numpy as np

from nas.arch import ArchConfig
from nas.graph import Op, parts

# Bump when the meaning of any feature changes: a predictor file records the version it was
# fitted with and refuses to load under another.
FEATURE_VERSION = 1

FEATURES: tuple[str, ...] = (
    # dense projections (nn.Linear, groups = 1): MatMul + bias in ONNX
    "linear.macs",
    "linear.in_elems",
    "linear.out_elems",
    "linear.count",
    # grouped projections (SqueezeBERT): Reshape/Transpose, batched MatMul, Transpose/Reshape, bias
    "grouped_linear.macs",
    "grouped_linear.in_elems",
    "grouped_linear.out_elems",
    "grouped_linear.groups",
    "grouped_linear.count",
    # weights of all projections (read once per inference; beyond cache they stream from memory)
    "linear.weights",
    # attention: Q.K^T (inner dim = head size) and P.V (inner dim = tokens), per head
    "attention.scores_macs",
    "attention.context_macs",
    "attention.heads",
    # softmax with its scale and mask add, over (heads, T, T)
    "attention.prob_elems",
    # head split and merge transposes of Q, K, V and the context
    "attention.transpose_elems",
    "attention.count",
    "layer_norm.elems",
    "layer_norm.count",
    "no_norm.elems",
    "no_norm.count",
    "gelu.elems",
    "relu.elems",
    # residual adds that feed a LayerNorm (runtimes fuse them: SkipLayerNorm) and the others
    "add_into_layer_norm.elems",
    "add.elems",
    "add.count",
    "embedding.elems",
    "embedding.count",
    "trigram.elems",
    # every op of the graph: dispatch overhead
    "op.count",
    # the fixed cost of one inference call (input binding, output copies, the pooler's tiny ops)
    "constant",
)
INDEX = {name: i for i, name in enumerate(FEATURES)}

# Features grouped by the kind of work they price, for phone profiles that scale host costs with
# only a few free parameters (see predictors.phones).
GROUPS: dict[str, tuple[str, ...]] = {
    "compute": tuple(
        f for f in FEATURES if f.startswith(("linear.", "grouped_linear.", "attention.scores", "attention.context"))
    ),
    "norm_act": ("layer_norm.elems", "layer_norm.count", "gelu.elems", "add_into_layer_norm.elems"),
}
GROUPS["memory_overhead"] = tuple(f for f in FEATURES if f not in GROUPS["compute"] + GROUPS["norm_act"])


def _numel(shape: Iterable[int]) -> int:
    return math.prod(shape)


def op_features(op: Op, feeds_layer_norm: bool = False) -> dict[str, float]:
    """The feature terms of one op; ``feeds_layer_norm`` marks an add whose result a LayerNorm
    reads (runtimes fuse the two)."""
    out = _numel(op.out_shape)
    f: dict[str, float] = {"op.count": 1.0}
    kind, role = op.kind, op.role
    if role == "projection":
        in_elems = _numel(op.in_shapes[0])
        prefix = "linear" if op.groups == 1 else "grouped_linear"
        f[f"{prefix}.macs"] = op.macs
        f[f"{prefix}.in_elems"] = in_elems
        f[f"{prefix}.out_elems"] = out
        f[f"{prefix}.count"] = 1.0
        if op.groups > 1:
            f["grouped_linear.groups"] = op.groups
        f["linear.weights"] = op.params - op.out_shape[-1]  # weights without the bias
    elif role == "attention.scores":
        f["attention.scores_macs"] = op.macs
        f["attention.heads"] = op.out_shape[0]
        f["attention.count"] = 1.0
        # Q, K and V are split into heads before the scores (3 transposes of T x W)
        f["attention.transpose_elems"] = 3 * _numel(op.in_shapes[0])
    elif role == "attention.context":
        f["attention.context_macs"] = op.macs
    elif role in ("attention.scale", "attention.mask", "attention.softmax"):
        f["attention.prob_elems"] = out
    elif role == "attention.merge_heads":
        f["attention.transpose_elems"] = out
    elif role == "norm":
        f[f"{kind}.elems"] = out
        f[f"{kind}.count"] = 1.0
    elif role == "activation" and kind in ("gelu", "relu"):
        f[f"{kind}.elems"] = out
    elif kind == "add":  # residual adds and the embeddings' sum
        terms = out * (len(op.inputs) - 1) if len(op.inputs) > 1 else out
        f["add_into_layer_norm.elems" if feeds_layer_norm else "add.elems"] = terms
        f["add.count"] = 1.0
    elif kind == "embedding":
        f["embedding.elems"] = out
        f["embedding.count"] = 1.0
    elif role == "embedding.trigram":
        f["trigram.elems"] = out
    # the pooler's first-token slice and tanh are a few hundred elements: priced by op.count and constant
    return f


def features_of_ops(op_list: list[Op]) -> np.ndarray:
    """Sum of the feature terms of `op_list` (no constant term); an add counts as fused into a
    LayerNorm only when that LayerNorm is in `op_list` too."""
    kinds = {op.name: op.kind for op in op_list}
    vector = np.zeros(len(FEATURES))
    for op in op_list:
        feeds_layer_norm = any(kinds.get(c) == "layer_norm" for c in op.consumers)
        for name, value in op_features(op, feeds_layer_norm).items():
            vector[INDEX[name]] += value
    return vector


@lru_cache(maxsize=8192)
def _one_layer_features(one_layer: ArchConfig, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings + pooler, one block) feature vectors of a one-layer encoder."""
    outer, block = parts(one_layer, seq_len)
    return features_of_ops(outer), features_of_ops(block)


@lru_cache(maxsize=8192)
def _genome_features(arch: ArchConfig, seq_len: int) -> tuple[float, ...]:
    # All layers are alike: the ops of a one-layer encoder give the embeddings, one block and the
    # pooler; the block's terms are multiplied by the depth. Genomes that differ only in depth
    # share the one-layer work.
    rest, block = _one_layer_features(arch.replace(num_layers=1), seq_len)
    vector = rest + arch.num_layers * block
    vector[INDEX["constant"]] = 1.0
    return tuple(float(v) for v in vector)


def genome_features(arch: ArchConfig, seq_len: int = 128) -> np.ndarray:
    """The feature vector of a whole genome at batch 1 and `seq_len` tokens (constant term = 1)."""
    return np.array(_genome_features(arch, seq_len))
