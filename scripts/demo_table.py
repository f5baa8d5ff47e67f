"""The demo's last word: each weld's truth beside the monitor's verdict.

    python scripts/demo_table.py SHIFT.truth.csv RESULTS.jsonl

`SHIFT.truth.csv` is written by `scripts/make_demo_shift.py` (where each weld lies in the
shift and its true label); `RESULTS.jsonl` is what `weldmon replay` printed, one weld_result
per line. A result belongs to the truth weld its time span overlaps. Results carry absolute
UTC times, the truth file seconds into the shift: when a result says where in its source it
lies (`source.start_s`) that is used; otherwise the one shift that lines most results up with
the truth welds is found by trying each pairing. Welds the monitor missed and detections of
no weld get rows too. Exit code 0 when the table could be made (whatever the verdicts).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

MISSED = "(missed)"


@dataclass(frozen=True)
class TruthWeld:
    weld: int
    start_s: float
    end_s: float
    label: str


@dataclass(frozen=True)
class Verdict:
    start_s: float  # seconds into the shift when `aligned`, else relative to the first result
    end_s: float
    label: str
    p_defect: float
    aligned: bool


@dataclass(frozen=True)
class Row:
    weld: str
    at_s: float
    truth: str
    verdict: str
    p_defect: float | None

    @property
    def agrees(self) -> bool:
        return self.truth == self.verdict


def read_truth(path: Path) -> list[TruthWeld]:
    with path.open(newline="") as fh:
        return [
            TruthWeld(int(r["weld"]), float(r["start_s"]), float(r["end_s"]), r["label"])
            for r in csv.DictReader(fh)
        ]


def _utc_s(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def read_results(path: Path) -> list[Verdict]:
    """weld_result lines of `weldmon replay`'s stdout (other lines are ignored)."""
    records = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and record.get("kind") == "weld_result":
            records.append(record)
    if not records:
        return []
    t0 = _utc_s(records[0]["started_at"])
    out = []
    for r in records:
        start_in_source = (r.get("source") or {}).get("start_s")
        if start_in_source is not None:
            start, aligned = float(start_in_source), True
        else:
            start, aligned = _utc_s(r["started_at"]) - t0, False
        out.append(
            Verdict(start, start + float(r["duration_s"]), r["label_name"], r["p_defect"], aligned)
        )
    return out


def _overlaps(v: Verdict, t: TruthWeld, shift: float) -> bool:
    return v.start_s + shift < t.end_s and v.end_s + shift > t.start_s


def _pairs(truth: list[TruthWeld], verdicts: list[Verdict], shift: float) -> dict[int, int]:
    """truth index -> verdict index, each verdict to the first free weld it overlaps."""
    pairs: dict[int, int] = {}
    for vi, v in enumerate(verdicts):
        for ti, t in enumerate(truth):
            if ti not in pairs and _overlaps(v, t, shift):
                pairs[ti] = vi
                break
    return pairs


def best_shift(truth: list[TruthWeld], verdicts: list[Verdict]) -> float:
    """The offset of the verdicts' clock in the shift: 0 when they are aligned, else the one
    of every (verdict, weld) start pairing that pairs the most verdicts with welds."""
    if not verdicts or all(v.aligned for v in verdicts):
        return 0.0
    candidates = [t.start_s - v.start_s for v in verdicts for t in truth]
    return max(candidates, key=lambda s: (len(_pairs(truth, verdicts, s)), -abs(s)))


def table_rows(truth: list[TruthWeld], verdicts: list[Verdict]) -> list[Row]:
    """One row per truth weld (its verdict, or missed), then one per unpaired detection."""
    shift = best_shift(truth, verdicts)
    pairs = _pairs(truth, verdicts, shift)
    rows = []
    for ti, t in enumerate(truth):
        v = verdicts[pairs[ti]] if ti in pairs else None
        rows.append(
            Row(
                str(t.weld),
                t.start_s,
                t.label,
                v.label if v else MISSED,
                v.p_defect if v else None,
            )
        )
    paired = set(pairs.values())
    for vi, v in enumerate(verdicts):
        if vi not in paired:
            rows.append(Row("-", v.start_s + shift, "(no weld)", v.label, v.p_defect))
    return rows


def format_table(rows: list[Row]) -> str:
    lines = [f"{'weld':>4}  {'at (s)':>7}  {'truth':<10} {'verdict':<10} {'p_defect':>8}"]
    for r in rows:
        p = f"{r.p_defect:8.3f}" if r.p_defect is not None else f"{'-':>8}"
        mark = "" if r.agrees else "  <- differs"
        lines.append(f"{r.weld:>4}  {r.at_s:7.2f}  {r.truth:<10} {r.verdict:<10} {p}{mark}")
    welds = [r for r in rows if r.weld != "-"]
    agree = sum(r.agrees for r in welds)
    lines.append(
        f"{agree}/{len(welds)} welds judged as labelled. The demo's model was trained on welds "
        "from the same synthetic generator: this shows the pipeline working, not its accuracy."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("truth", type=Path, help="SHIFT.truth.csv from make_demo_shift.py")
    ap.add_argument("results", type=Path, help="weldmon replay's stdout (JSON lines)")
    args = ap.parse_args(argv)
    try:
        truth, verdicts = read_truth(args.truth), read_results(args.results)
    except (OSError, KeyError, ValueError) as exc:
        print(f"demo_table: {exc}", file=sys.stderr)
        return 2
    print(format_table(table_rows(truth, verdicts)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
