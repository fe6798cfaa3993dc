"""predictors: reading phone tool outputs and CSVs, the `nas latency` commands, bundles."""

import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from onnx import numpy_helper

import nas
import predictors
from nas.cli import main
from predictors.ingest import parse_csv, parse_ort_perf_test, parse_tflite_benchmark, read_file, read_results

DATA = Path(__file__).parent / "data" / "latency"
MOBILEBERT_ID = nas.reference("mobilebert").arch.id
TINY_ID = nas.reference("mobilebert-tiny").arch.id
BERT_ID = nas.reference("bert-base").arch.id


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# ---- tool outputs -------------------------------------------------------------------------------


def test_ort_perf_test_current_stdout_prefers_the_median():
    text = (DATA / "ort_perf_test_stdout_current.txt").read_text()
    [reading] = parse_ort_perf_test(text, "f", "some-id")
    assert reading.model_id == "some-id" and reading.statistic == "median"
    assert reading.latency_ms == pytest.approx(0.0617742 * 1e3)  # its "P50 Latency: 0.0617742 s"


def test_ort_perf_test_current_stdout_without_statistics_uses_the_average():
    [reading] = parse_ort_perf_test((DATA / "ort_perf_test_stdout_current_no_stats.txt").read_text(), "f", "x")
    assert reading.latency_ms == pytest.approx(40.9742) and reading.statistic == "mean"


def test_ort_perf_test_older_stdout():
    [reading] = parse_ort_perf_test((DATA / "ort_perf_test_stdout_old.txt").read_text(), "f", "x")
    assert reading.latency_ms == pytest.approx(64.4826) and "older" in reading.format


@pytest.mark.parametrize("name, model", [("76d802bde5a3.csv", MOBILEBERT_ID), ("6a5b40b7101f_result_old.txt", TINY_ID)])
def test_ort_perf_test_result_files_give_the_median_run_per_model_folder(name, model):
    path = DATA / name
    [reading] = read_file(path)
    runs = [float(line.split(",")[1]) for line in path.read_text().splitlines() if line.count(",") == 4]
    assert reading.model_id == model
    assert reading.latency_ms == pytest.approx(np.median(runs) * 1e3)


def test_tflite_current_log_names_its_graph():
    [reading] = parse_tflite_benchmark((DATA / "tflite_benchmark_current.log").read_text(), "f", "x")
    assert reading.model_id == BERT_ID and reading.latency_ms == pytest.approx(342.318)


def test_tflite_older_log_with_two_runs_gives_two_readings():
    readings = parse_tflite_benchmark((DATA / "tflite_benchmark_old_two_runs.log").read_text(), "f", "x")
    assert [r.model_id for r in readings] == ["mobilebert", "mobilebert-tiny"]
    assert [r.latency_ms for r in readings] == pytest.approx([62.388, 40.2054])  # "no stats: 62388" us
    assert all("older" in r.format for r in readings)


def test_tflite_android_app_line():
    [reading] = read_file(DATA / "tflite_android_app_logcat.txt")
    assert reading.latency_ms == pytest.approx(192.1173)


def test_csv_bad_row_names_row_and_field():
    with pytest.raises(nas.NasError, match=r"bad_row.csv: row 3: field 'latency_ms': 'sixty' is not a number"):
        parse_csv(DATA / "bad_row.csv")


