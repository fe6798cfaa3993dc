"""Shared by the bench/quality.py commands: the genome set, the result files, one-row-at-a-time CSVs."""


from __future__ import annotations

import csv
import os
import platform
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
warnings.filterwarnings("ignore")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

import nas  # noqa: E402
from nas.arch import ArchConfig  # noqa: E402
from nas.distill.config import BEFORE_ADDED  # noqa: E402
from nas.space import load_space  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
GROUND_CSV = RESULTS / "quality_ground_truth.csv"
PROXY_CSV = RESULTS / "quality_proxies.csv"
TASKS = {"supersense": ("wordnet-supersense", 48), "pair": ("wordnet-pair", 64)}  # task, fine-tune seq_len
TEACHER_SHAPE = dict(num_layers=6, hidden_size=384, num_attention_heads=12, intermediate_size=1536, embedding_size=384)


def genome_set() -> dict[str, ArchConfig]:
    """At least 20 genomes over 1-30M parameters and every kind the full space holds."""
    named = {
        "mobilebert": nas.reference("mobilebert").arch,
        "mobilebert-tiny": nas.reference("mobilebert-tiny").arch,
        "teacher-shape": ArchConfig(**TEACHER_SHAPE),
        "squeezebert-6x384": ArchConfig(num_layers=6, hidden_size=384, num_attention_heads=6, intermediate_size=1536,
                                        embedding_size=384, qkv_groups=4, intermediate_groups=4, output_groups=4),
        "bert-4x512": ArchConfig(num_layers=4, hidden_size=512, num_attention_heads=8, intermediate_size=2048, embedding_size=512),
        "bert-4x256": ArchConfig(num_layers=4, hidden_size=256, num_attention_heads=4, intermediate_size=1024, embedding_size=256),
        "bert-2x128": ArchConfig(num_layers=2, hidden_size=128, num_attention_heads=2, intermediate_size=512, embedding_size=128),
        "bert-2x64-e32": ArchConfig(num_layers=2, hidden_size=64, num_attention_heads=2, intermediate_size=256, embedding_size=32),
        "mobilebert-12l": ArchConfig(**(nas.reference("mobilebert").arch.to_dict() | {"num_layers": 12})),
        # the old demo front's best and fastest kinds: 2 layers, a 64-wide bottleneck
        "demo-2x768-b64": ArchConfig(num_layers=2, hidden_size=768, intra_bottleneck_size=64, embedding_size=256,
                                     num_attention_heads=4, intermediate_size=512, attention_input="bottleneck"),
        "demo-2x512-b64": ArchConfig(num_layers=2, hidden_size=512, intra_bottleneck_size=64, embedding_size=384,
                                     num_attention_heads=4, intermediate_size=512, attention_input="bottleneck"),
    }
    # the rest: seeded draws from the full space, 1-30M parameters, at most 12 layers (CPU cost)
    space = load_space("mobile")
    drawn = 0
    for arch in space.iter_samples(400, seed=7):
        params = nas.count(arch).params
        if 1e6 <= params <= 30e6 and arch.num_layers <= 12:
            named[f"mobile-s7-{drawn:02d}"] = arch
            drawn += 1
            if drawn == 11:
                break
    return named


def draw_band(seed: int, count: int, params: tuple[float, float], latency_ms: tuple[float, float],
              max_layers: int = 12) -> dict[str, ArchConfig]:
    """Genomes outside the set, for a held-out check: the first ``count`` seeded draws from the full
    space whose parameters and pixel4 latency fall in the given ranges (at most ``max_layers``, for CPU
    cost) and that are not already in the set; named by their id."""
    from nas.search.objectives import CheapScorer

    known = {arch.id for arch in genome_set().values()}
    scorer = CheapScorer(["latency_ms@pixel4"])
    found: dict[str, ArchConfig] = {}
    for arch in load_space("mobile").iter_samples(20000, seed=seed):
        if arch.num_layers > max_layers or arch.id in known or not params[0] <= nas.count(arch).params <= params[1]:
            continue
        if latency_ms[0] <= scorer.scores(arch)["latency_ms@pixel4"] <= latency_ms[1]:
            found[arch.id] = arch
            if len(found) == count:
                break
    return found


# ---- CSV rows, appended one at a time -------------------------------------------------------


def done_names(path: Path) -> set[str]:
    return {row["name"] for row in _read_list(path)}


def append_row(path: Path, row: dict) -> None:
    """Append one row (header first on a new file), flushed and fsynced: a stop loses no finished row."""
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists() or path.stat().st_size == 0
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)
        f.flush()
        os.fsync(f.fileno())


def read_rows(path: Path) -> dict[str, dict]:
    return {row["name"]: row for row in _read_list(path)}


def provenance(threads: int, device: torch.device | None = None) -> dict:
    from nas.precision import cpu_model

    import transformers

    gpu = {"gpu": torch.cuda.get_device_name(device)} if device is not None and device.type == "cuda" else {}
    return gpu | {
        "hardware": cpu_model(),
        "machine": platform.node(),
        "threads": threads,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "date": time.strftime("%Y-%m-%d"),
    }


def usage_error(message: str) -> NoReturn:
    """Bad input to a bench command: one line on stderr, exit 2."""
    print(f"{Path(sys.argv[0]).name}: error: {message}", file=sys.stderr)
    sys.exit(2)


