"""``alpr``: the command-line front end of the recognition engine.

alpr recognize [--format jsonl|table] [--min-confidence X] [--threads N] PATH...
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from tqdm import tqdm

from edge.recognition import const
from edge.recognition.engine import Recognizer, RecognizerConfig
from edge.recognition.imageio import ImageLoadError, load_image
from edge.recognition.onnx_runtime import ModelLoadError
from edge.recognition.types import RecognitionResult

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}
GLOB_CHARS = set("*?[")


def expand_inputs(patterns: list[str]) -> Iterator[tuple[str, Path | None]]:
    """(name as given or as found, path) for every input; path None when nothing matched."""
    for pattern in patterns:
        path = Path(pattern)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            yield from ((str(p), p) for p in found)
        elif not path.exists() and GLOB_CHARS & set(pattern):
            matches = sorted(glob.glob(pattern, recursive=True))
            if not matches:
                yield pattern, None
            yield from ((m, Path(m)) for m in matches if Path(m).is_file())
        else:
            yield pattern, path


def result_to_json(image: str, result: RecognitionResult) -> dict[str, Any]:
    return {
        "image": image,
        "plates": [
            {
                "text": p.reading.text,
                "confidence": round(p.reading.confidence, 4),
                "box": [round(v, 1) for v in p.detection.box],
                "region": p.reading.region,
                "candidates": [{"text": c.text, "confidence": round(c.confidence, 4)} for c in p.reading.candidates],
                "char_confidences": [round(c, 4) for c in p.reading.char_confidences],
                "detection_score": round(p.detection.score, 4),
            }
            for p in result.plates
        ],
        "timing_ms": {
            "detect": round(result.timing.detect_ms, 2),
            "ocr": round(result.timing.ocr_ms, 2),
            "total": round(result.timing.total_ms, 2),
        },
    }


def write_table_row(out: TextIO, image: str, result: RecognitionResult) -> None:
    if not result.plates:
        out.write(f"{image}\t-\n")
    for p in result.plates:
        box = ",".join(str(round(v)) for v in p.detection.box)
        out.write(f"{image}\t{p.reading.text}\t{p.reading.confidence:.3f}\t{p.reading.region}\t{box}\n")


def recognize_command(args: argparse.Namespace) -> int:
    config = RecognizerConfig(
        detector_backend=args.backend,
        threads=args.threads,
        min_confidence=args.min_confidence,
        region_hint=args.region,
    )
    try:
        recognizer = Recognizer.from_config(config)
    except ModelLoadError as exc:
        print(f"alpr: {exc}", file=sys.stderr)
        return 2
    inputs = list(expand_inputs(args.paths))
    failures = 0
    progress = tqdm(inputs, unit="img", disable=not sys.stderr.isatty() or len(inputs) < 2, file=sys.stderr)
    for name, path in progress:
        if path is None:
            failures += 1
            progress.write(f"alpr: {name}: no file matches", file=sys.stderr)
            continue
        try:
            image = load_image(path, args.max_megapixels * 1_000_000)
        except ImageLoadError as exc:
            failures += 1
            progress.write(f"alpr: {name}: {exc}", file=sys.stderr)
            continue
        result = recognizer.recognize(image)
        if args.format == "jsonl":
            sys.stdout.write(json.dumps(result_to_json(name, result)) + "\n")
        else:
            write_table_row(sys.stdout, name, result)
        sys.stdout.flush()
    return 1 if failures else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="alpr", description="Automatic licence plate recognition")
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("recognize", help="find and read plates in images")
    rec.add_argument("paths", nargs="+", metavar="PATH", help="image files, directories or glob patterns")
    rec.add_argument("--format", choices=["jsonl", "table"], default="jsonl")
    rec.add_argument(
        "--min-confidence",
        type=float,
        default=0.0,
        metavar="X",
        help="drop readings whose OCR confidence is below X (0-1)",
    )
    rec.add_argument("--threads", type=int, default=1, metavar="N", help="inference threads (0 = all cores)")
    rec.add_argument("--backend", choices=["onnxruntime", "opencv"], default="onnxruntime", help="detector runtime")
    rec.add_argument("--region", default=None, help="region hint for format rules, e.g. us-ca")
    rec.add_argument("--max-megapixels", type=float, default=const.MAX_IMAGE_PIXELS / 1e6, help="refuse larger images")
    rec.set_defaults(handler=recognize_command)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
