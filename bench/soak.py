"""Soak: a long shift through the daemon's own path at full speed; memory and fd growth.

The path is the one `weldmon run` uses after the sound device: `Pipeline` (station split,
stream resampler, arc gate, windower) -> `InferenceWorker` -> `WeldTracker` -> `EventRouter`
(its sinks: structlog JSON lines, the durable SQLite outbox -> `MqttPublisher`) -> a real
local Mosquitto.
Only the source differs: instead of PortAudio, blocks of `audio.block_s` are generated on the
fly by looping weld clips cut from the shared recordings (tests/support/shifts.py), so an
8-hour shift never exists as a file or in memory. A `mosquitto_sub` process (outside this
process, so its memory does not count) records every result that reached the broker.

Every `--sample-minutes` of simulated audio the bench samples this process's resident memory
(VmRSS), open file descriptors (/proc/self/fd) and threads. Growth is measured from the first
sample after `--warmup-minutes` (torch's allocator, SQLite's page cache and Python's arenas
settle during the first welds) to the last sample.

    nice -n 10 .venv/bin/python -m bench.soak --hours 8 --sample-minutes 15

Targets: RSS growth under 10 MB after warm-up, no fd growth.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from deploy.errors import WeldmonError
from monitor.audio.blocks import AudioBlock
from monitor.config import DEFAULT_MAX_BATCH_WINDOWS, parse_config
from monitor.events import Source
from monitor.ops.logs import configure_logging
from monitor.pipeline.core import Pipeline
from monitor.pipeline.inference import InferenceWorker
from monitor.publish.router import EventRouter
from monitor.runtime import load_model, mqtt_link, pipeline_settings, tracker_options
from tests.support.artifacts import export_untrained
from tests.support.broker import MosquittoBroker
from tests.support.data import weld_audio_root
from tests.support.shifts import QUIET_HEAD_RUNS, RATE_HZ, LoopedShift, weld_clip

RSS_TARGET_MB = 10.0  # target: resident memory growth after warm-up
FD_TARGET = 0  # target: no file-descriptor growth
SUBSCRIBER_DRAIN_S = 10.0  # after the shift: time for the last results to reach mosquitto_sub
CLIENT_ID = "weldmon-soak"
RESULT_TOPICS = "weldmon/+/weld/result"
KIB = 1024


@dataclass(frozen=True)
class Sample:
    """One reading, taken after `audio_min` simulated minutes."""

    audio_min: float
    wall_s: float
    rss_mb: float
    fds: int
    threads: int
    results: int
    published: int


def _proc_status() -> dict[str, str]:
    lines = Path("/proc/self/status").read_text().splitlines()
    return dict(line.split(":", 1) for line in lines if ":" in line)


def take_sample(audio_min: float, wall_s: float, results: int, published: int) -> Sample:
    """RSS (MB), open fds and threads of this process right now."""
    status = _proc_status()
    return Sample(
        audio_min=round(audio_min, 1),
        wall_s=round(wall_s, 1),
        rss_mb=round(int(status["VmRSS"].split()[0]) / KIB, 1),
        fds=sum(1 for _ in Path("/proc/self/fd").iterdir()),
        threads=int(status["Threads"]),
        results=results,
        published=published,
    )


def _manifest_flacs() -> list[Path]:
    import csv

    root = weld_audio_root()
    with (root / "manifest.csv").open() as fh:
        return [root / row["flac"] for row in csv.DictReader(fh)]


async def run_soak(args: argparse.Namespace, workdir: Path) -> tuple[list[Sample], dict]:
    """Feed the looped shift through the daemon's path; returns the samples and totals."""
    flacs = _manifest_flacs()
    shift = LoopedShift([weld_clip(flacs[i]) for i in QUIET_HEAD_RUNS])
    artifact = export_untrained(workdir / "artifact").path
    state = workdir / "state"
    state.mkdir()
    broker = None if args.no_broker else MosquittoBroker(workdir / "mosquitto")
    mqtt = {"enabled": False}
    if broker is not None:
        broker.start()
        mqtt = {"host": broker.host, "port": broker.port, "client_id": CLIENT_ID}
    cfg = parse_config(
        {
            "model": {"path": str(artifact)},
            "audio": {"samplerate": RATE_HZ, "stations": ["soak"]},
            "inference": {"max_batch_windows": args.max_batch_windows},
            "mqtt": mqtt,
            "state_dir": str(state),
        }
    )
    subscriber, results_file = _start_subscriber(broker, workdir)
    model = load_model(cfg)
    samples: list[Sample] = []
    total_frames = round(args.hours * 3600 * RATE_HZ)
    block_frames = round(cfg.audio.block_s * RATE_HZ)
    every_frames = round(args.sample_minutes * 60 * RATE_HZ)
    source = Source(type="device", name="soak-generator")
    router = EventRouter()
    t0 = time.monotonic()
    published = 0
    inference: dict = {}
    try:
        worker = InferenceWorker(
            model, cfg.inference.max_batch_windows, cfg.inference.queue_windows
        )
        async with mqtt_link(cfg, model.sha256) as publisher:
            if publisher is not None:
                router.add(publisher.send, durable=True)

            def published_now() -> int:
                return publisher.counters.published if publisher is not None else 0

            def sample(frame: int) -> None:
                s = take_sample(
                    frame / RATE_HZ / 60,
                    time.monotonic() - t0,
                    router.counts.get("weld_result", 0),
                    published_now(),
                )
                samples.append(s)
                print(json.dumps(asdict(s)), flush=True)

            with worker:
                settings = pipeline_settings(cfg)
                options = tracker_options(cfg, model, "gate")
                epoch_utc = time.time()
                async with Pipeline(settings, options, worker, router, RATE_HZ) as pipeline:
                    frame = 0
                    next_sample = 0
                    for block_samples in shift.blocks(block_frames, total_frames):
                        if frame >= next_sample:
                            await pipeline.drain()  # judged so far: no backlog in the reading
                            sample(frame)
                            next_sample += every_frames
                        block = AudioBlock(block_samples, frame, RATE_HZ, 1, epoch_utc)
                        await pipeline.feed(block, source)
                        frame += block.frames
                        # The daemon awaits its capture queue between blocks; yielding here
                        # lets the consumer task and the publisher run as they would there.
                        await asyncio.sleep(0)
                    await pipeline.end_stream("shutdown")
                await pipeline.drain()
                sample(frame)
            inference = worker.counters.as_dict()
        # Read after mqtt_link closed: its close drains what was still in the outbox.
        published = publisher.counters.published if publisher is not None else 0
    finally:
        received = _stop_subscriber(subscriber, results_file)
        if broker is not None:
            broker.stop()
    totals = {
        "audio_h": round(total_frames / RATE_HZ / 3600, 3),
        "wall_s": round(time.monotonic() - t0, 1),
        "results": router.counts.get("weld_result", 0),
        "published": published,
        "results_at_subscriber": received,
        "welds_per_cycle": shift.welds_per_cycle,
        "cycle_s": round(shift.cycle_frames / RATE_HZ, 2),
        "max_batch_windows": args.max_batch_windows,
        "inference_windows": inference.get("windows"),
        "inference_batches": inference.get("batches"),
        "inference_max_queue_depth": inference.get("max_queue_depth"),
    }
    return samples, totals


