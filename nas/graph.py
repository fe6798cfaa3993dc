"""The genome as a graph of ops, and exact costs read from it.

Every op the model in ``nas.model`` runs at batch 1 is one node, with its shapes, groups,
multiply-adds (MACs), parameters and bytes moved. ``count`` and the latency predictors both read
these ops, so they never disagree about what a model computes.

MAC conventions are fvcore's, so ``count`` equals ``fvcore.nn.FlopCountAnalysis`` on the built
model exactly: a projection costs tokens x in x out / groups, an attention matmul its product of
dims, LayerNorm 5 per element (fvcore's estimate), and embeddings, adds, NoNorm, softmax and
activations cost none. FLOPs are reported as 2 x MACs, the convention of the SqueezeBERT paper.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import networkx as nx

from nas.arch import ArchConfig
from nas.errors import NasError

BYTES_PER_ELEMENT = 4  # fp32
LAYER_NORM_MACS_PER_ELEMENT = 5  # fvcore's norm_flop_counter with an affine transform


@dataclass(frozen=True)
class Op:
    """One op at batch 1. Shapes leave out the batch axis; ``elementwise`` counts the
    non-multiply-add arithmetic (adds, norms, activations, softmax) that MACs leave out."""

    name: str
    kind: str
    inputs: tuple[str, ...]
    out_shape: tuple[int, ...]
    in_shapes: tuple[tuple[int, ...], ...] = ()
    groups: int = 1
    macs: int = 0
    params: int = 0
    elementwise: int = 0
    bytes_moved: int = 0


@dataclass(frozen=True)
class Cost:
    """Exact costs of a genome at one sequence length, batch 1.

    ``flops`` is 2 x ``macs`` (one multiply-add = two floating-point operations).
    """

    params: int
    macs: int
    seq_len: int
    elementwise: int = field(default=0, compare=False)

    @property
    def flops(self) -> int:
        return 2 * self.macs


class _OpList:
    """Appends ops with their costs worked out from shapes."""

    def __init__(self, seq_len: int) -> None:
        self.tokens = seq_len
        self.ops: list[Op] = []
        self._shapes: dict[str, tuple[int, ...]] = {}

    def _add(self, name: str, kind: str, inputs: tuple[str, ...], out_shape: tuple[int, ...], **costs) -> str:
        in_shapes = tuple(self._shapes.get(i, ()) for i in inputs)
        moved = sum(math.prod(s) for s in in_shapes) + math.prod(out_shape) + costs.get("params", 0)
        self.ops.append(
            Op(name, kind, inputs, out_shape, in_shapes, bytes_moved=moved * BYTES_PER_ELEMENT, **costs)
        )
        self._shapes[name] = out_shape
        return name

    def source(self, name: str, shape: tuple[int, ...]) -> str:
        self._shapes[name] = shape
        return name

    def embedding(self, name: str, ids: str, rows: int, width: int, tokens: int) -> str:
        return self._add(name, "embedding", (ids,), (tokens, width), params=rows * width)

    def linear(self, name: str, x: str, out_width: int, groups: int = 1) -> str:
        *lead, in_width = self._shapes[x]
        weights = in_width * out_width // groups
        macs = math.prod(lead) * weights
        return self._add(
            name, "linear", (x,), (*lead, out_width), groups=groups, macs=macs, params=weights + out_width,
            elementwise=math.prod(lead) * out_width,  # the bias add
        )

    def norm(self, name: str, x: str, kind: str) -> str:
        shape = self._shapes[x]
        numel = math.prod(shape)
        macs = LAYER_NORM_MACS_PER_ELEMENT * numel if kind == "layer_norm" else 0
        return self._add(name, kind, (x,), shape, macs=macs, params=2 * shape[-1], elementwise=5 * numel)

    def elementwise(self, name: str, kind: str, inputs: tuple[str, ...], per_element: int = 1) -> str:
        shape = self._shapes[inputs[0]]
        return self._add(name, kind, inputs, shape, elementwise=per_element * math.prod(shape))

    def matmul(self, name: str, a: str, b: str, out_shape: tuple[int, ...], inner: int) -> str:
        return self._add(name, "matmul", (a, b), out_shape, macs=math.prod(out_shape) * inner)

    def reshape(self, name: str, x: str, out_shape: tuple[int, ...], kind: str = "transpose") -> str:
        return self._add(name, kind, (x,), out_shape)


def _embedding_ops(ops: _OpList, arch: ArchConfig) -> str:
    tokens = ops.tokens
    ids = ops.source("input_ids", (tokens,))
    x = ops.embedding("embeddings.word", ids, arch.vocab_size, arch.embedding_size, tokens)
    if arch.trigram_input:
        x = ops._add("embeddings.trigram", "concat", (x,), (tokens, 3 * arch.embedding_size))
    if arch.embedding_projected:
        x = ops.linear("embeddings.transformation", x, arch.hidden_size)
    pos = ops.embedding("embeddings.position", ids, arch.max_position_embeddings, arch.hidden_size, tokens)
    typ = ops.embedding("embeddings.token_type", ids, arch.type_vocab_size, arch.hidden_size, tokens)
    x = ops.elementwise("embeddings.add", "add", (x, pos, typ), per_element=2)
    return ops.norm("embeddings.norm", x, arch.norm)


def _block_ops(ops: _OpList, arch: ArchConfig, x: str, prefix: str) -> str:
    tokens, heads, head_size = ops.tokens, arch.num_attention_heads, arch.head_size
    p = prefix
    bottlenecked = arch.intra_bottleneck_size is not None
    layer_input = x
    if bottlenecked:
        layer_input = ops.norm(f"{p}.input_bottleneck.norm", ops.linear(f"{p}.input_bottleneck", x, arch.block_width), arch.norm)
    if arch.attention_input == "hidden":
        query_key, value = x, x
    elif arch.attention_input == "bottleneck":
        query_key, value = layer_input, layer_input
    else:
        shared = ops.linear(f"{p}.attention_bottleneck", x, arch.block_width)
        query_key, value = ops.norm(f"{p}.attention_bottleneck.norm", shared, arch.norm), x

    width, g = arch.attention_width, arch.qkv_groups
    q = ops.linear(f"{p}.attention.query", query_key, width, g)
    k = ops.linear(f"{p}.attention.key", query_key, width, g)
    v = ops.linear(f"{p}.attention.value", value, width, g)
    scores = ops.matmul(f"{p}.attention.scores", q, k, (heads, tokens, tokens), inner=head_size)
    scores = ops.elementwise(f"{p}.attention.scale", "scale", (scores,))
    scores = ops.elementwise(f"{p}.attention.mask", "add", (scores,))
    probs = ops.elementwise(f"{p}.attention.softmax", "softmax", (scores,), per_element=5)
    context = ops.matmul(f"{p}.attention.context", probs, v, (heads, tokens, head_size), inner=tokens)
    context = ops.reshape(f"{p}.attention.merge_heads", context, (tokens, width))

    h = ops.linear(f"{p}.attention_output", context, arch.block_width, arch.post_attention_groups)
    h = ops.elementwise(f"{p}.attention_output.add", "add", (h, layer_input))
    h = ops.norm(f"{p}.attention_output.norm", h, arch.norm)
    for i in range(arch.num_ffn):
        f = f"{p}.ffn{i}"
        inner = ops.linear(f"{f}.intermediate", h, arch.intermediate_size, arch.intermediate_groups)
        inner = ops.elementwise(f"{f}.{arch.activation}", arch.activation, (inner,))
        out = ops.linear(f"{f}.output", inner, arch.block_width, arch.output_groups)
        h = ops.norm(f"{f}.output.norm", ops.elementwise(f"{f}.output.add", "add", (out, h)), arch.norm)
    if bottlenecked:
        out = ops.linear(f"{p}.output_bottleneck", h, arch.hidden_size)
        h = ops.norm(f"{p}.output_bottleneck.norm", ops.elementwise(f"{p}.output_bottleneck.add", "add", (out, x)), arch.norm)
    return h


def _pooler_ops(ops: _OpList, arch: ArchConfig, x: str) -> None:
    if arch.pooler:
        first = ops.reshape("pooler.first_token", x, (1, arch.hidden_size), kind="slice")
        ops.elementwise("pooler.tanh", "tanh", (ops.linear("pooler.dense", first, arch.hidden_size),))


def ops(arch: ArchConfig, seq_len: int = 128) -> list[Op]:
    """Every op of the model for `arch` at batch 1, in execution order."""
    _check_seq_len(arch, seq_len)
    builder = _OpList(seq_len)
    x = _embedding_ops(builder, arch)
    for layer in range(arch.num_layers):
        x = _block_ops(builder, arch, x, f"layers.{layer}")
    _pooler_ops(builder, arch, x)
    return builder.ops


def op_graph(arch: ArchConfig, seq_len: int = 128) -> nx.DiGraph:
    """The genome as a DiGraph of ops: node attributes are the fields of ``Op``; edges carry data."""
    graph = nx.DiGraph(arch_id=arch.id, seq_len=seq_len)
    for op in ops(arch, seq_len):
        graph.add_node(op.name, **{k: v for k, v in op.__dict__.items() if k not in ("name", "inputs")})
        for source in op.inputs:
            graph.add_edge(source, op.name)
    graph.nodes["input_ids"].setdefault("kind", "input")
    return graph


def count(arch: ArchConfig, seq_len: int = 128) -> Cost:
    """Exact parameters, MACs and FLOPs (= 2 x MACs) of `arch` at batch 1 and `seq_len` tokens.

    Reads the same ops as ``op_graph``; all layers are alike, so one block is built and counted
    ``num_layers`` times (about 1 ms per genome, hundreds of times faster than tracing with fvcore).
    """
    _check_seq_len(arch, seq_len)
    embed, block, pool = _OpList(seq_len), _OpList(seq_len), _OpList(seq_len)
    x = _embedding_ops(embed, arch)
    _block_ops(block, arch, block.source(x, (seq_len, arch.hidden_size)), "layers.0")
    _pooler_ops(pool, arch, pool.source(x, (seq_len, arch.hidden_size)))

    def total(attr: str) -> int:
        per_block = sum(getattr(op, attr) for op in block.ops)
        return sum(getattr(op, attr) for op in embed.ops + pool.ops) + arch.num_layers * per_block

    return Cost(params=total("params"), macs=total("macs"), seq_len=seq_len, elementwise=total("elementwise"))


def _check_seq_len(arch: ArchConfig, seq_len: int) -> None:
    if not isinstance(seq_len, int) or isinstance(seq_len, bool) or not 1 <= seq_len <= arch.max_position_embeddings:
        raise NasError(f"seq_len={seq_len!r} must be an integer in 1..max_position_embeddings ({arch.max_position_embeddings})")


def fvcore_macs(model, seq_len: int = 128) -> int:
    """fvcore's multiply-add count of a built model at batch 1: the reference ``count`` must equal.

    fvcore traces with jit, which drops work whose result is unused, so the trace returns the
    pooler's output beside the last hidden state. Build the model with eager attention: fvcore
    does not count scaled_dot_product_attention.
    """
    import logging
    import warnings

    import torch

    logging.getLogger("fvcore").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fvcore.nn import FlopCountAnalysis

    class _BothOutputs(torch.nn.Module):
        def __init__(self, encoder):
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids, attention_mask):
            out = self.encoder(input_ids, attention_mask)
            return out.last_hidden_state, out.pooler_output

    ids = torch.randint(0, model.arch.vocab_size, (1, seq_len))
    mask = torch.ones(1, seq_len, dtype=torch.long)
    analysis = FlopCountAnalysis(_BothOutputs(model), (ids, mask))
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    return int(analysis.total())
