"""nas.finetune (run and CLI), bf16 precision of runs, weight snapshots and the downstream probe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from nas.cli import main
from nas.distill import DistillConfig, DistillError, distill, load_teacher
from nas.distill.quality import lp_baseline, lp_score, probe_baseline, probe_score, ridge_probe_accuracy
from nas.finetune import FinetuneConfig, FinetuneError, finetune, load_task
from nas.finetune.run import classification_scores
from nas.model import build_model
from nas.precision import cpu_has_fast_bf16, resolve_precision
from nas.space import load_space

TINY = load_space("tiny").genome(
    {"num_layers": 2, "intra_bottleneck_size": None, "attention_input": "hidden", "num_attention_heads": 2,
     "qkv_groups": 1, "intermediate_size": 64, "num_ffn": 1, "intermediate_groups": 1, "output_groups": 1,
     "trigram_input": False, "activation": "gelu", "norm": "layer_norm"}
)  # fmt: skip
WORDS = ["river", "stone", "music", "anger", "cloud", "metal", "bread", "dance"]


@pytest.fixture(scope="module")
def task_file(tmp_path_factory):
    """A small two-class CSV: the label says whether the sentence names something you can eat."""
    root = tmp_path_factory.mktemp("task")
    rows = ["text,label"]
    food = ["bread", "apple", "cheese", "soup", "rice", "fish"]
    other = ["stone", "cloud", "metal", "river", "chair", "song"]
    for i in range(60):
        noun, label = (food[i % 6], "food") if i % 2 else (other[i % 6], "thing")
        rows.append(f"the {WORDS[i % 8]} and the {noun} were near,{label}")
    path = root / "food.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture(scope="module")
def small_config(tmp_path_factory) -> DistillConfig:
    return DistillConfig.quick(steps=4, seq_len=16, batch_size=4, heldout_examples=8, num_checkpoints=2, threads=1,
                               cache_dir=str(tmp_path_factory.mktemp("cache")))  # fmt: skip


def _ft_config(**changes) -> FinetuneConfig:
    return FinetuneConfig(**({"lrs": (1e-3, 3e-3), "epochs": 2, "batch_size": 8, "seq_len": 16, "threads": 1} | changes))


def test_finetune_is_deterministic_and_leaves_the_encoder_untouched(task_file):
    torch.manual_seed(0)
    encoder = build_model(TINY)
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    task = load_task(str(task_file))
    first = finetune(encoder, task, _ft_config(), load_teacher(None).tokenizer)
    second = finetune(encoder, task, _ft_config(), load_teacher(None).tokenizer)
    assert [r.__dict__ for r in first.sweep] == [r.__dict__ for r in second.sweep]
    assert first.accuracy == max(r.accuracy for r in first.sweep)
    # LP-FT: the logistic-regression head alone is scored first (lr 0), then each learning rate
    assert [r.lr for r in first.sweep] == [0.0, 1e-3, 3e-3] and first.best_lr in (0.0, 1e-3, 3e-3)
    assert all(torch.equal(before[k], v) for k, v in encoder.state_dict().items())
    record = first.to_dict()
    assert json.loads(json.dumps(record))["task"]["num_labels"] == 2


def test_classification_scores_by_hand():
    predicted = torch.tensor([0, 0, 1, 1, 2])
    labels = torch.tensor([0, 1, 1, 1, 0])
    accuracy, macro_f1 = classification_scores(predicted, labels, 3)
    assert accuracy == pytest.approx(3 / 5)
    # class 0: tp 1 fp 1 fn 1 -> 0.5; class 1: tp 2 fp 0 fn 1 -> 0.8; class 2: tp 0 fp 1 -> 0
    assert macro_f1 == pytest.approx((0.5 + 0.8 + 0.0) / 3)


def test_random_head_skips_the_probe_and_the_probe_head_reads_separable_text(task_file):
    torch.manual_seed(0)
    encoder = build_model(TINY)
    task = load_task(str(task_file))
    tokenizer = load_teacher(None).tokenizer
    random_head = finetune(encoder, task, _ft_config(head_init="random", lrs=(1e-3,)), tokenizer)
    assert [r.lr for r in random_head.sweep] == [1e-3]
    # even a random encoder's pooled token vectors separate food from things: the probe head must find it
    probed = finetune(encoder, task, _ft_config(lrs=(1e-3,)), tokenizer)
    assert probed.sweep[0].lr == 0.0 and probed.sweep[0].accuracy > task.majority_accuracy()


@pytest.mark.parametrize("changes, field", [({"lrs": ()}, "lrs"), ({"head_init": "zeros"}, "head_init"), ({"lrs": (-1.0,)}, "lrs"), ({"epochs": 0}, "epochs"),
                                             ({"precision": "fp16"}, "precision"), ({"seq_len": 4}, "seq_len")])  # fmt: skip
def test_bad_finetune_settings_name_the_field(changes, field):
    with pytest.raises(FinetuneError, match=field):
        FinetuneConfig(**changes)


def test_vocabulary_mismatch_is_refused_before_training(task_file):
    encoder = build_model(TINY.replace(vocab_size=100))
    with pytest.raises(FinetuneError, match="vocab_size 100"):
        finetune(encoder, load_task(str(task_file)), _ft_config(), load_teacher(None).tokenizer)


# ---- precision and snapshots ------------------------------------------------------------------


def test_auto_precision_follows_the_cpu_and_is_recorded(small_config):
    assert resolve_precision("auto") == ("bf16" if cpu_has_fast_bf16() else "fp32")
    assert resolve_precision("fp32") == "fp32"
    result = distill(TINY, small_config.replace(precision="bf16"))
    assert result.status == "ok" and result.precision == "bf16" and result.hardware
    assert result.to_dict()["precision"] == "bf16"
    again = distill(TINY, small_config.replace(precision="bf16"))
    assert [c.score for c in again.checkpoints] == [c.score for c in result.checkpoints]


def test_bad_precision_is_a_distill_error():
    with pytest.raises(DistillError, match="precision"):
        DistillConfig(precision="fp16")


def test_snapshots_keep_the_weights_at_the_asked_checkpoints(small_config):
    result = distill(TINY, small_config.replace(precision="fp32"), snapshot_steps=(2, 4))
    assert sorted(result.snapshots) == [2, 4]
    final = result.student.state_dict()
    assert all(torch.equal(final[k], v) for k, v in result.snapshots[4].items())
    assert any(not torch.equal(final[k], v) for k, v in result.snapshots[2].items())


# ---- the probe ----------------------------------------------------------------------------------


def test_ridge_probe_separates_separable_classes_and_not_noise():
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(200) % 4
    centres = torch.randn(4, 16, generator=generator, dtype=torch.float64) * 5
    features = centres[labels] + torch.randn(200, 16, generator=generator, dtype=torch.float64)
    assert ridge_probe_accuracy(features[:150], labels[:150], features[150:], labels[150:], 4) > 0.95
    noise = torch.randn(200, 16, generator=generator, dtype=torch.float64)
    assert ridge_probe_accuracy(noise[:150], labels[:150], noise[150:], labels[150:], 4) < 0.5


def test_probe_score_is_an_accuracy_and_deterministic():
    torch.manual_seed(0)
    encoder = build_model(TINY)
    first, second = probe_score(encoder), probe_score(encoder)
    assert first == second and 0.0 <= first <= 1.0


def test_probe_baseline_is_the_majority_class_share_of_the_scored_examples():
    from nas.distill.quality import _probe_data

    data, num_labels, fit, rest = _probe_data()
    majority = int(torch.bincount(data.labels[fit], minlength=num_labels).argmax())
    assert probe_baseline() == pytest.approx(float((data.labels[rest] == majority).double().mean()))


@pytest.mark.parametrize("examples", [4000, 8000])
def test_lp_glosses_are_training_glosses_the_ground_truths_head_never_reads(examples):
    from nas.distill.quality import LP_SKIP, PROBE_TASK, _lp_data, lp_positions
    from nas.finetune.tasks import cap_order

    full = load_task(PROBE_TASK)
    ground_truth = load_task(PROBE_TASK, max_train=LP_SKIP)  # the glosses bench/quality.py ground fits its head on
    order = cap_order(len(full.train_labels), "train", 0)
    assert ground_truth.train_texts == tuple(full.train_texts[i] for i in sorted(order[:LP_SKIP]))
    ours = lp_positions(len(full.train_labels), examples)
    assert len(set(ours)) == 2 * examples and not set(ours) & set(order[:LP_SKIP])
    data, (supersense, pos), fit, rest = _lp_data(None, examples)
    assert sorted(fit.tolist() + rest.tolist()) == list(range(2 * examples)) and len(fit) == len(rest) == examples
    assert supersense[1] == full.num_labels and pos[1] == 4 and int(pos[0].max()) == 3
    assert sorted(supersense[0].tolist()) == sorted(full.train_labels[i] for i in ours)
    assert ours[:8000] == lp_positions(len(full.train_labels), 4000)  # a larger read-out extends the default's


def test_lp_positions_name_a_size_the_task_cannot_hold():
    from nas.distill.quality import lp_positions

    with pytest.raises(ValueError, match="needs 18000 training glosses; the task has 10000"):
        lp_positions(10000, 5000)


def test_lp_score_is_deterministic_and_its_baseline_is_each_heads_majority():
    from nas.distill.quality import _lp_data

    torch.manual_seed(0)
    encoder = build_model(TINY)
    first, second = lp_score(encoder, precision="fp32"), lp_score(encoder, precision="fp32")
    assert first == second and 0.0 <= first <= 1.0
    _, labels, fit, rest = _lp_data()
    majority = [float((y[rest] == torch.bincount(y[fit], minlength=n).argmax()).float().mean()) for y, n in labels]
    assert lp_baseline() == pytest.approx(sum(majority) / 2, abs=1e-6)


def test_a_crossfitted_lp_score_is_the_mean_of_reading_each_half_by_the_other_halfs_heads():
    from nas.distill.quality import _lp_accuracy, _lp_data, lp_readings
    from nas.finetune.run import linear_head_outcomes, pooled_features

    torch.manual_seed(0)
    encoder = build_model(TINY)
    data, labels, fit, rest = _lp_data()
    features = pooled_features(encoder, data, 64, "fp32", torch.device("cpu"))
    both_ways = [float(linear_head_outcomes(features[a], y[a], features[b], y[b], n).float().mean())
                 for a, b in ((fit, rest), (rest, fit)) for y, n in labels]
    one_way, crossfit = lp_readings(encoder, precision="fp32")
    assert one_way == lp_score(encoder, precision="fp32") == pytest.approx(sum(both_ways[:2]) / 2)
    assert crossfit == lp_score(encoder, precision="fp32", crossfit=True) == pytest.approx(sum(both_ways) / 4)
    assert crossfit != one_way and _lp_accuracy(features, crossfit=True) == crossfit


def test_the_default_run_reads_the_lp_probe_and_a_search_draws_its_floor():
    from nas.search.trial import _constant_embedding_score

    default = DistillConfig.search()
    assert default.score == "lp" and default.params_weight == 0.0 and DistillConfig.quick().score == "cosine"
    # session 12's default (docs/quality.md, candidate F): 320 steps, the whole schedule, 8,000 + 8,000 glosses
    assert (default.steps, default.stop_fraction, default.lp_examples) == (320, 1.0, 8000)
    assert default.lp_crossfit  # session 16: every gloss read once, by the heads of the other half
    assert _constant_embedding_score(default, None) == lp_baseline(crossfit=True)  # the report's dotted line
    assert _constant_embedding_score(default.replace(params_weight=0.05), None) is None  # a floor per genome


# ---- CLI ----------------------------------------------------------------------------------------


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_finetunes_a_saved_student(capsys, tmp_path, task_file, small_config):
    genome = TINY.save(tmp_path / "genome.json")
    code, _, _ = run(capsys, "distill", "--arch", str(genome), "--preset", "quick", "--steps", "2", "--seq-len", "16",
                     "--batch-size", "4", "--checkpoints", "1", "--threads", "1", "--cache-dir", small_config.cache_dir,
                     "--save", str(tmp_path / "student"), "--json")  # fmt: skip
    assert code == 0
    code, out, _ = run(capsys, "finetune", "--student", str(tmp_path / "student"), "--task", str(task_file),
                       "--lr", "1e-3", "--epochs", "1", "--batch-size", "8", "--seq-len", "16", "--threads", "1", "--json")  # fmt: skip
    assert code == 0
    record = json.loads(out)
    assert record["arch_id"] == TINY.id and 0.0 <= record["accuracy"] <= 1.0
    assert record["task"]["num_labels"] == 2 and [r["lr"] for r in record["sweep"]] == [0.0, 1e-3]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--label-column", "kind"], "no label column 'kind'"),
        (["--text-column", "sentence"], "sentence"),
    ],
)
def test_cli_bad_task_input_is_one_line_before_training(capsys, tmp_path, task_file, flags, message):
    # --arch bert-base would take minutes to distil: the error must come first
    code, out, err = run(capsys, "finetune", "--arch", "bert-base", "--task", str(task_file), *flags)
    assert code == 2 and out == ""
    assert message in err and len(err.strip().splitlines()) == 1


def test_cli_missing_task_file_and_folder_student(capsys, tmp_path, task_file):
    code, _, err = run(capsys, "finetune", "--arch", "bert-base", "--task", str(tmp_path / "none.csv"))
    assert code == 2 and "none.csv" in err
    code, _, err = run(capsys, "finetune", "--student", str(task_file), "--task", str(task_file))
    assert code == 2 and "not a folder" in err


def test_probe_scored_run_reports_the_probe_as_its_score(small_config):
    cosine = distill(TINY, small_config.replace(precision="fp32", params_weight=0.0))  # the read-outs alone
    probed = distill(TINY, small_config.replace(precision="fp32", score="probe", params_weight=0.0))
    assert [c.cosine for c in probed.checkpoints] == [c.cosine for c in cosine.checkpoints]
    assert all(c.score == c.probe and 0.0 <= c.probe <= 1.0 for c in probed.checkpoints)
    assert all(c.probe is None and c.score == c.cosine for c in cosine.checkpoints)
    assert probed.score == probed.checkpoints[-1].probe
    read = distill(TINY, small_config.replace(precision="fp32", score="lp", params_weight=0.0))
    assert read.checkpoints[-1].cosine == cosine.checkpoints[-1].cosine and read.score == read.checkpoints[-1].probe
    assert 0.0 <= read.score <= 1.0
    with pytest.raises(DistillError, match="score"):
        DistillConfig(score="bleu")


def test_cached_score_computes_once_per_genome_and_settings(small_config, monkeypatch):
    from nas.distill import run

    plain = small_config.replace(precision="fp32", params_weight=0.0, stop_fraction=1.0, lp_examples=4000, lp_crossfit=False)
    first = run.cached_score(TINY, plain)
    assert first["status"] == "ok" and first["arch_id"] == TINY.id and first["score"] == first["cosine"]

    def no_training(*args, **kwargs):
        raise AssertionError("distilled again")

    monkeypatch.setattr("nas.distill.run.distill", no_training)
    assert run.cached_score(TINY, plain.replace(threads=2)) == first  # threads do not count
    with pytest.raises(AssertionError, match="distilled again"):
        run.cached_score(TINY, plain.replace(seed=1))  # the seed does
    # a setting added later counts only away from the value that reproduces the earlier runs, so
    # scores cached before it existed keep their keys
    assert not {"repeats", "params_weight", "stop_fraction", "lp_examples", "lp_crossfit"} & set(first["settings"])
    for later in ({"repeats": 2}, {"params_weight": 0.05}, {"stop_fraction": 0.5}, {"lp_examples": 8000}, {"lp_crossfit": True}):
        with pytest.raises(AssertionError, match="distilled again"):
            run.cached_score(TINY, plain.replace(**later))
    # the retries decide only a run that diverges: an ok record serves any number of them ...
    assert run.cached_score(TINY, plain.replace(divergence_retries=3)) == first
    # ... and a diverged record serves no more than it had
    path = next((Path(plain.resolved_cache_dir) / "quality").glob(f"{TINY.id}-*.json"))
    path.write_text(json.dumps(first | {"status": "diverged", "score": None, "divergence_retries": 0}))
    assert run.cached_score(TINY, plain.replace(divergence_retries=0))["status"] == "diverged"
    with pytest.raises(AssertionError, match="distilled again"):
        run.cached_score(TINY, plain.replace(divergence_retries=1))
