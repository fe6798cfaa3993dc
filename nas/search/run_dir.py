"""A search's folder, ``runs/NAME/``, and the one-row-per-trial log kept in it.

    runs/NAME/
      settings.json     the settings used (SearchSettings)
      space.yaml        a copy of the search space file (a resume reads this copy)
      optuna.journal    the Optuna study (JournalStorage; ``optuna-dashboard runs/NAME/optuna.journal``)
      tune/, tune-2/    the Ray Tune experiment of the first session, and of each resume
      trials.csv        one row per trial: status, reason, every score, the genome
      pareto.json       the Pareto-optimal genomes among the trials that finished ("ok")
      students/         safetensors of Pareto students, with --keep-students
      report/           ``nas report`` output
      .lock             PID of the search writing here; refuses a second one

Every file is written to a temporary name and renamed, so a killed driver leaves the previous
complete version, never a torn one.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import socket
import time
from dataclasses import fields
from pathlib import Path
from typing import Any, Iterable

from nas.arch import ArchConfig
from nas.errors import NasError, atomic_write_json, atomic_write_text, open_user_file
from nas.search.objectives import Objective
from nas.search.pareto import non_dominated

RUNS_DIR = Path("runs")
GENOME_FIELDS = [f.name for f in fields(ArchConfig)]
_FIXED_COLUMNS = ["trial", "status", "reason", "genome_id"]
_TAIL_COLUMNS = ["elapsed_s", "step", "restarts", "tune_trial_id", "node"]


def resolve_run(name_or_path: str | Path) -> Path:
    """``runs/NAME`` for a bare name, else the path as given."""
    path = Path(name_or_path)
    if len(path.parts) == 1 and not path.exists():
        return RUNS_DIR / path
    return path


class RunDir:
    """Paths inside one run folder, and its lock."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).absolute()
        self.name = self.root.name

    settings_path = property(lambda self: self.root / "settings.json")
    space_path = property(lambda self: self.root / "space.yaml")
    journal_path = property(lambda self: self.root / "optuna.journal")
    tune_dir = property(lambda self: self.root / "tune")
    trials_csv = property(lambda self: self.root / "trials.csv")
    pareto_json = property(lambda self: self.root / "pareto.json")
    students_dir = property(lambda self: self.root / "students")
    report_dir = property(lambda self: self.root / "report")
    lock_path = property(lambda self: self.root / ".lock")

    def tune_dirs(self) -> list[Path]:
        """Every session's Ray Tune experiment, oldest first: ``tune/``, then ``tune-2/``, ... per resume."""
        found = [p for p in self.root.glob("tune*") if p.is_dir() and (p.name == "tune" or p.name.removeprefix("tune-").isdigit())]
        return sorted(found, key=lambda p: 1 if p.name == "tune" else int(p.name.removeprefix("tune-")))

    def next_tune_dir(self) -> Path:
        """Where the next session's Tune experiment goes."""
        sessions = self.tune_dirs()
        return self.tune_dir if not sessions else self.root / f"tune-{len(sessions) + 1}"

    def exists(self) -> bool:
        return self.settings_path.exists()

    def require(self) -> "RunDir":
        """This run, or a NasError when it is not a search's folder."""
        if not self.exists():
            raise NasError(f"{self.root}: not a search run (no settings.json); runs are created by `nas search --name NAME`")
        return self

    # ---- the lock --------------------------------------------------------------------------

    def acquire(self) -> None:
        """Take the run's lock; NasError if a live process holds it. A dead holder's lock is taken over."""
        self.root.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": _process_start(os.getpid()), "since": time.time()}
        for _ in range(3):
            try:
                fd = os.open(self.lock_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is None:  # being written this instant, or torn: look again
                    time.sleep(0.2)
                    holder = self._holder()
                if holder is not None and self._alive(holder):
                    where = f"PID {holder['pid']}" + (f" on {holder['host']}" if holder["host"] != me["host"] else "")
                    hint = "" if holder["host"] == me["host"] else f"; if that machine is gone, delete {self.lock_path}"
                    raise NasError(f"{self.root}: in use by another search ({where}){hint}")
                # Stale: its process is gone. Remove it and race for a fresh one.
                try:
                    os.unlink(self.lock_path)
                except FileNotFoundError:
                    pass
                continue
            with os.fdopen(fd, "w") as handle:
                json.dump(me, handle)
            return
        raise NasError(f"{self.root}: could not take the lock {self.lock_path}; another search keeps taking it")

    def in_use(self) -> bool:
        """Whether a live search holds this run's lock."""
        holder = self._holder()
        return holder is not None and self._alive(holder)

    def release(self) -> None:
        holder = self._holder()
        if holder is not None and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
            self.lock_path.unlink(missing_ok=True)

    def _holder(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.lock_path.read_text())
            return data if isinstance(data, dict) and isinstance(data.get("pid"), int) else None
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    @staticmethod
    def _alive(holder: dict[str, Any]) -> bool:
        if holder.get("host") != socket.gethostname():
            return True  # cannot see another machine's processes: assume the worst
        pid = holder["pid"]
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        started = holder.get("started")
        # A recycled PID belongs to a process that started later than the one that wrote the lock.
        return started is None or _process_start(pid) == started


def _process_start(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux), to tell a recycled PID apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


# ---- the trial log ----------------------------------------------------------------------------


class TrialLog:
    """One record per trial, keyed by Optuna trial number; every change rewrites trials.csv and
    pareto.json atomically, so a finished trial is on disk before the search moves on.

    A record is a dict: ``trial``, ``status`` (one of ``nas.statuses.STATUSES``), ``reason``, ``genome_id``,
    ``genome`` (dict or None), ``scores`` (metric -> float), ``elapsed_s``, ``step``, ``restarts``
    (times Ray restarted the trial after its worker or node died), ``tune_trial_id``, ``node`` (the
    Ray node that ran it, ``IP/NODE_ID``), and ``student`` (path or None).
    """

    def __init__(self, run: RunDir, objectives: list[Objective]) -> None:
        self.run = run
        self.objectives = objectives
        self.records: dict[int, dict[str, Any]] = {}
        if run.trials_csv.exists():
            # Lenient: a torn line (a kill or an editor) is dropped; a resume rebuilds every row
            # from the Optuna journal.
            for record in read_trials_csv(run.trials_csv, skip_bad_lines=True):
                self.records[record["trial"]] = record | {"student": None}
        self._students = _read_students(run.pareto_json)
        for number, path in self._students.items():
            if number in self.records:
                self.records[number]["student"] = path

    def add(self, record: dict[str, Any], flush: bool = True) -> None:
        record.setdefault("student", self.records.get(record["trial"], {}).get("student"))
        self.records[record["trial"]] = record
        if flush:
            self.flush()

    def flush(self) -> None:
        atomic_write_text(self.run.trials_csv, trials_csv_text(self.records.values(), self.objectives))
        atomic_write_json(self.run.pareto_json, pareto_document(self.records.values(), self.objectives))

    def evaluated(self) -> dict[str, dict[str, Any]]:
        """The first record of each genome that a Ray trial ran (any status but screened ones)."""
        out: dict[str, dict[str, Any]] = {}
        for number in sorted(self.records):
            record = self.records[number]
            if record.get("tune_trial_id") and record["genome_id"] and record["genome_id"] not in out:
                out[record["genome_id"]] = record
        return out

    def front(self) -> list[dict[str, Any]]:
        return pareto_records(self.records.values(), self.objectives)


def pareto_records(records: Iterable[dict[str, Any]], objectives: list[Objective]) -> list[dict[str, Any]]:
    """The Pareto-optimal "ok" records (one per genome; distinct genomes with equal scores are all
    kept, as Optuna keeps them), sorted by the first objective."""
    names = [o.name for o in objectives]
    seen: set[str] = set()
    candidates = []
    for record in sorted(records, key=lambda r: r["trial"]):
        if record["status"] != "ok" or record["genome_id"] in seen:
            continue
        if not all(isinstance(record["scores"].get(n), (int, float)) for n in names):
            continue
        seen.add(record["genome_id"])
        candidates.append(record)
    points = [[r["scores"][n] for n in names] for r in candidates]
    front = [candidates[i] for i in non_dominated(points, [o.direction for o in objectives], keep_equal=True)]
    first = objectives[0]
    return sorted(front, key=lambda r: r["scores"][first.name] * (1 if first.direction == "min" else -1))


def pareto_document(records: Iterable[dict[str, Any]], objectives: list[Objective]) -> dict[str, Any]:
    records = list(records)
    counts: dict[str, int] = {}
    for record in records:
        counts[record["status"]] = counts.get(record["status"], 0) + 1
    return {
        "objectives": [{"name": o.name, "direction": o.direction} for o in objectives],
        "trials": len(records),
        "statuses": dict(sorted(counts.items())),
        "front": [
            {
                "trial": r["trial"],
                "genome_id": r["genome_id"],
                "scores": r["scores"],
                "genome": r["genome"],
                "student": r.get("student"),
            }
            for r in pareto_records(records, objectives)
        ],
    }


def _read_students(pareto_json: Path) -> dict[int, str]:
    try:
        data = json.loads(pareto_json.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return {p["trial"]: p["student"] for p in data.get("front", []) if p.get("student")}


def load_front(run: RunDir) -> tuple[list[Objective], list[dict[str, Any]]]:
    """The objectives and Pareto front recorded in a run's pareto.json."""
    try:
        data = json.loads(run.pareto_json.read_text())
    except FileNotFoundError:
        raise NasError(f"{run.root}: no pareto.json yet; the search has not finished a trial") from None
    except json.JSONDecodeError as err:
        raise NasError(f"{run.pareto_json}: not valid JSON ({err.msg})") from None
    objectives = [Objective(o["name"], o["direction"], expensive=o["name"] == "distill") for o in data["objectives"]]
    return objectives, data["front"]


# ---- trials.csv -------------------------------------------------------------------------------


def _score_columns(records: list[dict[str, Any]], objectives: list[Objective]) -> list[str]:
    columns = [o.name for o in objectives]
    for record in records:
        for name in record["scores"]:
            if name not in columns:
                columns.append(name)
    return columns


def trials_csv_text(records: Iterable[dict[str, Any]], objectives: list[Objective]) -> str:
    records = sorted(records, key=lambda r: r["trial"])
    scores = _score_columns(records, objectives)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(_FIXED_COLUMNS + scores + _TAIL_COLUMNS + GENOME_FIELDS)
    for r in records:
        genome = r.get("genome") or {}
        row = [r["trial"], r["status"], r.get("reason", ""), r.get("genome_id", "")]
        row += [_cell(r["scores"].get(name)) for name in scores]
        row += [_cell(r.get(name)) for name in _TAIL_COLUMNS]
        row += [_cell(genome.get(name)) if genome else "" for name in GENOME_FIELDS]
        writer.writerow(row)
    return out.getvalue()


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    return value


def read_trials_csv(path: Path, skip_bad_lines: bool = False) -> list[dict[str, Any]]:
    """Records back from a trials.csv that ``trials_csv_text`` wrote (types restored).

    A line that cannot be read is a NasError naming it, or with `skip_bad_lines` left out (logged).
    """
    defaults = ArchConfig()
    records = []
    with open_user_file(path, newline="") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        missing = [c for c in _FIXED_COLUMNS if c not in header]
        if missing:
            raise NasError(f"{path}: not a trials.csv (no {missing[0]!r} column)")
        score_columns = [c for c in header if c not in _FIXED_COLUMNS + _TAIL_COLUMNS + GENOME_FIELDS]
        for line, row in enumerate(reader, start=2):
            try:
                genome = None
                if row.get(GENOME_FIELDS[0]):
                    genome = {name: _genome_value(getattr(defaults, name), name, row[name]) for name in GENOME_FIELDS}
                records.append(
                    {
                        "trial": int(row["trial"]),
                        "status": row["status"],
                        "reason": row["reason"],
                        "genome_id": row["genome_id"],
                        "genome": genome,
                        "scores": {c: float(row[c]) for c in score_columns if row[c] != ""},
                        "elapsed_s": float(row["elapsed_s"]) if row.get("elapsed_s") else None,
                        "step": int(float(row["step"])) if row.get("step") else None,
                        "restarts": int(row["restarts"]) if row.get("restarts") else None,
                        "tune_trial_id": row.get("tune_trial_id") or "",
                        "node": row.get("node") or "",
                    }
                )
            except (KeyError, ValueError, TypeError) as err:
                if not skip_bad_lines:
                    raise NasError(f"{path}: line {line}: cannot read ({err}); the run's optuna.journal holds every trial: `nas search --resume` rebuilds this file") from None
                logging.getLogger("nas.search").warning("%s: line %d is torn or edited; skipped (rebuilt from the journal on resume)", path, line)
    return records


def _genome_value(default: Any, name: str, text: str) -> Any:
    if text == "":
        return None
    if isinstance(default, bool):
        return text == "True"
    if isinstance(default, int) or name == "intra_bottleneck_size":
        return int(text)
    return text
