#!/usr/bin/env bash
# The ml-100k-kg side-by-side comparison of docs/results.md: every model and ablation on one saved split,
# the paper's protocol, seeds 2020-2022. Resumable: finished sweeps and (model, seed) results are skipped.
#
#   EPOCHS=40 bash benchmarks/run_comparison_ml100k.sh                         # one configuration per model
#   TUNE=benchmarks/spaces NUM_SAMPLES=4 EPOCHS=20 JOBS=2 MODELS=BPR,LightGCN,CKE,KGAT,MultiKG4Rec \
#       bash benchmarks/run_comparison_ml100k.sh                               # the equal tuning budget
#
# Variables (and the two budgets): benchmarks/comparison_common.sh. Here: FEATURE_DIR
# (dataset/ml-100k-kg-features: text_minilm / visual_colour_texture files, docs/dataset_tools.md),
# RESULTS_DIR (results/ml-100k-kg, or results/ml-100k-kg-tuned-e$EPOCHS with TUNE), EPOCHS (60).
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/comparison_common.sh
FEATURE_DIR=${FEATURE_DIR:-dataset/ml-100k-kg-features}
EPOCHS=${EPOCHS:-60}
RESULTS_DIR=${RESULTS_DIR:-results/ml-100k-kg${TUNE:+-tuned-e$EPOCHS}}
MODELS=${MODELS:-BPR,LightGCN,CKE,KGIN,KGAT,KGAT@kg-permuted,MultiKG4Rec,MultiKG4Rec@text,MultiKG4Rec@visual,MultiKG4Rec@oneway,MultiKG4Rec@no-cross,MultiKG4Rec@fast,MultiKG4Rec@kg-permuted,KGAT@light,MultiKG4Rec@light,KGAT@ui-light,MultiKG4Rec@ui-light,MultiKG4Rec@text-ui-light,KGAT@ui-light-kg-permuted,MultiKG4Rec@text-ui-light-kg-permuted,KGAT@sampled,MultiKG4Rec@sampled,CrossGMMI,CrossGMMI@cross-kg,MKGAT}
# CrossGMMI@cross-kg pre-trains InfoNCE between this KG (Freebase) and ml-100k-kg-dbpedia (same movies)
CROSS_KG="$RESULTS_DIR/crossgmmi_cross_kg.yaml"
mkdir -p "$RESULTS_DIR"
# (its own phase 1 even where CROSSGMMI_PRETRAINED gives the base model a shared one)
printf 'pretrain_second_kg: %s\ntrain_stage: pretrain_finetune\npretrained_path: ~\n' \
    "$(cd "$DATA_PATH" && pwd)/ml-100k-kg-dbpedia" > "$CROSS_KG"
VARIANT_CONFIGS="$VARIANT_CONFIGS,CrossGMMI@cross-kg=$CROSS_KG"
run_comparison ml-100k-kg
