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

import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy.optimize import nnls

from nas.errors import NasError
from predictors.data import MeasurementSet
from predictors.features import FEATURES, INDEX
from predictors.fit import Rows, fit_structural
from predictors.phones import feature_groups, fit_scales, group_matrix
from predictors.predictor import Predictor

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
                 kernel_weight: float = 0.3, groups: Sequence[str] = DEFAULT_GROUPS) -> dict[str, float]:
    """Prices for a new device from `rows` measured on it, by `method` (one of METHODS; `groups`
    names the feature groups of the ``groups`` method)."""
    if method == "global":
        return scale_fit(base, rows, ("all",))
    if method == "groups":
        return scale_fit(base, rows, groups)
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


# ---- what the measured figures say (bench/latency.py transfer --write) -----------------------------

ERRORS_PATH = Path(__file__).resolve().parent / "transfer_errors.json"


def measured_errors() -> dict | None:
    """The transfer study's figures (``predictors/transfer_errors.json``), or None if absent."""
    if not ERRORS_PATH.is_file():
        return None
    return json.loads(ERRORS_PATH.read_text())


def _cell(entry: dict, n: int) -> tuple[int, dict] | None:
    """The study's figures for the largest tabulated N not above `n` (the smallest N below that)."""
    tabulated = sorted(int(k) for k in entry["by_n"])
    usable = [k for k in tabulated if k <= n] or tabulated[:1]
    return (usable[-1], entry["by_n"][str(usable[-1])]) if usable else None


def recommend(n_genomes: int, have_kernels: bool) -> tuple[str, bool]:
    """The transfer method (and whether to add kernel rows) with the most held-out genomes within
    +-10 % in the study at this many measured genomes (``groups`` when the study is absent)."""
    errors = measured_errors()
    if errors is None:
        return "groups", False
    best, best_key = ("groups", False), None
    for entry in errors["methods"].values():
        if entry["kernels"] and not have_kernels:
            continue
        _, cell = _cell(entry, n_genomes)
        key = (cell["within_10_median"], -cell["mape_median"])
        if best_key is None or key > best_key:
            best, best_key = (entry["method"], entry["kernels"]), key
    return best


def expected_error(method: str, kernels: bool, n_genomes: int) -> dict | None:
    """What the study measured for `method` at about this N, for a predictor's provenance."""
    errors = measured_errors()
    if errors is None:
        return None
    for label, entry in errors["methods"].items():
        if entry["method"] == method and entry["kernels"] == kernels:
            n, cell = _cell(entry, n_genomes)
            return {"method": label, "n": n, **cell, "settings": errors["settings"], "source": errors["source"]}
    return None


def transfer_predictor(base: Predictor, data: MeasurementSet, method: str, *, use_kernels: bool = False,
                       strength: float = DEFAULT_STRENGTH, groups: Sequence[str] = DEFAULT_GROUPS) -> Predictor:
    """A predictor for `data`'s device: `base` transferred by `method` from its trusted genomes
    (and kernels with `use_kernels`); the provenance says how, on what, and the error to expect."""
    from predictors.fit import rows_from_set

    if base.seq_len != data.seq_len:
        raise NasError(f"{base.name}: base predictor is for seq_len {base.seq_len}, the measurements for {data.seq_len}")
    rows = rows_from_set(data, use_kernels=use_kernels)
    coefficients = transfer_fit(base.coefficients, rows, method, strength=strength, groups=groups)
    n = int((~rows.kernel).sum())
    provenance = {
        "method": f"transfer ({method}{' + kernels' if rows.kernel.any() else ''}) of a base predictor, predictors.transfer",
        "fitted_on": {"measurements": [data.path], "genomes": n, "kernels": int(rows.kernel.sum()), "source": data.meta.get("source")},
        "transfer": {"method": method, "prior_strength": strength if method == "prior" else None,
                     "groups": list(groups) if method == "groups" else None},
        "expected_error": expected_error(method, bool(rows.kernel.any()), n),
        "base": {"device": base.device, "runtime": base.runtime, "precision": base.precision, "threads": base.threads,
                 "seq_len": base.seq_len, "path": base.name, "coefficients": base.coefficients},
    }
    return Predictor(data.device, data.runtime, data.threads, data.seq_len, coefficients, data.meta.get("description", {}),
                     provenance, precision=data.precision)
