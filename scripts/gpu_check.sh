#!/usr/bin/env bash
# The GPU checks of fairseq-admin in one run; prints ONE JSON object on stdout, progress on stderr.
#
#   bash scripts/gpu_check.sh DATA_BIN [--cpu] [--out-dir DIR] [--parts fp16_flat,one_step,...]
#
# Made for a bare GPU machine without network (Python 3.12, torch with CUDA): if fairseq is not
# importable, it installs the wheels carried in .whl/ (fairseq-fixed and what it needs that such a
# machine lacks; see fairseq_admin_evidence/gpu_check.py's docstring and the README of the check) into a
# private folder first, then runs `python -m fairseq_admin_evidence.gpu_check` from the repository root
# (no install of fairseq-admin needed). The JSON says which parts held; exit status 0 only when all did.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
SITE=${GPU_CHECK_SITE:-/tmp/gpu_check_site}

if ! "$PYTHON" -c "import fairseq" >/dev/null 2>&1; then
  if compgen -G ".whl/*.whl" >/dev/null; then
    echo "[gpu_check] fairseq not importable: installing .whl/*.whl into $SITE" >&2
    if "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE" .whl/*.whl >&2; then
      export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
    else
      echo "[gpu_check] installing the carried wheels failed; the parts will report what is missing" >&2
    fi
  else
    echo "[gpu_check] fairseq not importable and no wheels in .whl/; the parts will fail" >&2
  fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "$PYTHON" -m fairseq_admin_evidence.gpu_check "$@"
