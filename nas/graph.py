"""The genome as a list of ops, and exact costs read from it.

Every op the model in ``nas.model`` runs at batch 1 is one ``Op``, with its shapes, groups,
multiply-adds (MACs), parameters, bytes moved, its role and the ops it reads and feeds. A block's
ops are read off its plan (``nas.block``), as the model's modules are. ``count`` and the latency
predictors both read these ops, so they never disagree about what a model computes.

MAC conventions are fvcore's, so ``count`` equals ``fvcore.nn.FlopCountAnalysis`` on the built
model exactly: a projection costs tokens x in x out / groups, an attention matmul its product of
dims, LayerNorm 5 per element (fvcore's estimate), and embeddings, adds, NoNorm, softmax and
activations cost none. FLOPs are reported as 2 x MACs, the convention of the SqueezeBERT paper.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from nas.arch import ArchConfig
from nas.block import ATTENTION_BOTTLENECK, BLOCK_INPUT, LAYER_INPUT, BlockPlan, Projection, block_plan
from nas.errors import NasError

BYTES_PER_ELEMENT = 4  # fp32
LAYER_NORM_MACS_PER_ELEMENT = 5  # fvcore's norm_flop_counter with an affine transform


# What an op does in the model, beside its kind (the arithmetic): readers (the latency features,
# the kernel microbenchmarks) select ops by role, never by name.
ROLES = (
    "embedding.word", "embedding.position", "embedding.token_type", "embedding.trigram", "embedding.sum",
    "projection",  # every Linear/GroupedLinear: bottlenecks, Q/K/V, attention output, FFNs, the pooler's
    "attention.scores", "attention.scale", "attention.mask", "attention.softmax", "attention.context",
    "attention.merge_heads",
    "residual",  # the add of a skip connection
    "norm", "activation", "pooler.first_token",
)


@dataclass(frozen=True)
class Op:
    """One op at batch 1. Shapes leave out the batch axis; ``elementwise`` counts the
    non-multiply-add arithmetic (adds, norms, activations, softmax) that MACs leave out.
    ``inputs`` are the ops (or the source ``input_ids``) it reads, ``consumers`` the ops that read it."""

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
    role: str = ""
    consumers: tuple[str, ...] = ()


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
        self._ops: list[Op] = []
        self._shapes: dict[str, tuple[int, ...]] = {}

    @property
    def ops(self) -> list[Op]:
        """The ops so far, each with the ops that read it (``raw`` without: what the counter reads)."""
        consumers: dict[str, list[str]] = {}
        for op in self._ops:
            for source in op.inputs:
                consumers.setdefault(source, []).append(op.name)
        return [dataclasses.replace(op, consumers=tuple(consumers.get(op.name, ()))) for op in self._ops]

    @property
    def raw(self) -> list[Op]:
        return self._ops

    def _add(self, name: str, kind: str, role: str, inputs: tuple[str, ...], out_shape: tuple[int, ...], **costs) -> str:
        in_shapes = tuple(self._shapes.get(i, ()) for i in inputs)
        moved = sum(math.prod(s) for s in in_shapes) + math.prod(out_shape) + costs.get("params", 0)
        self._ops.append(
            Op(name, kind, inputs, out_shape, in_shapes, bytes_moved=moved * BYTES_PER_ELEMENT, role=role, **costs)
        )
        self._shapes[name] = out_shape
        return name

    def source(self, name: str, shape: tuple[int, ...]) -> str:
        self._shapes[name] = shape
        return name

    def embedding(self, name: str, role: str, ids: str, rows: int, width: int) -> str:
        return self._add(name, "embedding", role, (ids,), (self.tokens, width), params=rows * width)

    def linear(self, name: str, x: str, out_width: int, groups: int = 1) -> str:
        *lead, in_width = self._shapes[x]
        weights = in_width * out_width // groups
        macs = math.prod(lead) * weights
        return self._add(
            name, "linear", "projection", (x,), (*lead, out_width), groups=groups, macs=macs, params=weights + out_width,
            elementwise=math.prod(lead) * out_width,  # the bias add
        )

    def projection(self, prefix: str, part: Projection, x: str) -> str:
        """One part of a block's plan, named by its module path."""
        return self.linear(f"{prefix}.{part.path}", x, part.out_width, part.groups)

    def norm(self, name: str, x: str, kind: str) -> str:
        shape = self._shapes[x]
        numel = math.prod(shape)
        macs = LAYER_NORM_MACS_PER_ELEMENT * numel if kind == "layer_norm" else 0
        return self._add(name, kind, "norm", (x,), shape, macs=macs, params=2 * shape[-1], elementwise=5 * numel)

    def elementwise(self, name: str, kind: str, role: str, inputs: tuple[str, ...], per_element: int = 1) -> str:
        shape = self._shapes[inputs[0]]
        return self._add(name, kind, role, inputs, shape, elementwise=per_element * math.prod(shape))

    def matmul(self, name: str, role: str, a: str, b: str, out_shape: tuple[int, ...], inner: int) -> str:
        return self._add(name, "matmul", role, (a, b), out_shape, macs=math.prod(out_shape) * inner)

    def reshape(self, name: str, role: str, x: str, out_shape: tuple[int, ...], kind: str = "transpose") -> str:
        return self._add(name, kind, role, (x,), out_shape)

    def add_norm(self, name: str, x: str, residual: str, norm: str) -> str:
        """The residual add and the norm after a projection (``name`` is the module holding the norm)."""
        return self.norm(f"{name}.norm", self.elementwise(f"{name}.add", "add", "residual", (x, residual)), norm)


