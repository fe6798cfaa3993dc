"""Measuring end-to-end latency on this machine: ONNX Runtime (default) or PyTorch eager, batch 1.

Protocol (one call of ``time_runners`` over several models at once):

1. warm-up runs of every model;
2. rounds: in each round every model runs ``runs_per_round`` times back to back, the models in a
   freshly shuffled order, so slow phases of a shared machine hit all models alike;
3. a round's value is its fastest run (a run preempted by another process is only ever slower);
   the result is the median over rounds, its spread the interquartile range of the rounds over
   that median;
4. a model whose spread is above ``max_spread`` gets more rounds, up to ``max_rounds``; if it is
   still too wide the call raises ``SpreadTooWide`` with the numbers, rather than return a
   latency nobody should trust.

``measure_genomes`` repeats this in whole passes over the genomes, minutes apart, and keeps a
latency only when two passes confirm it (see ``Measurement``).

Clock: with one thread the default is the calling thread's CPU time (``time.thread_time_ns``).
ONNX Runtime and PyTorch run a single-threaded inference on the calling thread, so on an idle
machine its CPU time equals its wall time; on a shared machine wall time also counts every
millisecond the OS gave to other processes (2x here with four jobs on two cores), CPU time does
not. Cache and memory-bandwidth interference still show, which is what rounds and spread are
for. With several threads only wall time is meaningful, and it is what is used.

The timer is injectable (``timer`` returns nanoseconds), so the statistics can be tested against a
controlled noisy clock while the models really run.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import random
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from nas.arch import ArchConfig
from nas.progress import progress_bar
from nas.errors import NasError

RUNTIMES = ("onnxruntime", "torch")
CLOCKS = ("auto", "cpu", "wall")
Timer = Callable[[], int]


def clock_for(clock: str, threads: int) -> tuple[str, Timer]:
    """The clock a measurement uses: 'cpu' (thread CPU time) or 'wall'; 'auto' = cpu for 1 thread."""
    if clock not in CLOCKS:
        raise NasError(f"clock {clock!r} is not one of {', '.join(CLOCKS)}")
    if clock == "auto":
        clock = "cpu" if threads == 1 else "wall"
    if clock == "cpu" and threads != 1:
        raise NasError(f"clock 'cpu' measures one thread; with threads={threads} use --clock wall")
    return clock, (time.thread_time_ns if clock == "cpu" else time.perf_counter_ns)


class SpreadTooWide(NasError):
    """Repeated rounds disagree too much for the median to be trusted (a busy or throttled machine)."""


@dataclass(frozen=True)
class Protocol:
    """How a latency is measured; recorded next to every measurement."""

    warmup: int = 2
    rounds: int = 5
    runs_per_round: int = 2
    max_spread: float = 0.10
    max_rounds: int = 15
    passes: int = 2  # whole-set passes over genomes (measure_genomes); see Measurement
    max_passes: int = 4

    def __post_init__(self) -> None:
        for name in ("rounds", "runs_per_round", "max_rounds", "passes", "max_passes"):
            if getattr(self, name) < 1:
                raise NasError(f"measurement protocol: {name}={getattr(self, name)} must be at least 1")
        if self.warmup < 0:
            raise NasError(f"measurement protocol: warmup={self.warmup} must be at least 0")
        if self.max_rounds < self.rounds:
            raise NasError(f"measurement protocol: max_rounds={self.max_rounds} is below rounds={self.rounds}")
        if self.max_passes < self.passes:
            raise NasError(f"measurement protocol: max_passes={self.max_passes} is below passes={self.passes}")
        if not self.max_spread > 0:
            raise NasError(f"measurement protocol: max_spread={self.max_spread} must be positive")


@dataclass
class Timing:
    """The timing of one model: per-round values (ms) and the statistics the protocol derives."""

    key: str
    round_ms: list[float] = field(default_factory=list)
    run_ms: list[float] = field(default_factory=list)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.round_ms)

    @property
    def spread(self) -> float:
        """Interquartile range of the round values over their median (0.1 = 10 %)."""
        if len(self.round_ms) < 2:
            return 0.0
        q1, q3 = np.percentile(self.round_ms, [25, 75])
        return float((q3 - q1) / self.median_ms)


def time_runners(
    runners: dict[str, Callable[[], object]],
    protocol: Protocol = Protocol(),
    *,
    timer: Timer = time.perf_counter_ns,
    seed: int = 0,
    progress: bool = False,
    refuse: bool = True,
) -> dict[str, Timing]:
    """Time each zero-argument callable with interleaved rounds (see the module docstring).

    Returns one ``Timing`` per key. With ``refuse`` (the default) raises ``SpreadTooWide`` naming
    every model whose spread stays above ``protocol.max_spread`` after ``protocol.max_rounds``.
    """
    if not runners:
        return {}
    rng = random.Random(seed)
    keys = list(runners)
    for key in keys:
        for _ in range(protocol.warmup):
            runners[key]()
    timings = {key: Timing(key) for key in keys}

    def one_round(selected: list[str]) -> None:
        order = selected[:]
        rng.shuffle(order)
        for key in order:
            run = runners[key]
            best = None
            for _ in range(protocol.runs_per_round):
                start = timer()
                run()
                elapsed_ms = (timer() - start) / 1e6
                timings[key].run_ms.append(elapsed_ms)
                best = elapsed_ms if best is None else min(best, elapsed_ms)
            timings[key].round_ms.append(best)

    bar = progress_bar(protocol.rounds, "rounds", "round", enabled=progress)
    for _ in range(protocol.rounds):
        one_round(keys)
        bar.update(1)
    # Extra rounds only for the models that need them, still interleaved among themselves.
    for _ in range(protocol.max_rounds - protocol.rounds):
        wide = [k for k in keys if timings[k].spread > protocol.max_spread]
        if not wide:
            break
        one_round(wide)
    bar.close()
    if refuse:
        wide = [timings[k] for k in keys if timings[k].spread > protocol.max_spread]
        if wide:
            worst = max(wide, key=lambda t: t.spread)
            raise SpreadTooWide(
                f"{len(wide)} of {len(keys)} models too noisy to trust: {worst.key} varied by "
                f"{worst.spread:.0%} (interquartile range over median of {len(worst.round_ms)} rounds: "
                f"{min(worst.round_ms):.2f}-{max(worst.round_ms):.2f} ms) above the limit of "
                f"{protocol.max_spread:.0%}; load average {_load():.2f} on {os.cpu_count()} CPUs. "
                "Rerun on a quieter machine, or raise --max-spread / --max-rounds"
            )
    return timings


# ---- runners: one inference of a genome on a runtime ----------------------------------------


def ort_session(onnx_path: str | Path, threads: int = 1):
    """An ONNX Runtime CPU session with `threads` intra-op threads and all graph optimisations."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])


