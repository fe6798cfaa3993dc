"""Reading latencies measured elsewhere: ``onnxruntime_perf_test`` and TFLite ``benchmark_model``
outputs (current and older formats), or a plain CSV of genome id and latency_ms.

Formats read (one latency per model, in ms):

- onnxruntime_perf_test stdout, current: ``Average inference time cost: 65.1 ms`` and, with
  ``-s``, ``P50 Latency: 0.0648 s`` (the median is preferred when present);
- onnxruntime_perf_test stdout, older releases: ``Average time cost:65.1 ms``;
- onnxruntime_perf_test result file (its second positional argument): one line per run,
  ``model_name,seconds,peak_working_set,cpu_usage,run``, then optional statistics
  (``P50 Latency: 0.0648 s``; older releases ``P50 Latency is 0.0648sec``). ``model_name`` is the
  name of the model's folder, which in a bundle is the genome id; the median of the runs is used;
- TFLite benchmark_model, current: ``Inference timings in us: Init: ..., First inference: ...,
  Warmup (avg): ..., Inference (avg): 14154.1`` (the tool prints no median, so the mean is used);
- TFLite benchmark_model, older: ``Average inference timings in us: Warmup: ..., Init: ...,
  no stats: 14154.1`` (the Android app: ``..., Inference: 80660.1``).

Which model a log belongs to: the id in the log (TFLite's ``Graph: [.../ID.tflite]``, the
result file's model name), else the log file's name (``results/ID.txt``, as the bundle's
scripts write them). Ids are genome ids or kernel names from the bundle manifest.
"""

from __future__ import annotations

import csv
import math
import re
import statistics
from dataclasses import dataclass
from pathlib import Path

from nas.errors import NasError, read_user_text

_FLOAT = r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"


@dataclass(frozen=True)
class Reading:
    """One latency read from a tool's output: which model, how many ms, from which file and format."""

    model_id: str
    latency_ms: float
    source: str
    format: str
    statistic: str  # "median" or "mean"


