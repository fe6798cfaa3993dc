"""Benchmark bundles for measuring on a phone: ONNX models of genomes and kernels, with a manifest.

Layout (every model in its own folder, because ``onnxruntime_perf_test`` names its result lines
after the model's folder, which is how ``nas latency ingest`` knows which genome a line is)::

    BUNDLE/
      manifest.json                       what is in the bundle: genomes, kernels, features, settings
      models/ID/model.onnx                one genome (ID = genome id) or kernel (ID = kernel name),
                                          fp32 or int8 (ONNX Runtime dynamic quantization) as the manifest says
      models/ID/test_data_set_0/input_N.pb  fixed inputs (token ids 1..99), for older perf_test builds
      run_onnxruntime_perf_test.sh        runs every model on the phone, one result file per model
      README.txt                          the steps, short

The bundle is written to a temporary folder next to BUNDLE and renamed when complete.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Sequence

from nas.arch import ArchConfig
from nas.errors import NasError
from nas.graph import count
from nas.references import reference, reference_names
from predictors.data import now_iso
from predictors.microbench import Kernel, export_kernel

BUNDLE_FORMAT = "nas-latency-bundle"
BUNDLE_VERSION = 1
# Reference designs with published phone latencies: measuring them lets a user compare with the papers.
DEFAULT_REFERENCES = ("bert-base", "squeezebert", "mobilebert", "mobilebert-no-opt", "mobilebert-tiny")


def write_test_data(model_dir: Path, inputs: dict[str, "object"]) -> None:
    """ONNX TensorProto files of the inputs, in the test-data layout onnxruntime_perf_test reads."""
    import numpy as np
    from onnx import numpy_helper

    data_dir = model_dir / "test_data_set_0"
    data_dir.mkdir(parents=True, exist_ok=True)
    for i, (name, value) in enumerate(inputs.items()):
        tensor = numpy_helper.from_array(np.asarray(value), name=name)
        (data_dir / f"input_{i}.pb").write_bytes(tensor.SerializeToString())


def genome_inputs(seq_len: int) -> dict[str, "object"]:
    import numpy as np

    return {
        "input_ids": (np.arange(seq_len) % 99 + 1).reshape(1, seq_len).astype(np.int64),
        "attention_mask": np.ones((1, seq_len), dtype=np.int64),
        "token_type_ids": np.zeros((1, seq_len), dtype=np.int64),
    }


def export_bundle(
    out: str | Path,
    archs: Sequence[ArchConfig],
    kernels: Sequence[Kernel] = (),
    *,
    seq_len: int = 128,
    threads: int = 4,
    runs: int = 50,
    names: dict[str, str] | None = None,
    progress: bool = True,
    precision: str = "fp32",
) -> Path:
    """Write a bundle to `out` (which must not exist). `names` maps genome ids to reference names;
    `precision` fp32 or int8 (every model dynamically quantized with ONNX Runtime)."""
    from nas.onnx import export_onnx
    from nas.progress import progress_bar
    from predictors.microbench import kernel_module
    from predictors.quantize import check_precision, quantize_int8

    check_precision("onnxruntime", precision)

    def write_model(export, path: Path) -> None:
        if precision == "fp32":
            export(path)
            return
        fp32 = path.with_name("fp32.onnx")
        export(fp32)
        quantize_int8(fp32, path)
        fp32.unlink()

    out = Path(out)
    if out.exists():
        raise NasError(f"{out}: already exists; export-bench writes a new folder (choose another --out)")
    if len({a.id for a in archs}) != len(archs):
        raise NasError("export-bench: the same genome is listed twice")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        models: list[dict] = []
        bar = progress_bar(len(archs) + len(kernels), "exporting", "model", enabled=progress)
        for arch in archs:
            folder = tmp / "models" / arch.id
            write_model(lambda p: export_onnx(arch, p, seq_len=seq_len), folder / "model.onnx")
            write_test_data(folder, genome_inputs(seq_len))
            cost = count(arch, seq_len)
            models.append({"id": arch.id, "kind": "genome", "path": f"models/{arch.id}/model.onnx",
                           "name": (names or {}).get(arch.id), "params": cost.params, "macs": cost.macs})
            bar.update(1)
        kernel_entries: list[dict] = []
        for kernel in kernels:
            folder = tmp / "models" / kernel.name
            write_model(lambda p: export_kernel(kernel, p), folder / "model.onnx")
            _, inputs = kernel_module(kernel)
            write_test_data(folder, {k: v.numpy() for k, v in inputs.items()})
            kernel_entries.append({"id": kernel.name, "kind": kernel.kind, "shape": kernel.params,
                                   "features": kernel.features(), "path": f"models/{kernel.name}/model.onnx"})
            bar.update(1)
        bar.close()
        manifest = {
            "format": BUNDLE_FORMAT,
            "format_version": BUNDLE_VERSION,
            "created": now_iso(),
            "seq_len": seq_len,
            "batch": 1,
            "precision": precision,
            "suggested_threads": threads,
            "inputs": {"input_ids": "int64 (1, seq_len), ids 1..99", "attention_mask": "int64 ones", "token_type_ids": "int64 zeros"},
            "models": models,
            "kernels": kernel_entries,
            "genomes": {a.id: a.to_dict() for a in archs},
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
        script = tmp / "run_onnxruntime_perf_test.sh"
        script.write_text(_RUN_SCRIPT.format(threads=threads, runs=runs))
        os.chmod(script, 0o755)
        (tmp / "README.txt").write_text(_README.format(seq_len=seq_len, n_genomes=len(archs), n_kernels=len(kernels), precision=precision))
        os.chmod(tmp, 0o755)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def load_manifest(path: str | Path) -> dict:
    """A bundle manifest (the file, or the bundle folder holding it), checked."""
    from predictors.data import _genome, read_json, read_precision

    path = Path(path)
    if path.is_dir():
        path = path / "manifest.json"
    data = read_json(path, "bundle manifest")
    if not isinstance(data, dict) or data.get("format") != BUNDLE_FORMAT:
        raise NasError(f"{path}: not a bundle manifest (no \"format\": \"{BUNDLE_FORMAT}\")")
    if data.get("format_version") != BUNDLE_VERSION:
        raise NasError(f"{path}: bundle format_version {data.get('format_version')!r}; this nas reads {BUNDLE_VERSION}")
    if not isinstance(data.get("seq_len"), int) or not isinstance(data.get("genomes"), dict):
        raise NasError(f"{path}: manifest needs 'seq_len' and 'genomes'")
    data["genomes"] = {gid: _genome(g, f"{path}: genomes.{gid}", expected_id=gid) for gid, g in data["genomes"].items()}
    data["precision"] = read_precision(data, str(path))
    data["path"] = str(path)
    return data


def reference_archs(names: Sequence[str] = DEFAULT_REFERENCES) -> tuple[list[ArchConfig], dict[str, str]]:
    archs, labels = [], {}
    for name in names:
        if name not in reference_names():
            raise NasError(f"unknown reference {name!r}; known: {', '.join(reference_names())}")
        arch = reference(name).arch
        archs.append(arch)
        labels[arch.id] = name
    return archs, labels


_RUN_SCRIPT = """#!/bin/sh
# Run every model of this bundle with onnxruntime_perf_test; one result file per model in results/.
# On an Android phone (adb shell), from the bundle folder pushed to /data/local/tmp/bundle:
#   PERF_TEST=/data/local/tmp/onnxruntime_perf_test sh run_onnxruntime_perf_test.sh
# Settings: THREADS intra-op threads (default {threads}), RUNS timed runs per model (default {runs}).
PERF_TEST=${{PERF_TEST:-./onnxruntime_perf_test}}
THREADS=${{THREADS:-{threads}}}
RUNS=${{RUNS:-{runs}}}
mkdir -p results
for dir in models/*/; do
  id=$(basename "$dir")
  # -m times -r RUNS: fixed number of runs; -x: intra-op threads; -s: print statistics (P50 ...)
  "$PERF_TEST" -e cpu -m times -r "$RUNS" -x "$THREADS" -s "$dir/model.onnx" "results/$id.csv" > "results/$id.txt" 2>&1 \\
    || echo "failed: $id (see results/$id.txt)"
  sleep 1  # let the phone cool a little between models
done
echo "done: copy the results/ folder back and run 'nas latency ingest'"
"""

_README = """nas latency benchmark bundle: {n_genomes} genomes and {n_kernels} kernels, {precision}, batch 1, seq len {seq_len}.

1. Copy this folder and an onnxruntime_perf_test binary built for the phone to /data/local/tmp/.
2. adb shell, cd to the folder, run: PERF_TEST=/data/local/tmp/onnxruntime_perf_test sh run_onnxruntime_perf_test.sh
3. adb pull the results/ folder, then on your computer:
   nas latency ingest results/ --manifest manifest.json --device MY_PHONE --runtime onnxruntime --threads 4
   (the precision, {precision}, is read from the manifest and becomes part of the device's identity)
For TFLite: convert each models/ID/model.onnx of an fp32 bundle to models/ID/ID.tflite (for int8, with
the TFLite converter's own quantization; nas installs no TFLite converter), run benchmark_model
--graph=ID.tflite --num_threads=4 > results/ID.txt for each, and ingest the same way.
See docs/latency.md of the nas repository for the whole walk-through.
"""
