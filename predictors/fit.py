"""Fitting latency models: the structural predictor and the two baselines it is compared with.

Structural predictor: non-negative least squares of *relative* error (each row divided by its
measured latency, so a 5 ms genome counts as much as a 500 ms one: the targets are relative),
over end-to-end rows and, optionally, kernel microbenchmark rows in the same feature space.
Kernel rows get their own per-session constant (a microbenchmark session binds one small input,
not three token tensors), fitted and dropped.

Baselines, fitted on the same rows:
- ``FlopsLinear``: latency = a * FLOPs + b (least squares of relative error);
- ``HatMLP``: HAT's per-device predictor (Wang et al., 2020): an MLP with three hidden layers of
  400 ReLU units on the architecture vector, each input divided by its maximum (trained on log
  latency, see the class).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from scipy.optimize import nnls

from nas.arch import ATTENTION_INPUTS, ArchConfig
from nas.errors import NasError
from nas.graph import count
from predictors.data import MeasurementSet
from predictors.features import FEATURES, INDEX, genome_features


@dataclass
class Rows:
    """A design matrix over FEATURES, targets in ms, and which rows are kernel microbenchmarks."""

    x: np.ndarray  # (n, len(FEATURES))
    y: np.ndarray  # (n,)
    kernel: np.ndarray  # (n,) bool
    ids: list[str]


def genome_rows(archs: Sequence[ArchConfig], latencies_ms: Sequence[float], seq_len: int) -> Rows:
    x = np.array([genome_features(a, seq_len) for a in archs]).reshape(len(archs), len(FEATURES))
    return Rows(x, np.asarray(latencies_ms, dtype=float), np.zeros(len(archs), bool), [a.id for a in archs])


def kernel_rows(kernels: Sequence[dict[str, Any]]) -> Rows:
    x = np.zeros((len(kernels), len(FEATURES)))
    for i, kernel in enumerate(kernels):
        for name, value in kernel["features"].items():
            if name not in INDEX:
                raise NasError(f"kernel {kernel.get('name')!r}: unknown feature {name!r}")
            x[i, INDEX[name]] = value
    y = np.array([k["latency_ms"] for k in kernels], dtype=float)
    return Rows(x, y, np.ones(len(kernels), bool), [str(k.get("name")) for k in kernels])


def stack(*parts: Rows) -> Rows:
    return Rows(
        np.vstack([p.x for p in parts]),
        np.concatenate([p.y for p in parts]),
        np.concatenate([p.kernel for p in parts]),
        [i for p in parts for i in p.ids],
    )


def rows_from_set(data: MeasurementSet, use_kernels: bool = True) -> Rows:
    """End-to-end rows of the trusted records, plus the trusted kernels' rows if asked and present."""
    records = data.trusted_records()
    if not records:
        raise NasError(f"{data.path}: no trusted measurements to fit on")
    archs = [data.genomes[r["genome_id"]] for r in records]
    rows = genome_rows(archs, [r["latency_ms"] for r in records], data.seq_len)
    kernels = [k for k in data.kernels if k.get("trusted", True)]
    if use_kernels and kernels:
        rows = stack(rows, kernel_rows(kernels))
    return rows


# ---- structural predictor -------------------------------------------------------------------


def fit_structural(rows: Rows, kernel_weight: float = 0.3, ridge: float = 1e-4, active: Sequence[str] | None = None) -> dict[str, float]:
    """Non-negative coefficients (ms per feature unit) minimising the relative squared error.

    `kernel_weight` scales kernel rows against end-to-end rows; `ridge` is a small pull of every
    coefficient towards zero in units of the column's typical contribution (it only decides
    between features that explain the data equally well); `active` limits the fit to a subset.
    """
    if len(rows.y) == 0:
        raise NasError("nothing to fit on")
    if np.any(rows.y <= 0) or not np.all(np.isfinite(rows.y)):
        raise NasError("latencies to fit on must be positive and finite")
    names = list(active) if active is not None else list(FEATURES)
    columns = [INDEX[n] for n in names]
    x = rows.x[:, columns]
    # Kernel rows: their own session constant instead of the model's.
    if rows.kernel.any():
        const = names.index("constant") if "constant" in names else None
        kernel_const = rows.kernel.astype(float)
        if const is not None:
            x = x.copy()
            x[rows.kernel, const] = 0.0
        x = np.hstack([x, kernel_const[:, None]])
    weights = np.where(rows.kernel, kernel_weight, 1.0) / rows.y
    a = x * weights[:, None]
    b = rows.y * weights
    # Scale columns to unit size so NNLS is well conditioned, then undo.
    scale = np.abs(a).max(axis=0)
    scale[scale == 0] = 1.0
    a_scaled = a / scale
    if ridge > 0:
        a_scaled = np.vstack([a_scaled, math.sqrt(ridge) * np.eye(a_scaled.shape[1])])
        b = np.concatenate([b, np.zeros(a_scaled.shape[1])])
    solution, _ = nnls(a_scaled, b, maxiter=50 * a_scaled.shape[1])
    solution = solution / scale
    coefficients = {name: 0.0 for name in FEATURES}
    for name, value in zip(names, solution[: len(names)]):
        coefficients[name] = float(value)
    return coefficients


def predict_rows(coefficients: dict[str, float], x: np.ndarray) -> np.ndarray:
    vector = np.array([coefficients[n] for n in FEATURES])
    return x @ vector


