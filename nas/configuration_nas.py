"""Our encoder's transformers config, model type ``nas_encoder``: the genome's fields, flat.

This file, ``modeling_nas.py`` and the modules they import relatively (``model.py``, ``arch.py``,
``errors.py``) are copied into every exported model folder by ``save_pretrained``, with an
``auto_map`` in its config.json, so ``AutoModel.from_pretrained(folder, trust_remote_code=True)``
loads it with only torch and transformers installed. Hence: standard library, torch and
transformers imports only, and this package's modules imported relatively. With ``nas`` installed,
``import nas`` registers the same classes with ``AutoConfig``/``AutoModel`` (``nas.hf_auto``).

    >>> config = NasConfig.from_arch(nas.reference("mobilebert").arch)
    >>> config.arch == nas.reference("mobilebert").arch
    True
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from transformers import PretrainedConfig

from .arch import ArchConfig

GENOME_FIELDS = tuple(f.name for f in fields(ArchConfig))


class NasConfig(PretrainedConfig):
    """A genome (every ``ArchConfig`` field, validated) plus what a trained encoder holds beyond it.

    ``layer_norm_eps``: the eps of every LayerNorm, except the modules listed in
    ``layer_norm_eps_overrides`` ({module name in the encoder: eps}, e.g. for a model ported from
    MobileBERT, which builds two of its norms with 1e-5). ``hidden_dropout_prob``: the dropout
    probability of every dropout module (training only). ``pad_token_id``: the token embedding's
    padding row.
    """

    model_type = "nas_encoder"
    # Names transformers' own tools read (ONNX exporters, pipelines) for the genome's fields.
    attribute_map = {"num_hidden_layers": "num_layers", "hidden_act": "activation"}

    def __init__(
        self,
        layer_norm_eps: float = 1e-12,
        layer_norm_eps_overrides: dict[str, float] | None = None,
        hidden_dropout_prob: float = 0.0,
        pad_token_id: int | None = 0,
        **kwargs: Any,
    ) -> None:
        genome = {name: kwargs.pop(name) for name in GENOME_FIELDS if name in kwargs}
        # Validates, and fills the defaults (BERT-base) of fields not given; errors name the field.
        arch = ArchConfig.from_dict(genome, source="nas_encoder config")
        for name, value in arch.to_dict().items():
            setattr(self, name, value)
        self.layer_norm_eps = layer_norm_eps
        self.layer_norm_eps_overrides = dict(layer_norm_eps_overrides or {})
        self.hidden_dropout_prob = hidden_dropout_prob
        super().__init__(pad_token_id=pad_token_id, **kwargs)

    @property
    def arch(self) -> ArchConfig:
        """The genome this config describes."""
        return ArchConfig.from_dict({name: getattr(self, name) for name in GENOME_FIELDS})

    @classmethod
    def from_arch(cls, arch: ArchConfig, **kwargs: Any) -> "NasConfig":
        """The config of `arch`; `kwargs` set the non-genome fields (``layer_norm_eps``, ...)."""
        return cls(**arch.to_dict(), **kwargs)


NasConfig.register_for_auto_class()  # save_pretrained copies this file and writes auto_map
