#!/usr/bin/env bash
# Create .venv and install weldmon into it: torch first when an extra needs it (pinned, CPU
# build where the platform has one), then the project with the extras given as arguments
# (e.g. "train,dev"; "" for the base install, which runs ONNX artifacts without torch).
# Re-running is cheap: it reinstalls only when pyproject.toml or the extras changed.
set -euo pipefail
cd "$(dirname "$0")/.."

extras="${1-train}"
python_bin="${PYTHON:-$(command -v python3.11 || command -v python3)}"
venv=".venv"
stamp="$venv/.weldmon-installed"
want="$(sha256sum pyproject.toml | cut -d' ' -f1) $extras"

if [ ! -x "$venv/bin/python" ]; then
  "$python_bin" -m venv "$venv"
fi
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
"$venv/bin/python" -m pip install -q --upgrade pip
# torch before the project: an unpinned resolver run would pick a multi-GB CUDA build.
if [[ ",$extras," =~ ,(torch|export|train), ]]; then
  torch_spec="$(grep -o '"torch==[^"]*"' pyproject.toml | head -n 1 | tr -d '"')"
  "$venv/bin/python" -m pip install -q "$torch_spec"
fi
if [ -n "$extras" ]; then
  "$venv/bin/python" -m pip install -q -e ".[${extras}]"
else
  "$venv/bin/python" -m pip install -q -e .
fi
echo "$want" > "$stamp"
