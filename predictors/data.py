"""Files: genome lists, measurement sets, atomic writes.

A *measurement set* is one JSON file: the conditions (device, runtime, threads, seq len,
protocol, library versions, load average) and one record per genome (id, genome, latency_ms,
spread, rounds), plus optional kernel microbenchmark records. Fitting reads only this file, so a
predictor can always say exactly what it was fitted on.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from nas.arch import ArchConfig, ArchError
from nas.errors import NasError, atomic_write_text, read_user_text

MEASUREMENTS_FORMAT = "nas-latency-measurements"
MEASUREMENTS_VERSION = 1


def now_iso() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


# ---- atomic writes ---------------------------------------------------------------------------


def check_writable(path: str | Path, force: bool = False) -> Path:
    """Refuse to replace an existing file unless `force`: a user's fitted predictor or hours of
    measurements must not vanish because a command was run twice."""
    path = Path(path)
    if path.exists() and not force:
        raise NasError(f"{path}: already exists; pass --force to replace it, or choose another --out")
    if path.exists() and path.is_dir():
        raise NasError(f"{path}: is a folder, expected a file name")
    return path


def write_json_atomic(path: str | Path, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=1, allow_nan=False) + "\n")


def read_json(path: str | Path, what: str) -> Any:
    path = Path(path)
    try:
        text = read_user_text(path)
    except NasError as err:
        raise NasError(f"{what} file {err}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise NasError(f"{path}: not a valid {what} file: not JSON ({err.msg} at line {err.lineno})") from None


# ---- genome lists ----------------------------------------------------------------------------


def load_genomes(source: str | Path) -> dict[str, ArchConfig]:
    """Genomes by id from a JSON-lines file (``nas space sample`` output), a JSON file (one genome,
    a list of genomes, or a bundle manifest with a ``genomes`` mapping), a folder of genome JSON
    files, or a reference design's name. An ``id`` given in the file must match the genome."""
    from nas.references import reference, reference_names

    if str(source) in reference_names() and not Path(source).exists():
        arch = reference(str(source)).arch
        return {arch.id: arch}
    path = Path(source)
    if path.is_dir():
        genomes: dict[str, ArchConfig] = {}
        files = sorted(path.glob("*.json"))
        if not files:
            raise NasError(f"{path}: no genome .json files in this folder")
        for file in files:
            genomes.update(load_genomes(file))
        return genomes
    if not path.exists():
        raise NasError(f"{path}: no such genome file (give a .json/.jsonl file, a folder or a reference name: {', '.join(reference_names())})")
    if path.suffix == ".jsonl":
        genomes = {}
        for number, line in enumerate(read_user_text(path).splitlines(), start=1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except json.JSONDecodeError as err:
                raise NasError(f"{path}: line {number}: not JSON ({err.msg})") from None
            arch = _genome(data, f"{path}: line {number}")
            genomes[arch.id] = arch
        if not genomes:
            raise NasError(f"{path}: no genomes in the file")
        return genomes
    data = read_json(path, "genome")
    if isinstance(data, dict) and "genomes" in data:  # a bundle manifest or a measurement set
        entries = data["genomes"]
        if isinstance(entries, dict):
            return {gid: _genome(g, f"{path}: genomes.{gid}", expected_id=gid) for gid, g in entries.items()}
        data = entries
    if isinstance(data, list):
        genomes = {}
        for i, entry in enumerate(data):
            arch = _genome(entry, f"{path}: [{i}]")
            genomes[arch.id] = arch
        return genomes
    arch = _genome(data, str(path))
    return {arch.id: arch}


def _genome(data: Any, where: str, expected_id: str | None = None) -> ArchConfig:
    if not isinstance(data, dict):
        raise NasError(f"{where}: expected a genome object, got {type(data).__name__}")
    given = data.get("id", expected_id)
    try:
        arch = ArchConfig.from_dict(data, source=where)
    except ArchError as err:
        raise NasError(str(err)) from None
    if given is not None and given != arch.id:
        raise NasError(f"{where}: id {given!r} does not match the genome (its id is {arch.id}); was the genome edited?")
    return arch


# ---- measurement sets ------------------------------------------------------------------------


@dataclass
class MeasurementSet:
    """End-to-end (and optionally kernel) latencies measured on one device under one setting."""

    device: str
    runtime: str
    threads: int
    seq_len: int
    records: list[dict[str, Any]] = field(default_factory=list)  # genome_id, latency_ms, spread, trusted, ...
    genomes: dict[str, ArchConfig] = field(default_factory=dict)
    kernels: list[dict[str, Any]] = field(default_factory=list)  # name, kind, features, latency_ms, ...
    meta: dict[str, Any] = field(default_factory=dict)  # device description, versions, protocol, source
    path: str | None = None
    precision: str = "fp32"  # fp32, int8 or bf16 (predictors.quantize)

    def trusted_records(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("trusted", True)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": MEASUREMENTS_FORMAT,
            "format_version": MEASUREMENTS_VERSION,
            "device": self.device,
            "runtime": self.runtime,
            "precision": self.precision,
            "threads": self.threads,
            "seq_len": self.seq_len,
            "batch": 1,
            **self.meta,
            "records": self.records,
            "kernels": self.kernels,
            "genomes": {gid: arch.to_dict() for gid, arch in self.genomes.items()},
        }

    def save(self, path: str | Path) -> Path:
        return write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> "MeasurementSet":
        path = Path(path)
        data = read_json(path, "measurements")
        where = str(path)
        if not isinstance(data, dict) or data.get("format") != MEASUREMENTS_FORMAT:
            raise NasError(f"{where}: not a measurement set (no \"format\": \"{MEASUREMENTS_FORMAT}\"); "
                           "plain CSVs and tool outputs go through 'nas latency ingest'")
        if data.get("format_version") != MEASUREMENTS_VERSION:
            raise NasError(f"{where}: format_version {data.get('format_version')!r}, this nas reads {MEASUREMENTS_VERSION}")
        for key, kind in (("device", str), ("runtime", str), ("threads", int), ("seq_len", int), ("records", list)):
            if not isinstance(data.get(key), kind) or isinstance(data.get(key), bool):
                raise NasError(f"{where}: field {key!r} missing or not a {kind.__name__}")
        genomes = {gid: _genome(g, f"{where}: genomes.{gid}", expected_id=gid) for gid, g in (data.get("genomes") or {}).items()}
        records = data["records"]
        for i, record in enumerate(records):
            _check_record(record, f"{where}: records[{i}]", genomes)
        precision = read_precision(data, where)
        meta = {k: v for k, v in data.items() if k not in ("format", "format_version", "device", "runtime", "precision", "threads",
                                                           "seq_len", "batch", "records", "kernels", "genomes")}
        kernels = data.get("kernels") or []
        for i, kernel in enumerate(kernels):
            if not isinstance(kernel, dict) or not isinstance(kernel.get("features"), dict) or not _positive(kernel.get("latency_ms")):
                raise NasError(f"{where}: kernels[{i}]: needs 'features' (object) and a positive 'latency_ms'")
        return cls(data["device"], data["runtime"], data["threads"], data["seq_len"], records, genomes, kernels, meta, str(path), precision)


# The numeric precision a latency was measured at: part of a device's identity (predictors.quantize).
PRECISIONS = ("fp32", "int8", "bf16")


def read_precision(data: dict, where: str) -> str:
    """The file's 'precision' field, checked; files written before precision was recorded are fp32."""
    precision = data.get("precision", "fp32")
    if precision not in PRECISIONS:
        raise NasError(f"{where}: field 'precision': {precision!r} is not one of {', '.join(PRECISIONS)}")
    return precision


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def _check_record(record: Any, where: str, genomes: dict[str, ArchConfig]) -> None:
    if not isinstance(record, dict):
        raise NasError(f"{where}: expected an object")
    gid = record.get("genome_id")
    if not isinstance(gid, str):
        raise NasError(f"{where}: field 'genome_id' missing")
    if gid not in genomes:
        raise NasError(f"{where}: genome_id {gid!r} has no genome in the file's 'genomes'")
    if not _positive(record.get("latency_ms")):
        raise NasError(f"{where}: field 'latency_ms' must be a positive number, got {record.get('latency_ms')!r}")
    if "trusted" in record and not isinstance(record["trusted"], bool):
        raise NasError(f"{where}: field 'trusted' must be true or false (JSON booleans), got {record['trusted']!r}")


def merge_sets(paths: list[str]):
    """One measurement set from several of the same device, runtime, threads and seq len."""
    sets = [MeasurementSet.load(p) for p in paths]
    first = sets[0]
    for other in sets[1:]:
        for key in ("device", "runtime", "precision", "threads", "seq_len"):
            if getattr(other, key) != getattr(first, key):
                raise NasError(f"{other.path}: {key} {getattr(other, key)!r} differs from {first.path}'s {getattr(first, key)!r}; fit one setting at a time")
    merged = MeasurementSet(first.device, first.runtime, first.threads, first.seq_len, meta=dict(first.meta), path=", ".join(paths),
                            precision=first.precision)
    for s in sets:
        merged.records.extend(s.records)
        merged.genomes.update(s.genomes)
        merged.kernels.extend(s.kernels)
    return merged
