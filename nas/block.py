"""One encoder block, described once: its parts, their widths and groups, and what each part reads.

``block_plan(arch)`` is the only place that says what a block of a genome holds. The torch modules
(``nas.model.Block``), the op list behind the exact counts and the latency features
(``nas.graph``), the parameter formulas (``ArchConfig.mha_params``/``ffn_params`` and the
space's attention/FFN balance) and the transformers bridge's weight maps all read it.

The parts, named as in the MobileBERT and SqueezeBERT papers; ``path`` is the module path inside
the block, which is also the prefix of the part's weights and the name of its op:

=========================  ==========================================================================
``input_bottleneck``       MobileBERT's input bottleneck: Linear(hidden -> W), norm. Its output is the
                           block's *layer input*; without a bottleneck the layer input is x itself.
``attention_bottleneck``   MobileBERT's shared Q/K bottleneck (``key_query_shared_bottleneck``): a
                           second Linear(hidden -> W), norm, read by the query and key projections.
``attention.query/key/     the attention's projections, grouped as in SqueezeBERT (``qkv_groups``)
value``
``attention_output``       grouped projection of the attention context, residual (the layer input), norm
``ffns.i.intermediate``,   the stacked FFNs (MobileBERT's ``num_feedforward_networks``), each a grouped
``ffns.i.output``          W -> F projection, activation, grouped F -> W projection, residual, norm
``output_bottleneck``      MobileBERT's output bottleneck: Linear(W -> hidden), residual (x), norm
=========================  ==========================================================================

W is the block width: ``intra_bottleneck_size`` when there is one, else ``hidden_size``.

To add an attention-input variant, add one entry to ``ATTENTION_SOURCES``; the genome's field, the
modules, the ops, the counts and the features follow from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # this file travels in exported model folders, which hold no `nas` package
    from .arch import ArchConfig

# The tensors a block's attention can read: the block input x, the layer input (the input
# bottleneck's output, or x without one), and the shared Q/K bottleneck's output.
BLOCK_INPUT, LAYER_INPUT, ATTENTION_BOTTLENECK = "block_input", "layer_input", "attention_bottleneck"

# attention_input -> (what Q and K read, what V reads): MobileBERT's three options.
ATTENTION_SOURCES: dict[str, tuple[str, str]] = {
    "hidden": (BLOCK_INPUT, BLOCK_INPUT),  # BERT, SqueezeBERT
    "bottleneck": (LAYER_INPUT, LAYER_INPUT),  # MobileBERT's use_bottleneck_attention (MobileBERT-TINY)
    "shared_bottleneck": (ATTENTION_BOTTLENECK, BLOCK_INPUT),  # MobileBERT's key_query_shared_bottleneck
}


def needs_bottleneck(attention_input: str) -> bool:
    """Whether the variant reads a tensor only a bottlenecked block has."""
    return any(source != BLOCK_INPUT for source in ATTENTION_SOURCES[attention_input])


def source_width(arch: "ArchConfig", source: str) -> int:
    """The width of one of the tensors the attention can read."""
    if source == BLOCK_INPUT or (source == LAYER_INPUT and arch.intra_bottleneck_size is None):
        return arch.hidden_size
    return arch.block_width


@dataclass(frozen=True)
class Projection:
    """One position-wise projection with bias: ``in_width -> out_width`` in ``groups`` groups."""

    path: str  # the module path inside the block (weights ``<path>.weight``/``.bias``, op name)
    in_width: int
    out_width: int
    groups: int = 1

    @property
    def params(self) -> int:
        return self.in_width * self.out_width // self.groups + self.out_width


@dataclass(frozen=True)
class FeedForward:
    """One FFN of the stack: act(intermediate), then output, residual and norm."""

    intermediate: Projection
    output: Projection


@dataclass(frozen=True)
class BlockPlan:
    """Every part of one block of a genome, with the tensors the attention reads."""

    hidden: int
    width: int  # W: the block width
    heads: int
    norm: str
    activation: str
    input_bottleneck: Projection | None
    attention_bottleneck: Projection | None
    query_key_source: str
    value_source: str
    query: Projection
    key: Projection
    value: Projection
    attention_output: Projection
    ffns: tuple[FeedForward, ...]
    output_bottleneck: Projection | None

    @property
    def head_size(self) -> int:
        return self.query.out_width // self.heads

    @property
    def attention_projections(self) -> tuple[Projection, ...]:
        """Q, K, V and the attention output: what MobileBERT's balance counts as the attention."""
        return self.query, self.key, self.value, self.attention_output

    @property
    def ffn_projections(self) -> tuple[Projection, ...]:
        return tuple(p for ffn in self.ffns for p in (ffn.intermediate, ffn.output))

    @property
    def projections(self) -> tuple[Projection, ...]:
        """Every projection of the block, in execution order."""
        before = tuple(p for p in (self.input_bottleneck, self.attention_bottleneck) if p is not None)
        after = (self.output_bottleneck,) if self.output_bottleneck is not None else ()
        return before + self.attention_projections + self.ffn_projections + after


def feed_forward(arch: "ArchConfig", index: int, intermediate_size: int | None = None) -> FeedForward:
    """FFN ``index`` of the stack (``intermediate_size`` overrides the genome's, for the balance solve)."""
    width, inner = arch.block_width, intermediate_size or arch.intermediate_size
    return FeedForward(
        Projection(f"ffns.{index}.intermediate", width, inner, arch.intermediate_groups),
        Projection(f"ffns.{index}.output.dense", inner, width, arch.output_groups),
    )


@lru_cache(maxsize=4096)  # the counter, the parameter formulas and the model each ask for it; genomes are frozen
def block_plan(arch: "ArchConfig") -> BlockPlan:
    """The parts of one block of ``arch`` (all blocks of a genome are alike)."""
    hidden, width = arch.hidden_size, arch.block_width
    bottlenecked = arch.intra_bottleneck_size is not None
    query_key_source, value_source = ATTENTION_SOURCES[arch.attention_input]
    qk_in, v_in = source_width(arch, query_key_source), source_width(arch, value_source)
    attention, groups = arch.attention_width, arch.qkv_groups
    return BlockPlan(
        hidden=hidden,
        width=width,
        heads=arch.num_attention_heads,
        norm=arch.norm,
        activation=arch.activation,
        input_bottleneck=Projection("input_bottleneck.dense", hidden, width) if bottlenecked else None,
        attention_bottleneck=(
            Projection("attention_bottleneck.dense", hidden, width) if ATTENTION_BOTTLENECK in (query_key_source, value_source) else None
        ),
        query_key_source=query_key_source,
        value_source=value_source,
        query=Projection("attention.query", qk_in, attention, groups),
        key=Projection("attention.key", qk_in, attention, groups),
        value=Projection("attention.value", v_in, attention, groups),
        attention_output=Projection("attention_output.dense", attention, width, arch.post_attention_groups),
        ffns=tuple(feed_forward(arch, i) for i in range(arch.num_ffn)),
        output_bottleneck=Projection("output_bottleneck.dense", width, hidden) if bottlenecked else None,
    )
