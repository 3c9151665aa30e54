#!/usr/bin/env bash
# The ml-1m-kg side-by-side comparison of docs/results.md: the paper's protocol on one saved split, the
# same learning rate and the same epoch cap for every model (an equal *epoch budget*, stated with the
# table), DBpedia's dbo:wikiPageWikiLink dropped (the dataset config's default). Resumable: finished
# (model, seed) results are skipped, so MODELS/SEEDS can be filled up over several sittings.
#
#   DATA_PATH=../shared/datasets FEATURE_DIR=dataset/ml-1m-kg-features EPOCHS=3 bash benchmarks/run_comparison_ml1m.sh
#
# Features (text_minilm / visual_colour_texture files) come from dataset_tools (docs/dataset_tools.md):
#   python -m dataset_tools extract-features ../shared/datasets/ml-1m-kg --modality text --text-encoder \
#       --item-name-fallback --suffix text_minilm.feat --out-dir dataset/ml-1m-kg-features --device cpu
#   python -m dataset_tools extract-features ../shared/datasets/ml-1m-kg --modality visual \
#       --visual-encoder colour-texture --suffix visual_colour_texture.feat --out-dir dataset/ml-1m-kg-features
#
# Variables: PYTHON (default .venv/bin/python), DATA_PATH, FEATURE_DIR, SEEDS (2020,2021,2022), JOBS (runs
# at once), RESULTS_DIR (results/ml-1m-kg-e$EPOCHS), LR (0.005), EPOCHS (3: what 2 CPU cores allow; on a
# GPU use more and say so), STOP (10), MODELS, EXTRA (more --key=value).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
DATA_PATH=${DATA_PATH:-../shared/datasets}
FEATURE_DIR=${FEATURE_DIR:-dataset/ml-1m-kg-features}
SEEDS=${SEEDS:-2020,2021,2022}
JOBS=${JOBS:-1}
EPOCHS=${EPOCHS:-3}
RESULTS_DIR=${RESULTS_DIR:-results/ml-1m-kg-e$EPOCHS}
LR=${LR:-0.005}
STOP=${STOP:-10}
MODELS=${MODELS:-BPR,LightGCN,KGAT,KGAT@kg-permuted,MultiKG4Rec,MultiKG4Rec@text,MultiKG4Rec@kg-permuted}
C=benchmarks/configs
CONFIGS="KGAT@kg-permuted=$C/kg_permuted.yaml,MultiKG4Rec@text=$C/mkg_text.yaml,MultiKG4Rec@kg-permuted=$C/kg_permuted.yaml"
exec "$PYTHON" run_recbole_mkg.py --model="$MODELS" --dataset=ml-1m-kg --data_path="$DATA_PATH" \
    --feature_dir="$FEATURE_DIR" --protocol=paper --seeds="$SEEDS" --results_dir="$RESULTS_DIR" \
    --model_configs="$CONFIGS" --jobs="$JOBS" --learning_rate="$LR" --epochs="$EPOCHS" --stopping_step="$STOP" ${EXTRA:-}
