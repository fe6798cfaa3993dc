"""Pareto fronts and hypervolumes, computed here rather than trusted to Ray Tune or Optuna.

A point dominates another when it is no worse in every objective and better in at least one.
Directions are ``"min"`` or ``"max"`` per objective.
"""

from __future__ import annotations

from typing import Sequence


def _as_minimised(point: Sequence[float], directions: Sequence[str]) -> tuple[float, ...]:
    return tuple(v if d == "min" else -v for v, d in zip(point, directions))


def dominates(a: Sequence[float], b: Sequence[float], directions: Sequence[str]) -> bool:
    """Whether `a` Pareto-dominates `b`."""
    a, b = _as_minimised(a, directions), _as_minimised(b, directions)
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def non_dominated(points: Sequence[Sequence[float]], directions: Sequence[str], keep_equal: bool = False) -> list[int]:
    """Indices of the points no other point dominates; of equal points, the first is kept, or all of
    them with `keep_equal` (distinct genomes that score alike are all Pareto-optimal)."""
    keep = []
    for i, p in enumerate(points):
        if any(dominates(q, p, directions) for j, q in enumerate(points) if j != i):
            continue
        if not keep_equal and any(tuple(points[k]) == tuple(p) for k in keep):
            continue
        keep.append(i)
    return keep


def hypervolume(points: Sequence[Sequence[float]], directions: Sequence[str], reference: Sequence[float]) -> float:
    """The volume the points dominate up to `reference` (a point worse than all in every objective).

    Points that do not dominate the reference add nothing. Exact: a sweep in 2-D, slicing along the
    first objective in more dimensions (fine for the fronts of a few hundred points a search finds).
    """
    ref = _as_minimised(reference, directions)
    pts = [_as_minimised(p, directions) for p in points]
    pts = [p for p in pts if all(x < r for x, r in zip(p, ref))]
    return _hv(pts, ref)


def _hv(points: list[tuple[float, ...]], ref: tuple[float, ...]) -> float:
    if not points:
        return 0.0
    if len(ref) == 1:
        return ref[0] - min(p[0] for p in points)
    if len(ref) == 2:
        volume, best_y = 0.0, ref[1]
        for x, y in sorted(points):
            if y < best_y:
                volume += (ref[0] - x) * (best_y - y)
                best_y = y
        return volume
    # Slice along the first objective: between consecutive x values, the dominated volume is the
    # (d-1)-dimensional hypervolume of the points at or left of the slice.
    points = sorted(points)
    volume = 0.0
    for i, p in enumerate(points):
        right = points[i + 1][0] if i + 1 < len(points) else ref[0]
        if right > p[0]:
            volume += (right - p[0]) * _hv([q[1:] for q in points[: i + 1]], ref[1:])
    return volume
