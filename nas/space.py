"""Search spaces as YAML files: dimensions (choices or ranges), fixed values, derived widths, conditions.

A space file::

    name: mobile
    description: The full space, holding BERT-base, SqueezeBERT and MobileBERT.
    fixed:        {vocab_size: 30522, pooler: true}            # genome fields that never vary
    dimensions:
      num_layers: {choices: [4, 6, 12, 24]}
      intermediate_size: {range: [128, 4096], step: 128}       # ints or floats, both ends included
      attention_ffn_balance: {range: [0.2, 1.0], step: 0.05}   # derived: sets intermediate_size
    conditions:                                                # expressions over genome fields
      - intra_bottleneck_size is None or intra_bottleneck_size < hidden_size

Genome fields named in neither ``fixed`` nor ``dimensions`` keep ``ArchConfig``'s defaults.
``attention_ffn_balance`` is the one derived dimension: the FFN width is solved from it (MHA params
over FFN params of a block) and rounded to ``intermediate_multiple`` (a fixed value, default 64).
Group counts and head counts must divide the widths they split; a draw that breaks one is not a
genome, and sampling draws again.
"""

from __future__ import annotations

import ast
import itertools
import math
import random
import zlib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Iterator

import yaml

from nas.arch import ACTIVATIONS, ATTENTION_INPUTS, NORMS, ArchConfig, ArchError
from nas.block import feed_forward
from nas.errors import NasError, read_user_text

SPACES_DIR = Path(__file__).resolve().parent.parent / "search_spaces"
GENOME_FIELDS = tuple(f.name for f in fields(ArchConfig))
DERIVED = ("attention_ffn_balance",)
SPACE_SETTINGS = ("intermediate_multiple",)
# Completions tried per value when proposing a dimension's valid values (Space.completable_values).
COMPLETION_TRIES = 64
# Names a condition may use besides genome fields: ArchConfig's derived widths.
CONDITION_PROPERTIES = ("block_width", "attention_width", "head_size", "attention_ffn_balance")
_ALLOWED_NODES = (
    ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not, ast.USub, ast.Compare, ast.Eq, ast.NotEq,
    ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.Is, ast.IsNot, ast.In, ast.NotIn, ast.BinOp, ast.Add, ast.Sub, ast.Mult,
    ast.Div, ast.FloorDiv, ast.Mod, ast.Name, ast.Load, ast.Constant, ast.List, ast.Tuple, ast.IfExp,
)


class SpaceError(NasError):
    """A space file that cannot be used; the message names file, key and reason."""


@dataclass(frozen=True)
class Dimension:
    """One searched dimension: a list of choices, or an evenly stepped range (both ends included)."""

    name: str
    choices: tuple[Any, ...] | None = None
    low: float | None = None
    high: float | None = None
    step: float | None = None

    @property
    def values(self) -> tuple[Any, ...]:
        """Every value the dimension can take, in order."""
        if self.choices is not None:
            return self.choices
        n = int(round((self.high - self.low) / self.step))
        if all(isinstance(v, int) for v in (self.low, self.high, self.step)):
            return tuple(self.low + i * self.step for i in range(n + 1))
        return tuple(round(self.low + i * self.step, 10) for i in range(n + 1))

    def contains(self, value: Any) -> bool:
        if self.choices is not None:
            return any(value == c and type(value) is type(c) for c in self.choices) or (
                value is None and None in self.choices
            )
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        return any(math.isclose(value, v, rel_tol=1e-9, abs_tol=1e-9) for v in self.values)


@dataclass(frozen=True)
class Condition:
    source: str
    code: Any

    def holds(self, arch: ArchConfig) -> bool:
        names = arch.to_dict() | {p: getattr(arch, p) for p in CONDITION_PROPERTIES}
        return bool(eval(self.code, {"__builtins__": {}}, names))  # noqa: S307 - AST checked at load


