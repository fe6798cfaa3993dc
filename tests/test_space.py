import random

import pytest

import nas
from nas.space import SpaceError, load_space, parse_space, space_names


def test_shipped_spaces_load_and_sample_valid_genomes():
    assert {"mobile", "tiny", "balanced", "bert_neighbourhood", "squeezebert_neighbourhood",
            "mobilebert_neighbourhood"} <= set(space_names())
    for name in space_names():
        space = load_space(name)
        for arch in space.iter_samples(20, seed=0):
            assert space.contains(arch), (name, space.why_not(arch))


@pytest.mark.parametrize("name", ["bert-base", "squeezebert", "mobilebert", "mobilebert-tiny", "mobilebert-no-opt"])
def test_mobile_space_holds_the_references(name):
    assert load_space("mobile").why_not(nas.reference(name).arch) is None


def test_neighbourhoods_hold_their_reference():
    assert load_space("bert_neighbourhood").contains(nas.reference("bert-base").arch)
    assert load_space("squeezebert_neighbourhood").contains(nas.reference("squeezebert").arch)
    assert load_space("mobilebert_neighbourhood").contains(nas.reference("mobilebert").arch)
    assert not load_space("tiny").contains(nas.reference("mobilebert").arch)


def test_sampling_is_seeded():
    space = load_space("mobile")
    assert [a.id for a in space.iter_samples(5, 7)] == [a.id for a in space.iter_samples(5, 7)]
    assert [a.id for a in space.iter_samples(5, 7)] != [a.id for a in space.iter_samples(5, 8)]


def test_balance_dimension_derives_the_ffn_width():
    space = load_space("balanced")
    rng = random.Random(0)
    for _ in range(30):
        values = {name: rng.choice(dim.values) for name, dim in space.dimensions.items()}
        arch = space.genome(values)
        assert arch.intermediate_size % 64 == 0
        # the derived width lands within half a rounding step of the requested balance
        wider = arch.replace(intermediate_size=arch.intermediate_size + 64)
        narrower = arch.replace(intermediate_size=max(64, arch.intermediate_size - 64))
        target = values["attention_ffn_balance"]
        assert abs(arch.attention_ffn_balance - target) <= max(
            abs(wider.attention_ffn_balance - target), abs(narrower.attention_ffn_balance - target)
        ) + 1e-12
    assert space.contains(nas.reference("mobilebert-tiny").arch)


@pytest.mark.parametrize(
    "data, message",
    [
        ({"dimensions": {"num_layer": [1, 2]}}, "dimensions.num_layer: not a genome field"),
        ({"dimensions": {"num_layers": {"range": [4, 1]}}}, "dimensions.num_layers.range: high 1 is below low 4"),
        ({"dimensions": {"num_layers": {"range": [1, 10], "step": 4}}}, "dimensions.num_layers.step: 4 does not divide"),
        ({"dimensions": {"activation": ["gelu", "swish"]}}, "dimensions.activation: 'swish' is not one of gelu, relu"),
        ({"dimensions": {"hidden_size": [64, "wide"]}}, "dimensions.hidden_size: 'wide' is not a valid hidden_size"),
        ({"dimensions": {"num_layers": []}}, "dimensions.num_layers.choices: must be a non-empty list"),
        ({"dimensions": {}}, "dimensions: must be a non-empty mapping"),
        ({"dimensions": {"num_layers": [1]}, "fixed": {"num_layers": 2}}, "also in 'fixed'"),
        ({"dimensions": {"num_layers": [1]}, "conditions": ["__import__('os')"]}, "Call is not allowed"),
        ({"dimensions": {"num_layers": [1]}, "conditions": ["depth > 2"]}, "unknown name 'depth'"),
        ({"dimensions": {"num_layers": [1]}, "extras": 1}, "extras: unknown key"),
        ({"dimensions": {"qkv_groups": [5]}, "fixed": {}}, "no valid genome"),
    ],
)
def test_bad_space_files_get_one_line_errors(data, message):
    with pytest.raises(SpaceError) as err:
        space = parse_space(data, "bad.yaml")
        space.sample(random.Random(0), max_draws=50)
    text = str(err.value)
    assert text.startswith("space bad.yaml: ") and "\n" not in text
    assert message in text


def test_bad_yaml_and_unknown_name(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("dimensions: {num_layers: [1, 2\n")
    with pytest.raises(SpaceError, match="broken.yaml: not valid YAML at line"):
        load_space(path)
    with pytest.raises(SpaceError, match="unknown space 'nope'"):
        load_space("nope")
