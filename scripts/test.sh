#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the test suite on CPU: lint, then pytest. CI runs everything.
#   bash scripts/test.sh [--fast] [PYTEST_ARGS...]
# --fast: the edit-test loop's tier, without the tests marked slow (real multi-process trainings, recipes end to
# end, fresh virtual environments); under 5 minutes on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
MARKERS=()
if [[ ${1:-} == --fast ]]; then
  shift
  MARKERS=(-m "not slow")
fi
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/python -m pytest -q tests "${MARKERS[@]}" "$@"
