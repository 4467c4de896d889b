#!/usr/bin/env bash
# Admin recipes: one runner for every task, method and depth.
#
#   recipes/run.sh [--dry-run] TASK METHOD LAYERS [STAGE]
#
#   TASK    iwslt14_de_en | wmt14_en_de | wmt14_en_fr | multi30k (= multi30k_de_en) | multi30k_en_de | multi30k_en_fr
#   METHOD  admin (Post-LN + Admin) | postln (Post-LN, ω = 1) | preln (Pre-LN)
#   LAYERS  6, 18, 6-6, 60-12, 60L-12L, ... (encoder-decoder; one number means both)
#   STAGE   prepare | profile | train | eval | all (default)
#
# --dry-run prints every command the stage(s) would run, without running anything.
# Re-running skips finished steps (each step leaves its output or a marker only when it succeeded).
# Environment: ADMIN_WORK (data/checkpoints root, default <repo>/work), RESULTS_DIR (default <repo>/results),
# NGPUS (default: visible GPUs), PRECISION (fp16 | bf16 | fp32; default fp16 on GPU), MAX_TOKENS (per GPU),
# MAX_EPOCH, MAX_UPDATE, SEED, TRAIN_ARGS / GENERATE_ARGS (extra fairseq-train / -generate flags), MULTI30K_DIR,
# MAX_TRAIN_PAIRS (Multi30k only: use the first N pairs), and each hyper-parameter in recipes/TASK/config.sh.
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
    *) die "unknown method '$METHOD'; one of: admin postln preln" ;;
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

MODEL_EXTRA_ARGS=() AVERAGE_ARGS=() SAVE_INTERVAL_UPDATES=${SAVE_INTERVAL_UPDATES:-}
RAW_DIR="" SPLITS="train=train,valid=valid,test=test" STOP_TIME_HOURS=${STOP_TIME_HOURS:-}
# shellcheck source=/dev/null
source "$CONFIG_DIR/config.sh"

# Our CLIs and fairseq's come from the repo's virtual environment when there is one.
if [[ -x $REPO/.venv/bin/fairseq-train ]]; then
    PATH=$REPO/.venv/bin:$PATH
fi

WORK=${ADMIN_WORK:-$REPO/work}
DATA_DIR=$WORK/data/$TASK
DATA_BIN=$DATA_DIR/bin
RUN_NAME=$TASK-$METHOD-${ENC_LAYERS}L-${DEC_LAYERS}L
SAVE_DIR=$WORK/checkpoints/$RUN_NAME
RESULT=${RESULTS_DIR:-$REPO/results}/$RUN_NAME.json
SEED=${SEED:-1111}
USER_DIR=$REPO/fairseq_admin

# Devices: NGPUS, else the GPUs CUDA_VISIBLE_DEVICES names, else what nvidia-smi lists, else none (CPU).
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
if (( NGPUS == 0 )); then
    WORKERS=1 DEVICE_ARGS=(--cpu) PRECISION=${PRECISION:-fp32}
else
    WORKERS=$NGPUS DEVICE_ARGS=() PRECISION=${PRECISION:-fp16}
fi
case $PRECISION in
    fp16) PRECISION_ARGS=(--fp16 --fp16-scale-window 256 --threshold-loss-scale 0.03125) ;;
    bf16) PRECISION_ARGS=(--bf16) ;;
    fp32) PRECISION_ARGS=() ;;
    *) die "PRECISION must be fp16, bf16 or fp32, got '$PRECISION'" ;;
esac
(( NGPUS > 0 )) || [[ $PRECISION == fp32 ]] || die "PRECISION=$PRECISION needs a GPU; none is visible (set NGPUS)"

# The paper's effective batch, whatever the GPU count: workers × max-tokens × update-freq = EFFECTIVE_TOKENS
# (exactly when the division works out, else the nearest batch below it).
batch_for_depth "$ENC_LAYERS" "$DEC_LAYERS"
UPDATE_FREQ=$(( (EFFECTIVE_TOKENS + WORKERS * MAX_TOKENS - 1) / (WORKERS * MAX_TOKENS) ))
TRAIN_MAX_TOKENS=$(( EFFECTIVE_TOKENS / (WORKERS * UPDATE_FREQ) ))

MODEL_ARGS=(--arch "$ARCH" --share-all-embeddings --encoder-layers "$ENC_LAYERS" --decoder-layers "$DEC_LAYERS"
            "${MODEL_EXTRA_ARGS[@]}" "${NORM_ARGS[@]}")
COMMON_ARGS=("$DATA_BIN" --user-dir "$USER_DIR" --source-lang "$SRC" --target-lang "$TGT" --save-dir "$SAVE_DIR"
             --seed "$SEED" --log-format simple --log-interval 100 --keep-last-epochs "$AVG_LAST"
             --optimizer radam --adam-betas "(0.9, 0.98)" --clip-norm 0.0 --lr "$LR" --lr-scheduler inverse_sqrt
             --warmup-init-lr 1e-07 --warmup-updates "$WARMUP" --dropout "$DROPOUT" "${EXTRA_TRAIN_ARGS[@]}"
             --criterion label_smoothed_cross_entropy --label-smoothing 0.1 --max-epoch "$MAX_EPOCH")
