"""nas.onnx.export_onnx: a loadable ONNX model that computes what the torch model computes."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import nas
from nas.onnx import INPUT_NAMES, OUTPUT_NAMES, example_inputs, export_onnx
from nas.space import load_space

TINY = list(load_space("tiny").iter_samples(2, seed=5))


@pytest.mark.parametrize("arch", TINY, ids=lambda a: a.id)
def test_export_matches_torch(arch, tmp_path):
    path = export_onnx(arch, tmp_path / "m.onnx", seq_len=16)
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    assert [i.name for i in model.graph.input] == list(INPUT_NAMES)
    assert [o.name for o in model.graph.output] == list(OUTPUT_NAMES)
    assert model.opset_import[0].version == 17
    inputs = example_inputs(16, 1, arch.vocab_size)
    torch.manual_seed(0)
    reference = nas.build_model(arch, attention_implementation="eager").eval()
    with torch.no_grad():
        expected = reference(**inputs)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {k: v.numpy() for k, v in inputs.items()})
    np.testing.assert_allclose(got[0], expected.last_hidden_state.numpy(), atol=2e-5, rtol=1e-4)
    np.testing.assert_allclose(got[1], expected.pooler_output.numpy(), atol=2e-5, rtol=1e-4)


def test_export_of_a_built_model_keeps_its_weights(tmp_path):
    model = nas.build_model(TINY[0]).eval()
    with torch.no_grad():
        model.pooler.dense.bias.fill_(0.5)
    path = export_onnx(model, tmp_path / "m.onnx", seq_len=8, batch=2)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs = example_inputs(8, 2, TINY[0].vocab_size)
    got = session.run(None, {k: v.numpy() for k, v in inputs.items()})
    with torch.no_grad():
        expected = model(**inputs).pooler_output.numpy()
    assert got[1].shape == (2, TINY[0].hidden_size)
    np.testing.assert_allclose(got[1], expected, atol=2e-5)


def test_bad_settings_are_refused_before_writing(tmp_path):
    target = tmp_path / "m.onnx"
    target.write_bytes(b"keep me")
    with pytest.raises(nas.NasError, match="seq_len"):
        export_onnx(TINY[0], target, seq_len=10_000)
    assert target.read_bytes() == b"keep me"


def test_exporter_crash_midway_leaves_existing_file_alone(tmp_path, monkeypatch):
    target = tmp_path / "m.onnx"
    target.write_bytes(b"keep me")

    def half_written_then_crash(model, args, f, **kwargs):  # torch's exporter dying mid-write
        with open(f, "wb") as handle:
            handle.write(b"\x08\x07half")
        raise RuntimeError("exporter crashed")

    monkeypatch.setattr(torch.onnx, "export", half_written_then_crash)
    with pytest.raises(RuntimeError, match="crashed"):
        export_onnx(TINY[0], target, seq_len=8)
    assert target.read_bytes() == b"keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # no temporary file left behind


def test_sdpa_model_is_refused(tmp_path):
    model = nas.build_model(TINY[0], attention_implementation="sdpa")
    with pytest.raises(nas.NasError, match="eager"):
        export_onnx(model, tmp_path / "m.onnx")


def test_dynamic_export_runs_16_and_128_tokens_like_torch(tmp_path):
    # MobileBERT-like with groups and a trigram embedding: every reshape of the model, traced once at 8 tokens.
    arch = nas.ArchConfig(vocab_size=100, max_position_embeddings=160, num_layers=2, hidden_size=32, embedding_size=16,
                          trigram_input=True, intra_bottleneck_size=16, attention_input="shared_bottleneck",
                          num_attention_heads=2, intermediate_size=32, qkv_groups=2, intermediate_groups=2,
                          output_groups=2, num_ffn=2, norm="no_norm", activation="relu")
    model = nas.build_model(arch).eval()
    path = export_onnx(model, tmp_path / "m.onnx", seq_len=8, dynamic=True)
    graph = onnx.load(str(path)).graph
    assert [d.dim_param for d in graph.input[0].type.tensor_type.shape.dim] == ["batch", "sequence"]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch, seq_len in [(1, 16), (2, 128)]:
        inputs = example_inputs(seq_len, batch, arch.vocab_size, seed=seq_len)
        inputs["attention_mask"][-1, seq_len // 2:] = 0  # a padded row: the mask must not be traced away
        with torch.no_grad():
            expected = model(**inputs)
        got = session.run(None, {k: v.numpy() for k, v in inputs.items()})
        assert got[0].shape == (batch, seq_len, arch.hidden_size)
        np.testing.assert_allclose(got[0], expected.last_hidden_state.numpy(), atol=2e-5, rtol=1e-4)
        np.testing.assert_allclose(got[1], expected.pooler_output.numpy(), atol=2e-5, rtol=1e-4)


def test_default_export_keeps_fixed_shapes(tmp_path):
    path = export_onnx(TINY[0], tmp_path / "m.onnx", seq_len=16)
    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [1, 16]
