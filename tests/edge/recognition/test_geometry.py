import math

import numpy as np
import pytest

from edge.recognition.geometry import Letterbox, box_iou, decode_centers, letterbox, letterbox_size, match_boxes, nms
from edge.recognition.types import PlateDetection


def test_letterbox_size_of_a_720p_frame_keeps_the_aspect_ratio() -> None:
    scale, canvas_w, canvas_h = letterbox_size(1280, 720, 512)
    assert scale == pytest.approx(0.4)
    assert (canvas_w, canvas_h) == (512, 288)


def test_letterbox_pads_to_a_multiple_of_32() -> None:
    scale, canvas_w, canvas_h = letterbox_size(500, 268, 512)
    assert round(268 * scale) == 274
    assert (canvas_w, canvas_h) == (512, 288)


def test_letterbox_rejects_empty_images() -> None:
    with pytest.raises(ValueError, match="positive"):
        letterbox_size(0, 10, 512)


def test_letterbox_places_the_image_top_left_and_pads_with_grey() -> None:
    image = np.full((90, 200, 3), 7, np.uint8)
    canvas, placement = letterbox(image, 64)
    assert canvas.shape == (32, 64, 3)
    assert placement == Letterbox(scale=0.32, width=64, height=32)
    assert (canvas[:29] == 7).all()
    assert (canvas[29:] == 114).all()


def test_to_source_undoes_the_scale_and_clips() -> None:
    placement = Letterbox(scale=0.5, width=64, height=64)
    assert placement.to_source((10, 10, 20, 30), 100, 100) == (20, 20, 40, 60)
    assert placement.to_source((-5, 0, 80, 20), 100, 100) == (0, 0, 100, 40)


def test_box_iou() -> None:
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == pytest.approx(1.0)
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert box_iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0
    assert box_iou((0, 0, 0, 0), (0, 0, 0, 0)) == 0.0


def test_nms_keeps_the_best_of_overlapping_boxes_and_all_disjoint_ones() -> None:
    dets = [
        PlateDetection((0, 0, 10, 10), 0.6),
        PlateDetection((1, 0, 11, 10), 0.9),
        PlateDetection((50, 50, 60, 60), 0.4),
    ]
    kept = nms(dets, 0.5)
    assert [d.score for d in kept] == [0.9, 0.4]


def test_decode_centers_recovers_the_encoded_box() -> None:
    heat = np.zeros((20, 30), np.float32)
    size = np.zeros((2, 20, 30), np.float32)
    offset = np.zeros((2, 20, 30), np.float32)
    heat[5, 7] = 0.9
    heat[5, 8] = 0.5  # a neighbour of the peak is not a second plate
    size[:, 5, 7] = (math.log(10.0), math.log(3.0))
    offset[:, 5, 7] = (0.5, 0.25)
    (det,) = decode_centers(heat, size, offset, stride=4, score_threshold=0.3, max_detections=10)
    cx, cy = (7.5) * 4, (5.25) * 4
    assert det.box == pytest.approx((cx - 20, cy - 6, cx + 20, cy + 6))
    assert det.score == pytest.approx(0.9)


def test_decode_centers_applies_the_threshold_and_the_cap() -> None:
    heat = np.zeros((10, 10), np.float32)
    heat[1, 1], heat[5, 5], heat[8, 8] = 0.2, 0.8, 0.7
    zeros = np.zeros((2, 10, 10), np.float32)
    found = decode_centers(heat, zeros, zeros, stride=4, score_threshold=0.3, max_detections=1)
    assert [d.score for d in found] == [pytest.approx(0.8)]


def test_match_boxes_is_one_to_one_and_respects_the_threshold() -> None:
    truth = [(0, 0, 10, 10), (100, 100, 110, 110)]
    predicted = [(0, 0, 10, 10), (1, 1, 11, 11), (50, 50, 60, 60), (101, 100, 111, 110)]
    assert match_boxes(predicted, truth, 0.5) == {0: 0, 3: 1}
