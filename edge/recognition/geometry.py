"""Pure array geometry used by the detector: letterboxing, peak decoding and NMS.

Kept free of any model runtime so that training, inference and tests share one
implementation of the arithmetic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from edge.recognition.types import BgrImage, Box, FloatArray, PlateDetection

STRIDE_MULTIPLE = 32
"""Network input sides must be multiples of the backbone's total stride."""

PAD_VALUE = 114


@dataclass(frozen=True, slots=True)
class Letterbox:
    """How an image was placed on the network canvas: scaled, then padded right and bottom."""

    scale: float
    width: int
    height: int

    def to_source(self, box: Box, source_w: int, source_h: int) -> Box:
        """Map a box in canvas pixels back to the source image, clipped to its bounds."""
        x1, y1, x2, y2 = (v / self.scale for v in box)
        return (
            float(np.clip(x1, 0, source_w)),
            float(np.clip(y1, 0, source_h)),
            float(np.clip(x2, 0, source_w)),
            float(np.clip(y2, 0, source_h)),
        )


def letterbox_size(width: int, height: int, long_side: int) -> tuple[float, int, int]:
    """Scale factor and padded canvas size for an image whose longer side becomes ``long_side``."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    scale = long_side / max(width, height)
    new_w = max(1, round(width * scale))
    new_h = max(1, round(height * scale))
    canvas_w = -(-new_w // STRIDE_MULTIPLE) * STRIDE_MULTIPLE
    canvas_h = -(-new_h // STRIDE_MULTIPLE) * STRIDE_MULTIPLE
    return scale, canvas_w, canvas_h


def letterbox(image: BgrImage, long_side: int) -> tuple[BgrImage, Letterbox]:
    """Resize keeping the aspect ratio and pad right/bottom to a multiple of the stride."""
    height, width = image.shape[:2]
    scale, canvas_w, canvas_h = letterbox_size(width, height, long_side)
    new_w = max(1, round(width * scale))
    new_h = max(1, round(height * scale))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (new_w, new_h), interpolation=interpolation)
    canvas = np.full((canvas_h, canvas_w, 3), PAD_VALUE, dtype=np.uint8)
    canvas[:new_h, :new_w] = resized
    return canvas, Letterbox(scale=scale, width=canvas_w, height=canvas_h)


def box_iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes."""
    ix1, iy1 = max(a[0], b[0]), max(a[1], b[1])
    ix2, iy2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, ix2 - ix1) * max(0.0, iy2 - iy1)
    area_a = max(0.0, a[2] - a[0]) * max(0.0, a[3] - a[1])
    area_b = max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])
    union = area_a + area_b - inter
    return inter / union if union > 0 else 0.0


def nms(detections: list[PlateDetection], iou_threshold: float) -> list[PlateDetection]:
    """Greedy non-maximum suppression, highest score first."""
    kept: list[PlateDetection] = []
    for det in sorted(detections, key=lambda d: d.score, reverse=True):
        if all(box_iou(det.box, k.box) < iou_threshold for k in kept):
            kept.append(det)
    return kept


def decode_centers(
    heatmap: FloatArray,
    size: FloatArray,
    offset: FloatArray,
    stride: int,
    score_threshold: float,
    max_detections: int,
) -> list[PlateDetection]:
    """Turn CenterNet-style maps into boxes in canvas pixels.

    ``heatmap`` is h x w of sigmoid scores; ``size`` is 2 x h x w of log width and
    log height in output cells; ``offset`` is 2 x h x w of the sub-cell centre position.
    A cell is a peak when it equals the maximum of its 3x3 neighbourhood.
    """
    peaks = cv2.dilate(heatmap, np.ones((3, 3), np.uint8))
    ys, xs = np.nonzero((heatmap >= peaks) & (heatmap >= score_threshold))
    if len(ys) > max_detections:
        order = np.argsort(-heatmap[ys, xs])[:max_detections]
        ys, xs = ys[order], xs[order]
    detections = []
    for y, x in zip(ys.tolist(), xs.tolist(), strict=True):
        cx = (x + float(offset[0, y, x])) * stride
        cy = (y + float(offset[1, y, x])) * stride
        w = float(np.exp(np.clip(size[0, y, x], -4.0, 8.0))) * stride
        h = float(np.exp(np.clip(size[1, y, x], -4.0, 8.0))) * stride
        box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
        detections.append(PlateDetection(box=box, score=float(heatmap[y, x])))
    return detections


def match_boxes(predicted: Sequence[Box], truth: Sequence[Box], iou_threshold: float) -> dict[int, int]:
    """Greedy one-to-one matching, predictions in the given order (best first).

    Returns {prediction index: truth index} for pairs with IoU >= ``iou_threshold``.
    """
    matched: dict[int, int] = {}
    taken: set[int] = set()
    for i, box in enumerate(predicted):
        best, best_iou = -1, iou_threshold
        for j, gt in enumerate(truth):
            overlap = box_iou(box, gt)
            if j not in taken and overlap >= best_iou:
                best, best_iou = j, overlap
        if best >= 0:
            matched[i] = best
            taken.add(best)
    return matched
