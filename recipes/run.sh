#!/usr/bin/env bash
# Admin recipes: one runner for every task, method, depth and seed.
#
#   recipes/run.sh [--dry-run] TASK METHOD LAYERS [STAGE]
#
#   TASK    iwslt14_de_en | wmt14_en_de | wmt14_en_fr | multi30k (= multi30k_de_en) | multi30k_en_de | multi30k_en_fr
#   METHOD  admin (Post-LN + Admin) | postln (Post-LN, ω = 1) | preln (Pre-LN) |
#           admin-closed-form | deepnorm | rezero (the comparators: --init-type of the same name, no profiling)
#   LAYERS  6, 18, 6-6, 60-12, 60L-12L, ... (encoder-decoder; one number means both)
#   STAGE   prepare | profile | train | eval | all (default)
#
# --dry-run prints every command the stage(s) would run, without running anything.
# Re-running skips finished steps (each step leaves its output or a marker only when it succeeded).
# Environment: ADMIN_WORK (data/checkpoints root, default <repo>/work), RESULTS_DIR (default <repo>/results),
# SEED (default 1111) or SEEDS ("1111 2222 3333 4444 5555": one run per seed, in turn; Admin profiles once,
# with PROFILE_SEED, default the first of SEEDS, else 1111, and every seed trains from that profile),
# PIPELINE (bpe: the paper's Moses + BPE, default for the paper's tasks | spm: joint sentencepiece, Multi30k's),
# NGPUS (GPUs per node; default: visible GPUs), NNODES / NODE_RANK / MASTER_ADDR / MASTER_PORT (multi-node),
# LAUNCHER (spawn | torchrun | slurm; default spawn on one node, torchrun on several, slurm inside a SLURM job),
# PRECISION (fp16 | bf16 | fp32; default fp16 on GPU), MAX_TOKENS (per GPU), MAX_EPOCH, MAX_UPDATE,
# TRAIN_ARGS / GENERATE_ARGS (extra fairseq-train / -generate flags), WORKERS_PREPARE (tokenizer processes),
# MULTI30K_DIR, MAX_TRAIN_PAIRS (Multi30k only: use the first N pairs), and each setting in recipes/TASK/config.sh.
# Logs: every fairseq-train / -generate keeps its whole output beside the run's checkpoints (profile.log,
# train.log, generate-test.log); TENSORBOARD_DIR=DIR adds --tensorboard-logdir DIR/RUN, WANDB_PROJECT=NAME --wandb-project NAME
# (pip install "fairseq-admin[wandb]"; the run is named after its save dir).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
TASKS="iwslt14_de_en wmt14_en_de wmt14_en_fr multi30k multi30k_de_en multi30k_en_de multi30k_en_fr"

usage() {
    sed -n '2,/^[^#]/{/^#/p}' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}
die() {
    echo "run.sh: error: $*" >&2
    exit 2
}

DRY_RUN=0
ARGS=()
for arg in "$@"; do
    case $arg in
        --dry-run) DRY_RUN=1 ;;
        -h | --help) usage; exit 0 ;;
        -*) die "unknown option $arg (see recipes/run.sh --help)" ;;
        *) ARGS+=("$arg") ;;
    esac
done
(( ${#ARGS[@]} >= 3 && ${#ARGS[@]} <= 4 )) || die "expected TASK METHOD LAYERS [STAGE], got '${ARGS[*]:-}' (see --help)"
TASK=${ARGS[0]} METHOD=${ARGS[1]} LAYERS=${ARGS[2]} STAGE=${ARGS[3]:-all}

case $TASK in
    iwslt14_de_en | wmt14_en_de | wmt14_en_fr) CONFIG_DIR=$HERE/$TASK ;;
    multi30k) TASK=multi30k_de_en; CONFIG_DIR=$HERE/multi30k ;;
    multi30k_de_en | multi30k_en_de | multi30k_en_fr) CONFIG_DIR=$HERE/multi30k ;;
    *) die "unknown task '$TASK'; one of: $TASKS" ;;