def _embedding_ops(ops: _OpList, arch: ArchConfig) -> str:
    ids = ops.source("input_ids", (ops.tokens,))
    x = ops.embedding("embeddings.word", "embedding.word", ids, arch.vocab_size, arch.embedding_size)
    if arch.trigram_input:
        x = ops._add("embeddings.trigram", "concat", "embedding.trigram", (x,), (ops.tokens, 3 * arch.embedding_size))
    if arch.embedding_projected:
        x = ops.linear("embeddings.transformation", x, arch.hidden_size)
    pos = ops.embedding("embeddings.position", "embedding.position", ids, arch.max_position_embeddings, arch.hidden_size)
    typ = ops.embedding("embeddings.token_type", "embedding.token_type", ids, arch.type_vocab_size, arch.hidden_size)
    x = ops.elementwise("embeddings.add", "add", "embedding.sum", (x, pos, typ), per_element=2)
    return ops.norm("embeddings.norm", x, arch.norm)


def _block_ops(ops: _OpList, plan: BlockPlan, x: str, prefix: str) -> str:
    """The ops of one block, part by part as ``nas.model.Block`` runs its plan."""
    p, tokens = prefix, ops.tokens
    layer_input = x
    if plan.input_bottleneck is not None:
        layer_input = ops.norm(f"{p}.input_bottleneck.norm", ops.projection(p, plan.input_bottleneck, x), plan.norm)
    sources = {BLOCK_INPUT: x, LAYER_INPUT: layer_input}
    if plan.attention_bottleneck is not None:
        shared = ops.projection(p, plan.attention_bottleneck, x)
        sources[ATTENTION_BOTTLENECK] = ops.norm(f"{p}.attention_bottleneck.norm", shared, plan.norm)
    query_key, value = sources[plan.query_key_source], sources[plan.value_source]

    heads, head_size = plan.heads, plan.head_size
    q = ops.projection(p, plan.query, query_key)
    k = ops.projection(p, plan.key, query_key)
    v = ops.projection(p, plan.value, value)
    a = f"{p}.attention.core"
    scores = ops.matmul(f"{a}.scores", "attention.scores", q, k, (heads, tokens, tokens), inner=head_size)
    scores = ops.elementwise(f"{a}.scale", "scale", "attention.scale", (scores,))
    scores = ops.elementwise(f"{a}.mask", "add", "attention.mask", (scores,))
    probs = ops.elementwise(f"{a}.softmax", "softmax", "attention.softmax", (scores,), per_element=5)
    context = ops.matmul(f"{a}.context", "attention.context", probs, v, (heads, tokens, head_size), inner=tokens)
    context = ops.reshape(f"{a}.merge_heads", "attention.merge_heads", context, (tokens, plan.query.out_width))

    h = ops.add_norm(f"{p}.attention_output", ops.projection(p, plan.attention_output, context), layer_input, plan.norm)
    for i, ffn in enumerate(plan.ffns):
        inner = ops.projection(p, ffn.intermediate, h)
        inner = ops.elementwise(f"{p}.ffns.{i}.activation", plan.activation, "activation", (inner,))
        h = ops.add_norm(f"{p}.ffns.{i}.output", ops.projection(p, ffn.output, inner), h, plan.norm)
    if plan.output_bottleneck is not None:
        h = ops.add_norm(f"{p}.output_bottleneck", ops.projection(p, plan.output_bottleneck, h), x, plan.norm)
    return h


def _pooler_ops(ops: _OpList, arch: ArchConfig, x: str) -> None:
    if arch.pooler:
        first = ops.reshape("pooler.first_token", "pooler.first_token", x, (1, arch.hidden_size), kind="slice")
        ops.elementwise("pooler.tanh", "tanh", "activation", (ops.linear("pooler.dense", first, arch.hidden_size),))


def ops(arch: ArchConfig, seq_len: int = 128) -> list[Op]:
    """Every op of the model for `arch` at batch 1, in execution order, each with its consumers."""
    _check_seq_len(arch, seq_len)
    builder, plan = _OpList(seq_len), block_plan(arch)
    x = _embedding_ops(builder, arch)
    for layer in range(arch.num_layers):
        x = _block_ops(builder, plan, x, f"layers.{layer}")
    _pooler_ops(builder, arch, x)
    return builder.ops


def parts(arch: ArchConfig, seq_len: int = 128, consumers: bool = True) -> tuple[list[Op], list[Op]]:
    """(the embeddings' and the pooler's ops, the ops of one block): every block is alike, so a
    whole genome costs the first plus ``num_layers`` times the second. ``consumers=False`` leaves
    the ops' consumers empty (the counter does not read them; filling them is most of its time)."""
    _check_seq_len(arch, seq_len)
    embed, block, pool = _OpList(seq_len), _OpList(seq_len), _OpList(seq_len)
    x = _embedding_ops(embed, arch)
    _block_ops(block, block_plan(arch), block.source(x, (seq_len, arch.hidden_size)), "layers.0")
    _pooler_ops(pool, arch, pool.source(x, (seq_len, arch.hidden_size)))
    if not consumers:
        return embed.raw + pool.raw, block.raw
    return embed.ops + pool.ops, block.ops


def count(arch: ArchConfig, seq_len: int = 128) -> Cost:
    """Exact parameters, MACs and FLOPs (= 2 x MACs) of `arch` at batch 1 and `seq_len` tokens.

    Reads the same ops as ``ops``; all layers are alike, so one block is built and counted
    ``num_layers`` times (about 1 ms per genome, hundreds of times faster than tracing with fvcore).
    """
    outer, block = parts(arch, seq_len, consumers=False)

    def total(attr: str) -> int:
        return sum(getattr(op, attr) for op in outer) + arch.num_layers * sum(getattr(op, attr) for op in block)

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
