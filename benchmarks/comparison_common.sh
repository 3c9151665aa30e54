# Sourced by benchmarks/run_comparison_<dataset>.sh (not run on its own): the defaults the comparisons
# share, every variant's config file, and the two budgets.
#
# Variables: PYTHON (.venv/bin/python), DATA_PATH (../shared/datasets), FEATURE_DIR, SEEDS (2020,2021,2022),
# JOBS (runs at once; >1 shares the machine), MODELS, RESULTS_DIR, EPOCHS (the cap of every run or trial),
# STOP (early stopping patience, 10), EXTRA (more --key=value), and the budget:
#   * one configuration per model (default): LR (0.005) for every model, each model's own defaults otherwise;
#   * TUNE=benchmarks/spaces: the equal tuning budget, NUM_SAMPLES (4) trials x EPOCHS per model on the
#     validation split (ASHA), then every model's best configuration with SEEDS; CPUS_PER_TRIAL (1),
#     GPUS_PER_TRIAL (0), RAY_ADDRESS (join a cluster), SAMPLER (stratified by default, or random),
#     GRACE_PERIOD (ASHA's epochs before a trial may be stopped; 1 by default; recorded per sweep, and a
#     folder whose sweeps differ in it is marked NOT EQUAL under its table).
#     LR is not passed: the sweep picks it.
# CROSSGMMI_PRETRAINED: a CrossGMMI phase-1 file (made once by --train_stage=pretrain, docs/results.md);
# CrossGMMI's sweep trials and seeds then fine-tune from it (train_stage: finetune) instead of each
# pre-training anew: phase 1 is untuned and identical in every one of them, and costs twice phase 2 on CPU.
PYTHON=${PYTHON:-.venv/bin/python}
DATA_PATH=${DATA_PATH:-../shared/datasets}
SEEDS=${SEEDS:-2020,2021,2022}
JOBS=${JOBS:-1}
LR=${LR:-0.005}
STOP=${STOP:-10}
C=benchmarks/configs
# Model@label -> its config file (ablations, the KG-permutation control, options beyond the papers)
VARIANT_CONFIGS="KGAT@kg-permuted=$C/kg_permuted.yaml,MultiKG4Rec@kg-permuted=$C/kg_permuted.yaml"
VARIANT_CONFIGS="$VARIANT_CONFIGS,MultiKG4Rec@text=$C/mkg_text.yaml,MultiKG4Rec@visual=$C/mkg_visual.yaml"
VARIANT_CONFIGS="$VARIANT_CONFIGS,MultiKG4Rec@oneway=$C/mkg_oneway.yaml,MultiKG4Rec@no-cross=$C/mkg_nocross.yaml"
VARIANT_CONFIGS="$VARIANT_CONFIGS,MultiKG4Rec@none=$C/mkg_none.yaml,MultiKG4Rec@fusion-add=$C/mkg_fusion_add.yaml"
VARIANT_CONFIGS="$VARIANT_CONFIGS,MultiKG4Rec@fusion-gated=$C/mkg_fusion_gated.yaml,MultiKG4Rec@no-transformer=$C/mkg_no_transformer.yaml"
VARIANT_CONFIGS="$VARIANT_CONFIGS,MultiKG4Rec@fast=$C/mkg_fast.yaml,KGAT@light=$C/light.yaml,MultiKG4Rec@light=$C/light.yaml"
VARIANT_CONFIGS="$VARIANT_CONFIGS,KGAT@sampled=$C/sampled.yaml,MultiKG4Rec@sampled=$C/sampled.yaml"
VARIANT_CONFIGS="$VARIANT_CONFIGS,KGAT@ui-light=$C/ui_light.yaml,MultiKG4Rec@ui-light=$C/ui_light.yaml"
VARIANT_CONFIGS="$VARIANT_CONFIGS,MultiKG4Rec@text-ui-light=$C/mkg_text.yaml $C/ui_light.yaml"
VARIANT_CONFIGS="$VARIANT_CONFIGS,KGAT@ui-light-kg-permuted=$C/ui_light.yaml $C/kg_permuted.yaml"
VARIANT_CONFIGS="$VARIANT_CONFIGS,MultiKG4Rec@text-ui-light-kg-permuted=$C/mkg_text.yaml $C/ui_light.yaml $C/kg_permuted.yaml"

# run_comparison DATASET [more run_recbole_mkg.py flags]: the side-by-side runner with the variables above
run_comparison() {
    local dataset=$1
    shift
    local budget=(--learning_rate="$LR") variants=$VARIANT_CONFIGS
    if [ -n "${CROSSGMMI_PRETRAINED:-}" ]; then
        if [ ! -f "$CROSSGMMI_PRETRAINED" ]; then
            echo "CROSSGMMI_PRETRAINED: no file $CROSSGMMI_PRETRAINED (make it with run_recbole_mkg.py" \
                 "--model=CrossGMMI --train_stage=pretrain --pretrain_save_path=<file>)" >&2
            return 2
        fi
        mkdir -p "$RESULTS_DIR"
        local finetune="$RESULTS_DIR/crossgmmi_finetune.yaml"
        printf 'train_stage: finetune\npretrained_path: %s\n' "$(realpath "$CROSSGMMI_PRETRAINED")" > "$finetune"
        variants="$variants,CrossGMMI=$finetune"
    fi
    if [ -n "${TUNE:-}" ]; then
        budget=(--tune="$TUNE" --num_samples="${NUM_SAMPLES:-4}" --cpus_per_trial="${CPUS_PER_TRIAL:-1}"
                --gpus_per_trial="${GPUS_PER_TRIAL:-0}")
        if [ -n "${RAY_ADDRESS:-}" ]; then budget+=(--ray_address="$RAY_ADDRESS"); fi
        if [ -n "${SAMPLER:-}" ]; then budget+=(--sampler="$SAMPLER"); fi
        if [ -n "${GRACE_PERIOD:-}" ]; then budget+=(--grace_period="$GRACE_PERIOD"); fi
    fi
    # shellcheck disable=SC2086  # EXTRA is a list of flags
    exec "$PYTHON" run_recbole_mkg.py --model="$MODELS" --dataset="$dataset" --data_path="$DATA_PATH" \
        --feature_dir="$FEATURE_DIR" --protocol=paper --seeds="$SEEDS" --results_dir="$RESULTS_DIR" \
        --model_configs="$variants" --jobs="$JOBS" --epochs="$EPOCHS" --stopping_step="$STOP" \
        "${budget[@]}" "$@" ${EXTRA:-}
}
