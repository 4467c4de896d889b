#!/usr/bin/env bash
# Table 1 in Admin's own regime on one GPU: every run of the table1_gpu schedule (fairseq_admin_evidence/convergence.py:
# 18L-18L Post-LN, Pre-LN, Admin x 2 seeds, admin-closed-form, DeepNorm, 6L-6L Post-LN, Pre-LN, Admin; d 256, flat
# fp16 with the recipes' loss-scale flags, up to 25 epochs or 5 without a better validation loss) side by side, in
# one call of at most 9 minutes.
#
#   bash scripts/table1_gpu.sh pack          # on the CPU machine: the data, each Admin profile (fp32), the wheels
#   OUT=DIR bash scripts/table1_gpu.sh run   # on the GPU machine, with work/table1_gpu and .whl/ carried along
#   TOY=1 bash scripts/table1_gpu.sh pack && TOY=1 OUT=DIR bash scripts/table1_gpu.sh run
#                                            # the rehearsal on the CPU, two toy runs (tests/test_table1_gpu.py)
#
# run: installs .whl/*.whl where fairseq is not importable, trains every run at once, stops training after
# TRAIN_MINUTES (default 6.5) so that averaging and decoding (beam 5; sacreBLEU with its signature, 13a BLEU) still
# fit, writes summary.json, table.md and the validation curves (fairseq_admin_evidence.convergence_summary), and
# packs OUT/table1_gpu.tar.gz: logs, result JSONs, hypotheses, monitor files and the summary (checked <= 64 MiB).
# pack: WHEELS=0 skips the wheels (the rehearsal needs none).
set -euo pipefail
cd "$(dirname "$0")/.."
SCHEDULE=table1_gpu
(( ${TOY:-0} )) && SCHEDULE=table1_gpu_toy
PYTHON=${PYTHON:-python3}
[[ -x .venv/bin/python ]] && PYTHON=.venv/bin/python
# where the schedule keeps its data, checkpoints and logs, and its results (ADMIN_EVIDENCE_DIR moves both)
read -r WORK RESULTS < <("$PYTHON" -c "from fairseq_admin_evidence.convergence import SCHEDULES as s; \
print(s['$SCHEDULE'].work, s['$SCHEDULE'].results)")
LIMIT_BYTES=$((64 * 1024 * 1024))

pack() {
    "$PYTHON" -m fairseq_admin_evidence.convergence --schedule "$SCHEDULE" --profile-only --threads "${THREADS:-2}"
    if (( ${WHEELS:-1} )); then
        # fairseq-fixed (built here against the installed torch) and the pure-Python packages it and we need,
        # at the versions installed here (pytest for scripts/gpu_check.sh); the GPU machine brings torch and numpy.
        mkdir -p .whl
        "$PYTHON" -m pip wheel -q --no-deps --no-build-isolation -w .whl fairseq-fixed==0.12.3.1 .
        "$PYTHON" -m pip freeze | grep -iE "^(hydra-core|omegaconf|antlr4-python3-runtime|bitarray|sacrebleu|portalocker|colorama|tabulate|lxml|regex|sentencepiece|sacremoses|subword-nmt|tensorboardX|protobuf|pyyaml|pytest|pluggy|iniconfig|packaging)==" \
            | xargs "$PYTHON" -m pip wheel -q --no-deps -w .whl
    fi
    du -sh "$WORK" .whl 2>/dev/null || true
}

install_wheels() {
    "$PYTHON" -c "import fairseq" >/dev/null 2>&1 && return 0
    compgen -G ".whl/*.whl" >/dev/null || { echo "table1_gpu: fairseq not importable and no .whl/ carried" >&2; exit 1; }
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/table1_site .whl/*.whl
    export PYTHONPATH="$PWD:/tmp/table1_site${PYTHONPATH:+:$PYTHONPATH}" PATH="/tmp/table1_site/bin:$PATH"
}

run() {
    : "${OUT:?set OUT to the folder that receives the archive}"
    mkdir -p "$OUT"
    install_wheels
    local start jobs
    start=$(date +%s)
    jobs=${JOBS:-$("$PYTHON" -c "from fairseq_admin_evidence.convergence import SCHEDULES as s; print(len(s['$SCHEDULE'].plan))")}
    # fairseq stops training at --stop-time-hours and saves; the recipe then averages and decodes.
    STOP_TIME_HOURS=$("$PYTHON" -c "print(round(${TRAIN_MINUTES:-6.5} / 60, 4))") PYTHONUNBUFFERED=1 \
        "$PYTHON" -m fairseq_admin_evidence.convergence --schedule "$SCHEDULE" --skip-prepare --jobs "$jobs" \
        --threads 1 2>&1 | tee "$OUT/driver.log"
    echo "table1_gpu: runs done after $(( $(date +%s) - start )) s"
    "$PYTHON" -m fairseq_admin_evidence.convergence_summary --schedule "$SCHEDULE" --out "$OUT/summary" \
        --source "$(nvidia-smi -L >/dev/null 2>&1 && echo gpu || echo cpu)" "$WORK/logs" "$RESULTS"
    local root
    root=$(dirname "$(dirname "$WORK")")
    (cd "$root" && find "work/$SCHEDULE/logs" "results/$SCHEDULE" "work/$SCHEDULE/checkpoints" -type f \
        \( -path "*/logs/*" -o -path "results/*" -o -name admin_monitor.jsonl -o -name admin_profile.json \) -print0 \
        | tar czf "$OUT/$SCHEDULE.tar.gz" --null -T - -C "$OUT" summary)
    local size
    size=$(stat -c %s "$OUT/$SCHEDULE.tar.gz")
    (( size <= LIMIT_BYTES )) || { echo "table1_gpu: archive is $size bytes, over 64 MiB" >&2; exit 1; }
    echo "table1_gpu: $OUT/$SCHEDULE.tar.gz ($size bytes) after $(( $(date +%s) - start )) s"
}

case ${1:-} in
    pack) pack ;;
    run) run ;;
    *) sed -n '2,/^set /{/^#/p}' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
