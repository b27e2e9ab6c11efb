"""Build the OCR training data: synthetic plates and teacher-labelled real crops.

    python scripts/make_ocr_data.py synth --count 40000 --out runs/ocr_data/synth.npz
    python scripts/make_ocr_data.py synth --rows --count 8000 --out runs/ocr_data/rows.npz  # two-row plates, by row
    python scripts/make_ocr_data.py real --manifest ../shared/datasets/detect/manifest.jsonl \
        --teacher-cct ../shared/teachers/cct_xs_v1_global.onnx --out runs/ocr_data/real.npz

Real crops keep a label only when both teachers read the same 4-9 characters with confidence:
on the tight box (``--min-ppocr``, ``--min-cct``: rule "strict") or on any pair of the tight box and
the engine's padded crop (``--relaxed-ppocr``, ``--relaxed-cct``: rule "agree"); PP-OCRv4 alone at
very high confidence (``--alone-mean``, ``--alone-min``: rule "ppocr") is recorded when asked for.
Pseudo-labels (train split only, when ``--self-reader`` names a reader): where no rule above labels a
box, the reader (through the engine's decoding) and ONE teacher read the same 4-9 characters on some
pair of crops, confidently (``--self-cct`` and ``--self-cct-own``: rule "self+cct";
``--self-ppocr`` and ``--self-ppocr-own``: rule "self+ppocr"). ``train_ocr.py --real-rules`` chooses
which rules to train on. Train photos also give crops at the
shipped detector's boxes. The labels file beside the npz lists every crop with the teachers' readings
so the selection can be audited. Crops are stored with a margin so training can jitter them.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge.recognition.detector import OnnxPlateDetector  # noqa: E402
from edge.recognition.geometry import box_iou  # noqa: E402
from edge.recognition.ocr import OnnxPlateReader, crop_plate  # noqa: E402
from edge.recognition.types import PlateReading  # noqa: E402
from scripts.trainlib.manifest import LABELLED_BOX_PADS, read_manifest  # noqa: E402
from scripts.trainlib.synth import synth_row_samples, synth_sample  # noqa: E402
from scripts.trainlib.teachers import CctTeacher, PpOcrTeacher, TeacherRead  # noqa: E402

logger = logging.getLogger("make_ocr_data")

OCR_W, OCR_H = 160, 48
CROP_MARGIN = 0.15
"""Real crops are stored this much larger on every side than the labelled box, for jitter."""
STORE_W, STORE_H = 224, 80


def make_synth(count: int, seed: int, out: Path, rows: bool = False) -> None:
    """``count`` synthetic plates, or with ``rows`` the rows of ``count`` / 2 two-row plates."""
    rng = np.random.default_rng(seed)
    images = np.zeros((count, OCR_H, OCR_W), np.uint8)
    labels: list[str] = []
    t0 = time.time()
    while len(labels) < count:
        samples = synth_row_samples(rng, OCR_W, OCR_H) if rows else [synth_sample(rng, OCR_W, OCR_H)]
        for img, label in samples[: count - len(labels)]:
            images[len(labels)] = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
            labels.append(label)
            if len(labels) % 5000 == 0:
                logger.info("%d/%d synthetic samples, %.0fs", len(labels), count, time.time() - t0)
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


def _agree(pp_reads: list[TeacherRead], cct_reads: list[TeacherRead], min_ppocr: float, min_cct: float) -> str | None:
    """The text both teachers read on some pair of crops of one plate (4-9 characters), confidently."""
    for a in pp_reads:
        for b in cct_reads:
            if (
                a.text == b.text
                and 4 <= len(a.text) <= 9
                and a.mean_confidence >= min_ppocr
                and b.min_confidence >= min_cct
            ):
                return a.text
    return None


def _ppocr_alone(pp_reads: list[TeacherRead], min_mean: float, min_char: float) -> str | None:
    """PP-OCRv4's text when it reads every crop of the plate the same, 5-8 characters, very confidently."""
    texts = {a.text for a in pp_reads}
    if len(texts) != 1 or not all(a.mean_confidence >= min_mean and a.min_confidence >= min_char for a in pp_reads):
        return None
    text = texts.pop()
    return text if 5 <= len(text) <= 8 else None


