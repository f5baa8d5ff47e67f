"""Segmentation judged on setups it was not tuned on: leave-one-setup-out over the 9 config
folders of the shared recordings, as recorded and on a simulated factory floor.

For each segmenter family (the crackle segmenter, the arc gate) and each of the 9 folders:
the family's settings are picked from a small grid by how many recordings of the *other 8*
folders come out right under the tuning cases (as recorded, gain -20 and +6 dB, pink noise
at -50 dBFS, a neighbour's weld at -12 dB, grinder bursts as loud as the arc; noise seeds
other than the evaluation's), then
the held-out folder's recordings are scored under every case. "Right" means exactly one weld
with start and end both within 0.5 s of the arc current in the sensor log (> 5 A, clock
offset from the broadband envelope: tests/support/arc_truth.py). The shipped defaults are
the grid point the same rule picks on all 9 folders. The gate at its shipped settings (hand-
tuned on all 23 recordings) is shown too, labelled as tuned on the data it is scored on.

The learned arc segmenter (deploy.segment.arc) has no grid: for each held-out folder its frame
classifier is trained on the other 8 folders' recordings alone (their arc currents as labels,
heard under the training augmentations of deploy.segment.arc_train, with neighbours from those
8 folders only), then the held-out folder is scored under every case at the default settings.

23 recordings from 9 setups are few: every count carries a 95 % Wilson interval, and they
are small-sample figures, not accuracy claims.

    nice -n 10 .venv/bin/python bench/segmentation_loso.py [--weld-audio DIR] [--quick]
        [--only arc|crackle|gate] [--arc-hangover S] [--latency]

Prints Markdown tables (for docs/segmentation.md). --quick: a 2-point grid per family and
the acceptance cases only (a smoke run, not figures to quote).
"""

from __future__ import annotations

import argparse
import csv
import itertools
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from deploy.segment.arc import ArcParams, ArcSegmenter  # noqa: E402
from deploy.segment.arc_features import FeatureConfig  # noqa: E402
from deploy.segment.arc_model import ArcModel  # noqa: E402
from deploy.segment.arc_train import (  # noqa: E402
    AUGMENTATIONS,
    NEEDS_NEIGHBOUR,
    LabelledRecording,
    examples,
    fit,
)
from deploy.segment.crackle import CrackleSegmenter  # noqa: E402
from deploy.segment.crackle_params import CrackleParams  # noqa: E402
from deploy.segment.current import CurrentParams, CurrentSegmenter  # noqa: E402
from deploy.segment.gate import GateParams  # noqa: E402
from deploy.segment.gate import segment_recording as gate_segment  # noqa: E402
from deploy.segment.offline import segment_recording  # noqa: E402
from deploy.sensorlog import audio_clock_offset, process_samples, read_sensor_log  # noqa: E402
from tests.support.arc_truth import recording_with_truth  # noqa: E402
from tests.support.data import Recording, weld_audio_root  # noqa: E402
from tests.support.factory_floor import (  # noqa: E402
    ArcRecording,
    CaseAudio,
    FloorCase,
    build_case,
)

RATE = 16_000
TOLERANCE_S = 0.5  # the acceptance criterion on start and end
TUNE_SEED = 101  # noise, bursts and neighbour shifts while tuning
EVAL_SEED = 202  # ... while scoring the held-out folder (other draws of the same kinds)

