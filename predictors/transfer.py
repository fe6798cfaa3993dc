"""Transferring a base predictor to a new device from a few measured genomes (and kernels).

A base predictor (host, ONNX Runtime fp32, 1 thread, fitted on ~100 genomes) knows how each kind
of work grows with the genome; a new device (a phone, int8, another runtime) prices that work
differently. Given N genomes measured on the new device, four ways of getting its prices:

- ``global``: the base's prices times one fitted scale (1 free parameter);
- ``groups``: one scale per feature group (compute, norm_act, memory_overhead: 3 parameters),
  what ``predictors.phones.calibrate`` fits on published phone latencies;
- ``prior``: every price refitted, regularised towards the globally rescaled base: each price is
  the base's times a multiplier, and the fit pays ``strength * (multiplier - 1)**2`` per price
  beside the genomes' relative squared errors. With two genomes it stays near the base; with
  twenty it moves the prices the data ask to move;
- ``scratch``: ``predictors.fit.fit_structural`` on the new device's rows alone.

``prior`` and ``scratch`` also take kernel microbenchmark rows (their own session constant, as in
``fit_structural``). Every fit is non-negative least squares: deterministic, no random state.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy.optimize import nnls

from nas.errors import NasError
from predictors.features import FEATURES, INDEX
from predictors.fit import Rows, fit_structural
from predictors.phones import feature_groups, fit_scales, group_matrix

METHODS = ("global", "groups", "prior", "scratch")
DEFAULT_GROUPS = ("compute", "norm_act", "memory_overhead")
# Weight of the prior per price, in units of one genome's squared relative error (chosen before
# looking at held-out genomes; bench/latency.py transfer prints the sensitivity to it).
DEFAULT_STRENGTH = 0.1


def _genome_rows(rows: Rows) -> tuple[np.ndarray, np.ndarray]:
    e2e = ~rows.kernel
    if not e2e.any():
        raise NasError("transfer needs at least one measured genome (kernels alone have no per-inference constant)")
    if np.any(rows.y <= 0) or not np.all(np.isfinite(rows.y)):
        raise NasError("latencies to fit on must be positive and finite")
    return rows.x[e2e], rows.y[e2e]


def scale_fit(base: dict[str, float], rows: Rows, group_names: Sequence[str] = DEFAULT_GROUPS) -> dict[str, float]:
    """The base's prices times one non-negative scale per feature group, fitted on the genome rows
    (relative squared error); kernel rows are not used."""
    x, y = _genome_rows(rows)
    groups = feature_groups(group_names)
    scales = fit_scales(group_matrix(base, x, groups), y)
    out = dict(base)
    for names, scale in zip(groups.values(), scales):
        for name in names:
            out[name] = float(base[name] * scale)
    return out


def prior_fit(base: dict[str, float], rows: Rows, strength: float = DEFAULT_STRENGTH, kernel_weight: float = 0.3) -> dict[str, float]:
    """Every price refitted on `rows`, pulled towards the globally rescaled base.

    Prices are ``centre * multiplier`` (multiplier >= 0); the objective is the rows' relative
    squared error (kernel rows weighted `kernel_weight`, with their own session constant) plus
    ``strength * sum((multiplier - 1)**2)``. A price the base sets to zero stays zero.
    """
    if not strength > 0:
        raise NasError(f"prior strength {strength} must be positive")
    centre = scale_fit(base, rows, ("all",))
    c0 = np.array([centre[n] for n in FEATURES])
    x = rows.x.copy()
    const = INDEX["constant"]
    x[rows.kernel, const] = 0.0
    weights = np.where(rows.kernel, kernel_weight, 1.0) / rows.y
    a = x * c0[None, :] * weights[:, None]  # each price's share of each row, at the centre
    b = rows.y * weights
    if rows.kernel.any():  # kernel session constant, free (not in the prior)
        a = np.hstack([a, (rows.kernel * weights)[:, None]])
    n_free = a.shape[1]
    prior = math.sqrt(strength) * np.eye(len(FEATURES), n_free)
    a = np.vstack([a, prior])
    b = np.concatenate([b, np.full(len(FEATURES), math.sqrt(strength))])
    multipliers, _ = nnls(a, b, maxiter=50 * n_free)
    return {name: float(c0[i] * multipliers[i]) for i, name in enumerate(FEATURES)}


def transfer_fit(base: dict[str, float], rows: Rows, method: str, *, strength: float = DEFAULT_STRENGTH,
                 kernel_weight: float = 0.3) -> dict[str, float]:
    """Prices for a new device from `rows` measured on it, by `method` (one of METHODS)."""
    if method == "global":
        return scale_fit(base, rows, ("all",))
    if method == "groups":
        return scale_fit(base, rows, DEFAULT_GROUPS)
    if method == "prior":
        return prior_fit(base, rows, strength, kernel_weight)
    if method == "scratch":
        return fit_structural(rows, kernel_weight=kernel_weight)
    raise NasError(f"unknown transfer method {method!r}; use one of {', '.join(METHODS)}")


def draw_subsets(pool: Sequence[str], n: int, draws: int, seed: int) -> list[list[str]]:
    """`draws` subsets of `n` ids from `pool`, seeded (the same on every machine)."""
    if n > len(pool):
        raise NasError(f"cannot draw {n} calibration genomes from a pool of {len(pool)}")
    rng = np.random.default_rng(seed)
    ordered = sorted(pool)
    return [[ordered[i] for i in sorted(rng.choice(len(ordered), size=n, replace=False))] for _ in range(draws)]
