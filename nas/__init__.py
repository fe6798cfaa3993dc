"""nas: hardware-aware neural architecture search over efficient BERT encoders."""

from nas.arch import ArchConfig, ArchError
from nas.errors import NasError
from nas.graph import Cost, Op, count, op_graph, ops
from nas.model import Encoder, EncoderOutput, build_model
from nas.references import Reference, reference, reference_names

__all__ = [
    "ArchConfig",
    "ArchError",
    "Cost",
    "Encoder",
    "EncoderOutput",
    "NasError",
    "Op",
    "Reference",
    "build_model",
    "count",
    "op_graph",
    "ops",
    "reference",
    "reference_names",
]