def ort_runner(onnx_path: str | Path, threads: int = 1) -> Callable[[], object]:
    """One call = one inference of the ONNX model at `onnx_path` on fixed inputs."""
    session = ort_session(onnx_path, threads)
    feed = {}
    for spec in session.get_inputs():
        shape = [d if isinstance(d, int) else 1 for d in spec.shape]
        dtype = np.int64 if "int64" in spec.type else np.float32
        # token ids 1..99: valid rows of any embedding table; masks all ones
        feed[spec.name] = (np.arange(np.prod(shape)) % 99 + 1).reshape(shape).astype(dtype)
        if spec.name == "attention_mask":
            feed[spec.name] = np.ones(shape, dtype=dtype)
        elif spec.name == "token_type_ids":
            feed[spec.name] = np.zeros(shape, dtype=dtype)
    return lambda: session.run(None, feed)


def torch_runner(arch: ArchConfig, seq_len: int = 128, threads: int = 1, precision: str = "fp32") -> Callable[[], object]:
    """One call = one eager forward of the genome's torch model (eager attention, no grad; bf16
    under CPU autocast)."""
    import torch

    from nas.model import build_model
    from nas.onnx import example_inputs

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_model(arch, attention_implementation="eager").eval()
    inputs = example_inputs(seq_len, 1, arch.vocab_size)
    return torch_call(model, inputs, precision)


