"""The cv figure of a seed ensemble, from cv runs that already exist (no training).

    python bench/seed_ensemble_cv.py --out DIR CV_RUN_DIR CV_RUN_DIR ...

Each CV_RUN_DIR is one `weldmon cv` (or bench/cv_techniques.py) run of the same recipe and
data with another seed: the same leave-one-config-folder-out folds, one checkpoint per fold.
For every fold the held-out welds are judged by each seed's checkpoint, the members' window
probabilities averaged (as the ensemble artifact does) and top-k pooled; the fold's threshold
is the mean of the members' thresholds, each chosen on that fold's training folders only.
The pooled figures and intervals are `training.cv.summarise`'s, so the line reads like every
other cv line in docs/training.md. An ensemble of seeds costs nothing to score this way once
the seeds' cv runs are there, which is why the recipe comparison runs them first.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402

from deploy.pooling import topk_pool  # noqa: E402
from training.checkpoint import load_checkpoint  # noqa: E402
from training.config import make_config  # noqa: E402
from training.cv import FOLD_NAME, SUMMARY_NAME, fold_scorer, summarise  # noqa: E402
from training.dataset import index_dataset  # noqa: E402
from training.prepare import make_store  # noqa: E402
from training.train import bag_window_probs  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="cv run folders, one per seed")
    parser.add_argument("--out", type=Path, required=True, help="where oof.csv and the summary go")
    args = parser.parse_args(argv)
    configs = [json.loads((r / SUMMARY_NAME).read_text())["config"] for r in args.runs]
    cfg = make_config(configs[0], source=str(args.runs[0]))
    index = index_dataset(
        Path(cfg.data_root), sample_rate=cfg.sample_rate, chunk_samples=cfg.chunk_samples
    )
    bags = make_store(cfg).bags(index.entries, index.report)
    folds = sorted(p.name for p in args.runs[0].glob("fold_*"))
    rows = []
    for fold in folds:
        held = json.loads((args.runs[0] / fold / FOLD_NAME).read_text())["held_out"]
        held_out = [b for b in bags if b.entry.config_folder == held]
        train_bags = [b for b in bags if b.entry.config_folder != held]
        member_probs, thresholds = [], []
        for run, member_cfg in zip(args.runs, configs, strict=True):
            ckpt = load_checkpoint(run / fold / "best_model.pt")
            scorer = fold_scorer(make_config(member_cfg), ckpt, train_bags, lambda _: None)
            member_probs.append(bag_window_probs(scorer, held_out))
            thresholds.append(float(ckpt["threshold"]))
        threshold = sum(thresholds) / len(thresholds)
        for k, bag in enumerate(held_out):
            probs = torch.stack([m[k] for m in member_probs]).mean(dim=0)
            p = float(topk_pool(probs, cfg.eval_pool_ratio))
            rows.append(
                {
                    "fold": int(fold.split("_")[1]),
                    "config_folder": held,
                    "run_id": bag.entry.run_id,
                    "weld": bag.key,
                    "label_code": bag.entry.label_code,
                    "y_true": bag.label,
                    "n_windows": bag.n_windows,
                    "p_defect": p,
                    "threshold": threshold,
                    "label": int(p >= threshold),
                }
            )
    args.out.mkdir(parents=True, exist_ok=True)
    result = summarise(
        rows,
        len(folds),
        [],
        args.out,
        {"members": [str(r) for r in args.runs]},
        protocol="leave-one-config-folder-out; a seed ensemble of existing cv runs",
    )
    m, ci = result.metrics, result.intervals
    print(
        f"| seed ensemble of {len(args.runs)} | {m['FOLDS']} | {m['WELDS']} "
        + " ".join(f"| {m[k]:.3f} {ci[k].format()}" for k in ("ROC_AUC", "PR_AUC", "F1_DEFECT"))
        + f" | {m['FALSE_ALARM_RATE']:.2f} | {m['RECALL_DEFECT']:.2f} |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
