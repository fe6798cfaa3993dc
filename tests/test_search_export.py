"""nas.search.export: every Pareto genome becomes a transformers model folder that reloads exactly
(native family or our nas_encoder with its code), with the teacher's tokenizer, and a dynamic ONNX.

The run folder is written by hand (settings, pareto.json, kept students), so no search runs here."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModel, AutoTokenizer

import nas
from nas.distill import load_student
from nas.hf import arch_from_config
from nas.search.export import export_front
from nas.search.objectives import parse_objectives
from nas.errors import atomic_write_json
from nas.search.run_dir import RunDir, pareto_document
from nas.search.settings import SearchSettings

SMALL = dict(vocab_size=30522, max_position_embeddings=64, num_layers=2, hidden_size=32, embedding_size=16,
             num_attention_heads=2, intermediate_size=32)  # the teacher's vocabulary, so its tokenizer fits
GENOMES = {  # name -> (genome, student kept, transformers model type)
    # grouped projections with a bottleneck and NoNorm: no transformers family holds it
    "grouped-bottleneck": (nas.ArchConfig(**SMALL, intra_bottleneck_size=16, attention_input="bottleneck", qkv_groups=2,
                                          intermediate_groups=2, output_groups=2, norm="no_norm", activation="relu"),
                           True, "nas_encoder"),
    # MobileBERT-shaped with LayerNorm: MobileBertModel would rebuild two norms with another eps
    "mobilebert-layer-norm": (nas.ArchConfig(**SMALL, intra_bottleneck_size=16, attention_input="shared_bottleneck",
                                             num_ffn=2, trigram_input=True), True, "nas_encoder"),
    "mobilebert": (nas.ArchConfig(**SMALL, intra_bottleneck_size=16, attention_input="shared_bottleneck",
                                  norm="no_norm"), True, "mobilebert"),
    "bert-config-only": (nas.ArchConfig(**dict(SMALL, embedding_size=32)), False, "bert"),
}
TEXTS = ["grouped projections with a bottleneck", "NoNorm"]


def _student(arch, seed):
    """A built model with random values in every tensor (norms too), as a trained student has."""
    model = nas.build_model(arch).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    run = RunDir(root / "run")
    atomic_write_json(run.settings_path, SearchSettings(space="tiny", objectives=["params", "flops"], trials=4).to_dict())
    records = []
    for trial, (arch, keep, _) in enumerate(GENOMES.values()):
        student = None
        if keep:  # as nas.distill.save_student writes it: genome.json and the encoder's state dict
            folder = run.students_dir / arch.id
            arch.save(folder / "genome.json")
            save_file(_student(arch, trial).state_dict(), str(folder / "model.safetensors"))
            student = f"students/{arch.id}"
        records.append({"trial": trial, "genome_id": arch.id, "genome": arch.to_dict(), "status": "ok",
                        "scores": {"params": trial + 1, "flops": 10 - trial}, "student": student})
    atomic_write_json(run.pareto_json, pareto_document(records, parse_objectives(["params", "flops"])))
    index = export_front(run, root / "out", onnx=True)
    return run, root / "out", {entry["genome_id"]: entry for entry in index}


def _folder(out, entry):
    return out / entry["folder"] / "transformers"


@pytest.mark.parametrize("name", list(GENOMES))
def test_every_genome_is_a_transformers_model_that_reloads_exactly(exported, name):
    run, out, entries = exported
    arch, keep, model_type = GENOMES[name]
    entry = entries[arch.id]
    folder = _folder(out, entry)
    assert entry["transformers"] == model_type and entry["trust_remote_code"] == (model_type == "nas_encoder")
    config = AutoConfig.from_pretrained(folder)  # nas_encoder: registered by `import nas`
    assert config.model_type == model_type and arch_from_config(config, pooler=arch.pooler) == arch
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert len(tokenizer) == arch.vocab_size and {"tokenizer.json", "vocab.txt"} <= set(os.listdir(folder))
    card = (folder / "README.md").read_text()
    if not keep:  # config only, and it says so
        assert entry["weights"] is None and entry["config_only"] and not (folder / "model.safetensors").exists()
        assert "Config only" in card and "AutoModel.from_config" in card
        assert AutoModel.from_config(config).config.model_type == model_type
        return
    assert entry["weights"] == "distilled student" and not entry["config_only"] and "transformers/model.safetensors" in entry["files"]
    assert ("trust_remote_code=True" in card) == (model_type == "nas_encoder")
    student = load_student(run.root / "students" / arch.id)
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    reloaded = AutoModel.from_pretrained(folder).eval()
    with torch.no_grad():
        theirs = reloaded(**batch)
        ours = student(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    torch.testing.assert_close(theirs.last_hidden_state, ours.last_hidden_state, atol=1e-6, rtol=0)
    torch.testing.assert_close(theirs.pooler_output, ours.pooler_output, atol=1e-6, rtol=0)


def test_onnx_takes_any_batch_and_length(exported):
    run, out, entries = exported
    arch = GENOMES["grouped-bottleneck"][0]
    entry = entries[arch.id]
    assert entry["onnx_input_shape"] == "dynamic [batch, sequence]"
    path = out / entry["folder"] / "model.onnx"
    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param for d in dims] == ["batch", "sequence"]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    student = load_student(run.root / "students" / arch.id)
    batch = AutoTokenizer.from_pretrained(_folder(out, entry))(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = student(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]).last_hidden_state
    got = session.run(["last_hidden_state"], {k: v.numpy() for k, v in batch.items()})[0]
    np.testing.assert_allclose(got, expected.numpy(), atol=2e-5, rtol=1e-4)


def test_index_lists_what_each_folder_holds(exported):
    _, out, entries = exported
    index = json.loads((out / "index.json").read_text())
    assert {e["genome_id"]: e for e in index["genomes"]} == entries
    for entry in entries.values():
        on_disk = sorted(str(p.relative_to(out / entry["folder"])) for p in (out / entry["folder"]).rglob("*") if p.is_file())
        assert entry["files"] == on_disk


CHILD = """
import sys
sys.path.append(sys.argv[1])  # torch and transformers, without the .pth files that make nas importable
try:
    import nas
