#!/usr/bin/env bash
# Pack what a GPU machine *without* package-registry access and without ../shared needs to run a side-by-side
# comparison (scripts/offline_gpu_run.sh runs it there). The machine must have Python, torch, numpy, scipy,
# torch-geometric, pyyaml, tqdm, tensorboard, psutil, colorama and tabulate (a typical CUDA image does).
#
#   bash scripts/offline_gpu_bundle.sh ml-1m-kg results/ml-1m-kg-e10-gpu dataset/ml-1m-kg-features
#
# Arguments: DATASET RESULTS_DIR FEATURE_DIR. Variables: DATA_PATH (../shared/datasets), BUNDLE (offline_bundle),
# PY_VERSION (3.12: the GPU machine's Python; wheels are fetched for x86-64 Linux), PYTHON (.venv/bin/python).
# Writes $BUNDLE/wheels (recbole 1.2.1 and the small packages it needs that such images lack; pandas 2.x with
# pytz and tzdata, installed there only when its own pandas is 3.x, which RecBole 1.2.1 does not run on) and
# $BUNDLE/data.tar.xz: RESULTS_DIR's saved split (made here first, with the paper protocol, when missing; the
# runs there then use exactly this split) and the feature files. Nothing of ../shared is copied except the
# split's interaction/KG/link files, so keep the bundle off public places (the data's licences).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -ne 3 ]; then
    sed -n '2,14p' "$0" >&2
    exit 2
fi
DATASET=$1 RESULTS_DIR=$2 FEATURE_DIR=$3
DATA_PATH=${DATA_PATH:-../shared/datasets} BUNDLE=${BUNDLE:-offline_bundle} PY_VERSION=${PY_VERSION:-3.12}
PYTHON=${PYTHON:-.venv/bin/python}
[ -d "$FEATURE_DIR" ] || { echo "FEATURE_DIR: no folder $FEATURE_DIR (make it with python -m dataset_tools extract-features)" >&2; exit 2; }
mkdir -p "$BUNDLE/wheels" "$BUNDLE/wheels/pandas2"
"$PYTHON" run_recbole_mkg.py --split_only --dataset="$DATASET" --data_path="$DATA_PATH" --protocol=paper \
    --results_dir="$RESULTS_DIR"
download() {  # folder, requirement...
    local dest=$1
    shift
    "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version "$PY_VERSION" --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$dest" "$@"
}
download "$BUNDLE/wheels" recbole==1.2.1 colorlog texttable thop
download "$BUNDLE/wheels/pandas2" "pandas>=2.2,<3" pytz tzdata
split="$RESULTS_DIR/split/$DATASET"
# the split's own files (the folder also links to the source dataset's other files: those stay here)
files=("$RESULTS_DIR/split.json")
while IFS= read -r f; do files+=("$f"); done < <(find "$split" -maxdepth 1 -type f | sort)
while IFS= read -r f; do files+=("$f"); done < <(find "$FEATURE_DIR" -maxdepth 1 -type f -name "$DATASET.*" | sort)
tar cJf "$BUNDLE/data.tar.xz" "${files[@]}"
printf 'DATASET=%s\nRESULTS_DIR=%s\nFEATURE_DIR=%s\n' "$DATASET" "$RESULTS_DIR" "$FEATURE_DIR" > "$BUNDLE/bundle.env"
du -sh "$BUNDLE"/* | sed 's/^/  /'
echo "bundle ready: $BUNDLE (copy it into the repository there, then: bash scripts/offline_gpu_run.sh)"
