import pytest
import torch

import nas
from nas.space import load_space


def _inputs(arch, batch=2, seq_len=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, arch.vocab_size, (batch, seq_len), generator=g)
    mask = torch.ones(batch, seq_len, dtype=torch.long)
    mask[1, seq_len - 4 :] = 0  # the second sequence is padded
    types = torch.zeros_like(ids)
    types[:, seq_len // 2 :] = 1
    return ids, mask, types


@pytest.mark.parametrize("seed", range(6))
def test_shapes_hidden_states_and_attentions(seed):
    import random

    arch = load_space("tiny").sample(random.Random(seed))
    model = nas.build_model(arch).eval()
    ids, mask, types = _inputs(arch)
    out = model(ids, mask, types, output_hidden_states=True, output_attentions=True)
    assert out.last_hidden_state.shape == (2, 12, arch.hidden_size)
    assert out.pooler_output.shape == (2, arch.hidden_size)
    assert len(out.hidden_states) == arch.num_layers + 1
    assert torch.equal(out.hidden_states[-1], out.last_hidden_state)
    assert len(out.attentions) == arch.num_layers
    probs = out.attentions[0]
    assert probs.shape == (2, arch.num_attention_heads, 12, 12)
    torch.testing.assert_close(probs.sum(-1), torch.ones(probs.shape[:-1]))
    # padded keys get no attention
    assert probs[1, :, :, -4:].abs().max() == 0


def test_padding_does_not_change_real_tokens():
    # MobileBERT's trigram input reads the next token: padding with id 0 (a zero embedding row,
    # as the tokenizer pads) must look exactly like the end of the sequence.
    arch = nas.reference("mobilebert").arch.replace(num_layers=2)
    model = nas.build_model(arch).eval()
    ids = torch.randint(1, arch.vocab_size, (1, 6), generator=torch.Generator().manual_seed(0))
    short = model(ids, torch.ones(1, 6, dtype=torch.long)).last_hidden_state
    padded = torch.cat([ids, torch.zeros(1, 4, dtype=torch.long)], dim=1)
    mask = torch.cat([torch.ones(1, 6, dtype=torch.long), torch.zeros(1, 4, dtype=torch.long)], dim=1)
    long = model(padded, mask).last_hidden_state[:, :6]
    torch.testing.assert_close(long, short, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["bert-base", "squeezebert", "mobilebert"])
def test_sdpa_equals_eager(name):
    arch = nas.reference(name).arch.replace(num_layers=2)
    torch.manual_seed(0)
    eager = nas.build_model(arch, "eager").eval()
    sdpa = nas.build_model(arch, "sdpa").eval()
    sdpa.load_state_dict(eager.state_dict())
    ids, mask, types = _inputs(arch)
    a = eager(ids, mask, types).last_hidden_state
    b = sdpa(ids, mask, types).last_hidden_state
    # padded query rows differ only where every key is masked; compare real tokens
    torch.testing.assert_close(a[0], b[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(a[1, :8], b[1, :8], atol=1e-5, rtol=1e-4)


def test_grouped_projection_is_block_diagonal():
    from nas.model import GroupedLinear

    torch.manual_seed(0)
    layer = GroupedLinear(8, 12, groups=4)
    x = torch.randn(3, 5, 8)
    dense = torch.zeros(12, 8)
    for g in range(4):
        dense[g * 3 : (g + 1) * 3, g * 2 : (g + 1) * 2] = layer.weight[g * 3 : (g + 1) * 3]
    torch.testing.assert_close(layer(x), x @ dense.T + layer.bias)
    # the weight layout is Conv1d's without the kernel axis: the same numbers as a grouped conv
    conv = torch.nn.functional.conv1d(x.transpose(1, 2), layer.weight.unsqueeze(-1), layer.bias, groups=4)
    torch.testing.assert_close(layer(x), conv.transpose(1, 2))


def test_build_is_seeded_and_trains():
    arch = nas.reference("squeezebert").arch.replace(num_layers=1, hidden_size=64, embedding_size=64,
                                                     intermediate_size=128, num_attention_heads=4)
    torch.manual_seed(3)
    a = nas.build_model(arch)
    torch.manual_seed(3)
    b = nas.build_model(arch)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    ids, mask, types = _inputs(arch)
    loss = a(ids, mask, types).last_hidden_state.pow(2).mean()
    loss.backward()
    assert all(p.grad is not None for n, p in a.named_parameters() if "pooler" not in n and "word" not in n)
