"""Scoring a predictor on held-out measured genomes, beside the two baselines fitted on the same data.

Report: RMSE (ms), MAPE, share of genomes within +-5 % and +-10 %, Kendall tau, worst relative
error, for the structural predictor, FLOPs-linear and the HAT-style MLP; plus a PNG of predicted
against measured latency for all three.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from nas.errors import NasError, atomic_write_text
from predictors.data import MeasurementSet, write_json_atomic
from predictors.fit import FlopsLinear, HatMLP, scores
from predictors.predictor import Predictor


def check_matches(predictor: Predictor, data: MeasurementSet) -> None:
    """The measurements must be for the setting the predictor is for."""
    for key in ("runtime", "precision", "threads", "seq_len"):
        if getattr(predictor, key) != getattr(data, key):
            raise NasError(
                f"{data.path}: measured with {key} {getattr(data, key)!r} but predictor {predictor.name} is for "
                f"{getattr(predictor, key)!r}; evaluate a predictor on measurements of its own setting"
            )
    if predictor.device != data.device:
        raise NasError(f"{data.path}: measured on device {data.device!r} but predictor {predictor.name} is for {predictor.device!r}")


def machine_drift(train: MeasurementSet, anchors: MeasurementSet) -> dict[str, Any]:
    """How the machine's speed moved between the training and the held-out measurements.

    `anchors` are training genomes measured again in the held-out session; the factor is the
    median of their new over their training latencies (1.06 = everything ran 6 % slower). It uses
    no held-out latency, so correcting predictions by it is fair.
    """
    old = {r["genome_id"]: r["latency_ms"] for r in train.trusted_records()}
    pairs = [(r["latency_ms"], old[r["genome_id"]]) for r in anchors.trusted_records() if r["genome_id"] in old]
    if not pairs:
        raise NasError(f"{anchors.path}: no anchor genome is among the trusted training genomes of {train.path}")
    return drift_factor([p[0] for p in pairs], [p[1] for p in pairs]) | {"anchors_file": anchors.path}


def anchor_records(data: MeasurementSet, count: int = 10) -> list[dict[str, Any]]:
    """Up to `count` trusted genomes of a measurement set spread over its latencies, with their
    latency and genome: what a predictor file keeps so that a later session can re-measure them
    and tell the machine's drift (a busy neighbour, a lower clock) from prediction error."""
    trusted = sorted(data.trusted_records(), key=lambda r: r["latency_ms"])
    if not trusted or count < 1:
        return []
    picks = sorted(set(np.linspace(0, len(trusted) - 1, min(count, len(trusted))).round().astype(int).tolist()))
    return [{"genome_id": trusted[i]["genome_id"], "latency_ms": trusted[i]["latency_ms"],
             "genome": data.genomes[trusted[i]["genome_id"]].to_dict()} for i in picks]


def anchor_set(predictor: Predictor) -> MeasurementSet | None:
    """The anchors a predictor file carries (``provenance.anchors``) as a measurement set, or None."""
    from predictors.data import _genome

    entries = predictor.provenance.get("anchors") or []
    if not entries:
        return None
    where = f"{predictor.name}: provenance.anchors"
    genomes = {e["genome_id"]: _genome(e["genome"], where, expected_id=e["genome_id"]) for e in entries}
    records = [{"genome_id": e["genome_id"], "latency_ms": e["latency_ms"], "trusted": True} for e in entries]
    return MeasurementSet(predictor.device, predictor.runtime, predictor.threads, predictor.seq_len, records, genomes,
                          path=where, precision=predictor.precision)


def drift_corrected(predictor: Predictor, drift: dict[str, Any]) -> Predictor:
    """The predictor with every price multiplied by the measured drift factor, the correction
    recorded in its provenance (so a profile measured on a busy machine is not silently biased)."""
    from dataclasses import replace

    provenance = dict(predictor.provenance, drift_correction={**drift, "corrected_from": predictor.name})
    return replace(predictor, coefficients={k: v * drift["factor"] for k, v in predictor.coefficients.items()},
                   provenance=provenance, path=None)


def drift_factor(now_ms: Sequence[float], then_ms: Sequence[float]) -> dict[str, Any]:
    """The median ratio of the same models' latencies now over then (1.09 = 9 % slower now), with
    its quartiles and range."""
    ratios = np.asarray(now_ms, dtype=float) / np.asarray(then_ms, dtype=float)
    if len(ratios) == 0:
        raise NasError("no model measured both times: no drift factor")
    q1, q3 = np.percentile(ratios, [25, 75])
    return {"anchors": int(len(ratios)), "factor": float(np.median(ratios)), "q1": float(q1), "q3": float(q3),
            "min": float(ratios.min()), "max": float(ratios.max())}