CASES = (
    FloorCase("as recorded", "as_recorded"),
    FloorCase("gain -20 dB", "gain", -20.0),
    FloorCase("gain -10 dB", "gain", -10.0),
    FloorCase("gain +6 dB", "gain", 6.0),
    FloorCase("gain +12 dB", "gain", 12.0),
    *(FloorCase(f"pink {v} dBFS", "pink", float(v)) for v in (-70, -60, -50, -40)),
    *(FloorCase(f"white {v} dBFS", "white", float(v)) for v in (-70, -60, -50, -40)),
    *(FloorCase(f"neighbour {v} dB", "neighbour", float(v)) for v in (-20, -12, -6)),
    FloorCase("neighbour -12 dB, warm", "neighbour", -12.0, warm=True),
    FloorCase("grinder -50 dBFS", "grinder", -50.0),
    FloorCase("grinder -40 dBFS", "grinder", -40.0),
    FloorCase("impacts -20 dBFS peak", "impacts", -20.0),
    FloorCase("hum + fan -30 dBFS", "hum_fan", -30.0),
    FloorCase("whine 3.15 kHz -50 dBFS", "whine", -50.0),
    FloorCase("capture 44.1 kHz", "rate", 44_100.0),
    FloorCase("capture 48 kHz", "rate", 48_000.0),
)
TUNING = (
    "as recorded",
    "gain -20 dB",
    "gain +6 dB",
    "pink -50 dBFS",
    "neighbour -12 dB",
    "grinder -50 dBFS",
)
ACCEPTANCE = (*TUNING, "neighbour -12 dB, warm")


@dataclass(frozen=True)
class Family:
    """A segmenter family: its settings grid (the first point is its shipped default) and
    how it segments a whole recording."""

    name: str
    grid: Sequence[object]
    segment: Callable[[np.ndarray, int, object], list[tuple[int, int]]]
    describe: Callable[[object], str]


def crackle_family(quick: bool) -> Family:
    base = CrackleParams()
    if quick:
        grid = [base, base.model_copy(update={"crackle_on": 5.0})]
    else:
        grid = [base] + [
            base.model_copy(update={"crackle_on": k, "edge_db": e, "ref_s": r})
            for k, e, r in itertools.product((4.0, 4.5, 5.0, 5.5, 6.0), (6.0, 7.0, 8.0), (1.0, 2.0))
        ]
    return Family(
        "crackle",
        _unique(grid),
        lambda x, rate, p: segment_recording(x, rate, CrackleSegmenter(p, rate)),  # type: ignore[arg-type]
        lambda p: (
            f"on {p.crackle_on:g}, edge {p.edge_db:g} dB, ref {p.ref_s:g} s"  # type: ignore[attr-defined]
        ),
    )


def gate_family(quick: bool) -> Family:
    base = GateParams()
    pairs = (
        ((16.0, 10.0), (18.0, 10.0))
        if quick
        else itertools.product((14.0, 16.0, 18.0, 20.0), (8.0, 10.0, 12.0))
    )
    grid = [base] + [base.model_copy(update={"on_db": o, "edge_db": e}) for o, e in pairs]
    return Family(
        "gate",
        _unique(grid),
        lambda x, rate, p: gate_segment(x, rate, p),  # type: ignore[arg-type]
        lambda p: f"on {p.on_db:g} dB, edge {p.edge_db:g} dB",  # type: ignore[attr-defined]
    )


def _unique(grid: list[object]) -> list[object]:
    out: list[object] = []
    for p in grid:
        if p not in out:
            out.append(p)
    return out


@dataclass(frozen=True)
class Outcome:
    """One recording under one case: weld count and, for exactly one weld, its errors."""

    welds: int
    start_err: float | None  # detected minus true (s)
    end_err: float | None

    @property
    def ok(self) -> bool:
        return (
            self.start_err is not None
            and self.end_err is not None
            and abs(self.start_err) <= TOLERANCE_S
            and abs(self.end_err) <= TOLERANCE_S
        )


def score(welds: list[tuple[int, int]], audio: CaseAudio, rate: int) -> Outcome:
    """Welds that end after ``audio.scored_after_s`` against the target's arc."""
    mine = [(a / rate, b / rate) for a, b in welds if b / rate > audio.scored_after_s]
    if len(mine) != 1:
        return Outcome(len(mine), None, None)
    return Outcome(1, mine[0][0] - audio.arc_s[0], mine[0][1] - audio.arc_s[1])


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion k/n."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def fraction(k: int, n: int) -> str:
    lo, hi = wilson(k, n)
    return f"{k}/{n} [{lo * 100:.0f}-{hi * 100:.0f} %]"


