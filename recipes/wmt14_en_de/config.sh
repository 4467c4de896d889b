# WMT'14 English -> German: hyper-parameters of the Admin paper (Liu et al., 2020 / Transformer-Clinic).
# Sourced by recipes/run.sh; every value can be overridden from the environment.
SRC=en TGT=de
SPM_VOCAB=${SPM_VOCAB:-32000}
LOWERCASE=0
ARCH=transformer_admin_wmt_en_de
DEFAULT_LAYERS=6
LR=${LR:-1e-3}
WARMUP=${WARMUP:-8000}
DROPOUT=${DROPOUT:-0.1}
EXTRA_TRAIN_ARGS=(--attention-dropout 0.1 --activation-dropout 0.1 --weight-decay 0.0)
MAX_EPOCH=${MAX_EPOCH:-100}
BEAM=4 LENPEN=0.6 COMPOUND_SPLIT=1
AVG_LAST=${AVG_LAST:-10}
# Paper: 4 GPUs x 8192 tokens x update-freq 1, for every depth.
batch_for_depth() { EFFECTIVE_TOKENS=32768; MAX_TOKENS=${MAX_TOKENS:-8192}; }
PAPER_BLEU="6L-6L: Post-LN 27.80, Pre-LN 27.27, Admin 27.90; 12L-12L: Pre-LN 28.26, Admin 28.58; 18L-18L: Pre-LN 28.38, Admin 29.03 (Post-LN diverges at 12L and 18L)"
