#!/usr/bin/env bash
# Training throughput of Admin before and after a change, against stock fairseq, interleaved in one run: the stock
# `transformer`, Admin at OLD_REV (a git worktree, profiled by its own code) and Admin in this tree, real
# `fairseq-train` runs one at a time, 1 thread, same data and flags, the order alternated per repetition
# (fairseq_admin_evidence.bench_cost --old-user-dir). Writes OUT/summary.json (ratio_admin_over_stock and
# ratio_old_over_stock: words/s, wall and CPU time), OUT/throughput.csv and OUT/throughput.png.
#
#   bash scripts/bench_before_after.sh OLD_REV DATA_BIN [OUT] [REPS]
set -euo pipefail
cd "$(dirname "$0")/.."
OLD_REV=$1 DATA=$2 OUT=${3:-results/bench_before_after} REPS=${4:-5}
OLD_TREE=$(mktemp -d)/old
git worktree add -q -f "$OLD_TREE" "$OLD_REV"
trap 'git worktree remove --force "$OLD_TREE"' EXIT
PYTHON=${PYTHON:-.venv/bin/python}
"$PYTHON" -m fairseq_admin_evidence.bench_cost --skip-profiling --data "$DATA" --out "$OUT" --reps "$REPS" \
    --updates 60 --log-interval 10 --old-user-dir "$OLD_TREE/fairseq_admin"
