"""``nas report``: the Pareto front of a run as a PNG, an interactive HTML page and a markdown table,
with the reference designs (BERT-base, SqueezeBERT, MobileBERT, ...) on the same axes.

References are scored the way the search scored candidates (``nas.count``, the latency
predictor). They are not distilled (that would cost a full distillation each), so on an axis
with the distillation score they appear as a line at their cheap coordinate, not as a point.
"""

from __future__ import annotations

import html
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nas.references import reference, reference_names
from nas.search.objectives import CheapScorer, Objective
from nas.search.run_dir import RunDir, atomic_write_text, load_front, read_trials_csv
from nas.search.settings import SearchSettings

_LABELS = {
    "params": "parameters",
    "flops": "FLOPs (2 x MACs)",
    "macs": "MACs",
    "non_embedding_params": "non-embedding parameters",
    "distill": "distillation score (higher is better)",
}


@dataclass
class RunResults:
    """What a report shows: the run's settings, objectives, trials, front and reference scores."""

    run: RunDir
    settings: SearchSettings
    objectives: list[Objective]
    records: list[dict[str, Any]]
    front: list[dict[str, Any]]
    references: dict[str, dict[str, float]]  # name -> cheap scores

    @classmethod
    def load(cls, run: RunDir) -> "RunResults":
        run.require()
        settings = SearchSettings.load(run.settings_path)
        objectives, front = load_front(run)
        records = read_trials_csv(run.trials_csv) if run.trials_csv.exists() else []
        cheap = [o.name for o in objectives if not o.expensive]
        references: dict[str, dict[str, float]] = {}
        if cheap:
            scorer = CheapScorer(cheap, settings.seq_len)
            references = {name: scorer.scores(reference(name).arch) for name in reference_names()}
            if any(o.name == "distill" for o in objectives):
                from nas.distill.store import cached_score

                config = settings.distill_config()
                for name in settings.quality_references:
                    record = cached_score(reference(name).arch, config)
                    if record["score"] is not None:
                        references[name]["distill"] = float(record["score"])
        return cls(run, settings, objectives, records, front, references)

    @property
    def front_trials(self) -> set[int]:
        return {p["trial"] for p in self.front}


def write_report(run: RunDir, out: str | Path | None = None) -> dict[str, Path]:
    """Write pareto.png, pareto.html and report.md into `out` (default runs/NAME/report/)."""
    results = RunResults.load(run)
    out = Path(out) if out else run.report_dir
    out.mkdir(parents=True, exist_ok=True)
    paths = {"png": out / "pareto.png", "html": out / "pareto.html", "markdown": out / "report.md"}
    _write_png(results, paths["png"])
    atomic_write_text(paths["html"], _html(results))
    atomic_write_text(paths["markdown"], markdown(results, png=paths["png"].name, html_name=paths["html"].name))
    return paths


# ---- which axes ---------------------------------------------------------------------------------


def _axis_pairs(objectives: list[Objective]) -> list[tuple[Objective, Objective | None]]:
    """Pairs of objectives to plot against each other, cheap ones on x; one objective: vs trial."""
    if len(objectives) == 1:
        return [(objectives[0], None)]
    pairs = []
    for i, x in enumerate(objectives):
        for y in objectives[i + 1:]:
            pairs.append((x, y) if not x.expensive or y.expensive else (y, x))
    return pairs[:3]


def _label(name: str) -> str:
    if name.startswith("latency_ms@"):
        return f"predicted latency on {name.split('@', 1)[1]} (ms)"
    return _LABELS.get(name, name)


def _points(results: RunResults, x: Objective, y: Objective | None, status: str, front: bool | None = None) -> list[dict[str, Any]]:
    """Records with status `status` that have both coordinates (one per genome)."""
    out, seen = [], set()
    for r in results.records:
        if r["status"] != status or r["genome_id"] in seen:
            continue
        if front is not None and (r["trial"] in results.front_trials) != front:
            continue
        if x.name not in r["scores"] or (y is not None and y.name not in r["scores"]):
            continue
        seen.add(r["genome_id"])
        out.append(r)
    return out


def _wide(values: list[float]) -> bool:
    positive = [v for v in values if v > 0]
    return len(positive) > 1 and max(positive) / min(positive) > 20


# ---- PNG ----------------------------------------------------------------------------------------


def _write_png(results: RunResults, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = _axis_pairs(results.objectives)
    fig, axes = plt.subplots(1, len(pairs), figsize=(6.5 * len(pairs), 5.2), squeeze=False)
    for ax, (x, y) in zip(axes[0], pairs):
        _draw_pair(ax, results, x, y)
    ran = sum(1 for r in results.records if r["tune_trial_id"])
    fig.suptitle(f"search {results.run.name}: space {results.settings.space}, {ran} trials run of {len(results.records)} "
                 f"candidates, {len(results.front)} Pareto-optimal", fontsize=11)
    fig.tight_layout()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=130)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)