def torch_call(module, inputs: dict, precision: str = "fp32") -> Callable[[], object]:
    """One call = one forward of `module` on `inputs` (passed positionally, in order), in fp32 or
    under bf16 CPU autocast."""
    import contextlib

    import torch

    from predictors.quantize import check_precision

    check_precision("torch", precision)

    def run() -> object:
        autocast = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
        with torch.inference_mode(), autocast:
            return module(*inputs.values())

    return run


# ---- whole genomes ------------------------------------------------------------------------


@dataclass(frozen=True)
class Measurement:
    """The measured latency of one genome.

    Genomes are measured in ``protocol.passes`` passes over the whole set, minutes apart, each pass
    timing small chunks of genomes in interleaved rounds. A pass gives a median over rounds; the
    latency is the lowest pass median, because on a shared machine noise only ever slows a run
    down (a busy neighbour, a lower clock while other cores are loaded), and a slow phase can last
    as long as a whole chunk. The latency is ``trusted`` when the second-lowest pass agrees with
    it within ``max_spread`` (a slow phase is not confirmed twice) and the rounds of its pass agree
    within ``max_spread``; genomes that are not get more passes, up to ``max_passes``.
    """

    genome_id: str
    latency_ms: float
    spread: float  # interquartile range over median of the rounds of the pass it comes from
    round_ms: tuple[float, ...]  # that pass's round values
    trusted: bool = True
    pass_ms: tuple[float, ...] = ()  # every pass's median, in order

    @property
    def pass_disagreement(self) -> float:
        """How far the second-lowest pass median lies above the lowest (0 with one pass)."""
        ordered = sorted(self.pass_ms)
        return ordered[1] / ordered[0] - 1 if len(ordered) > 1 else 0.0

    def to_dict(self) -> dict:
        return {
            "genome_id": self.genome_id,
            "latency_ms": self.latency_ms,
            "spread": self.spread,
            "trusted": self.trusted,
            "pass_ms": list(self.pass_ms),
            "round_ms": list(self.round_ms),
        }


def _combine(gid: str, passes: list[Timing], protocol: Protocol) -> Measurement:
    best = min(passes, key=lambda t: t.median_ms)
    medians = tuple(t.median_ms for t in passes)
    m = Measurement(gid, best.median_ms, best.spread, tuple(best.round_ms), True, medians)
    confirmed = len(passes) >= protocol.passes and (protocol.passes == 1 or m.pass_disagreement <= protocol.max_spread)
    return dataclasses.replace(m, trusted=confirmed and best.spread <= protocol.max_spread)


def measure_genomes(
    archs: Sequence[ArchConfig],
    *,
    runtime: str = "onnxruntime",
    threads: int = 1,
    seq_len: int = 128,
    protocol: Protocol = Protocol(),
    chunk: int = 6,
    cache_dir: str | Path | None = None,
    clock: str = "auto",
    timer: Timer | None = None,
    seed: int = 0,
    progress: bool = True,
    precision: str = "fp32",
) -> list[Measurement]:
    """Measure each genome's end-to-end latency (ms) at batch 1 and `seq_len` tokens.

    See ``Measurement`` for the passes and what makes a latency trusted. Within a pass genomes are
    taken `chunk` at a time (exported, loaded, timed in interleaved rounds, freed); each pass
    visits them in a new order, so chunks mix differently. ONNX files go to `cache_dir` (named by
    genome id and sequence length, reused when present) or a temporary folder. `timer`
    (nanoseconds) overrides `clock`. `precision` (``predictors.quantize``): fp32, int8 (ONNX
    Runtime dynamic quantization) or bf16 (torch autocast).
    """
    from predictors.quantize import check_precision

    if timer is None:
        timer = clock_for(clock, threads)[1]
    if runtime not in RUNTIMES:
        raise NasError(f"runtime {runtime!r} is not one of {', '.join(RUNTIMES)}")
    if threads < 1:
        raise NasError(f"threads={threads} must be at least 1")
    check_precision(runtime, precision)
    if len({a.id for a in archs}) != len(archs):
        raise NasError("measure_genomes: the same genome is listed twice")
    by_id = {a.id: a for a in archs}
    timings: dict[str, list[Timing]] = {a.id: [] for a in archs}
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="nas-latency-") as tmp:
        folder = Path(cache_dir) if cache_dir is not None else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        desc = f"measuring ({runtime} {precision}, {threads} thread{'s' * (threads > 1)})"
        for pass_index in range(protocol.max_passes):
            todo = [gid for gid in by_id if len(timings[gid]) < protocol.passes or not _combine(gid, timings[gid], protocol).trusted]
            if not todo:
                break
            if pass_index:
                rng.shuffle(todo)  # new chunk mates and a new time for every genome
            bar = progress_bar(len(todo), f"{desc}, pass {pass_index + 1}", "genome", enabled=progress)
            for start in range(0, len(todo), chunk):
                batch = todo[start : start + chunk]
                runners = {gid: genome_runner(by_id[gid], runtime, threads, seq_len, folder, precision) for gid in batch}
                result = time_runners(runners, protocol, timer=timer, seed=rng.randrange(2**31), refuse=False)
                for gid in batch:
                    timings[gid].append(result[gid])
                del runners, result  # free the sessions before loading the next chunk
                bar.update(len(batch))
                bar.set_postfix_str(f"load {_load():.1f}")
            bar.close()
    return [_combine(a.id, timings[a.id], protocol) for a in archs]


