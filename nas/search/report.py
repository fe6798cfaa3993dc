"""``nas report``: the Pareto front of a run as a PNG, an interactive HTML page and a markdown table,
with the reference designs (BERT-base, SqueezeBERT, MobileBERT, ...) on the same axes.

References are scored the way the search scored candidates (``nas.count``, the latency
predictor). On an axis with the distillation score, the settings' ``quality_references``
(MobileBERT and MobileBERT-TINY by default, distilled once with the run's own settings by
``nas search`` or ``nas reproduce`` and cached) are points; the others would cost a full
distillation each and appear as a line at their cheap coordinate.

Each plot also shows the constraints (a line at the limit, the infeasible side shaded), the
candidates they excluded (on a distillation axis, where they have no score, as a rug along the
top), the score of a constant embedding (the floor a student must beat), and the trials ASHA
stopped, on an axis clipped to the finished ones so their partial scores do not squash the front
(those below it sit on the lower edge). Beside the front: Optuna's own hypervolume history,
parameter importances and parallel coordinates of the run's study.
"""

from __future__ import annotations

import html
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from nas.errors import NasError, atomic_write_text, check_writable_folder
from nas.references import reference, reference_names
from nas.search.objectives import CheapScorer, Constraint, Objective, parse_constraints
from nas.search.run_dir import RunDir, load_front, read_trials_csv
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

    @property
    def constraints(self) -> list[Constraint]:
        return parse_constraints(self.settings.constraints)

    @property
    def baseline(self) -> float | None:
        """The distillation score of a constant embedding, as the trials recorded it."""
        return next((r["scores"]["distill_baseline"] for r in self.records if "distill_baseline" in r["scores"]), None)

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
                from nas.distill.run import cached_score

                config = settings.distill_config()
                for name in settings.quality_references:
                    record = cached_score(reference(name).arch, config)
                    if record["score"] is not None:
                        references[name]["distill"] = float(record["score"])
        return cls(run, settings, objectives, records, front, references)

    @property
    def front_trials(self) -> set[int]:
        return {p["trial"] for p in self.front}


def write_report(run: RunDir, out: str | Path | None = None, *, overwrite: bool = False) -> dict[str, Path]:
    """Write pareto.png, pareto.html, report.md and, when the run's study allows them, Optuna's
    hypervolume history, parameter importances and parallel coordinates (PNGs, and in the HTML)
    into `out` (default runs/NAME/report/, which is rewritten; elsewhere, files already there are
    a NasError unless `overwrite`)."""
    results = RunResults.load(run)
    out = Path(out) if out else run.report_dir
    check_writable_folder(out, "--out")
    study_plots = _study_plots(results)
    paths = {"png": out / "pareto.png", "html": out / "pareto.html", "markdown": out / "report.md"}
    paths |= {name: out / f"{name}.png" for name, plot in study_plots.items() if plot.figure is not None}
    taken = [p.name for p in paths.values() if p.exists()]
    if taken and not overwrite and out.absolute() != run.report_dir:
        raise NasError(f"--out {out}: already holds {', '.join(taken)}; choose another folder or pass --overwrite")
    out.mkdir(parents=True, exist_ok=True)
    _write_png(results, paths["png"])
    for name, plot in study_plots.items():
        if plot.figure is not None:
            _save_matplotlib(plot.matplotlib(), paths[name])
    atomic_write_text(paths["html"], _html(results, study_plots))
    atomic_write_text(paths["markdown"], markdown(results, png=paths["png"].name, html_name=paths["html"].name, study_plots=study_plots))
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
    _save_matplotlib(front_figure(results), path)


