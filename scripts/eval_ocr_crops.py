"""Score OCR crop variants (paddings, multi-crop reading) on the val split, end to end and on labelled boxes.

    python scripts/eval_ocr_crops.py --manifest ../shared/datasets/detect/manifest.jsonl --split val

The val split of ``detect/manifest.jsonl`` has almost no plate texts of its own, so each labelled box
is labelled here as ``make_ocr_data.py real`` labels it (rules "given", "strict" and "agree": both
teachers read the same text on the tight box or on the padded crop of ``LABELLED_BOX_PADS``); the
labels are cached under ``--cache`` (caches of earlier versions also hold detector boxes, not used: each
run detects afresh as the engine does, or with ``--single-pass`` as it did before its close-plate pass).
For every variant (one or more crops per box, probabilities combined before the format-aware decoding)
it prints the end-to-end exact rate and character accuracy (a labelled plate counts only if a detection
matched to it at IoU >= 0.3 reads it exactly, as in ``scripts/eval.py``) and the same on the labelled
boxes. Selection only: never run it on eval-ucsd.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge.recognition import const  # noqa: E402
from edge.recognition.detector import OnnxPlateDetector  # noqa: E402
from edge.recognition.formats import ALPHABET, SLOTS, decode_plate  # noqa: E402
from edge.recognition.geometry import match_boxes  # noqa: E402
from edge.recognition.imageio import load_image  # noqa: E402
from edge.recognition.ocr import OnnxPlateReader, crop_plate  # noqa: E402
from edge.recognition.types import BgrImage, Box, FloatArray, PlateReading  # noqa: E402
from scripts.eval import ReadScore  # noqa: E402
from scripts.trainlib.manifest import LABELLED_BOX_PADS, read_manifest  # noqa: E402

CropSpec = tuple[float, float, float]
"""(pad_x, pad_y, shift_y): the box moved down by shift_y of its height, then cut as ``crop_plate``
cuts it with pad_x / pad_y (negative pads shrink it)."""

DEFAULT = (const.OCR_CROP_PAD_X, const.OCR_CROP_PAD_Y, 0.0)
EARLIER = (*LABELLED_BOX_PADS, 0.0)
"""The engine's crop until 2026-12-06."""

