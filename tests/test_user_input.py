"""Bad input for every command that reads a user's file or folder: one line naming the path and the
reason, exit code 2, no traceback; and nothing the user already has is overwritten or left behind."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from nas.arch import ArchConfig
from nas.cli import main
from nas.references import reference

REPO = Path(__file__).resolve().parent.parent


def run(capsys, *argv):
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit_:  # argparse refuses a flag's value this way
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def _bad_files(tmp_path: Path) -> dict[str, Path]:
    """A folder, a binary file, a Latin-1 text file and a missing file, each under a name the
    command would accept."""
    made = {}
    for suffix in (".json", ".yaml", ".csv"):
        folder = tmp_path / f"folder{suffix}"
        folder.mkdir()
        (folder / "inside.txt").write_text("not what the command wants")
        made[f"folder{suffix}"] = folder
        binary = tmp_path / f"binary{suffix}"
        binary.write_bytes(bytes(range(256)) * 8)
        made[f"binary{suffix}"] = binary
        latin = tmp_path / f"latin1{suffix}"
        latin.write_bytes("name: caf\u00e9\n".encode("latin-1"))
        made[f"latin1{suffix}"] = latin
        made[f"missing{suffix}"] = tmp_path / f"missing{suffix}"
    return made


# Each command that reads a user's file, with the file's place in its arguments.
_READERS = {
    "space show": (".yaml", lambda f, out: ["space", "show", f]),
    "space sample": (".yaml", lambda f, out: ["space", "sample", f, "-n", "1"]),
    "count": (".json", lambda f, out: ["count", f]),
    "search --space": (".yaml", lambda f, out: ["search", "--space", f, "--objectives", "params", "--name", out / "run"]),
    "search --settings": (".json", lambda f, out: ["search", "--settings", f, "--name", out / "run"]),
    "distill --arch": (".json", lambda f, out: ["distill", "--arch", f, "--steps", "2"]),
    "distill --config": (".json", lambda f, out: ["distill", "--arch", "mobilebert-tiny", "--config", f]),
    "finetune --task": (".csv", lambda f, out: ["finetune", "--arch", "mobilebert-tiny", "--distill-steps", "2", "--task", f]),
    "latency predict": (".json", lambda f, out: ["latency", "predict", f, "--device", "pixel4"]),
    "latency fit": (".json", lambda f, out: ["latency", "fit", f, "--out", out / "p.json"]),
    "latency ingest": (".csv", lambda f, out: ["latency", "ingest", f, "--device", "d", "--runtime", "r", "--threads", "1", "--out", out / "p.json"]),
}


@pytest.mark.parametrize("kind", ["folder", "binary", "latin1", "missing"])
@pytest.mark.parametrize("command", list(_READERS))
def test_a_bad_path_is_one_line_naming_it_and_exit_2(command, kind, tmp_path, capsys):
    suffix, argv = _READERS[command]
    if kind == "folder" and command in ("latency predict", "latency ingest"):
        pytest.skip("a folder is valid input here: every file in it is read")
    path = _bad_files(tmp_path)[f"{kind}{suffix}"]
    out = tmp_path / "out"
    code, stdout, err = run(capsys, *argv(path, out))
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err and path.name in lines[0], err
    assert not out.exists()  # nothing written


def test_a_read_only_output_folder_is_one_line(tmp_path, capsys):
    # Permission bits do not stop root; sysfs refuses every new file, for root as well.
    read_only = tmp_path / "ro" if os.geteuid() != 0 else Path("/sys/kernel")
    if os.geteuid() != 0:
        read_only.mkdir()
        read_only.chmod(0o555)
    for argv in (
        ["search", "--space", "tiny", "--objectives", "params", "--trials", "1", "--name", read_only / "run"],
        ["latency", "fit", REPO / "tests" / "data" / "missing.json", "--out", read_only / "p.json"],
    ):
        code, _, err = run(capsys, *argv)
        assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


def test_space_fixed_values_are_checked_at_load(tmp_path, capsys):
    space = yaml.safe_load((REPO / "search_spaces" / "tiny.yaml").read_text())
    space["dimensions"].pop("hidden_size", None)
    for value in ("sixty-four", -64, 0, True):
        space["fixed"]["hidden_size"] = value
        path = tmp_path / "bad.yaml"
        path.write_text(yaml.safe_dump(space))
        code, _, err = run(capsys, "space", "show", path)
        assert code == 2 and "fixed.hidden_size" in err and "expected a whole number of at least 1" in err, err


def test_a_genome_file_must_state_every_field(tmp_path, capsys):
    genome = reference("mobilebert-tiny").arch.to_dict()
    del genome["hidden_size"], genome["norm"]
    path = tmp_path / "partial.json"
    path.write_text(json.dumps(genome))
    code, _, err = run(capsys, "count", path)
    assert code == 2 and "missing fields hidden_size, norm" in err
    assert ArchConfig.from_dict(genome).hidden_size == ArchConfig().hidden_size  # in code, defaults still apply


def test_a_genome_too_large_to_train_is_refused_before_any_allocation(tmp_path, capsys):
    path = tmp_path / "huge.json"
    path.write_text(json.dumps(reference("mobilebert-tiny").arch.to_dict() | {"intermediate_size": 10**12}))
    code, _, err = run(capsys, "distill", "--arch", path, "--steps", "2")
    assert code == 2 and "GiB for weights, gradients and optimizer state" in err and "intermediate_size 1000000000000" in err


def test_a_negative_time_budget_is_refused(capsys):
    code, _, err = run(capsys, "search", "--space", "tiny", "--time-budget", "-5", "--name", "never")
    assert code == 2 and "--time-budget" in err and "at least 0" in err


def test_distill_repeats_reaches_the_trials_distillation_over_the_settings_file(tmp_path, capsys):
    from nas.cli import build_parser
    from nas.search.cli import settings_from_args

    given = tmp_path / "settings.json"
    given.write_text(json.dumps({"space": "tiny", "distill": {"steps": 160}}))
    args = build_parser().parse_args(["search", "--settings", str(given), "--distill-repeats", "2"])
    config = settings_from_args(args).distill_config()
    assert (config.repeats, config.steps) == (2, 160)  # the file's own override is kept
    assert settings_from_args(build_parser().parse_args(["search"])).distill_config().repeats == 1
    code, _, err = run(capsys, "search", "--space", "tiny", "--distill-repeats", "0", "--name", tmp_path / "never")
    assert code == 2 and "--distill-repeats" in err and not (tmp_path / "never").exists()


def test_a_folder_that_is_not_a_run_is_never_written_into(tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "space.yaml").write_text("my own space\n")
    (mine / "trials.csv").write_text("my,own\n")
    code, _, err = run(capsys, "search", "--space", "tiny", "--objectives", "params", "--trials", "1", "--name", mine)
    assert code == 2 and "not a search run" in err
    assert sorted(p.name for p in mine.iterdir()) == ["space.yaml", "trials.csv"]
    assert (mine / "space.yaml").read_text() == "my own space\n"


def test_a_refused_search_leaves_no_run_folder(tmp_path, capsys):
    run_dir = tmp_path / "cpus"
    code, _, err = run(capsys, "search", "--space", "tiny", "--objectives", "params", "--trials", "1",
                       "--cpus-per-trial", "99", "--name", run_dir)
    assert code == 2 and "--cpus-per-trial 99" in err
    assert not run_dir.exists()


def test_measurement_fields_are_strict_and_conflicting_readings_are_refused(tmp_path, capsys):
    from predictors.data import MeasurementSet

    arch = reference("mobilebert-tiny").arch
    data = {"format": "nas-latency-measurements", "format_version": 1, "device": "d", "runtime": "r", "threads": 1,
            "seq_len": 128, "records": [{"genome_id": arch.id, "latency_ms": 5.0, "trusted": "false"}],
            "genomes": {arch.id: arch.to_dict()}}
    from predictors import data as data_module

    data["format"], data["format_version"] = data_module.MEASUREMENTS_FORMAT, data_module.MEASUREMENTS_VERSION
    path = tmp_path / "m.json"
    path.write_text(json.dumps(data))
    with pytest.raises(Exception, match=r"records\[0\]: field 'trusted' must be true or false"):
        MeasurementSet.load(path)
    # Two readings of one genome, 62 and 90 ms: kept, flagged, and left out of the fit.
    csv = tmp_path / "phone.csv"
    csv.write_text("genome_id,latency_ms\nmobilebert,62\nmobilebert,90\nmobilebert-tiny,40\nmobilebert-no-opt,192\n")
    out = tmp_path / "phone.json"
    code, _, err = run(capsys, "latency", "ingest", csv, "--device", "phone", "--runtime", "tflite", "--threads", "4",
                       "--seq-len", "128", "--base", "pixel4", "--groups", "compute,rest", "--out", out)
    assert code == 0 and "mobilebert: its 2 readings disagree by 37% (62, 90 ms)" in err, err
    record = next(r for r in MeasurementSet.load(tmp_path / "phone.measurements.json").records if r.get("name") == "mobilebert")
    assert record["trusted"] is False and [x["latency_ms"] for x in record["readings"]] == [62.0, 90.0]
    import predictors

    fitted_on = [p["name"] for p in predictors.load(out).provenance["fitted_on"]]
    assert fitted_on == ["mobilebert-tiny", "mobilebert-no-opt"]


def test_report_never_replaces_a_users_report(tmp_path, capsys):
    run_dir = tmp_path / "run"
    code, _, err = run(capsys, "search", "--space", "tiny", "--objectives", "params", "--trials", "1", "--name", run_dir,
                       "--quiet", "--no-report")
    assert code == 0, err
    out = tmp_path / "mine"
    out.mkdir()
    (out / "report.md").write_text("my notes\n")
    code, _, err = run(capsys, "report", run_dir, "--out", out)
    assert code == 2 and "already holds report.md" in err and "--overwrite" in err
    assert sorted(p.name for p in out.iterdir()) == ["report.md"] and (out / "report.md").read_text() == "my notes\n"
    code, _, err = run(capsys, "report", run_dir, "--out", out, "--overwrite")
    assert code == 0 and (out / "report.md").read_text() != "my notes\n"
    assert run(capsys, "report", run_dir)[0] == 0 and run(capsys, "report", run_dir)[0] == 0  # its own folder: rewritten