def front_figure(results: RunResults):
    """The matplotlib figure of pareto.png: one panel per pair of objectives, labels laid out apart."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = _axis_pairs(results.objectives)
    fig, axes = plt.subplots(1, len(pairs), figsize=(6.5 * len(pairs), 6.2), squeeze=False)
    for ax, (x, y) in zip(axes[0], pairs):
        _draw_pair(ax, results, x, y)
    ran = sum(1 for r in results.records if r["tune_trial_id"])
    fig.suptitle(f"search {results.run.name}: space {results.settings.space}, {ran} trials run of {len(results.records)} "
                 f"candidates, {len(results.front)} Pareto-optimal", fontsize=11)
    fig.tight_layout()
    for ax in axes[0]:
        _separate_labels(ax)
    return fig


def _save_matplotlib(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

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

    infeasible = _points(results, x, y, "infeasible")
    if infeasible:
        ax.scatter(*coords(infeasible), marker="x", color="#bbbbbb", s=14, label="infeasible (never trained)")
    elif y is not None and y.expensive:
        # Never trained, so no score: a rug of their cheap coordinate along the top edge.
        xs = [r["scores"][x.name] for r in _points(results, x, None, "infeasible")]
        if xs:
            ax.scatter(xs, [0.985] * len(xs), marker="|", color="#999999", s=60, transform=ax.get_xaxis_transform(),
                       clip_on=False, label="infeasible: never trained, no score (top rug)")
    limits = _score_limits(results, y) if y is not None and y.expensive else None
    pruned = _points(results, x, y, "pruned")
    if pruned:
        xs, ys = coords(pruned)
        inside = [(a, b) for a, b in zip(xs, ys) if limits is None or b >= limits[0]]
        below = [a for a, b in zip(xs, ys) if limits is not None and b < limits[0]]
        if inside:
            ax.scatter(*zip(*inside), marker="v", color="#f4a261", s=16, alpha=0.6, label="pruned by ASHA (partial score)")
        if below:
            ax.scatter(below, [limits[0]] * len(below), marker="v", color="#f4a261", s=16, alpha=0.6, clip_on=False,
                       label="pruned by ASHA, partial score below the axis (on its edge)")
    if limits is not None:
        ax.set_ylim(*limits)
        if results.baseline is not None:
            ax.axhline(results.baseline, color="#6c757d", lw=1, ls=":", label=f"constant embedding ({results.baseline:.3g})")
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
    _draw_constraints(ax, results, x, y)
    ax.set_xlabel(_label(x.name))
    ax.set_ylabel(_label(y.name) if y else "trial")
    if ref_note:
        import textwrap

        ax.set_title(textwrap.fill(ref_note, 90), fontsize=8)
    ax.grid(alpha=0.3)
    # Below the plot, so that no legend covers a point or a label.
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, frameon=False)


def _score_limits(results: RunResults, y: Objective) -> tuple[float, float] | None:
    """The y range of a distillation axis: finished trials, references and the baseline, with a margin.
    Pruned trials' partial scores do not widen it."""
    values = [r["scores"][y.name] for r in results.records if r["status"] == "ok" and y.name in r["scores"]]
    values += [s[y.name] for s in results.references.values() if y.name in s]
    if results.baseline is not None:
        values.append(results.baseline)
    if not values:
        return None
    low, high = min(values), max(values)
    margin = 0.08 * (high - low) or 0.02
    return low - margin, high + margin


def _draw_constraints(ax, results: RunResults, x: Objective, y: Objective | None) -> None:
    """Each constraint on a plotted metric: a line at its limit, the infeasible side shaded."""
    for constraint in results.constraints:
        for axis, objective in (("x", x), ("y", y)):
            if objective is None or objective.name != constraint.metric:
                continue
            line, span = (ax.axvline, ax.axvspan) if axis == "x" else (ax.axhline, ax.axhspan)
            line(constraint.limit, color="#9d0208", lw=1.2, label=f"constraint {constraint.source}")
            low, high = (ax.get_xlim() if axis == "x" else ax.get_ylim())
            far = high if constraint.op == "<=" else low
            span(*sorted((constraint.limit, far)), color="#9d0208", alpha=0.06, lw=0)
            (ax.set_xlim if axis == "x" else ax.set_ylim)(low, high)


