"""Export a genome's encoder to ONNX, the format latency is measured in (ONNX Runtime on a host,
``onnxruntime_perf_test`` on a phone, or TFLite after conversion).

The legacy TorchScript exporter (``dynamo=False``, opset 17) is used because it needs no
``onnxscript`` and gives a plain graph: nn.LayerNorm becomes one LayerNormalization node, GELU an
Erf pattern that ONNX Runtime fuses, grouped projections Reshape/Transpose/MatMul. Attention is
exported in its eager form (two explicit MatMuls and a Softmax), the ops ``nas.ops`` lists.
Shapes are static by default (batch and sequence length fixed, what the latency harness measures:
a latency model is for one sequence length); ``dynamic=True`` names the batch and sequence axes
``batch`` and ``sequence`` and leaves them free, for models people run on their own inputs.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

from nas.arch import ArchConfig
from nas.errors import NasError
from nas.model import Encoder, build_model

OPSET = 17
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT_NAMES = ("last_hidden_state", "pooler_output")
_DYNAMIC_AXES = {
    **{name: {0: "batch", 1: "sequence"} for name in INPUT_NAMES},
    "last_hidden_state": {0: "batch", 1: "sequence"},
    "pooler_output": {0: "batch"},
}


class _Exportable(nn.Module):
    """The encoder with plain tensor inputs and outputs (the exporter cannot return empty tuples)."""

    def __init__(self, encoder: Encoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor):
        out = self.encoder(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        return out.last_hidden_state, out.pooler_output


def example_inputs(seq_len: int = 128, batch: int = 1, vocab_size: int = 30522, seed: int = 0) -> dict[str, torch.Tensor]:
    """Inputs named as in the exported graph: random token ids, an all-ones mask, zero token types."""
    generator = torch.Generator().manual_seed(seed)
    return {
        "input_ids": torch.randint(1, vocab_size, (batch, seq_len), generator=generator),
        "attention_mask": torch.ones(batch, seq_len, dtype=torch.long),
        "token_type_ids": torch.zeros(batch, seq_len, dtype=torch.long),
    }


def export_onnx(
    arch_or_model: ArchConfig | Encoder, path: str | Path, seq_len: int = 128, batch: int = 1, *, dynamic: bool = False
) -> Path:
    """Write the encoder for a genome (random weights, seed 0) or a built model to `path` as ONNX.

    Inputs ``input_ids``, ``attention_mask``, ``token_type_ids`` (int64, shape (batch, seq_len));
    outputs ``last_hidden_state`` and ``pooler_output``. With ``dynamic=True`` the batch and
    sequence axes take any size (a sequence up to ``max_position_embeddings``); `seq_len` and
    `batch` are then only the shapes it is traced at. The file appears complete or not at all.
    """
    path = Path(path)
    if isinstance(arch_or_model, ArchConfig):
        torch.manual_seed(0)
        model = build_model(arch_or_model, attention_implementation="eager")
    elif isinstance(arch_or_model, Encoder):
        model = arch_or_model
        if any(getattr(m, "implementation", "eager") != "eager" for m in model.modules()):
            raise NasError("export_onnx: the model uses SDPA attention; build it with attention_implementation='eager'")
    else:
        raise NasError(f"export_onnx: expected an ArchConfig or a nas.Encoder, got {type(arch_or_model).__name__}")
    arch = model.arch
    if not 1 <= seq_len <= arch.max_position_embeddings:
        raise NasError(f"export_onnx: seq_len={seq_len} must be in 1..{arch.max_position_embeddings}")
    if batch < 1:
        raise NasError(f"export_onnx: batch={batch} must be at least 1")
    inputs = example_inputs(seq_len, batch, arch.vocab_size)
    was_training = model.training
    model.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp_name, 0o644)  # mkstemp makes it private; a model file is for sharing
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice; users cannot act on it
            torch.onnx.export(
                _Exportable(model),
                tuple(inputs[name] for name in INPUT_NAMES),
                tmp_name,
                dynamo=False,
                opset_version=OPSET,
                input_names=list(INPUT_NAMES),
                output_names=list(OUTPUT_NAMES),
                do_constant_folding=True,
                dynamic_axes=_DYNAMIC_AXES if dynamic else None,
            )
        os.replace(tmp_name, path)  # never leave a half-written model under the final name
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
        model.train(was_training)
    return path
