#!/usr/bin/env bash
# The ml-1m-kg side-by-side comparison of docs/results.md: the paper's protocol on one saved split, the
# same epoch cap for every model (an equal *epoch budget*, stated with the table), DBpedia's
# dbo:wikiPageWikiLink dropped (the dataset config's default). Resumable: finished (model, seed) results
# are skipped, so MODELS/SEEDS can be filled up over several sittings.
#
#   EPOCHS=3 bash benchmarks/run_comparison_ml1m.sh
#
# Features (text_minilm / visual_colour_texture files) come from dataset_tools (docs/dataset_tools.md):
#   python -m dataset_tools extract-features ../shared/datasets/ml-1m-kg --modality text --text-encoder \
#       --item-name-fallback --suffix text_minilm.feat --out-dir dataset/ml-1m-kg-features --device cpu
#   python -m dataset_tools extract-features ../shared/datasets/ml-1m-kg --modality visual \
#       --visual-encoder colour-texture --suffix visual_colour_texture.feat --out-dir dataset/ml-1m-kg-features
#
# Variables (and the tuned budget, TUNE=benchmarks/spaces): benchmarks/comparison_common.sh. Here:
# FEATURE_DIR (dataset/ml-1m-kg-features), EPOCHS (3: what 2 CPU cores allow; on a GPU use more and say
# so), RESULTS_DIR (results/ml-1m-kg-e$EPOCHS, or results/ml-1m-kg-tuned-e$EPOCHS with TUNE).
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/comparison_common.sh
FEATURE_DIR=${FEATURE_DIR:-dataset/ml-1m-kg-features}
EPOCHS=${EPOCHS:-3}
RESULTS_DIR=${RESULTS_DIR:-results/ml-1m-kg-${TUNE:+tuned-}e$EPOCHS}
MODELS=${MODELS:-BPR,LightGCN,KGAT,KGAT@kg-permuted,MultiKG4Rec,MultiKG4Rec@text,MultiKG4Rec@kg-permuted}
run_comparison ml-1m-kg
