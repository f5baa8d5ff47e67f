#!/usr/bin/env bash
# The test command: system packages, virtual environment, lint, then the whole test suite.
# Extra arguments go to pytest (e.g. scripts/test.sh -k replay).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/system-deps.sh
bash scripts/venv.sh "train,dev,opcua,console"

echo "== ruff" >&2
.venv/bin/ruff check .
.venv/bin/ruff format --check .

echo "== pytest" >&2
.venv/bin/python -m pytest "$@"
