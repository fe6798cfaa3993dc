import json

import pytest

from nas import ArchConfig, ArchError, reference


def test_defaults_are_bert_base():
    assert ArchConfig() == reference("bert-base").arch
    assert ArchConfig().attention_ffn_balance == pytest.approx(0.5, abs=1e-3)


def test_json_round_trip_and_stable_id(tmp_path):
    arch = reference("mobilebert").arch
    path = arch.save(tmp_path / "g.json")
    loaded = ArchConfig.load(path)
    assert loaded == arch and loaded.id == arch.id
    assert ArchConfig.from_dict(json.loads(path.read_text())) == arch
    # the id is a function of the contents only
    assert ArchConfig.from_dict(arch.to_dict()).id == arch.id
    assert arch.replace(num_layers=12).id != arch.id
    # an "id" key (as `nas space sample` prints) is accepted and ignored
    assert ArchConfig.from_dict(arch.to_dict() | {"id": "whatever"}) == arch


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"qkv_groups": 5}, "qkv_groups=5 does not divide the query/key input width 768"),
        ({"num_attention_heads": 5}, "num_attention_heads=5 does not divide the attention width 768"),
        ({"intermediate_groups": 7}, "intermediate_groups=7"),
        ({"activation": "swish"}, "activation='swish' must be one of gelu, relu"),
        ({"norm": "batch_norm"}, "norm='batch_norm'"),
        ({"attention_input": "bottleneck"}, "needs an intra_bottleneck_size"),
        ({"num_layers": 0}, "num_layers=0 must be at least 1"),
        ({"hidden_size": 512.0}, "hidden_size=512.0 must be an integer"),
        ({"trigram_input": 1}, "trigram_input=1 must be a bool"),
        ({"num_ffn": True}, "num_ffn=True must be an integer"),
    ],
)
def test_invalid_genomes_name_the_field(changes, message):
    with pytest.raises(ArchError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ArchConfig(**changes)


def test_unknown_field_and_bad_file(tmp_path):
    with pytest.raises(ArchError, match="unknown field 'num_layer'"):
        ArchConfig.from_dict({"num_layer": 3})
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ArchError, match="bad.json: not valid JSON"):
        ArchConfig.load(bad)
    with pytest.raises(ArchError, match="missing.json: no such file"):
        ArchConfig.load(tmp_path / "missing.json")


def test_balance_of_mobilebert():
    arch = reference("mobilebert").arch
    # Q, K from the shared 128 bottleneck, V from the 512-wide input, output 128 -> 128
    mha = 2 * (128 * 128 + 128) + (512 * 128 + 128) + (128 * 128 + 128)
    ffn = 4 * (128 * 512 + 512 + 512 * 128 + 128)
    assert arch.mha_params == mha and arch.ffn_params == ffn
    assert arch.attention_ffn_balance == mha / ffn
