# IWSLT'14 German -> English: the Admin paper's setup, as Transformer-Clinic's pre-process/iwslt14de-en.sh,
# nmt-experiments/iwslt14_de-en.md and eval_iwslt_de-en.sh do it.
# Sourced by recipes/run.sh; every ${X:-default} can be overridden from the environment.
SRC=de TGT=en
PIPELINE=${PIPELINE:-bpe}              # bpe: Moses tokens (lowercased) + joint BPE, the paper's; spm: joint sentencepiece
BPE_MERGES=${BPE_MERGES:-10000}        # learn_bpe.py -s 10000 on train.de + train.en
SPM_VOCAB=${SPM_VOCAB:-10000}          # PIPELINE=spm only
SACREBLEU_LOWERCASE=1                  # the corpus is lowercased, so sacreBLEU compares case-insensitively
COMPOUND_SPLIT=0                       # PIPELINE=spm only: 13a tokenized BLEU without compound splitting
DOWNLOAD_DIR=iwslt14
# The original's wit3.fbk.eu URL is gone; fairseq's prepare-iwslt14.sh mirrors the same de-en.tgz here.
FILES=(de-en.tgz)
URLS=(http://dl.fbaipublicfiles.com/fairseq/data/iwslt14/de-en.tgz)
ARCH=transformer_admin_iwslt_de_en
MODEL_EXTRA_ARGS=(--ffn-init xavier)   # fairseq 0.8's FFN initialization, which the paper's runs had
ADMIN_ARGS=(--admin-profile-padding include)  # Admin: the original's statistics count padding positions too (profile and train)
PROFILE_ARGS=(--admin-profile-tokens 1)       # the original profiled the first training batch only
LR=${LR:-7e-4}
WARMUP=${WARMUP:-6000}
DROPOUT=${DROPOUT:-0.3}
EXTRA_TRAIN_ARGS=(--attention-dropout 0.1 --activation-dropout 0.1 --weight-decay 0.0001)
# The original: --max-update 100000, then the average of the last 10 epoch checkpoints up to epoch 90.
MAX_EPOCH=${MAX_EPOCH:-90}
MAX_UPDATE=${MAX_UPDATE:-100000}
BEAM=5 LENPEN=1.0
GENERATE_BATCH=(--batch-size 128)
AVG_LAST=${AVG_LAST:-10}
# Paper: 1 GPU x 4096 tokens x update-freq 1.
batch_for_depth() { EFFECTIVE_TOKENS=${EFFECTIVE_TOKENS:-4096}; MAX_TOKENS=${MAX_TOKENS:-4096}; }
