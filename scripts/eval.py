"""Evaluate detection and end-to-end reading on a labelled manifest (evaluation only, never training).

    python scripts/eval.py --manifest ../shared/datasets/eval-ucsd/manifest.jsonl --out runs/eval-ucsd.json

Reports detection recall and precision at IoU >= 0.5, and at IoU >= 0.3 with the median ratio of
detected to labelled box sizes (datasets differ in whether a box hugs the characters or the whole
plate); end-to-end exact-read rate (a labelled plate counts only if a detection matched to it at
IoU >= 0.3 reads every character right) and character accuracy (1 - edit distance / characters); the
OCR alone on the labelled boxes (cut as the engine cuts a detection); and, as baselines on the tight
labelled boxes, the PP-OCRv4 teacher and the fast-plate-ocr teacher.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge.recognition.const import DETECTOR_MODEL  # noqa: E402
from edge.recognition.detector import OnnxPlateDetector  # noqa: E402
from edge.recognition.formats import edit_distance  # noqa: E402
from edge.recognition.geometry import match_boxes  # noqa: E402
from edge.recognition.imageio import ImageLoadError, load_image  # noqa: E402
from edge.recognition.ocr import OnnxPlateReader, crop_plate  # noqa: E402
from edge.recognition.types import DetectorBackend  # noqa: E402
from scripts.trainlib.manifest import LABELLED_BOX_PADS, read_manifest  # noqa: E402

logger = logging.getLogger("eval")


@dataclass
class ReadScore:
    """Exact reads and character errors over a set of labelled plates."""

    plates: int = 0
    exact: int = 0
    char_errors: int = 0
    chars: int = 0
    misreads: list[dict[str, str]] = field(default_factory=list)

    def add(self, truth: str, read: str, image: str) -> None:
        self.plates += 1
        self.exact += read == truth
        self.char_errors += edit_distance(read, truth)
        self.chars += len(truth)
        if read != truth:
            self.misreads.append({"image": image, "truth": truth, "read": read})

    def summary(self) -> dict[str, float]:
        return {
            "plates": self.plates,
            "exact_rate": round(self.exact / max(self.plates, 1), 4),
            "char_accuracy": round(max(0.0, 1 - self.char_errors / max(self.chars, 1)), 4),
        }


def evaluate(
    manifest: Path,
    backend: DetectorBackend,
    threads: int,
    baselines: bool,
    cct_path: Path | None,
    split: str | None = None,
    detector_model: Path = DETECTOR_MODEL,
) -> dict[str, Any]:
    detector = OnnxPlateDetector(detector_model, backend=backend, threads=threads)
    reader = OnnxPlateReader(threads=threads)
    teachers: dict[str, Any] = {}
    if baselines:
        from scripts.trainlib.teachers import CctTeacher, PpOcrTeacher

        teachers["ppocr_v4"] = PpOcrTeacher()
        if cct_path is not None:
            teachers["fast_plate_ocr_cct_xs"] = CctTeacher(cct_path)
    n_gt = n_pred = n_tp = n_tp_loose = 0
    by_source: dict[str, list[int]] = {}  # source: [plates, matched at IoU >= 0.5]
    width_ratios: list[float] = []
    height_ratios: list[float] = []
    end_to_end, ocr_on_truth = ReadScore(), ReadScore()
    teacher_scores = {name: ReadScore() for name in teachers}
    started = time.perf_counter()
    items = read_manifest(manifest, split)
    for item in items:
        try:
            image = load_image(item.path)
        except ImageLoadError as exc:
            logger.warning("%s: %s", item.path.name, exc)
            continue
        truth_boxes = item.boxes_for(image.shape[1], image.shape[0])
        detections = detector.detect(image)
        matched = match_boxes([d.box for d in detections], truth_boxes, 0.5)
        # A looser match too: datasets differ in whether a plate box hugs the characters or the plate.
        loose = match_boxes([d.box for d in detections], truth_boxes, 0.3)
        n_gt, n_pred, n_tp = n_gt + len(truth_boxes), n_pred + len(detections), n_tp + len(matched)
        n_tp_loose += len(loose)
        source = by_source.setdefault(item.source, [0, 0])
        source[0], source[1] = source[0] + len(truth_boxes), source[1] + len(matched)
        for p, t in loose.items():
            (dx1, dy1, dx2, dy2), (tx1, ty1, tx2, ty2) = detections[p].box, truth_boxes[t]
            width_ratios.append((dx2 - dx1) / max(tx2 - tx1, 1e-6))
            height_ratios.append((dy2 - dy1) / max(ty2 - ty1, 1e-6))
        readings = reader.read([crop_plate(image, d.box) for d in detections])
        read_for_truth = {t: readings[p].text for p, t in loose.items()}
        # Our reader gets the labelled box with the margin every earlier reader got (LABELLED_BOX_PADS),
        # so this column stays comparable; the teachers get the tight box, as their baselines were
        # measured (../shared/teachers/README.md).
        truth_crops = [crop_plate(image, box, 0.0, 0.0) for box in truth_boxes]
        truth_reads = reader.read([crop_plate(image, box, *LABELLED_BOX_PADS) for box in truth_boxes])
        for t, plate in enumerate(item.plates):
            if plate.text is None:
                continue
            end_to_end.add(plate.text, read_for_truth.get(t, ""), item.path.name)
            ocr_on_truth.add(plate.text, truth_reads[t].text, item.path.name)
            for name, teacher in teachers.items():
                teacher_scores[name].add(plate.text, teacher.read(truth_crops[t]).text, item.path.name)
    return {
        "manifest": str(manifest),
        "images": len(items),
        "detector_model": str(detector_model),
        "detector_backend": backend,
        "seconds": round(time.perf_counter() - started, 1),
        "detection": {
            "plates": n_gt,
            "detections": n_pred,
            "recall": round(n_tp / max(n_gt, 1), 4),
            "precision": round(n_tp / max(n_pred, 1), 4),
            "recall_iou_0.3": round(n_tp_loose / max(n_gt, 1), 4),
            "precision_iou_0.3": round(n_tp_loose / max(n_pred, 1), 4),
            "median_box_width_ratio": round(float(np.median(width_ratios)), 3) if width_ratios else None,
            "median_box_height_ratio": round(float(np.median(height_ratios)), 3) if height_ratios else None,
            "recall_by_source": {k: round(v[1] / max(v[0], 1), 4) for k, v in sorted(by_source.items())},
        },
        "end_to_end": end_to_end.summary(),
        "ocr_on_labelled_boxes": ocr_on_truth.summary(),
        "baselines_on_labelled_boxes": {name: s.summary() for name, s in teacher_scores.items()},
        "misreads_end_to_end": end_to_end.misreads,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--out", type=Path, help="write the full report (with misreads) here as JSON")
    parser.add_argument("--backend", choices=["onnxruntime", "opencv"], default="onnxruntime")
    parser.add_argument("--detector", type=Path, default=DETECTOR_MODEL, help="detector ONNX file (a candidate, say)")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--no-baselines", action="store_true", help="skip the teacher baselines")
    parser.add_argument("--split", help="only this split of the manifest (e.g. val of detect/manifest.jsonl)")
    parser.add_argument(
        "--teacher-cct",
        type=Path,
        default=Path(__file__).resolve().parents[2] / "shared" / "teachers" / "cct_xs_v1_global.onnx",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cct = args.teacher_cct if args.teacher_cct.is_file() else None
    report = evaluate(args.manifest, args.backend, args.threads, not args.no_baselines, cct, args.split, args.detector)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    summary = {k: v for k, v in report.items() if k != "misreads_end_to_end"}
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
