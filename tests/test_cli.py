import json
import subprocess
import sys

import pytest

import nas
from nas.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_space_show_lists_dimensions_and_references(capsys):
    code, out, _ = run(capsys, "space", "show", "mobile")
    assert code == 0
    assert "qkv_groups" in out and "intermediate_size" in out
    assert "mobilebert           member" in out
    assert "ib-bert-large        not a member" in out


def test_space_sample_prints_valid_genomes(capsys, tmp_path):
    code, out, _ = run(capsys, "space", "sample", "tiny", "-n", "4", "--seed", "3")
    assert code == 0
    lines = out.strip().splitlines()
    assert len(lines) == 4
    for line in lines:
        record = json.loads(line)
        arch = nas.ArchConfig.from_dict(record)
        assert arch.id == record["id"]
    # a sampled line is a genome file the other commands read
    (tmp_path / "g.json").write_text(lines[0])
    code, out, _ = run(capsys, "count", str(tmp_path / "g.json"), "--seq-len", "64")
    assert code == 0 and f"{nas.count(arch_from(lines[0]), 64).params:,}" in out


def arch_from(line):
    return nas.ArchConfig.from_dict(json.loads(line))


def test_reproduce_prints_ours_beside_published(capsys):
    code, out, _ = run(capsys, "reproduce", "all")
    assert code == 0
    assert "51.09M" in out and "51.1M" in out  # SqueezeBERT
    assert "7.42G" in out
    assert "24.84M" in out and "25.3M" in out  # MobileBERT
    # every difference above 2 % is explained
    assert "mobilebert flops -5.5%" in out and "no explanation recorded" not in out
    # predicted latency beside the published one, for every shipped phone profile with a figure
    import predictors

    published = {(n, p) for n in nas.reference_names() for p in nas.reference(n).latency_ms}
    for name, profile in published:
        predicted = predictors.load(profile).predict(nas.reference(name).arch)
        assert f"{profile:<8} {predicted:>8.0f}ms" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["space", "show", "nope"], "unknown space 'nope'"),
        (["count", "missing.json"], "missing.json: neither a genome file nor a reference name"),
        (["reproduce", "bert-large"], "unknown reference 'bert-large'"),
        (["space", "sample", "tiny", "-n", "0"], "argument -n: 0 must be at least 1"),
        (["count", "--seq-len", "x", "bert-base"], "'x' is not an integer"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(argv, message, capsys):
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's flag errors
        code = exit_.code
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and message in err and "Traceback" not in err


def test_console_script_bad_genome_file(tmp_path):
    bad = tmp_path / "g.json"
    bad.write_text(json.dumps(nas.ArchConfig().to_dict() | {"num_layers": 2, "qkv_groups": 5}))
    proc = subprocess.run([sys.executable, "-m", "nas.cli", "count", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"nas: error: {bad}: qkv_groups=5 does not divide the query/key input width 768"
    assert proc.stdout == ""
