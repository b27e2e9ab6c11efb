"""Benchmark the recognition engine: detector and OCR latency, and peak memory of `alpr recognize`.

    python scripts/bench_recognize.py --images ../shared/datasets/detect/images/andrewmvd

Detector: median and p90 ms per 1280x720 frame for each backend, single-threaded and with all
threads. OCR: ms per plate, one plate per call and in batches of 8. Memory: peak RSS of
`alpr recognize` over 100 images, measured by the kernel (ru_maxrss of the child process).

    python scripts/bench_recognize.py --images ... --compare-ocr models/plate_ocr.onnx runs/x/best.onnx

compares readers alone instead: ms per plate (one thread, one plate per call, decoding included) of
each file, timed in interleaved rounds so that a machine slowing down mid-run hits all of them alike.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge.recognition.detector import OnnxPlateDetector  # noqa: E402
from edge.recognition.ocr import OnnxPlateReader, crop_plate, is_squarish  # noqa: E402
from edge.recognition.types import BgrImage, DetectorBackend  # noqa: E402

FRAME_W, FRAME_H = 1280, 720


def timed(fn: Callable[[], object], repeat: int, warmup: int = 3) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return {"median_ms": round(float(np.median(samples)), 2), "p90_ms": round(float(np.percentile(samples, 90)), 2)}


def load_frames(folder: Path, count: int) -> list[BgrImage]:
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in {".jpg", ".png"})[:count]
    frames = []
    for p in paths:
        img = cv2.imread(str(p))
        if img is not None:
            frames.append(cv2.resize(img, (FRAME_W, FRAME_H)))
    return frames


def _time_detector(detector: OnnxPlateDetector, frames: list[BgrImage], repeat: int) -> dict[str, float]:
    frame_cycle = itertools.cycle(frames)
    return timed(lambda: detector.detect(next(frame_cycle)), repeat)


def _time_reader(reader: OnnxPlateReader, crops: list[BgrImage], batch: int, repeat: int) -> dict[str, float]:
    """Milliseconds per plate when reading ``batch`` plates in one call."""
    crop_cycle = itertools.cycle(crops)
    per_call = timed(lambda: reader.read([next(crop_cycle) for _ in range(batch)]), repeat)
    return {k: round(v / batch, 3) for k, v in per_call.items()}


def bench_detector(frames: list[BgrImage], repeat: int) -> dict[str, Any]:
    """Per backend and thread count; for onnxruntime on one thread also without the close-plate pass, and
    how many frames have a plate close enough to need it (the photos here are mostly close-ups)."""
    results: dict[str, Any] = {}
    backends: tuple[DetectorBackend, ...] = ("onnxruntime", "opencv")
    for backend in backends:
        for threads in (1, os.cpu_count() or 1):
            detector = OnnxPlateDetector(backend=backend, threads=threads)
            results[f"{backend}/threads={threads}"] = _time_detector(detector, frames, repeat)
    single = OnnxPlateDetector(threads=1, close_long_side=None)
    results["onnxruntime/threads=1, single pass"] = _time_detector(single, frames, repeat)
    results["frames with a close plate"] = sum(
        any(single.is_close(d.box, FRAME_W, FRAME_H) for d in single.detect(f)) for f in frames
    )
    return results


def plate_crops(frames: list[BgrImage]) -> list[BgrImage]:
    """The engine's crops of the detector's plates in the frames (a fixed patch of each if none is found)."""
    detector = OnnxPlateDetector(threads=1)
    crops = [crop_plate(f, d.box) for f in frames for d in detector.detect(f)]
    return crops or [f[300:360, 500:700] for f in frames]


def bench_ocr(frames: list[BgrImage], repeat: int) -> dict[str, Any]:
    """The engine's read per plate (model and decoding), one plate a call over every crop at least twice,
    and batched; then the squarish crops alone, which are also read as two rows (three crops a call)."""
    crops = plate_crops(frames)
    squarish = [crop for crop in crops if is_squarish(crop)]
    results: dict[str, Any] = {"crops": len(crops), "squarish crops": len(squarish)}
    for threads in (1, os.cpu_count() or 1):
        reader = OnnxPlateReader(threads=threads)
        results[f"threads={threads}/batch=1"] = _time_reader(reader, crops, 1, max(repeat, 2 * len(crops)))
        results[f"threads={threads}/batch=8 (per plate)"] = _time_reader(reader, crops, 8, max(10, repeat // 8))
    if squarish:
        rounds = max(repeat, 10 * len(squarish))
        results["threads=1/batch=1, squarish crops"] = _time_reader(OnnxPlateReader(threads=1), squarish, 1, rounds)
    return results


def compare_readers(frames: list[BgrImage], paths: list[Path], rounds: int, calls: int = 20) -> dict[str, Any]:
    """Per reader file, median and p90 ms per plate over ``rounds`` interleaved rounds of ``calls`` calls."""
    crops = plate_crops(frames)
    readers = {str(path): OnnxPlateReader(path, threads=1) for path in paths}
    samples: dict[str, list[float]] = {name: [] for name in readers}
    crop_cycle = itertools.cycle(crops)
    for reader in readers.values():
        for _ in range(3):
            reader.read([next(crop_cycle)])  # warm up
    for _ in range(rounds):
        for name, reader in readers.items():
            for _ in range(calls):
                crop = next(crop_cycle)
                start = time.perf_counter()
                reader.read([crop])
                samples[name].append((time.perf_counter() - start) * 1000)
    return {
        name: {"median_ms": round(float(np.median(v)), 3), "p90_ms": round(float(np.percentile(v, 90)), 3)}
        for name, v in samples.items()
    } | {"crops": len(crops), "rounds": rounds, "calls_per_round": calls}


def bench_memory(folder: Path, count: int) -> dict[str, Any]:
    paths = sorted(str(p) for p in folder.iterdir() if p.suffix.lower() in {".jpg", ".png"})[:count]
    alpr = Path(sys.executable).with_name("alpr")
    start = time.perf_counter()
    subprocess.run(
        [str(alpr), "recognize", "--format", "jsonl", *paths],
        check=False,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    elapsed = time.perf_counter() - start
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"images": len(paths), "peak_rss_mb": round(peak_kb / 1024, 1), "wall_s": round(elapsed, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, required=True, help="folder of photos to use as frames")
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=100)
    parser.add_argument("--out", type=Path, default=Path("runs/bench_recognize.json"))
    parser.add_argument("--compare-ocr", type=Path, nargs="+", help="only time these reader files against each other")
    args = parser.parse_args()
    frames = load_frames(args.images, args.frames)
    report: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
    }
    if args.compare_ocr:
        report["ocr_compare_1_thread"] = compare_readers(frames, args.compare_ocr, args.repeat)
    else:
        report["detector_1280x720"] = bench_detector(frames, args.repeat)
        report["ocr_per_plate"] = bench_ocr(frames, args.repeat)
        report["alpr_recognize_memory"] = bench_memory(args.images, 100)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
