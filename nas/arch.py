"""The architecture genome: one plain, validated, JSON-serialisable description of an encoder.

BERT-base, SqueezeBERT and MobileBERT are all points of this one genome:

- BERT-base: 12 layers, hidden 768, 12 heads, FFN 3072, LayerNorm + GELU.
- SqueezeBERT: BERT-base with grouped position-wise projections (``qkv_groups=4``,
  ``intermediate_groups=4``, ``output_groups=4``).
- MobileBERT: 24 thin layers (inter-block ``hidden_size=512``, intra-block
  ``intra_bottleneck_size=128``), Q/K from a shared bottleneck and V from the block input
  (``attention_input="shared_bottleneck"``), 4 stacked FFNs, a factorised trigram embedding,
  NoNorm + ReLU.

What one block computes, part by part, is described once in ``nas/block.py``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

# Relative, like model.py's import of this module: exported model folders carry these files as
# transformers remote code, where no `nas` package exists (see nas/modeling_nas.py).
from .block import ATTENTION_SOURCES, block_plan, needs_bottleneck, source_width
from .errors import NasError, check_fields, read_user_text

ACTIVATIONS = ("gelu", "relu")
NORMS = ("layer_norm", "no_norm")
# Where the attention's Q, K and V are read from (MobileBERT's three options): see nas/block.py.
ATTENTION_INPUTS = tuple(ATTENTION_SOURCES)


class ArchError(NasError):
    """A genome that is not a valid architecture; the message names the field."""


@dataclass(frozen=True)
class ArchConfig:
    """An encoder architecture. Defaults are BERT-base; every field is plain data."""

    vocab_size: int = 30522
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    # Factorised embedding: tokens are embedded at embedding_size and projected to hidden_size
    # (with trigram_input, the embeddings of the previous, current and next token are concatenated
    # first, MobileBERT's kernel-3 convolution).
    embedding_size: int = 768
    trigram_input: bool = False
    num_layers: int = 12
    hidden_size: int = 768
    intra_bottleneck_size: int | None = None
    attention_input: str = "hidden"
    num_attention_heads: int = 12
    qkv_groups: int = 1
    post_attention_groups: int = 1
    intermediate_size: int = 3072
    num_ffn: int = 1
    intermediate_groups: int = 1
    output_groups: int = 1
    activation: str = "gelu"
    norm: str = "layer_norm"
    pooler: bool = True

    def __post_init__(self) -> None:
        self._check_types()
        self._check_values()

    # ---- derived widths -------------------------------------------------------------------

    @property
    def block_width(self) -> int:
        """Width inside a block (W): the intra-block bottleneck if there is one, else hidden_size."""
        return self.intra_bottleneck_size or self.hidden_size

    @property
    def attention_width(self) -> int:
        """Width of Q, K, V and the attention context (all heads together)."""
        return self.block_width

    @property
    def head_size(self) -> int:
        return self.attention_width // self.num_attention_heads

    @property
    def embedding_projected(self) -> bool:
        """Whether token embeddings pass through a Linear to reach hidden_size."""
        return self.trigram_input or self.embedding_size != self.hidden_size

    @property
    def query_key_input_width(self) -> int:
        return source_width(self, ATTENTION_SOURCES[self.attention_input][0])

    @property
    def value_input_width(self) -> int:
        return source_width(self, ATTENTION_SOURCES[self.attention_input][1])

    @property
    def mha_params(self) -> int:
        """Parameters of one block's multi-head attention: Q, K, V and output projections."""
        return sum(p.params for p in block_plan(self).attention_projections)

    @property
    def ffn_params(self) -> int:
        """Parameters of all of one block's stacked FFNs (their projections, not their norms)."""
        return sum(p.params for p in block_plan(self).ffn_projections)

    @property
    def attention_ffn_balance(self) -> float:
        """MobileBERT's balance: MHA parameters over all FFN parameters of one block.

        MobileBERT's paper found 0.4-0.6 best when it counted the bottleneck projections with the
        attention; this counts the Q/K/V/output projections only, so BERT-base is 0.50.
        """
        return self.mha_params / self.ffn_params

    @property
    def id(self) -> str:
        """A short, stable id: the first 12 hex digits of the sha256 of the canonical JSON."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]

    # ---- JSON -----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "genome", complete: bool = False) -> "ArchConfig":
        """Build from a dict such as ``to_dict`` returns; unknown keys are an error (typos), and
        with `complete` so is a missing field (a genome file states every field)."""
        if isinstance(data, dict):
            data = {k: v for k, v in data.items() if k != "id"}  # an id is derived from the fields, never read
        check_fields(data, cls, source, ArchError, objects="genome fields")
        missing = [f.name for f in fields(cls) if f.name not in data]
        if complete and missing:
            raise ArchError(f"{source}: missing field{'s' if len(missing) > 1 else ''} {', '.join(missing)}; a genome file states every field (`nas space sample` writes complete ones)")
        try:
            return cls(**data)
        except ArchError as err:
            raise ArchError(f"{source}: {err}") from None

    def replace(self, **changes: Any) -> "ArchConfig":
        return dataclasses.replace(self, **changes)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        tmp.replace(path)  # never leave a half-written genome behind
        return path

    @classmethod
    def load(cls, path: str | Path) -> "ArchConfig":
        path = Path(path)
        try:
            data = json.loads(read_user_text(path))
        except NasError as err:
            raise ArchError(str(err)) from None
        except json.JSONDecodeError as err:
            raise ArchError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
        return cls.from_dict(data, source=str(path), complete=True)

    # ---- validation -----------------------------------------------------------------------

    def _check_types(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "intra_bottleneck_size" and value is None:
                continue
            expected = {"int": int, "int | None": int, "bool": bool, "str": str}[str(f.type)]
            # bool is an int in Python; a genome must not take True for a width or 3 for a flag
            if expected is int and (isinstance(value, bool) or not isinstance(value, int)):
                raise ArchError(f"{f.name}={value!r} must be an integer")
            if expected is not int and not isinstance(value, expected):
                raise ArchError(f"{f.name}={value!r} must be a {expected.__name__}")

    def _check_values(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, int) and not isinstance(value, bool) and value < 1:
                raise ArchError(f"{f.name}={value} must be at least 1")
        if self.activation not in ACTIVATIONS:
            raise ArchError(f"activation={self.activation!r} must be one of {', '.join(ACTIVATIONS)}")
        if self.norm not in NORMS:
            raise ArchError(f"norm={self.norm!r} must be one of {', '.join(NORMS)}")
        if self.attention_input not in ATTENTION_INPUTS:
            raise ArchError(f"attention_input={self.attention_input!r} must be one of {', '.join(ATTENTION_INPUTS)}")
        if self.intra_bottleneck_size is None and needs_bottleneck(self.attention_input):
            raise ArchError(
                f"attention_input={self.attention_input!r} needs an intra_bottleneck_size; "
                "without a bottleneck use attention_input='hidden'"
            )
        self._divides("num_attention_heads", "attention width", self.attention_width)
        self._divides("qkv_groups", "query/key input width", self.query_key_input_width)
        self._divides("qkv_groups", "value input width", self.value_input_width)
        self._divides("qkv_groups", "attention width", self.attention_width)
        self._divides("post_attention_groups", "block width", self.block_width)
        self._divides("intermediate_groups", "block width", self.block_width)
        self._divides("intermediate_groups", "intermediate_size", self.intermediate_size)
        self._divides("output_groups", "intermediate_size", self.intermediate_size)
        self._divides("output_groups", "block width", self.block_width)

    def _divides(self, name: str, what: str, width: int) -> None:
        value = getattr(self, name)
        if width % value:
            raise ArchError(f"{name}={value} does not divide the {what} {width}")
