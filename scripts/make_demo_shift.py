"""Make the demo's synthetic shift: welds from a synthetic dataset, back to back with idle gaps.

    python scripts/make_demo_shift.py DATASET_DIR OUT.flac [--welds 6] [--gap 4] [--seed 0]

Takes recordings from `DATASET_DIR` (made by `python -m training.synthetic`), alternating good
and defect welds, and joins them with `--gap` seconds of quiet room noise (about -60 dBFS), so
the monitor's arc gate has real starts and ends to find. Prints one line per weld: its offset
in the shift and its true label, so the demo's verdicts can be checked by eye.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

IDLE_RMS = 0.001  # quiet room noise between welds (~ -60 dBFS): well under any arc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--welds", type=int, default=6)
    ap.add_argument("--gap", type=float, default=4.0, help="idle seconds between welds")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    good = sorted((args.dataset / "good_weld").rglob("*.flac"))
    defect = sorted((args.dataset / "defect_data_weld").rglob("*.flac"))
    if not good or not defect:
        print(f"{args.dataset}: needs good_weld/ and defect_data_weld/ recordings", file=sys.stderr)
        return 2
    rng = np.random.default_rng(args.seed)
    rate = sf.info(str(good[0])).samplerate
    gap = int(args.gap * rate)
    parts: list[np.ndarray] = []
    offset = 0
    for i in range(args.welds):
        source = (good, defect)[i % 2][i // 2 % len((good, defect)[i % 2])]
        audio, file_rate = sf.read(str(source), dtype="float32")
        if file_rate != rate:
            print(f"{source}: {file_rate} Hz, expected {rate} Hz", file=sys.stderr)
            return 2
        idle = (rng.standard_normal(gap) * IDLE_RMS).astype(np.float32)
        parts += [idle, audio]
        offset += gap
        label = "defect" if i % 2 else "good_weld"
        print(f"weld {i + 1}: {offset / rate:7.2f} s  {len(audio) / rate:5.2f} s  {label}")
        offset += len(audio)
    parts.append((rng.standard_normal(gap) * IDLE_RMS).astype(np.float32))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(args.out), np.concatenate(parts), rate, subtype="PCM_16")
    return 0


if __name__ == "__main__":
    sys.exit(main())