# Offsets (points) tried in turn for a label that would overlap another.
_LABEL_OFFSETS = [(4, 4), (4, -11), (-4, 4), (-4, -11), (4, 14), (4, -21), (-4, 14), (-4, -21), (4, 24), (4, -31)]


def _separate_labels(ax) -> None:
    """Move point labels (stars' names) off each other and off fixed labels, trying a few offsets."""
    from matplotlib.text import Annotation
    from matplotlib.transforms import Bbox

    renderer = ax.figure.canvas.get_renderer()
    texts = [t for t in ax.texts if isinstance(t, Annotation) and t.get_text()]
    movable = [t for t in texts if t.get_anncoords() == "offset points"]
    placed = [t.get_window_extent(renderer) for t in texts if t not in movable]
    # The markers the labels name: a label must not cover another label's star either.
    radius = 8.0 * ax.figure.dpi / 72.0
    markers = {id(t): Bbox.from_extents(*(ax.transData.transform(t.xy) - radius), *(ax.transData.transform(t.xy) + radius)) for t in movable}
    for text in movable:
        obstacles = placed + [box for owner, box in markers.items() if owner != id(text)]
        best = None
        for dx, dy in _LABEL_OFFSETS:
            text.xyann = (dx, dy)
            text.set_horizontalalignment("left" if dx > 0 else "right")
            box = text.get_window_extent(renderer)
            overlap = sum(_overlap_area(box, other) for other in obstacles)
            if best is None or overlap < best[0]:
                best = (overlap, (dx, dy))
            if overlap == 0:
                break
        dx, dy = best[1]
        text.xyann = (dx, dy)
        text.set_horizontalalignment("left" if dx > 0 else "right")
        placed.append(text.get_window_extent(renderer))


def _overlap_area(a, b) -> float:
    width = min(a.x1, b.x1) - max(a.x0, b.x0)
    height = min(a.y1, b.y1) - max(a.y0, b.y0)
    return width * height if width > 0 and height > 0 else 0.0


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


# ---- the study in Optuna's own views ------------------------------------------------------------


@dataclass
class StudyPlot:
    """One of Optuna's views of the run's study: a plotly figure (None when the study cannot give it
    yet, with the reason in `note`) and its matplotlib twin for the PNG."""

    title: str
    figure: Any
    note: str
    matplotlib: Callable[[], Any] | None = None  # -> a matplotlib Figure


def _study_plots(results: RunResults) -> dict[str, StudyPlot]:
    """Hypervolume history, parameter importances and parallel coordinates from optuna.visualization."""
    if not results.run.journal_path.exists():
        return {}
    import warnings

    import optuna
    import optuna.visualization as plotly_views
    import optuna.visualization.matplotlib as matplotlib_views

    from nas.search import study as optuna_study

    from nas.space import load_space

    study = optuna_study.load_study(results.run.journal_path)
    # importances and parallel coordinates over the genome's own dimensions, one per name
    genomes = optuna_study.genome_study(study, load_space(results.run.space_path)) if results.run.space_path.exists() else study
    complete = study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.COMPLETE])
    names = [o.name for o in results.objectives]
    # Colour the parallel coordinates by the expensive objective (what the search trains for).
    target_index = next((i for i, o in enumerate(results.objectives) if o.expensive), 0)
    target = dict(target=lambda t: t.values[target_index], target_name=names[target_index]) if len(names) > 1 else {}
    sign = -1.0 if results.objectives[target_index].direction == "max" else 1.0
    signed = dict(target=lambda t: sign * t.values[target_index], target_name=names[target_index])
    if len(names) > 1:
        reference = _hypervolume_reference(complete, results.objectives)
        history = ("hypervolume history", lambda views: views.plot_hypervolume_history(study, reference_point=reference),
                   f"reference point {', '.join(f'{n}={v:.4g}' for n, v in zip(names, reference))} (10 % beyond the worst finished trial)")
    else:
        history = ("optimization history", lambda views: views.plot_optimization_history(study), "")
    views = {
        "hypervolume": history,
        "importances": (f"parameter importances for {names[target_index]}", lambda views: views.plot_param_importances(genomes, **signed),
                        "Optuna's default evaluator over finished trials; it ranks what makes its target low, so a maximised objective is negated"),
        "parallel": (f"parallel coordinates of the {PARALLEL_PARAMS} most important parameters, coloured by {names[target_index]}",
                     lambda views: views.plot_parallel_coordinate(genomes, params=_top_params(genomes, signed), **target), "finished trials"),
    }
    plots = {}
    for name, (title, draw, note) in views.items():
        if len(complete) < 2:
            plots[name] = StudyPlot(title, None, "fewer than 2 finished trials")
            continue
        with warnings.catch_warnings():
            _quiet_views(warnings, optuna)
            try:
                figure = draw(plotly_views)
            except (ValueError, RuntimeError, ZeroDivisionError) as err:  # e.g. one parameter varied
                plots[name] = StudyPlot(title, None, f"not available: {str(err).splitlines()[0]}")
                continue
        plots[name] = StudyPlot(title, figure, note, matplotlib=lambda draw=draw: _matplotlib_view(draw, matplotlib_views))
    return plots


