"""Plate detector: the project's CenterNet-style ONNX model, run by onnxruntime or OpenCV DNN."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from edge.recognition import const
from edge.recognition.geometry import Letterbox, decode_centers, letterbox, nms
from edge.recognition.onnx_runtime import ModelLoadError, create_session
from edge.recognition.types import BgrImage, DetectorBackend, FloatArray, PlateDetection

OUTPUT_NAMES = ["heatmap", "size", "offset"]


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
    ) -> None:
        if long_side % 32:
            raise ValueError(f"long_side must be a multiple of 32, got {long_side}")
        self.backend: _Backend = (
            _OrtBackend(model_path, threads) if backend == "onnxruntime" else _OpenCvBackend(model_path, threads)
        )
        self.long_side = long_side
        self.score_threshold = score_threshold
        self.nms_iou = nms_iou

    def detect(self, image: BgrImage) -> list[PlateDetection]:
        canvas, placement = letterbox(image, self.long_side)
        heat, size, offset = self.backend.run(to_blob(canvas))
        found = decode_centers(
            heat[0, 0], size[0], offset[0], const.DETECTOR_STRIDE, self.score_threshold, const.DETECTOR_MAX_PLATES
        )
        return _to_source(nms(found, self.nms_iou), placement, image.shape[1], image.shape[0])


def to_blob(canvas: BgrImage) -> FloatArray:
    """BGR uint8 H x W x 3 to RGB float32 1 x 3 x H x W in [0, 1]."""
    rgb = cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(rgb.transpose(2, 0, 1)[None], dtype=np.float32) / np.float32(255.0)


def _to_source(found: list[PlateDetection], placement: Letterbox, width: int, height: int) -> list[PlateDetection]:
    mapped = (PlateDetection(box=placement.to_source(d.box, width, height), score=d.score) for d in found)
    return [d for d in mapped if d.box[2] - d.box[0] >= 2 and d.box[3] - d.box[1] >= 2]
