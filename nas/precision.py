"""Numeric precision of training runs: fp32, or bf16 autocast where the hardware runs it fast.

``precision="auto"`` picks bf16 where it pays: on a CPU that reports AVX512-BF16 or AMX (a matmul
runs 2.5-2.9x faster in bf16 than in fp32 on such a CPU here) and on a CUDA device with bf16
support; fp32 elsewhere. Autocast keeps the master weights and the optimizer state in fp32; the
callers compute losses and scores in fp32 from the autocast outputs.
"""

from __future__ import annotations

import contextlib
import functools
import platform

import torch

PRECISIONS = ("auto", "fp32", "bf16")
_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.cache
def _cpuinfo(field: str) -> str | None:
    """The first value of ``field`` in /proc/cpuinfo (Linux), or None."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == field:
                    return value.strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    """The CPU's model name, for run records ("Intel(R) Xeon(R) ..."), or the platform's guess."""
    return _cpuinfo("model name") or platform.processor() or platform.machine() or "unknown"


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU has native bf16 matmul instructions (AVX512-BF16 or AMX-BF16)."""
    flags = set((_cpuinfo("flags") or "").split())
    return any(flag in flags for flag in _BF16_CPU_FLAGS)


def resolve_precision(precision: str, device: torch.device | str = "cpu") -> str:
    """``auto`` -> ``bf16`` or ``fp32`` for this device; ``fp32``/``bf16`` pass through."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision != "auto":
        return precision
    device = torch.device(device)
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_fast_bf16() else "fp32"


def autocast(precision: str, device: torch.device | str = "cpu"):
    """The context a forward pass runs under: bf16 autocast, or nothing for fp32."""
    if precision == "bf16":
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
