"""What a search optimises and what it requires: objectives, constraints, and the cheap scores.

Objectives (``--objectives``), each minimised or maximised:

    params                 parameters of the encoder (nas.count), minimised
    flops                  2 x multiply-adds at the run's sequence length (nas.count), minimised
    latency_ms@PROFILE     predicted latency on a device profile (predictors.load(PROFILE)), minimised
    distill                distillation score (nas.distill; higher is better), maximised

Constraints (``--constraints``) bound any cheap score: ``latency_ms@pixel4<=80``, ``params<=30e6``
(``30M`` works too). They are checked before a candidate is trained, so an infeasible one costs a
millisecond. Cheap scores never touch Ray or Optuna; the search module calls them.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any, Callable

from nas.arch import ArchConfig, ArchError
from nas.errors import NasError
from nas.graph import count, ops
from nas.space import Space

DISTILL = "distill"
CHEAP_NAMES = ("params", "flops", "macs", "non_embedding_params")
LATENCY_PREFIX = "latency_ms@"
# What each objective is, for error messages and --help.
OBJECTIVE_HELP = (
    "params, flops, latency_ms@PROFILE (a device profile, e.g. latency_ms@pixel4), distill "
    "(distillation score)"
)
STARTS = 8  # coordinate descents the feasibility check runs before refusing a constraint
_SUFFIXES = {"": 1.0, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9}


@dataclass(frozen=True)
class Objective:
    """One objective: the name its score is reported under, and which way is better."""

    name: str
    direction: str  # "min" or "max"
    expensive: bool = False  # needs training (the distillation score); computed last


@dataclass(frozen=True)
class Constraint:
    """``metric <= limit`` or ``metric >= limit`` on a cheap score."""

    metric: str
    op: str  # "<=" or ">="
    limit: float
    source: str

    def violation(self, value: float) -> float:
        """How far `value` is outside the bound, relative to the limit: <= 0 means it holds."""
        scale = abs(self.limit) or 1.0
        excess = value - self.limit if self.op == "<=" else self.limit - value
        return excess / scale

    def holds(self, value: float) -> bool:
        return self.violation(value) <= 0

    def describe(self, value: float) -> str:
        """Why a candidate failed it, e.g. ``latency_ms@pixel4=95.1 > 80``."""
        broken = ">" if self.op == "<=" else "<"
        return f"{self.metric}={_short_number(value)} {broken} {_short_number(self.limit)}"


def parse_objectives(specs: list[str]) -> list[Objective]:
    """Objectives from their names; NasError on an unknown or repeated one. Cheap ones first."""
    if not specs:
        raise NasError(f"--objectives: give at least one of {OBJECTIVE_HELP}")
    seen: set[str] = set()
    objectives = []
    for spec in specs:
        name = spec.strip()
        if name in seen:
            raise NasError(f"--objectives: {name!r} is listed twice")
        seen.add(name)
        if name == DISTILL:
            objectives.append(Objective(name, "max", expensive=True))
        elif name in ("params", "flops", "macs", "non_embedding_params") or _is_latency(name):
            objectives.append(Objective(name, "min"))
        else:
            raise NasError(f"--objectives: unknown objective {name!r}; choose among {OBJECTIVE_HELP}")
    # Cheap scores are computed (and reported) first, distillation last.
    return sorted(objectives, key=lambda o: o.expensive)


def parse_constraint(spec: str) -> Constraint:
    """``params<=30e6``, ``latency_ms@pixel4 <= 80``, ``flops<=4G``; NasError if malformed."""
    match = re.fullmatch(r"\s*([A-Za-z_][\w@.\-]*)\s*(<=|>=|<|>|==|=)\s*([-+0-9.eE]+)\s*([kKMG]?)\s*", spec)
    if not match:
        raise NasError(f"--constraints: cannot read {spec!r}; write METRIC<=VALUE or METRIC>=VALUE, e.g. latency_ms@pixel4<=80")
    metric, op, number, suffix = match.groups()
    if op not in ("<=", ">="):
        raise NasError(f"--constraints: {spec!r}: use <= or >= (a bound includes its limit)")
    if metric == DISTILL:
        raise NasError(
            f"--constraints: {spec!r}: constraints are checked before training, so they bound cheap scores only "
            f"(params, flops, macs, non_embedding_params, latency_ms@PROFILE)"
        )
    if metric not in CHEAP_NAMES and not _is_latency(metric):
        raise NasError(f"--constraints: {spec!r}: unknown metric {metric!r}; use params, flops, macs, non_embedding_params or latency_ms@PROFILE")
    try:
        limit = float(number) * _SUFFIXES[suffix]
    except ValueError:
        raise NasError(f"--constraints: {spec!r}: {number!r} is not a number") from None
    return Constraint(metric, op, limit, spec.strip())


def parse_constraints(specs: list[str]) -> list[Constraint]:
    return [parse_constraint(s) for s in specs]


def _is_latency(name: str) -> bool:
    return name.startswith(LATENCY_PREFIX) and len(name) > len(LATENCY_PREFIX)


def _short_number(value: float) -> str:
    if float(value).is_integer() and abs(value) < 1e13:
        return str(int(value))
    return f"{value:.4g}"


# ---- the cheap scores ------------------------------------------------------------------------


def load_latency_predictor(profile: str, seq_len: int = 128):
    """``predictors.load(profile)`` fitted at `seq_len`; a NasError naming the objective when it
    cannot be had (an unknown profile, another sequence length)."""
    from predictors import load

    try:
        return load(profile, seq_len=seq_len)
    except NasError as err:
        raise NasError(f"latency_ms@{profile}: {err}") from None


class CheapScorer:
    """Params, FLOPs and predicted latencies of a genome, in milliseconds, with no training.

    ``scores(arch)`` always holds ``params`` and ``flops``, plus every other cheap metric named in
    ``metrics`` (e.g. ``latency_ms@pixel4``). Predictors load once, here, so an unknown profile is an
    error before any search work starts.
    """

    def __init__(self, metrics: list[str], seq_len: int = 128) -> None:
        self.seq_len = seq_len
        self.metrics = ["params", "flops"] + [m for m in dict.fromkeys(metrics) if m not in ("params", "flops")]
        self._predictors: dict[str, Any] = {}
        for metric in self.metrics:
            if _is_latency(metric):
                self._predictors[metric] = load_latency_predictor(metric[len(LATENCY_PREFIX):], seq_len)
            elif metric not in CHEAP_NAMES:
                raise NasError(f"{metric!r} is not a cheap score; cheap scores are {', '.join(CHEAP_NAMES)}, latency_ms@PROFILE")

    def scores(self, arch: ArchConfig) -> dict[str, float]:
        cost = count(arch, self.seq_len)
        out: dict[str, float] = {"params": float(cost.params), "flops": float(cost.flops)}
        for metric in self.metrics:
            if metric == "macs":
                out[metric] = float(cost.macs)
            elif metric == "non_embedding_params":
                out[metric] = float(non_embedding_params(arch))
            elif metric in self._predictors:
                out[metric] = float(self._predictors[metric].predict(arch))
        return out


def non_embedding_params(arch: ArchConfig) -> int:
    """Parameters outside the embedding tables: a training-free capacity proxy (Archai LTS)."""
    return sum(op.params for op in ops(arch, 1) if op.kind != "embedding")


# ---- can the constraints be met at all? --------------------------------------------------------


@dataclass(frozen=True)
class Feasibility:
    """How much of a space meets the constraints, estimated from a random sample."""

    sampled: int
    feasible: int


def check_feasible(space: Space, constraints: list[Constraint], scorer: CheapScorer, samples: int = 300, seed: int = 0) -> Feasibility:
    """Estimate the feasible share of `space`; NasError if no genome of it meets the constraints.

    A random sample comes first; when it holds no feasible genome, a coordinate descent on the total
    violation (one dimension at a time, every value tried) looks for the space's extreme before
    giving up, so a tight but meetable bound is not refused.
    """
    if not constraints:
        return Feasibility(0, 0)
    total = _total_violation(constraints, scorer)
    rng = random.Random(seed)
    drawn: list[tuple[float, dict[str, Any]]] = []
    for _ in range(samples):
        values = _draw_values(space, rng)
        drawn.append((total(space.genome(values)), values))
    feasible = sum(1 for violation, _ in drawn if violation <= 0)
    if feasible:
        return Feasibility(samples, feasible)
    # Descend from the least-violating draws: the valid region is not convex (a bottleneck and an
    # attention input only change together), so one start can stall short of the extreme.
    starts = [values for _, values in sorted(drawn, key=lambda d: d[0])[:STARTS]]
    if any(_descend(space, start, total)[0] <= 0 for start in starts):
        return Feasibility(samples, 0)
    # Name the bound that cannot be met on its own if there is one; else they conflict together.
    for constraint in constraints:
        alone = _total_violation([constraint], scorer)
        single, single_values = min((_descend(space, start, alone) for start in starts), key=lambda d: d[0])
        if single > 0:
            value = scorer.scores(space.genome(single_values))[constraint.metric]
            raise NasError(
                f"--constraints: no genome of space {space.name} meets {constraint.source} "
                f"(the best found has {constraint.metric}={_short_number(value)}); loosen it"
            )
    raise NasError(
        f"--constraints: no genome of space {space.name} meets {' and '.join(c.source for c in constraints)} "
        "together (each alone can be met); loosen one"
    )


def _total_violation(constraints: list[Constraint], scorer: CheapScorer) -> Callable[[ArchConfig], float]:
    def total(arch: ArchConfig) -> float:
        scores = scorer.scores(arch)
        violations = [c.violation(scores[c.metric]) for c in constraints]
        if all(v <= 0 for v in violations):
            return max(violations)  # <= 0: feasible
        return sum(v for v in violations if v > 0)

    return total


def _draw_values(space: Space, rng: random.Random) -> dict[str, Any]:
    for _ in range(10_000):
        values = {name: rng.choice(dim.values) for name, dim in space.dimensions.items()}
        try:
            space.genome(values)
            return values
        except ArchError:
            continue
    raise NasError(f"space {space.path}: no valid genome in 10000 draws; loosen its conditions")


def _descend(space: Space, start: dict[str, Any], total: Callable[[ArchConfig], float], passes: int = 4) -> tuple[float, dict[str, Any]]:
    """Coordinate descent on `total` over the space's dimensions; returns the lowest found."""
    values = dict(start)
    best = total(space.genome(values))
    for _ in range(passes):
        improved = False
        for name, dim in space.dimensions.items():
            for candidate in dim.values:
                if candidate == values[name]:
                    continue
                trial = values | {name: candidate}
                try:
                    score = total(space.genome(trial))
                except ArchError:
                    continue
                if score < best:
                    best, values, improved = score, trial, True
                    if best <= 0:
                        return best, values
        if not improved:
            break
    return best, values


def parse_scoring(objectives: list[str], constraints: list[str], seq_len: int) -> tuple[list[Objective], list[Constraint], CheapScorer]:
    """A search's objectives, constraints, and the scorer of every cheap score they need."""
    parsed_objectives = parse_objectives(objectives)
    parsed_constraints = parse_constraints(constraints)
    cheap = [o.name for o in parsed_objectives if not o.expensive] + [c.metric for c in parsed_constraints]
    return parsed_objectives, parsed_constraints, CheapScorer(cheap, seq_len)