esac
case $METHOD in
    admin) INIT_TYPE=adaptive; NORM_ARGS=() ;;
    postln) INIT_TYPE=default; NORM_ARGS=() ;;
    preln) INIT_TYPE=default; NORM_ARGS=(--encoder-normalize-before --decoder-normalize-before) ;;
    admin-closed-form | deepnorm | rezero) INIT_TYPE=$METHOD; NORM_ARGS=() ;;
    *) die "unknown method '$METHOD'; one of: admin postln preln admin-closed-form deepnorm rezero" ;;
esac
case $STAGE in
    prepare | profile | train | eval | all) ;;
    *) die "unknown stage '$STAGE'; one of: prepare profile train eval all" ;;
esac
LAYER_SPEC=${LAYERS//[Ll]/}
if [[ $LAYER_SPEC =~ ^([0-9]+)-([0-9]+)$ ]]; then
    ENC_LAYERS=$((10#${BASH_REMATCH[1]})) DEC_LAYERS=$((10#${BASH_REMATCH[2]}))
elif [[ $LAYER_SPEC =~ ^[0-9]+$ ]]; then
    ENC_LAYERS=$((10#$LAYER_SPEC)) DEC_LAYERS=$((10#$LAYER_SPEC))
else
    die "LAYERS must look like 6, 18, 6-6 or 60L-12L, got '$LAYERS'"
fi
(( ENC_LAYERS > 0 && DEC_LAYERS > 0 )) || die "LAYERS must be at least 1, got '$LAYERS'"

MODEL_EXTRA_ARGS=() AVERAGE_ARGS=() ADMIN_ARGS=() PROFILE_ARGS=() SAVE_INTERVAL_UPDATES=${SAVE_INTERVAL_UPDATES:-}
RAW_DIR="" SPLITS="train=train,valid=valid,test=test" STOP_TIME_HOURS=${STOP_TIME_HOURS:-}
GENERATE_BATCH=(--max-tokens 8000) CLEAN_AFTER_BPE=""
# shellcheck source=/dev/null
source "$CONFIG_DIR/config.sh"
case $PIPELINE in
    bpe) [[ $TASK != multi30k_* ]] || die "PIPELINE=bpe is for the paper's tasks; Multi30k uses spm" ;;
    spm) ;;
    *) die "PIPELINE must be bpe or spm, got '$PIPELINE'" ;;
esac

# Our CLIs and fairseq's come from the repo's virtual environment when there is one.
if [[ -x $REPO/.venv/bin/fairseq-train ]]; then
    PATH=$REPO/.venv/bin:$PATH
fi

WORK=${ADMIN_WORK:-$REPO/work}
DATA_DIR=$WORK/data/$TASK
[[ $PIPELINE == spm && $TASK != multi30k_* ]] && DATA_DIR=$WORK/data/$TASK-spm
DATA_BIN=$DATA_DIR/bin
if [[ $PIPELINE == bpe ]]; then
    REFERENCE=$DATA_DIR/moses/test.raw.$TGT  # the untokenized newstest2014 / IWSLT references, for sacreBLEU
else
    REFERENCE=$DATA_DIR/text/test.raw.$TGT
fi
RUN_BASE=$TASK-$METHOD-${ENC_LAYERS}L-${DEC_LAYERS}L
RESULTS=${RESULTS_DIR:-$REPO/results}
USER_DIR=$REPO/fairseq_admin

# Seeds: SEEDS runs each in turn; SEED alone is one run. Every run's name, save dir and result carry its seed.
SEEDS_GIVEN=${SEEDS:-}
SEEDS=${SEEDS:-${SEED:-1111}}
read -r -a SEED_LIST <<<"$SEEDS"
(( ${#SEED_LIST[@]} > 0 )) || die "SEEDS is empty; give one or more integers, e.g. SEEDS=\"1111 2222\""
for seed in "${SEED_LIST[@]}"; do
    [[ $seed =~ ^[0-9]+$ ]] || die "seeds must be integers, got '$seed' in SEEDS=\"$SEEDS\""
done
# Admin profiles once, with PROFILE_SEED, and every seed's run starts from that profile (as the original did,
# with 1111). Default: the first of SEEDS, else 1111, so runs started one SEED at a time share it too.
if [[ -n ${SEEDS_GIVEN:-} ]]; then PROFILE_SEED=${PROFILE_SEED:-${SEED_LIST[0]}}; else PROFILE_SEED=${PROFILE_SEED:-1111}; fi
[[ $PROFILE_SEED =~ ^[0-9]+$ ]] || die "PROFILE_SEED must be an integer, got '$PROFILE_SEED'"
PROFILE_PATH=$WORK/checkpoints/$RUN_BASE-s$PROFILE_SEED/admin_profile.json

# Devices: NGPUS per node, else the GPUs CUDA_VISIBLE_DEVICES names, else what nvidia-smi lists, else none (CPU).
if [[ -z ${NGPUS:-} ]]; then
    if [[ -n ${CUDA_VISIBLE_DEVICES+set} ]]; then
        NGPUS=$(tr ',' '\n' <<<"$CUDA_VISIBLE_DEVICES" | grep -c '[^[:space:]]' || true)
    elif command -v nvidia-smi >/dev/null 2>&1; then
        NGPUS=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
    else
        NGPUS=0
    fi
fi
[[ $NGPUS =~ ^[0-9]+$ ]] || die "NGPUS must be a number, got '$NGPUS'"
FIRST_GPU=${CUDA_VISIBLE_DEVICES:-0}
FIRST_GPU=${FIRST_GPU%%,*}

# Nodes: NNODES machines with NGPUS GPUs each; node 0 also prepares, profiles and evaluates.
NNODES=${NNODES:-${SLURM_NNODES:-1}} NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-localhost} MASTER_PORT=${MASTER_PORT:-29500}
[[ $NNODES =~ ^[0-9]+$ ]] && (( NNODES >= 1 )) || die "NNODES must be a positive number, got '$NNODES'"
[[ $NODE_RANK =~ ^[0-9]+$ ]] && (( NODE_RANK < NNODES )) || die "NODE_RANK must be 0..$((NNODES - 1)), got '$NODE_RANK'"
[[ $MASTER_PORT =~ ^[0-9]+$ ]] || die "MASTER_PORT must be a port number, got '$MASTER_PORT'"
if [[ -z ${LAUNCHER:-} ]]; then
    if (( NNODES == 1 )); then LAUNCHER=spawn
    elif [[ -n ${SLURM_JOB_ID:-} ]]; then LAUNCHER=slurm
    else LAUNCHER=torchrun; fi
fi
case $LAUNCHER in
    spawn) (( NNODES == 1 )) || die "LAUNCHER=spawn runs on one node; use torchrun or slurm for NNODES=$NNODES" ;;
    torchrun | slurm) (( NGPUS > 0 )) || die "LAUNCHER=$LAUNCHER needs GPUs (NGPUS per node); none is visible" ;;
    *) die "LAUNCHER must be spawn, torchrun or slurm, got '$LAUNCHER'" ;;
esac

if (( NGPUS == 0 )); then
    WORKERS=1 DEVICE_ARGS=(--cpu) PRECISION=${PRECISION:-fp32}
else
    WORKERS=$(( NNODES * NGPUS )) DEVICE_ARGS=() PRECISION=${PRECISION:-fp16}
fi
case $PRECISION in
    fp16) PRECISION_ARGS=(--fp16 --fp16-scale-window 256 --threshold-loss-scale 0.03125) ;;
    bf16) PRECISION_ARGS=(--bf16) ;;
    fp32) PRECISION_ARGS=() ;;
    *) die "PRECISION must be fp16, bf16 or fp32, got '$PRECISION'" ;;
