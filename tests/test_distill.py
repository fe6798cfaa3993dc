"""nas.distill: settings, losses, teacher, corpus, runs (determinism, callback, divergence), saving."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nas.distill import (
    Checkpoint,
    DistillConfig,
    DistillError,
    DistillResult,
    distill,
    layer_mapping,
    load_student,
    load_teacher,
    save_student,
)
from nas.distill.data import (
    EMBEDDED_CORPUS,
    load_texts,
    mean_pool,
    prepare_data,
    split_windows,
    tokenize_windows,
)
from nas.distill.losses import LinearReadout, Projections, attention_loss, feature_map_loss
from nas.distill.teacher import DEFAULT_TEACHER_SHA256, default_teacher_dir, verified_bytes
from nas.space import load_space
from nas import count

# A tiny student of the tiny space (hidden 64, 2 layers, 2 heads) and a few-step run of short windows.
TINY = load_space("tiny").genome(
    {"num_layers": 2, "intra_bottleneck_size": None, "attention_input": "hidden", "num_attention_heads": 2,
     "qkv_groups": 1, "intermediate_size": 64, "num_ffn": 1, "intermediate_groups": 1, "output_groups": 1,
     "trigram_input": False, "activation": "gelu", "norm": "layer_norm"}
)  # fmt: skip


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> DistillConfig:
    cache = tmp_path_factory.mktemp("nas-cache")
    return DistillConfig.quick(
        steps=6, seq_len=16, batch_size=4, heldout_examples=8, num_checkpoints=2, threads=1, cache_dir=str(cache)
    )


def _numbers(result: DistillResult) -> list[dict]:
    # everything a checkpoint reports except wall-clock times
    return [{k: v for k, v in c.to_dict().items() if not k.endswith("_s")} for c in result.checkpoints]


# ---- settings -----------------------------------------------------------------------------


def test_config_round_trips_through_json():
    config = DistillConfig.quick(seed=3, teacher="some/dir", lr=2e-3)
    again = DistillConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config
    assert config.checkpoint_steps == [20, 40]
    assert DistillConfig(steps=3, num_checkpoints=4).checkpoint_steps == [1, 2, 3]


@pytest.mark.parametrize(
    "changes, fragment",
    [
        ({"steps": 0}, "steps=0"),
        ({"lr": -1.0}, "lr=-1.0"),
        ({"seq_len": 4}, "seq_len=4"),
        ({"batch_size": 2.5}, "batch_size=2.5"),
        ({"feature_weight": 0.0, "attention_weight": 0.0, "output_weight": 0.0}, "nothing to learn"),
        ({"init_embeddings": "zeros"}, "init_embeddings"),
        ({"stop_fraction": 1.5}, "stop_fraction=1.5: must be in \\(0, 1\\]"),
        ({"stop_fraction": 0}, "stop_fraction=0: must be in"),
        ({"lp_examples": 100}, "lp_examples=100: must be 500-40000 glosses"),
        ({"divergence_retries": -1}, "divergence_retries=-1: must be 0-3"),
        ({"divergence_retries": 4}, "divergence_retries=4: must be 0-3"),
        ({"lp_crossfit": "yes"}, "lp_crossfit='yes': must be true or false"),
    ],
)
def test_bad_settings_are_errors(changes, fragment):
    with pytest.raises(DistillError, match=fragment):
        DistillConfig(**changes)


def test_unknown_setting_is_an_error():
    with pytest.raises(DistillError, match="unknown field 'step'"):
        DistillConfig.from_dict({"step": 3})


# ---- losses -------------------------------------------------------------------------------


def test_layer_mapping_pairs_uniformly_and_ends_on_the_last_layers():
    assert layer_mapping(6, 6) == [(k, k) for k in range(1, 7)]
    assert layer_mapping(4, 6) == [(1, 1), (2, 3), (3, 4), (4, 6)]
    assert layer_mapping(24, 6) == [(4, 1), (8, 2), (12, 3), (16, 4), (20, 5), (24, 6)]
    assert layer_mapping(1, 6) == [(1, 6)]


def test_attention_loss_is_kl_over_real_tokens():
    torch.manual_seed(0)
    mask = torch.tensor([[1, 1, 1, 0]])
    scores = torch.randn(2, 1, 2, 4, 4)  # (student/teacher, B, nh, T, T)
    scores[..., 3] = -1e9  # the padded key gets no attention, as in the model
    student, teacher = scores.softmax(-1)
    loss = attention_loss((student,), (teacher,), mask, [(1, 1)])
    # per head, per real query row: sum_j p_t (log p_t - log p_s); the padded query row is ignored
    expected = (teacher * (teacher.log() - student.log())).nan_to_num().sum(-1)[:, :, :3].mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert attention_loss((teacher,), (teacher,), mask, [(1, 1)]).item() == pytest.approx(0.0, abs=1e-6)
    # different head counts: both sides averaged over heads (teacher passed already averaged)
    averaged = attention_loss((student,), (teacher.mean(1),), mask, [(1, 1)])
    s, t = student.mean(1), teacher.mean(1)
    expected = (t * (t.log() - s.log())).nan_to_num().sum(-1)[:, :3].mean()
    assert averaged.item() == pytest.approx(expected.item(), rel=1e-5)


def test_feature_map_loss_is_mse_over_real_tokens_and_mapped_layers():
    torch.manual_seed(0)
    mask = torch.tensor([[1, 1, 0]])
    student = tuple(torch.randn(1, 3, 5) for _ in range(3))  # embeddings + 2 layers, width 5
    teacher = tuple(torch.randn(1, 3, 5) for _ in range(5))  # embeddings + 4 layers
    loss = feature_map_loss(student, teacher, mask, layer_mapping(2, 4), Projections(5, 5))
    pairs = [(0, 0), (1, 2), (2, 4)]
    expected = sum(((student[s] - teacher[t])[:, :2] ** 2).mean() for s, t in pairs) / 3
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_linear_readout_recovers_an_affine_map():
    torch.manual_seed(0)
    x = torch.randn(4, 16, 6)
    weight, bias = torch.randn(6, 3), torch.randn(3)
    readout = LinearReadout(6, 3, ridge=1e-9)
    readout.add(x, x @ weight + bias, torch.ones(4, 16))
    fitted = readout.solve()
    pooled = torch.randn(5, 6)
    assert torch.allclose(LinearReadout.apply(fitted, pooled), pooled @ weight + bias, atol=1e-4)


# ---- teacher ------------------------------------------------------------------------------


def test_default_teacher_is_the_verified_pretrained_minilm(config):
    teacher = load_teacher(None)
    assert (teacher.num_layers, teacher.hidden_size, teacher.num_heads, teacher.vocab_size) == (6, 384, 12, 30522)
    assert load_teacher(None) is teacher  # loaded once per process
    encoded = teacher.tokenizer(["hello world"], return_tensors="pt")
    hidden, attentions = teacher.forward(encoded["input_ids"], encoded["attention_mask"])
    embedding = torch.nn.functional.normalize(mean_pool(hidden[-1], encoded["attention_mask"]), dim=-1)[0]
    # the published sentence-transformers embedding of "hello world" (STACK-NOTES)
    assert embedding[:5].tolist() == pytest.approx([-0.034477, 0.031023, 0.006735, 0.026109, -0.039362], abs=1e-4)
    assert len(hidden) == 7 and attentions[0].shape == (1, 12, 4, 4)
    assert torch.allclose(attentions[0].sum(-1), torch.ones(1, 12, 4))


def test_weights_with_another_hash_are_refused(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"not the weights")
    with pytest.raises(DistillError, match="sha256"):
        verified_bytes(path, DEFAULT_TEACHER_SHA256)
    assert (default_teacher_dir() / "model.safetensors").exists()


# ---- corpus -------------------------------------------------------------------------------


def test_windows_are_framed_padded_and_split_deterministically():
    teacher = load_teacher(None)
    tokenizer = teacher.tokenizer
    ids, mask = tokenize_windows(["one two three four five six seven eight nine ten", "a b"], tokenizer, seq_len=8)
    # 10 tokens -> windows of 6 and 4; "a b" has 2 tokens (< 4) and is dropped
    assert ids.shape == (2, 8)
    assert mask.sum(1).tolist() == [8, 6]
    assert ids[:, 0].tolist() == [tokenizer.cls_token_id] * 2
    assert ids[0, 7].item() == tokenizer.sep_token_id and ids[1, 5].item() == tokenizer.sep_token_id
    assert ids[1, 6:].tolist() == [tokenizer.pad_token_id] * 2
    big_ids = torch.arange(100).unsqueeze(1)
    a = split_windows(big_ids, torch.ones_like(big_ids), heldout_examples=10, train_examples=None)
    b = split_windows(big_ids, torch.ones_like(big_ids), heldout_examples=10, train_examples=None)
    assert torch.equal(a[0], b[0]) and torch.equal(a[2], b[2])
    assert len(a[2]) == 10 and len(a[0]) == 90
    assert not set(a[0].flatten().tolist()) & set(a[2].flatten().tolist())


def test_embedded_corpus_and_local_files_load(tmp_path):
    texts, source = load_texts(None)
    assert EMBEDDED_CORPUS in source and len(texts) > 50 and any("if_stmt" in t for t in texts)
    assert all(t == t.strip() and t for t in texts)
    (tmp_path / "c.txt").write_text("First paragraph here.\nStill the first.\n\nSecond one.\n")
    assert load_texts(str(tmp_path / "c.txt"))[0] == ["First paragraph here.\nStill the first.", "Second one."]
    (tmp_path / "c.csv").write_text("id,sentence\n1,hello there\n2,general kenobi\n")
    assert load_texts(str(tmp_path / "c.csv"), text_column="sentence")[0] == ["hello there", "general kenobi"]
    (tmp_path / "c.jsonl").write_text('{"text": "a json line"}\n{"text": ""}\n')
    assert load_texts(str(tmp_path / "c.jsonl"))[0] == ["a json line"]


def test_embedded_corpus_needs_no_datasets_package():
    # a GPU image without `datasets` distils on the embedded corpus; files and hub names still need it
    code = ("import sys; sys.modules['datasets'] = None\n"
            "from nas.distill.data import load_texts\n"
            "texts, source = load_texts(None); print(len(texts))\n"
            "try:\n    load_texts('some/hub-name')\nexcept ImportError:\n    print('hub needs datasets')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert int(out[0]) == len(load_texts(None)[0]) and out[1:] == ["hub", "needs", "datasets"]


def test_tokenized_corpus_is_cached_on_disk(config):
    teacher = load_teacher(None)
    data = prepare_data(config, teacher)
    cached = list((Path(config.resolved_cache_dir) / "distill").glob("windows-*.safetensors"))
    assert cached, "no tokenized cache file written"
    assert prepare_data(config, teacher) is data  # reused within the process
    assert len(data.windows.heldout_ids) == config.heldout_examples


# ---- runs ---------------------------------------------------------------------------------


def test_run_reports_checkpoints_and_is_deterministic(config):
    seen: list[Checkpoint] = []
    first = distill(TINY, config, on_checkpoint=seen.append)
    assert first.status == "ok", first.reason
    assert [c.step for c in first.checkpoints] == [3, 6] and seen == first.checkpoints
    for c in first.checkpoints:
        assert -1.0 <= c.cosine <= 1.0 and math.isfinite(c.heldout_loss)
        assert c.score == pytest.approx(config.scored(c.cosine, first.params), abs=1e-12)
    assert first.checkpoints[0].tokens_seen < first.checkpoints[1].tokens_seen == first.tokens_seen
    assert first.score == first.checkpoints[-1].score and isinstance(first.student, torch.nn.Module)
    json.dumps(first.to_dict())  # JSON-able
    again = distill(TINY, config)
    assert _numbers(again) == _numbers(first)
    other_seed = distill(TINY, config.replace(seed=1))
    assert _numbers(other_seed) != _numbers(first)


def test_a_run_cut_short_of_its_schedule(config):
    """stop_fraction lays warm-up and decay out over a longer run and stops at steps: the same
    checkpoints, different training (the rate never reaches zero); at 1, it is the plain run."""
    half = DistillConfig(steps=320, stop_fraction=0.5)
    assert (half.schedule_length, half.warmup_steps) == (640, 64) and DistillConfig(steps=320, stop_fraction=1.0).warmup_steps == 32
    plain = distill(TINY, config.replace(stop_fraction=1.0))
    same = distill(TINY, config.replace(stop_fraction=0.99))  # a schedule of round(6 / 0.99) = 6 steps: the plain run
    cut = distill(TINY, config.replace(stop_fraction=0.25))
    assert _numbers(same) == _numbers(plain)
    assert [c.step for c in cut.checkpoints] == [c.step for c in plain.checkpoints] and cut.status == "ok"
    assert cut.checkpoints[-1].heldout_loss != plain.checkpoints[-1].heldout_loss


def test_params_weight_adds_a_capacity_term_to_every_checkpoint(config):
    """The score is the read-out plus params_weight * ln(parameters / 1M), with the model's own
    parameter count (the exact count nas.count gives); training and the cosine are untouched."""
    plain = distill(TINY, config.replace(params_weight=0.0))
    weighted = distill(TINY, config.replace(params_weight=0.05))
    assert weighted.params == plain.params == count(TINY).params
    term = 0.05 * math.log(plain.params / 1e6)
    for a, b in zip(plain.checkpoints, weighted.checkpoints, strict=True):
        assert b.cosine == a.cosine == a.score and b.heldout_loss == a.heldout_loss
        assert b.score == pytest.approx(a.cosine + term, abs=1e-12)
    assert weighted.score == pytest.approx(plain.score + term, abs=1e-12)
    assert weighted.config.params_term == "0.05 ln(params / 1M)" and plain.config.params_term == ""
    with pytest.raises(DistillError, match="params_weight=-0.1"):
        config.replace(params_weight=-0.1)


def test_threads_follow_the_config_and_are_restored(config):
    before = torch.get_num_threads()
    seen = []
    distill(TINY, config.replace(threads=2, steps=1, num_checkpoints=1), on_checkpoint=lambda c: seen.append(torch.get_num_threads()))
    assert seen == [2] and torch.get_num_threads() == before


def test_repeats_pool_independent_runs_on_one_clock(config):
    """repeats=2: the score is the mean of the two single runs (seeds 0 and 1) exactly, the
    checkpoints count steps over both, and the student is the seed-0 run's."""
    single = [distill(TINY, config.replace(seed=seed)) for seed in (0, 1)]
    seen = []
    pooled = distill(TINY, config.replace(repeats=2), on_checkpoint=lambda c: seen.append((c.index, c.step, c.steps)))
    assert pooled.status == "ok" and pooled.score == pytest.approx((single[0].score + single[1].score) / 2, abs=1e-12)
    assert seen == [(1, 3, 12), (2, 6, 12), (3, 9, 12), (4, 12, 12)] == [(c.index, c.step, c.steps) for c in pooled.checkpoints]
    assert config.replace(repeats=2).reported_steps == [3, 6, 9, 12]
    assert pooled.checkpoints[1].score == single[0].score  # the first run's end: its own score
    first = single[0].student.state_dict()
    assert all(torch.equal(v, first[k]) for k, v in pooled.student.state_dict().items())
    assert pooled.tokens_seen == single[0].tokens_seen + single[1].tokens_seen
    # the callback stops the pooled run at the first run's end: no second run starts
    stopped = distill(TINY, config.replace(repeats=2), on_checkpoint=lambda c: c.index == 2)
    assert stopped.status == "pruned" and len(stopped.checkpoints) == 2 and stopped.score == single[0].score
    with pytest.raises(DistillError, match="repeats"):
        config.replace(repeats=0)


