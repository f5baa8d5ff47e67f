#!/usr/bin/env bash
# The test command: system packages, virtual environment, lint, type check, then the whole
# test suite.
# Extra arguments go to pytest (e.g. scripts/test.sh -k replay).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/system-deps.sh
bash scripts/venv.sh "train,dev,opcua,console"

echo "== ruff" >&2
.venv/bin/ruff check .
.venv/bin/ruff format --check .

# [tool.mypy] in pyproject.toml: strict on deploy/ and monitor/pipeline/. ~20 s cold on the
# 2-core CI box (a clean clone has no .mypy_cache).
echo "== mypy" >&2
.venv/bin/mypy

# The unit group on both cores (pytest-xdist), then the rest in one process: the live tests
# play audio in real time and own their broker and sound server, so they stay serial. Extra
# arguments go to both runs; one they leave empty (pytest's exit 5) is no failure, both are.
empty=0
run_pytest() {
  local rc=0
  .venv/bin/python -m pytest "$@" || rc=$?
  if [ "$rc" -eq 5 ]; then
    empty=$((empty + 1))
  elif [ "$rc" -ne 0 ]; then
    exit "$rc"
  fi
}
echo "== pytest: unit (2 workers)" >&2
run_pytest -m unit -n 2 "$@"
echo "== pytest: integration and realdata" >&2
run_pytest -m "not unit" "$@"
if [ "$empty" -eq 2 ]; then
  echo "no test selected" >&2
  exit 5
fi
