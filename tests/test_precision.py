"""nas.precision: the device and precision of a run, their validation and resolution, and bf16 runs' determinism.

Hardware this machine may lack (a CUDA device, a CPU without bf16 instructions) is simulated only
here, in the resolution tests, by replacing what torch and /proc/cpuinfo report.
"""

from __future__ import annotations

import logging

import pytest
import torch

import nas.precision as precision
from nas.cli import main
from nas.distill import DistillConfig, DistillError, distill
from nas.finetune.run import FinetuneConfig, FinetuneError
from nas.space import load_space

TINY = load_space("tiny").genome(
    {"num_layers": 1, "intra_bottleneck_size": 32, "attention_input": "shared_bottleneck", "num_attention_heads": 2,
     "qkv_groups": 2, "intermediate_size": 64, "num_ffn": 2, "intermediate_groups": 2, "output_groups": 1,
     "trigram_input": True, "activation": "relu", "norm": "no_norm"}
)  # fmt: skip
NO_CUDA = not torch.cuda.is_available()


@pytest.fixture
def cpu_flags(monkeypatch):
    """Make /proc/cpuinfo report the given flags (and a CPU name) for the rest of the test."""

    def set_flags(flags: str) -> None:
        info = {"flags": flags, "model name": "Simulated CPU"}
        monkeypatch.setattr(precision, "_cpuinfo", info.get)
        precision._warn_slow_bf16.cache_clear()

    yield set_flags
    precision._warn_slow_bf16.cache_clear()


@pytest.fixture
def fake_cuda(monkeypatch):
    """Make torch report ``count`` CUDA devices, with or without bf16 support."""

    def set_cuda(count: int, bf16: bool = True) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Simulated GPU")

    return set_cuda


# ---- precision -----------------------------------------------------------------------------------


def test_auto_picks_bf16_on_a_cpu_with_bf16_instructions(cpu_flags):
    cpu_flags("fpu sse2 avx2 avx512f avx512_bf16 amx_tile")
    assert precision.cpu_has_fast_bf16()
    assert precision.resolve_precision("auto") == "bf16"
    cpu_flags("fpu sse2 avx2 amx_bf16")
    assert precision.resolve_precision("auto", "cpu") == "bf16"


def test_auto_picks_fp32_on_a_cpu_without_them_and_bf16_warns_once(cpu_flags, caplog):
    cpu_flags("fpu sse2 avx2 avx512f avx512bw")
    assert not precision.cpu_has_fast_bf16()
    assert precision.resolve_precision("auto") == "fp32"
    with caplog.at_level(logging.WARNING, logger="nas.precision"):
        assert precision.resolve_precision("bf16") == "bf16"  # allowed, but slow
        assert precision.resolve_precision("bf16") == "bf16"
    warnings = [r.getMessage() for r in caplog.records if r.name == "nas.precision"]
    assert len(warnings) == 1
    assert "Simulated CPU" in warnings[0] and "slower than fp32" in warnings[0] and "\n" not in warnings[0]


def test_this_cpu_resolves_auto_from_its_own_flags():
    expected = "bf16" if precision.cpu_has_fast_bf16() else "fp32"
    assert DistillConfig(device="cpu").resolved_hardware == (torch.device("cpu"), expected)
    assert FinetuneConfig(device="cpu").resolved_hardware == (torch.device("cpu"), expected)


# ---- device --------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", ["gpu", "cuda:", "cuda:x", "CPU", "cuda:0,1", "", "mps"])
def test_a_misspelt_device_names_the_setting(device):
    with pytest.raises(DistillError, match=r"device=.*auto, cpu, cuda or cuda:N"):
        DistillConfig(device=device)
    with pytest.raises(FinetuneError, match=r"device=.*auto, cpu, cuda or cuda:N"):
        FinetuneConfig(device=device)