def selected(args) -> dict[str, ArchConfig]:
    if getattr(args, "genome_files", None):  # genomes from outside the set (a search's front), named by file stem
        from nas.errors import NasError
        from nas.references import load_genome

        try:
            return {Path(f).stem: load_genome(f) for f in args.genome_files}
        except NasError as err:
            usage_error(f"--genome-files {err}")
    genomes = genome_set()
    if args.only:
        wanted = args.only.split(",")
        unknown = [n for n in wanted if n not in genomes]
        if unknown:
            usage_error(f"--only {unknown[0]}: not in the genome set (see `genomes`)")
        genomes = {n: genomes[n] for n in wanted}
    return genomes



# the result files and the kept students, by command
STUDENTS = Path(__file__).resolve().parent.parent / "runs" / "quality" / "students"
LP_CSV = RESULTS / "quality_ground_truth_lp.csv"
FEATURES = STUDENTS.parent / "features"
GROUND_STEPS = 640  # the budget of the first ground truth, whose files keep their unsuffixed names


@dataclass(frozen=True)
class GroundFiles:
    """Where one ground-truth run (one distillation budget) keeps its rows, students and features."""

    steps: int
    seed: int
    csv: Path
    students: Path
    lp_csv: Path
    features: Path


def ground_files(steps: int = GROUND_STEPS, seed: int = 0, tag: str = "") -> GroundFiles:
    """640 steps, seed 0 keeps the first run's names; another budget or distillation seed gets its
    own files beside them (``_1280``, ``_1280_seed1``), so no run overwrites another's snapshots or rows.
    ``tag`` names a run of genomes outside the set (``_front8_640_seed0``), kept apart from the set's runs."""
    if steps == GROUND_STEPS and seed == 0 and not tag:
        return GroundFiles(steps, seed, GROUND_CSV, STUDENTS, LP_CSV, FEATURES)
    tag = (f"{tag}_" if tag else "") + f"{steps}" + (f"_seed{seed}" if seed or tag else "")
    return GroundFiles(steps, seed, RESULTS / f"quality_ground_truth_{tag}.csv", STUDENTS.parent / f"students-{tag}",
                       RESULTS / f"quality_ground_truth_lp_{tag}.csv", STUDENTS.parent / f"features-{tag}")


def parse_run(text: str) -> GroundFiles:
    """A ground-truth run named on the command line (an argparse type): STEPS or STEPS:SEED."""
    import argparse

    steps, _, seed = text.partition(":")
    try:
        return ground_files(int(steps), int(seed or 0))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give STEPS or STEPS:SEED, e.g. 1280 or 1280:1") from None


def lp_ground_truth(row: dict, tasks: list[str], budget: str = "full") -> float:
    """One genome's linear-probe ground truth from its row: the mean accuracy of ``lp-`` tasks."""
    return sum(float(row[f"{budget}_{task.removeprefix('lp-')}_acc"]) for task in tasks) / len(tasks)


LP_TASKS = ("supersense", "pos")  # one set of glosses, two label sets: the lexicographer file, its part of speech
READOUT_CSV = RESULTS / "quality_readouts.csv"
BUDGET_CSV = RESULTS / "quality_budgets.csv"
LP_BUDGET_CSV = RESULTS / "quality_budgets_lp.csv"  # the same runs read by the lp probe (budgets --score lp)
LP_EXAMPLES = BEFORE_ADDED["lp_examples"]  # DistillConfig's lp_examples before session 12: what quality_budgets_lp.csv was read with


def budget_csv(score: str, stop_fraction: float = 1.0, lp_examples: int = LP_EXAMPLES, crossfit: bool = False) -> Path:
    """Where ``budgets`` keeps its rows: the cosine's, the lp probe's at the settings of session 11,
    and a file per other (stop fraction, read-out size), e.g. quality_budgets_lp_stop0.5_lp8000.csv;
    ``--crossfit`` runs (each student read both ways) in one of their own beside it, ``..._crossfit.csv``."""
    if score != "lp":
        path = BUDGET_CSV
    elif stop_fraction == 1.0 and lp_examples == LP_EXAMPLES:
        path = LP_BUDGET_CSV
    else:
        path = RESULTS / f"quality_budgets_lp_stop{stop_fraction:g}_lp{lp_examples}.csv"
    return path.with_name(path.stem + "_crossfit.csv") if crossfit else path
# What every bench run is measured at, pinned where it runs because DistillConfig's defaults move:
# the peak learning rate of every run before session 7 (the budget CSV records each row's lr), and
# the cosine read-out alone as the score (the report adds the parameter term itself; budgets --score lp
# reads the lp probe).
MEASURED_LR = 2e-3
# the cosine, the whole schedule, no retry of a diverged run: every run before session 12 (the ground
# truth retries, in its own way: quality_ground.distill_with_retries)
MEASURED = {"lr": MEASURED_LR, "params_weight": 0.0, "score": "cosine", "stop_fraction": 1.0, "divergence_retries": 0}

def _read_list(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _claimed_by_another(marker: Path) -> bool:
    try:
        pid = int(marker.read_text())
    except (OSError, ValueError):
        return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False  # a stopped run: its genome is free again
    except PermissionError:
        pass
    return True


def _pack(correct) -> str:
    """A dev set's per-example outcomes (bools) as base64 of their packed bits."""
    import base64

    import numpy as np

    return base64.b64encode(np.packbits(correct.astype(bool)).tobytes()).decode("ascii")


def _unpack(text: str, n: int):
    import base64

    import numpy as np

    return np.unpackbits(np.frombuffer(base64.b64decode(text), dtype=np.uint8))[:n].astype(bool)