def refusal_reason(measurement: Measurement, protocol: Protocol) -> str:
    """Why an untrusted measurement was refused, in numbers."""
    rounds = measurement.round_ms
    if measurement.spread > protocol.max_spread:
        return (
            f"rounds varied by {measurement.spread:.0%} (interquartile range over median of {len(rounds)} rounds, "
            f"{min(rounds):.2f}-{max(rounds):.2f} ms), above the limit of {protocol.max_spread:.0%}"
        )
    passes = ", ".join(f"{v:.2f}" for v in measurement.pass_ms)
    return (
        f"no two of {len(measurement.pass_ms)} passes agreed within {protocol.max_spread:.0%} "
        f"(pass medians {passes} ms): the machine's speed changed while measuring"
    )


def genome_onnx(arch: ArchConfig, seq_len: int, folder: str | Path, precision: str = "fp32") -> Path:
    """The genome's ONNX file in `folder` at `precision` (fp32 or int8), exported (and quantized)
    unless already there; named by genome id, sequence length and precision."""
    from nas.onnx import export_onnx
    from predictors.quantize import quantize_int8

    folder = Path(folder)
    fp32 = folder / f"{arch.id}-seq{seq_len}.onnx"
    if not fp32.exists():
        export_onnx(arch, fp32, seq_len=seq_len)
    if precision == "fp32":
        return fp32
    if precision != "int8":
        raise NasError(f"no ONNX export at precision {precision!r}; ONNX models are fp32 or int8")
    int8 = folder / f"{arch.id}-seq{seq_len}-int8.onnx"
    if not int8.exists():
        quantize_int8(fp32, int8)
    return int8


def genome_runner(arch: ArchConfig, runtime: str, threads: int, seq_len: int, folder: str | Path,
                  precision: str = "fp32") -> Callable[[], object]:
    """One call = one inference of the genome on `runtime` at `precision` (ONNX files cached in `folder`)."""
    if runtime == "torch":
        return torch_runner(arch, seq_len, threads, precision)
    return ort_runner(genome_onnx(arch, seq_len, folder, precision), threads)


# ---- conditions ---------------------------------------------------------------------------


def runtime_version(runtime: str) -> str:
    if runtime == "onnxruntime":
        import onnxruntime

        return onnxruntime.__version__
    if runtime == "torch":
        import torch

        return torch.__version__
    return "unknown"


def library_versions() -> dict[str, str]:
    """Versions of what shapes a measurement or a fit: recorded in every predictor file."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {"python": platform.python_version()}
    for package in ("nas", "numpy", "scipy", "torch", "onnx", "onnxruntime"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            pass
    return versions


def host_description() -> dict[str, object]:
    """This machine's CPU as far as the OS tells: model name, logical CPUs, caches."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": model,
        "logical_cpus": os.cpu_count(),
        "machine": platform.machine(),
        "system": f"{platform.system()} {platform.release()}",
    }


def load_average() -> float:
    """The 1-minute load average (NaN where the OS has none)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


_load = load_average


