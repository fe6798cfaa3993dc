"""One torch module tree for every genome: BERT, SqueezeBERT and MobileBERT are settings of it.

Read top to bottom: the projections and norms, attention, one block, the embeddings, the encoder.
Tensors are (B, T, C) throughout (batch, tokens, channels); attention is (B, nh, T, hs).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

# Relative imports only: this file travels inside exported model folders as transformers remote
# code (nas/modeling_nas.py), where only torch and transformers are installed.
from .arch import ArchConfig
from .block import ATTENTION_BOTTLENECK, BLOCK_INPUT, LAYER_INPUT, BlockPlan, Projection, block_plan

ATTENTION_IMPLEMENTATIONS = ("eager", "sdpa")


class GroupedLinear(nn.Module):
    """A position-wise projection split into `groups` independent blocks.

    SqueezeBERT's grouped kernel-1 convolution: group g maps input channels
    [g*in/G, (g+1)*in/G) to output channels [g*out/G, (g+1)*out/G). The weight is stored as
    (out, in/G), the layout of both nn.Linear (G=1) and nn.Conv1d without its kernel axis, so
    weights port 1:1 from either.
    """

    def __init__(self, in_features: int, out_features: int, groups: int = 1) -> None:
        super().__init__()
        self.in_features, self.out_features, self.groups = in_features, out_features, groups
        self.weight = nn.Parameter(torch.empty(out_features, in_features // groups))
        self.bias = nn.Parameter(torch.zeros(out_features))
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.groups == 1:
            return F.linear(x, self.weight, self.bias)
        out = ungroup(grouped_matmul(to_groups(x, self.groups), self.weight, self.groups), x.shape[:-1])
        return out.add_(self.bias)  # `out` is a fresh reordered copy: add the bias in place

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, groups={self.groups}"


def to_groups(x: torch.Tensor, groups: int) -> torch.Tensor:
    """(..., in) -> (G, N, in/G), a view: group g holds channels [g*in/G, (g+1)*in/G)."""
    return x.reshape(-1, groups, x.shape[-1] // groups).transpose(0, 1)


def grouped_matmul(xg: torch.Tensor, weight: torch.Tensor, groups: int) -> torch.Tensor:
    """Group-major input (G, N, in/G) times a grouped weight (out, in/G): (G, N, out/G), no bias.

    One batched matmul over the groups: fvcore counts a bmm exactly, and on CPU it matched or beat
    einsum, per-group F.linear and a kernel-1 conv1d.
    """
    wg = weight.view(groups, weight.shape[0] // groups, -1).transpose(1, 2)  # (G, in/G, out/G)
    return torch.bmm(xg, wg)


def ungroup(y: torch.Tensor, lead: torch.Size) -> torch.Tensor:
    """(G, N, out/G) -> (*lead, out), channels back in order: group g at [g*out/G, (g+1)*out/G)."""
    return y.transpose(0, 1).reshape(*lead, -1)


class NoNorm(nn.Module):
    """MobileBERT's replacement for LayerNorm: an elementwise affine map, x * w + b."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))
        self.bias = nn.Parameter(torch.zeros(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.bias, x, self.weight)


def make_norm(kind: str, width: int) -> nn.Module:
    return nn.LayerNorm(width, eps=1e-12) if kind == "layer_norm" else NoNorm(width)


def make_activation(kind: str) -> nn.Module:
    return nn.GELU() if kind == "gelu" else nn.ReLU()


class Bottleneck(nn.Module):
    """MobileBERT's bottleneck: Linear(hidden -> intra) then norm, no residual."""

    def __init__(self, projection: Projection, norm: str) -> None:
        super().__init__()
        self.dense = nn.Linear(projection.in_width, projection.out_width)
        self.norm = make_norm(norm, projection.out_width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.dense(x))


class ProjectAddNorm(nn.Module):
    """Projection, dropout, residual add, norm: the post-attention, FFN-output and output-bottleneck step."""

    def __init__(self, projection: Projection, norm: str, dropout: float) -> None:
        super().__init__()
        self.dense = GroupedLinear(projection.in_width, projection.out_width, projection.groups)
        self.dropout = nn.Dropout(dropout)
        self.norm = make_norm(norm, projection.out_width)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.add_norm(self.dense(x), residual)

    def add_norm(self, projected: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """The step after the projection, for callers that computed ``dense(x)`` themselves."""
        return self.norm(self.dropout(projected) + residual)


class AttentionCore(nn.Module):
    """Scaled dot-product attention from projected Q, K, V (B, T, W): split heads, scores, softmax,
    context, merge heads.

    With ``implementation="eager"`` the two attention matmuls are explicit ``torch.matmul`` calls,
    which FLOP counters (fvcore, torch's FlopCounterMode) see; "sdpa" is faster for training but
    invisible to them and cannot return attention maps.
    """

    def __init__(self, num_heads: int, head_size: int, implementation: str = "eager", dropout: float = 0.0) -> None:
        super().__init__()
        self.num_heads, self.head_size = num_heads, head_size
        self.implementation = implementation
        self.dropout = nn.Dropout(dropout)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, _ = x.shape
        return x.view(batch, tokens, self.num_heads, self.head_size).transpose(1, 2)  # (B, nh, T, hs)

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, output_attentions: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        q, k, v = self._heads(q), self._heads(k), self._heads(v)
        if self.implementation == "sdpa" and not output_attentions:
            p = self.dropout.p if self.training else 0.0
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
            probs = None
        else:
            # Scaling q (T x hs) rather than the scores (T x T) is the same product, with fewer multiplies.
            scores = torch.matmul(q * (1.0 / math.sqrt(self.head_size)), k.transpose(-1, -2))  # (B, nh, T, T)
            if mask is not None:
                scores = scores + mask
            probs = scores.softmax(dim=-1)
            context = torch.matmul(self.dropout(probs), v)  # (B, nh, T, hs)
        batch, _, tokens, _ = context.shape
        context = context.transpose(1, 2).reshape(batch, tokens, self.num_heads * self.head_size)
        return context, probs


class MultiHeadAttention(nn.Module):
    """The grouped Q/K/V projections of a block (SqueezeBERT's ``qkv_groups``), then the attention core."""

    def __init__(self, plan: BlockPlan, implementation: str, dropout: float) -> None:
        super().__init__()
        self.query, self.key, self.value = (GroupedLinear(p.in_width, p.out_width, p.groups) for p in (plan.query, plan.key, plan.value))
        self.core = AttentionCore(plan.heads, plan.head_size, implementation, dropout)

    def forward(
        self,
        query_input: torch.Tensor,
        key_input: torch.Tensor,
        value_input: torch.Tensor,
        mask: torch.Tensor | None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.core(self.query(query_input), self.key(key_input), self.value(value_input), mask, output_attentions)


class FeedForward(nn.Module):
    """One FFN of the stack: act(W -> F), then (F -> W), residual, norm."""

    def __init__(self, plan: BlockPlan, index: int, dropout: float) -> None:
        super().__init__()
        part = plan.ffns[index]
        self.intermediate = GroupedLinear(part.intermediate.in_width, part.intermediate.out_width, part.intermediate.groups)
        self.activation = make_activation(plan.activation)
        self.output = ProjectAddNorm(part.output, plan.norm, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        groups = self.intermediate.groups
        if groups == 1 or self.output.dense.groups != groups:
            return self.output(self.activation(self.intermediate(x)), x)
        # Same groups in and out (SqueezeBERT): group g of the intermediate feeds exactly group g of
        # the output projection, so the wide activation stays group-major (G, N, F/G) in between
        # instead of being reordered to (N, F) and back.
        inner = grouped_matmul(to_groups(x, groups), self.intermediate.weight, groups)
        inner = self.activation(inner.add_(self.intermediate.bias.view(groups, 1, -1)))
        out = ungroup(grouped_matmul(inner, self.output.dense.weight, groups), x.shape[:-1])
        return self.output.add_norm(out.add_(self.output.dense.bias), x)


class Block(nn.Module):
    """One encoder layer, built from its plan (``nas.block``): optional input bottleneck, attention,
    stacked FFNs, optional output bottleneck."""

    def __init__(self, arch: ArchConfig, attention_implementation: str, dropout: float) -> None:
        super().__init__()
        plan = block_plan(arch)
        self.query_key_source, self.value_source = plan.query_key_source, plan.value_source
        self.input_bottleneck = Bottleneck(plan.input_bottleneck, plan.norm) if plan.input_bottleneck else None
        self.attention_bottleneck = Bottleneck(plan.attention_bottleneck, plan.norm) if plan.attention_bottleneck else None
        self.attention = MultiHeadAttention(plan, attention_implementation, dropout)
        self.attention_output = ProjectAddNorm(plan.attention_output, plan.norm, dropout)
        self.ffns = nn.ModuleList(FeedForward(plan, i, dropout) for i in range(len(plan.ffns)))
        self.output_bottleneck = ProjectAddNorm(plan.output_bottleneck, plan.norm, dropout) if plan.output_bottleneck else None

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None, output_attentions: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        layer_input = self.input_bottleneck(x) if self.input_bottleneck is not None else x
        sources = {BLOCK_INPUT: x, LAYER_INPUT: layer_input}
        if self.attention_bottleneck is not None:
            sources[ATTENTION_BOTTLENECK] = self.attention_bottleneck(x)
        query_key, value = sources[self.query_key_source], sources[self.value_source]
        context, probs = self.attention(query_key, query_key, value, mask, output_attentions)
        h = self.attention_output(context, layer_input)
        for ffn in self.ffns:
            h = ffn(h)
        if self.output_bottleneck is not None:
            h = self.output_bottleneck(h, x)
        return h, probs


class Embeddings(nn.Module):
    """Token (optionally factorised and trigram), position and token-type embeddings, then norm."""

    def __init__(self, arch: ArchConfig, dropout: float) -> None:
        super().__init__()
        self.trigram_input = arch.trigram_input
        self.word_embeddings = nn.Embedding(arch.vocab_size, arch.embedding_size, padding_idx=0)
        self.position_embeddings = nn.Embedding(arch.max_position_embeddings, arch.hidden_size)
        self.token_type_embeddings = nn.Embedding(arch.type_vocab_size, arch.hidden_size)
        fan_in = arch.embedding_size * (3 if arch.trigram_input else 1)
        self.embedding_transformation = nn.Linear(fan_in, arch.hidden_size) if arch.embedding_projected else None
        self.norm = make_norm(arch.norm, arch.hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("position_ids", torch.arange(arch.max_position_embeddings), persistent=False)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        tokens = self.word_embeddings(input_ids)  # (B, T, E)
        if self.trigram_input:
            tokens = trigram(tokens)  # (B, T, 3E)
        if self.embedding_transformation is not None:
            tokens = self.embedding_transformation(tokens)  # (B, T, H)
        positions = self.position_embeddings(self.position_ids[: input_ids.shape[1]])
        embeddings = tokens + positions + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.norm(embeddings))


def trigram(tokens: torch.Tensor) -> torch.Tensor:
    """MobileBERT's trigram input, (B, T, E) -> (B, T, 3E): the next, current and previous token's
    embeddings side by side, zero past either end."""
    return torch.cat([F.pad(tokens[:, 1:], (0, 0, 0, 1)), tokens, F.pad(tokens[:, :-1], (0, 0, 1, 0))], dim=2)


class Pooler(nn.Module):
    """BERT's pooler: tanh(Linear) of the first token."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(hidden_states[:, 0]))


class EncoderOutput(NamedTuple):
    last_hidden_state: torch.Tensor  # (B, T, hidden)
    pooler_output: torch.Tensor  # (B, hidden); the first token's state when the genome has no pooler
    hidden_states: tuple[torch.Tensor, ...]  # embeddings, then each layer's output, when asked for
    attentions: tuple[torch.Tensor, ...]  # each layer's (B, nh, T, T) probabilities, when asked for


class Encoder(nn.Module):
    """The whole encoder for one genome; ``model.arch`` is the genome it was built from."""

    def __init__(self, arch: ArchConfig, attention_implementation: str = "eager", dropout: float = 0.0) -> None:
        super().__init__()
        if attention_implementation not in ATTENTION_IMPLEMENTATIONS:
            raise ValueError(f"attention_implementation must be one of {ATTENTION_IMPLEMENTATIONS}")
        self.arch = arch
        self.embeddings = Embeddings(arch, dropout)
        self.layers = nn.ModuleList(Block(arch, attention_implementation, dropout) for _ in range(arch.num_layers))
        self.pooler = Pooler(arch.hidden_size) if arch.pooler else None

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> EncoderOutput:
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        mask = None
        if attention_mask is not None and _has_padding(attention_mask):
            # (B, T) of 1 = attend, 0 = padding -> additive (B, 1, 1, T)
            dtype = self.embeddings.position_embeddings.weight.dtype
            keep = attention_mask[:, None, None, :].to(dtype)
            mask = (1.0 - keep) * torch.finfo(dtype).min
        h = self.embeddings(input_ids, token_type_ids)
        hidden_states, attentions = [h], []
        for layer in self.layers:
            h, probs = layer(h, mask, output_attentions)
            hidden_states.append(h)
            if output_attentions:
                attentions.append(probs)
        pooled = self.pooler(h) if self.pooler is not None else h[:, 0]
        return EncoderOutput(
            last_hidden_state=h,
            pooler_output=pooled,
            hidden_states=tuple(hidden_states) if output_hidden_states else (),
            attentions=tuple(attentions),
        )


def _has_padding(attention_mask: torch.Tensor) -> bool:
    """Whether any position is masked. Without padding the mask is skipped (an add over every
    attention score, and SDPA's faster unmasked kernel). A traced or compiled graph always keeps
    the mask, so it stays right for inputs with padding."""
    if torch.jit.is_tracing() or torch.compiler.is_compiling():
        return True
    return not bool(attention_mask.all())


def build_model(arch: ArchConfig, attention_implementation: str = "eager", dropout: float = 0.0) -> Encoder:
    """Build the torch encoder for a genome (random init, std 0.02 like BERT).

    ``attention_implementation="eager"`` keeps attention matmuls visible to FLOP counters and can
    return attention maps; "sdpa" trains faster. Dropout is a training setting, not part of the genome.
    """
    model = Encoder(arch, attention_implementation, dropout)
    for module in model.modules():
        # GroupedLinear and the norms initialise themselves when built; drawing them again here
        # would change every seeded model.
        if isinstance(module, (nn.Linear, nn.Embedding)):
            init_weights(module)
    return model


@torch.no_grad()
def init_weights(module: nn.Module) -> None:
    """BERT's initialisation of one module's own tensors (not its children's): projections and
    embeddings N(0, 0.02) with zero biases and a zero padding row, norms the identity."""
    if isinstance(module, (nn.Linear, GroupedLinear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Embedding):
            if module.padding_idx is not None:
                module.weight[module.padding_idx].zero_()
        elif module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.LayerNorm, NoNorm)):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, Embeddings):
        module.position_ids.copy_(torch.arange(module.position_ids.shape[0]))