def cross_validate(rows: Rows, folds: int = 5, seed: int = 0, **fit_kwargs) -> np.ndarray:
    """Out-of-fold predictions for the end-to-end rows (kernel rows always stay in training)."""
    e2e = np.flatnonzero(~rows.kernel)
    rng = np.random.default_rng(seed)
    order = rng.permutation(e2e)
    predictions = np.full(len(rows.y), np.nan)
    for k in range(folds):
        held = order[k::folds]
        keep = np.setdiff1d(np.arange(len(rows.y)), held)
        sub = Rows(rows.x[keep], rows.y[keep], rows.kernel[keep], [rows.ids[i] for i in keep])
        coefficients = fit_structural(sub, **fit_kwargs)
        predictions[held] = predict_rows(coefficients, rows.x[held])
    return predictions[e2e]


# ---- baselines ---------------------------------------------------------------------------------


class FlopsLinear:
    """latency = a * FLOPs + b, least squares of relative error (the usual proxy)."""

    name = "FLOPs-linear"

    def fit(self, archs: Sequence[ArchConfig], y: Sequence[float], seq_len: int) -> "FlopsLinear":
        flops = np.array([count(a, seq_len).flops for a in archs], dtype=float)
        y = np.asarray(y, dtype=float)
        a = np.stack([flops, np.ones_like(flops)], axis=1) / y[:, None]
        (self.slope, self.intercept), *_ = np.linalg.lstsq(a, np.ones_like(y), rcond=None)
        self.seq_len = seq_len
        return self

    def predict(self, archs: Sequence[ArchConfig]) -> np.ndarray:
        flops = np.array([count(a, self.seq_len).flops for a in archs], dtype=float)
        return self.slope * flops + self.intercept


def arch_vector(arch: ArchConfig) -> list[float]:
    """HAT's architecture encoding adapted to this genome: every searched field as a number
    (flags 0/1, a missing bottleneck 0, attention input one-hot)."""
    return [
        arch.embedding_size,
        float(arch.trigram_input),
        arch.num_layers,
        arch.hidden_size,
        arch.intra_bottleneck_size or 0,
        *[float(arch.attention_input == v) for v in ATTENTION_INPUTS],
        arch.num_attention_heads,
        arch.qkv_groups,
        arch.post_attention_groups,
        arch.intermediate_size,
        arch.num_ffn,
        arch.intermediate_groups,
        arch.output_groups,
        float(arch.activation == "gelu"),
        float(arch.norm == "layer_norm"),
    ]


class HatMLP:
    """HAT's latency predictor (Wang et al., 2020): an MLP with three hidden layers of 400 ReLU
    units on the architecture vector, each input divided by its training maximum, Adam, full batch.

    One change in the baseline's favour: it regresses log latency (standardised) instead of
    latency, so it is trained for relative error like ours; with HAT's plain MSE on latency it
    scored about 55 % MAPE here against about 33 % this way (100 training genomes).
    """

    name = "HAT-style MLP"

    def __init__(self, hidden: int = 400, layers: int = 3, steps: int = 2000, lr: float = 1e-3,
                 weight_decay: float = 1e-4, seed: int = 0) -> None:
        self.hidden, self.layers, self.steps, self.lr = hidden, layers, steps, lr
        self.weight_decay, self.seed = weight_decay, seed

    def fit(self, archs: Sequence[ArchConfig], y: Sequence[float], seq_len: int) -> "HatMLP":
        import torch
        from torch import nn

        torch.manual_seed(self.seed)
        x = torch.tensor([arch_vector(a) for a in archs], dtype=torch.float32)
        # Each input divided by its training maximum; one that is 0 throughout training (a bottleneck
        # or attention input no training genome has) is dropped: the MLP cannot have learned it, and
        # dividing by ~0 sent a held-out genome's value to ~1e11 and its prediction to inf.
        x_max = x.abs().max(dim=0).values
        self.x_scale = torch.where(x_max > 0, 1 / x_max, torch.zeros_like(x_max))
        target = torch.log(torch.tensor(list(y), dtype=torch.float32))
        self.y_mean, self.y_std = float(target.mean()), float(target.std().clamp(min=1e-6)) if len(y) > 1 else 1.0
        dims = [x.shape[1]] + [self.hidden] * self.layers
        modules: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:]):
            modules += [nn.Linear(a, b), nn.ReLU()]
        self.net = nn.Sequential(*modules, nn.Linear(dims[-1], 1))
        optimiser = torch.optim.Adam(self.net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        inputs, goal = x * self.x_scale, (target - self.y_mean) / self.y_std
        for _ in range(self.steps):
            optimiser.zero_grad()
            loss = ((self.net(inputs).squeeze(1) - goal) ** 2).mean()
            loss.backward()
            optimiser.step()
        return self

    def predict(self, archs: Sequence[ArchConfig]) -> np.ndarray:
        import torch

        x = torch.tensor([arch_vector(a) for a in archs], dtype=torch.float32)
        with torch.no_grad():
            log_ms = self.net(x * self.x_scale).squeeze(1) * self.y_std + self.y_mean
        return torch.exp(log_ms).numpy().astype(float)


# ---- scores ----------------------------------------------------------------------------------


def scores(measured: Sequence[float], predicted: Sequence[float]) -> dict[str, float]:
    """RMSE (ms), MAPE, share within +-5 % and +-10 %, Kendall tau, worst relative error."""
    from scipy.stats import kendalltau

    y = np.asarray(measured, dtype=float)
    p = np.asarray(predicted, dtype=float)
    rel = (p - y) / y
    tau = kendalltau(y, p).statistic if len(y) > 1 else float("nan")
    return {
        "n": int(len(y)),
        "rmse_ms": float(np.sqrt(np.mean((p - y) ** 2))),
        "mape": float(np.mean(np.abs(rel))),
        "within_5": float(np.mean(np.abs(rel) <= 0.05)),
        "within_10": float(np.mean(np.abs(rel) <= 0.10)),
        "kendall_tau": float(tau),
        "max_abs_rel": float(np.max(np.abs(rel))),
    }