[[ -n ${MAX_UPDATE:-} ]] && COMMON_ARGS+=(--max-update "$MAX_UPDATE")
[[ -n ${STOP_TIME_HOURS:-} ]] && COMMON_ARGS+=(--stop-time-hours "$STOP_TIME_HOURS")
if [[ -n ${TRAIN_ARGS:-} ]]; then  # extra fairseq-train flags, split on spaces
    read -r -a EXTRA <<<"$TRAIN_ARGS"
    COMMON_ARGS+=("${EXTRA[@]}")
fi
# Average epoch checkpoints (the paper), or update checkpoints where a config saves every N updates.
AVERAGE_WHAT=(--num-epoch-checkpoints "$AVG_LAST") AVERAGED_WHAT="epoch"
if [[ -n ${SAVE_INTERVAL_UPDATES:-} ]]; then
    COMMON_ARGS+=(--save-interval-updates "$SAVE_INTERVAL_UPDATES" --keep-interval-updates "$AVG_LAST")
    AVERAGE_WHAT=(--num-update-checkpoints "$AVG_LAST") AVERAGED_WHAT="update"
fi

# --- helpers -------------------------------------------------------------------------------------------

show() {
    local out="" word
    for word in "$@"; do
        if [[ $word =~ ^[A-Za-z0-9_./:=,+@%-]+$ ]]; then
            out+="$word "
        else
            out+="'${word//\'/\'\\\'\'}' "
        fi
    done
    echo "${out% }"
}

# run CMD...: print it; run it unless --dry-run.
run() {
    show "$@"
    (( DRY_RUN )) || "$@"
}

# done_or_run OUTPUT CMD...: skip when OUTPUT exists (a step's output appears only when the step succeeded).
done_or_run() {
    local output=$1
    shift
    if (( ! DRY_RUN )) && [[ -e $output ]]; then
        echo "# done: $output"
        return 0
    fi
    run "$@"
}

# marked MARKER CMD...: run CMD unless MARKER exists; create MARKER only once CMD succeeded.
marked() {
    local marker=$1
    shift
    if (( ! DRY_RUN )) && [[ -e $marker ]]; then
        echo "# done: $marker"
        return 0
    fi
    run "$@"
    (( DRY_RUN )) || { mkdir -p "$(dirname "$marker")" && touch "$marker"; }
}

# download URL FILE: to FILE.part, renamed when complete (curl resumes a partial download).
download() {
    local url=$1 file=$2
    if (( ! DRY_RUN )) && [[ -e $file ]]; then
        echo "# done: $file"
        return 0
    fi
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
    echo "# prepare: $TASK ($SRC -> $TGT), joint sentencepiece $SPM_VOCAB -> $DATA_BIN"
    local downloads=$WORK/downloads
    case $TASK in
        multi30k_*)
            local limit=()
            [[ -n ${MAX_TRAIN_PAIRS:-} ]] && limit=(--max-train-pairs "$MAX_TRAIN_PAIRS")
            if (( ! DRY_RUN )) && [[ ! -d $RAW_DIR ]]; then
                die "Multi30k not found at $RAW_DIR; set MULTI30K_DIR to the directory with train.$SRC.gz etc."
            fi
            run fairseq-admin-prepare --raw-dir "$RAW_DIR" --dest "$DATA_DIR" --src "$SRC" --tgt "$TGT" \
                --vocab-size "$SPM_VOCAB" --splits "$SPLITS" "${limit[@]}"
            return
            ;;
        iwslt14_de_en)
            # As fairseq's examples/translation/prepare-iwslt14.sh.
            download http://dl.fbaipublicfiles.com/fairseq/data/iwslt14/de-en.tgz "$downloads/iwslt14/de-en.tgz"
            extract "$downloads/iwslt14/de-en.tgz" "$downloads/iwslt14"
            ;;
        wmt14_en_de)
            # As fairseq's examples/translation/prepare-wmt14en2de.sh --icml17 (WMT'14 data, newstest2014).
            local files=(training-parallel-europarl-v7.tgz training-parallel-commoncrawl.tgz
                         training-parallel-nc-v9.tgz dev.tgz test-full.tgz)
            local urls=(http://statmt.org/wmt13/training-parallel-europarl-v7.tgz
                        http://statmt.org/wmt13/training-parallel-commoncrawl.tgz
                        http://statmt.org/wmt14/training-parallel-nc-v9.tgz
                        http://data.statmt.org/wmt17/translation-task/dev.tgz
                        http://statmt.org/wmt14/test-full.tgz)
            local i
            for i in "${!files[@]}"; do
                download "${urls[$i]}" "$downloads/wmt14/${files[$i]}"
                extract "$downloads/wmt14/${files[$i]}" "$downloads/wmt14"
            done
            ;;
        wmt14_en_fr)
            # As fairseq's examples/translation/prepare-wmt14en2fr.sh.
            local files=(training-parallel-europarl-v7.tgz training-parallel-commoncrawl.tgz
                         training-parallel-un.tgz training-parallel-nc-v9.tgz training-giga-fren.tar
                         dev.tgz test-full.tgz)
            local urls=(http://statmt.org/wmt13/training-parallel-europarl-v7.tgz
                        http://statmt.org/wmt13/training-parallel-commoncrawl.tgz
                        http://statmt.org/wmt13/training-parallel-un.tgz
                        http://statmt.org/wmt14/training-parallel-nc-v9.tgz
                        http://statmt.org/wmt10/training-giga-fren.tar
                        http://data.statmt.org/wmt17/translation-task/dev.tgz
                        http://statmt.org/wmt14/test-full.tgz)
            local i
            for i in "${!files[@]}"; do
                download "${urls[$i]}" "$downloads/wmt14/${files[$i]}"
                extract "$downloads/wmt14/${files[$i]}" "$downloads/wmt14"
            done
            ;;
    esac
    # Clean (tags, length ratio, ...) into NAME.LANG files, then sentencepiece + fairseq-preprocess.
    run fairseq-admin-corpus "$TASK" --downloads "$downloads/${TASK%%_*}" --dest "$DATA_DIR/raw"
    run fairseq-admin-prepare --raw-dir "$DATA_DIR/raw" --dest "$DATA_DIR" --src "$SRC" --tgt "$TGT" \
        --vocab-size "$SPM_VOCAB" --splits "$SPLITS" --spm-sentences 10000000 --workers 8
}

