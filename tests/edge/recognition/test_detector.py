"""The detector's second, coarser pass for close plates (their width is re-measured there)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge.recognition import const
from edge.recognition.detector import OnnxPlateDetector, _remeasured
from edge.recognition.imageio import load_image
from edge.recognition.types import FloatArray, PlateDetection
from tests.conftest import DATA

PLATES = DATA / "plates"


def test_a_close_plate_takes_the_most_overlapping_coarse_box_and_keeps_its_score() -> None:
    fine = PlateDetection(box=(100.0, 100.0, 200.0, 150.0), score=0.9)
    coarse = [
        PlateDetection(box=(90.0, 98.0, 240.0, 152.0), score=0.5),  # IoU 0.62
        PlateDetection(box=(100.0, 100.0, 180.0, 150.0), score=0.8),  # IoU 0.8
        PlateDetection(box=(400.0, 100.0, 500.0, 150.0), score=0.99),  # elsewhere
    ]
    assert _remeasured(fine, coarse) == PlateDetection(box=(100.0, 100.0, 180.0, 150.0), score=0.9)


def test_a_close_plate_the_coarse_pass_does_not_find_keeps_its_box() -> None:
    fine = PlateDetection(box=(100.0, 100.0, 200.0, 150.0), score=0.9)
    assert _remeasured(fine, [PlateDetection(box=(180.0, 100.0, 300.0, 150.0), score=0.9)]) == fine
    assert _remeasured(fine, []) == fine


class CanvasSpy:
    """Wraps the real backend and records the canvas size of every pass."""

    def __init__(self, detector: OnnxPlateDetector) -> None:
        self.inner = detector.backend
        self.canvases: list[tuple[int, int]] = []
        detector.backend = self

    def run(self, blob: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
        self.canvases.append((blob.shape[3], blob.shape[2]))
        return self.inner.run(blob)


def plate_width_on_canvas(name: str) -> float:
    label = json.loads((PLATES / "labels.json").read_text())[name]
    x1, _, x2, _ = label["boxes"][0]
    return float((x2 - x1) * const.DETECTOR_LONG_SIDE / max(label["size"]))


def test_a_frame_with_only_distant_plates_is_run_once() -> None:
    assert plate_width_on_canvas("cc0-car-6.jpg") < const.DETECTOR_CLOSE_PLATE_WIDTH
    detector = OnnxPlateDetector()
    spy = CanvasSpy(detector)
    assert detector.detect(load_image(PLATES / "cc0-car-6.jpg"))
    assert [max(c) for c in spy.canvases] == [const.DETECTOR_LONG_SIDE]


def test_a_close_plate_is_measured_again_on_a_coarser_canvas() -> None:
    assert plate_width_on_canvas("cc0-car-5.jpg") >= const.DETECTOR_CLOSE_PLATE_WIDTH
    image = load_image(PLATES / "cc0-car-5.jpg")
    detector = OnnxPlateDetector()
    spy = CanvasSpy(detector)
    found = detector.detect(image)
    assert [max(c) for c in spy.canvases] == [const.DETECTOR_LONG_SIDE, const.DETECTOR_CLOSE_LONG_SIDE]
    single = OnnxPlateDetector(close_long_side=None).detect(image)
    coarse = OnnxPlateDetector(long_side=const.DETECTOR_CLOSE_LONG_SIDE, close_long_side=None).detect(image)
    assert len(found) == len(single)
    assert [d.score for d in found] == [d.score for d in single]
    close = [i for i, d in enumerate(single) if detector.is_close(d.box, image.shape[1], image.shape[0])]
    assert close
    for i in close:  # each close plate's box is one of the coarse pass's boxes
        assert any(np.allclose(found[i].box, c.box) for c in coarse)


def test_long_sides_must_suit_the_network_stride() -> None:
    with pytest.raises(ValueError, match="multiples of 32"):
        OnnxPlateDetector(close_long_side=300)
