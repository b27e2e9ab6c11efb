"""Plate reader: the project's ONNX OCR model (slot or CTC head) plus format-aware decoding."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from edge.recognition import const
from edge.recognition.formats import ALPHABET, PAD_INDEX, SLOTS, decode_plate
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
        output = self.session.get_outputs()[0]
        self.output_name: str = output.name
        if output.name == "ctc_probs":  # a CTC reader: per-column probabilities, any number of columns
            if len(output.shape) != 3 or output.shape[2] != len(ALPHABET):
                raise ModelLoadError(
                    f"OCR model {model_path} outputs {output.shape}, expected [n, columns, {len(ALPHABET)}]"
                )
        elif output.shape[1:] != [SLOTS, len(ALPHABET)]:
            raise ModelLoadError(
                f"OCR model {model_path} outputs {output.shape}, expected [n, {SLOTS}, {len(ALPHABET)}]"
            )
        self.num_candidates = num_candidates
        self.region_hint = region_hint

    def probabilities(self, crops: Sequence[BgrImage]) -> FloatArray:
        """Per-slot class probabilities, n x SLOTS x len(ALPHABET)."""
        if not crops:
            return np.zeros((0, SLOTS, len(ALPHABET)), np.float32)
        batch = np.stack([preprocess(c) for c in crops])
        probs: FloatArray = self.session.run([self.output_name], {"image": batch})[0]
        if self.output_name == "ctc_probs":
            return np.stack([ctc_to_slots(columns) for columns in probs])
        return probs

    def read(self, crops: Sequence[BgrImage]) -> list[PlateReading]:
        """Each crop's reading; a squarish crop is also read as two rows (:func:`split_rows`) and the
        reading with the higher confidence is kept."""
        squarish = [i for i, crop in enumerate(crops) if is_squarish(crop)]
        # One batch for the whole crops and the rows: one model call per frame, as without rows.
        probabilities = self.probabilities([*crops, *(row for i in squarish for row in split_rows(crops[i]))])
        readings = [self.decode(p) for p in probabilities[: len(crops)]]
        rows = probabilities[len(crops) :]
        for k, i in enumerate(squarish):
            joined = join_rows(rows[2 * k], rows[2 * k + 1])
            if joined is None:
                continue
            two_rows = self.decode(joined)
            if two_rows.text and two_rows.confidence > readings[i].confidence:
                readings[i] = two_rows
        return readings

    def decode(self, probabilities: FloatArray) -> PlateReading:
        """One plate's slot probabilities (:meth:`probabilities`) as a reading, with this reader's settings."""
        return decode_plate(probabilities, num_candidates=self.num_candidates, region_hint=self.region_hint)


def is_squarish(crop: BgrImage) -> bool:
    """Whether :meth:`OnnxPlateReader.read` also reads ``crop`` as two rows (it may hold a two-row plate)."""
    return bool(crop.shape[1] <= const.TWO_ROW_MAX_ASPECT * crop.shape[0])


def split_rows(crop: BgrImage, overlap: float = const.TWO_ROW_OVERLAP) -> tuple[BgrImage, BgrImage]:
    """A crop's top and bottom halves, each reaching ``overlap`` of its height past the middle.

    The middle, not the quietest line of the crop: on 300 synthetic two-row plates (the plates of
    ``scripts/eval_two_rows.py``, 2026-12-06) reader 9584bbc7 read 0.38 of them from halves cut at the
    middle and 0.25 from halves cut at the line of least horizontal contrast between 30% and 70% of the
    height (frames, bolts and state names have quiet lines of their own).
    """
    h = crop.shape[0]
    middle, reach = h // 2, max(1, round(h * overlap))
    return crop[: min(h, middle + reach)], crop[max(0, middle - reach) :]


def join_rows(top: FloatArray, bottom: FloatArray) -> FloatArray | None:
    """Slot probabilities of a two-row plate: the top row's characters, then the bottom row's, then pads.

    None where a row reads as empty or both together overflow the slots (not a two-row plate).
    """
    top_chars = int((top.argmax(axis=1) != PAD_INDEX).sum())
    bottom_chars = int((bottom.argmax(axis=1) != PAD_INDEX).sum())
    if top_chars == 0 or bottom_chars == 0 or top_chars + bottom_chars > SLOTS:
        return None
    joined = np.zeros_like(top)
    joined[:, PAD_INDEX] = 1.0
    joined[:top_chars] = top[:top_chars]
    joined[top_chars : top_chars + bottom_chars] = bottom[:bottom_chars]
    return joined


def ctc_to_slots(columns: FloatArray) -> FloatArray:
    """A CTC reader's per-column probabilities (columns x classes, ``PAD`` the blank) as slot probabilities.

    The best path's characters (repeats merged, blanks dropped) fill the slots in order, each with the
    whole distribution of the column where that character peaks, so the slot decoding (k-best strings,
    format rules, candidates) works unchanged; a high blank probability there reads as "maybe no
    character". The slots after the last character are certain pads.
    """
    slots = np.zeros((SLOTS, len(ALPHABET)), np.float32)
    slots[:, PAD_INDEX] = 1.0
    best = columns.argmax(axis=1)
    slot, start = 0, 0
    for column in range(1, len(best) + 1):
        if column < len(best) and best[column] == best[start]:
            continue  # the same class goes on: one character (or one blank) over several columns
        if best[start] != PAD_INDEX and slot < SLOTS:
            peak = start + int(columns[start:column, best[start]].argmax())
            slots[slot] = columns[peak]
            slot += 1
        start = column
    return slots


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