stage_profile() {
    if [[ $METHOD != admin ]]; then
        echo "# profile: nothing to do for $METHOD (only Admin profiles)"
        return
    fi
    echo "# profile: $RUN_NAME on one device, fp32 -> $SAVE_DIR/admin_profile.json"
    local env_prefix=() device=(--cpu)
    if (( NGPUS > 0 )); then
        env_prefix=(env "CUDA_VISIBLE_DEVICES=$FIRST_GPU")
        device=(--distributed-world-size 1)
    fi
    done_or_run "$SAVE_DIR/admin_profile.json" "${env_prefix[@]}" fairseq-train "${COMMON_ARGS[@]}" "${MODEL_ARGS[@]}" \
        --max-tokens "$MAX_TOKENS" --init-type adaptive-profiling "${device[@]}"
}

stage_train() {
    echo "# train: $RUN_NAME, --init-type $INIT_TYPE, $WORKERS worker(s) x $TRAIN_MAX_TOKENS tokens x update-freq" \
         "$UPDATE_FREQ = $((WORKERS * TRAIN_MAX_TOKENS * UPDATE_FREQ)) tokens per update (paper: $EFFECTIVE_TOKENS), $PRECISION"
    local world=()
    (( NGPUS > 0 )) && world=(--distributed-world-size "$NGPUS")
    marked "$SAVE_DIR/train.done" fairseq-train "${COMMON_ARGS[@]}" "${MODEL_ARGS[@]}" --init-type "$INIT_TYPE" \
        --max-tokens "$TRAIN_MAX_TOKENS" --update-freq "$UPDATE_FREQ" "${PRECISION_ARGS[@]}" "${DEVICE_ARGS[@]}" "${world[@]}"
}

stage_eval() {
    local averaged=$SAVE_DIR/checkpoint.avg$AVG_LAST.pt
    echo "# eval: average the last $AVG_LAST $AVERAGED_WHAT checkpoints, beam $BEAM, lenpen $LENPEN -> $RESULT"
    done_or_run "$averaged" fairseq-admin-average --inputs "$SAVE_DIR" "${AVERAGE_WHAT[@]}" \
        "${AVERAGE_ARGS[@]}" --output "$averaged"
    local score_args=() generate_device=(--cpu) extra=()
    # GENERATE_ARGS: extra fairseq-generate flags, split on spaces (e.g. "--max-len-b 20" for smoke tests).
    [[ -n ${GENERATE_ARGS:-} ]] && read -r -a extra <<<"$GENERATE_ARGS"
    (( COMPOUND_SPLIT )) && score_args+=(--compound-split)
    (( NGPUS > 0 )) && generate_device=("${PRECISION_ARGS[@]:0:1}")
    done_or_run "$RESULT" fairseq-admin-evaluate --output "$RESULT" --reference "$DATA_DIR/text/test.raw.$TGT" \
        --name "$RUN_NAME" "${score_args[@]}" -- \
        "$DATA_BIN" --user-dir "$USER_DIR" --path "$averaged" --source-lang "$SRC" --target-lang "$TGT" \
        --gen-subset test --beam "$BEAM" --lenpen "$LENPEN" --max-tokens 8000 --remove-bpe sentencepiece \
        --seed "$SEED" "${generate_device[@]}" "${extra[@]}"
}

case $STAGE in
    all) stage_prepare; stage_profile; stage_train; stage_eval ;;
    *) "stage_$STAGE" ;;
esac
