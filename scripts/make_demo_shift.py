"""Make the demo's synthetic shift: welds from a synthetic dataset, back to back with idle gaps.

    python scripts/make_demo_shift.py DATASET_DIR OUT.flac [--welds 6] [--gap 4] [--seed 0]
        [--truth OUT.truth.csv]

Takes recordings from `DATASET_DIR` (made by `python -m training.synthetic`), alternating good
and defect welds, and joins them with about `--gap` seconds of quiet room noise (about -60 dBFS), so
the monitor's arc gate has real starts and ends to find. Prints one line per weld (its offset
in the shift and its true label) and writes them to the truth CSV (weld, start_s, end_s,
label, source), which `scripts/demo_table.py` puts beside the monitor's verdicts.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

IDLE_RMS = 0.001  # quiet room noise between welds (~ -60 dBFS): well under any arc
GAP_JITTER = (0.75, 1.5)  # each idle gap is --gap times a factor drawn from this range


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--welds", type=int, default=6)
    ap.add_argument("--gap", type=float, default=4.0, help="idle seconds between welds")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--truth", type=Path, help="truth CSV (default: OUT with .truth.csv)")
    args = ap.parse_args(argv)
    truth_path = args.truth or args.out.with_suffix(".truth.csv")
    good = sorted((args.dataset / "good_weld").rglob("*.flac"))
    defect = sorted((args.dataset / "defect_data_weld").rglob("*.flac"))
    if not good or not defect:
        print(f"{args.dataset}: needs good_weld/ and defect_data_weld/ recordings", file=sys.stderr)
        return 2
    rng = np.random.default_rng(args.seed)
    rate = sf.info(str(good[0])).samplerate
    parts: list[np.ndarray] = []
    truth: list[dict[str, object]] = []
    offset = 0
    for i in range(args.welds):
        source = (good, defect)[i % 2][i // 2 % len((good, defect)[i % 2])]
        audio, file_rate = sf.read(str(source), dtype="float32")
        if file_rate != rate:
            print(f"{source}: {file_rate} Hz, expected {rate} Hz", file=sys.stderr)
            return 2
        # Gaps vary around --gap, so the welds' pattern in time has one way to line up with
        # the monitor's results (demo_table.py matches them by time).
        gap = int(args.gap * rng.uniform(*GAP_JITTER) * rate)
        idle = (rng.standard_normal(gap) * IDLE_RMS).astype(np.float32)
        parts += [idle, audio]
        offset += gap
        label = "defect" if i % 2 else "good_weld"
        print(f"weld {i + 1}: {offset / rate:7.2f} s  {len(audio) / rate:5.2f} s  {label}")
        truth.append(
            {
                "weld": i + 1,
                "start_s": round(offset / rate, 3),
                "end_s": round((offset + len(audio)) / rate, 3),
                "label": label,
                "source": source.name,
            }
        )
        offset += len(audio)
    parts.append((rng.standard_normal(int(args.gap * rate)) * IDLE_RMS).astype(np.float32))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(args.out), np.concatenate(parts), rate, subtype="PCM_16")
    with truth_path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(truth[0]))
        writer.writeheader()
        writer.writerows(truth)
    return 0


if __name__ == "__main__":
    sys.exit(main())
