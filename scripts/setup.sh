#!/usr/bin/env bash
# Install fairseq-admin and its stack into a virtual environment (default: .venv), at the versions tested
# together (constraints.txt), in the one order that works on Python 3.11:
#   1. torch (TORCH_SPEC, default: the constraints' torch) — first, so nothing pulls another build of it;
#   2. fairseq, unless the environment already has one (a fork, an editable checkout: it is kept):
#      fairseq-fixed 0.12.3.1 (fairseq 0.12.2 does not install on 3.11), built from source with
#      --no-build-isolation, so its build uses the torch from step 1 instead of fetching a CUDA one;
#   3. this package in editable mode, with the test tools.
# Safe to re-run: finished steps are skipped by pip.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-}

quiet_pip() {  # pip without its per-index "Location ... is ignored" noise
  "$VENV/bin/python" -m pip install -q "$@" 2> >(grep -v "^WARNING: Location" >&2)
}

start=$(date +%s)
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
CONSTRAINTS=constraints.txt
if [ -n "$TORCH_SPEC" ]; then  # another torch: the rest of the constraints still hold
  CONSTRAINTS="$VENV/constraints-without-torch.txt"
  grep -v '^torch==' constraints.txt > "$CONSTRAINTS"
fi
echo "setup: [1/3] ${TORCH_SPEC:-torch ($(grep '^torch==' constraints.txt))}"
quiet_pip -c "$CONSTRAINTS" "${TORCH_SPEC:-torch}"
if ! "$VENV/bin/python" -c "import fairseq" 2>/dev/null; then
  echo "setup: [2/3] fairseq-fixed (builds from source, about 5 minutes)"
  quiet_pip -c "$CONSTRAINTS" cython numpy setuptools wheel
  quiet_pip -c "$CONSTRAINTS" --no-build-isolation fairseq-fixed
else
  echo "setup: [2/3] fairseq $("$VENV/bin/python" -c "import fairseq; print(fairseq.__version__)") already installed: kept"
fi
echo "setup: [3/3] fairseq-admin"
quiet_pip -c "$CONSTRAINTS" -e ".[test]"
echo "setup: done in $(( $(date +%s) - start ))s; environment: $VENV"