except ModuleNotFoundError:
    pass
else:
    raise SystemExit(f"nas is importable here: {nas.__file__}")
import torch
from safetensors.torch import save_file
from transformers import AutoModel, AutoTokenizer

folder, out = sys.argv[2], sys.argv[3]
model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
# AutoTokenizer reads config.json too, so it also needs the flag (else it asks on stdin)
batch = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)(%r, padding=True, return_tensors="pt")
with torch.no_grad():
    output = model(**batch)
save_file({"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
           "last_hidden_state": output.last_hidden_state.contiguous()}, out)
print(type(model).__module__)
""" % (TEXTS,)


def test_nas_encoder_folder_loads_with_only_transformers_installed(exported, tmp_path):
    import transformers

    run, out, entries = exported
    arch = GENOMES["grouped-bottleneck"][0]
    folder = _folder(out, entries[arch.id])
    site_packages = Path(transformers.__file__).parents[1]
    if Path(nas.__file__).is_relative_to(site_packages):
        pytest.skip("nas is installed into site-packages (not editable): no interpreter here lacks it")
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {"PATH": os.environ.get("PATH", ""), "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    # -I: no PYTHONPATH, no user site, not the working directory; -S: no site-packages .pth files
    child = subprocess.run([sys.executable, "-I", "-S", str(script), str(site_packages), str(folder), str(tmp_path / "out.safetensors")],
                           cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600)
    assert child.returncode == 0, child.stderr[-3000:]
    assert child.stdout.strip().startswith("transformers_modules.")  # the folder's own code, and no prompt
    got = load_file(str(tmp_path / "out.safetensors"))
    student = load_student(run.root / "students" / arch.id)
    with torch.no_grad():
        expected = student(got["input_ids"], got["attention_mask"]).last_hidden_state
    torch.testing.assert_close(got["last_hidden_state"], expected, atol=1e-6, rtol=0)


def test_config_only_nas_encoder_builds_from_its_folder(tmp_path):
    arch = GENOMES["grouped-bottleneck"][0]
    assert nas.hf.save_config(arch, tmp_path) == "nas_encoder"
    assert {"configuration_nas.py", "modeling_nas.py", "model.py", "arch.py", "errors.py"} <= set(os.listdir(tmp_path))
    config = AutoConfig.from_pretrained(tmp_path, trust_remote_code=True)
    assert set(config.auto_map) == {"AutoConfig", "AutoModel"}
    model = AutoModel.from_config(config, trust_remote_code=True)
    assert nas.hf.from_transformers(model).arch == arch


def test_existing_output_is_never_overwritten(exported):
    run, out, _ = exported
    before = (out / "index.json").read_bytes()
    with pytest.raises(nas.NasError, match="not empty"):
        export_front(run, out)
    assert (out / "index.json").read_bytes() == before
