"""Type aliases and frozen records shared by the recognition stages."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt
from cv2.typing import MatLike

# Images are typed as OpenCV's MatLike so that cv2 results need no casts; by convention they hold uint8.
BgrImage = MatLike
"""An H x W x 3 uint8 image in OpenCV's BGR channel order."""

GrayImage = MatLike
"""An H x W uint8 single-channel image."""

FloatArray = npt.NDArray[np.float32]

Box = tuple[float, float, float, float]
"""x1, y1, x2, y2 in pixels of the image the box refers to."""

DetectorBackend = Literal["onnxruntime", "opencv"]


@dataclass(frozen=True, slots=True)
class PlateDetection:
    """One plate found by the detector."""

    box: Box
    score: float


@dataclass(frozen=True, slots=True)
class Candidate:
    """One possible reading of a plate with its probability."""

    text: str
    confidence: float


@dataclass(frozen=True, slots=True)
class PlateReading:
    """What the OCR stage made of one plate crop, after format post-processing."""

    text: str
    confidence: float
    char_confidences: tuple[float, ...]
    region: str
    candidates: tuple[Candidate, ...] = field(default_factory=tuple)


@dataclass(frozen=True, slots=True)
class PlateResult:
    """A detected plate together with its reading."""

    detection: PlateDetection
    reading: PlateReading


@dataclass(frozen=True, slots=True)
class RecognitionTiming:
    """Milliseconds spent in each stage for one image."""

    detect_ms: float
    ocr_ms: float
    total_ms: float


@dataclass(frozen=True, slots=True)
class RecognitionResult:
    """All plates read in one image."""

    plates: tuple[PlateResult, ...]
    timing: RecognitionTiming
