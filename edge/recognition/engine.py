"""The recognition pipeline: detect plates in a frame, then read every plate in one OCR batch."""

from __future__ import annotations

import time
from dataclasses import dataclass

from edge.recognition import const
from edge.recognition.detector import OnnxPlateDetector, PlateDetector
from edge.recognition.ocr import OnnxPlateReader, PlateReader, crop_plate
from edge.recognition.types import (
    BgrImage,
    DetectorBackend,
    PlateResult,
    RecognitionResult,
    RecognitionTiming,
)


@dataclass(frozen=True, slots=True)
class RecognizerConfig:
    detector_backend: DetectorBackend = "onnxruntime"
    threads: int = 1
    detector_long_side: int = const.DETECTOR_LONG_SIDE
    detector_threshold: float = const.DETECTOR_SCORE_THRESHOLD
    min_confidence: float = 0.0
    """Readings below this OCR confidence are dropped."""
    region_hint: str | None = None


class Recognizer:
    """Detector and reader as arguments, so tests and the edge node can hand in their own stages."""

    def __init__(self, detector: PlateDetector, reader: PlateReader, min_confidence: float = 0.0) -> None:
        self.detector = detector
        self.reader = reader
        self.min_confidence = min_confidence

    @classmethod
    def from_config(cls, config: RecognizerConfig) -> Recognizer:
        detector = OnnxPlateDetector(
            backend=config.detector_backend,
            threads=config.threads,
            long_side=config.detector_long_side,
            score_threshold=config.detector_threshold,
        )
        reader = OnnxPlateReader(threads=config.threads, region_hint=config.region_hint)
        return cls(detector, reader, config.min_confidence)

    def recognize(self, image: BgrImage) -> RecognitionResult:
        start = time.perf_counter()
        detections = self.detector.detect(image)
        detected = time.perf_counter()
        readings = self.reader.read([crop_plate(image, d.box) for d in detections])
        done = time.perf_counter()
        plates = tuple(
            PlateResult(detection=d, reading=r)
            for d, r in zip(detections, readings, strict=True)
            if r.text and r.confidence >= self.min_confidence
        )
        timing = RecognitionTiming(
            detect_ms=(detected - start) * 1000, ocr_ms=(done - detected) * 1000, total_ms=(done - start) * 1000
        )
        return RecognitionResult(plates=plates, timing=timing)