def test_callback_returning_true_stops_the_run(config):
    result = distill(TINY, config, on_checkpoint=lambda c: True)
    assert result.status == "pruned" and "checkpoint 1" in result.reason
    from nas.statuses import DISTILL_STATUSES, STATUSES

    assert set(DISTILL_STATUSES) <= set(STATUSES)  # a trial reports the run's status as it is
    assert len(result.checkpoints) == 1 and result.student is None
    assert result.score == result.checkpoints[0].score


UNSTABLE = TINY.replace(norm="no_norm", activation="relu")


def test_divergence_ends_the_run_with_a_status(config):
    result = distill(UNSTABLE, config.replace(lr=1e6, steps=8, max_grad_norm=1e9, warmup_fraction=0.0, divergence_retries=0))
    assert result.status == "diverged" and result.config.lr == 1e6
    assert "try a lower lr" in result.reason and result.student is None and result.score is None
    # each retry halves the rate; one that diverges too says so for every rate it tried
    again = distill(UNSTABLE, config.replace(lr=1e6, steps=8, max_grad_norm=1e9, warmup_fraction=0.0, divergence_retries=2))
    assert again.status == "diverged" and again.config.lr == 2.5e5 and again.score is None
    assert all(f"at lr {lr}" in again.reason for lr in ("1e+06", "500000", "250000"))


