"""nas: hardware-aware neural architecture search over efficient BERT encoders."""

from nas import hf_auto
from nas.arch import ArchConfig, ArchError
from nas.errors import NasError
from nas.graph import Cost, Op, count, ops
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
    "from_transformers",
    "load_pretrained",
    "ops",
    "reference",
    "reference_names",
    "to_transformers",
]

hf_auto.install()  # "nas_encoder" in transformers' AutoConfig/AutoModel, without importing transformers now

_LAZY = {"from_transformers": "nas.hf", "to_transformers": "nas.hf", "load_pretrained": "nas.hf"}


def __getattr__(name: str):
    # transformers takes seconds to import: load the bridge only when it is used
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'nas' has no attribute {name!r}")