def test_device_resolution_without_cuda(fake_cuda):
    fake_cuda(0)
    assert precision.resolve_device("auto") == torch.device("cpu")
    assert precision.resolve_device("cpu") == torch.device("cpu")
    for device in ("cuda", "cuda:0", "cuda:3"):
        with pytest.raises(ValueError, match="no CUDA device"):
            precision.resolve_device(device)
    # spelled right, so the config is valid (a search's driver may have no GPU); running it is not
    config = DistillConfig(device="cuda")
    with pytest.raises(DistillError, match=r"^distill setting device='cuda': this machine has no CUDA device.*use cpu or auto$"):
        config.resolved_hardware


def test_device_and_precision_resolution_with_cuda(fake_cuda):
    fake_cuda(2, bf16=True)
    assert precision.resolve_device("auto") == torch.device("cuda", 0)
    assert precision.resolve_device("cuda") == torch.device("cuda", 0)
    assert precision.resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ValueError, match=r"2 CUDA device\(s\), cuda:0 to cuda:1"):
        precision.resolve_device("cuda:2")
    assert precision.resolve_run("auto", "auto") == (torch.device("cuda", 0), "bf16")
    assert precision.resolve_run("cpu", "fp32") == (torch.device("cpu"), "fp32")
    assert precision.device_model("cuda:1") == "Simulated GPU"
    fake_cuda(1, bf16=False)  # a GPU older than Ampere
    assert precision.resolve_run("auto", "auto") == (torch.device("cuda", 0), "fp32")
    with pytest.raises(FinetuneError, match=r"precision='bf16': Simulated GPU has no bf16 support; use fp32 or auto"):
        FinetuneConfig(device="cuda", precision="bf16").resolved_hardware


# ---- runs ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_config(tmp_path_factory) -> DistillConfig:
    return DistillConfig.quick(steps=6, seq_len=16, batch_size=4, heldout_examples=8, threads=1,
                               cache_dir=str(tmp_path_factory.mktemp("nas-cache")))  # fmt: skip


def test_bf16_runs_are_deterministic_and_record_their_hardware(small_config):
    config = small_config.replace(precision="bf16", device="cpu")
    first, again = distill(TINY, config), distill(TINY, config)
    assert first.status == again.status == "ok"
    assert (first.precision, first.device, first.hardware) == ("bf16", "cpu", precision.cpu_model())
    assert [c.to_dict() | {"elapsed_s": 0, "train_s": 0} for c in first.checkpoints] == [
        c.to_dict() | {"elapsed_s": 0, "train_s": 0} for c in again.checkpoints
    ]
    for name, tensor in first.student.state_dict().items():
        assert tensor.dtype == torch.float32, f"{name}: master weights must stay fp32"
        assert torch.equal(tensor, again.student.state_dict()[name]), name
    recorded = first.to_dict()
    assert (recorded["precision"], recorded["device"], recorded["hardware"]) == ("bf16", "cpu", precision.cpu_model())
    # and bf16 did change the arithmetic: the fp32 run's numbers differ
    fp32 = distill(TINY, config.replace(precision="fp32"))
    assert fp32.checkpoints[-1].heldout_loss != first.checkpoints[-1].heldout_loss


@pytest.mark.skipif(not NO_CUDA, reason="this machine has a CUDA device")
@pytest.mark.parametrize("command", ["distill", "finetune"])
def test_cli_refuses_a_cuda_device_it_does_not_have(capsys, tmp_path, command):
    genome = TINY.save(tmp_path / "genome.json")
    code = main([command, "--arch", str(genome), "--device", "cuda", "--cache-dir", str(tmp_path)])
    out, err = capsys.readouterr()
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "device='cuda'" in lines[0] and "no CUDA device" in lines[0], err
    assert "Traceback" not in err and not list(tmp_path.glob("**/windows-*"))  # nothing was prepared


def test_cli_refuses_a_misspelt_device(capsys, tmp_path):
    genome = TINY.save(tmp_path / "genome.json")
    code = main(["distill", "--arch", str(genome), "--device", "gpu:0"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "device='gpu:0'" in err
