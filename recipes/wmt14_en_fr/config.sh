# WMT'14 English -> French: hyper-parameters of the Admin paper (Liu et al., 2020 / Transformer-Clinic).
# Sourced by recipes/run.sh; every value can be overridden from the environment.
SRC=en TGT=fr
SPM_VOCAB=${SPM_VOCAB:-40000}
LOWERCASE=0
ARCH=transformer_admin_wmt_en_de
DEFAULT_LAYERS=6
LR=${LR:-7e-4}
WARMUP=${WARMUP:-8000}
DROPOUT=${DROPOUT:-0.1}
EXTRA_TRAIN_ARGS=(--attention-dropout 0.1 --activation-dropout 0.1 --weight-decay 0.0)
MAX_EPOCH=${MAX_EPOCH:-50}
BEAM=5 LENPEN=0.8 COMPOUND_SPLIT=0
AVG_LAST=${AVG_LAST:-10}
# Paper: 6L-6L on 8 GPUs x 8000 tokens x update-freq 10; 60L-12L on 16 GPUs x 5000 tokens x update-freq 16.
batch_for_depth() {
    if (( $1 > 6 || $2 > 6 )); then EFFECTIVE_TOKENS=1280000; MAX_TOKENS=${MAX_TOKENS:-5000}
    else EFFECTIVE_TOKENS=640000; MAX_TOKENS=${MAX_TOKENS:-8000}; fi
}
PAPER_BLEU="6L-6L: Post-LN 41.29, Pre-LN 40.74, Admin 41.47; 60L-12L: Pre-LN 43.10, Admin 43.80 (Post-LN diverges)"
