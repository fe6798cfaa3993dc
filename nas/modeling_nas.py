"""Our encoder as a transformers model, model type ``nas_encoder``: ``NasModel`` wraps ``model.Encoder``.

Every genome exports through it, also those no transformers family can hold (grouped projections
with a bottleneck, NoNorm without a bottleneck, ...). Like ``configuration_nas.py`` this file travels
inside exported folders as remote code, so it imports only torch, transformers and this package's
modules, relatively. The encoder's state dict is the model's under ``encoder.``:
``model.safetensors`` of an export holds a ``nas.Encoder``'s tensors, unchanged.

    >>> from transformers import AutoModel
    >>> model = AutoModel.from_pretrained("exported/00-3f2a.../transformers", trust_remote_code=True)
    >>> model(**tokenizer("hello", return_tensors="pt")).last_hidden_state.shape
    torch.Size([1, 3, 512])
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPooling

from .configuration_nas import NasConfig
from .model import Encoder, init_weights


class NasPreTrainedModel(PreTrainedModel):
    config_class = NasConfig
    # No attribute of NasModel has this name: the encoder's tensors are the base model's own.
    base_model_prefix = "nas"
    # Eager attention only: a loaded copy then computes bit for bit what the exported nas.Encoder did
    # (SDPA differs by ~1e-6). For SDPA, port it: nas.hf.from_transformers(model, attention_implementation="sdpa").
    _supports_sdpa = False

    def _init_weights(self, module: nn.Module) -> None:
        # transformers builds the model without initialising it, then calls this for every module
        # whose tensors were not loaded (and for the embeddings' position ids, never saved).
        init_weights(module)


class NasModel(NasPreTrainedModel):
    """The encoder of one genome; outputs as ``BertModel``'s (last hidden state, pooled first token)."""

    def __init__(self, config: NasConfig) -> None:
        super().__init__(config)
        self.encoder = Encoder(config.arch, "eager", dropout=config.hidden_dropout_prob)
        for name, module in self.encoder.named_modules():
            if isinstance(module, nn.LayerNorm):
                module.eps = config.layer_norm_eps_overrides.get(name, config.layer_norm_eps)
        self.encoder.embeddings.word_embeddings.padding_idx = config.pad_token_id
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.encoder.embeddings.word_embeddings

    def set_input_embeddings(self, embeddings: nn.Embedding) -> None:
        self.encoder.embeddings.word_embeddings = embeddings

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> BaseModelOutputWithPooling | tuple[torch.Tensor, ...]:
        for name in ("position_ids", "inputs_embeds", "head_mask"):
            if kwargs.get(name) is not None:
                raise ValueError(f"NasModel: {name} is not supported; pass input_ids (positions are 0..T-1)")
        if input_ids is None:
            raise ValueError("NasModel: input_ids is required")
        output_attentions = self.config.output_attentions if output_attentions is None else output_attentions
        output_hidden_states = self.config.output_hidden_states if output_hidden_states is None else output_hidden_states
        return_dict = self.config.return_dict if return_dict is None else return_dict
        out = self.encoder(
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            output_hidden_states=bool(output_hidden_states),
            output_attentions=bool(output_attentions),
        )
        result = BaseModelOutputWithPooling(
            last_hidden_state=out.last_hidden_state,
            pooler_output=out.pooler_output,
            hidden_states=out.hidden_states or None,
            attentions=out.attentions or None,
        )
        return result if return_dict else result.to_tuple()


NasModel.register_for_auto_class("AutoModel")  # save_pretrained copies this file and writes auto_map
