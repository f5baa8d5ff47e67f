"""Leave-one-config-folder-out cv of each session-robustness technique, one line each.

    python bench/cv_techniques.py [--data-root DIR] [--out DIR] [--seeds 42,43,44,45,46]
                                  [--set KEY=VALUE ...] VARIANT ...

Every variant is the same base recipe (the config's defaults, or --base FILE) with a few
keys changed (VARIANTS below); each runs `training.cv.cross_validate` on the same feature
store and prints ROC-AUC, PR-AUC and F1_DEFECT with their 95 % folder-bootstrap intervals
and the seconds it took, once per seed, then (with several seeds) one summary line per
variant: the mean and sample standard deviation over the seeds of ROC-AUC, false-alarm rate
and recall. On 23 recordings one training run is a draw: a default changes only on a mean
over at least 5 seeds that beats the current one by more than the seed spread, so
docs/training.md quotes the summary lines. Fold-parallelism is off on purpose (a shared
2-core machine); run it under `nice`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from training.config import load_config, make_config  # noqa: E402
from training.cv import cross_validate  # noqa: E402
from training.prepare import make_store  # noqa: E402

AUGMENT_ALL = {
    "augment_grid_shift": True,
    "augment_eq_db": 6.0,
    "augment_noise_p": 0.5,
    "augment_mix_p": 0.5,
    "augment_reverb_p": 0.3,
    "specaugment_time": 8,
    "specaugment_bands": 6,
}
# name -> keys changed from the base recipe
VARIANTS: dict[str, dict[str, object]] = {
    "file": {"segmentation": "file"},  # the original's data: whole files, idle noise included
    "weld": {},  # the daemon's welds (auto: sensor CSV, else the gate)
    "band": {"input_norm": "band"},
    "shift": {"augment_grid_shift": True},
    "eq": {"augment_eq_db": 6.0},
    "noise": {"augment_noise_p": 0.5},
    "mix": {"augment_mix_p": 0.5},
    "reverb": {"augment_reverb_p": 0.3},
    "specaug": {"specaugment_time": 8, "specaugment_bands": 6},
    "augment": AUGMENT_ALL,
    "balance": {"balance_folders": True},
    "typehead": {"type_head_weight": 0.3},
    "small": {"width": 8, "dropout": 0.3, "weight_decay": 1e-3},
    "band+augment": {"input_norm": "band", **AUGMENT_ALL},
    "band+augment+balance": {"input_norm": "band", "balance_folders": True, **AUGMENT_ALL},
    "band+augment+balance+typehead": {
        "input_norm": "band",
        "balance_folders": True,
        "type_head_weight": 0.3,
        **AUGMENT_ALL,
    },
    # The band-statistics scorer (deploy.backbone, kind "stats"): ~2.8k weights, not ~186k.
    "stats": {"backbone_kind": "stats", "input_norm": "band", "width": 32, "lr": 1e-3},
    "stats+augment": {
        "backbone_kind": "stats",
        "input_norm": "band",
        "width": 32,
        "lr": 1e-3,
        **AUGMENT_ALL,
    },
    "stats+augment+balance": {
        "backbone_kind": "stats",
        "input_norm": "band",
        "width": 32,
        "lr": 1e-3,
        "balance_folders": True,
        **AUGMENT_ALL,
    },
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variants", nargs="+", choices=sorted(VARIANTS))
    parser.add_argument("--base", type=Path, help="base training config (default: defaults)")
    parser.add_argument("--data-root", default=str(REPO_ROOT.parent / "shared" / "weld-audio"))
    parser.add_argument("--out", type=Path, default=Path("/tmp/weldmon-cv-techniques"))
    parser.add_argument("--cache", type=Path, help="feature cache folder (shared by variants)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a base key for every variant (YAML value)")  # fmt: skip
    parser.add_argument("--seeds", default=None,
                        help="comma-separated seeds: one cv per seed, then mean +- sd")  # fmt: skip
    args = parser.parse_args(argv)
    import yaml

    base = dict(load_config(args.base).model_dump()) if args.base else {}
    base.update({k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)})
    base["data_root"] = args.data_root
    if args.cache:
        base["feature_cache_dir"] = str(args.cache)
    seeds = [int(x) for x in args.seeds.split(",")] if args.seeds else [base.get("seed")]
    for name in args.variants:
        runs: list[dict[str, float]] = []
        for seed in seeds:
            keys = {**base, **VARIANTS[name]}
            if seed is not None:
                keys["seed"] = seed
            cfg = make_config(keys, source=name)
            started = time.perf_counter()
            out = args.out / name if len(seeds) == 1 else args.out / f"{name}-seed{seed}"
            result = cross_validate(
                cfg, out, store=make_store(cfg), progress=False, log=lambda _: None
            )
            m, ci = result.metrics, result.intervals
            runs.append({k: float(m[k]) for k in ("ROC_AUC", "FALSE_ALARM_RATE", "RECALL_DEFECT")})
            print(
                f"| {name} | seed {cfg.seed} | {m['FOLDS']} | {m['WELDS']} "
                + " ".join(
                    f"| {m[k]:.3f} {ci[k].format()}" for k in ("ROC_AUC", "PR_AUC", "F1_DEFECT")
                )
                + f" | {m['FALSE_ALARM_RATE']:.2f} | {m['RECALL_DEFECT']:.2f}"
                + f" | {time.perf_counter() - started:.0f} s |",
                flush=True,
            )
        if len(runs) > 1:
            print(f"| {name} | mean +- sd over {len(runs)} seeds " + _summary(runs), flush=True)
    return 0


def _summary(runs: list[dict[str, float]]) -> str:
    """ROC-AUC, false-alarm rate and recall: mean +- sample sd (min-max) over the seeds."""
    cells = []
    for key in ("ROC_AUC", "FALSE_ALARM_RATE", "RECALL_DEFECT"):
        values = [r[key] for r in runs]
        mean, sd = statistics.fmean(values), statistics.stdev(values)
        cells.append(f"{key} {mean:.3f} +- {sd:.3f} ({min(values):.3f}-{max(values):.3f})")
    return "| " + " | ".join(cells) + " |"


if __name__ == "__main__":
    sys.exit(main())
