#!/usr/bin/env bash
# Run a side-by-side comparison on a GPU machine without registry access, from a bundle made by
# scripts/offline_gpu_bundle.sh (in ./offline_bundle, or $BUNDLE). Several stages share the GPU at once.
#
#   STAGES="BPR,LightGCN,KGAT|2020|3;MultiKG4Rec|2020|1" EPOCHS=10 DEADLINE=540 bash scripts/offline_gpu_run.sh
#
# STAGES: ';'-separated MODELS|SEEDS|JOBS, each one runner (benchmarks/run_comparison_<DATASET without -kg>.sh
# or SCRIPT), started STAGE_DELAY (60) s apart so that their data loading does not collide. Other variables
# of benchmarks/comparison_common.sh (EPOCHS, LR, STOP, TUNE, ...) pass through. DEADLINE (s, optional): runs
# still going then are stopped (finished runs are kept: the runner writes each one atomically and a later
# call skips them). OUT (results_out): RESULTS_DIR without its split and checkpoints, and RecBole's logs, as
# .tgz, with the device's description and the GPU utilisation every 15 s. SKIP_WHEELS=1 when the machine has
# recbole 1.2.1 and its needs already; SCRIPT to run another comparison script. BEFORE: a command run first
# (with the bundle's packages importable; its output in $OUT/before.log, its failure reported, not fatal), e.g.
# BEFORE='$PY benchmarks/bench_fusion.py --device=cuda --out_dir=$OUT' (single quotes: expanded there).
set -uo pipefail
cd "$(dirname "$0")/.."
T0=$(date +%s)
BUNDLE=${BUNDLE:-offline_bundle} OUT=${OUT:-results_out} PY=${PYTHON:-python3} STAGE_DELAY=${STAGE_DELAY:-60}
[ -f "$BUNDLE/bundle.env" ] || { echo "no bundle in $BUNDLE (make one with scripts/offline_gpu_bundle.sh)" >&2; exit 2; }
# shellcheck disable=SC1091
source "$BUNDLE/bundle.env"
: "${STAGES:?STAGES=\"MODELS|SEEDS|JOBS;...\" (see the header of this script)}"
# every stage names its models and seeds (an empty field would fall back to the script's whole default list)
IFS=';' read -ra stages <<< "$STAGES"
for stage in "${stages[@]}"; do
    IFS='|' read -r models seeds jobs <<< "$stage"
    if [ -z "$models" ] || [ -z "$seeds" ] || ! [[ "${jobs:-1}" =~ ^[1-9][0-9]*$ ]]; then
        echo "STAGES: stage '$stage' must be MODELS|SEEDS|JOBS (JOBS a positive integer, optional), e.g. BPR,KGAT|2020,2021|2" >&2
        exit 2
    fi
done
if [ -n "${DEADLINE:-}" ] && ! [[ "$DEADLINE" =~ ^[0-9]+$ ]]; then
    echo "DEADLINE: seconds as a whole number, got '$DEADLINE'" >&2
    exit 2
fi
mkdir -p "$OUT"
SITE=${SITE:-/tmp/mkg_site}
if [ -z "${SKIP_WHEELS:-}" ]; then  # SKIP_WHEELS=1: the machine has recbole and its needs already
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
        "$BUNDLE"/wheels/*.whl || exit 3
    if ! "$PY" -c "import pandas, sys; sys.exit(int(pandas.__version__.split('.')[0]) >= 3)" 2>/dev/null; then
        echo "pandas >= 3 (or none) here: RecBole 1.2.1 needs pandas 2; installing the bundle's"
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" \
            "$BUNDLE"/wheels/pandas2/*.whl || exit 3
    fi
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1
tar xJf "$BUNDLE/data.tar.xz" || exit 4
"$PY" - <<'PY' 2>&1 | tee "$OUT/device.txt"
import os, platform, torch, pandas, numpy, scipy, torch_geometric
import recbole_mkg.compare  # the plugin and its compat shims import here, or this call fails early
from recbole_mkg.utils import device_name
print(f"device: {device_name('cuda' if torch.cuda.is_available() else 'cpu')}; python {platform.python_version()}, "
      f"torch {torch.__version__}, pandas {pandas.__version__}, numpy {numpy.__version__}, scipy {scipy.__version__}, "
      f"torch_geometric {torch_geometric.__version__}, {os.cpu_count()} CPUs")
PY
[ "${PIPESTATUS[0]}" -eq 0 ] || exit 5
if [ -n "${BEFORE:-}" ]; then
    echo "BEFORE: $BEFORE"
    PY=$PY OUT=$OUT bash -c "$BEFORE" > "$OUT/before.log" 2>&1 || echo "BEFORE failed (exit $?): see $OUT/before.log"
fi
if [ -z "${SCRIPT:-}" ]; then
    base=${DATASET//-kg/}
    SCRIPT=benchmarks/run_comparison_${base//-/}.sh  # ml-1m-kg -> run_comparison_ml1m.sh
fi
( while true; do nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader 2>/dev/null; sleep 15; done ) \
    > "$OUT/gpu_util.txt" &
POLL=$!
pids=()
n=0
for stage in "${stages[@]}"; do
    IFS='|' read -r models seeds jobs <<< "$stage"
    [ $n -gt 0 ] && sleep "$STAGE_DELAY"
    n=$((n + 1))
    # each stage in a process group of its own (setsid), so that the deadline stops it and its runs, nothing else
    PYTHON=$PY FEATURE_DIR=$FEATURE_DIR RESULTS_DIR=$RESULTS_DIR MODELS=$models SEEDS=$seeds JOBS=${jobs:-1} \
        setsid -w bash "$SCRIPT" > "$OUT/stage$n.log" 2>&1 &
    pids+=($!)
done
running() { for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && return 0; done; return 1; }
while running; do
    if [ -n "${DEADLINE:-}" ] && [ $(($(date +%s) - T0)) -ge "$DEADLINE" ]; then
        echo "DEADLINE ($DEADLINE s): stopping the runs still going"
        for p in "${pids[@]}"; do kill -TERM -- "-$p" 2>/dev/null; done
        break
    fi
    sleep 5
done
kill $POLL 2>/dev/null
wait "${pids[@]}" 2>/dev/null
echo "elapsed $(($(date +%s) - T0)) s; finished runs:"
ls "$RESULTS_DIR/runs" | grep -v '^\.' | sed 's/^/  /'
# not the split (it came from here), checkpoints, or the progress files of runs the deadline stopped (100 MB
# each on ml-1m, and useless without their best-epoch checkpoints): such a run starts again where it runs next
tar czf "$OUT/results.tgz" --exclude=split --exclude=checkpoints --exclude=progress --exclude='runs/.*' "$RESULTS_DIR"
tar czf "$OUT/logs.tgz" log 2>/dev/null
for f in "$OUT"/stage*.log; do echo "== $f"; tail -n 6 "$f"; done
