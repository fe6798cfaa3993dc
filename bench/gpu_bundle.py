"""What a lent GPU machine needs for the ground truth, in one folder that fits its 64 MiB tree limit.

    python bench/gpu_bundle.py .gpu        # then add /.gpu/ to .git/info/exclude and carry it

Writes, into a new folder:
- ``teacher16/``: the embedded teacher's files, its weights rounded to fp16 (the fp32 file is 91 MB;
  largest relative change 4.5e-4). ``--widen`` turns it back into fp32 weights on the machine, so
  that transformers loads an fp32 teacher whatever its default dtype;
- ``py/pydoc_data/``: this Python's reference manual, put ahead of the machine's own on PYTHONPATH,
  so that the embedded corpus is the one the CPU runs read (the lent image has another CPython);
- ``genomes/``: the ground-truth set and every genome folder under bench/results, one file each.

and prints the command to run there.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from quality_common import RESULTS, genome_set, usage_error  # noqa: E402

TEACHER_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def bundle(out: Path) -> None:
    """Write the bundle into OUT.partial, then rename it: a stopped run leaves no folder that looks complete."""
    import pydoc_data

    from nas.distill.teacher import default_teacher_dir

    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    copy_teacher(default_teacher_dir(), partial / "teacher16", "half")
    (partial / "py" / "pydoc_data").mkdir(parents=True)
    for name in ("__init__.py", "topics.py"):
        shutil.copy(Path(pydoc_data.__file__).parent / name, partial / "py" / "pydoc_data" / name)
    genomes = partial / "genomes"
    for name, arch in genome_set().items():
        arch.save(genomes / f"{name}.json")
    for path in sorted(RESULTS.glob("*/*.json")):
        shutil.copy(path, genomes / path.name)
    partial.rename(out)


def copy_teacher(source: Path, dest: Path, dtype: str) -> None:
    """The teacher's files, its floating-point weights cast to ``dtype`` ("half" to carry, "float" to load)."""
    from safetensors.torch import load_file, save_file

    dest.mkdir(parents=True, exist_ok=True)
    for name in TEACHER_FILES:
        shutil.copy(source / name, dest / name)
    state = load_file(str(source / "model.safetensors"))
    save_file({k: getattr(v, dtype)() if v.is_floating_point() else v for k, v in state.items()}, str(dest / "model.safetensors"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="a new folder (bundle), or the fp16 teacher folder (with --widen)")
    parser.add_argument("--widen", metavar="DEST", help="on the machine: write the fp16 teacher OUT back as fp32 into DEST")
    args = parser.parse_args()
    out = Path(args.out)
    if args.widen:
        copy_teacher(out, Path(args.widen), "float")
        return
    if out.exists():
        usage_error(f"{out} exists: the bundle is written into a new folder")
    bundle(out)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"{out}: {size / 2**20:.1f} MiB, {len(list((out / 'genomes').glob('*.json')))} genomes. On the machine "
          f"(carry {out}/teacher16, {out}/py, {out}/genomes):\n"
          f"  export PYTHONPATH=$PWD:$PWD/{out}/py HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1\n"
          f"  python3 bench/gpu_bundle.py {out}/teacher16 --widen {out}/teacher\n"
          f"  STEPS=640 BATCH=8 SEEDS=\"0 1\" WORKERS=8 LIMIT_S=420 bash bench/quality_gpu.sh gpu {out}/genomes {out}/teacher")


if __name__ == "__main__":
    main()
