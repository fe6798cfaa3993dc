"""Numeric precision of a measured model: fp32, int8 (ONNX Runtime dynamic quantization), bf16.

Precision is part of a device's identity, like the runtime and the thread count: an int8 model on
a phone is a different target from the fp32 one (its matmuls run on other kernels), so a
predictor, a measurement set and a bundle each record theirs and refuse to be mixed.

- ``int8``: ONNX Runtime dynamic quantization (``onnxruntime.quantization.quantize_dynamic``,
  int8 weights, activations quantized on the fly per tensor) of the fp32 ONNX export. This is
  what an ONNX Runtime phone build runs as "int8". A TFLite int8 model needs a converter from
  ONNX (onnx2tf, ai-edge-torch), which pulls in TensorFlow; none is installed with nas, so a
  TFLite user converts the fp32 bundle and quantizes with the TFLite converter.
- ``bf16``: PyTorch eager under ``torch.autocast("cpu", dtype=torch.bfloat16)`` (fast on CPUs
  with AVX512-BF16 / AMX); there is no bf16 ONNX export here.
"""

from __future__ import annotations

import logging
from pathlib import Path

from nas.errors import NasError, atomic_path
from predictors.data import PRECISIONS

# Which runtime can run which precision on this machine.
RUNTIME_PRECISIONS = {"onnxruntime": ("fp32", "int8"), "torch": ("fp32", "bf16")}


def check_precision(runtime: str, precision: str) -> None:
    """Raise a NasError naming the fix when `runtime` cannot measure `precision` here."""
    if precision not in PRECISIONS:
        raise NasError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    allowed = RUNTIME_PRECISIONS.get(runtime)
    if allowed is not None and precision not in allowed:
        raise NasError(f"runtime {runtime} measures precision {' or '.join(allowed)} here, not {precision}; "
                       f"use {'torch for bf16' if precision == 'bf16' else 'onnxruntime for int8'}")


def quantize_int8(onnx_in: str | Path, onnx_out: str | Path) -> Path:
    """Write the int8 dynamic quantization of the fp32 ONNX model `onnx_in` to `onnx_out`
    (int8 weights of MatMul/Gemm/Gather, per-tensor; written to a temporary name and renamed)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    onnx_in, onnx_out = Path(onnx_in), Path(onnx_out)
    if not onnx_in.is_file():
        raise NasError(f"{onnx_in}: no such ONNX model to quantize")
    root = logging.getLogger()
    level = root.level
    try:
        root.setLevel(logging.ERROR)  # it advises "pre-processing" on every call; not needed for dynamic quantization
        with atomic_path(onnx_out, ".onnx") as tmp:
            quantize_dynamic(str(onnx_in), str(tmp), weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)
    return onnx_out
