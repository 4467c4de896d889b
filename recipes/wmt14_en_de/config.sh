# WMT'14 English -> German: the Admin paper's setup, as Transformer-Clinic's pre-process/wmt14en-de.sh,
# nmt-experiments/wmt14_en-de.md and eval_wmt_en-de.sh do it.
# Sourced by recipes/run.sh; every ${X:-default} can be overridden from the environment.
SRC=en TGT=de
PIPELINE=${PIPELINE:-bpe}              # bpe: Moses tokens (-a) + joint BPE, the paper's; spm: joint sentencepiece
BPE_MERGES=${BPE_MERGES:-32764}        # learn_bpe.py -s 32764 on train.en + train.de
SPM_VOCAB=${SPM_VOCAB:-32000}          # PIPELINE=spm only
SACREBLEU_LOWERCASE=0
COMPOUND_SPLIT=1                       # PIPELINE=spm only: 13a tokenized BLEU with ##AT##-##AT## compounds
DOWNLOAD_DIR=wmt14
FILES=(training-parallel-europarl-v7.tgz training-parallel-commoncrawl.tgz training-parallel-nc-v12.tgz
       dev.tgz test-full.tgz)
URLS=(http://statmt.org/wmt13/training-parallel-europarl-v7.tgz
      http://statmt.org/wmt13/training-parallel-commoncrawl.tgz
      http://data.statmt.org/wmt17/translation-task/training-parallel-nc-v12.tgz
      http://data.statmt.org/wmt17/translation-task/dev.tgz
      http://statmt.org/wmt14/test-full.tgz)
ARCH=transformer_admin_wmt_en_de
MODEL_EXTRA_ARGS=(--ffn-init xavier)   # fairseq 0.8's FFN initialization, which the paper's runs had
ADMIN_ARGS=(--admin-profile-padding include)  # Admin: the original's statistics count padding positions too (profile and train)
PROFILE_ARGS=(--admin-profile-tokens 1)       # the original profiled the first training batch only
LR=${LR:-1e-3}
WARMUP=${WARMUP:-8000}
DROPOUT=${DROPOUT:-0.1}
EXTRA_TRAIN_ARGS=(--attention-dropout 0.1 --activation-dropout 0.1 --weight-decay 0.0)
# The original: --max-update 500000, then the average of the last 10 epoch checkpoints up to epoch 100.
MAX_EPOCH=${MAX_EPOCH:-100}
MAX_UPDATE=${MAX_UPDATE:-500000}
BEAM=4 LENPEN=0.6
GENERATE_BATCH=(--batch-size 128)
AVG_LAST=${AVG_LAST:-10}
# Paper: 4 GPUs x 8192 tokens x update-freq 1, for every depth.
batch_for_depth() { EFFECTIVE_TOKENS=${EFFECTIVE_TOKENS:-32768}; MAX_TOKENS=${MAX_TOKENS:-8192}; }