def _draw_pair(ax, results: RunResults, x: Objective, y: Objective | None) -> None:
    def coords(records):
        xs = [r["scores"][x.name] for r in records]
        ys = [r["scores"][y.name] if y else r["trial"] for r in records]
        return xs, ys

    for status, style in (("infeasible", dict(marker="x", color="#bbbbbb", s=14, label="infeasible (never trained)")),
                          ("pruned", dict(marker="v", color="#f4a261", s=16, alpha=0.6, label="pruned by ASHA (partial score)"))):
        records = _points(results, x, y, status)
        if records:
            ax.scatter(*coords(records), **style)
    rest = _points(results, x, y, "ok", front=False)
    if rest:
        ax.scatter(*coords(rest), color="#8ab4d8", s=18, label="evaluated")
    front = _points(results, x, y, "ok", front=True)
    if front:
        order = sorted(front, key=lambda r: r["scores"][x.name])
        xs, ys = coords(order)
        ax.scatter(xs, ys, color="#1d3557", s=34, zorder=3, label="Pareto-optimal")
        if y is not None:
            ax.step(xs, ys, where="post", color="#1d3557", lw=1, alpha=0.6)
    xs_all = [r["scores"][x.name] for r in results.records if x.name in r["scores"]]
    ref_note = _draw_references(ax, results, x, y)
    xs_all += [s[x.name] for s in results.references.values() if x.name in s]
    if not x.expensive and _wide(xs_all):
        ax.set_xscale("log")
    if y is not None and not y.expensive:
        ys_all = [r["scores"][y.name] for r in results.records if y.name in r["scores"]]
        ys_all += [s[y.name] for s in results.references.values() if y.name in s]
        if _wide(ys_all):
            ax.set_yscale("log")
    ax.set_xlabel(_label(x.name))
    ax.set_ylabel(_label(y.name) if y else "trial")
    if ref_note:
        ax.set_title(ref_note, fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")


def _draw_references(ax, results: RunResults, x: Objective, y: Objective | None) -> str:
    if not results.references:
        return ""
    if y is not None and not x.expensive and not y.expensive:
        for name, scores in results.references.items():
            ax.scatter([scores[x.name]], [scores[y.name]], marker="*", s=120, color="#e63946", zorder=4)
            ax.annotate(name, (scores[x.name], scores[y.name]), fontsize=7, xytext=(4, 4), textcoords="offset points")
        return "stars: reference designs, scored the same way"
    if not x.expensive:
        scored, lines = _split_references(results, y)
        for name, scores in scored.items():
            ax.scatter([scores[x.name]], [scores[y.name]], marker="*", s=120, color="#e63946", zorder=4)
            ax.annotate(name, (scores[x.name], scores[y.name]), fontsize=7, xytext=(4, 4), textcoords="offset points")
        for (value, names), low in zip(_grouped(lines, x.name), _staggered(lines, x.name)):
            ax.axvline(value, color="#e63946", lw=0.8, ls="--", alpha=0.7)
            ax.annotate(", ".join(names), (value, 0.5 if low else 1.0), xycoords=("data", "axes fraction"), rotation=90,
                        fontsize=7, va="top", ha="right", color="#e63946")
        what = "distilled" if y is not None and y.expensive else "scored"
        stars = "stars: reference designs distilled like the candidates; " if scored else ""
        return f"{stars}dashed lines: reference designs, not {what} (too expensive)" if lines else stars.rstrip("; ")
    return ""


def _split_references(results: RunResults, y: Objective | None) -> tuple[dict, dict]:
    """(references that have a score on the y axis, the rest): points and lines on the plot."""
    if y is None:
        return {}, dict(results.references)
    scored = {n: s for n, s in results.references.items() if y.name in s}
    return scored, {n: s for n, s in results.references.items() if n not in scored}


def _grouped(references: dict[str, dict[str, float]], metric: str, within: float = 0.03) -> list[tuple[float, list[str]]]:
    """References by their value of `metric`; designs within 3 % of each other (MobileBERT with and
    without its operational optimisations) share one line and one label, so labels do not overlap."""
    groups: list[tuple[float, list[str]]] = []
    for name, scores in sorted(references.items(), key=lambda item: item[1][metric]):
        value = scores[metric]
        if groups and abs(value - groups[-1][0]) <= within * abs(groups[-1][0]):
            groups[-1][1].append(name)
        else:
            groups.append((value, [name]))
    return groups


def _staggered(references: dict[str, dict[str, float]], metric: str, near: float = 0.25) -> list[bool]:
    """For each group of ``_grouped``: whether its label goes low, so that labels of lines closer
    than 25 % (SqueezeBERT and MobileBERT w/o OPT on a latency axis) do not overlap."""
    lows: list[bool] = []
    previous = None
    for value, _ in _grouped(references, metric):
        close = previous is not None and abs(value - previous) <= near * abs(previous)
        lows.append(close and not lows[-1])
        previous = value
    return lows


# ---- HTML (plotly) ------------------------------------------------------------------------------


def _html(results: RunResults) -> str:
    import plotly.graph_objects as go

    parts = []
    for i, (x, y) in enumerate(_axis_pairs(results.objectives)):
        fig = go.Figure()
        for status, name, marker in (
            ("infeasible", "infeasible (never trained)", dict(symbol="x", color="#bbbbbb", size=6)),
            ("pruned", "pruned by ASHA (partial score)", dict(symbol="triangle-down", color="#f4a261", size=7)),
        ):
            _trace(fig, go, _points(results, x, y, status), x, y, name, marker)
        _trace(fig, go, _points(results, x, y, "ok", front=False), x, y, "evaluated", dict(color="#8ab4d8", size=7))
        front = sorted(_points(results, x, y, "ok", front=True), key=lambda r: r["scores"][x.name])
        _trace(fig, go, front, x, y, "Pareto-optimal", dict(color="#1d3557", size=10), line=y is not None)
        note = ""
        if results.references and not x.expensive:
            if y is not None and not y.expensive:
                fig.add_trace(go.Scatter(
                    x=[s[x.name] for s in results.references.values()], y=[s[y.name] for s in results.references.values()],
                    mode="markers+text", text=list(results.references), textposition="top right", name="reference designs",
                    marker=dict(symbol="star", size=14, color="#e63946"),
                ))
            else:
                scored, lines = _split_references(results, y)
                if scored:
                    fig.add_trace(go.Scatter(
                        x=[s[x.name] for s in scored.values()], y=[s[y.name] for s in scored.values()],
                        mode="markers+text", text=list(scored), textposition="top right",
                        name="reference designs, distilled like the candidates", marker=dict(symbol="star", size=14, color="#e63946"),
                    ))
                for (value, names), low in zip(_grouped(lines, x.name), _staggered(lines, x.name)):
                    fig.add_vline(x=value, line_dash="dash", line_color="#e63946", opacity=0.6,
                                  annotation_text=", ".join(names), annotation_textangle=-90, annotation_font_size=10,
                                  annotation_position="bottom left" if low else "top left")
                note = " (dashed: reference designs at their cheap coordinate; not distilled, too expensive)"
        xs_all = [r["scores"][x.name] for r in results.records if x.name in r["scores"]] + [s[x.name] for s in results.references.values()]
        fig.update_layout(
            title=f"{_label(x.name)} vs {_label(y.name) if y else 'trial'}{note}",
            xaxis_title=_label(x.name), yaxis_title=_label(y.name) if y else "trial",
            xaxis_type="log" if not x.expensive and _wide(xs_all) else "linear",
            template="plotly_white", height=560,
        )
        parts.append(fig.to_html(full_html=False, include_plotlyjs=(i == 0)))
    title = f"search {html.escape(results.run.name)}"
    return f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title></head><body><h2>{title}</h2>\n" + "\n".join(parts) + "\n</body></html>\n"


def _trace(fig, go, records, x, y, name, marker, line=False) -> None:
    if not records:
        return
    hover = [_hover(r) for r in records]
    fig.add_trace(go.Scatter(
        x=[r["scores"][x.name] for r in records],
        y=[r["scores"][y.name] if y else r["trial"] for r in records],
        mode="lines+markers" if line else "markers",
        line=dict(shape="hv", width=1) if line else None,
        name=name, marker=marker, hovertext=hover, hoverinfo="text",
    ))


def _hover(record: dict[str, Any]) -> str:
    g = record.get("genome") or {}
    scores = "<br>".join(f"{k}: {_fmt(k, v)}" for k, v in record["scores"].items())
    shape = (f"{g.get('num_layers')} layers, hidden {g.get('hidden_size')}, bottleneck {g.get('intra_bottleneck_size')}, "
             f"{g.get('num_attention_heads')} heads, FFN {g.get('num_ffn')}x{g.get('intermediate_size')}") if g else ""
    return f"trial {record['trial']} ({record['status']}) {record['genome_id']}<br>{shape}<br>{scores}<br>{html.escape(record.get('reason') or '')}"


# ---- markdown -------------------------------------------------------------------------------------


def _fmt(name: str, value: float | None) -> str:
    if value is None:
        return "-"
    if name in ("params", "non_embedding_params"):
        return f"{value / 1e6:.2f} M"
    if name in ("flops", "macs"):
        return f"{value / 1e9:.3f} G"
    if name.startswith("latency_ms@"):
        return f"{value:.1f} ms"
    return f"{value:.4g}"


def _shape(genome: dict[str, Any]) -> str:
    bottleneck = genome["intra_bottleneck_size"]
    groups = f"{genome['qkv_groups']}/{genome['post_attention_groups']}/{genome['intermediate_groups']}/{genome['output_groups']}"
    return (
        f"{genome['num_layers']} x {genome['hidden_size']}"
        + (f" (bottleneck {bottleneck}, {genome['attention_input']})" if bottleneck else "")
        + f", {genome['num_attention_heads']} heads, FFN {genome['num_ffn']} x {genome['intermediate_size']}, groups {groups}, "
        f"emb {genome['embedding_size']}{' trigram' if genome['trigram_input'] else ''}, {genome['norm']}/{genome['activation']}"
    )


def markdown(results: RunResults, png: str = "pareto.png", html_name: str = "pareto.html") -> str:
    s = results.settings
    counts: dict[str, int] = {}
    for r in results.records:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    names = [o.name for o in results.objectives]
    lines = [
        f"# Search `{results.run.name}`",
        "",
        f"Space `{s.space}`, objectives {', '.join(f'`{o.name}` ({o.direction})' for o in results.objectives)}, "
        f"constraints {', '.join(f'`{c}`' for c in s.constraints) or 'none'}, sampler `{s.sampler}`, seed {s.seed}, "
        f"up to {s.trials} Ray trials of {s.cpus_per_trial} CPU(s)"
        + (f" or {s.time_budget_s / 60:g} minutes of proposing" if s.time_budget_s else "") + ".",
        "",
        "Trials: " + ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) + ".",
        "",
        f"![Pareto front]({png})",
        "",
        f"Interactive version: [{html_name}]({html_name}).",
        "",
        "## Pareto-optimal genomes",
        "",
    ]
    if results.front:
        lines.append("| # | trial | genome | " + " | ".join(names) + " | shape |")
        lines.append("|---|---|---|" + "---|" * len(names) + "---|")
        for rank, p in enumerate(results.front):
            cells = " | ".join(_fmt(n, p["scores"].get(n)) for n in names)
            lines.append(f"| {rank} | {p['trial']} | `{p['genome_id']}` | {cells} | {_shape(p['genome'])} |")
    else:
        lines.append("No trial finished with status ok yet.")
    if results.references:
        cheap = [o.name for o in results.objectives if not o.expensive]
        expensive = [o.name for o in results.objectives if o.expensive]
        distilled = [n for n, scores in results.references.items() if any(e in scores for e in expensive)]
        others = [n for n in results.references if n not in distilled]
        lines += [
            "",
            "## Reference designs on the same axes",
            "",
            "Scored the way the search scored candidates (" + ", ".join(f"`{c}`" for c in cheap + expensive) + ")."
            + (f" Distilled with the search's own settings (cached): {', '.join(distilled)}, the stars on the plot." if distilled else "")
            + (f" Not distilled: {', '.join(others)}; {', '.join(expensive)} would cost a full distillation per design, "
               "so the plot shows them as lines at their cheap coordinate." if expensive and others else ""),
            "",
        ]
        cheap = cheap + (expensive if distilled else [])
        published_cols = [c for c in cheap if c.startswith("latency_ms@")]
        header = "| design | " + " | ".join(cheap) + "".join(f" | published {c}" for c in published_cols) + " |"
        lines += [header, "|---|" + "---|" * (len(cheap) + len(published_cols))]
        for name, scores in results.references.items():
            ref = reference(name)
            published = []
            for c in published_cols:
                fig = ref.latency_ms.get(c.split("@", 1)[1])
                published.append(f"{fig.value:.0f} ms" if fig else "-")
            lines.append(f"| {name} | " + " | ".join(_fmt(c, scores.get(c)) for c in cheap) + "".join(f" | {p}" for p in published) + " |")
    lines += ["", "Statuses: " + "; ".join(f"**{k}**: {v}" for k, v in _status_help().items()) + ".", ""]
    return "\n".join(lines)


def _status_help() -> dict[str, str]:
    from nas.search.run_dir import STATUSES

    return STATUSES