class Corpus:
    """The recordings, their arcs, and each one's neighbour and previous weld."""

    def __init__(self, root: Path) -> None:
        with (root / "manifest.csv").open(newline="") as fh:
            rows = list(csv.DictReader(fh))
        self.recs = [
            Recording(
                r["run_id"],
                r["label_code"],
                r["label"],
                r["config_folder"],
                root / r["flac"],
                float(r["duration_s"]),
            )
            for r in rows
        ]
        self.folders = sorted({r.config_folder for r in self.recs})
        self.arcs: dict[str, ArcRecording] = {}
        for rec in self.recs:
            samples, truth = recording_with_truth(rec)
            self.arcs[rec.run_id] = ArcRecording(rec.run_id, samples, (truth.start_s, truth.end_s))

    def of_folder(self, folder: str) -> list[Recording]:
        return [r for r in self.recs if r.config_folder == folder]

    def neighbour(self, rec: Recording) -> ArcRecording:
        """A recording of the next setup (folders in name order, cyclic): another cell."""
        mine = self.of_folder(rec.config_folder)
        nxt = self.folders[(self.folders.index(rec.config_folder) + 1) % len(self.folders)]
        theirs = self.of_folder(nxt)
        return self.arcs[theirs[mine.index(rec) % len(theirs)].run_id]

    def previous(self, rec: Recording) -> ArcRecording:
        """Another weld of the same setup: the station's weld before this one."""
        mine = self.of_folder(rec.config_folder)
        return self.arcs[mine[(mine.index(rec) - 1) % len(mine)].run_id]

    def case_audio(self, case: FloorCase, rec: Recording, seed: int) -> CaseAudio:
        return build_case(
            case,
            self.arcs[rec.run_id],
            RATE,
            seed,
            neighbour=self.neighbour(rec),
            previous=self.previous(rec),
        )


Table = dict[tuple[int, str, str], Outcome]  # (grid index, case name, run_id) -> outcome


def run_grid(
    corpus: Corpus,
    family: Family,
    points: Sequence[int],
    cases: Sequence[FloorCase],
    seed: int,
    recs: Sequence[Recording] | None = None,
) -> Table:
    """Every recording (of ``recs``, default all) under every case, segmented at every grid
    point in ``points``."""
    out: Table = {}
    for rec in corpus.recs if recs is None else recs:
        for case in cases:
            audio = corpus.case_audio(case, rec, seed)
            for g in points:
                welds = family.segment(audio.samples, RATE, family.grid[g])
                out[(g, case.name, rec.run_id)] = score(welds, audio, RATE)
    return out


def pick(table: Table, family: Family, runs: set[str]) -> int:
    """The grid point with the most right recordings of ``runs`` over the tuning cases;
    ties: smaller mean worst boundary error, then grid order (the default first)."""

    def key(g: int) -> tuple[int, float, int]:
        outcomes = [o for (gg, c, r), o in table.items() if gg == g and r in runs]
        right = sum(o.ok for o in outcomes)
        errs = [max(abs(o.start_err), abs(o.end_err)) for o in outcomes if o.ok]  # type: ignore[arg-type]
        return (-right, float(np.mean(errs)) if errs else math.inf, g)

    return min(range(len(family.grid)), key=key)


@dataclass
class Evaluated:
    """Held-out outcomes of one family: per case and run, and the point each folder used."""

    outcomes: dict[tuple[str, str], Outcome]
    picked: dict[str, int]


def leave_one_setup_out(
    corpus: Corpus, family: Family, cases: Sequence[FloorCase]
) -> tuple[Evaluated, int]:
    tuning = [c for c in cases if c.name in TUNING]
    began = time.monotonic()
    tune = run_grid(corpus, family, range(len(family.grid)), tuning, TUNE_SEED)
    print(
        f"<!-- {family.name}: tuned {len(family.grid)} grid points in "
        f"{time.monotonic() - began:.0f} s -->",
        flush=True,
    )
    picked = {
        f: pick(tune, family, {r.run_id for r in corpus.recs if r.config_folder != f})
        for f in corpus.folders
    }
    shipped = pick(tune, family, {r.run_id for r in corpus.recs})
    outcomes: dict[tuple[str, str], Outcome] = {}
    for g in sorted(set(picked.values())):
        held = [r for r in corpus.recs if picked[r.config_folder] == g]
        for (_, case, run), o in run_grid(corpus, family, [g], cases, EVAL_SEED, held).items():
            outcomes[(case, run)] = o
    return Evaluated(outcomes, picked), shipped