VARIANTS: dict[str, tuple[tuple[CropSpec, ...], str]] = {
    # single crops: (pad_x, pad_y, shift_y) as fractions of the box
    f"shipped ({DEFAULT[0]:.2f}, {DEFAULT[1]:.2f})": ((DEFAULT,), "mean"),
    f"engine ({DEFAULT[0]:.2f}, {DEFAULT[1]:.2f}), two rows": ((DEFAULT,), "engine"),
    "single (0.03, 0.06)": ((EARLIER,), "mean"),
    "single (0.00, 0.00)": (((0.0, 0.0, 0.0),), "mean"),
    "single (0.03, 0.00)": (((0.03, 0.0, 0.0),), "mean"),
    "single (0.03, -0.05)": (((0.03, -0.05, 0.0),), "mean"),
    "single (0.03, -0.10)": (((0.03, -0.10, 0.0),), "mean"),
    "single (0.06, 0.06)": (((0.06, 0.06, 0.0),), "mean"),
    "single (0.06, 0.12)": (((0.06, 0.12, 0.0),), "mean"),
    "single (0.10, 0.15)": (((0.10, 0.15, 0.0),), "mean"),
    "single (0.00, 0.06)": (((0.0, 0.06, 0.0),), "mean"),
    "single (0.05, 0.08)": (((0.05, 0.08, 0.0),), "mean"),
    # two crops
    "2: (0.03, 0.06) + (0.00, 0.00)": ((EARLIER, (0.0, 0.0, 0.0)), "mean"),
    "2: (0.03, 0.06) + (0.06, 0.12)": ((EARLIER, (0.06, 0.12, 0.0)), "mean"),
    "2: (0.03, 0.06) + (0.10, 0.15)": ((EARLIER, (0.10, 0.15, 0.0)), "mean"),
    "2: (0.03, 0.06) + (0.03, -0.10)": ((EARLIER, (0.03, -0.10, 0.0)), "mean"),
    "2: (0.03, 0.06) + shift down 0.05": ((EARLIER, (0.03, 0.06, 0.05)), "mean"),
    "2: (0.03, 0.06) + shift up 0.05": ((EARLIER, (0.03, 0.06, -0.05)), "mean"),
    "2: (0.00, 0.00) + (0.06, 0.12)": (((0.0, 0.0, 0.0), (0.06, 0.12, 0.0)), "mean"),
    "2: (0.03, 0.06) + (0.00, 0.00), logmean": ((EARLIER, (0.0, 0.0, 0.0)), "logmean"),
    "2: (0.03, 0.06) + (0.06, 0.12), logmean": ((EARLIER, (0.06, 0.12, 0.0)), "logmean"),
    # three crops
    "3: (0.00, 0.00) + (0.03, 0.06) + (0.06, 0.12)": (((0.0, 0.0, 0.0), EARLIER, (0.06, 0.12, 0.0)), "mean"),
    "3: (0.03, 0.06) + up 0.05 + down 0.05": ((EARLIER, (0.03, 0.06, -0.05), (0.03, 0.06, 0.05)), "mean"),
    "3: (0.03, 0.06) + (0.03, -0.10) + (0.06, 0.12)": ((EARLIER, (0.03, -0.10, 0.0), (0.06, 0.12, 0.0)), "mean"),
    "3: (0.00, 0.00) + (0.03, 0.06) + (0.06, 0.12), logmean": (
        ((0.0, 0.0, 0.0), EARLIER, (0.06, 0.12, 0.0)),
        "logmean",
    ),
    # second round, around the best single crop (shrunk vertically)
    "single (0.00, -0.05)": (((0.0, -0.05, 0.0),), "mean"),
    "single (0.03, -0.03)": (((0.03, -0.03, 0.0),), "mean"),
    "single (0.00, -0.03)": (((0.0, -0.03, 0.0),), "mean"),
    "single (0.015, -0.05)": (((0.015, -0.05, 0.0),), "mean"),
    "single (0.03, -0.07)": (((0.03, -0.07, 0.0),), "mean"),
    "single (-0.02, -0.05)": (((-0.02, -0.05, 0.0),), "mean"),
    "2: (0.03, 0.06) + (0.03, -0.05)": ((EARLIER, (0.03, -0.05, 0.0)), "mean"),
    "2: (0.00, 0.00) + (0.03, -0.05)": (((0.0, 0.0, 0.0), (0.03, -0.05, 0.0)), "mean"),
    "2: (0.03, -0.05) + (0.00, -0.05)": (((0.03, -0.05, 0.0), (0.0, -0.05, 0.0)), "mean"),
    "3: (0.00, 0.00) + (0.03, 0.06) + (0.03, -0.05)": (((0.0, 0.0, 0.0), EARLIER, (0.03, -0.05, 0.0)), "mean"),
    "3: (0.03, 0.06) + (0.03, -0.05) + (0.00, -0.05)": ((EARLIER, (0.03, -0.05, 0.0), (0.0, -0.05, 0.0)), "mean"),
}


def crop_variant(image: BgrImage, box: Box, spec: CropSpec) -> BgrImage:
    pad_x, pad_y, shift_y = spec
    x1, y1, x2, y2 = box
    shift = (y2 - y1) * shift_y
    return crop_plate(image, (x1, y1 + shift, x2, y2 + shift), pad_x, pad_y)


def read_boxes(
    reader: OnnxPlateReader, image: BgrImage, boxes: list[Box], specs: tuple[CropSpec, ...], combine: str
) -> list[PlateReading]:
    """Every crop of every box in one batch; per box the crops' slot probabilities are averaged
    ("mean") or their log-probabilities ("logmean", a geometric mean) before decoding, or a single crop
    is read as the engine reads it ("engine": squarish crops also row by row)."""
    crops = [crop_variant(image, box, spec) for box in boxes for spec in specs]
    if combine == "engine":
        return reader.read(crops)
    probs = reader.probabilities(crops).reshape(len(boxes), len(specs), SLOTS, len(ALPHABET))
    if combine == "logmean":
        combined: FloatArray = np.exp(np.log(np.fmax(probs, 1e-12)).mean(axis=1))
    else:
        combined = probs.mean(axis=1)
    return [decode_plate(p) for p in combined]


