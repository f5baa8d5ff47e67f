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

# With arguments (e.g. -k replay): one pytest process, as given.
if [ "$#" -gt 0 ]; then
  echo "== pytest" >&2
  exec .venv/bin/python -m pytest "$@"
fi

# The whole suite: its time is the live tests, which play audio in real time and leave a core
# mostly idle (docs/benchmarks.md, "Where the suite's time goes"). So the in-process unit group
# (about a minute of CPU) runs beside them in a second process with its own temp folder, and
# the torch-free base install some tests need is built meanwhile (tests/support/base_venv.py:
# its lock makes the first test that needs it wait for it, never build it twice; a failed
# build here is retried there). xdist was measured slower on 2 cores (docs/benchmarks.md).
logs="$(mktemp -d)"
.venv/bin/python -c "from tests.support.base_venv import ensure_base_venv; ensure_base_venv()" \
  > "$logs/base-venv.log" 2>&1 &
echo "== pytest: the unit group in a second process (its report follows the rest)" >&2
.venv/bin/python -m pytest -m unit -p no:cacheprovider --basetemp "$logs/unit-tmp" \
  > "$logs/unit.log" 2>&1 &
unit_pid=$!
echo "== pytest: integration and realdata" >&2
set +e
.venv/bin/python -m pytest -m "not unit" --basetemp "$logs/rest-tmp"
rest=$?
wait "$unit_pid"
unit=$?
set -e
echo "== pytest: the unit group" >&2
cat "$logs/unit.log"
echo "== pytest exit codes: integration and realdata $rest, unit $unit" >&2
[ "$rest" -eq 0 ] && [ "$unit" -eq 0 ]