def test_a_diverged_run_trains_again_at_half_the_rate(config):
    # in fp32 this student blows up at lr 0.0625 by step 3, after its checkpoint at step 2, and
    # trains at 0.03125 (checkpoints at steps 2, 4, 6)
    unstable = config.replace(precision="fp32", max_grad_norm=1e9, warmup_fraction=0.0, num_checkpoints=3)
    assert distill(UNSTABLE, unstable.replace(lr=0.0625, divergence_retries=0)).status == "diverged"
    steps: list[int] = []
    result = distill(UNSTABLE, unstable.replace(lr=0.0625, divergence_retries=1), on_checkpoint=lambda c: steps.append(c.step))
    direct = distill(UNSTABLE, unstable.replace(lr=0.03125, divergence_retries=0))
    assert result.status == "ok" and result.config.lr == 0.03125 and "retried after divergence (at lr 0.0625:" in result.reason
    assert _numbers(result) == _numbers(direct) and result.score == direct.score  # the retry is the run at half the rate
    assert steps == [2, 4, 6]  # the callback's clock never ran back: the retry's step 2 was not reported again
    assert result.tokens_seen > direct.tokens_seen  # the diverged attempt's tokens count


def test_each_loss_can_be_switched_off(config):
    result = distill(TINY, config.replace(attention_weight=0.0, feature_weight=0.0, steps=2, num_checkpoints=1))
    assert result.status == "ok"
    assert result.checkpoints[0].attention_loss == 0.0 and result.checkpoints[0].feature_loss == 0.0