def _matplotlib_view(draw: Callable[[Any], Any], views: Any):
    import warnings

    import optuna

    with warnings.catch_warnings():
        _quiet_views(warnings, optuna)
        axes = draw(views)
    figure = (axes.flat[0] if hasattr(axes, "flat") else axes).figure
    figure.set_size_inches(11, 5.5)
    figure.tight_layout()
    return figure


PARALLEL_PARAMS = 6  # more axes than this and a static picture's labels collide


def _top_params(study: Any, signed: dict[str, Any]) -> list[str]:
    import warnings

    import optuna

    with warnings.catch_warnings():
        _quiet_views(warnings, optuna)
        importances = optuna.importance.get_param_importances(study, target=signed["target"])
    return list(importances)[:PARALLEL_PARAMS]


def _quiet_views(warnings: Any, optuna: Any) -> None:
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    # It reminds on every call that it ranks low target values; the target is signed for that.
    warnings.filterwarnings("ignore", message="PedAnovaImportanceEvaluator computes")
    warnings.filterwarnings("ignore", message="Attempting to set identical low and high ylims")  # a parameter that never varied
    # Narrowed dimensions are separate parameters (`hidden_size|512/768`), each seen in a few trials.
    warnings.filterwarnings("ignore", message="Some regimes for parameter")


def _hypervolume_reference(trials: list[Any], objectives: list[Objective]) -> list[float]:
    """A point 10 % of the range beyond the worst finished trial in every objective."""
    reference = []
    for i, objective in enumerate(objectives):
        values = [t.values[i] for t in trials]
        span = (max(values) - min(values)) or abs(max(values)) or 1.0
        reference.append(max(values) + 0.1 * span if objective.direction == "min" else min(values) - 0.1 * span)
    return reference


# ---- HTML (plotly) ------------------------------------------------------------------------------


