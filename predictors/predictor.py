"""The latency predictor: non-negative prices for the structural features of a genome.

``predict(arch)`` is a dot product of the genome's features (``predictors.features``) with the
fitted coefficients, summed with ``math.fsum`` so the result is the same to the last bit on any
machine. A predictor file is plain JSON: the device, runtime, threads and sequence length it is
valid for, the library versions and the data it was fitted on, and the coefficients by feature
name. Nothing in it is executable, so it loads after any library upgrade.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nas.arch import ArchConfig
from nas.errors import NasError
from predictors.data import read_json, read_precision, write_json_atomic
from predictors.features import FEATURE_VERSION, FEATURES, GROUPS, genome_features

PREDICTOR_FORMAT = "nas-latency-predictor"
PREDICTOR_VERSION = 1
PROFILES_DIR = Path(__file__).resolve().parent / "profiles"
# Where `nas latency profile` and `nas latency ingest` put fitted predictors by default; `load`
# finds them there by device name.
USER_PROFILES_DIR = Path("runs") / "latency"


@dataclass
class Predictor:
    """Latency in milliseconds of a genome on one device, runtime, thread count and sequence length."""

    device: str
    runtime: str
    threads: int
    seq_len: int
    coefficients: dict[str, float]  # ms per unit of each feature
    description: dict[str, Any] = field(default_factory=dict)  # the device as measured (CPU, phone model)
    provenance: dict[str, Any] = field(default_factory=dict)  # what it was fitted on, how, versions, errors
    path: str | None = None
    precision: str = "fp32"  # fp32, int8 or bf16 (predictors.quantize): part of the device's identity

    def __post_init__(self) -> None:
        self._vector = np.array([self.coefficients.get(name, 0.0) for name in FEATURES])

    def predict(self, arch: ArchConfig, seq_len: int | None = None) -> float:
        """Predicted latency of `arch` in ms (deterministic; a few microseconds once features are cached)."""
        if seq_len is not None and seq_len != self.seq_len:
            raise NasError(
                f"latency predictor {self.name} is for seq_len {self.seq_len}, asked for {seq_len}; "
                f"fit one at {seq_len} (nas latency profile --seq-len {seq_len})"
            )
        x = genome_features(arch, self.seq_len)
        return math.fsum((x * self._vector).tolist())

    def breakdown(self, arch: ArchConfig) -> dict[str, float]:
        """The prediction split by kind of work (compute, norm_act, memory_overhead), in ms."""
        x = genome_features(arch, self.seq_len) * self._vector
        index = {name: i for i, name in enumerate(FEATURES)}
        return {group: math.fsum(x[index[f]] for f in names) for group, names in GROUPS.items()}

    @property
    def name(self) -> str:
        return self.path or self.device

    # ---- files ------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": PREDICTOR_FORMAT,
            "format_version": PREDICTOR_VERSION,
            "feature_version": FEATURE_VERSION,
            "device": self.device,
            "runtime": self.runtime,
            "precision": self.precision,
            "threads": self.threads,
            "seq_len": self.seq_len,
            "batch": 1,
            "unit": "ms",
            "coefficients": {name: self.coefficients.get(name, 0.0) for name in FEATURES},
            "description": self.description,
            "provenance": self.provenance,
        }

    def save(self, path: str | Path) -> Path:
        """Write as JSON (floats round-trip exactly), atomically."""
        return write_json_atomic(path, self.to_dict())

    @classmethod
    def from_dict(cls, data: Any, where: str) -> "Predictor":
        if not isinstance(data, dict) or data.get("format") != PREDICTOR_FORMAT:
            raise NasError(f"{where}: not a latency predictor file (no \"format\": \"{PREDICTOR_FORMAT}\")")
        if data.get("format_version") != PREDICTOR_VERSION:
            raise NasError(f"{where}: predictor format_version {data.get('format_version')!r}; this nas reads {PREDICTOR_VERSION}")
        if data.get("feature_version") != FEATURE_VERSION:
            raise NasError(
                f"{where}: fitted with feature_version {data.get('feature_version')!r}, this nas computes "
                f"version {FEATURE_VERSION}; refit it (nas latency fit) from its measurements"
            )
        for key, kind in (("device", str), ("runtime", str), ("threads", int), ("seq_len", int), ("coefficients", dict)):
            value = data.get(key)
            if not isinstance(value, kind) or isinstance(value, bool):
                raise NasError(f"{where}: field {key!r} missing or not a {kind.__name__}")
        if data["threads"] < 1 or data["seq_len"] < 1:
            raise NasError(f"{where}: threads and seq_len must be at least 1")
        precision = read_precision(data, where)
        coefficients = data["coefficients"]
        unknown = sorted(set(coefficients) - set(FEATURES))
        if unknown:
            raise NasError(f"{where}: coefficients.{unknown[0]}: not a feature of version {FEATURE_VERSION}")
        for name, value in coefficients.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise NasError(f"{where}: coefficients.{name}: {value!r} is not a finite non-negative number")
        for key in ("description", "provenance"):
            if not isinstance(data.get(key, {}), dict):
                raise NasError(f"{where}: field {key!r} must be an object")
        return cls(
            device=data["device"],
            runtime=data["runtime"],
            threads=data["threads"],
            seq_len=data["seq_len"],
            coefficients={k: float(v) for k, v in coefficients.items()},
            description=data.get("description", {}),
            provenance=data.get("provenance", {}),
            path=where,
            precision=precision,
        )

    @classmethod
    def load(cls, path: str | Path) -> "Predictor":
        return cls.from_dict(read_json(path, "latency predictor"), str(path))


def profile_names() -> list[str]:
    """The shipped device profiles (``pixel4``, ``pixel3``, ...), loadable by name."""
    return sorted(p.stem for p in PROFILES_DIR.glob("*.json"))


def resolve(name_or_path: str | Path) -> Path:
    """The file a predictor name stands for: an existing path, a shipped profile, or a predictor
    fitted here under ``runs/latency/NAME.json``."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    name = str(name_or_path)
    if name in profile_names():
        return PROFILES_DIR / f"{name}.json"
    user = USER_PROFILES_DIR / f"{name}.json"
    if not path.suffix and user.is_file():
        return user
    raise NasError(
        f"unknown latency predictor {name!r}: not a file, not a shipped profile ({', '.join(profile_names())}) "
        f"and no {user}; fit one with 'nas latency profile --device {path.stem}' or 'nas latency ingest'"
    )


def load(
    name_or_path: str | Path,
    *,
    seq_len: int | None = None,
    device: str | None = None,
    runtime: str | None = None,
    threads: int | None = None,
    precision: str | None = None,
) -> Predictor:
    """Load a predictor by shipped profile name, device name fitted here, or file path.

    Any of `seq_len`, `device`, `runtime`, `threads`, `precision` given must match what the predictor was fitted
    for, else a NasError says what it was fitted for and how to get the right one.
    """
    path = resolve(name_or_path)
    predictor = Predictor.load(path)
    checks = (("seq_len", seq_len), ("device", device), ("runtime", runtime), ("threads", threads), ("precision", precision))
    for key, wanted in checks:
        have = getattr(predictor, key)
        if wanted is not None and wanted != have:
            raise NasError(
                f"{path}: latency predictor fitted for {key} {have!r}, but {wanted!r} was asked for "
                f"(it is for {predictor.device}, {predictor.runtime} {predictor.precision}, {predictor.threads} threads, seq_len {predictor.seq_len}); "
                "use a predictor fitted for that setting"
            )
    return predictor