def fixed_point(corpus: Corpus, family: Family, g: int, cases: Sequence[FloorCase]) -> Evaluated:
    """Every recording at one grid point (no selection): tuned-on figures for the gate."""
    table = run_grid(corpus, family, [g], cases, EVAL_SEED)
    return Evaluated({(c, r): o for (_, c, r), o in table.items()}, {f: g for f in corpus.folders})


ARC_TRAIN_SEED = 303  # the arc classifier's augmentations and initial weights


def arc_family(models: dict[str, ArcModel], params: ArcParams) -> Family:
    """The arc segmenter at ``params``; grid point k is the model trained without folder k
    (``models`` in folder order), so `run_grid` scores each folder with its own fold's model."""
    folders = list(models)
    return Family(
        "arc",
        [models[f] for f in folders],
        lambda x, rate, m: segment_recording(x, rate, ArcSegmenter(params, rate, m)),  # type: ignore[arg-type]
        lambda m: "trained on the other 8 folders",
    )


def arc_leave_one_setup_out(
    corpus: Corpus, cases: Sequence[FloorCase], params: ArcParams
) -> tuple[Family, Evaluated]:
    """Train the arc classifier on the other 8 folders for each folder; score the folder."""
    began = time.monotonic()
    config = FeatureConfig(sample_rate=RATE)
    labelled = [
        LabelledRecording(
            r.run_id, r.config_folder, corpus.arcs[r.run_id].samples, corpus.arcs[r.run_id].arc_s
        )
        for r in corpus.recs
    ]
    plain = [n for n in AUGMENTATIONS if n not in NEEDS_NEIGHBOUR]
    cached = {
        rec.run_id: examples(rec, labelled, config, ARC_TRAIN_SEED, plain) for rec in labelled
    }
    models: dict[str, ArcModel] = {}
    for folder in corpus.folders:
        pool = [r for r in labelled if r.setup != folder]
        parts = []
        for rec in pool:
            parts.extend(cached[rec.run_id].values())
            parts.extend(
                examples(rec, pool, config, ARC_TRAIN_SEED, sorted(NEEDS_NEIGHBOUR)).values()
            )
        rows = np.concatenate([p[0] for p in parts])
        labels = np.concatenate([p[1] for p in parts])
        weights = np.concatenate([p[2] for p in parts])
        models[folder] = fit(rows, labels, weights, config, ARC_TRAIN_SEED)
    print(f"<!-- arc: trained 9 fold models in {time.monotonic() - began:.0f} s -->", flush=True)
    family = arc_family(models, params)
    outcomes: dict[tuple[str, str], Outcome] = {}
    for k, folder in enumerate(corpus.folders):
        held = corpus.of_folder(folder)
        for (_, case, run), o in run_grid(corpus, family, [k], cases, EVAL_SEED, held).items():
            outcomes[(case, run)] = o
    return family, Evaluated(outcomes, {f: k for k, f in enumerate(corpus.folders)})


DAEMON_BLOCK_S = 0.1  # the daemon's audio.block_s