def evaluate(
    predictor: Predictor,
    heldout: MeasurementSet,
    train: MeasurementSet | None,
    mlp_steps: int = 2000,
    anchors: MeasurementSet | None = None,
    anchors_then: MeasurementSet | None = None,
) -> dict[str, Any]:
    """Scores of the predictor (and, given training measurements, of both baselines fitted on them)
    on the trusted held-out records that are not in the training set.

    With `anchors` (training genomes re-measured alongside the held-out ones) the report also
    gives the machine's drift between the two sessions and the scores with every prediction
    multiplied by it. The anchors' training latencies come from `train`, else from
    `anchors_then` (the anchors a predictor file carries, see ``anchor_set``).
    """
    check_matches(predictor, heldout)
    train_ids = set()
    if train is not None:
        check_matches(predictor, train)
        train_ids = {r["genome_id"] for r in train.trusted_records()}
    records = [r for r in heldout.trusted_records() if r["genome_id"] not in train_ids]
    overlap = len(heldout.trusted_records()) - len(records)
    if len(records) < 2:
        raise NasError(f"{heldout.path}: fewer than 2 trusted held-out genomes outside the training set")
    archs = [heldout.genomes[r["genome_id"]] for r in records]
    measured = np.array([r["latency_ms"] for r in records])
    predictions = {"structural (ours)": np.array([predictor.predict(a) for a in archs])}
    if train is not None:
        train_records = train.trusted_records()
        train_archs = [train.genomes[r["genome_id"]] for r in train_records]
        train_y = [r["latency_ms"] for r in train_records]
        for baseline in (FlopsLinear(), HatMLP(steps=mlp_steps)):
            baseline.fit(train_archs, train_y, train.seq_len)
            predictions[baseline.name] = baseline.predict(archs)
    report: dict[str, Any] = {
        "predictor": predictor.name,
        "device": predictor.device,
        "runtime": predictor.runtime,
        "threads": predictor.threads,
        "seq_len": predictor.seq_len,
        "heldout": heldout.path,
        "train": train.path if train is not None else None,
        "n_heldout": len(records),
        "n_train": len(train.trusted_records()) if train is not None else None,
        "untrusted_heldout_excluded": len(heldout.records) - len(heldout.trusted_records()),
        "overlap_with_train_excluded": overlap,
        "scores": {name: scores(measured, p) for name, p in predictions.items()},
        "signed_bias": {name: float(np.median(p / measured - 1)) for name, p in predictions.items()},
    }
    then = train if train is not None else anchors_then
    if anchors is not None and then is not None:
        check_matches(predictor, anchors)
        drift = machine_drift(then, anchors)
        report["drift"] = drift
        report["scores_drift_corrected"] = {name: scores(measured, p * drift["factor"]) for name, p in predictions.items()}
    report["points"] = [
        {"genome_id": r["genome_id"], "measured_ms": float(m), **{k: float(v[i]) for k, v in predictions.items()}}
        for i, (r, m) in enumerate(zip(records, measured))
    ]
    return report


def format_table(report: dict[str, Any]) -> str:
    """The report's scores as Markdown tables (and the drift-corrected ones, when measured)."""
    lines = [
        f"{report['n_heldout']} held-out genomes, {report['device']}, {report['runtime']}, {report['threads']} thread(s), "
        f"seq {report['seq_len']}" + (f"; baselines fitted on the same {report['n_train']} training genomes" if report["n_train"] else ""),
        "",
    ]
    lines += _score_rows(report["scores"], report.get("signed_bias"))
    drift = report.get("drift")
    if drift:
        lines += [
            "",
            f"Machine drift between the training and the held-out session: x{drift['factor']:.3f} "
            f"(median over {drift['anchors']} training genomes re-measured with the held-out ones; "
            f"quartiles {drift['q1']:.3f}-{drift['q3']:.3f}). With every prediction multiplied by it:",
            "",
        ]
        lines += _score_rows(report["scores_drift_corrected"], None)
    return "\n".join(lines) + "\n"


def _score_rows(table: dict[str, dict], bias: dict[str, float] | None) -> list[str]:
    head = "| predictor | RMSE (ms) | MAPE | within +-5 % | within +-10 % | Kendall tau | worst |" + (" median bias |" if bias else "")
    rows = [head, "|---|---:|---:|---:|---:|---:|---:|" + ("---:|" if bias else "")]
    for name, s in table.items():
        rows.append(
            f"| {name} | {s['rmse_ms']:.2f} | {s['mape']:.1%} | {s['within_5']:.1%} | {s['within_10']:.1%} | "
            f"{s['kendall_tau']:.3f} | {s['max_abs_rel']:.1%} |" + (f" {bias[name]:+.1%} |" if bias else "")
        )
    return rows


def plot(report: dict[str, Any], path: str | Path) -> Path:
    """Predicted against measured latency (log-log) for every predictor in the report, with the
    +-10 % band, as a PNG (written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = report["points"]
    measured = np.array([p["measured_ms"] for p in points])
    names = list(report["scores"])
    fig, ax = plt.subplots(figsize=(6.4, 6.0), dpi=120)
    markers = ["o", "s", "^", "D"]
    for name, marker in zip(names, markers):
        predicted = np.array([p[name] for p in points])
        s = report["scores"][name]
        ax.scatter(measured, np.clip(predicted, 1e-3, None), s=14, marker=marker, alpha=0.7,
                   label=f"{name}: {s['within_10']:.0%} within 10 %, tau {s['kendall_tau']:.2f}")
    low, high = measured.min() * 0.7, measured.max() * 1.4
    line = np.geomspace(low, high, 50)
    ax.plot(line, line, "k-", lw=1)
    ax.fill_between(line, line * 0.9, line * 1.1, color="grey", alpha=0.2, label="+-10 %")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(low, high)
    ax.set_ylim(low, high)
    ax.set_xlabel("measured latency (ms)")
    ax.set_ylabel("predicted latency (ms)")
    ax.set_title(f"{report['device']}, {report['runtime']}, {report['threads']} thread(s), seq {report['seq_len']}: "
                 f"{report['n_heldout']} held-out genomes", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    try:
        fig.savefig(tmp)
        tmp.replace(path)
    finally:
        plt.close(fig)
        if tmp.exists():
            tmp.unlink()
    return path


def save_report(report: dict[str, Any], folder: str | Path) -> dict[str, Path]:
    folder = Path(folder)
    return {
        "json": write_json_atomic(folder / "evaluation.json", report),
        "markdown": atomic_write_text(folder / "evaluation.md", format_table(report)),
        "plot": plot(report, folder / "predicted_vs_measured.png"),
    }
