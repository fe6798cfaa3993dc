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


def test_ops_are_the_count_and_a_connected_dag():
    arch = nas.reference("mobilebert").arch
    op_list = nas.ops(arch, 64)
    cost = nas.count(arch, 64)
    assert sum(op.macs for op in op_list) == cost.macs
    assert sum(op.params for op in op_list) == cost.params
    seen = {"input_ids"}
    for op in op_list:  # in execution order: every op reads only what came before it
        assert set(op.inputs) <= seen, op.name
        seen.add(op.name)
    by_name = {op.name: op for op in op_list}
    for op in op_list:  # consumers mirror inputs
        assert all(op.name in by_name[c].inputs for c in op.consumers), op.name
        assert all(op.name in by_name[i].consumers for i in op.inputs if i != "input_ids"), op.name
    # every op but the pooler's last feeds another: nothing computed is dropped
    assert [op.name for op in op_list if not op.consumers] == ["pooler.tanh"]
    assert by_name[f"layers.{arch.num_layers - 1}.output_bottleneck.norm"].consumers == ("pooler.first_token",)
    assert {op.role for op in op_list} <= set(nas.graph.ROLES)
    # grouped projections carry their group count
    squeezebert = {op.name: op for op in nas.ops(nas.reference("squeezebert").arch, 8)}
    assert squeezebert["layers.0.attention.query"].groups == 4
    assert squeezebert["layers.0.attention_output.dense"].groups == 1


@pytest.mark.parametrize("reference", ["bert-base", "squeezebert", "mobilebert", "mobilebert-tiny"])
def test_the_block_plan_is_the_model_and_the_ops(reference):
    """One description of a block: each projection of the plan is a module of the built block with
    its widths and groups, and an op of the same name; the block holds no other projection."""
    import torch

    from nas.block import block_plan
    from nas.model import Block, GroupedLinear

    arch = nas.reference(reference).arch.replace(num_layers=1, vocab_size=64)
    plan = block_plan(arch)
    block = Block(arch, "eager", 0.0)
    modules = dict(block.named_modules())
    projections = {name for name, m in modules.items() if isinstance(m, (torch.nn.Linear, GroupedLinear))}
    assert projections == {p.path for p in plan.projections}
    ops = {op.name: op for op in nas.ops(arch, 8)}
    for part in plan.projections:
        module, op = modules[part.path], ops[f"layers.0.{part.path}"]
        assert (module.in_features, module.out_features, getattr(module, "groups", 1)) == (part.in_width, part.out_width, part.groups)
        assert op.groups == part.groups and op.params == part.params == sum(t.numel() for t in module.parameters())
    assert arch.mha_params + arch.ffn_params == sum(p.params for p in plan.attention_projections + plan.ffn_projections)


def test_seq_len_is_checked():
    with pytest.raises(nas.NasError, match="seq_len=513"):
        nas.count(nas.ArchConfig(), 513)
