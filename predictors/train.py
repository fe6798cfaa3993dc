"""A device's latency predictor fitted from its measurements, with the provenance users keep:
what it was fitted on, how, its errors, and the anchor genomes ``nas latency evaluate`` re-measures."""

from __future__ import annotations

import numpy as np

from predictors.data import MeasurementSet, now_iso
from predictors.evaluate import anchor_records
from predictors.fit import cross_validate, fit_structural, predict_rows, rows_from_set, scores
from predictors.harness import library_versions
from predictors.predictor import Predictor


def fit_predictor(data: MeasurementSet, use_kernels: bool = True, kernel_weight: float = 0.3, sources: list[str] | None = None) -> Predictor:
    """Fit the structural predictor on a measurement set; provenance records data, method and errors."""
    rows = rows_from_set(data, use_kernels=use_kernels)
    trusted_kernels = [k for k in data.kernels if k.get("trusted", True)] if use_kernels else []
    coefficients = fit_structural(rows, kernel_weight=kernel_weight)
    e2e = ~rows.kernel
    fitted = predict_rows(coefficients, rows.x[e2e])
    train_scores = scores(rows.y[e2e], fitted)
    cv_scores = None
    if e2e.sum() >= 10:
        cv_scores = scores(rows.y[e2e], cross_validate(rows, folds=5, kernel_weight=kernel_weight))
    meta = data.meta
    provenance = {
        "method": "non-negative least squares of relative error over op-graph features"
                  + (" (end-to-end and kernel rows)" if trusted_kernels else " (end-to-end rows)"),
        "fitted_on": {
            "measurements": sources or [data.path],
            "genomes": int(e2e.sum()),
            "kernels": len(trusted_kernels),
            "excluded_untrusted": len(data.records) - len(data.trusted_records()),
            "source": meta.get("source"),
            "clock": meta.get("clock"),
            "protocol": meta.get("protocol"),
            "measured_at": meta.get("started_at"),
            "load_average": [meta.get("load_average_start"), meta.get("load_average_end")],
            "runtime_version": meta.get("runtime_version"),
            "measured_with": meta.get("library_versions"),
        },
        "kernel_weight": kernel_weight if trusted_kernels else None,
        "train_scores": train_scores,
        "cross_validation_5fold": cv_scores,
        # re-measured by `nas latency evaluate` to tell the machine's drift from prediction error
        "anchors": anchor_records(data, 10),
        "fitted_with": library_versions(),
        "fitted_at": now_iso(),
        "latency_range_ms": [float(np.min(rows.y[e2e])), float(np.max(rows.y[e2e]))],
    }
    description = meta.get("description", {})
    return Predictor(data.device, data.runtime, data.threads, data.seq_len, coefficients, description, provenance,
                     precision=data.precision)
