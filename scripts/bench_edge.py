"""Benchmark the whole edge pipeline on one 1280x720 camera, recognition on every frame.

    python scripts/bench_edge.py [--frames 300] [--quick] [--threads 1] [--spool-reads 2000]

What runs: a real EdgeNode (capture thread -> recognition -> tracker -> read records -> spool -> uplink)
against an in-process hub (the real IngestServer on SQLite, CurveZMQ on localhost), on a clip made in
a temporary folder by upscaling ``deploy/demo/clip.avi`` (three cars, 800x450) to 1280x720 and
repeating it to ``--frames`` frames (``--quick``: 90, enough for passes that complete mid-run). The
file is read with ``realtime=False``, so frames come as fast as the pipeline takes them: the capture
thread reads the next frame as soon as the node has taken the previous one from its queue (so nothing
is dropped and the figure is the pipeline's own rate; drops are counted anyway). Reading the same cars
again on every repeat is allowed (``reread_interval_s = 0``; ``lost_after_s = 0.3``).

Measured:

* ``fps``: frames recognised / wall time of ``node.run`` (first frame to end of the file).
* ``cpu_ms_per_frame``: user + system CPU time of the whole process (all threads, including the
  in-process hub storing the reads) over the run, per frame (``resource.getrusage``).
* ``frame_latency_ms``: p50/p95 from a frame's capture (right after the source returned it) to the end
  of its processing: recognition, tracking and, when a vehicle pass completes on it, the read record
  built, sealed and committed to the spool. The first 10 frames (model warm-up) are left out.
* ``pass_latency_ms``: p50/p95 of the same, over only the frames on which a pass completed (the read
  is in the spool, fsynced, when the time is taken): the cost of emitting a read.
* ``peak_rss_mb``: peak resident memory of this process (``ru_maxrss``), which includes the hub.
* ``spool_reads_per_s``: a fresh spool (WAL, synchronous=FULL, sealed) filled with ``put_many`` batches
  of 50 of the read records the run produced (real JPEG-bearing payloads, new ids).

Prints one JSON object (command, machine, date, settings, results) and then a markdown table row.
Reference targets: >= 25 fps, frame latency p95 <= 150 ms, RSS <= 400 MB, spool >= 2,000 reads/s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sqlite3
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnxruntime
import zmq
from sqlalchemy import func, select

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge import wire  # noqa: E402
from edge.capture import LockstepSource, OpenCvSource  # noqa: E402
from edge.config import EdgeConfig  # noqa: E402
from edge.node import EdgeNode  # noqa: E402
from edge.recognition import const  # noqa: E402
from edge.recognition.types import BgrImage  # noqa: E402
from edge.sealing import Opener, Sealer, encode_key, generate_spool_keypair  # noqa: E402
from edge.spool import Spool  # noqa: E402
from hub.db import make_engine, session_factory, upgrade  # noqa: E402
from hub.ingest import IngestServer  # noqa: E402
from hub.models import Node, Read  # noqa: E402
from hub.storage import ImageStore  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SOURCE_CLIP = ROOT / "deploy" / "demo" / "clip.avi"
WIDTH, HEIGHT = 1280, 720
WARMUP_FRAMES = 10
SPOOL_BATCH = 50
NODE = "bench-1"
CAMERA = "bench"
TARGETS = {"fps": 25.0, "frame_latency_p95_ms": 150.0, "peak_rss_mb": 400.0, "spool_reads_per_s": 2000.0}


def make_clip(path: Path, frames: int) -> None:
    """``frames`` frames of the demo clip upscaled to 1280x720 and repeated; one frame in memory at a time."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 30.0, (WIDTH, HEIGHT))
    if not writer.isOpened():
        raise SystemExit(f"bench_edge: OpenCV cannot write {path}")
    written = 0
    while written < frames:
        capture = cv2.VideoCapture(str(SOURCE_CLIP))
        if not capture.isOpened():
            raise SystemExit(f"bench_edge: cannot read {SOURCE_CLIP}")
        while written < frames:
            ok, image = capture.read()
            if not ok:
                break
            writer.write(cv2.resize(image, (WIDTH, HEIGHT), interpolation=cv2.INTER_LINEAR))
            written += 1
        capture.release()
    writer.release()


@dataclass
class Timings:
    frame_ms: list[float] = field(default_factory=list)
    pass_ms: list[float] = field(default_factory=list)
    payloads: list[bytes] = field(default_factory=list)
    frames_seen: int = 0