@dataclass(frozen=True)
class Space:
    name: str
    description: str
    fixed: dict[str, Any]
    dimensions: dict[str, Dimension]
    conditions: tuple[Condition, ...]
    path: str = "<memory>"

    @property
    def fixed_fields(self) -> dict[str, Any]:
        """The fixed genome fields (``fixed`` without space settings such as intermediate_multiple)."""
        return {k: v for k, v in self.fixed.items() if k not in SPACE_SETTINGS}

    # ---- genomes from values ------------------------------------------------------------

    def genome(self, values: dict[str, Any]) -> ArchConfig:
        """The genome for one value per dimension; raises ArchError if it is not a valid one."""
        data = dict(self.fixed_fields)
        data.update({k: v for k, v in values.items() if k not in DERIVED})
        if "attention_ffn_balance" in values:
            data["intermediate_size"] = self._ffn_width_for_balance(data, values["attention_ffn_balance"])
        arch = ArchConfig.from_dict(data)
        for condition in self.conditions:
            if not condition.holds(arch):
                raise ArchError(f"condition does not hold: {condition.source}")
        return arch

    def _ffn_width_for_balance(self, data: dict[str, Any], balance: float) -> int:
        # A block's FFN parameters are linear in the FFN width F (nas.block.feed_forward): read the
        # slope and intercept off two widths, solve MHA params / FFN params = balance for F, then
        # round to the multiple the space asks for.
        unit = math.lcm(data.get("intermediate_groups", 1), data.get("output_groups", 1))
        probe = ArchConfig.from_dict(data | {"intermediate_size": unit})
        one, two = (sum(p.params for p in (f.intermediate, f.output)) for f in (feed_forward(probe, 0, unit), feed_forward(probe, 0, 2 * unit)))
        per_unit, fixed = (two - one) / unit, 2 * one - two
        target = probe.mha_params / balance / probe.num_ffn - fixed
        multiple = self.fixed.get("intermediate_multiple", 64)
        return max(multiple, int(round(target / per_unit / multiple)) * multiple)

    # ---- proposing only valid genomes, one dimension at a time ---------------------------

    def is_valid(self, values: dict[str, Any]) -> bool:
        try:
            self.genome(values)
        except ArchError:
            return False
        return True

    def first_witness(self) -> dict[str, Any]:
        """The values of one valid genome of the space (the same every call)."""
        rng = random.Random(0)
        for _ in range(10_000):
            values = {name: rng.choice(dim.values) for name, dim in self.dimensions.items()}
            if self.is_valid(values):
                return values
        raise SpaceError(f"space {self.path}: no valid genome in 10000 uniform draws; loosen its conditions")

    def completable_values(self, name: str, chosen: dict[str, Any], witness: dict[str, Any]) -> dict[Any, dict[str, Any]]:
        """The values of dimension `name` with which the values `chosen` so far still complete to a
        valid genome, each with one such completion.

        `witness` is a valid completion of `chosen`. A value is kept when the witness with that value
        is valid, or when a search of the dimensions not chosen yet finds a completion: every
        combination where they are few (exact), else COMPLETION_TRIES draws seeded by the context (a
        value whose only completions are that rare is left out). Choosing dimension by dimension
        from these values always ends in a valid genome.
        """
        remaining = [n for n in self.dimensions if n not in chosen and n != name]
        grid = math.prod(len(self.dimensions[n].values) for n in remaining)
        options: dict[Any, dict[str, Any]] = {}
        for value in self.dimensions[name].values:
            fixed = chosen | {name: value}
            if self.is_valid(witness | fixed):
                options[value] = witness | fixed
                continue
            if grid <= COMPLETION_TRIES:
                draws = (dict(zip(remaining, combo)) for combo in itertools.product(*(self.dimensions[n].values for n in remaining)))
            else:
                rng = random.Random(zlib.crc32(repr((name, value, sorted(chosen.items(), key=str))).encode()))
                draws = ({n: rng.choice(self.dimensions[n].values) for n in remaining} for _ in range(COMPLETION_TRIES))
            found = next((fixed | rest for rest in draws if self.is_valid(fixed | rest)), None)
            if found is not None:
                options[value] = found
        return options

    # ---- sampling, membership, size -----------------------------------------------------

    def sample(self, rng: random.Random, max_draws: int = 10_000) -> ArchConfig:
        """One valid genome, each dimension drawn uniformly; invalid draws are drawn again."""
        for _ in range(max_draws):
            values = {name: rng.choice(dim.values) for name, dim in self.dimensions.items()}
            try:
                return self.genome(values)
            except ArchError:
                continue
        raise SpaceError(f"space {self.path}: no valid genome in {max_draws} draws; loosen the conditions")

    def iter_samples(self, count: int, seed: int) -> Iterator[ArchConfig]:
        rng = random.Random(seed)
        for _ in range(count):
            yield self.sample(rng)

    def why_not(self, arch: ArchConfig) -> str | None:
        """None if `arch` is a point of this space, else the first reason it is not."""
        defaults = ArchConfig()
        data = arch.to_dict()
        for key, value in self.fixed_fields.items():
            if data[key] != value:
                return f"{key}={data[key]!r} but the space fixes {value!r}"
        for key in GENOME_FIELDS:
            if key in self.fixed or key in self.dimensions or (key == "intermediate_size" and "attention_ffn_balance" in self.dimensions):
                continue
            if data[key] != getattr(defaults, key):
                return f"{key}={data[key]!r} but the space leaves it at the default {getattr(defaults, key)!r}"
        for name, dim in self.dimensions.items():
            if name in DERIVED:
                continue
            if not dim.contains(data[name]):
                return f"{name}={data[name]!r} is not among the space's values {_short(dim.values)}"
        if "attention_ffn_balance" in self.dimensions:
            rest = {k: data[k] for k in self.dimensions if k not in DERIVED}
            widths = {self._ffn_width_for_balance(self.fixed_fields | rest, b) for b in self.dimensions["attention_ffn_balance"].values}
            if arch.intermediate_size not in widths:
                return f"intermediate_size={arch.intermediate_size} is not derived from any attention_ffn_balance of the space"
        for condition in self.conditions:
            if not condition.holds(arch):
                return f"condition does not hold: {condition.source}"
        return None

    def contains(self, arch: ArchConfig) -> bool:
        return self.why_not(arch) is None

    @property
    def grid_size(self) -> int:
        """Number of value combinations, valid or not."""
        return math.prod(len(d.values) for d in self.dimensions.values())

    def valid_fraction(self, draws: int = 2000, seed: int = 0) -> float:
        """Share of uniform draws that are valid genomes (an estimate of the space's true size)."""
        rng = random.Random(seed)
        valid = 0
        for _ in range(draws):
            try:
                self.genome({name: rng.choice(dim.values) for name, dim in self.dimensions.items()})
                valid += 1
            except ArchError:
                pass
        return valid / draws


