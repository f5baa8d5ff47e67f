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

# One pytest process: measured here, the unit group on two pytest-xdist workers took 91 s
# against 55 s in one process (docs/benchmarks.md); the live tests stay serial anyway.
echo "== pytest" >&2
.venv/bin/python -m pytest "$@"