def test_saved_student_loads_and_serves_as_a_teacher(config, tmp_path):
    result = distill(TINY, config)
    folder = save_student(result, tmp_path / "student", tokenizer=load_teacher(None).tokenizer)
    assert {"genome.json", "model.safetensors", "projections.safetensors", "distill.json", "tokenizer.json"} <= {
        p.name for p in folder.iterdir()
    }
    loaded = load_student(folder)
    ids = torch.randint(1000, 2000, (2, 10))
    assert torch.equal(loaded(ids).last_hidden_state, result.student(ids).last_hidden_state)
    with pytest.raises(DistillError, match="already exists"):
        save_student(result, folder)
    # the saved genome as a teacher of an even smaller student (one layer)
    student = TINY.replace(num_layers=1)
    from_genome = distill(student, config.replace(teacher=str(folder), steps=2, num_checkpoints=1))
    assert from_genome.status == "ok" and from_genome.teacher["kind"] == "genome"
    assert from_genome.teacher["num_layers"] == 2


def test_transformers_teacher_from_a_local_folder(config, tmp_path):
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    BertModel(BertConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64)).save_pretrained(tmp_path)
    load_teacher(None).tokenizer.save_pretrained(tmp_path)
    result = distill(TINY, config.replace(teacher=str(tmp_path), steps=2, num_checkpoints=1))  # 2 heads = 2 heads: per head
    assert result.status == "ok" and result.teacher["hidden_size"] == 32 and result.teacher["num_heads"] == 2
    four_heads = TINY.replace(num_attention_heads=4)  # 4 heads vs 2: head-averaged
    assert distill(four_heads, config.replace(teacher=str(tmp_path), steps=2, num_checkpoints=1)).status == "ok"


