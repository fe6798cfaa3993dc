#!/usr/bin/env bash
# The linear-probe ground truth on one GPU machine, for every genome file in a folder.
#
#   bash bench/quality_gpu.sh TAG GENOME_DIR [TEACHER]
#
# WORKERS processes per seed of `bench/quality.py ground --grade lp` share the genomes: each takes the
# next genome that no live process has claimed, distils it on the GPU and grades it at once, and
# appends one row (bench/results/quality_ground_truth[_lp]_TAG_STEPS_seedS.csv). A step of these small
# students costs a GPU about the same at 8 or 64 sequences (kernel launches, not arithmetic), so the
# GPU run takes BATCH sequences a step where the CPU run takes 8. Settings, from the environment:
#   STEPS (1280), BATCH (32), SEEDS ("0 1"), WORKERS (8 per seed), LIMIT_S (0: none; else each worker
#   stops after that many seconds, its finished rows kept), PY (python3), LOGS (runs/quality/logs-TAG).
# A second call resumes: finished genomes are skipped, and one distilled but not yet graded is graded.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # the package from this checkout, installed or not
if [ $# -lt 2 ] || [ ! -d "$2" ]; then
    echo "usage: bash bench/quality_gpu.sh TAG GENOME_DIR [TEACHER]  (GENOME_DIR: a folder of genome JSON files)" >&2
    exit 2
fi
TAG=$1 GENOMES=$2 TEACHER=${3:-}
STEPS=${STEPS:-1280} BATCH=${BATCH:-32} SEEDS=${SEEDS:-"0 1"} WORKERS=${WORKERS:-8} LIMIT_S=${LIMIT_S:-0} PY=${PY:-python3}
LOGS=${LOGS:-runs/quality/logs-$TAG}
mkdir -p "$LOGS"
# the costliest genomes first (layers x (stacked FFNs + attention)), so that no long one starts last
mapfile -t FILES < <("$PY" - "$GENOMES" <<'EOF'
import json, pathlib, sys
def cost(path):
    genome = json.loads(path.read_text())
    return genome.get("num_layers", 12) * (genome.get("num_ffn", 1) + 2)
files = sorted(pathlib.Path(sys.argv[1]).glob("*.json"))
print("\n".join(str(f) for f in sorted(files, key=lambda f: (-cost(f), f.name))))
EOF
)
if [ ${#FILES[@]} -eq 0 ]; then
    echo "quality_gpu.sh: $GENOMES holds no genome .json files" >&2
    exit 2
fi
echo "$(date -u +%T) ${#FILES[@]} genomes, $STEPS steps of $BATCH, seeds $SEEDS, $WORKERS workers per seed; logs in $LOGS"
pids=()
for seed in $SEEDS; do
    for k in $(seq 1 "$WORKERS"); do
        cmd=("$PY" bench/quality.py ground --genome-files "${FILES[@]}" --tag "$TAG" --distill-steps "$STEPS"
             --batch-size "$BATCH" --ground-seed "$seed" --grade lp --lp-dev 12000 --threads 1 ${TEACHER:+--teacher "$TEACHER"})
        [ "$LIMIT_S" -gt 0 ] && cmd=(timeout "$LIMIT_S" "${cmd[@]}")
        "${cmd[@]}" >"$LOGS/seed$seed-worker$k.log" 2>&1 &
        pids+=($!)
        sleep 1  # staggered, so that two workers do not claim the same genome at once
    done
done
wait "${pids[@]}"
echo "$(date -u +%T) done: $(cat bench/results/quality_ground_truth_lp_"$TAG"_"$STEPS"_seed*.csv 2>/dev/null | grep -vc '^name,') genomes graded"
