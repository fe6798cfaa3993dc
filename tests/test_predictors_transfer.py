"""predictors.transfer and predictors.quantize: transfer fits from N genomes, int8 models, precision as identity."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import nas
import predictors
from nas.cli import main
from nas.space import load_space
from predictors.data import MeasurementSet
from predictors.features import FEATURES
from predictors.fit import fit_structural, genome_rows, kernel_rows, predict_rows, stack
from predictors.harness import Protocol, genome_onnx, measure_genomes
from predictors.microbench import run_microbenchmarks, select_kernels
from predictors.quantize import check_precision, quantize_int8
from predictors.transfer import METHODS, draw_subsets, prior_fit, transfer_fit

TINY = list({a.id: a for a in load_space("tiny").iter_samples(6, seed=11)}.values())
MOBILE = list({a.id: a for a in load_space("mobile").iter_samples(60, seed=3)}.values())


def _prices(seed: int) -> dict[str, float]:
    """A device with known prices on a few features."""
    rng = np.random.default_rng(seed)
    prices = {name: 0.0 for name in FEATURES}
    for name in ("linear.macs", "attention.scores_macs", "attention.context_macs"):
        prices[name] = float(rng.uniform(1e-8, 3e-8))
    prices["layer_norm.elems"] = float(rng.uniform(1e-6, 3e-6))
    prices["gelu.elems"] = float(rng.uniform(5e-7, 2e-6))
    prices["op.count"] = 5e-3
    prices["constant"] = 0.05
    return prices


def _rows(archs, prices):
    rows = genome_rows(archs, np.ones(len(archs)), 128)
    rows.y = predict_rows(prices, rows.x)
    return rows


# ---- transfer fits ----------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_transfer_fit_is_deterministic_to_the_last_bit(method):
    base, device = _prices(0), _prices(1)
    rows = _rows(MOBILE[:10], device)
    first = transfer_fit(base, rows, method)
    again = transfer_fit(base, _rows(MOBILE[:10], device), method)
    assert first == again  # exact equality, every price
    assert all(v >= 0 for v in first.values()) and set(first) == set(FEATURES)


def test_global_and_prior_recover_a_uniformly_slower_device_from_two_genomes():
    base = _prices(0)
    slower = {k: 1.3 * v for k, v in base.items()}
    rows = _rows(MOBILE[:2], slower)
    test = _rows(MOBILE[30:], slower)
    for method in ("global", "prior"):  # three group scales from two genomes are underdetermined
        coefficients = transfer_fit(base, rows, method)
        np.testing.assert_allclose(predict_rows(coefficients, test.x), test.y, rtol=1e-6)


def test_prior_moves_towards_the_device_with_more_genomes_and_stays_home_with_a_strong_prior():
    base, device = _prices(0), _prices(1)
    test = _rows(MOBILE[30:], device)

    def error(coefficients):
        return float(np.mean(np.abs(predict_rows(coefficients, test.x) / test.y - 1)))

    few, many = (prior_fit(base, _rows(MOBILE[:n], device)) for n in (2, 20))
    assert error(many) < error(few)
    anchored = prior_fit(base, _rows(MOBILE[:20], device), strength=1e6)
    centre = transfer_fit(base, _rows(MOBILE[:20], device), "global")
    np.testing.assert_allclose([anchored[f] for f in FEATURES], [centre[f] for f in FEATURES], rtol=1e-3, atol=1e-15)


def test_scratch_is_the_structural_fit_and_takes_kernel_rows():
    device = _prices(1)
    rows = _rows(MOBILE[:12], device)
    assert transfer_fit(_prices(0), rows, "scratch") == fit_structural(rows)
    kernels = [{"name": k.name, "features": k.features(), "latency_ms": 0.0} for k in select_kernels(load_space("tiny"), 32, 4, 1)]
    krows = kernel_rows(kernels)
    krows.y = predict_rows(device, krows.x) + 0.01
    both = stack(rows, krows)
    assert transfer_fit(_prices(0), both, "prior") == transfer_fit(_prices(0), both, "prior")


def test_transfer_refuses_kernels_alone_and_unknown_methods():
    kernels = [{"name": k.name, "features": k.features(), "latency_ms": 1.0} for k in select_kernels(load_space("tiny"), 32, 4, 1)]
    with pytest.raises(nas.NasError, match="at least one measured genome"):
        transfer_fit(_prices(0), kernel_rows(kernels), "prior")
    with pytest.raises(nas.NasError, match="unknown transfer method 'magic'; use one of global, groups, prior, scratch"):
        transfer_fit(_prices(0), _rows(MOBILE[:2], _prices(1)), "magic")


def test_calibration_draws_are_seeded_distinct_and_within_the_pool():
    pool = [a.id for a in MOBILE[:30]]
    draws = draw_subsets(pool, 4, 10, seed=7)
    assert draws == draw_subsets(list(reversed(pool)), 4, 10, seed=7)  # order of the pool does not matter
    assert all(len(set(d)) == 4 and set(d) <= set(pool) for d in draws)
    assert len({tuple(d) for d in draws}) > 1
    with pytest.raises(nas.NasError, match="cannot draw 40 calibration genomes from a pool of 30"):
        draw_subsets(pool, 40, 1, seed=0)


# ---- int8 ------------------------------------------------------------------------------------


def _weights_dtypes(path):
    return {numpy.dtype for numpy in (onnx.numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer)}


def test_int8_export_quantizes_the_weights_and_runs(tmp_path):
    arch = TINY[0]
    fp32 = genome_onnx(arch, 16, tmp_path)
    int8 = genome_onnx(arch, 16, tmp_path, "int8")
    assert int8 != fp32 and int8.name == f"{arch.id}-seq16-int8.onnx"
    assert np.dtype("int8") in _weights_dtypes(int8) and np.dtype("int8") not in _weights_dtypes(fp32)
    assert int8.stat().st_size < fp32.stat().st_size
    feed = {"input_ids": (np.arange(16) % 99 + 1).reshape(1, 16), "attention_mask": np.ones((1, 16), np.int64),
            "token_type_ids": np.zeros((1, 16), np.int64)}
    out32, out8 = (ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, feed)[0] for p in (fp32, int8))
    assert out8.shape == out32.shape and np.all(np.isfinite(out8))
    assert np.corrcoef(out8.ravel(), out32.ravel())[0, 1] > 0.9  # the same function, quantized
    assert genome_onnx(arch, 16, tmp_path, "int8").stat().st_mtime_ns == int8.stat().st_mtime_ns  # cached, not redone


def test_quantizing_a_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(nas.NasError, match="no such ONNX model to quantize"):
        quantize_int8(tmp_path / "none.onnx", tmp_path / "out.onnx")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("runtime,precision", [("onnxruntime", "int8"), ("torch", "bf16")])
def test_genomes_and_kernels_are_measured_at_a_precision(runtime, precision):
    protocol = Protocol(warmup=1, rounds=3, runs_per_round=1, max_spread=10.0, passes=1)
    results = measure_genomes(TINY[:2], runtime=runtime, seq_len=16, protocol=protocol, precision=precision, progress=False)
    assert [m.genome_id for m in results] == [a.id for a in TINY[:2]]
    assert all(m.latency_ms > 0 and len(m.round_ms) == 3 for m in results)
    kernels = select_kernels(load_space("tiny"), 16, 2, 1)[:3]
    records = run_microbenchmarks(kernels, runtime=runtime, protocol=protocol, precision=precision, progress=False)
    assert [r["name"] for r in records] == [k.name for k in kernels] and all(r["latency_ms"] > 0 for r in records)


@pytest.mark.parametrize("runtime,precision,message", [
    ("onnxruntime", "bf16", "runtime onnxruntime measures precision fp32 or int8 here, not bf16; use torch for bf16"),
    ("torch", "int8", "runtime torch measures precision fp32 or bf16 here, not int8; use onnxruntime for int8"),
    ("onnxruntime", "fp16", "precision 'fp16' is not one of fp32, int8, bf16"),
])
def test_a_precision_the_runtime_cannot_measure_is_refused(runtime, precision, message):
    with pytest.raises(nas.NasError, match=message):
        check_precision(runtime, precision)


@pytest.fixture(scope="module")
def int8_bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("b8") / "bundle"
    code = main(["latency", "export-bench", "--space", "tiny", "-n", "2", "--references", "none", "--kernels-per-kind", "1",
                 "--seq-len", "32", "--precision", "int8", "--out", str(out)])
    assert code == 0
    return out


def test_int8_bundle_holds_quantized_models_and_says_so(int8_bundle):
    manifest = predictors.bundle.load_manifest(int8_bundle)
    assert manifest["precision"] == "int8"
    genome = next(m for m in manifest["models"] if m["kind"] == "genome")
    assert np.dtype("int8") in _weights_dtypes(int8_bundle / genome["path"])
    assert not list(int8_bundle.rglob("fp32.onnx"))  # the fp32 intermediates are gone
    assert "int8" in (int8_bundle / "README.txt").read_text()


# ---- precision in files and ingest -------------------------------------------------------------


def _ingest_csv(tmp_path, manifest_genomes):
    csv = tmp_path / "res.csv"
    csv.write_text("genome_id,latency_ms\n" + "\n".join(f"{gid},{10 + i}" for i, gid in enumerate(manifest_genomes)))
    return csv


def test_ingest_keeps_the_bundles_precision_as_part_of_the_device(int8_bundle, tmp_path, capsys):
    manifest = predictors.bundle.load_manifest(int8_bundle)
    csv = _ingest_csv(tmp_path, manifest["genomes"])
    out = tmp_path / "phone-int8.json"
    code = main(["latency", "ingest", str(csv), "--manifest", str(int8_bundle), "--device", "phone", "--runtime", "onnxruntime",
                 "--threads", "4", "--min-genomes", "2", "--out", str(out)])
    stdout, err = capsys.readouterr()
    assert code == 0, err
    assert "onnxruntime int8" in stdout
    assert json.loads(out.with_name("phone-int8.measurements.json").read_text())["precision"] == "int8"
    phone = predictors.load(out, precision="int8")
    assert phone.precision == "int8"
    with pytest.raises(nas.NasError, match="fitted for precision 'int8', but 'fp32' was asked for"):
        predictors.load(out, precision="fp32")


def test_ingest_with_a_precision_other_than_the_bundles_is_refused(int8_bundle, tmp_path, capsys):
    csv = _ingest_csv(tmp_path, predictors.bundle.load_manifest(int8_bundle)["genomes"])
    code = main(["latency", "ingest", str(csv), "--manifest", str(int8_bundle), "--device", "phone", "--runtime", "onnxruntime",
                 "--threads", "4", "--precision", "fp32", "--base", "pixel4", "--out", str(tmp_path / "p.json")])
    err = capsys.readouterr().err
    assert code == 2 and "the bundle's models are int8, --precision says fp32" in err and "Traceback" not in err
    assert not (tmp_path / "p.json").exists()


def test_files_without_precision_are_fp32_and_a_bad_precision_names_the_field(tmp_path):
    data = json.loads((predictors.predictor.PROFILES_DIR / "pixel4.json").read_text())
    data.pop("precision", None)
    old = tmp_path / "old.json"
    old.write_text(json.dumps(data))
    assert predictors.load(old).precision == "fp32"
    data["precision"] = "int4"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(nas.NasError, match=r"bad.json: field 'precision': 'int4' is not one of fp32, int8, bf16"):
        predictors.load(bad)
    m = MeasurementSet("host", "onnxruntime", 1, 16, [], {}, [], {}, precision="int8")
    m.save(tmp_path / "m.json")
    assert MeasurementSet.load(tmp_path / "m.json").precision == "int8"


def test_evaluating_an_fp32_predictor_on_int8_measurements_is_refused():
    from predictors.evaluate import check_matches

    predictor = predictors.load("pixel4")
    data = MeasurementSet("pixel4", "tflite", 4, 128, precision="int8", path="int8.json")
    with pytest.raises(nas.NasError, match="int8.json: measured with precision 'int8' but predictor"):
        check_matches(predictor, data)


def test_ingest_prior_transfers_the_base_deterministically_and_says_what_to_expect(tmp_path, capsys):
    csv = tmp_path / "phone.csv"
    csv.write_text("genome_id,latency_ms\nmobilebert,62\nmobilebert-tiny,40\nbert-base,342\n")
    coefficients = []
    for name in ("a", "b"):
        out = tmp_path / f"{name}.json"
        code = main(["latency", "ingest", str(csv), "--device", "phone", "--runtime", "tflite", "--threads", "4",
                     "--base", "pixel4", "--method", "prior", "--out", str(out)])
        stdout, err = capsys.readouterr()
        assert code == 0, err
        assert "every price refitted towards the base on 3 genomes" in stdout
        phone = predictors.load(out, device="phone", precision="fp32")
        assert phone.provenance["transfer"]["method"] == "prior" and phone.provenance["base"]["device"] == "pixel4"
        coefficients.append(phone.coefficients)
    assert coefficients[0] == coefficients[1]


def test_ingest_method_that_needs_a_base_without_one_is_a_one_line_error(tmp_path, capsys):
    csv = tmp_path / "phone.csv"
    csv.write_text("genome_id,latency_ms\nmobilebert,62\n")
    code = main(["latency", "ingest", str(csv), "--device", "phone", "--runtime", "tflite", "--threads", "4",
                 "--method", "prior", "--out", str(tmp_path / "p.json")])
    err = capsys.readouterr().err
    assert code == 2 and "--method prior transfers a base predictor: give --base PREDICTOR" in err
    assert len(err.strip().splitlines()) == 1


def test_recommended_method_follows_the_shipped_study_and_never_asks_for_missing_kernels():
    from predictors.transfer import expected_error, measured_errors, recommend

    errors = measured_errors()
    assert errors is not None and errors["format"] == "nas-transfer-errors"
    for n in (1, 2, 3, 4, 10, 20, 100):
        method, kernels = recommend(n, have_kernels=False)
        assert method in METHODS and kernels is False
        cell = expected_error(method, kernels, n)
        assert cell["n"] == max([k for k in (2, 4, 10, 20) if k <= n] or [2])
        best = max(e["by_n"][str(cell["n"])]["within_10_median"] for e in errors["methods"].values() if not e["kernels"])
        assert cell["within_10_median"] == best
    assert recommend(20, have_kernels=True)[0] in METHODS