esac
(( NGPUS > 0 )) || [[ $PRECISION == fp32 ]] || die "PRECISION=$PRECISION needs a GPU; none is visible (set NGPUS)"

# The paper's effective batch over every GPU of every node: workers × max-tokens × update-freq =
# EFFECTIVE_TOKENS (exactly when the division works out, else the nearest batch below it).
batch_for_depth "$ENC_LAYERS" "$DEC_LAYERS"
UPDATE_FREQ=$(( (EFFECTIVE_TOKENS + WORKERS * MAX_TOKENS - 1) / (WORKERS * MAX_TOKENS) ))
TRAIN_MAX_TOKENS=$(( EFFECTIVE_TOKENS / (WORKERS * UPDATE_FREQ) ))

MODEL_ARGS=(--arch "$ARCH" --share-all-embeddings --encoder-layers "$ENC_LAYERS" --decoder-layers "$DEC_LAYERS"
            "${MODEL_EXTRA_ARGS[@]}" "${NORM_ARGS[@]}")
TRAIN_EXTRA=()
[[ -n ${MAX_UPDATE:-} ]] && TRAIN_EXTRA+=(--max-update "$MAX_UPDATE")
[[ -n ${STOP_TIME_HOURS:-} ]] && TRAIN_EXTRA+=(--stop-time-hours "$STOP_TIME_HOURS")
if [[ -n ${TRAIN_ARGS:-} ]]; then  # extra fairseq-train flags, split on spaces
    read -r -a EXTRA <<<"$TRAIN_ARGS"
    TRAIN_EXTRA+=("${EXTRA[@]}")
