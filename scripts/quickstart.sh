#!/usr/bin/env bash
# Quickstart: install (scripts/setup.sh, idempotent), then the Multi30k Admin recipe de→en end to end on
# CPU — prepare → profile → train → average → generate — and print its BLEU. About 30 minutes on 2 cores.
#
#   bash scripts/quickstart.sh            # 6L-6L Admin (recipes/multi30k/config.sh)
#   LAYERS=3 bash scripts/quickstart.sh   # any recipe setting can be overridden from the environment
#
# Multi30k is read from $MULTI30K_DIR (default ../shared/data/multi30k: train/val/test_2016_flickr.{de,en}.gz).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
LAYERS=${LAYERS:-6}
start=$(date +%s)
bash recipes/run.sh multi30k admin "$LAYERS"
result=${RESULTS_DIR:-results}/multi30k_de_en-admin-${LAYERS}L-${LAYERS}L-s${SEED:-1111}.json
echo "quickstart: done in $(( $(date +%s) - start ))s; results in $result"
.venv/bin/python - "$result" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"sacreBLEU {r['sacrebleu']['score']}  ({r['sacrebleu']['signature']})")
print(f"tokenized BLEU {r['tokenized_bleu']['score']}  (13a tokens{', compound-split' if r['tokenized_bleu']['compound_split'] else ''})")
PY