class BenchNode(EdgeNode):
    """The node as it runs, plus a stopwatch around each frame's processing."""

    timings: Timings
    _pass_on_frame: bool

    def _process(self, camera_id: str, image: BgrImage, captured_s: float) -> None:
        self._pass_on_frame = False
        super()._process(camera_id, image, captured_s)
        elapsed_ms = (time.monotonic() - captured_s) * 1000
        self.timings.frames_seen += 1
        if self.timings.frames_seen > WARMUP_FRAMES:
            self.timings.frame_ms.append(elapsed_ms)
            if self._pass_on_frame:
                self.timings.pass_ms.append(elapsed_ms)

    def on_bench_read(self, record: wire.ReadRecord) -> None:
        self._pass_on_frame = True
        self.timings.payloads.append(record.to_bytes())


def percentiles(samples: list[float]) -> dict[str, float | int | None]:
    if not samples:
        return {"p50": None, "p95": None, "n": 0}
    p50, p95 = np.percentile(samples, [50, 95])
    return {"p50": round(float(p50), 1), "p95": round(float(p95), 1), "n": len(samples)}


def bench_spool(folder: Path, payloads: list[bytes], reads: int, sealer: Sealer) -> dict[str, Any]:
    if not payloads:
        return {"reads_per_s": None, "reason": "the run produced no reads"}
    items = [(wire.uuid7(), payloads[i % len(payloads)]) for i in range(reads)]
    total = sum(len(p) for _, p in items)
    with Spool(folder / "spool-bench.db", sealer, max_bytes=2 * total + 2**20) as spool:
        start = time.perf_counter()
        for i in range(0, reads, SPOOL_BATCH):
            spool.put_many(items[i : i + SPOOL_BATCH])
        elapsed = time.perf_counter() - start
        assert spool.stats().depth == reads
    return {
        "reads": reads,
        "batch": SPOOL_BATCH,
        "payload_bytes_mean": round(total / reads),
        "reads_per_s": round(reads / elapsed, 1),
        "mb_per_s": round(total / elapsed / 1e6, 1),
    }