fi
# Average epoch checkpoints (the paper), or update checkpoints where a config saves every N updates.
AVERAGE_WHAT=(--num-epoch-checkpoints "$AVG_LAST" --checkpoint-upper-bound "$MAX_EPOCH") AVERAGED_WHAT="epoch"
if [[ -n ${SAVE_INTERVAL_UPDATES:-} && $SAVE_INTERVAL_UPDATES != 0 ]]; then
    TRAIN_EXTRA+=(--save-interval-updates "$SAVE_INTERVAL_UPDATES" --keep-interval-updates "$AVG_LAST")
    AVERAGE_WHAT=(--num-update-checkpoints "$AVG_LAST") AVERAGED_WHAT="update"
fi

# use_seed SEED: the run of that seed (RUN_NAME, SAVE_DIR, RESULT, COMMON_ARGS).
use_seed() {
    SEED=$1
    RUN_NAME=$RUN_BASE-s$SEED
    SAVE_DIR=$WORK/checkpoints/$RUN_NAME
    RESULT=$RESULTS/$RUN_NAME.json
    COMMON_ARGS=("$DATA_BIN" --user-dir "$USER_DIR" --source-lang "$SRC" --target-lang "$TGT" --save-dir "$SAVE_DIR"
                 --seed "$SEED" --log-format simple --log-interval 100 --keep-last-epochs "$AVG_LAST"
                 --optimizer radam --adam-betas "(0.9, 0.98)" --clip-norm 0.0 --lr "$LR" --lr-scheduler inverse_sqrt
                 --warmup-init-lr 1e-07 --warmup-updates "$WARMUP" --dropout "$DROPOUT" "${EXTRA_TRAIN_ARGS[@]}"
                 --criterion label_smoothed_cross_entropy --label-smoothing 0.1 --max-epoch "$MAX_EPOCH"
                 "${TRAIN_EXTRA[@]}")
}

