"""predictors: features, measurement harness, fitting, predictor files, shipped phone profiles."""

import json
import math

import numpy as np
import pytest

import nas
import predictors
from nas.space import load_space
from predictors.data import MeasurementSet
from predictors.evaluate import evaluate
from predictors.features import FEATURES, INDEX, features_of_ops, genome_features
from predictors.fit import FlopsLinear, HatMLP, fit_structural, genome_rows, predict_rows, scores
from predictors.harness import Protocol, SpreadTooWide, measure_genomes, ort_runner, time_runners
from predictors.phones import Point, calibrate
from predictors.predictor import Predictor

TINY = list(load_space("tiny").iter_samples(6, seed=11))
TINY = list({a.id: a for a in TINY}.values())


# ---- features -------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", TINY[:3] + [nas.reference(n).arch for n in ("squeezebert", "mobilebert")], ids=lambda a: a.id)
def test_one_layer_shortcut_equals_the_whole_op_list(arch):
    whole = features_of_ops(nas.ops(arch, 32))
    whole[INDEX["constant"]] = 1.0
    np.testing.assert_array_equal(genome_features(arch, 32), whole)


def test_feature_macs_add_up_to_the_counted_macs():
    arch = nas.reference("squeezebert").arch
    x = genome_features(arch, 128)
    macs = sum(x[INDEX[f]] for f in ("linear.macs", "grouped_linear.macs", "attention.scores_macs", "attention.context_macs"))
    layer_norm_macs = 5 * x[INDEX["layer_norm.elems"]]  # fvcore's LayerNorm convention
    assert macs + layer_norm_macs == nas.count(arch, 128).macs


# ---- harness ----------------------------------------------------------------------------------