def print_arc_latency(corpus: Corpus, params: ArcParams) -> None:
    """How soon the arc segmenter (its shipped model) decides each recording's start and end,
    streamed in the daemon's 0.1 s blocks: the end of the block that reports a boundary,
    against the arc current's strike, and against the end boundary itself."""
    block = round(DAEMON_BLOCK_S * RATE)
    start_after, end_after = [], []
    for rec in corpus.recs:
        x = corpus.arcs[rec.run_id].samples
        seg = ArcSegmenter(params, RATE)
        reported = []
        for pos in range(0, x.size, block):
            part = x[pos : pos + block]
            reported.extend((b, pos + part.size) for b in seg.process(part, pos))
        reported.extend((b, x.size) for b in seg.close(x.size))
        starts = [at for b, at in reported if b.kind == "start"]
        ends = [(b.index, at) for b, at in reported if b.kind == "end"]
        start_after.append(starts[0] / RATE - corpus.arcs[rec.run_id].arc_s[0])
        end_after.append((ends[-1][1] - ends[-1][0]) / RATE)
    s, e = np.array(start_after), np.array(end_after)
    print(
        f"\narc (shipped model, hangover_s {params.hangover_s:g} s), decisions streamed in "
        f"{DAEMON_BLOCK_S:g} s blocks, 23 recordings as recorded:\n"
    )
    print("| decided | median s | max s | within 1.0 s |")
    print("|---|---|---|---|")
    print(
        f"| weld_start, after the arc current's strike | {np.median(s):.2f} | {s.max():.2f} "
        f"| {int((s <= 1.0).sum())}/{s.size} |"
    )
    print(
        f"| weld end, after the end boundary | {np.median(e):.2f} | {e.max():.2f} "
        f"| {int((e <= 1.0).sum())}/{e.size} |"
    )


def summary_row(name: str, outcomes: list[Outcome]) -> str:
    n = len(outcomes)
    one = sum(o.welds == 1 for o in outcomes)
    right = sum(o.ok for o in outcomes)
    s = [abs(o.start_err) for o in outcomes if o.start_err is not None]
    e = [abs(o.end_err) for o in outcomes if o.end_err is not None]
    errs = f"{np.mean(s):.2f} / {max(s):.2f} | {np.mean(e):.2f} / {max(e):.2f}" if s else "- | -"
    return f"| {name} | {fraction(right, n)} | {one}/{n} | {errs} |"


def print_case_table(title: str, corpus: Corpus, ev: Evaluated, cases: Sequence[FloorCase]) -> None:
    print(f"\n{title}\n")
    print(
        "| case | right (both within 0.5 s) [95 % CI] | exactly one weld "
        "| start err mean / max s | end err mean / max s |"
    )
    print("|---|---|---|---|---|")
    for case in cases:
        print(summary_row(case.name, [ev.outcomes[(case.name, r.run_id)] for r in corpus.recs]))


def print_fold_table(
    title: str, corpus: Corpus, family: Family, ev: Evaluated, cases: Sequence[FloorCase]
) -> None:
    print(f"\n{title}\n")
    names = [c.name for c in cases if c.name in ACCEPTANCE]
    print("| held-out folder | runs | settings picked on the other 8 | " + " | ".join(names) + " |")
    print("|---|---|---|" + "---|" * len(names))
    for f in corpus.folders:
        runs = corpus.of_folder(f)
        cells = []
        for c in names:
            os_ = [ev.outcomes[(c, r.run_id)] for r in runs]
            worst = [max(abs(o.start_err), abs(o.end_err)) for o in os_ if o.welds == 1]  # type: ignore[arg-type]
            cells.append(
                f"{sum(o.ok for o in os_)}/{len(os_)}"
                + (f" (worst {max(worst):.2f} s)" if worst else "")
            )
        print(
            f"| {f} | {len(runs)} | {family.describe(family.grid[ev.picked[f]])} | "
            + " | ".join(cells)
            + " |"
        )


