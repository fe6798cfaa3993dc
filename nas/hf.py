"""Bridge to Hugging Face transformers: our Encoder <-> BertModel, SqueezeBertModel, MobileBertModel,
and, for every genome, our own transformers model type ``nas_encoder`` (``nas.modeling_nas.NasModel``).

Weights port 1:1 both ways (a round trip HF -> ours -> HF reproduces the state dict exactly) and
the ported model computes the same hidden states. What a genome does not hold but the outputs or
training depend on travels with the modules: each LayerNorm's eps (MobileBERT builds two of its
norms with torch's default 1e-5, SqueezeBERT two of its with a fixed 1e-12), dropout probabilities
(MobileBERT has none after most projections) and the padding row of the token embedding.

    >>> from transformers import MobileBertConfig, MobileBertModel
    >>> import nas.hf
    >>> model = nas.hf.from_transformers(MobileBertModel(MobileBertConfig()))
    >>> model.arch == nas.reference("mobilebert").arch
    True
    >>> hf_again = nas.hf.to_transformers(model)   # a MobileBertModel with the same weights
    >>> grouped = nas.build_model(nas.reference("mobilebert").arch.replace(qkv_groups=2))
    >>> nas.hf.to_transformers(grouped).config.model_type   # no native family has groups and a bottleneck
    'nas_encoder'

transformers is imported inside the functions, so ``import nas`` stays light.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from nas.arch import ArchConfig, ArchError
from nas.block import block_plan
from nas.errors import NasError
from nas.model import Encoder, build_model

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel

FAMILIES = ("bert", "squeezebert", "mobilebert")  # transformers' own model types the genome maps to
NAS_FAMILY = "nas_encoder"  # our encoder as a transformers model: holds every genome
# transformers' hidden_act names with the same function as ours ("gelu" is the exact erf GELU
# there too; "gelu_new"/"gelu_pytorch_tanh" are the tanh approximation, which we do not build).
_ACTIVATIONS = {"gelu": "gelu", "relu": "relu"}


# ---- which modules correspond ----------------------------------------------------------------


@dataclass(frozen=True)
class _Pair:
    """One of our modules and the transformers module holding the same weights.

    kind: "embedding" (weight only), "linear" (weight, bias), "conv" (a kernel-1 Conv1d: weight
    (out, in/G, 1) is ours (out, in/G) with a kernel axis), "norm" (LayerNorm or NoNorm).
    """

    ours: str
    theirs: str
    kind: str


def _embedding_pairs(arch: ArchConfig, family: str) -> list[_Pair]:
    pairs = [
        _Pair("embeddings.word_embeddings", "embeddings.word_embeddings", "embedding"),
        _Pair("embeddings.position_embeddings", "embeddings.position_embeddings", "embedding"),
        _Pair("embeddings.token_type_embeddings", "embeddings.token_type_embeddings", "embedding"),
        _Pair("embeddings.norm", "embeddings.LayerNorm", "norm"),
    ]
    if family == "mobilebert" and arch.embedding_projected:
        pairs.append(_Pair("embeddings.embedding_transformation", "embeddings.embedding_transformation", "linear"))
    return pairs


def _bert_layer_pairs(ours: str, theirs: str) -> list[_Pair]:
    return [
        _Pair(f"{ours}.attention.query", f"{theirs}.attention.self.query", "linear"),
        _Pair(f"{ours}.attention.key", f"{theirs}.attention.self.key", "linear"),
        _Pair(f"{ours}.attention.value", f"{theirs}.attention.self.value", "linear"),
        _Pair(f"{ours}.attention_output.dense", f"{theirs}.attention.output.dense", "linear"),
        _Pair(f"{ours}.attention_output.norm", f"{theirs}.attention.output.LayerNorm", "norm"),
        _Pair(f"{ours}.ffns.0.intermediate", f"{theirs}.intermediate.dense", "linear"),
        _Pair(f"{ours}.ffns.0.output.dense", f"{theirs}.output.dense", "linear"),
        _Pair(f"{ours}.ffns.0.output.norm", f"{theirs}.output.LayerNorm", "norm"),
    ]


def _squeezebert_layer_pairs(ours: str, theirs: str) -> list[_Pair]:
    return [
        _Pair(f"{ours}.attention.query", f"{theirs}.attention.query", "conv"),
        _Pair(f"{ours}.attention.key", f"{theirs}.attention.key", "conv"),
        _Pair(f"{ours}.attention.value", f"{theirs}.attention.value", "conv"),
        _Pair(f"{ours}.attention_output.dense", f"{theirs}.post_attention.conv1d", "conv"),
        _Pair(f"{ours}.attention_output.norm", f"{theirs}.post_attention.layernorm", "norm"),
        _Pair(f"{ours}.ffns.0.intermediate", f"{theirs}.intermediate.conv1d", "conv"),
        _Pair(f"{ours}.ffns.0.output.dense", f"{theirs}.output.conv1d", "conv"),
        _Pair(f"{ours}.ffns.0.output.norm", f"{theirs}.output.layernorm", "norm"),
    ]


def _mobilebert_layer_pairs(arch: ArchConfig, ours: str, theirs: str) -> list[_Pair]:
    plan, pairs = block_plan(arch), []
    if plan.input_bottleneck is not None:
        pairs += [
            _Pair(f"{ours}.input_bottleneck.dense", f"{theirs}.bottleneck.input.dense", "linear"),
            _Pair(f"{ours}.input_bottleneck.norm", f"{theirs}.bottleneck.input.LayerNorm", "norm"),
        ]
    if plan.attention_bottleneck is not None:
        pairs += [
            _Pair(f"{ours}.attention_bottleneck.dense", f"{theirs}.bottleneck.attention.dense", "linear"),
            _Pair(f"{ours}.attention_bottleneck.norm", f"{theirs}.bottleneck.attention.LayerNorm", "norm"),
        ]
    pairs += [
        _Pair(f"{ours}.attention.query", f"{theirs}.attention.self.query", "linear"),
        _Pair(f"{ours}.attention.key", f"{theirs}.attention.self.key", "linear"),
        _Pair(f"{ours}.attention.value", f"{theirs}.attention.self.value", "linear"),
        _Pair(f"{ours}.attention_output.dense", f"{theirs}.attention.output.dense", "linear"),
        _Pair(f"{ours}.attention_output.norm", f"{theirs}.attention.output.LayerNorm", "norm"),
    ]
    # Our FFN stack is MobileBERT's ffn[0..n-2] followed by the layer's own intermediate/output.
    last = len(plan.ffns) - 1
    for j in range(last):
        pairs += [
            _Pair(f"{ours}.ffns.{j}.intermediate", f"{theirs}.ffn.{j}.intermediate.dense", "linear"),
            _Pair(f"{ours}.ffns.{j}.output.dense", f"{theirs}.ffn.{j}.output.dense", "linear"),
            _Pair(f"{ours}.ffns.{j}.output.norm", f"{theirs}.ffn.{j}.output.LayerNorm", "norm"),
        ]
    pairs += [
        _Pair(f"{ours}.ffns.{last}.intermediate", f"{theirs}.intermediate.dense", "linear"),
        _Pair(f"{ours}.ffns.{last}.output.dense", f"{theirs}.output.dense", "linear"),
        _Pair(f"{ours}.ffns.{last}.output.norm", f"{theirs}.output.LayerNorm", "norm"),
    ]
    if plan.output_bottleneck is not None:
        pairs += [
            _Pair(f"{ours}.output_bottleneck.dense", f"{theirs}.output.bottleneck.dense", "linear"),
            _Pair(f"{ours}.output_bottleneck.norm", f"{theirs}.output.bottleneck.LayerNorm", "norm"),
        ]
    return pairs


def _pairs(arch: ArchConfig, family: str) -> list[_Pair]:
    """Every module pair of a model of `arch` in `family`, embeddings first, pooler last."""
    pairs = _embedding_pairs(arch, family)
    for i in range(arch.num_layers):
        if family == "bert":
            pairs += _bert_layer_pairs(f"layers.{i}", f"encoder.layer.{i}")
        elif family == "squeezebert":
            pairs += _squeezebert_layer_pairs(f"layers.{i}", f"encoder.layers.{i}")
        else:
            pairs += _mobilebert_layer_pairs(arch, f"layers.{i}", f"encoder.layer.{i}")
    if arch.pooler:
        pairs.append(_Pair("pooler.dense", "pooler.dense", "linear"))
    return pairs


def _tensor_names(pair: _Pair) -> tuple[str, ...]:
    return ("weight",) if pair.kind == "embedding" else ("weight", "bias")


def _dead_weights(config: Any, family: str, arch: ArchConfig) -> set[str]:
    """transformers tensors that never reach the outputs, so our model does not hold them."""
    if family != "mobilebert":
        return set()
    dead = set()
    if not arch.embedding_projected:  # MobileBERT always builds the projection, used or not
        dead |= {"embeddings.embedding_transformation.weight", "embeddings.embedding_transformation.bias"}
    if config.use_bottleneck and config.use_bottleneck_attention and config.key_query_shared_bottleneck:
        # use_bottleneck_attention wins in MobileBERT's Bottleneck.forward; the shared Q/K bottleneck idles
        for i in range(arch.num_layers):
            for part in ("dense.weight", "dense.bias", "LayerNorm.weight", "LayerNorm.bias"):
                dead.add(f"encoder.layer.{i}.bottleneck.attention.{part}")
    return dead


# ---- transformers config -> genome -----------------------------------------------------------


def _family_of_model(hf_model: Any) -> tuple[str, Any]:
    """The family of a transformers model and its base model (a task model's heads are dropped)."""
    from transformers import BertModel, MobileBertModel, SqueezeBertModel

    classes = {"bert": BertModel, "squeezebert": SqueezeBertModel, "mobilebert": MobileBertModel}
    base = getattr(hf_model, "base_model", hf_model)
    for family, cls in classes.items():
        if isinstance(base, cls):
            return family, base
    # By model type, not class: a NasModel loaded with trust_remote_code is another class of the same code.
    if getattr(getattr(base, "config", None), "model_type", None) == NAS_FAMILY and isinstance(getattr(base, "encoder", None), nn.Module):
        return NAS_FAMILY, base
    name = type(hf_model).__name__
    raise NasError(
        f"{name} is not one of the families the bridge ports (BertModel, SqueezeBertModel, MobileBertModel, "
        "NasModel, or a task model built on one of them)"
    )


def _family_of_config(config: Any) -> str:
    model_type = getattr(config, "model_type", None)
    if model_type not in (*FAMILIES, NAS_FAMILY):
        raise NasError(
            f"model_type={model_type!r} is not one of the families the bridge ports "
            f"({', '.join((*FAMILIES, NAS_FAMILY))})"
        )
    return model_type


def _activation(config: Any, family: str) -> str:
    act = config.hidden_act
    if not isinstance(act, str) or act not in _ACTIVATIONS:
        raise NasError(
            f"{family} config: hidden_act={act!r} has no counterpart in the genome, which has "
            "'gelu' (exact, erf) and 'relu' only"
        )
    return _ACTIVATIONS[act]


def arch_from_config(config: PretrainedConfig, *, pooler: bool = True) -> ArchConfig:
    """The genome of a BERT, SqueezeBERT, MobileBERT or nas_encoder config; NasError says why one has none.

    ``pooler=False`` when the model was built without its pooling layer (``add_pooling_layer=False``).
    """
    family = _family_of_config(config)
    if family == NAS_FAMILY:  # the genome's own fields; getattr, so a remote-code config reads too
        genome = {f.name: getattr(config, f.name) for f in dataclasses.fields(ArchConfig)}
        try:
            return ArchConfig.from_dict(genome, source="nas_encoder config")
        except ArchError as err:
            raise NasError(str(err)) from None
    common = dict(
        vocab_size=config.vocab_size,
        max_position_embeddings=config.max_position_embeddings,
        type_vocab_size=config.type_vocab_size,
        num_layers=config.num_hidden_layers,
        hidden_size=config.hidden_size,
        num_attention_heads=config.num_attention_heads,
        intermediate_size=config.intermediate_size,
        activation=_activation(config, family),
    )
    if family == "bert":
        if getattr(config, "is_decoder", False) or getattr(config, "add_cross_attention", False):
            raise NasError("bert config: is_decoder/add_cross_attention make a decoder; the genome is an encoder")
        position = getattr(config, "position_embedding_type", "absolute")
        if position != "absolute":
            raise NasError(f"bert config: position_embedding_type={position!r}; the genome has absolute positions only")
        fields = dict(common, embedding_size=config.hidden_size, pooler=pooler)
    elif family == "squeezebert":
        groups = {"q_groups": config.q_groups, "k_groups": config.k_groups, "v_groups": config.v_groups}
        if len(set(groups.values())) > 1:
            listed = ", ".join(f"{k}={v}" for k, v in groups.items())
            raise NasError(
                f"squeezebert config: {listed} differ; the genome has one qkv_groups for Q, K and V"
            )
        fields = dict(
            common,
            embedding_size=config.embedding_size,
            qkv_groups=config.q_groups,
            post_attention_groups=config.post_attention_groups,
            intermediate_groups=config.intermediate_groups,
            output_groups=config.output_groups,
            pooler=True,  # SqueezeBertModel always has its pooler
        )
    else:
        fields = dict(
            common,
            embedding_size=config.embedding_size,
            trigram_input=config.trigram_input,
            num_ffn=config.num_feedforward_networks,
            norm=config.normalization_type,
            pooler=pooler and config.classifier_activation,  # without it the pooler is the first token
            **_mobilebert_attention(config),
        )
    try:
        return ArchConfig(**fields)
    except ArchError as err:
        raise NasError(f"{family} config: {err}") from None


def _mobilebert_attention(config: Any) -> dict[str, Any]:
    if config.normalization_type not in ("layer_norm", "no_norm"):
        raise NasError(f"mobilebert config: normalization_type={config.normalization_type!r} is not layer_norm or no_norm")
    if not config.use_bottleneck:
        return {"intra_bottleneck_size": None, "attention_input": "hidden"}
    if config.use_bottleneck_attention:
        attention_input = "bottleneck"
    elif config.key_query_shared_bottleneck:
        attention_input = "shared_bottleneck"
    else:
        # Q, K and V then read the hidden_size-wide block input through intra_bottleneck_size-wide
        # projections: transformers' MobileBERT runs only when the two widths are equal.
        if config.hidden_size != config.intra_bottleneck_size:
            raise NasError(
                "mobilebert config: use_bottleneck without use_bottleneck_attention or key_query_shared_bottleneck "
                f"feeds the {config.hidden_size}-wide input to {config.intra_bottleneck_size}-wide Q/K projections; "
                "transformers cannot run it (set one of the two flags)"
            )
        attention_input = "hidden"
    return {"intra_bottleneck_size": config.intra_bottleneck_size, "attention_input": attention_input}


# ---- genome -> transformers config -----------------------------------------------------------


def _reasons_not(arch: ArchConfig, family: str) -> list[str]:
    """Why `arch` cannot be built in `family` (empty when it can)."""
    grouped = {
        name: getattr(arch, name)
        for name in ("qkv_groups", "post_attention_groups", "intermediate_groups", "output_groups")
        if getattr(arch, name) != 1
    }
    grouped_text = ", ".join(f"{k}={v}" for k, v in grouped.items())
    reasons = []
    if family in ("bert", "squeezebert"):
        if arch.intra_bottleneck_size is not None:
            reasons.append(f"it has a bottleneck (intra_bottleneck_size={arch.intra_bottleneck_size})")
        if arch.trigram_input:
            reasons.append("it has trigram_input")
        if arch.embedding_size != arch.hidden_size:
            reasons.append(f"embedding_size={arch.embedding_size} differs from hidden_size={arch.hidden_size}")
        if arch.norm != "layer_norm":
            reasons.append(f"norm={arch.norm!r} (it has LayerNorm only)")
        if arch.num_ffn != 1:
            reasons.append(f"num_ffn={arch.num_ffn} stacked FFNs")
    if family == "bert" and grouped:
        reasons.append(f"it has grouped projections ({grouped_text})")
    if family == "squeezebert" and not arch.pooler:
        reasons.append("pooler=False (SqueezeBertModel always has a pooler)")
    if family == "mobilebert":
        if grouped:
            reasons.append(f"it has grouped projections ({grouped_text})")
        if (
            arch.intra_bottleneck_size is not None
            and arch.attention_input == "hidden"
            and arch.intra_bottleneck_size != arch.hidden_size
        ):
            reasons.append(
                "attention_input='hidden' with a bottleneck: MobileBERT's Q/K projections read the "
                f"{arch.intra_bottleneck_size}-wide bottleneck, not the {arch.hidden_size}-wide input"
            )
    return reasons


def transformers_family(arch: ArchConfig) -> str:
    """The native transformers family that can hold `arch`; NasError says why none can.

    BERT where it fits (no bottleneck, no groups, LayerNorm, one FFN, embedding_size == hidden),
    else SqueezeBERT for grouped genomes, else MobileBERT. ``export_family`` is the model type a
    genome is exported as (``nas_encoder`` where this raises).
    """
    grouped = any(
        getattr(arch, name) != 1
        for name in ("qkv_groups", "post_attention_groups", "intermediate_groups", "output_groups")
    )
    candidates = ("squeezebert",) if grouped else ("bert", "mobilebert")
    for family in candidates:
        if not _reasons_not(arch, family):
            return family
    family = candidates[-1]
    reasons = "; ".join(_reasons_not(arch, family))
    if grouped and arch.intra_bottleneck_size is not None:
        head = (
            "grouped projections with a bottleneck: no transformers family has both "
            "(SqueezeBERT has groups but no bottleneck, MobileBERT bottlenecks but no groups)"
        )
        raise NasError(f"genome {arch.id} is not expressible in a native transformers family: {head}; {reasons}")
    raise NasError(
        f"genome {arch.id} is not expressible in a native transformers family ({family} is the closest): {reasons}"
    )


def export_family(arch: ArchConfig) -> str:
    """The model type ``to_transformers`` gives a model built by ``build_model(arch)``: the native
    family where its saved config rebuilds the model exactly, else ``nas_encoder`` (every genome).

    Two native families hold a genome but do not reload it: MobileBERT with LayerNorm
    (``MobileBertModel`` builds its embedding norm and each layer's last FFN norm with torch's eps
    1e-5 whatever its config says, ours has 1e-12; reloaded, outputs differ by ~5e-4), and BERT
    without a pooler (``add_pooling_layer=False`` is not in ``BertConfig``: a reloaded copy gets a
    random pooler).
    """
    try:
        family = transformers_family(arch)
    except NasError:
        return NAS_FAMILY
    if (family == "mobilebert" and arch.norm == "layer_norm") or _pooler_lost(arch, family):
        return NAS_FAMILY
    return family


def _pooler_lost(arch: ArchConfig, family: str) -> bool:
    return family == "bert" and not arch.pooler


def config_for(
    arch: ArchConfig,
    family: str | None = None,
    *,
    layer_norm_eps: float = 1e-12,
    hidden_dropout: float = 0.0,
    attention_dropout: float = 0.0,
    pad_token_id: int | None = 0,
) -> PretrainedConfig:
    """The transformers config of `arch` in `family` (default: ``export_family(arch)``).

    For ``nas_encoder``, one dropout probability governs every dropout module: the larger of
    `hidden_dropout` and `attention_dropout`.
    """
    from transformers import BertConfig, MobileBertConfig, SqueezeBertConfig

    if family is None:
        family = export_family(arch)
    elif family not in (*FAMILIES, NAS_FAMILY):
        raise NasError(f"family={family!r} must be one of {', '.join((*FAMILIES, NAS_FAMILY))}")
    if family == NAS_FAMILY:
        from nas.configuration_nas import NasConfig

        return NasConfig.from_arch(
            arch,
            layer_norm_eps=layer_norm_eps,
            hidden_dropout_prob=max(hidden_dropout, attention_dropout),
            pad_token_id=pad_token_id,
        )
    reasons = _reasons_not(arch, family)
    if reasons:
        raise NasError(f"genome {arch.id} is not expressible as {family}: {'; '.join(reasons)}")
    common = dict(
        vocab_size=arch.vocab_size,
        hidden_size=arch.hidden_size,
        num_hidden_layers=arch.num_layers,
        num_attention_heads=arch.num_attention_heads,
        intermediate_size=arch.intermediate_size,
        hidden_act=arch.activation,
        hidden_dropout_prob=hidden_dropout,
        attention_probs_dropout_prob=attention_dropout,
        max_position_embeddings=arch.max_position_embeddings,
        type_vocab_size=arch.type_vocab_size,
        layer_norm_eps=layer_norm_eps,
        pad_token_id=pad_token_id,
    )
    if family == "bert":
        return BertConfig(**common)
    if family == "squeezebert":
        return SqueezeBertConfig(
            **common,
            embedding_size=arch.embedding_size,
            q_groups=arch.qkv_groups,
            k_groups=arch.qkv_groups,
            v_groups=arch.qkv_groups,
            post_attention_groups=arch.post_attention_groups,
            intermediate_groups=arch.intermediate_groups,
            output_groups=arch.output_groups,
        )
    bottlenecked = arch.intra_bottleneck_size is not None
    return MobileBertConfig(
        **common,
        embedding_size=arch.embedding_size,
        trigram_input=arch.trigram_input,
        use_bottleneck=bottlenecked,
        intra_bottleneck_size=arch.intra_bottleneck_size if bottlenecked else arch.hidden_size,
        use_bottleneck_attention=bottlenecked and arch.attention_input == "bottleneck",
        key_query_shared_bottleneck=bottlenecked and arch.attention_input == "shared_bottleneck",
        num_feedforward_networks=arch.num_ffn,
        normalization_type=arch.norm,
        classifier_activation=arch.pooler,
    )


def save_config(arch: ArchConfig, folder: str | Path, family: str | None = None) -> str:
    """Write the transformers config of `arch` (no weights) to `folder`; returns its family
    (default ``export_family(arch)``). For ``nas_encoder`` the model code travels too, so
    ``AutoModel.from_config(AutoConfig.from_pretrained(folder, trust_remote_code=True),
    trust_remote_code=True)`` builds it with only transformers installed."""
    import shutil

    family = family or export_family(arch)
    config = config_for(arch, family)
    if family == NAS_FAMILY:
        from transformers.dynamic_module_utils import get_relative_import_files

        from nas import modeling_nas

        # What NasModel.save_pretrained writes: its class in auto_map, its file and the files it imports.
        config.architectures = [modeling_nas.NasModel.__name__]
        config.auto_map = {"AutoModel": f"{Path(modeling_nas.__file__).stem}.{modeling_nas.NasModel.__name__}"}
        Path(folder).mkdir(parents=True, exist_ok=True)
        for source in [modeling_nas.__file__, *get_relative_import_files(modeling_nas.__file__)]:
            shutil.copyfile(source, Path(folder) / Path(source).name)
    config.save_pretrained(str(folder))  # for nas_encoder also adds AutoConfig to auto_map
    return family


# ---- dropout: where each family has it --------------------------------------------------------


def _dropouts(model: Encoder, family: str) -> dict[nn.Dropout, str]:
    """Each of our dropout modules and the config probability that governs it in `family`:
    "hidden", "attention", or "none" where the family applies no dropout at that point."""
    mobile_bottleneck = family == "mobilebert" and model.arch.intra_bottleneck_size is not None
    where: dict[nn.Dropout, str] = {model.embeddings.dropout: "hidden"}
    for layer in model.layers:
        where[layer.attention.core.dropout] = "attention"
        # MobileBERT drops out after the attention and the last FFN only when it has no
        # bottleneck, and never after the other FFNs of its stack.
        where[layer.attention_output.dropout] = "none" if mobile_bottleneck else "hidden"
        for j, ffn in enumerate(layer.ffns):
            last = j == len(layer.ffns) - 1
            drops = family != "mobilebert" or (last and not mobile_bottleneck)
            where[ffn.output.dropout] = "hidden" if drops else "none"
        if layer.output_bottleneck is not None:
            where[layer.output_bottleneck.dropout] = "hidden"
    return where


# ---- porting ----------------------------------------------------------------------------------


def from_transformers(hf_model: PreTrainedModel, attention_implementation: str = "eager") -> Encoder:
    """Our Encoder with the weights, norms' eps and dropout of a BertModel, SqueezeBertModel,
    MobileBertModel or NasModel (or a task model on one; its heads are dropped). ``model.arch`` is its genome."""
    family, base = _family_of_model(hf_model)
    config = base.config
    if family == NAS_FAMILY:
        return _from_nas_model(base, attention_implementation)
    arch = arch_from_config(config, pooler=getattr(base, "pooler", None) is not None)
    theirs = dict(base.named_modules())
    hf_state = base.state_dict()

    mapped: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    for pair in _pairs(arch, family):
        for tensor_name in _tensor_names(pair):
            key = f"{pair.theirs}.{tensor_name}"
            tensor = hf_state[key]
            if pair.kind == "conv" and tensor_name == "weight":
                tensor = tensor.squeeze(-1)  # (out, in/G, 1) -> (out, in/G)
            mapped[f"{pair.ours}.{tensor_name}"] = tensor
            used.add(key)
    left = set(hf_state) - used - _dead_weights(config, family, arch)
    if left:  # a tensor we would silently drop: a mapping bug, never the user's
        raise RuntimeError(f"nas.hf: {family} tensors with no counterpart: {sorted(left)[:5]}")

    first = next(base.parameters())
    model = build_model(arch, attention_implementation).to(device=first.device, dtype=first.dtype)
    model.load_state_dict(mapped, strict=True)
    ours = dict(model.named_modules())
    for pair in _pairs(arch, family):
        if pair.kind == "norm" and isinstance(theirs[pair.theirs], nn.LayerNorm):
            ours[pair.ours].eps = theirs[pair.theirs].eps
    probability = {
        "hidden": float(config.hidden_dropout_prob),
        "attention": float(config.attention_probs_dropout_prob),
        "none": 0.0,
    }
    for dropout, governed_by in _dropouts(model, family).items():
        dropout.p = probability[governed_by]
    model.embeddings.word_embeddings.padding_idx = base.embeddings.word_embeddings.padding_idx
    return model.train(base.training)


def to_transformers(model: Encoder, family: str | None = None) -> PreTrainedModel:
    """A transformers model with our model's weights, computing the same, and so does a copy saved
    with ``save_pretrained`` and loaded with ``from_pretrained``.

    `family` defaults to the native family (``transformers_family``) where its config carries every
    LayerNorm's eps and the pooler, else ``nas_encoder`` (a ``nas.modeling_nas.NasModel``, which holds every
    genome). A forced native `family` that cannot hold the genome raises NasError; one whose config
    cannot carry some eps gets them set on its modules, with a warning: a saved and reloaded copy
    rebuilds those norms with the family's own eps.
    """
    if family == NAS_FAMILY:
        return _to_nas_model(model)
    if family is None:
        try:
            native = transformers_family(model.arch)
        except NasError:
            return _to_nas_model(model)
        if _pooler_lost(model.arch, native):
            return _to_nas_model(model)
        # The eps check is on the model, not the genome: one ported from MobileBERT has its 1e-5 norms.
        hf_model, changed = _to_native(model, native)
        return _to_nas_model(model) if changed else hf_model
    hf_model, changed = _to_native(model, family)
    if changed:
        warnings.warn(
            f"to_transformers: {len(changed)} {family} LayerNorms are built with an eps their config cannot set "
            f"(e.g. {changed[0]}); they are set on the modules, so a saved and reloaded copy computes slightly "
            f"differently (family={NAS_FAMILY!r} reloads exactly)",
            stacklevel=2,
        )
    return hf_model


def _to_native(model: Encoder, family: str) -> tuple[PreTrainedModel, list[str]]:
    """``to_transformers`` in a native family, and the LayerNorms whose eps had to be set on the module."""
    from transformers import BertModel, MobileBertModel, SqueezeBertModel

    arch = model.arch
    ours = dict(model.named_modules())
    # The eps transformers builds from config.layer_norm_eps: read it where each family uses it.
    eps_from = "layers.0.attention_output.norm" if family == "mobilebert" else "embeddings.norm"
    layer_norm_eps = ours[eps_from].eps if isinstance(ours[eps_from], nn.LayerNorm) else 1e-12
    dropout_p = {"hidden": 0.0, "attention": 0.0}
    config = config_for(arch, family, layer_norm_eps=layer_norm_eps)
    for dropout, governed_by in _dropouts(model, family).items():
        if governed_by != "none":
            dropout_p[governed_by] = max(dropout_p[governed_by], dropout.p)
    config.hidden_dropout_prob = dropout_p["hidden"]
    config.attention_probs_dropout_prob = dropout_p["attention"]
    config.pad_token_id = model.embeddings.word_embeddings.padding_idx

    cls = {"bert": BertModel, "squeezebert": SqueezeBertModel, "mobilebert": MobileBertModel}[family]
    if family == "bert":
        hf_model = cls(config, add_pooling_layer=arch.pooler)
    else:  # SqueezeBERT always pools; MobileBERT without classifier_activation pools the first token, as we do
        hf_model = cls(config)
    first = next(model.parameters())
    hf_model.to(device=first.device, dtype=first.dtype)

    state = model.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    for pair in _pairs(arch, family):
        for tensor_name in _tensor_names(pair):
            tensor = state[f"{pair.ours}.{tensor_name}"]
            if pair.kind == "conv" and tensor_name == "weight":
                tensor = tensor.unsqueeze(-1)  # (out, in/G) -> (out, in/G, 1)
            mapped[f"{pair.theirs}.{tensor_name}"] = tensor
    dead = _dead_weights(config, family, arch)
    hf_state = hf_model.state_dict()
    for key in dead:  # never used by the forward; zeros rather than random numbers
        mapped[key] = torch.zeros_like(hf_state[key])
    missing = set(hf_state) - set(mapped)
    if missing:
        raise RuntimeError(f"nas.hf: {family} tensors with no counterpart: {sorted(missing)[:5]}")
    hf_model.load_state_dict(mapped, strict=True)

    theirs = dict(hf_model.named_modules())
    changed = []
    for pair in _pairs(arch, family):
        mine, other = ours[pair.ours], theirs[pair.theirs]
        if isinstance(mine, nn.LayerNorm) and isinstance(other, nn.LayerNorm) and other.eps != mine.eps:
            changed.append(f"{pair.theirs} ({other.eps:g} -> {mine.eps:g})")
            other.eps = mine.eps
    return hf_model.train(model.training), changed


def _to_nas_model(model: Encoder) -> PreTrainedModel:
    """A NasModel holding a copy of `model` (eager attention): its config carries every LayerNorm's
    eps, the padding row and one dropout probability (the largest of the model's; each module keeps
    its own here)."""
    from nas.modeling_nas import NasModel

    modules = dict(model.named_modules())
    eps = {name: m.eps for name, m in modules.items() if isinstance(m, nn.LayerNorm)}
    common = max(set(eps.values()), key=list(eps.values()).count) if eps else 1e-12
    dropout = [m.p for m in modules.values() if isinstance(m, nn.Dropout)]
    config = config_for(
        model.arch,
        NAS_FAMILY,
        layer_norm_eps=common,
        hidden_dropout=max(dropout, default=0.0),
        pad_token_id=model.embeddings.word_embeddings.padding_idx,
    )
    config.layer_norm_eps_overrides = {name: value for name, value in eps.items() if value != common}
    hf_model = NasModel(config)
    hf_model.encoder.load_state_dict(model.state_dict(), strict=True)
    _copy_module_settings(model, hf_model.encoder)
    first = next(model.parameters())
    return hf_model.to(device=first.device, dtype=first.dtype).train(model.training)


def _from_nas_model(base: Any, attention_implementation: str) -> Encoder:
    """Our Encoder from a NasModel (ours, or the same code loaded with trust_remote_code)."""
    first = next(base.parameters())
    model = build_model(arch_from_config(base.config), attention_implementation).to(device=first.device, dtype=first.dtype)
    model.load_state_dict(base.encoder.state_dict(), strict=True)
    _copy_module_settings(base.encoder, model)
    return model.train(base.training)


def _copy_module_settings(source: nn.Module, target: Encoder) -> None:
    """Every LayerNorm's eps, every dropout probability and the padding row, module by module."""
    theirs = dict(source.named_modules())
    for name, module in target.named_modules():
        if isinstance(module, nn.LayerNorm):
            module.eps = theirs[name].eps
        elif isinstance(module, nn.Dropout):
            module.p = theirs[name].p
    target.embeddings.word_embeddings.padding_idx = theirs["embeddings.word_embeddings"].padding_idx


def load_pretrained(name_or_path: str | Path, attention_implementation: str = "eager") -> Encoder:
    """Load a BERT, SqueezeBERT, MobileBERT or nas_encoder checkpoint (a local folder, or a hub id
    when online) with ``transformers.AutoModel`` and port it with ``from_transformers``."""
    from transformers import AutoConfig, AutoModel

    source = str(name_or_path)
    local = Path(source).expanduser()
    if local.exists() and not (local / "config.json").is_file():
        raise NasError(f"{source}: not a transformers model folder (no config.json in it)")
    try:
        config = AutoConfig.from_pretrained(str(local) if local.exists() else source)
    except (OSError, ValueError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if local.exists():
            raise NasError(f"{source}: cannot read its config.json ({reason})") from None
        raise NasError(
            f"{source}: no such local folder, and not loadable as a Hugging Face hub id ({reason})"
        ) from None
    try:
        _family_of_config(config)
    except NasError as err:
        raise NasError(f"{source}: {err}") from None
    hf_model = AutoModel.from_pretrained(str(local) if local.exists() else source, config=config)
    return from_transformers(hf_model.eval(), attention_implementation).eval()