def _self_agree(own_reads: Sequence[PlateReading], teacher_texts: Sequence[str], min_own: float) -> str | None:
    """The text our reader and a teacher read on some pair of crops (4-9 characters), confidently.

    ``min_own`` bounds the reader's string probability (``PlateReading.confidence``);
    ``teacher_texts`` are the teacher's readings that passed its own threshold.
    """
    for own in own_reads:
        if 4 <= len(own.text) <= 9 and own.confidence >= min_own and own.text in teacher_texts:
            return own.text
    return None


@dataclass
class LabelRule:
    """Which teacher readings make a label (see module docstring).

    The ``self_*`` thresholds are for pseudo-labels by our own reader and one teacher; a teacher
    threshold > 1 turns that rule off (the default).
    """

    min_ppocr: float
    min_cct: float
    relaxed_ppocr: float
    relaxed_cct: float
    alone_mean: float
    alone_min: float
    self_cct: float = 2.0
    self_cct_own: float = 0.2
    self_ppocr: float = 2.0
    self_ppocr_own: float = 0.5

    def strict(self, tight_pp: TeacherRead, tight_cct: TeacherRead) -> str | None:
        return _agree([tight_pp], [tight_cct], self.min_ppocr, self.min_cct)

    def label(
        self,
        pp_reads: list[TeacherRead],
        cct_reads: list[TeacherRead],
        own_reads: Sequence[PlateReading] = (),
    ) -> tuple[str | None, str]:
        """The label and the rule that gave it; ``own_reads`` (our reader's) only for train crops."""
        text = _agree(pp_reads[:1], cct_reads[:1], self.min_ppocr, self.min_cct)
        if text:
            return text, "strict"
        text = _agree(pp_reads, cct_reads, self.relaxed_ppocr, self.relaxed_cct)
        if text:
            return text, "agree"
        if self.alone_mean <= 1.0:
            text = _ppocr_alone(pp_reads, self.alone_mean, self.alone_min)
            if text:
                return text, "ppocr"
        return self.self_label(pp_reads, cct_reads, own_reads)

    def self_label(
        self, pp_reads: list[TeacherRead], cct_reads: list[TeacherRead], own_reads: Sequence[PlateReading]
    ) -> tuple[str | None, str]:
        """Our reader agreeing with one teacher; none when the two rules give different texts."""
        with_cct = with_ppocr = None
        if self.self_cct <= 1.0:
            sure_cct = [b.text for b in cct_reads if b.min_confidence >= self.self_cct]
            with_cct = _self_agree(own_reads, sure_cct, self.self_cct_own)
        if self.self_ppocr <= 1.0:
            sure_pp = [a.text for a in pp_reads if a.mean_confidence >= self.self_ppocr]
            with_ppocr = _self_agree(own_reads, sure_pp, self.self_ppocr_own)
        if with_cct and with_ppocr and with_cct != with_ppocr:
            return None, ""
        if with_cct:
            return with_cct, "self+cct"
        if with_ppocr:
            return with_ppocr, "self+ppocr"
        return None, ""


def teacher_crops(img: np.ndarray, box: tuple[float, float, float, float]) -> list[np.ndarray]:
    """What the teachers read of a labelled box: the tight box and the padded crop (``LABELLED_BOX_PADS``),
    those at least 2 pixels each way."""
    crops = (tight_crop(img, box), crop_plate(img, box, *LABELLED_BOX_PADS))
    return [c for c in crops if c.size and min(c.shape[:2]) >= 2]


