#!/usr/bin/env bash
# The GPU checks of fairseq-admin in one run; prints ONE JSON object on stdout, progress on stderr.
#
#   bash scripts/gpu_check.sh DATA_BIN [--cpu] [--out-dir DIR] [--parts tests,bench_cost,bench_step,bench_shortcut]
#
# On a GPU machine: tests/test_gpu.py (flat --fp16 with RAdam and Adam, one-step Admin), then bench_cost, bench_step
# and bench_shortcut with --device cuda (see fairseq_admin_evidence/gpu_check.py). With --cpu, the same on CPU at toy
# sizes: CI runs that. Made for a bare GPU machine without network (torch with CUDA): if fairseq or pytest is not
# importable, it installs the wheels carried in .whl/ (fairseq-fixed, pytest and what they need that such a machine
# lacks) into a private folder first, then runs `python -m fairseq_admin_evidence.gpu_check` from the repository root
# (no install of fairseq-admin needed). Exit status 0 only when every part held.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
SITE=${GPU_CHECK_SITE:-/tmp/gpu_check_site}

if ! "$PYTHON" -c "import fairseq, pytest" >/dev/null 2>&1; then
  if compgen -G ".whl/*.whl" >/dev/null; then
    echo "[gpu_check] fairseq or pytest not importable: installing .whl/*.whl into $SITE" >&2
    if "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE" .whl/*.whl >&2; then
      export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
    else
      echo "[gpu_check] installing the carried wheels failed; the parts will report what is missing" >&2
    fi
  else
    echo "[gpu_check] fairseq or pytest not importable and no wheels in .whl/: carry them there" >&2
    exit 2
  fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "$PYTHON" -m fairseq_admin_evidence.gpu_check "$@"
