"""Where a training run executes and in what precision: the ``device`` and ``precision`` settings.

``device="auto"`` is the first CUDA device torch sees (under Ray, the GPU the trial was given:
Ray sets CUDA_VISIBLE_DEVICES), else the CPU. ``precision="auto"`` picks bf16 where it pays: on a
CPU that reports AVX512-BF16 or AMX (a matmul runs 2.5-7x faster in bf16 than in fp32 on such a
CPU here) and on a CUDA device with bf16 support; fp32 elsewhere. On a CPU without those
instructions bf16 is allowed but slow: the same matmul ran about 4x *slower* than fp32 here with
oneDNN held to AVX512 without BF16 (``bench/distill.py isa``); a run warns once.

Autocast keeps the master weights and the optimizer state in fp32; the callers compute losses and
scores in fp32 from the autocast outputs.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import platform
import re

import torch

PRECISIONS = ("auto", "fp32", "bf16")
DEVICE_FORMS = "auto, cpu, cuda or cuda:N"
_DEVICE = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")
# Measured by `bench/distill.py isa` (1 thread, 1024x512 @ 512x512): bf16 / fp32 time with oneDNN
# held to AVX512 without BF16 (4.0-4.8x over runs), the closest this machine gets to a CPU without
# bf16 instructions.
SLOW_BF16_FACTOR = 4
log = logging.getLogger("nas.precision")
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


def check_device(device: str) -> None:
    """ValueError unless ``device`` is spelled ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (no hardware check)."""
    if not isinstance(device, str) or not _DEVICE.match(device):
        raise ValueError(f"must be one of {DEVICE_FORMS}")


def resolve_device(device: str) -> torch.device:
    """The torch device a run uses: ``auto`` -> ``cuda:0`` when torch sees a CUDA device, else ``cpu``.

    Raises ValueError (with the fix) for ``cuda``/``cuda:N`` on a machine without that device.
    """
    check_device(device)
    if device == "auto":
        return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    if device == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError("this machine has no CUDA device torch can use (torch.cuda.is_available() is False); use cpu or auto")
    resolved = torch.device(device if ":" in device else "cuda:0")
    count = torch.cuda.device_count()
    if resolved.index >= count:
        raise ValueError(f"this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}; use one of those, or auto")
    return resolved


def device_model(device: torch.device | str = "cpu") -> str:
    """The model name of the hardware behind ``device``, for run records ("NVIDIA H100 ...", a CPU's name)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_model()


def resolve_precision(precision: str, device: torch.device | str = "cpu") -> str:
    """``auto`` -> ``bf16`` or ``fp32`` for this device; ``fp32``/``bf16`` pass through.

    ``bf16`` on a CUDA device without bf16 support raises ValueError; on a CPU without bf16
    instructions it is allowed, with one warning per process (it runs several times slower).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    device = torch.device(device)
    if device.type == "cuda":
        supported = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        if precision == "bf16" and not supported:
            raise ValueError(f"{device_model(device)} has no bf16 support; use fp32 or auto")
        if precision == "auto":
            return "bf16" if supported else "fp32"
        return precision
    if precision == "auto":
        return "bf16" if cpu_has_fast_bf16() else "fp32"
    if precision == "bf16" and not cpu_has_fast_bf16():
        _warn_slow_bf16()
    return precision


def resolve_run(device: str, precision: str) -> tuple[torch.device, str]:
    """A run's (torch device, "fp32" or "bf16") from its ``device`` and ``precision`` settings.

    Raises ValueError that names the setting and the fix (``device='cuda': this machine has no
    CUDA device ...``) before anything is loaded or trained.
    """
    try:
        resolved = resolve_device(device)
    except ValueError as err:
        raise ValueError(f"device={device!r}: {err}") from None
    try:
        return resolved, resolve_precision(precision, resolved)
    except ValueError as err:
        raise ValueError(f"precision={precision!r}: {err}") from None


@functools.cache
def _warn_slow_bf16() -> None:
    log.warning(
        "precision bf16: this CPU (%s) reports neither AVX512-BF16 nor AMX-BF16; bf16 matmuls run about "
        "%gx slower than fp32 on such a CPU (a matmul measured with oneDNN held to AVX512 without BF16); "
        "auto would pick fp32", cpu_model(), SLOW_BF16_FACTOR,
    )


def autocast(precision: str, device: torch.device | str = "cpu") -> contextlib.AbstractContextManager:
    """The context a forward pass runs under: bf16 autocast, or nothing for fp32."""
    if precision == "bf16":
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