def print_current_table(corpus: Corpus) -> None:
    """Current mode from each run's own sensor log (offset from the audio, as replay does).
    Its ground truth comes from the same log: this checks the plumbing (clock placement,
    bridging, the audio moving the clock), not an independent accuracy."""
    print(
        "\ncurrent mode, each run's sensor log as its process data (the truth is the same log: "
        "a check of the placement, not an independent accuracy):\n"
    )
    outcomes = []
    for rec in corpus.recs:
        arc = corpus.arcs[rec.run_id]
        log = read_sensor_log(rec.sensor_csv)
        seg = CurrentSegmenter(CurrentParams(), RATE)
        for sample in process_samples(log, audio_clock_offset(log, arc.samples, RATE), RATE):
            seg.push(sample)
        outcomes.append(
            score(
                segment_recording(arc.samples, RATE, seg), CaseAudio(arc.samples, arc.arc_s), RATE
            )
        )
    ok = sum(
        o.welds == 1 and max(abs(o.start_err), abs(o.end_err)) <= 0.3  # type: ignore[arg-type]
        for o in outcomes
    )
    print(
        "| case | both within 0.3 s [95 % CI] | exactly one weld "
        "| start err mean / max s | end err mean / max s |"
    )
    print("|---|---|---|---|---|")
    row = summary_row("sensor log, as recorded", outcomes).split(" | ", 2)
    print(f"| sensor log, as recorded | {fraction(ok, len(outcomes))} | {row[2]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weld-audio", help="folder of the recordings (with manifest.csv)")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny grids, few cases")
    parser.add_argument(
        "--only", choices=("arc", "crackle", "gate"), help="one family only (a shorter run)"
    )
    parser.add_argument(
        "--arc-hangover",
        type=float,
        default=ArcParams().hangover_s,
        help="the arc segmenter's hangover_s (s; default: its default)",
    )
    parser.add_argument(
        "--latency",
        action="store_true",
        help="only how soon the arc segmenter decides starts and ends (its shipped model)",
    )
    args = parser.parse_args(argv)
    if args.weld_audio:
        os.environ["WELDMON_WELD_AUDIO"] = args.weld_audio
    began = time.monotonic()
    corpus = Corpus(weld_audio_root())
    cases = [c for c in CASES if not args.quick or c.name in ACCEPTANCE]
    print(
        f"Machine: {platform.node()} ({platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}); date {datetime.now(UTC):%Y-%m-%d}; load average at "
        f"start {os.getloadavg()[0]:.1f}; {len(corpus.recs)} recordings in "
        f"{len(corpus.folders)} setups{' (QUICK: not figures to quote)' if args.quick else ''}"
    )
    if args.latency:
        print_arc_latency(corpus, ArcParams(hangover_s=args.arc_hangover))
        return 0
    if args.only in (None, "arc"):
        arc_params = ArcParams(hangover_s=args.arc_hangover)
        print(f"\narc at hangover_s {arc_params.hangover_s:g} s")
        arc, arc_ev = arc_leave_one_setup_out(corpus, cases, arc_params)
        print_fold_table(
            "arc, leave-one-setup-out (classifier trained on the other 8 folders), per held-out "
            "folder:",
            corpus,
            arc,
            arc_ev,
            cases,
        )
        print_case_table(
            "arc, leave-one-setup-out, all 23 recordings held out once:", corpus, arc_ev, cases
        )
        if args.only:
            return 0
    results = {}
    families = (crackle_family(args.quick), gate_family(args.quick))
    for family in (f for f in families if args.only in (None, f.name)):
        ev, shipped = leave_one_setup_out(corpus, family, cases)
        results[family.name] = (family, ev)
        print(
            f"\n{family.name}: picked on all 9 folders (what its defaults should be): "
            f"{family.describe(family.grid[shipped])}"
        )
        print_fold_table(
            f"{family.name}, leave-one-setup-out, per held-out folder:", corpus, family, ev, cases
        )
        print_case_table(
            f"{family.name}, leave-one-setup-out, all 23 recordings held out once:",
            corpus,
            ev,
            cases,
        )
    if args.only:
        return 0
    gate = results["gate"][0]
    print_case_table(
        "gate at its shipped settings (TUNED ON these 23 recordings, by hand):",
        corpus,
        fixed_point(corpus, gate, 0, cases),
        cases,
    )
    crackle = results["crackle"][0]
    warm = [c for c in cases if c.warm]
    fast = Family(
        "crackle, own_db 3",
        [crackle.grid[0].model_copy(update={"own_db": 3.0})],  # type: ignore[attr-defined]
        crackle.segment,
        crackle.describe,
    )
    print_case_table(
        "crackle at its defaults but own_db 3 (start decided after 2 s once the station knows "
        "its welds; no selection):",
        corpus,
        fixed_point(corpus, fast, 0, warm),
        warm,
    )
    print_current_table(corpus)
    print(
        f"\n<!-- total {time.monotonic() - began:.0f} s; "
        f"load average at end {os.getloadavg()[0]:.1f} -->"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
