#!/usr/bin/env bash
# The ml-100k-kg side-by-side comparison of docs/results.md: every model and ablation on one saved split,
# the paper's protocol, the same learning rate and epoch cap for every model (an equal budget of one
# configuration per model), seeds 2020-2022. Resumable: finished (model, seed) results are skipped.
#
#   DATA_PATH=../shared/datasets FEATURE_DIR=dataset/ml-100k-kg-features JOBS=1 bash benchmarks/run_comparison_ml100k.sh
#
# Variables: PYTHON (default .venv/bin/python), DATA_PATH, FEATURE_DIR (text_minilm / visual_colour_texture
# files from dataset_tools), SEEDS (2020,2021,2022), JOBS (runs at once; >1 shares the machine, e.g. one
# GPU), RESULTS_DIR (results/ml-100k-kg), LR (0.005), EPOCHS (60), STOP (10), EXTRA (more --key=value).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
DATA_PATH=${DATA_PATH:-../shared/datasets}
FEATURE_DIR=${FEATURE_DIR:-dataset/ml-100k-kg-features}
SEEDS=${SEEDS:-2020,2021,2022}
JOBS=${JOBS:-1}
RESULTS_DIR=${RESULTS_DIR:-results/ml-100k-kg}
LR=${LR:-0.005}
EPOCHS=${EPOCHS:-60}
STOP=${STOP:-10}
MODELS=${MODELS:-BPR,LightGCN,CKE,KGIN,KGAT,KGAT@kg-permuted,MultiKG4Rec,MultiKG4Rec@text,MultiKG4Rec@visual,MultiKG4Rec@oneway,MultiKG4Rec@no-cross,MultiKG4Rec@fast,MultiKG4Rec@kg-permuted,KGAT@light,MultiKG4Rec@light,KGAT@sampled,MultiKG4Rec@sampled,CrossGMMI,CrossGMMI@cross-kg,MKGAT}
C=benchmarks/configs
# CrossGMMI@cross-kg pre-trains InfoNCE between this KG (Freebase) and ml-100k-kg-dbpedia (same movies)
CROSS_KG="$RESULTS_DIR/crossgmmi_cross_kg.yaml"
mkdir -p "$RESULTS_DIR"
echo "pretrain_second_kg: $(cd "$DATA_PATH" && pwd)/ml-100k-kg-dbpedia" > "$CROSS_KG"
CONFIGS="KGAT@kg-permuted=$C/kg_permuted.yaml,MultiKG4Rec@text=$C/mkg_text.yaml,MultiKG4Rec@visual=$C/mkg_visual.yaml"
CONFIGS="$CONFIGS,MultiKG4Rec@oneway=$C/mkg_oneway.yaml,MultiKG4Rec@no-cross=$C/mkg_nocross.yaml"
CONFIGS="$CONFIGS,MultiKG4Rec@fast=$C/mkg_fast.yaml,MultiKG4Rec@kg-permuted=$C/kg_permuted.yaml,CrossGMMI@cross-kg=$CROSS_KG"
CONFIGS="$CONFIGS,KGAT@light=$C/light.yaml,MultiKG4Rec@light=$C/light.yaml"
CONFIGS="$CONFIGS,KGAT@sampled=$C/sampled.yaml,MultiKG4Rec@sampled=$C/sampled.yaml"
exec "$PYTHON" run_recbole_mkg.py --model="$MODELS" --dataset=ml-100k-kg --data_path="$DATA_PATH" \
    --feature_dir="$FEATURE_DIR" --protocol=paper --seeds="$SEEDS" --results_dir="$RESULTS_DIR" \
    --model_configs="$CONFIGS" --jobs="$JOBS" --learning_rate="$LR" --epochs="$EPOCHS" --stopping_step="$STOP" ${EXTRA:-}
