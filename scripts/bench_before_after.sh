#!/usr/bin/env bash
# Throughput of Admin before and after a change, against stock fairseq, interleaved in one run:
# the stock `transformer`, Admin at OLD_REV (a git worktree) and Admin in this tree, each `fairseq-train` one at a
# time, 1 thread, same data and flags, the order rotated per repetition. Writes OUT/results.csv, OUT/summary.json and
# OUT/ratios.png (words/s of fairseq's last train_inner intervals; whole-process wall time).
#
#   bash scripts/bench_before_after.sh OLD_REV DATA_BIN [OUT] [REPS]
set -euo pipefail
cd "$(dirname "$0")/.."
OLD_REV=$1 DATA=$2 OUT=${3:-results/bench_before_after} REPS=${4:-4}
OLD_TREE=$(mktemp -d)/old
git worktree add -q -f "$OLD_TREE" "$OLD_REV"
trap 'git worktree remove --force "$OLD_TREE"' EXIT
mkdir -p "$OUT"
M=(--encoder-layers 6 --decoder-layers 6 --encoder-embed-dim 128 --decoder-embed-dim 128 --encoder-ffn-embed-dim 512
   --decoder-ffn-embed-dim 512 --encoder-attention-heads 4 --decoder-attention-heads 4 --share-all-embeddings)
T=(--optimizer adam --adam-betas "(0.9,0.98)" --lr 1e-3 --lr-scheduler inverse_sqrt --warmup-updates 50
   --criterion label_smoothed_cross_entropy --label-smoothing 0.1 --max-tokens 2048 --cpu --seed 1 --no-progress-bar
   --log-format simple --log-interval 10 --num-workers 0 --max-update 60 --no-save --disable-validation)
export OMP_NUM_THREADS=1
declare -A USER_DIR=([stock]=$PWD/fairseq_admin [old]=$OLD_TREE/fairseq_admin [new]=$PWD/fairseq_admin)
for v in old new; do  # each version profiles with its own code (the profile formats differ)
  .venv/bin/fairseq-train "$DATA" --user-dir "${USER_DIR[$v]}" --arch transformer_admin "${M[@]}" "${T[@]}" \
      --init-type adaptive-profiling --save-dir "$OUT/$v" > "$OUT/profile_$v.log" 2>&1
done
echo "rep,version,wall_s,wps" > "$OUT/results.csv"
for rep in $(seq 1 "$REPS"); do
  case $((rep % 3)) in 1) order="stock old new" ;; 2) order="old new stock" ;; *) order="new stock old" ;; esac
  for v in $order; do
    extra=(--arch transformer_admin --init-type adaptive --save-dir "$OUT/$v")
    [[ $v == stock ]] && extra=(--arch transformer)
    start=$(date +%s.%N)
    .venv/bin/fairseq-train "$DATA" --user-dir "${USER_DIR[$v]}" "${M[@]}" "${T[@]}" "${extra[@]}" > "$OUT/$v.$rep.log" 2>&1
    wall=$(echo "$(date +%s.%N) - $start" | bc)
    wps=$(grep train_inner "$OUT/$v.$rep.log" | tail -5 | sed -E 's/.*wps=([0-9.]+).*/\1/' | awk '{s+=$1} END {print s/NR}')
    echo "$rep,$v,$wall,$wps" | tee -a "$OUT/results.csv"
  done
done
.venv/bin/python - "$OUT" "$OLD_REV" <<'PY'
import csv, json, statistics, sys
from pathlib import Path
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
out, old_rev = Path(sys.argv[1]), sys.argv[2]
rows = list(csv.DictReader(open(out / "results.csv")))
by = {(r["rep"], r["version"]): r for r in rows}
reps = sorted({r["rep"] for r in rows}, key=int)
summary = {"old_rev": old_rev, "reps": len(reps)}
fig, ax = plt.subplots(figsize=(6, 3.5))
for v in ("old", "new"):
    for key, label in (("wps", "words/s"), ("wall_s", "wall")):
        ratios = [float(by[(r, v)][key]) / float(by[(r, "stock")][key]) for r in reps]
        summary[f"{v}_{key}_ratio_over_stock"] = {"median": statistics.median(ratios), "min": min(ratios),
                                                   "max": max(ratios), "all": ratios}
        ax.plot([int(r) for r in reps], ratios, marker="o", label=f"Admin {v}: {label} / stock")
ax.axhline(1.0, color="gray", lw=0.8)
ax.set(xlabel="repetition", ylabel="ratio to stock transformer", title="Admin throughput, before and after")
ax.legend(fontsize=7)
fig.tight_layout()
fig.savefig(out / "ratios.png", dpi=110)
(out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
print(json.dumps(summary, indent=1))
PY
