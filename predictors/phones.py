"""Predictors for devices with only a handful of measured genomes: a few scale factors on a base
predictor's per-kind costs.

With four published latencies (Pixel 4) or two (Pixel 3) a model may have two or three free
parameters, not thirty. The base predictor (fitted on hundreds of genomes elsewhere) supplies the
structure: how the time of each kind of work grows with the genome. The device supplies one
scale per group of features (``predictors.features.GROUPS``: compute, norm_act, memory_overhead,
or any partition given), fitted by non-negative least squares of relative error. Leave-one-out
error is computed by refitting without each point, and stored in the profile with the points.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy.optimize import nnls

from nas.arch import ArchConfig
from nas.errors import NasError
from predictors.features import FEATURES, GROUPS, INDEX, genome_features
from predictors.predictor import Predictor


@dataclass(frozen=True)
class Point:
    """One measured (or published) latency used for calibration."""

    name: str
    arch: ArchConfig
    latency_ms: float
    source: str = ""


def group_design(base: Predictor, points: Sequence[Point], groups: dict[str, Sequence[str]], seq_len: int) -> np.ndarray:
    """(points x groups): the base predictor's time for each group of features, per point."""
    return group_matrix(base.coefficients, np.array([genome_features(p.arch, seq_len) for p in points]), groups)


def group_matrix(coefficients: dict[str, float], x: np.ndarray, groups: dict[str, Sequence[str]]) -> np.ndarray:
    """(rows x groups): the time `coefficients` give each group of features, for feature rows `x`."""
    a = np.zeros((len(x), len(groups)))
    for i, row in enumerate(x):
        for j, names in enumerate(groups.values()):
            a[i, j] = math.fsum(row[INDEX[f]] * coefficients[f] for f in names)
    return a


def fit_scales(a: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-negative scales minimising relative squared error; groups with no time get scale 1."""
    weights = 1.0 / y
    used = a.sum(axis=0) > 0
    scales = np.ones(a.shape[1])
    if used.any():
        solution, _ = nnls(a[:, used] * weights[:, None], y * weights)
        scales[used] = solution
    return scales


def check_groups(groups: dict[str, Sequence[str]]) -> None:
    seen: dict[str, str] = {}
    for group, names in groups.items():
        for name in names:
            if name not in INDEX:
                raise NasError(f"group {group}: {name!r} is not a feature")
            if name in seen:
                raise NasError(f"feature {name} is in groups {seen[name]} and {group}; groups must not overlap")
            seen[name] = group
    missing = [f for f in FEATURES if f not in seen]
    if missing:
        raise NasError(f"features {', '.join(missing)} are in no group; every feature needs a scale")


def calibrate(
    base: Predictor,
    points: Sequence[Point],
    *,
    device: str,
    runtime: str,
    threads: int,
    group_names: Sequence[str] = ("compute", "norm_act", "memory_overhead"),
    description: dict | None = None,
    source: str = "",
    precision: str = "fp32",
) -> Predictor:
    """A predictor for `device`: the base's coefficients times one fitted scale per feature group,
    with leave-one-out errors of the same procedure recorded in its provenance."""
    groups = feature_groups(group_names)
    check_groups(groups)
    if len(points) < 1:
        raise NasError("calibration needs at least one measured genome")
    if len({p.arch.id for p in points}) != len(points):
        raise NasError("calibration: the same genome is given twice")
    seq_len = base.seq_len
    a = group_design(base, points, groups, seq_len)
    y = np.array([p.latency_ms for p in points])
    scales = fit_scales(a, y)
    fitted = a @ scales
    loo: list[float | None] = []
    for i in range(len(points)):
        keep = [j for j in range(len(points)) if j != i]
        if len(keep) < len(groups):
            loo.append(None)  # fewer points than scales: the refit is underdetermined
            continue
        loo.append(float(a[i] @ fit_scales(a[keep], y[keep])))
    coefficients = {}
    for (group, names), scale in zip(groups.items(), scales):
        for name in names:
            coefficients[name] = float(base.coefficients[name] * scale)
    loo_errors = [abs(p / y[i] - 1) for i, p in enumerate(loo) if p is not None]
    provenance = {
        "method": "scale factors per feature group on a base predictor, non-negative least squares of relative error",
        "fitted_on": [
            {
                "name": p.name,
                "genome_id": p.arch.id,
                "latency_ms": p.latency_ms,
                "source": p.source,
                "fitted_ms": float(fitted[i]),
                "leave_one_out_ms": loo[i],
            }
            for i, p in enumerate(points)
        ],
        "source": source,
        "groups": {g: list(names) for g, names in groups.items()},
        "scales": {g: float(s) for g, s in zip(groups, scales)},
        "free_parameters": len(groups),
        "fit_mape": float(np.mean(np.abs(fitted / y - 1))),
        "leave_one_out_mape": float(np.mean(loo_errors)) if loo_errors else None,
        "leave_one_out_note": (
            "each point predicted from a refit on the others"
            if len(loo_errors) == len(points)
            else f"undefined: with {len(points)} points and {len(groups)} scales a refit without one point is underdetermined"
        ),
        "base": {
            "device": base.device,
            "runtime": base.runtime,
            "threads": base.threads,
            "seq_len": base.seq_len,
            "description": base.description,
            "fitted_on": base.provenance.get("fitted_on"),
            "coefficients": base.coefficients,
        },
    }
    return Predictor(device, runtime, threads, seq_len, coefficients, description or {}, provenance, precision=precision)


def feature_groups(names: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """Feature groups by name; 'all' is one global scale, 'rest' takes every feature not yet named."""
    groups: dict[str, tuple[str, ...]] = {}
    for name in names:
        if name == "all":
            groups["all"] = FEATURES
        elif name == "rest":
            taken = {f for g in groups.values() for f in g}
            groups["rest"] = tuple(f for f in FEATURES if f not in taken)
        elif name == "grouped_linear":
            groups[name] = tuple(f for f in FEATURES if f.startswith("grouped_linear."))
        elif name == "dense_compute":
            groups[name] = tuple(f for f in GROUPS["compute"] if not f.startswith("grouped_linear."))
        elif name in GROUPS:
            groups[name] = GROUPS[name]
        else:
            raise NasError(f"unknown feature group {name!r}; use compute, norm_act, memory_overhead, grouped_linear, dense_compute, rest or all")
    return groups