def _start_subscriber(
    broker: MosquittoBroker | None, workdir: Path
) -> tuple[subprocess.Popen[bytes] | None, Path]:
    results_file = workdir / "results.jsonl"
    binary = shutil.which("mosquitto_sub")
    if broker is None or binary is None:
        return None, results_file
    with results_file.open("wb") as out:
        process = subprocess.Popen(
            [binary, "-h", broker.host, "-p", str(broker.port), "-q", "1", "-t", RESULT_TOPICS],
            stdout=out,
            stderr=subprocess.DEVNULL,
        )
    time.sleep(0.5)  # subscribed before the first result (it takes seconds of audio anyway)
    return process, results_file


def _stop_subscriber(process: subprocess.Popen[bytes] | None, results_file: Path) -> int | None:
    """Distinct weld_ids the subscriber received (None without a subscriber)."""
    if process is None:
        return None
    time.sleep(SUBSCRIBER_DRAIN_S if process.poll() is None else 0)
    process.terminate()
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(5)
    if process.poll() is None:
        process.kill()
        process.wait()
    ids = set()
    for line in results_file.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError, KeyError):
            ids.add(json.loads(line)["weld_id"])
    return len(ids)


def growth(samples: list[Sample], warmup_min: float) -> dict:
    """RSS and fd growth from the first sample at or after warm-up to the last one."""
    after = [s for s in samples if s.audio_min >= warmup_min]
    if len(after) < 2:
        raise WeldmonError(f"need two samples after {warmup_min} min of warm-up")
    first, last = after[0], after[-1]
    return {
        "rss_start_mb": first.rss_mb,
        "rss_end_mb": last.rss_mb,
        "rss_growth_mb": round(last.rss_mb - first.rss_mb, 1),
        "rss_max_above_start_mb": round(max(s.rss_mb for s in after) - first.rss_mb, 1),
        "fd_growth": last.fds - first.fds,
        "fd_max_above_start": max(s.fds for s in after) - first.fds,
        "thread_growth": last.threads - first.threads,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the soak, print one JSON line per sample and a summary; exit 1 if a target fails."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=8.0, help="simulated shift length (h)")
    parser.add_argument("--sample-minutes", type=float, default=15.0, help="simulated min")
    parser.add_argument("--warmup-minutes", type=float, default=30.0, help="simulated min")
    parser.add_argument("--no-broker", action="store_true", help="outbox off, no Mosquitto")
    parser.add_argument(
        "--max-batch-windows",
        type=int,
        default=DEFAULT_MAX_BATCH_WINDOWS,
        help="inference.max_batch_windows (1: every forward pass has the same shape)",
    )
    parser.add_argument("--log", type=Path, help="daemon log file (default: in the workdir)")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="weldmon-soak-"))
    log_path = args.log or workdir / "daemon.log"
    try:
        # The daemon logs one JSON line per weld; keep them (as journald would) out of the
        # terminal. configure_logging binds sys.stderr when it is called.
        with log_path.open("w") as log_file:
            with contextlib.redirect_stderr(log_file):
                configure_logging("info", "json")
            samples, totals = asyncio.run(run_soak(args, workdir))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    summary = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}",
        "load_avg_end": [round(x, 2) for x in os.getloadavg()],
        **totals,
        **growth(samples, args.warmup_minutes),
    }
    print(json.dumps(summary), flush=True)
    ok = summary["rss_growth_mb"] < RSS_TARGET_MB and summary["fd_growth"] <= FD_TARGET
    if totals["results_at_subscriber"] is not None:
        ok = ok and totals["results_at_subscriber"] == totals["results"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
