"""The multi-crop reading that scripts/eval_ocr_crops.py scores: crop geometry and probability averaging."""

import json

import numpy as np
import pytest

from edge.recognition.formats import decode_plate
from edge.recognition.imageio import load_image
from edge.recognition.ocr import OnnxPlateReader, crop_plate
from scripts.eval_ocr_crops import DEFAULT, crop_variant, read_boxes
from tests.conftest import DATA

PLATES = DATA / "plates"


def rows_image() -> np.ndarray:
    """A 100 x 200 image whose pixel value is its row number."""
    return np.repeat(np.arange(100, dtype=np.uint8)[:, None, None], 200, axis=1).repeat(3, axis=2)


def test_crop_variant_shifts_and_shrinks_the_box() -> None:
    image, box = rows_image(), (50.0, 20.0, 150.0, 60.0)
    assert crop_variant(image, box, DEFAULT).shape == crop_plate(image, box).shape
    down = crop_variant(image, box, (0.0, 0.0, 0.25))  # 10 px down
    assert down.shape[:2] == (40, 100) and down[0, 0, 0] == 30 and down[-1, 0, 0] == 69
    shrunk = crop_variant(image, box, (0.0, -0.25, 0.0))  # 10 px off the top and the bottom
    assert shrunk.shape[:2] == (20, 100) and shrunk[0, 0, 0] == 30


@pytest.mark.parametrize("combine", ["mean", "logmean"])
def test_read_boxes_decodes_the_combined_probabilities_of_its_crops(combine: str) -> None:
    label = json.loads((PLATES / "labels.json").read_text())["cc0-car-2.jpg"]
    image = load_image(PLATES / "cc0-car-2.jpg")
    box = tuple(label["boxes"][0])
    specs = (DEFAULT, (0.0, 0.0, 0.0), (0.06, 0.12, 0.0))
    reader = OnnxPlateReader()
    per_crop = reader.probabilities([crop_variant(image, box, s) for s in specs])
    assert not np.allclose(per_crop[0], per_crop[1])  # the crops differ, so the combination matters
    combined = per_crop.mean(axis=0) if combine == "mean" else np.exp(np.log(np.fmax(per_crop, 1e-12)).mean(axis=0))
    (reading,) = read_boxes(reader, image, [box], specs, combine)
    expected = decode_plate(combined)
    assert reading.text == expected.text
    assert reading.confidence == pytest.approx(expected.confidence, rel=1e-6)
    assert reading.char_confidences == pytest.approx(expected.char_confidences, rel=1e-6)
    assert reading.text == label["plates"][0]
    # One crop with the default padding reads exactly as the engine does.
    (single,) = read_boxes(reader, image, [box], (DEFAULT,), "mean")
    assert single == reader.read([crop_plate(image, box)])[0]


def test_the_engine_variant_reads_a_squarish_crop_as_the_engine_does_rows_included() -> None:
    image = load_image(PLATES / "cc0-car-2.jpg")
    label = json.loads((PLATES / "labels.json").read_text())["cc0-car-2.jpg"]
    x1, y1, x2, y2 = label["boxes"][0]
    square = (x1, y1, x1 + (y2 - y1) * 1.2, y2)  # a box squarish enough to be read as two rows as well
    reader = OnnxPlateReader()
    (engine,) = read_boxes(reader, image, [square], (DEFAULT,), "engine")
    assert engine == reader.read([crop_variant(image, square, DEFAULT)])[0]