def _html(results: RunResults, study_plots: dict[str, StudyPlot] | None = None) -> str:
    import plotly.graph_objects as go

    parts = []
    for i, (x, y) in enumerate(_axis_pairs(results.objectives)):
        fig = go.Figure()
        if y is None or not y.expensive:
            for status, name, marker in (
                ("infeasible", "infeasible (never trained)", dict(symbol="x", color="#bbbbbb", size=6)),
                ("pruned", "pruned by ASHA (partial score)", dict(symbol="triangle-down", color="#f4a261", size=7)),
            ):
                _trace(fig, go, _points(results, x, y, status), x, y, name, marker)
        limits = _score_limits(results, y) if y is not None and y.expensive else None
        if limits is not None:
            _unscored_traces(fig, go, results, x, y, limits)
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
        for constraint in results.constraints:
            if constraint.metric == x.name:
                fig.add_vline(x=constraint.limit, line_color="#9d0208", annotation_text=f"constraint {constraint.source}",
                              annotation_position="top right", annotation_font_size=10)
            elif y is not None and constraint.metric == y.name:
                fig.add_hline(y=constraint.limit, line_color="#9d0208", annotation_text=f"constraint {constraint.source}",
                              annotation_position="top left", annotation_font_size=10)
        if limits is not None:
            fig.update_yaxes(range=list(limits))
            if results.baseline is not None:
                fig.add_hline(y=results.baseline, line_dash="dot", line_color="#6c757d", annotation_position="bottom right",
                              annotation_text=f"constant embedding ({results.baseline:.3g})", annotation_font_size=10)
        xs_all = [r["scores"][x.name] for r in results.records if x.name in r["scores"]] + [s[x.name] for s in results.references.values()]
        fig.update_layout(
            title=f"{_label(x.name)} vs {_label(y.name) if y else 'trial'}{note}",
            xaxis_title=_label(x.name), yaxis_title=_label(y.name) if y else "trial",
            xaxis_type="log" if not x.expensive and _wide(xs_all) else "linear",
            template="plotly_white", height=560,
        )
        parts.append(fig.to_html(full_html=False, include_plotlyjs=(i == 0)))
    for plot in (study_plots or {}).values():
        parts.append(f"<h3>{html.escape(plot.title)}</h3><p>{html.escape(plot.note)}</p>")
        if plot.figure is not None:
            parts.append(plot.figure.to_html(full_html=False, include_plotlyjs=False))
    title = f"search {html.escape(results.run.name)}"
    return f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title></head><body><h2>{title}</h2>\n" + "\n".join(parts) + "\n</body></html>\n"


def _unscored_traces(fig, go, results: RunResults, x: Objective, y: Objective, limits: tuple[float, float]) -> None:
    """On a distillation axis: pruned trials (those below the axis on its lower edge) and infeasible
    candidates, which have no score, along the top edge."""
    pruned = _points(results, x, y, "pruned")
    if pruned:
        fig.add_trace(go.Scatter(
            x=[r["scores"][x.name] for r in pruned], y=[max(r["scores"][y.name], limits[0]) for r in pruned], mode="markers",
            name="pruned by ASHA (partial score; below the axis: on its edge)", hovertext=[_hover(r) for r in pruned],
            hoverinfo="text", marker=dict(symbol="triangle-down", color="#f4a261", size=7), cliponaxis=False,
        ))
    infeasible = _points(results, x, None, "infeasible")
    if infeasible:
        fig.add_trace(go.Scatter(
            x=[r["scores"][x.name] for r in infeasible], y=[limits[1]] * len(infeasible), mode="markers",
            name="infeasible: never trained, no score (top edge)", hovertext=[_hover(r) for r in infeasible],
            hoverinfo="text", marker=dict(symbol="line-ns-open", color="#999999", size=9), cliponaxis=False,
        ))


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


def markdown(results: RunResults, png: str = "pareto.png", html_name: str = "pareto.html", study_plots: dict[str, StudyPlot] | None = None) -> str:
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
    ]
    if results.baseline is not None:
        lines += [f"A constant embedding (the same features for every input) scores {results.baseline:.4g}: the dotted line.", ""]
    if study_plots:
        lines += ["## The study in Optuna's views", "",
                  f"`optuna-dashboard {results.run.journal_path}` shows the same study (metric names, statuses, constraints).", ""]
        for name, plot in study_plots.items():
            shown = f"![{plot.title}]({name}.png)" if plot.figure is not None else "not drawn"
            lines += [f"- **{plot.title}**: {plot.note}. {shown}"]
        lines.append("")
    lines += ["## Pareto-optimal genomes", ""]
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
    from nas.statuses import STATUSES

    return STATUSES
