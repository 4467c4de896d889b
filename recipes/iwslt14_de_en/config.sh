# IWSLT'14 German -> English: hyper-parameters of the Admin paper (Liu et al., 2020, Appendix / Transformer-Clinic).
# Sourced by recipes/run.sh; every value can be overridden from the environment.
SRC=de TGT=en
SPM_VOCAB=${SPM_VOCAB:-10000}
LOWERCASE=1            # fairseq's prepare-iwslt14.sh lowercases; the paper's BLEU is on lowercased text
ARCH=transformer_admin_iwslt_de_en
DEFAULT_LAYERS=6
LR=${LR:-7e-4}
WARMUP=${WARMUP:-6000}
DROPOUT=${DROPOUT:-0.3}
EXTRA_TRAIN_ARGS=(--attention-dropout 0.1 --activation-dropout 0.1 --weight-decay 0.0001)
MAX_EPOCH=${MAX_EPOCH:-90}
BEAM=5 LENPEN=1.0 COMPOUND_SPLIT=0
AVG_LAST=${AVG_LAST:-10}
# Paper: 1 GPU x 4096 tokens x update-freq 1.
batch_for_depth() { EFFECTIVE_TOKENS=4096; MAX_TOKENS=${MAX_TOKENS:-4096}; }
PAPER_BLEU="6L-6L: Post-LN 35.64, Pre-LN 35.50, Admin 35.67"
