"""Plate reader: the project's slot-based ONNX OCR model plus format-aware decoding."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from edge.recognition import const
from edge.recognition.formats import ALPHABET, SLOTS, decode_plate
from edge.recognition.onnx_runtime import ModelLoadError, create_session
from edge.recognition.types import BgrImage, Box, FloatArray, PlateReading


class PlateReader(Protocol):
    """Reads a batch of plate crops (BGR, any size)."""

    def read(self, crops: Sequence[BgrImage]) -> list[PlateReading]: ...


class OnnxPlateReader:
    def __init__(
        self,
        model_path: Path = const.OCR_MODEL,
        threads: int = 1,
        num_candidates: int = 8,
        region_hint: str | None = None,
    ) -> None:
        self.session = create_session(model_path, threads)
        shape = self.session.get_outputs()[0].shape
        if shape[1:] != [SLOTS, len(ALPHABET)]:
            raise ModelLoadError(f"OCR model {model_path} outputs {shape}, expected [n, {SLOTS}, {len(ALPHABET)}]")
        self.num_candidates = num_candidates
        self.region_hint = region_hint

    def probabilities(self, crops: Sequence[BgrImage]) -> FloatArray:
        """Per-slot class probabilities, n x SLOTS x len(ALPHABET)."""
        if not crops:
            return np.zeros((0, SLOTS, len(ALPHABET)), np.float32)
        batch = np.stack([preprocess(c) for c in crops])
        probs: FloatArray = self.session.run(["probs"], {"image": batch})[0]
        return probs

    def read(self, crops: Sequence[BgrImage]) -> list[PlateReading]:
        return [
            decode_plate(p, num_candidates=self.num_candidates, region_hint=self.region_hint)
            for p in self.probabilities(crops)
        ]


def preprocess(crop: BgrImage) -> FloatArray:
    """Crop to the model input: grayscale, stretched to 160 x 48, 1 x H x W float in [0, 1]."""
    gray = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY) if crop.ndim == 3 else crop
    interpolation = cv2.INTER_AREA if gray.shape[1] > const.OCR_WIDTH else cv2.INTER_LINEAR
    resized = cv2.resize(gray, (const.OCR_WIDTH, const.OCR_HEIGHT), interpolation=interpolation)
    return (resized.astype(np.float32) / np.float32(255.0))[None]


def crop_plate(
    image: BgrImage, box: Box, pad_x: float = const.OCR_CROP_PAD_X, pad_y: float = const.OCR_CROP_PAD_Y
) -> BgrImage:
    """The box grown by a small margin (the OCR model was trained on loose crops), clipped to the image."""
    h, w = image.shape[:2]
    x1, y1, x2, y2 = box
    dx, dy = (x2 - x1) * pad_x, (y2 - y1) * pad_y
    left, top = max(0, int(x1 - dx)), max(0, int(y1 - dy))
    right, bottom = min(w, int(np.ceil(x2 + dx))), min(h, int(np.ceil(y2 + dy)))
    return image[top : max(bottom, top + 1), left : max(right, left + 1)]
