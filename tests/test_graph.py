"""nas.count equals fvcore's count of the built model exactly, and the model's parameter count."""

import random

import pytest

import nas
from nas.graph import fvcore_macs as _fvcore
from nas.space import load_space


def fvcore_macs(arch, seq_len):
    model = nas.build_model(arch).eval()
    return _fvcore(model, seq_len), sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", nas.reference_names())
def test_count_equals_fvcore_on_references(name):
    arch = nas.reference(name).arch
    if name == "ib-bert-large":  # 332M parameters: count at a short length to keep the test fast
        seq_len = 16
    else:
        seq_len = 128
    macs, params = fvcore_macs(arch, seq_len)
    cost = nas.count(arch, seq_len)
    assert cost.macs == macs
    assert cost.params == params
    assert cost.flops == 2 * macs


def test_published_counts_of_transformers_models():
    # REFERENCES.md: counted with transformers' random-init models
    assert nas.count(nas.reference("bert-base").arch).params == 109_482_240
    assert nas.count(nas.reference("squeezebert").arch).params == 51_089_664
    assert nas.count(nas.reference("mobilebert").arch).params == 24_844_544


def test_count_equals_fvcore_on_50_random_mobile_genomes():
    space = load_space("mobile")
    rng = random.Random(1234)
    for _ in range(50):
        arch = space.sample(rng)
        seq_len = rng.choice([8, 32, 128])
        macs, params = fvcore_macs(arch, seq_len)
        cost = nas.count(arch, seq_len)
        assert (cost.macs, cost.params) == (macs, params), arch


def test_op_graph_is_the_count():
    arch = nas.reference("mobilebert").arch
    graph = nas.op_graph(arch, 64)
    cost = nas.count(arch, 64)
    assert sum(d.get("macs", 0) for _, d in graph.nodes(data=True)) == cost.macs
    assert sum(d.get("params", 0) for _, d in graph.nodes(data=True)) == cost.params
    import networkx as nx

    assert nx.is_directed_acyclic_graph(graph)
    # one source (the token ids), and every op reachable from it
    assert [n for n in graph if graph.in_degree(n) == 0] == ["input_ids"]
    assert nx.descendants(graph, "input_ids") == set(graph) - {"input_ids"}
    # grouped projections carry their group count
    sq = nas.op_graph(nas.reference("squeezebert").arch, 8)
    assert sq.nodes["layers.0.attention.query"]["groups"] == 4
    assert sq.nodes["layers.0.attention_output"]["groups"] == 1


def test_seq_len_is_checked():
    with pytest.raises(nas.NasError, match="seq_len=513"):
        nas.count(nas.ArchConfig(), 513)