# ---- bad input: one clear error before any training ----------------------------------------


def _refused(arch, config, fragment):
    calls = []
    with pytest.raises(DistillError, match=fragment):
        distill(arch, config, on_checkpoint=calls.append)
    assert calls == []


def test_missing_teacher_path(config, tmp_path):
    _refused(TINY, config.replace(teacher=str(tmp_path / "nowhere")), "no such directory")


def test_hub_teacher_offline_is_a_clear_error(config):
    _refused(TINY, config.replace(teacher="bert-base-uncased"), "not loadable as a hub id")


def test_teacher_that_is_not_bert_family(config, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 1}))
    _refused(TINY, config.replace(teacher=str(tmp_path)), "not a BERT-family encoder")


def test_corpus_without_usable_text(config, tmp_path):
    (tmp_path / "blank.txt").write_text("   \n\n  \n")
    _refused(TINY, config.replace(data=str(tmp_path / "blank.txt")), "no usable text")
    (tmp_path / "rows.csv").write_text("id,body\n1,some words\n")
    _refused(TINY, config.replace(data=str(tmp_path / "rows.csv")), "no column 'text'")


def test_genome_vocabulary_must_match_the_tokenizer(config):
    _refused(TINY.replace(vocab_size=1000), config, "vocab_size 1000 does not match")


def test_no_ray_or_optuna_import():
    code = (
        "import sys, nas.distill, nas.distill.cli\n"
        "from nas.distill import distill\n"
        "bad = [m for m in ('ray', 'optuna') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
