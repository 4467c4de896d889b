# WMT'14 English -> French: the Admin paper's setup, as Transformer-Clinic's pre-process/wmt14en-fr.sh,
# nmt-experiments/wmt14_en-fr.md and eval_wmt_en-fr.sh do it.
# Sourced by recipes/run.sh; every ${X:-default} can be overridden from the environment.
SRC=en TGT=fr
PIPELINE=${PIPELINE:-bpe}              # bpe: Moses tokens (-a) + joint BPE, the paper's; spm: joint sentencepiece
BPE_MERGES=${BPE_MERGES:-40000}        # learn_bpe.py -s 40000 on train.en + train.fr (before cleaning)
CLEAN_AFTER_BPE=${CLEAN_AFTER_BPE:-1-250:1.5}  # clean-corpus-n.perl -ratio 1.5 ... 1 250 on the BPE'd train and valid
SPM_VOCAB=${SPM_VOCAB:-40000}          # PIPELINE=spm only
SACREBLEU_LOWERCASE=0
COMPOUND_SPLIT=0
DOWNLOAD_DIR=wmt14
FILES=(training-parallel-europarl-v7.tgz training-parallel-commoncrawl.tgz training-parallel-un.tgz
       training-parallel-nc-v9.tgz training-giga-fren.tar test-full.tgz)
URLS=(http://statmt.org/wmt13/training-parallel-europarl-v7.tgz
      http://statmt.org/wmt13/training-parallel-commoncrawl.tgz
      http://statmt.org/wmt13/training-parallel-un.tgz
      http://statmt.org/wmt14/training-parallel-nc-v9.tgz
      http://statmt.org/wmt10/training-giga-fren.tar
      http://statmt.org/wmt14/test-full.tgz)
ARCH=transformer_admin_wmt_en_de
MODEL_EXTRA_ARGS=(--ffn-init xavier)   # fairseq 0.8's FFN initialization, which the paper's runs had
ADMIN_ARGS=(--admin-profile-padding include)  # Admin: the original's statistics count padding positions too (profile and train)
PROFILE_ARGS=(--admin-profile-tokens 1)       # the original profiled the first training batch only
LR=${LR:-7e-4}
WARMUP=${WARMUP:-8000}
DROPOUT=${DROPOUT:-0.1}
EXTRA_TRAIN_ARGS=(--attention-dropout 0.1 --activation-dropout 0.1 --weight-decay 0.0)
MAX_EPOCH=${MAX_EPOCH:-50}
BEAM=5 LENPEN=0.8
GENERATE_BATCH=(--batch-size 128)
AVG_LAST=${AVG_LAST:-10}
# Paper: 6L-6L on 8 GPUs x 8000 tokens x update-freq 10; 60L-12L on 16 GPUs x 5000 tokens x update-freq 16.
batch_for_depth() {
    if (( $1 > 6 || $2 > 6 )); then EFFECTIVE_TOKENS=${EFFECTIVE_TOKENS:-1280000}; MAX_TOKENS=${MAX_TOKENS:-5000}
    else EFFECTIVE_TOKENS=${EFFECTIVE_TOKENS:-640000}; MAX_TOKENS=${MAX_TOKENS:-8000}; fi
}