# dashboards: fairseq's own TensorBoard / Weights & Biases flags for the current run, when asked for.
dashboards() {
    DASHBOARD_ARGS=()
    [[ -n ${TENSORBOARD_DIR:-} ]] && DASHBOARD_ARGS+=(--tensorboard-logdir "$TENSORBOARD_DIR/$RUN_NAME")
    [[ -n ${WANDB_PROJECT:-} ]] && DASHBOARD_ARGS+=(--wandb-project "$WANDB_PROJECT")
    return 0
}

# --- helpers -------------------------------------------------------------------------------------------

# show CMD...: print a command as a shell would read it back.
show() {
    local quoted
    printf -v quoted '%q ' "$@"
    echo "${quoted% }"
}

# run CMD...: print it; run it unless --dry-run. With LOG_TO set, its stdout and stderr also go to that file
# (appended; fairseq's own --log-file keeps only fairseq_cli.train's lines, not the training statistics).
LOG_TO=""
run() {
    show "$@"
    [[ -n $LOG_TO ]] && echo "# log: $LOG_TO"
    (( DRY_RUN )) && return 0
    if [[ -n $LOG_TO ]]; then
        mkdir -p "$(dirname "$LOG_TO")"
        "$@" 2>&1 | tee -a "$LOG_TO"
    else
        "$@"
    fi
}

# already_done PATH: the one skip rule of every step. A step's output (or its marker) appears only when the
# step succeeded, so when PATH exists the step is done: say so and succeed. A dry run never skips.
already_done() {
    (( ! DRY_RUN )) && [[ -e $1 ]] || return 1
    echo "# done: $1"
}

# done_or_run OUTPUT CMD...: run CMD unless OUTPUT exists.
done_or_run() {
    already_done "$1" && return 0
    shift
    run "$@"
}

# marked MARKER CMD...: run CMD unless MARKER exists; create MARKER only once CMD succeeded.
marked() {
    local marker=$1
    shift
    already_done "$marker" && return 0
    run "$@"
    (( DRY_RUN )) || { mkdir -p "$(dirname "$marker")" && touch "$marker"; }
}

# download URL FILE: to FILE.part, renamed when complete (curl resumes a partial download).
download() {
    local url=$1 file=$2
    already_done "$file" && return 0
    (( DRY_RUN )) || mkdir -p "$(dirname "$file")"
    run curl -fL --retry 3 -C - -o "$file.part" "$url"
    run mv "$file.part" "$file"
}

# extract ARCHIVE DIR: unpack into DIR; a marker records a complete extraction.
extract() {
    local archive=$1 dir=$2
    (( DRY_RUN )) || mkdir -p "$dir"
    marked "$dir/.extracted.$(basename "$archive")" tar -xf "$archive" -C "$dir"
}

# --- stages --------------------------------------------------------------------------------------------

