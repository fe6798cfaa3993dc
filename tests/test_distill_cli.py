"""`nas distill`: JSON lines, --save, and one-line errors with exit code 2 before any training."""

from __future__ import annotations

import json
import math

import pytest

from nas.cli import main
from nas.distill import load_student
from nas.space import load_space

TINY = load_space("tiny").genome(
    {"num_layers": 1, "intra_bottleneck_size": 32, "attention_input": "shared_bottleneck", "num_attention_heads": 2,
     "qkv_groups": 2, "intermediate_size": 64, "num_ffn": 2, "intermediate_groups": 2, "output_groups": 1,
     "trigram_input": True, "activation": "relu", "norm": "no_norm"}
)  # fmt: skip


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> list[str]:
    """Flags of a few-step run of a tiny genome, with a cache folder of its own."""
    root = tmp_path_factory.mktemp("cli")
    genome = TINY.save(root / "genome.json")
    return ["--arch", str(genome), "--preset", "quick", "--steps", "4", "--seq-len", "16", "--batch-size", "4",
            "--checkpoints", "2", "--threads", "1", "--cache-dir", str(root / "cache")]  # fmt: skip


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_json_lines_per_checkpoint_then_the_result(capsys, small_run):
    code, out, _ = run(capsys, "distill", *small_run, "--seed", "2", "--json")
    assert code == 0
    records = [json.loads(line) for line in out.strip().splitlines()]
    assert [r["type"] for r in records] == ["checkpoint", "checkpoint", "result"]
    assert [r["step"] for r in records[:2]] == [2, 4]
    assert records[0]["arch_id"] == TINY.id and -1 <= records[1]["cosine"] <= 1
    result = records[-1]
    assert result["status"] == "ok" and result["score"] == records[1]["score"]
    assert result["config"]["seed"] == 2 and result["config"]["steps"] == 4 and result["config"]["seq_len"] == 16


def test_lp_crossfit_is_on_by_default_and_the_flag_turns_it_off(capsys, small_run, tmp_path):
    code, out, _ = run(capsys, "distill", *small_run, "--json")
    assert code == 0 and json.loads(out.strip().splitlines()[-1])["config"]["lp_crossfit"] is True
    code, out, _ = run(capsys, "distill", *small_run, "--no-lp-crossfit", "--json")
    assert code == 0 and json.loads(out.strip().splitlines()[-1])["config"]["lp_crossfit"] is False
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps({"lp_crossfit": "yes"}))
    code, out, err = run(capsys, "distill", *small_run, "--config", str(settings))
    assert code == 2 and out == "" and "lp_crossfit='yes': must be true or false" in err


def test_params_weight_is_added_to_the_score_and_named_in_the_summary(capsys, small_run):
    code, out, _ = run(capsys, "distill", *small_run, "--params-weight", "0.05", "--json")
    assert code == 0
    *checkpoints, result = [json.loads(line) for line in out.strip().splitlines()]
    term = 0.05 * math.log(result["params"] / 1e6)
    assert all(c["score"] == pytest.approx(c["cosine"] + term, abs=1e-12) for c in checkpoints)
    assert result["config"]["params_weight"] == 0.05 and result["score"] == checkpoints[-1]["score"]
    code, out, _ = run(capsys, "distill", *small_run, "--params-weight", "0.05")
    assert code == 0 and f"score {result['score']:.4f} (cosine + 0.05 ln(params / 1M))" in out


def test_save_keeps_a_loadable_student_and_never_overwrites(capsys, small_run, tmp_path):
    target = tmp_path / "student"
    code, out, _ = run(capsys, "distill", *small_run, "--save", str(target))
    assert code == 0 and f"saved the student to {target}" in out
    assert load_student(target).arch == TINY
    saved = json.loads((target / "distill.json").read_text())
    assert saved["status"] == "ok" and saved["arch_id"] == TINY.id
    code, out, err = run(capsys, "distill", *small_run, "--save", str(target))
    assert code == 2 and "already exists" in err and out == ""  # refused before training


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--teacher", "/no/such/teacher"], "teacher /no/such/teacher: no such directory"),
        (["--data", "/no/such/corpus.txt"], "corpus /no/such/corpus.txt"),
        (["--stop-fraction", "1.5"], "stop_fraction=1.5: must be in (0, 1]"),
        (["--divergence-retries", "5"], "divergence_retries=5: must be 0-3"),
        (["--score", "lp", "--lp-examples", "100"], "lp_examples=100: must be 500-40000 glosses"),
    ],
)
def test_bad_teacher_or_corpus_is_one_line_and_exit_code_2(capsys, small_run, extra, fragment):
    code, out, err = run(capsys, "distill", *small_run, *extra)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("nas: error: ") and fragment in err


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--lr", "0"], "must be above 0"),
        (["--params-weight", "-0.05"], "argument --params-weight"),
        (["--steps", "many"], "'many' is not an integer"),
        (["--preset", "huge"], "invalid choice"),
        (["--warmup", "3"], "unrecognized arguments"),
    ],
)
def test_bad_flag_is_one_line_and_exit_code_2(capsys, small_run, extra, fragment):
    with pytest.raises(SystemExit) as exit_info:
        main(["distill", *small_run, *extra])
    _, err = capsys.readouterr()
    assert exit_info.value.code == 2 and err.count("\n") == 1 and fragment in err


def test_vocabulary_mismatch_is_refused(capsys, small_run, tmp_path):
    genome = TINY.replace(vocab_size=500).save(tmp_path / "small-vocab.json")
    args = list(small_run)
    args[args.index("--arch") + 1] = str(genome)
    code, out, err = run(capsys, "distill", *args)
    assert code == 2 and "vocab_size 500 does not match the teacher's tokenizer" in err and out == ""