def build_cache(manifest: Path, split: str, cct_path: Path, cache: Path) -> list[dict[str, Any]]:
    """Per photo: labelled boxes with their teacher labels."""
    from scripts.make_ocr_data import LabelRule, teacher_crops
    from scripts.trainlib.teachers import CctTeacher, PpOcrTeacher

    pp, cct = PpOcrTeacher(), CctTeacher(cct_path)
    rule = LabelRule(0.85, 0.5, 0.75, 0.3, 2.0, 0.9)  # make_ocr_data.py real's defaults, no "ppocr" rule
    rows = []
    for item in read_manifest(manifest, split):
        image = load_image(item.path)
        boxes = item.boxes_for(image.shape[1], image.shape[0])
        labels: list[str | None] = []
        rules: list[str] = []
        for plate, box in zip(item.plates, boxes, strict=True):
            crops = teacher_crops(image, box)
            x1, y1, x2, y2 = box
            if x2 - x1 < 8 or y2 - y1 < 4 or not crops:
                labels.append(None)
                rules.append("")
                continue
            label, how = (
                (plate.text, "given")
                if plate.text
                else rule.label([pp.read(c) for c in crops], [cct.read(c) for c in crops])
            )
            labels.append(label)
            rules.append(how)
        rows.append(
            {
                "path": str(item.path),
                "boxes": [list(b) for b in boxes],
                "labels": labels,
                "rules": rules,
            }
        )
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def score(pairs: list[tuple[str, str]]) -> dict[str, float]:
    """Exact reads and character accuracy of (truth, read) pairs, counted as ``scripts/eval.py`` counts them."""
    tally = ReadScore()
    for truth, read in pairs:
        tally.add(truth, read, "")
    summary = tally.summary()
    return {
        "plates": tally.plates,
        "exact": summary["exact_rate"],
        "exact_n": tally.exact,
        "char": summary["char_accuracy"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--split", default="val")
    parser.add_argument(
        "--teacher-cct",
        type=Path,
        default=Path(__file__).resolve().parents[2] / "shared" / "teachers" / "cct_xs_v1_global.onnx",
    )
    parser.add_argument("--cache", type=Path, default=Path("runs/ocr_crops/val_cache.jsonl"))
    parser.add_argument("--only", nargs="*", help="variant names to score (default: all)")
    parser.add_argument("--ocr", type=Path, default=const.OCR_MODEL, help="reader ONNX file (a candidate, say)")
    parser.add_argument(
        "--single-pass",
        action="store_true",
        help="no second detector pass for close plates (the engine before 2026-12-06)",
    )
    parser.add_argument("--results", type=Path, help="write the scores here (default: results.json beside the cache)")
    args = parser.parse_args()
    if "ucsd" in str(args.manifest).lower():
        raise SystemExit("eval-ucsd is for evaluation only: variants are chosen on val")
    if args.cache.is_file():
        rows = [json.loads(line) for line in args.cache.read_text().splitlines()]
    else:
        rows = build_cache(args.manifest, args.split, args.teacher_cct, args.cache)
    images = {r["path"]: load_image(Path(r["path"])) for r in rows}
    # The detector as the engine runs it now (the cache's boxes are those of the detector that built it).
    detector = OnnxPlateDetector(
        threads=1, close_long_side=None if args.single_pass else const.DETECTOR_CLOSE_LONG_SIDE
    )
    detections = {path: [d.box for d in detector.detect(image)] for path, image in images.items()}
    results = {}
    reader = OnnxPlateReader(args.ocr, threads=1)
    for name, (specs, combine) in VARIANTS.items():
        if args.only and name not in args.only:
            continue
        e2e: list[tuple[str, str]] = []
        boxes: list[tuple[str, str]] = []
        for row in rows:
            image = images[row["path"]]
            truth: list[Box] = [tuple(b) for b in row["boxes"]]
            dets = detections[row["path"]]
            labelled = [t for t, label in enumerate(row["labels"]) if label]
            if not labelled:
                continue
            loose = match_boxes(dets, truth, 0.3)
            det_for_truth = {t: p for p, t in loose.items() if t in labelled}
            wanted = sorted(det_for_truth)
            det_reads = read_boxes(reader, image, [dets[det_for_truth[t]] for t in wanted], specs, combine)
            read_of = {t: r.text for t, r in zip(wanted, det_reads, strict=True)}
            box_reads = read_boxes(reader, image, [truth[t] for t in labelled], specs, combine)
            for t, r in zip(labelled, box_reads, strict=True):
                e2e.append((row["labels"][t], read_of.get(t, "")))
                boxes.append((row["labels"][t], r.text))
        results[name] = {"end_to_end": score(e2e), "labelled_boxes": score(boxes)}
        e, b = results[name]["end_to_end"], results[name]["labelled_boxes"]
        print(
            f"{name:52s} e2e {e['exact']:.3f} ({e['exact_n']}/{e['plates']}) char {e['char']:.3f} | "
            f"boxes {b['exact']:.3f} ({b['exact_n']}) char {b['char']:.3f}",
            flush=True,
        )
    out = args.results or args.cache.with_name("results.json")
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