def make_real(
    manifest: Path,
    cct_path: Path,
    out: Path,
    rule: LabelRule,
    detector_crops: bool,
    self_reader: Path | None = None,
) -> None:
    """Crops at the labelled boxes (all splits) and at the shipped detector's boxes (train split only).

    Each plate is read by both teachers on the tight box and on the engine's padded crop; the label
    rule is ``LabelRule.label``. A detector box takes the label of the labelled box it overlaps
    (IoU >= 0.3); a detector box on an unlabelled plate gets a label only by the strict rule.
    ``kinds`` records "box" or "det", ``rules`` which rule gave the label ("strict", "agree", "ppocr",
    "self+cct", "self+ppocr"). ``self_reader`` reads the train split's labelled boxes for the
    pseudo-label rules (``LabelRule.self_label``).
    """
    pp, cct = PpOcrTeacher(), CctTeacher(cct_path)
    own = OnnxPlateReader(self_reader, threads=1) if self_reader else None
    # One pass, as the detector ran when the shipped readers' data was made (labels sha256 2658d0eb...):
    # its close-plate pass (2026-12-06) moves some boxes, which would change the data a rebuild gives.
    detector = OnnxPlateDetector(threads=1, close_long_side=None) if detector_crops else None
    crops: list[np.ndarray] = []
    labels: list[str] = []
    splits: list[str] = []
    kinds: list[str] = []
    rules: list[str] = []
    audit = []
    t0 = time.time()

    def reads(views: list[np.ndarray]) -> tuple[list[TeacherRead], list[TeacherRead]]:
        return [pp.read(c) for c in views], [cct.read(c) for c in views]

    items = read_manifest(manifest)
    for n_item, item in enumerate(items):
        img = cv2.imread(str(item.path), cv2.IMREAD_COLOR)
        if img is None:
            continue
        split = item.split or "train"
        boxes = item.boxes_for(img.shape[1], img.shape[0])
        box_labels: list[tuple[str | None, str]] = []
        for plate, box in zip(item.plates, boxes, strict=True):
            stored = cut_with_margin(img, box)
            tight = tight_crop(img, box)
            if stored is None or tight.size == 0:
                box_labels.append((None, ""))
                continue
            views = teacher_crops(img, box)
            pp_reads, cct_reads = reads(views)
            own_reads = own.read(views) if own is not None and split == "train" else []
            label, how = (plate.text, "given") if plate.text else rule.label(pp_reads, cct_reads, own_reads)
            box_labels.append((label, how))
            row = {
                "path": str(item.path.name),
                "source": item.source,
                "license": item.license,
                "split": split,
                "kind": "box",
                "box": [round(v, 1) for v in box],
                "ppocr": [a.text for a in pp_reads],
                "ppocr_conf": [round(a.mean_confidence, 3) for a in pp_reads],
                "cct": [b.text for b in cct_reads],
                "cct_min_conf": [round(b.min_confidence, 3) for b in cct_reads],
                "label": label,
                "rule": how,
            }
            if own_reads:
                row["self"] = [r.text for r in own_reads]
                row["self_conf"] = [round(r.confidence, 3) for r in own_reads]
            audit.append(row)
            if label:
                crops.append(cv2.cvtColor(stored, cv2.COLOR_BGR2GRAY))
                labels.append(label)
                splits.append(split)
                kinds.append("box")
                rules.append(how)
        if detector is None or split != "train":
            continue
        for det in detector.detect(img):
            stored = cut_with_margin(img, det.box)
            if stored is None:
                continue
            overlaps = [box_iou(det.box, b) for b in boxes]
            best = int(np.argmax(overlaps)) if overlaps else -1
            if best >= 0 and overlaps[best] >= 0.3:
                label, how = box_labels[best]
                teacher_reads: tuple[list[TeacherRead], list[TeacherRead]] = ([], [])
            elif best >= 0 and overlaps[best] > 0.0:
                continue  # a poor box on a labelled plate: neither its label nor a new one
            else:
                teacher_reads = reads(teacher_crops(img, det.box))
                label = rule.strict(teacher_reads[0][0], teacher_reads[1][0]) if teacher_reads[0] else None
                how = "strict" if label else ""
            audit.append(
                {
                    "path": str(item.path.name),
                    "source": item.source,
                    "license": item.license,
                    "split": split,
                    "kind": "det",
                    "box": [round(v, 1) for v in det.box],
                    "ppocr": [a.text for a in teacher_reads[0]],
                    "cct": [b.text for b in teacher_reads[1]],
                    "label": label,
                    "rule": how,
                }
            )
            if label:
                crops.append(cv2.cvtColor(stored, cv2.COLOR_BGR2GRAY))
                labels.append(label)
                splits.append(split)
                kinds.append("det")
                rules.append(how)
        if (n_item + 1) % 500 == 0:
            logger.info("%d/%d photos, %d labelled crops, %.0fs", n_item + 1, len(items), len(labels), time.time() - t0)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        out,
        images=np.stack(crops),
        labels=np.array(labels),
        splits=np.array(splits),
        kinds=np.array(kinds),
        rules=np.array(rules),
    )
    with out.with_suffix(".labels.jsonl").open("w", encoding="utf-8") as fh:
        for row in audit:
            fh.write(json.dumps(row) + "\n")
    counts = {f"{s}/{k}/{r}": 0 for s, k, r in zip(splits, kinds, rules, strict=True)}
    for s, k, r in zip(splits, kinds, rules, strict=True):
        counts[f"{s}/{k}/{r}"] += 1
    logger.info("%d crops read, %d labelled: %s", len(audit), len(labels), dict(sorted(counts.items())))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    synth = sub.add_parser("synth")
    synth.add_argument("--count", type=int, default=40000)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--out", type=Path, default=Path("runs/ocr_data/synth.npz"))
    synth.add_argument("--rows", action="store_true", help="the rows of two-row plates, cut as the engine cuts them")
    real = sub.add_parser("real")
    real.add_argument("--manifest", type=Path, required=True)
    real.add_argument("--teacher-cct", type=Path, required=True)
    real.add_argument("--out", type=Path, default=Path("runs/ocr_data/real.npz"))
    real.add_argument("--min-ppocr", type=float, default=0.85)
    real.add_argument("--min-cct", type=float, default=0.5)
    real.add_argument("--relaxed-ppocr", type=float, default=0.75, help="agreement on any crop pair, PP-OCR mean")
    real.add_argument("--relaxed-cct", type=float, default=0.3, help="agreement on any crop pair, CCT minimum")
    real.add_argument(
        "--alone-mean", type=float, default=2.0, help="PP-OCR alone: mean confidence (> 1 turns this off)"
    )
    real.add_argument("--alone-min", type=float, default=0.9, help="PP-OCR alone: lowest character confidence")
    real.add_argument("--no-detector", action="store_true", help="skip crops at the shipped detector's boxes")
    real.add_argument("--self-reader", type=Path, help="our reader (ONNX) for the pseudo-label rules, train split")
    real.add_argument("--self-cct", type=float, default=0.9, help="self+cct: CCT minimum slot confidence")
    real.add_argument("--self-cct-own", type=float, default=0.2, help="self+cct: our reader's string probability")
    real.add_argument("--self-ppocr", type=float, default=0.9, help="self+ppocr: PP-OCR mean confidence")
    real.add_argument("--self-ppocr-own", type=float, default=0.5, help="self+ppocr: our reader's string probability")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.command == "synth":
        make_synth(args.count, args.seed, args.out, args.rows)
    else:
        rule = LabelRule(
            args.min_ppocr,
            args.min_cct,
            args.relaxed_ppocr,
            args.relaxed_cct,
            args.alone_mean,
            args.alone_min,
            args.self_cct,
            args.self_cct_own,
            args.self_ppocr,
            args.self_ppocr_own,
        )
        make_real(args.manifest, args.teacher_cct, args.out, rule, not args.no_detector, args.self_reader)


if __name__ == "__main__":
    main()
