#!/usr/bin/env bash
# One command, end to end, on a fresh machine with no sound card and no broker:
# set up, make a synthetic example, export a deploy artifact and judge the example.
# (Grows into train -> export -> monitor replay as those parts land.)
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/system-deps.sh
bash scripts/venv.sh train

work=".weldmon-demo"
mkdir -p "$work"
.venv/bin/python - "$work" <<'PY'
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from deploy.backbone import WindowClassifier
from deploy.export import export_artifact
from deploy.frontend import FrontEndParams

work = Path(sys.argv[1])
torch.manual_seed(0)
result = export_artifact(WindowClassifier().eval(), work / "deploy_single_label.pt",
                         frontend=FrontEndParams(), threshold=0.5, eval_pool_ratio=0.05)
rng = np.random.default_rng(0)
sf.write(work / "example.flac", (rng.standard_normal(16000 * 10) * 0.1).astype("float32"), 16000)
print(f"Exported deploy model: {result.path}\n{result.summary_line()}\nsha256={result.sha256}")
PY
.venv/bin/weldmon predict --model "$work/deploy_single_label.pt" "$work/example.flac"