stage_prepare() {
    local downloads=$WORK/downloads
    local workers=${WORKERS_PREPARE:-8}
    case $TASK in
        multi30k_*)
            echo "# prepare: $TASK ($SRC -> $TGT), joint sentencepiece $SPM_VOCAB -> $DATA_BIN"
            local limit=()
            [[ -n ${MAX_TRAIN_PAIRS:-} ]] && limit=(--max-train-pairs "$MAX_TRAIN_PAIRS")
            if (( ! DRY_RUN )) && [[ ! -d $RAW_DIR ]]; then
                die "Multi30k not found at $RAW_DIR; set MULTI30K_DIR to the directory with train.$SRC.gz etc."
            fi
            run fairseq-admin-prepare --raw-dir "$RAW_DIR" --dest "$DATA_DIR" --src "$SRC" --tgt "$TGT" \
                --vocab-size "$SPM_VOCAB" --splits "$SPLITS" "${limit[@]}"
            return
            ;;
    esac
    echo "# prepare: $TASK ($SRC -> $TGT), pipeline $PIPELINE -> $DATA_BIN"
    # The archives of the original's pre-process/*.sh, unpacked where those scripts unpack them.
    local i
    for i in "${!FILES[@]}"; do
        download "${URLS[$i]}" "$downloads/$DOWNLOAD_DIR/${FILES[$i]}"
        extract "$downloads/$DOWNLOAD_DIR/${FILES[$i]}" "$downloads/$DOWNLOAD_DIR"
    done
    if [[ $PIPELINE == bpe ]]; then
        # Moses normalization / tokenization / cleaning as the original, then joint BPE + fairseq-preprocess.
        run fairseq-admin-corpus "$TASK" --pipeline moses --downloads "$downloads/$DOWNLOAD_DIR" \
            --dest "$DATA_DIR/moses" --workers "$workers"
        local clean=()
        [[ -n $CLEAN_AFTER_BPE ]] && clean=(--clean-after-bpe "$CLEAN_AFTER_BPE")
        run fairseq-admin-prepare --pipeline bpe --raw-dir "$DATA_DIR/moses" --dest "$DATA_DIR" --src "$SRC" \
            --tgt "$TGT" --bpe-merges "$BPE_MERGES" --splits "$SPLITS" "${clean[@]}" --workers "$workers"
    else
        run fairseq-admin-corpus "$TASK" --pipeline raw --downloads "$downloads/$DOWNLOAD_DIR" --dest "$DATA_DIR/raw"
        run fairseq-admin-prepare --pipeline spm --raw-dir "$DATA_DIR/raw" --dest "$DATA_DIR" --src "$SRC" \
            --tgt "$TGT" --vocab-size "$SPM_VOCAB" --splits "$SPLITS" --spm-sentences 10000000 --workers "$workers"
    fi
}

stage_profile() {
    if [[ $METHOD != admin ]]; then
        echo "# profile: nothing to do for $METHOD (only Admin profiles)"
        return
    fi
    use_seed "$PROFILE_SEED"
    echo "# profile: $RUN_BASE with seed $PROFILE_SEED on one device, fp32 -> $PROFILE_PATH (used by every seed)"
    local env_prefix=() device=(--cpu)
    if (( NGPUS > 0 )); then
        env_prefix=(env "CUDA_VISIBLE_DEVICES=$FIRST_GPU")
        device=(--distributed-world-size 1)
    fi
    LOG_TO=$(dirname "$PROFILE_PATH")/profile.log done_or_run "$PROFILE_PATH" "${env_prefix[@]}" fairseq-train \
        "${COMMON_ARGS[@]}" "${MODEL_ARGS[@]}" --max-tokens "$MAX_TOKENS" --init-type adaptive-profiling \
        --admin-profile "$PROFILE_PATH" "${ADMIN_ARGS[@]}" "${PROFILE_ARGS[@]}" "${device[@]}"
}

# The training launcher: fairseq's own spawn on one node; torchrun (every node runs this script with its
# NODE_RANK) or srun (SLURM; this script runs once, srun starts NGPUS tasks per node) on several.
launcher() {
    LAUNCH=() LAUNCH_ARGS=()
    (( NGPUS > 0 )) && LAUNCH_ARGS=(--distributed-world-size "$WORKERS")
    case $LAUNCHER in
        torchrun)
            LAUNCH=(torchrun --nnodes "$NNODES" --nproc-per-node "$NGPUS" --node-rank "$NODE_RANK"
                    --master-addr "$MASTER_ADDR" --master-port "$MASTER_PORT" --no-python) ;;
        slurm)
            LAUNCH=(srun --nodes "$NNODES" --ntasks-per-node "$NGPUS" --kill-on-bad-exit=1)
            LAUNCH_ARGS+=(--distributed-port "$MASTER_PORT") ;;
    esac
}

