"""`weldmon train-segmenter`: train the arc segmenter's classifier on current-logged recordings.

Every recording under ``--data-root`` with its sensor log beside it (``deploy.segment.arc_train``)
is labelled by its arc current and heard under the training augmentations; the classifier is
written to ``--output`` as one small JSON artifact with its sha256. The same recordings and seed
give the same file. Torch-free: a plant can retrain on the monitor box itself.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from deploy.errors import AudioError
from deploy.frontend_params import FrontEndParams
from deploy.segment.arc_features import FeatureConfig
from deploy.segment.arc_train import AUGMENTATIONS, TrainingDataError, load_labelled, train

EXIT_USAGE = 2


def configure(parser: argparse.ArgumentParser) -> None:
    """The command's options."""
    parser.add_argument(
        "--data-root",
        required=True,
        type=Path,
        help="folder of recordings with their sensor logs (.csv of the same name) beside them; "
        "a manifest.csv there (run_id, config_folder, flac) names them and their setups",
    )
    parser.add_argument(
        "--output",
        "--out",
        dest="output",
        required=True,
        type=Path,
        help="where to write the model (JSON; its folder must exist)",
    )
    parser.add_argument("--seed", type=int, default=0, help="augmentation and initial-weight seed")


def run(args: argparse.Namespace) -> int:
    """Train and write the model; 2 for bad arguments or data, 0 when written."""
    out: Path = args.output
    if not out.parent.is_dir():
        print(f"weldmon train-segmenter: --output: no folder {out.parent}", file=sys.stderr)
        return EXIT_USAGE
    config = FeatureConfig(sample_rate=FrontEndParams().sample_rate)
    try:
        recordings = load_labelled(args.data_root, config.sample_rate)
        setups = sorted({r.setup for r in recordings})
        model = train(
            recordings,
            config,
            args.seed,
            trained={
                "command": "weldmon train-segmenter",
                "recordings": len(recordings),
                "setups": len(setups),
                "seed": args.seed,
                "augmentations": list(AUGMENTATIONS),
            },
        )
    except (TrainingDataError, AudioError) as exc:
        print(f"weldmon train-segmenter: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        digest = model.save(out)
    except OSError as exc:
        print(f"weldmon train-segmenter: cannot write {out}: {exc}", file=sys.stderr)
        return 1
    print(
        f"{out}: arc segmenter trained on {len(recordings)} recordings of {len(setups)} "
        f"setups; sha256 {digest}"
    )
    return 0