def _short(values: tuple[Any, ...]) -> str:
    shown = ", ".join(repr(v) for v in itertools.islice(values, 12))
    return f"[{shown}{', ...' if len(values) > 12 else ''}]"


# ---- loading --------------------------------------------------------------------------------


def space_names() -> list[str]:
    return sorted(p.stem for p in SPACES_DIR.glob("*.yaml"))


def load_space(name_or_path: str | Path) -> Space:
    """Load a space by shipped name (``mobile``, ``tiny``, ...) or from a YAML path."""
    path = Path(name_or_path)
    if not path.suffix and not path.exists():
        path = SPACES_DIR / f"{name_or_path}.yaml"
        if not path.exists():
            raise SpaceError(f"unknown space {str(name_or_path)!r}; shipped spaces: {', '.join(space_names())}, or give a path to a .yaml file")
    try:
        text = read_user_text(path)
    except NasError as err:
        raise SpaceError(f"space {err}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise SpaceError(f"space {path}: not valid YAML{where}") from None
    return parse_space(data, str(path))


def parse_space(data: Any, path: str = "<memory>") -> Space:
    def fail(key: str, reason: str) -> SpaceError:
        return SpaceError(f"space {path}: {key}: {reason}")

    if not isinstance(data, dict):
        raise SpaceError(f"space {path}: expected a mapping with 'dimensions', got {type(data).__name__}")
    unknown = sorted(set(data) - {"name", "description", "fixed", "dimensions", "conditions"})
    if unknown:
        raise fail(unknown[0], "unknown key; use name, description, fixed, dimensions, conditions")
    fixed = data.get("fixed") or {}
    dims_data = data.get("dimensions")
    if not isinstance(fixed, dict):
        raise fail("fixed", "must be a mapping of genome field to value")
    if not isinstance(dims_data, dict) or not dims_data:
        raise fail("dimensions", "must be a non-empty mapping of genome field to {choices: [...]} or {range: [lo, hi], step: s}")
    for key, value in fixed.items():
        if key not in GENOME_FIELDS and key not in SPACE_SETTINGS:
            raise fail(f"fixed.{key}", f"not a genome field; known: {', '.join(GENOME_FIELDS)}")
        if key in GENOME_FIELDS:  # a bad fixed value is the file's error, not every condition's
            try:
                _type_check(key, value)
            except ArchError as err:
                raise fail(f"fixed.{key}", str(err)) from None
    dimensions = {}
    for key, spec in dims_data.items():
        where = f"dimensions.{key}"
        if key not in GENOME_FIELDS and key not in DERIVED:
            raise fail(where, f"not a genome field or derived dimension; known: {', '.join(GENOME_FIELDS + DERIVED)}")
        if key in fixed:
            raise fail(where, "also in 'fixed'; a field is either fixed or searched")
        dimensions[key] = _parse_dimension(key, spec, fail)
    if "attention_ffn_balance" in dimensions and "intermediate_size" in dimensions:
        raise fail("dimensions.attention_ffn_balance", "derives intermediate_size, so intermediate_size cannot be a dimension too")
    conditions = []
    for i, source in enumerate(data.get("conditions") or []):
        conditions.append(_parse_condition(source, f"conditions[{i}]", fail))
    space = Space(
        name=str(data.get("name") or Path(path).stem),
        description=str(data.get("description") or "").strip(),
        fixed=dict(fixed),
        dimensions=dimensions,
        conditions=tuple(conditions),
        path=path,
    )
    space.valid_fraction(draws=200)  # evaluates every condition once: a name error shows here, at load
    return space


def _parse_dimension(key: str, spec: Any, fail) -> Dimension:
    where = f"dimensions.{key}"
    if isinstance(spec, list):
        spec = {"choices": spec}
    if not isinstance(spec, dict):
        raise fail(where, "must be {choices: [...]} or {range: [lo, hi], step: s}")
    if "choices" in spec:
        if set(spec) != {"choices"}:
            raise fail(where, "a choices dimension takes only 'choices'")
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            raise fail(f"{where}.choices", "must be a non-empty list")
        if len(set(map(repr, choices))) != len(choices):
            raise fail(f"{where}.choices", "lists a value twice")
        for value in choices:
            _check_value(key, value, fail)
        return Dimension(key, choices=tuple(choices))
    if "range" in spec:
        if set(spec) - {"range", "step"}:
            raise fail(where, "a range dimension takes only 'range' and 'step'")
        bounds, step = spec["range"], spec.get("step", 1)
        if not (isinstance(bounds, list) and len(bounds) == 2 and all(_is_number(b) for b in bounds)):
            raise fail(f"{where}.range", "must be [low, high] numbers")
        low, high = bounds
        if not _is_number(step) or step <= 0:
            raise fail(f"{where}.step", "must be a positive number")
        if high < low:
            raise fail(f"{where}.range", f"high {high} is below low {low}")
        span = (high - low) / step
        if not math.isclose(span, round(span), abs_tol=1e-9):
            raise fail(f"{where}.step", f"{step} does not divide the range {low}..{high} evenly")
        dim = Dimension(key, low=low, high=high, step=step)
        for value in (low, high):
            _check_value(key, value, fail)
        return dim
    raise fail(where, "needs 'choices' or 'range'")


def _check_value(key: str, value: Any, fail) -> None:
    if key in DERIVED:
        if not _is_number(value) or value <= 0:
            raise fail(f"dimensions.{key}", f"{value!r} must be a positive number")
        return
    try:
        _type_check(key, value)
    except ArchError as err:
        raise fail(f"dimensions.{key}", str(err)) from None


def _type_check(key: str, value: Any) -> None:
    default = getattr(ArchConfig(), key)
    if key == "intra_bottleneck_size":
        if value is None:
            return
        default = 1
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= 1
    else:
        ok = isinstance(value, str)
    if not ok:
        if isinstance(default, bool):
            expected = "true or false"
        elif isinstance(default, int):
            expected = "a whole number of at least 1"
        else:
            expected = "a string"
        raise ArchError(f"{value!r} is not a valid {key} (expected {expected})")
    allowed = {"activation": ACTIVATIONS, "norm": NORMS, "attention_input": ATTENTION_INPUTS}.get(key)
    if allowed and value not in allowed:
        raise ArchError(f"{value!r} is not one of {', '.join(allowed)}")


def _parse_condition(source: Any, where: str, fail) -> Condition:
    if not isinstance(source, str):
        raise fail(where, "must be an expression string")
    try:
        tree = ast.parse(source, mode="eval")
    except SyntaxError:
        raise fail(where, f"not a valid expression: {source!r}") from None
    allowed_names = set(GENOME_FIELDS) | set(CONDITION_PROPERTIES) | {"None", "True", "False"}
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED_NODES):
            raise fail(where, f"{type(node).__name__} is not allowed in a condition: {source!r}")
        if isinstance(node, ast.Name) and node.id not in allowed_names:
            raise fail(where, f"unknown name {node.id!r} in {source!r}")
    return Condition(source, compile(tree, where, "eval"))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
