# Multi30k (de->en, en->de, en->fr), sized for a 2-core CPU: prepare + profile + train + generate
# in under 30 minutes. Not a paper task; the point is a quick, honest end-to-end run.
# Sourced by recipes/run.sh with TASK=multi30k_<src>_<tgt>; every value can be overridden from the environment.
SRC=${TASK#multi30k_}; SRC=${SRC%_*}
TGT=${TASK##*_}
PIPELINE=${PIPELINE:-spm}  # joint sentencepiece on raw text (PIPELINE=bpe is refused: the paper's tasks only)
SPM_VOCAB=${SPM_VOCAB:-8000}
SACREBLEU_LOWERCASE=0      # cased text, cased BLEU
ARCH=transformer_admin
# A narrow model (d 128, ffn 512, 4 heads): about 2k target tokens/s on 2 CPU cores. DIM, FFN_DIM, HEADS set another.
DIM=${DIM:-128} FFN_DIM=${FFN_DIM:-512} HEADS=${HEADS:-4}
MODEL_EXTRA_ARGS=(--encoder-embed-dim "$DIM" --decoder-embed-dim "$DIM" --encoder-ffn-embed-dim "$FFN_DIM"
                  --decoder-ffn-embed-dim "$FFN_DIM" --encoder-attention-heads "$HEADS" --decoder-attention-heads "$HEADS")
# PAPER_INIT=1: the paper's initialization and profiling, as the paper's tasks have them (fairseq 0.8's FFN
# initialization, padding counted in the statistics, the first batch profiled). Default: fairseq 0.12's.
if [[ ${PAPER_INIT:-0} == 1 ]]; then
    MODEL_EXTRA_ARGS+=(--ffn-init xavier)
    ADMIN_ARGS=(--admin-profile-padding include)
    PROFILE_ARGS=(--admin-profile-tokens 1)
fi
LR=${LR:-2e-3}
WARMUP=${WARMUP:-250}
DROPOUT=${DROPOUT:-0.1}
EXTRA_TRAIN_ARGS=(--weight-decay 0.0)
MAX_EPOCH=${MAX_EPOCH:-5}
# A fixed number of updates (MAX_UPDATE=0: none; MAX_EPOCH decides), so the result does not depend on how busy the machine is (~1.1 s/update on
# 2 idle cores). STOP_TIME_HOURS=0.38 adds a wall-clock guard for shared machines, at the cost of that.
MAX_UPDATE=${MAX_UPDATE:-1000}
STOP_TIME_HOURS=${STOP_TIME_HOURS:-}
BEAM=5 LENPEN=1.0 COMPOUND_SPLIT=0
[[ $TGT == de ]] && COMPOUND_SPLIT=1
# A run cut short by the time guard keeps its last weights only in checkpoint_last.pt, so instead of
# epoch checkpoints save (and average) the last AVG_LAST checkpoints taken every SAVE_INTERVAL_UPDATES.
# Saves every 50 updates keep the average to the last ~100 updates: on a short run, older weights only hurt
# (measured: averaging updates 150/300/450 of a 451-update run gave 15.35 BLEU).
SAVE_INTERVAL_UPDATES=${SAVE_INTERVAL_UPDATES:-50}  # 0: epoch checkpoints, averaged by epoch
AVG_LAST=${AVG_LAST:-3}
AVERAGE_ARGS=(--allow-fewer)
[[ $SAVE_INTERVAL_UPDATES != 0 ]] && AVERAGE_ARGS+=(--with-last)  # checkpoint_last.pt holds the final weights
# Small batches, so a few epochs still give enough updates.
batch_for_depth() { EFFECTIVE_TOKENS=${EFFECTIVE_TOKENS:-2048}; MAX_TOKENS=${MAX_TOKENS:-2048}; }
# fairseq-admin-prepare reads NAME.LANG[.gz] from $MULTI30K_DIR (default ../shared/data/multi30k).
RAW_DIR=${MULTI30K_DIR:-../shared/data/multi30k}
SPLITS="train=train,valid=val,test=test_2016_flickr"