class SteppingClock:
    """A controlled timer: every interval it measures lasts the next of `intervals_ms`, whatever
    the real run took (start and stop are consecutive calls)."""

    def __init__(self, intervals_ms):
        self.intervals_ns = [int(ms * 1e6) for ms in intervals_ms]
        self.calls = 0
        self.now = 0

    def __call__(self) -> int:
        if self.calls % 2 == 1:  # a stop: advance by the interval
            self.now += self.intervals_ns[(self.calls // 2) % len(self.intervals_ns)]
        self.calls += 1
        return self.now


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    from nas.onnx import export_onnx

    folder = tmp_path_factory.mktemp("onnx")
    return [export_onnx(a, folder / f"{a.id}.onnx", seq_len=16) for a in TINY[:2]]


def test_harness_median_of_a_steady_clock_is_exact(tiny_onnx):
    runners = {str(i): ort_runner(p) for i, p in enumerate(tiny_onnx)}
    timings = time_runners(runners, Protocol(warmup=1, rounds=4, runs_per_round=2), timer=SteppingClock([5.0]))
    for t in timings.values():
        assert t.median_ms == 5.0 and t.spread == 0.0
        assert len(t.round_ms) == 4 and len(t.run_ms) == 8


def test_harness_takes_the_fastest_run_of_a_round_and_the_median_of_rounds(tiny_onnx):
    # runs alternate 4 ms and 9 ms: every round's fastest run is 4 ms
    timings = time_runners({"m": ort_runner(tiny_onnx[0])}, Protocol(warmup=0, rounds=5, runs_per_round=2),
                           timer=SteppingClock([4.0, 9.0]))
    assert timings["m"].round_ms == [4.0] * 5 and timings["m"].median_ms == 4.0


def test_harness_refuses_when_rounds_disagree(tiny_onnx):
    # one run per round, alternating 2 ms and 6 ms: an interquartile range of 100 % of the median
    protocol = Protocol(warmup=0, rounds=4, runs_per_round=1, max_spread=0.1, max_rounds=6)
    with pytest.raises(SpreadTooWide, match=r"too noisy to trust: m varied by \d+% .* above the limit of 10%"):
        time_runners({"m": ort_runner(tiny_onnx[0])}, protocol, timer=SteppingClock([2.0, 6.0]))


def test_measure_genomes_marks_noisy_genomes_untrusted_and_keeps_steady_ones():
    arch = TINY[0]
    noisy = measure_genomes([arch], seq_len=16, protocol=Protocol(warmup=0, rounds=4, runs_per_round=1, max_rounds=4),
                            timer=SteppingClock([1.0, 3.0]), progress=False)
    assert not noisy[0].trusted and noisy[0].spread > 0.1
    steady = measure_genomes([arch], seq_len=16, protocol=Protocol(warmup=0, rounds=3, runs_per_round=1),
                             timer=SteppingClock([2.5]), progress=False)
    assert steady[0].trusted and steady[0].latency_ms == 2.5


class PhasedClock(SteppingClock):
    """Every interval of phase k (a whole pass: rounds x runs per genome) lasts phases[k] ms."""

    def __init__(self, phases_ms, intervals_per_phase):
        super().__init__([ms for ms in phases_ms for _ in range(intervals_per_phase)])


def test_a_slow_pass_is_not_taken_for_the_latency():
    protocol = Protocol(warmup=0, rounds=3, runs_per_round=1, passes=2, max_passes=3)
    # pass 1 ran while the machine was slow (8 ms), passes 2 and 3 agree on 5 ms
    [m] = measure_genomes([TINY[0]], seq_len=16, protocol=protocol, timer=PhasedClock([8.0, 5.0, 5.1], 3), progress=False)
    assert m.pass_ms == (8.0, 5.0, 5.1) and m.latency_ms == 5.0 and m.trusted


def test_passes_that_never_agree_are_refused_with_the_reason():
    from predictors.harness import refusal_reason

    protocol = Protocol(warmup=0, rounds=3, runs_per_round=1, passes=2, max_passes=2)
    [m] = measure_genomes([TINY[0]], seq_len=16, protocol=protocol, timer=PhasedClock([5.0, 8.0], 3), progress=False)
    assert not m.trusted and m.latency_ms == 5.0
    assert "no two of 2 passes agreed within 10% (pass medians 5.00, 8.00 ms)" in refusal_reason(m, protocol)


@pytest.mark.parametrize("runtime", ["onnxruntime", "torch"])
def test_measure_genomes_real_clock_gives_sane_medians(runtime):
    results = measure_genomes(TINY[:2], runtime=runtime, seq_len=16, protocol=Protocol(warmup=1, rounds=3, runs_per_round=2, max_spread=10.0),
                              progress=False)
    for m in results:
        assert 0.005 < m.latency_ms < 1000
        assert min(m.round_ms) <= m.latency_ms <= max(m.round_ms)
        assert len(m.round_ms) >= 3


# ---- fitting and predictor files ----------------------------------------------------------------


def _synthetic_truth() -> dict[str, float]:
    """A device with known prices: latencies generated from them are exactly linear in features."""
    rng = np.random.default_rng(0)
    truth = {name: 0.0 for name in FEATURES}
    for name in ("linear.macs", "grouped_linear.macs", "attention.scores_macs", "attention.context_macs"):
        truth[name] = float(rng.uniform(1e-8, 3e-8))
    truth["layer_norm.elems"] = 2e-6
    truth["op.count"] = 5e-3
    truth["constant"] = 0.05
    return truth


def _synthetic_set(archs, truth, seq_len=128) -> MeasurementSet:
    rows = genome_rows(archs, np.ones(len(archs)), seq_len)
    y = predict_rows(truth, rows.x)
    records = [{"genome_id": a.id, "latency_ms": float(v), "spread": 0.0, "trusted": True} for a, v in zip(archs, y)]
    return MeasurementSet("host", "onnxruntime", 1, seq_len, records, {a.id: a for a in archs}, [], {"source": "generated in a test"}, "synthetic.json")


MOBILE = list({a.id: a for a in load_space("mobile").iter_samples(60, seed=3)}.values())


def test_structural_fit_recovers_an_exactly_linear_device():
    truth = _synthetic_truth()
    train, test = MOBILE[:40], MOBILE[40:]
    data = _synthetic_set(train, truth)
    rows = genome_rows(train, [r["latency_ms"] for r in data.records], 128)
    coefficients = fit_structural(rows, ridge=0.0)
    x_test = genome_rows(test, np.ones(len(test)), 128).x
    np.testing.assert_allclose(predict_rows(coefficients, x_test), predict_rows(truth, x_test), rtol=1e-4)
    assert all(v >= 0 for v in coefficients.values())


def _predictor(seq_len=128, device="host") -> Predictor:
    truth = _synthetic_truth()
    data = _synthetic_set(MOBILE[:40], truth, seq_len)
    rows = genome_rows(MOBILE[:40], [r["latency_ms"] for r in data.records], seq_len)
    return Predictor(device, "onnxruntime", 1, seq_len, fit_structural(rows), {"cpu": "test"}, {"fitted_on": "synthetic"})


def test_predictor_file_round_trip_gives_identical_predictions(tmp_path):
    predictor = _predictor()
    path = predictor.save(tmp_path / "p.json")
    loaded = predictors.load(path)
    assert json.loads(path.read_text())["format"] == "nas-latency-predictor"
    for arch in MOBILE[40:] + [nas.reference("mobilebert").arch]:
        assert loaded.predict(arch) == predictor.predict(arch)  # bit for bit
    assert (loaded.device, loaded.runtime, loaded.threads, loaded.seq_len) == ("host", "onnxruntime", 1, 128)
    assert b"\x80" not in path.read_bytes()  # plain JSON text, no pickle opcodes


def test_predictor_for_another_seq_len_or_device_is_refused(tmp_path):
    path = _predictor(seq_len=64).save(tmp_path / "p64.json")
    with pytest.raises(nas.NasError, match=r"p64.json: latency predictor fitted for seq_len 64, but 128 was asked for"):
        predictors.load(path, seq_len=128)
    with pytest.raises(nas.NasError, match="fitted for device 'host', but 'pixel4'"):
        predictors.load(path, device="pixel4")
    with pytest.raises(nas.NasError, match="is for seq_len 64, asked for 128"):
        predictors.load(path).predict(MOBILE[0], seq_len=128)


def test_evaluating_on_measurements_of_another_setting_is_refused():
    predictor = _predictor(seq_len=64)
    heldout = _synthetic_set(MOBILE[40:], _synthetic_truth(), seq_len=128)
    with pytest.raises(nas.NasError, match="measured with seq_len 128 but predictor"):
        evaluate(predictor, heldout, None)


def test_machine_drift_is_measured_on_training_genomes_and_corrected():
    truth = _synthetic_truth()
    predictor = _predictor()
    train = _synthetic_set(MOBILE[:40], truth)
    slower = _synthetic_set(MOBILE[40:], truth)
    for record in slower.records:
        record["latency_ms"] *= 1.08  # the machine ran 8 % slower when the held-out genomes were measured
    anchors = _synthetic_set(MOBILE[:10], truth)
    for record in anchors.records:
        record["latency_ms"] *= 1.08
    report = evaluate(predictor, slower, train, mlp_steps=50, anchors=anchors)
    assert report["drift"]["factor"] == pytest.approx(1.08) and report["drift"]["anchors"] == 10
    assert report["signed_bias"]["structural (ours)"] == pytest.approx(1 / 1.08 - 1, abs=1e-3)
    assert report["scores_drift_corrected"]["structural (ours)"]["mape"] < 1e-3


def test_a_profile_carries_anchors_so_a_later_session_measures_and_corrects_its_drift(tmp_path):
    from predictors.train import fit_predictor
    from predictors.evaluate import anchor_set, drift_corrected

    truth = _synthetic_truth()
    busy = _synthetic_set(MOBILE[:40], truth)
    for record in busy.records:
        record["latency_ms"] *= 1.09  # profiled while a neighbour kept the other core busy
    predictor = fit_predictor(busy, use_kernels=False)
    predictor = predictors.load(predictor.save(tmp_path / "busy.json"))  # the anchors survive the file
    then = anchor_set(predictor)
    assert len(then.records) == 10 and set(then.genomes) <= {a.id for a in MOBILE[:40]}
    quiet_heldout, quiet_anchors = _synthetic_set(MOBILE[40:], truth), _synthetic_set(list(then.genomes.values()), truth)
    report = evaluate(predictor, quiet_heldout, None, anchors=quiet_anchors, anchors_then=then)
    assert report["drift"]["factor"] == pytest.approx(1 / 1.09, rel=1e-3)
    assert report["signed_bias"]["structural (ours)"] == pytest.approx(0.09, abs=5e-3)
    assert report["scores_drift_corrected"]["structural (ours)"]["mape"] < 5e-3
    fixed = drift_corrected(predictor, report["drift"])
    assert fixed.provenance["drift_correction"]["factor"] == report["drift"]["factor"]
    np.testing.assert_allclose([fixed.predict(a) for a in MOBILE[40:45]],
                               [r["latency_ms"] for r in quiet_heldout.records[:5]], rtol=5e-3)


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda text: text[: len(text) // 2], "not a valid latency predictor file: not JSON"),
        (lambda text: text.replace('"nas-latency-predictor"', '"something-else"'), "not a latency predictor file"),
        (lambda text: text.replace('"constant": ', '"constant": -'), "coefficients.constant: .* not a finite non-negative"),
        (lambda text: text.replace('"constant": ', '"no_such_feature": '), "coefficients.no_such_feature: not a feature"),
        (lambda text: text.replace('"seq_len": 128', '"seq_len": "128"'), "field 'seq_len' missing or not a int"),
    ],
)
def test_corrupt_predictor_file_is_a_clear_error_naming_the_file(tmp_path, corrupt, message):
    path = _predictor().save(tmp_path / "broken.json")
    path.write_text(corrupt(path.read_text()))
    with pytest.raises(nas.NasError, match=message) as err:
        predictors.load(path)
    assert str(path) in str(err.value)


def test_unknown_predictor_name_lists_the_shipped_profiles():
    with pytest.raises(nas.NasError, match="pixel3, pixel4"):
        predictors.load("no-such-phone")


def test_features_of_a_genome_are_computed_once():
    # a search asks about the same genome many times (objectives, constraints, reports)
    import predictors.features as features_module

    predictor = _predictor()
    features_module._genome_features.cache_clear()
    first = [predictor.predict(arch) for arch in MOBILE[:5]]
    again = [predictor.predict(arch) for arch in MOBILE[:5]]
    info = features_module._genome_features.cache_info()
    assert first == again and info.misses == 5 and info.hits == 5


# ---- baselines and scores --------------------------------------------------------------------


def test_scores_of_a_perfect_and_a_scaled_prediction():
    y = np.array([1.0, 2.0, 4.0, 8.0])
    perfect = scores(y, y)
    assert perfect["rmse_ms"] == 0 and perfect["within_5"] == 1 and perfect["kendall_tau"] == pytest.approx(1.0)
    off = scores(y, y * 1.08)
    assert off["within_5"] == 0 and off["within_10"] == 1 and off["mape"] == pytest.approx(0.08)


def test_baselines_fit_and_predict_positive_latencies():
    truth = _synthetic_truth()
    data = _synthetic_set(MOBILE[:40], truth)
    y = [r["latency_ms"] for r in data.records]
    for baseline in (FlopsLinear(), HatMLP(steps=200)):
        baseline.fit(MOBILE[:40], y, 128)
        predicted = baseline.predict(MOBILE[40:])
        assert predicted.shape == (len(MOBILE) - 40,) and np.all(np.isfinite(predicted))
    flops = FlopsLinear().fit(MOBILE[:40], y, 128).predict(MOBILE[:40])
    assert scores(y, flops)["kendall_tau"] > 0.5


def test_hat_mlp_predicts_finite_latency_for_an_input_no_training_genome_had():
    """A field that is 0 in every training genome (here: the trigram input) carries nothing the MLP
    learned; a held-out genome that has it still gets a finite prediction."""
    truth = _synthetic_truth()
    train = [a for a in MOBILE if not a.trigram_input]
    unseen = [a for a in MOBILE if a.trigram_input][:5]
    assert len(train) >= 10 and unseen
    y = [r["latency_ms"] for r in _synthetic_set(train, truth).records]
    predicted = HatMLP(steps=200).fit(train, y, 128).predict(unseen)
    assert np.all(np.isfinite(predicted)) and np.all(predicted > 0)


# ---- calibration and shipped profiles -----------------------------------------------------------


def test_calibration_records_points_and_leave_one_out():
    base = _predictor()
    refs = ["bert-base", "mobilebert", "mobilebert-tiny", "mobilebert-no-opt"]
    points = [Point(n, nas.reference(n).arch, nas.reference(n).latency_ms["pixel4"].value) for n in refs]
    two = calibrate(base, points, device="phone", runtime="tflite", threads=4, group_names=("compute", "rest"))
    fitted = two.provenance["fitted_on"]
    assert [p["name"] for p in fitted] == refs
    for p, point in zip(fitted, points):
        assert p["fitted_ms"] == pytest.approx(two.predict(point.arch))
        assert p["leave_one_out_ms"] is not None
    assert two.provenance["free_parameters"] == 2
    many = calibrate(base, points[:2], device="phone", runtime="tflite", threads=4, group_names=("compute", "rest"))
    assert many.provenance["leave_one_out_mape"] is None  # 1 point cannot refit 2 scales


@pytest.mark.parametrize("profile", ["pixel4", "pixel3"])
def test_shipped_profiles_load_and_reproduce_their_recorded_fit(profile):
    assert {"pixel3", "pixel4"} <= set(predictors.profile_names())
    predictor = predictors.load(profile, seq_len=128)
    assert predictor.device == profile and predictor.seq_len == 128
    prov = predictor.provenance
    assert prov["fitted_on"], "a profile says what it was fitted on"
    for point in prov["fitted_on"]:
        arch = nas.reference(point["name"]).arch
        assert point["genome_id"] == arch.id
        assert predictor.predict(arch) == pytest.approx(point["fitted_ms"], rel=1e-9)
        assert point["latency_ms"] == nas.reference(point["name"]).latency_ms[profile].value


def test_pixel4_predicts_mobilebert_for_the_reproduce_table():
    ms = predictors.load("pixel4").predict(nas.reference("mobilebert").arch)
    assert math.isfinite(ms) and ms > 0
    assert ms == predictors.load("pixel4").predict(nas.reference("mobilebert").arch)
