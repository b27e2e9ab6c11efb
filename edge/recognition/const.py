"""Constants shared by the recognition runtime and the training scripts."""

from __future__ import annotations

import os
from pathlib import Path

MODELS_DIR = Path(os.environ.get("ALPR_MODELS_DIR", Path(__file__).resolve().parents[2] / "models"))
DETECTOR_MODEL = MODELS_DIR / "plate_detector.onnx"
OCR_MODEL = MODELS_DIR / "plate_ocr.onnx"

DETECTOR_STRIDE = 4
DETECTOR_LONG_SIDE = 512
"""Frames are letterboxed so their longer side is this many pixels (a multiple of 32)."""
DETECTOR_SCORE_THRESHOLD = 0.3
DETECTOR_CLOSE_PLATE_WIDTH = 150
"""A plate found this many canvas pixels wide or wider is measured again by a pass at
``DETECTOR_CLOSE_LONG_SIDE``. The network underestimates the width of large plates (a close car): on the
train split, labelled over found width has a median of 0.95-0.98 for boxes 40-200 canvas pixels wide but
1.09 (upper quartile 1.40) from 200 up, and the crop loses end characters. On the coarser canvas such a
plate is of a size the network measures well (models/README.md has the val figures)."""
DETECTOR_CLOSE_LONG_SIDE = 320
DETECTOR_NMS_IOU = 0.5
DETECTOR_MAX_PLATES = 50

OCR_WIDTH = 160
OCR_HEIGHT = 48
OCR_CROP_PAD_X = 0.03
OCR_CROP_PAD_Y = -0.05
"""A detector box is grown by these fractions of its size (negative: shrunk) before the crop is read.
The detector frames the whole plate, as its training labels do; taking 5% off its top and bottom keeps
less of the frame's small print in view, and the CTC readers read more plates end to end that way on
val than with the earlier (0.03, 0.06) (models/README.md)."""

TWO_ROW_MAX_ASPECT = 1.75
"""A crop at most this wide for its height may be a two-row plate (motorcycle, Mercosur, square EU
plates: about 1.1-1.6 as cropped) and is also read row by row; the reading the reader is surer of is
kept, so a squarish single-row crop (a plate seen from the side) keeps its whole reading."""
TWO_ROW_OVERLAP = 0.06
"""Each row's crop reaches this fraction of the crop's height past the middle (rows are rarely level)."""

MAX_IMAGE_PIXELS = 40_000_000
"""Images above this are refused rather than decoded (a 40 MP frame is already 120 MB of pixels)."""