def _number(text: str, where: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise NasError(f"{where}: latency {text} is not a positive number")
    return value


# ---- onnxruntime_perf_test ------------------------------------------------------------------------

_ORT_P50 = re.compile(r"^P50 Latency(?::| is)\s*" + _FLOAT + r"\s*(?:s|sec)\b", re.M)
_ORT_AVG_NEW = re.compile(r"^Average inference time cost:\s*" + _FLOAT + r"\s*ms", re.M)
_ORT_AVG_OLD = re.compile(r"^Average time cost:\s*" + _FLOAT + r"\s*ms", re.M)
_ORT_RUN_LINE = re.compile(r"^([^,\n]+)," + _FLOAT + r",(\d+),(-?\d+),(\d+)\s*$", re.M)


def parse_ort_perf_test(text: str, source: str, default_id: str) -> list[Reading]:
    """Readings from onnxruntime_perf_test stdout or its result file (any release seen)."""
    runs: dict[str, list[float]] = {}
    for match in _ORT_RUN_LINE.finditer(text):
        runs.setdefault(match.group(1).strip(), []).append(float(match.group(2)))
    if runs:  # the result file: per-run seconds, keyed by model folder name
        return [
            Reading(model, _number(str(statistics.median(times) * 1e3), f"{source}: model {model}"), source,
                    "onnxruntime_perf_test result file", "median")
            for model, times in runs.items()
        ]
    p50 = _ORT_P50.search(text)
    if p50:
        fmt = "onnxruntime_perf_test (older)" if " is " in p50.group(0) else "onnxruntime_perf_test"
        return [Reading(default_id, _number(p50.group(1), source) * 1e3, source, fmt, "median")]
    for pattern, fmt in ((_ORT_AVG_NEW, "onnxruntime_perf_test"), (_ORT_AVG_OLD, "onnxruntime_perf_test (older)")):
        found = pattern.search(text)
        if found:
            return [Reading(default_id, _number(found.group(1), source), source, fmt, "mean")]
    return []


# ---- TFLite benchmark_model ---------------------------------------------------------------------

_TFL_GRAPH = re.compile(r"Graph:\s*\[([^\]]+)\]")
_TFL_NEW = re.compile(r"Inference timings in us:.*?Inference \(avg\):\s*" + _FLOAT)
_TFL_OLD = re.compile(r"Average inference timings in us:.*?(?:no stats|Inference):\s*" + _FLOAT)


def parse_tflite_benchmark(text: str, source: str, default_id: str) -> list[Reading]:
    """Readings from TFLite benchmark_model logs; several runs concatenated in one log are split at
    each ``Graph: [...]`` line."""
    starts = [m.start() for m in _TFL_GRAPH.finditer(text)] or [0]
    if starts[0] != 0:
        starts[0] = 0
    readings = []
    for begin, end in zip(starts, starts[1:] + [len(text)]):
        part = text[begin:end]
        graph = _TFL_GRAPH.search(part)
        model_id = Path(graph.group(1).strip()).stem if graph else default_id
        new, old = _TFL_NEW.search(part), _TFL_OLD.search(part)
        if not (new or old):
            continue
        fmt = "tflite benchmark_model" if new else "tflite benchmark_model (older)"
        # benchmark_model prints only the mean of its runs (count/first/curr/min/max/avg/std)
        readings.append(Reading(model_id, _number((new or old).group(1), source) / 1e3, source, fmt, "mean"))
    return readings


# ---- plain CSV -------------------------------------------------------------------------------


def parse_csv(path: Path) -> list[Reading]:
    """A CSV with a header naming ``genome_id`` (or ``id``) and ``latency_ms``; other columns are
    kept out. Every row must have an id and a positive latency."""
    text = read_user_text(path)
    reader = csv.DictReader(text.splitlines())
    header = reader.fieldnames or []
    id_field = next((f for f in ("genome_id", "id", "model_id") if f in header), None)
    if id_field is None or "latency_ms" not in header:
        raise NasError(f"{path}: the header must name 'genome_id' and 'latency_ms' (found: {', '.join(header) or 'nothing'})")
    readings = []
    for row_number, row in enumerate(reader, start=2):  # the header is row 1
        gid = (row.get(id_field) or "").strip()
        if not gid:
            raise NasError(f"{path}: row {row_number}: field '{id_field}' is empty")
        raw = (row.get("latency_ms") or "").strip()
        try:
            value = float(raw)
        except ValueError:
            raise NasError(f"{path}: row {row_number}: field 'latency_ms': {raw!r} is not a number") from None
        if not math.isfinite(value) or value <= 0:
            raise NasError(f"{path}: row {row_number}: field 'latency_ms': {raw!r} must be a positive number of milliseconds")
        if None in row:
            raise NasError(f"{path}: row {row_number}: more fields than the header names")
        readings.append(Reading(gid, value, f"{path}:{row_number}", "csv", "as given"))
    if not readings:
        raise NasError(f"{path}: no rows after the header")
    return readings


# ---- any file or folder ------------------------------------------------------------------------


def read_results(sources: list[str | Path]) -> list[Reading]:
    """Readings from files and folders (folders: every .txt, .log, .csv inside, sorted)."""
    files: list[Path] = []
    for source in sources:
        path = Path(source)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in (".txt", ".log", ".csv", ".out"))
            if not found:
                raise NasError(f"{path}: no .txt, .log, .out or .csv result files in this folder")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise NasError(f"{path}: no such result file or folder")
    readings: list[Reading] = []
    for path in files:
        readings.extend(read_file(path))
    return readings


def read_file(path: Path) -> list[Reading]:
    try:
        text = path.read_text(errors="replace")
    except OSError as err:
        raise NasError(f"{path}: cannot read ({err})") from None
    default_id = path.stem
    first_line = text.lstrip().splitlines()[0] if text.strip() else ""
    if path.suffix == ".csv" and "latency_ms" in first_line:
        return parse_csv(path)
    for parser in (parse_tflite_benchmark, parse_ort_perf_test):
        readings = parser(text, str(path), default_id)
        if readings:
            return readings
    if path.suffix == ".csv":  # neither a perf_test result file nor a plain CSV: say what a CSV needs
        return parse_csv(path)
    raise NasError(
        f"{path}: no latency found: not an onnxruntime_perf_test output or result file, not a TFLite "
        "benchmark_model log, and not a CSV with genome_id,latency_ms"
    )
