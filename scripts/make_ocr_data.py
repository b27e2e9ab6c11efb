"""Build the OCR training data: synthetic plates and teacher-labelled real crops.

    python scripts/make_ocr_data.py synth --count 40000 --out runs/ocr_data/synth.npz
    python scripts/make_ocr_data.py real --manifest ../shared/datasets/detect/manifest.jsonl \
        --teacher-cct ../shared/teachers/cct_xs_v1_global.onnx --out runs/ocr_data/real.npz

Real crops keep a label only when both teachers read the same 4-9 characters with confidence
(see ``--min-ppocr`` and ``--min-cct``); the labels file beside the npz lists every crop with both
readings so the selection can be audited. Crops are stored with a margin so training can jitter them.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scripts.trainlib.manifest import read_manifest  # noqa: E402
from scripts.trainlib.synth import synth_sample  # noqa: E402
from scripts.trainlib.teachers import CctTeacher, PpOcrTeacher  # noqa: E402

logger = logging.getLogger("make_ocr_data")

OCR_W, OCR_H = 160, 48
CROP_MARGIN = 0.15
"""Real crops are stored this much larger on every side than the labelled box, for jitter."""
STORE_W, STORE_H = 224, 80


def make_synth(count: int, seed: int, out: Path) -> None:
    rng = np.random.default_rng(seed)
    images = np.zeros((count, OCR_H, OCR_W), np.uint8)
    labels = []
    t0 = time.time()
    for i in range(count):
        img, label = synth_sample(rng, OCR_W, OCR_H)
        images[i] = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
        labels.append(label)
        if (i + 1) % 5000 == 0:
            logger.info("%d/%d synthetic plates, %.0fs", i + 1, count, time.time() - t0)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, images=images, labels=np.array(labels))
    logger.info("wrote %s", out)


def cut_with_margin(img: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray | None:
    """The box grown by CROP_MARGIN each side, resized to the stored size (None if degenerate)."""
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    if w < 8 or h < 4:
        return None
    mx, my = w * CROP_MARGIN, h * CROP_MARGIN
    src = np.array([[x1 - mx, y1 - my], [x2 + mx, y1 - my], [x2 + mx, y2 + my]], np.float32)
    dst = np.array([[0, 0], [STORE_W, 0], [STORE_W, STORE_H]], np.float32)
    matrix = cv2.getAffineTransform(src, dst)
    return cv2.warpAffine(img, matrix, (STORE_W, STORE_H), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE)


def tight_crop(img: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    h, w = img.shape[:2]
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    return img[max(0, y1) : min(h, y2), max(0, x1) : min(w, x2)]


def make_real(manifest: Path, cct_path: Path, out: Path, min_ppocr: float, min_cct: float) -> None:
    pp, cct = PpOcrTeacher(), CctTeacher(cct_path)
    crops: list[np.ndarray] = []
    labels: list[str] = []
    splits: list[str] = []
    audit = []
    for item in read_manifest(manifest):
        img = cv2.imread(str(item.path), cv2.IMREAD_COLOR)
        if img is None:
            continue
        for plate, box in zip(item.plates, item.boxes_for(img.shape[1], img.shape[0]), strict=True):
            stored = cut_with_margin(img, box)
            tight = tight_crop(img, box)
            if stored is None or tight.size == 0:
                continue
            a, b = pp.read(tight), cct.read(tight)
            agree = (
                a.text == b.text
                and 4 <= len(a.text) <= 9
                and a.mean_confidence >= min_ppocr
                and b.min_confidence >= min_cct
            )
            label = plate.text or (a.text if agree else None)
            audit.append(
                {
                    "path": str(item.path.name),
                    "source": item.source,
                    "license": item.license,
                    "split": item.split,
                    "box": [round(v, 1) for v in box],
                    "ppocr": a.text,
                    "ppocr_conf": round(a.mean_confidence, 3),
                    "cct": b.text,
                    "cct_min_conf": round(b.min_confidence, 3),
                    "label": label,
                }
            )
            if label:
                crops.append(cv2.cvtColor(stored, cv2.COLOR_BGR2GRAY))
                labels.append(label)
                splits.append(item.split or "train")
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, images=np.stack(crops), labels=np.array(labels), splits=np.array(splits))
    with out.with_suffix(".labels.jsonl").open("w", encoding="utf-8") as fh:
        for row in audit:
            fh.write(json.dumps(row) + "\n")
    logger.info("%d boxes, %d labelled crops (%d train)", len(audit), len(labels), splits.count("train"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    synth = sub.add_parser("synth")
    synth.add_argument("--count", type=int, default=40000)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--out", type=Path, default=Path("runs/ocr_data/synth.npz"))
    real = sub.add_parser("real")
    real.add_argument("--manifest", type=Path, required=True)
    real.add_argument("--teacher-cct", type=Path, required=True)
    real.add_argument("--out", type=Path, default=Path("runs/ocr_data/real.npz"))
    real.add_argument("--min-ppocr", type=float, default=0.85)
    real.add_argument("--min-cct", type=float, default=0.5)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.command == "synth":
        make_synth(args.count, args.seed, args.out)
    else:
        make_real(args.manifest, args.teacher_cct, args.out, args.min_ppocr, args.min_cct)


if __name__ == "__main__":
    main()
