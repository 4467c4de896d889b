#!/usr/bin/env bash
# Table 1 runs (fairseq_admin_evidence.convergence) on one GPU machine without network or Multi30k, next to
# the GPU check. Made for an H200/H100 machine without network: the prepared data (work/convergence/data), the
# Admin profiles made on the CPU (so both devices train from the same ω) and the wheels (.whl/: fairseq-fixed,
# what it needs, and fairseq-admin itself for its console scripts) are carried there.
#
#   OUT=DIR bash scripts/convergence_on_gpu.sh SECONDS RUN_NAME...
#
# Runs the named runs, JOBS (default 5) at a time, in fp32 (as on the CPU) for at most SECONDS, while the GPU
# check's tests (not its timed benchmarks, which are not measured beside training) run beside them (GPU_CHECK=0: not).
# Writes to OUT:
# gpu_check.json (what scripts/gpu_check.sh printed), gpu_check.err, driver.log, and convergence_gpu.tar.gz
# (work/convergence/logs and results/convergence: every finished run's log and result). Back here, put them where
# convergence_summary reads the GPU's runs:
#   tar xzf convergence_gpu.tar.gz \
#     --transform 's,^work/convergence/logs,work/convergence/logs_h200,;s,^results/convergence,results/convergence_h200,' 
set -uo pipefail
cd "$(dirname "$0")/.."
budget=$1
shift
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH="$PWD:/tmp/site" PATH="/tmp/site/bin:$PATH" PYTHONUNBUFFERED=1
nvidia-smi -L
start=$(date +%s)
(( ${GPU_CHECK:-1} )) && timeout 360 bash scripts/gpu_check.sh work/convergence/data/multi30k_de_en/bin \
    --parts tests --out-dir /tmp/gpu_check >"$OUT/gpu_check.json" 2>"$OUT/gpu_check.err" &
PRECISION=fp32 timeout "$budget" python3 -m fairseq_admin_evidence.convergence --skip-prepare --jobs "${JOBS:-5}" \
    --threads 1 --only "$@" >"$OUT/driver.log" 2>&1
echo "convergence driver exited $? after $(( $(date +%s) - start )) s"
wait
echo "all done after $(( $(date +%s) - start )) s"
tar czf "$OUT/convergence_gpu.tar.gz" work/convergence/logs results/convergence
