"""Plate detector: the project's CenterNet-style ONNX model, run by onnxruntime or OpenCV DNN."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from edge.recognition import const
from edge.recognition.geometry import Letterbox, box_iou, decode_centers, letterbox, letterbox_size, nms
from edge.recognition.onnx_runtime import ModelLoadError, create_session
from edge.recognition.types import BgrImage, Box, DetectorBackend, FloatArray, PlateDetection

OUTPUT_NAMES = ["heatmap", "size", "offset"]
CLOSE_MATCH_IOU = 0.3
"""A coarse-pass box re-measures a close plate when it overlaps the fine pass's box at least this much."""


class PlateDetector(Protocol):
    """Finds plates in a BGR frame of any size; boxes are in the frame's pixels."""

    def detect(self, image: BgrImage) -> list[PlateDetection]: ...


class _Backend(Protocol):
    def run(self, blob: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]: ...


class _OrtBackend:
    def __init__(self, path: Path, threads: int) -> None:
        self.session = create_session(path, threads)

    def run(self, blob: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
        heat, size, offset = self.session.run(OUTPUT_NAMES, {"image": blob})
        return heat, size, offset


class _OpenCvBackend:
    def __init__(self, path: Path, threads: int) -> None:
        if not path.is_file():
            raise ModelLoadError(f"model file not found: {path}")
        if threads > 0:
            cv2.setNumThreads(threads)
        try:
            self.net = cv2.dnn.readNetFromONNX(str(path))
        except cv2.error as exc:
            raise ModelLoadError(f"OpenCV cannot load model {path}: {exc}") from exc

    def run(self, blob: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
        self.net.setInput(blob)
        heat, size, offset = self.net.forward(OUTPUT_NAMES)
        return np.asarray(heat, np.float32), np.asarray(size, np.float32), np.asarray(offset, np.float32)


class OnnxPlateDetector:
    """Letterbox, run the network, decode peaks, map back to the frame, apply NMS."""

    def __init__(
        self,
        model_path: Path = const.DETECTOR_MODEL,
        backend: DetectorBackend = "onnxruntime",
        threads: int = 1,
        long_side: int = const.DETECTOR_LONG_SIDE,
        score_threshold: float = const.DETECTOR_SCORE_THRESHOLD,
        nms_iou: float = const.DETECTOR_NMS_IOU,
        close_long_side: int | None = const.DETECTOR_CLOSE_LONG_SIDE,
        close_plate_width: float = const.DETECTOR_CLOSE_PLATE_WIDTH,
    ) -> None:
        for side in (long_side, close_long_side):
            if side is not None and side % 32:
                raise ValueError(f"long sides must be multiples of 32, got {side}")
        self.backend: _Backend = (
            _OrtBackend(model_path, threads) if backend == "onnxruntime" else _OpenCvBackend(model_path, threads)
        )
        self.long_side = long_side
        self.score_threshold = score_threshold
        self.nms_iou = nms_iou
        self.close_long_side = close_long_side
        """None: one pass only."""
        self.close_plate_width = close_plate_width

    def detect(self, image: BgrImage) -> list[PlateDetection]:
        """Plates in ``image``; boxes of close plates re-measured by a coarser pass (``close_long_side``)."""
        found = self._detect_at(image, self.long_side)
        if self.close_long_side is None or self.close_long_side >= self.long_side:
            return found
        height, width = image.shape[:2]
        close = {i for i, d in enumerate(found) if self.is_close(d.box, width, height)}
        if not close:
            return found
        coarse = self._detect_at(image, self.close_long_side)
        return [_remeasured(d, coarse) if i in close else d for i, d in enumerate(found)]

    def is_close(self, box: Box, width: int, height: int) -> bool:
        """Whether a box found in a ``width`` x ``height`` frame is wide enough on the main pass's canvas to
        be measured again by the coarse pass."""
        scale = letterbox_size(width, height, self.long_side)[0]
        return (box[2] - box[0]) * scale >= self.close_plate_width

    def _detect_at(self, image: BgrImage, long_side: int) -> list[PlateDetection]:
        """The plates found with the frame letterboxed to ``long_side``, in frame pixels."""
        canvas, placement = letterbox(image, long_side)
        heat, size, offset = self.backend.run(to_blob(canvas))
        found = decode_centers(
            heat[0, 0], size[0], offset[0], const.DETECTOR_STRIDE, self.score_threshold, const.DETECTOR_MAX_PLATES
        )
        return _to_source(nms(found, self.nms_iou), placement, image.shape[1], image.shape[0])


def _remeasured(detection: PlateDetection, coarse: list[PlateDetection]) -> PlateDetection:
    """``detection`` with the box of the coarse pass's detection that overlaps it most (IoU >= 0.3), if any;
    the score stays the fine pass's."""
    overlaps = [(box_iou(c.box, detection.box), c.box) for c in coarse]
    best_iou, best_box = max(overlaps, default=(0.0, detection.box))
    return PlateDetection(box=best_box, score=detection.score) if best_iou >= CLOSE_MATCH_IOU else detection


def to_blob(canvas: BgrImage) -> FloatArray:
    """BGR uint8 H x W x 3 to RGB float32 1 x 3 x H x W in [0, 1]."""
    rgb = cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(rgb.transpose(2, 0, 1)[None], dtype=np.float32) / np.float32(255.0)


def _to_source(found: list[PlateDetection], placement: Letterbox, width: int, height: int) -> list[PlateDetection]:
    mapped = (PlateDetection(box=placement.to_source(d.box, width, height), score=d.score) for d in found)
    return [d for d in mapped if d.box[2] - d.box[0] >= 2 and d.box[3] - d.box[1] >= 2]