def test_csv_without_the_needed_columns(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("name,ms\nmobilebert,62\n")
    with pytest.raises(nas.NasError, match="header must name 'genome_id' and 'latency_ms'"):
        read_results([path])


def test_unrecognised_file_is_an_error(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("the phone got hot\n")
    with pytest.raises(nas.NasError, match="notes.txt: no latency found"):
        read_results([tmp_path])


# ---- commands ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def host_profile(tmp_path_factory):
    """A quick real profile of this machine on the tiny space (kernels, measure, fit)."""
    folder = tmp_path_factory.mktemp("profile")
    out = folder / "host.json"
    code = main(["latency", "profile", "--device", "host", "--space", "tiny", "--genomes", "12", "--quick",
                 "--seq-len", "32", "--out", str(out)])
    assert code == 0
    return out


def test_profile_writes_a_loadable_predictor_and_its_measurements(host_profile):
    predictor = predictors.load(host_profile, seq_len=32, runtime="onnxruntime", threads=1)
    data = json.loads(host_profile.with_name("host.measurements.json").read_text())
    assert data["clock"] == "cpu" and len(data["records"]) == 12 and data["kernels"]
    prov = predictor.provenance["fitted_on"]
    assert prov["genomes"] + prov["excluded_untrusted"] == 12 and prov["kernels"] > 0
    arch = nas.ArchConfig.from_dict(next(iter(data["genomes"].values())))
    assert predictor.predict(arch) > 0


def test_profile_refuses_to_overwrite(host_profile, capsys):
    before = host_profile.read_bytes()
    code, _, err = run(capsys, "latency", "profile", "--space", "tiny", "--genomes", "2", "--quick", "--out", host_profile)
    assert code == 2 and "already exists; pass --force" in err
    assert host_profile.read_bytes() == before


def test_fit_command_reproduces_the_profile_predictions(host_profile, tmp_path, capsys):
    out = tmp_path / "refit.json"
    code, stdout, _ = run(capsys, "latency", "fit", host_profile.with_name("host.measurements.json"), "--out", out)
    assert code == 0
    a, b = predictors.load(host_profile), predictors.load(out)
    assert a.coefficients == b.coefficients
    # cross-validation needs 10 trusted genomes: on a loaded machine the quick profile may refuse
    # more than 2 of its 12 as too noisy, so the refit reports it exactly when the profile did
    assert a.provenance["cross_validation_5fold"] == b.provenance["cross_validation_5fold"]
    assert ("5-fold cross-validation" in stdout) == (b.provenance["cross_validation_5fold"] is not None)


def test_fit_on_a_measurement_file_with_a_bad_record_names_file_record_and_field(host_profile, tmp_path, capsys):
    data = json.loads(host_profile.with_name("host.measurements.json").read_text())
    data["records"][2]["latency_ms"] = "fast"
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(data))
    out = tmp_path / "p.json"
    code, _, err = run(capsys, "latency", "fit", broken, "--out", out)
    assert code == 2 and f"{broken}: records[2]: field 'latency_ms' must be a positive number, got 'fast'" in err
    assert not out.exists()


def test_predict_command(host_profile, tmp_path, capsys):
    genome = nas.space.load_space("tiny").sample(__import__("random").Random(1))
    path = genome.save(tmp_path / "g.json")
    code, out, _ = run(capsys, "latency", "predict", "--device", host_profile, path, "--json")
    assert code == 0
    record = json.loads(out.strip().splitlines()[0])
    assert record["latency_ms"] == predictors.load(host_profile).predict(genome)
    code, _, err = run(capsys, "latency", "predict", "--device", host_profile, path, "--seq-len", "128")
    assert code == 2 and "fitted for seq_len 32, but 128 was asked for" in err


def test_measure_command_writes_a_measurement_set(tmp_path, capsys):
    out = tmp_path / "m.json"
    code, stdout, _ = run(capsys, "latency", "measure", "--space", "tiny", "-n", "2", "--seq-len", "16",
                          "--rounds", "3", "--max-spread", "5", "--out", out)
    assert code == 0 and "trusted" in stdout
    data = predictors.data.MeasurementSet.load(out)
    assert len(data.records) == 2 and all(r["latency_ms"] > 0 for r in data.records)


def test_evaluate_command_scores_predictor_and_baselines(host_profile, tmp_path, capsys):
    heldout = tmp_path / "heldout.json"
    code, _, _ = run(capsys, "latency", "measure", "--space", "tiny", "-n", "4", "--seed", "99", "--seq-len", "32",
                     "--rounds", "3", "--max-spread", "5", "--out", heldout)
    assert code == 0
    out_dir = tmp_path / "eval"
    code, stdout, err = run(capsys, "latency", "evaluate", "--device", host_profile, "--heldout", heldout, "--out-dir", out_dir,
                              "--mlp-steps", "200")
    assert code == 0, err
    report = json.loads((out_dir / "evaluation.json").read_text())
    assert set(report["scores"]) == {"structural (ours)", "FLOPs-linear", "HAT-style MLP"}
    assert report["n_heldout"] + report["overlap_with_train_excluded"] + report["untrusted_heldout_excluded"] == 4
    assert (out_dir / "predicted_vs_measured.png").read_bytes()[:4] == b"\x89PNG"
    assert "| structural (ours) |" in stdout


def test_write_corrected_without_any_anchors_says_what_to_pass(tmp_path, capsys):
    from predictors.data import MeasurementSet

    archs = [nas.reference(n).arch for n in ("mobilebert", "mobilebert-tiny")]
    heldout = MeasurementSet("pixel4", "tflite", 4, 128, [{"genome_id": a.id, "latency_ms": v, "trusted": True} for a, v in zip(archs, (62, 40))],
                             {a.id: a for a in archs})
    heldout.save(tmp_path / "held.json")
    code, _, err = run(capsys, "latency", "evaluate", "--device", "pixel4", "--heldout", tmp_path / "held.json", "--out-dir", tmp_path / "e",
                       "--write-corrected", tmp_path / "fixed.json")
    assert code == 2 and "--write-corrected: no drift measured" in err and "Traceback" not in err
    assert not (tmp_path / "fixed.json").exists()


def test_evaluate_measuring_now_also_remeasures_training_anchors(host_profile, tmp_path, capsys):
    out_dir = tmp_path / "eval"
    code, stdout, err = run(capsys, "latency", "evaluate", "--device", host_profile, "--space", "tiny", "-n", "3", "--seed", "7",
                            "--anchors", "2", "--rounds", "3", "--max-spread", "5", "--mlp-steps", "50", "--out-dir", out_dir)
    assert code == 0, err
    report = json.loads((out_dir / "evaluation.json").read_text())
    assert report["drift"]["anchors"] == 2 and report["drift"]["factor"] > 0
    assert "Machine drift between the training and the held-out session" in stdout
    anchors = json.loads((out_dir / "anchors.json").read_text())
    train = json.loads(host_profile.with_name("host.measurements.json").read_text())
    assert {r["genome_id"] for r in anchors["records"]} <= set(train["genomes"])


def test_ingest_published_csv_calibrates_on_a_base(host_profile, tmp_path, capsys):
    csv = tmp_path / "pub.csv"
    csv.write_text("genome_id,latency_ms\n" + "\n".join(f"{n},{v}" for n, v in (("mobilebert", 62), ("mobilebert-tiny", 40), ("mobilebert-no-opt", 192))))
    out = tmp_path / "phone.json"
    code, stdout, err = run(capsys, "latency", "ingest", csv, "--device", "phone", "--runtime", "tflite", "--threads", "4",
                            "--seq-len", "32", "--base", host_profile, "--groups", "compute,rest", "--out", out)
    assert code == 0, err
    assert "leave-one-out" in stdout
    phone = predictors.load(out, device="phone", runtime="tflite", threads=4)
    assert [p["name"] for p in phone.provenance["fitted_on"]] == ["mobilebert", "mobilebert-tiny", "mobilebert-no-opt"]


def test_ingest_without_base_and_too_few_genomes_says_what_to_do(tmp_path, capsys):
    code, _, err = run(capsys, "latency", "ingest", DATA / "published_pixel4.csv", "--device", "p", "--runtime", "tflite",
                       "--threads", "4", "--out", tmp_path / "p.json")
    assert code == 2 and "give --base PREDICTOR" in err
    assert not (tmp_path / "p.json").exists()


def test_ingest_unknown_genome_id_and_bad_row_are_errors(tmp_path, capsys):
    existing = tmp_path / "p.json"
    existing.write_text("{}")
    for name, message in (("unknown_id.csv", "unknown genome id '0123456789ab'"), ("bad_row.csv", "row 3: field 'latency_ms'")):
        code, _, err = run(capsys, "latency", "ingest", DATA / name, "--device", "p", "--runtime", "tflite", "--threads", "4",
                           "--base", "pixel4", "--out", existing, "--force")
        assert code == 2 and message in err and name in err
        assert existing.read_text() == "{}"  # nothing existing is overwritten on error


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("b") / "bundle"
    code = main(["latency", "export-bench", "--space", "tiny", "-n", "2", "--references", "none", "--kernels-per-kind", "1",
                 "--seq-len", "32", "--out", str(out)])
    assert code == 0
    return out


def test_export_bench_writes_loadable_models_and_manifest(bundle):
    manifest = predictors.bundle.load_manifest(bundle)
    assert manifest["seq_len"] == 32 and len(manifest["genomes"]) == 2 and manifest["kernels"]
    assert (bundle / "run_onnxruntime_perf_test.sh").exists()
    for entry in manifest["models"] + manifest["kernels"]:
        model_path = bundle / entry["path"]
        session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
        inputs = sorted((model_path.parent / "test_data_set_0").glob("input_*.pb"))
        feed = {}
        for spec, file in zip(session.get_inputs(), inputs):
            tensor = numpy_helper.to_array(numpy_helper.onnx.TensorProto.FromString(file.read_bytes()))
            feed[spec.name] = tensor
        assert len(feed) == len(session.get_inputs())
        assert all(np.all(np.isfinite(o)) for o in session.run(None, feed))
    assert not list(bundle.parent.glob(".bundle.*"))  # no temporary folder left


def test_export_bench_does_not_touch_an_existing_folder(bundle, capsys):
    before = sorted(p.name for p in bundle.iterdir())
    code, _, err = run(capsys, "latency", "export-bench", "--space", "tiny", "-n", "1", "--out", bundle)
    assert code == 2 and "already exists" in err
    assert sorted(p.name for p in bundle.iterdir()) == before


def test_ingest_perf_test_results_of_a_bundle(bundle, host_profile, tmp_path, capsys):
    # what the bundle's run script leaves in results/: one result file per model folder
    manifest = predictors.bundle.load_manifest(bundle)
    results = tmp_path / "results"
    results.mkdir()
    template = (DATA / "76d802bde5a3.csv").read_text()
    ids = [m["id"] for m in manifest["models"]] + [k["id"] for k in manifest["kernels"][:2]]
    for i, model_id in enumerate(ids):
        (results / f"{model_id}.csv").write_text(template.replace(MOBILEBERT_ID, model_id).replace("0.06", f"0.0{i + 1}"))
    shutil.copy(DATA / "ort_perf_test_stdout_old.txt", results / f"{ids[0]}.txt")  # an older build's stdout too
    out = tmp_path / "phone.json"
    code, stdout, err = run(capsys, "latency", "ingest", results, "--manifest", bundle, "--device", "phone", "--runtime", "onnxruntime",
                            "--threads", "4", "--base", host_profile, "--groups", "all", "--out", out)
    assert code == 0, err
    data = json.loads(out.with_name("phone.measurements.json").read_text())
    assert len(data["records"]) == 2 and len(data["kernels"]) == 2
    first = next(r for r in data["records"] if r["genome_id"] == ids[0])
    assert len(first["readings"]) == 2  # result file and stdout, median of both