def run(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    clip = folder / "clip-1280x720.avi"
    made = time.perf_counter()
    make_clip(clip, args.frames)
    made_s = time.perf_counter() - made

    hub_url = f"sqlite:///{folder}/hub/hub.db"
    upgrade(hub_url)
    engine = make_engine(hub_url)
    sessions = session_factory(engine)
    hub_public, hub_secret = zmq.curve_keypair()
    node_public, node_secret = zmq.curve_keypair()
    spool_public, spool_private = generate_spool_keypair()
    with sessions.begin() as session:
        session.add(Node(name=NODE, curve_public_key=node_public.decode(), enrolled_utc=datetime.now(UTC)))
    hub = IngestServer("tcp://127.0.0.1:*", hub_public, hub_secret, sessions, ImageStore("db"), Opener(spool_private))
    hub.start()

    config = EdgeConfig.model_validate(
        {
            "node": {"id": NODE, "data_dir": str(folder / "edge")},
            "hub": {
                "endpoint": hub.endpoint,
                "public_key": hub_public.decode(),
                "spool_public_key": encode_key(spool_public),
            },
            "keys": {"node_public_key": node_public.decode(), "node_secret_key": node_secret.decode()},
            "recognition": {"threads": args.threads},
            "cameras": [{"id": CAMERA, "uri": str(clip), "target_fps": 0, "realtime": False}],
            "gps": {"mode": "fixed", "latitude": 32.7157, "longitude": -117.1611},
            "tracker": {"lost_after_s": 0.3, "reread_interval_s": 0},
            "alerts": {"enabled": False},
        }
    )
    source = LockstepSource(OpenCvSource(str(clip), realtime=False))
    timings = Timings()
    node = BenchNode(config, sources={CAMERA: source})
    node.timings = timings
    node._pass_on_frame = False
    node.on_read = node.on_bench_read
    source.queue = node.queues[CAMERA]
    try:
        node.start()
        usage_before = resource.getrusage(resource.RUSAGE_SELF)
        started = time.perf_counter()
        node.run(until_sources_end=True)
        run_s = time.perf_counter() - started
        usage_after = resource.getrusage(resource.RUSAGE_SELF)
        drain_started = time.perf_counter()
        while node.spool.stats().depth and time.perf_counter() - drain_started < 60:
            time.sleep(0.02)
        drain_s = time.perf_counter() - drain_started
        camera = node.workers[CAMERA].stats()
    finally:
        node.stop(drain_s=1.0)
        hub.stop()
    with sessions() as session:
        delivered = session.scalar(select(func.count()).select_from(Read)) or 0
    engine.dispose()
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux

    frames = node.counters.frames_processed
    cpu_s = (usage_after.ru_utime - usage_before.ru_utime) + (usage_after.ru_stime - usage_before.ru_stime)
    spool = bench_spool(folder, timings.payloads, args.spool_reads, Sealer(spool_public))
    frame_latency = percentiles(timings.frame_ms)
    return {
        "clip": {"frames": args.frames, "size": f"{WIDTH}x{HEIGHT}", "made_in_s": round(made_s, 1)},
        "frames_processed": frames,
        "frames_dropped": camera.dropped,
        "fps": round(frames / run_s, 1) if run_s > 0 else None,
        "cpu_ms_per_frame": round(cpu_s / frames * 1000, 1) if frames else None,
        "cpu_cores_busy": round(cpu_s / run_s, 2) if run_s > 0 else None,
        "frame_latency_ms": frame_latency,
        "pass_latency_ms": percentiles(timings.pass_ms),
        "reads_emitted": node.counters.reads_emitted,
        "reads_delivered_to_hub": delivered,
        "hub_drain_after_run_s": round(drain_s, 2),
        "peak_rss_mb": round(peak_rss_mb, 1),
        "spool": spool,
    }


def markdown_row(result: dict[str, Any]) -> str:
    r = result["results"]
    lat, passes = r["frame_latency_ms"], r["pass_latency_ms"]
    machine = f"{result['machine']['processor']} x{result['machine']['cpu_count']}"
    return (
        f"| {result['date_utc'][:10]} | {machine} | {r['clip']['size']} x{r['frames_processed']} "
        f"| {r['fps']} | {r['cpu_ms_per_frame']} | {lat['p50']} / {lat['p95']} | {passes['p50']} / {passes['p95']} "
        f"| {r['peak_rss_mb']} | {r['spool']['reads_per_s']} | {r['reads_delivered_to_hub']}/{r['reads_emitted']} |"
    )


MARKDOWN_HEADER = (
    "| date | machine | frames | fps | CPU ms/frame | frame latency p50 / p95 ms | pass latency p50 / p95 ms "
    "| peak RSS MB | spool reads/s | delivered |\n|---|---|---|---|---|---|---|---|---|---|"
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=300, help="frames in the 1280x720 clip (default 300)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 90 frames, 200 spool reads")
    parser.add_argument("--threads", type=int, default=1, help="inference threads, as recognition.threads")
    parser.add_argument("--spool-reads", type=int, default=2000, help="reads for the spool throughput figure")
    args = parser.parse_args(argv)
    if args.quick:
        args.frames, args.spool_reads = min(args.frames, 90), min(args.spool_reads, 200)
    if args.frames <= WARMUP_FRAMES or args.spool_reads <= 0 or args.threads < 0:
        parser.error(f"--frames must be above {WARMUP_FRAMES}, --spool-reads positive, --threads >= 0")
    missing = [str(p) for p in (const.DETECTOR_MODEL, const.OCR_MODEL) if not p.is_file()]
    if missing:
        print(f"bench_edge: missing model(s) {', '.join(missing)} (set ALPR_MODELS_DIR?)", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="bench_edge_") as tmp:
        results = run(args, Path(tmp))

    result = {
        "command": " ".join(["python", "scripts/bench_edge.py", *(argv if argv is not None else sys.argv[1:])]),
        "date_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "load_average_1m": round(os.getloadavg()[0], 2),
            "python": platform.python_version(),
            "onnxruntime": onnxruntime.__version__,
            "opencv": cv2.__version__,
            "sqlite": sqlite3.sqlite_version,
        },
        "settings": {
            "threads": args.threads,
            "detector_long_side": const.DETECTOR_LONG_SIDE,
            "realtime": False,
            "pacing": "lockstep (next frame read when the node has taken the previous one)",
            "models_dir": str(const.MODELS_DIR),
        },
        "results": results,
        "targets": TARGETS,
    }
    print(json.dumps(result, indent=2))
    print()
    print(MARKDOWN_HEADER)
    print(markdown_row(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