stage_train() {
    local profile=()
    [[ $METHOD == admin ]] && profile=(--admin-profile "$PROFILE_PATH" "${ADMIN_ARGS[@]}")
    echo "# train: $RUN_NAME, --init-type $INIT_TYPE, $WORKERS worker(s) ($NNODES node(s), $LAUNCHER) x" \
         "$TRAIN_MAX_TOKENS tokens x update-freq $UPDATE_FREQ = $((WORKERS * TRAIN_MAX_TOKENS * UPDATE_FREQ))" \
         "tokens per update (paper: $EFFECTIVE_TOKENS), $PRECISION"
    launcher
    dashboards
    local log=$SAVE_DIR/train.log
    (( NODE_RANK == 0 )) || log=$SAVE_DIR/train.node$NODE_RANK.log  # a save dir that nodes share: one log each
    LOG_TO=$log marked "$SAVE_DIR/train.done" "${LAUNCH[@]}" fairseq-train "${COMMON_ARGS[@]}" "${MODEL_ARGS[@]}" \
        --init-type "$INIT_TYPE" "${profile[@]}" --max-tokens "$TRAIN_MAX_TOKENS" --update-freq "$UPDATE_FREQ" \
        "${PRECISION_ARGS[@]}" "${DEVICE_ARGS[@]}" "${LAUNCH_ARGS[@]}" "${DASHBOARD_ARGS[@]}"
}

stage_eval() {
    local averaged=$SAVE_DIR/checkpoint.avg$AVG_LAST.pt
    echo "# eval: average the last $AVG_LAST $AVERAGED_WHAT checkpoints, beam $BEAM, lenpen $LENPEN -> $RESULT"
    done_or_run "$averaged" fairseq-admin-average --inputs "$SAVE_DIR" "${AVERAGE_WHAT[@]}" \
        "${AVERAGE_ARGS[@]}" --output "$averaged"
    local score_args=() generate_device=(--cpu) extra=() remove_bpe=(--remove-bpe sentencepiece)
    # GENERATE_ARGS: extra fairseq-generate flags, split on spaces (e.g. "--max-len-b 20" for smoke tests).
    [[ -n ${GENERATE_ARGS:-} ]] && read -r -a extra <<<"$GENERATE_ARGS"
    if [[ $PIPELINE == bpe ]]; then
        # The paper's figure: fairseq-generate's BLEU on Moses tokens, BPE removed; plus sacreBLEU on detokenized text.
        score_args=(--moses-lang "$TGT")
        remove_bpe=(--remove-bpe)
    else
        (( COMPOUND_SPLIT )) && score_args+=(--compound-split)
    fi
    (( SACREBLEU_LOWERCASE )) && score_args+=(--lowercase)
    (( NGPUS > 0 )) && generate_device=("${PRECISION_ARGS[@]:0:1}")
    done_or_run "$RESULT" fairseq-admin-evaluate --output "$RESULT" --reference "$REFERENCE" \
        --name "$RUN_NAME" --generate-log "$SAVE_DIR/generate-test.log" "${score_args[@]}" -- \
        "$DATA_BIN" --user-dir "$USER_DIR" --path "$averaged" --source-lang "$SRC" --target-lang "$TGT" \
        --gen-subset test --beam "$BEAM" --lenpen "$LENPEN" "${GENERATE_BATCH[@]}" "${remove_bpe[@]}" \
        --seed "$SEED" "${generate_device[@]}" "${extra[@]}"
}

# Node 0 prepares, profiles and evaluates (on a file system every node shares); the others only train.
on_node0() {
    if (( NODE_RANK > 0 )); then
        echo "# $1: node 0's job (this is node $NODE_RANK)"
        return
    fi
    "stage_$1"
}

case $STAGE in
    all)
        on_node0 prepare
        on_node0 profile
        for seed in "${SEED_LIST[@]}"; do
            use_seed "$seed"
            stage_train
            on_node0 eval
        done
        ;;
    prepare | profile) on_node0 "$STAGE" ;;
    train | eval)
        for seed in "${SEED_LIST[@]}"; do
            use_seed "$seed"
            if [[ $STAGE == train ]]; then stage_train; else on_node0 eval; fi
        done
        ;;
esac
