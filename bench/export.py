"""How exactly exported models reproduce ours: ``save_pretrained`` + ``AutoModel.from_pretrained``
for each reference design (and a genome no transformers family holds), and the dynamic-shape ONNX
model at 16 and 128 tokens.

    .venv/bin/python bench/export.py                  # all references; ~3 min on 2 busy cores
    .venv/bin/python bench/export.py --references mobilebert mobilebert-no-opt

Weights are random (build_model, seed 0) plus noise in every tensor, norms included, so a swapped
or mis-scaled tensor shows. Inputs: batch 2, the second row half padding. Printed: the max
absolute difference: the reloaded copy against the transformers model before saving (what the save
and load lose), and against our model (that, plus the two implementations' float rounding).
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

import nas
import nas.hf
from nas.onnx import example_inputs, export_onnx

REFERENCES = ("bert-base", "squeezebert", "mobilebert", "mobilebert-tiny", "mobilebert-no-opt")


def _model(arch: nas.ArchConfig) -> nas.Encoder:
    torch.manual_seed(0)
    model = nas.build_model(arch).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=g))
    return model


def _inputs(arch: nas.ArchConfig, seq_len: int) -> dict[str, torch.Tensor]:
    inputs = example_inputs(seq_len, 2, arch.vocab_size, seed=seq_len)
    inputs["attention_mask"][1, seq_len // 2:] = 0
    return inputs


def _max_diff(a, b) -> float:
    return float(np.abs(np.asarray(a) - np.asarray(b)).max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--references", nargs="+", default=list(REFERENCES))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from transformers import AutoModel, logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()
    cases = [(name, nas.reference(name).arch, None) for name in args.references]
    cases.append(("mobilebert, qkv_groups=4", nas.reference("mobilebert").arch.replace(qkv_groups=4), None))
    cases.append(("mobilebert-no-opt forced native", nas.reference("mobilebert-no-opt").arch, "mobilebert"))
    print(f"{'genome':34s} {'exported as':13s} {'vs saved':>9s} {'hidden vs ours':>14s} {'pooled vs ours':>14s} "
          f"{'onnx 16 tok':>11s} {'onnx 128 tok':>12s}")
    for name, arch, family in cases:
        ours = _model(arch)
        with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the forced family warns about its eps: that is the row's point
            hf_model = nas.hf.to_transformers(ours, family=family)
            hf_model.save_pretrained(folder)
            reloaded = AutoModel.from_pretrained(folder).eval()
            inputs = _inputs(arch, 128)
            with torch.no_grad():
                mine, theirs, saved = ours(**inputs), reloaded(**inputs), hf_model.eval()(**inputs)
            lost = _max_diff(saved.last_hidden_state, theirs.last_hidden_state)
            hidden = _max_diff(mine.last_hidden_state, theirs.last_hidden_state)
            pooled = _max_diff(mine.pooler_output, theirs.pooler_output)
            onnx_diffs = "-", "-"
            if family is None:
                import onnxruntime as ort

                path = export_onnx(ours, Path(folder) / "model.onnx", seq_len=128, dynamic=True)
                session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
                diffs = []
                for seq_len in (16, 128):
                    inputs = _inputs(arch, seq_len)
                    with torch.no_grad():
                        expected = ours(**inputs).last_hidden_state
                    got = session.run(["last_hidden_state"], {k: v.numpy() for k, v in inputs.items()})[0]
                    diffs.append(f"{_max_diff(got, expected):.1e}")
                onnx_diffs = tuple(diffs)
        print(f"{name:34s} {hf_model.config.model_type:13s} {lost:9.1e} {hidden:14.1e} {pooled:14.1e} "
              f"{onnx_diffs[0]:>11s} {onnx_diffs[1]:>12s}", flush=True)


if __name__ == "__main__":
    main()
