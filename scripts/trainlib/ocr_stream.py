"""The reader's training stream: synthetic plates and teacher-labelled real crops, jittered per sample."""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from edge.recognition.formats import ALPHABET, PAD, SLOTS
from scripts.make_ocr_data import CROP_MARGIN, OCR_H, OCR_W, STORE_H, STORE_W
from scripts.trainlib.augment import real_world


def encode(label: str) -> np.ndarray:
    """A plate text as ``SLOTS`` class indices, padded with ``PAD`` (the CTC head's blank)."""
    padded = label[:SLOTS].ljust(SLOTS, PAD)
    return np.array([ALPHABET.index(c) for c in padded], np.int64)


def jitter_real(stored: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Crop the labelled box out of its margin the way a detector would miss it, then degrade."""
    box_w = STORE_W / (1 + 2 * CROP_MARGIN)
    box_h = STORE_H / (1 + 2 * CROP_MARGIN)
    mx, my = box_w * CROP_MARGIN, box_h * CROP_MARGIN
    dx1, dx2 = rng.uniform(-0.04, 0.1, 2) * box_w
    dy1, dy2 = rng.uniform(-0.08, 0.15, 2) * box_h
    angle = rng.uniform(-5, 5)
    src = np.array(
        [[mx - dx1, my - dy1], [STORE_W - mx + dx2, my - dy1], [STORE_W - mx + dx2, STORE_H - my + dy2]], np.float32
    )
    dst = np.array([[0, 0], [OCR_W, 0], [OCR_W, OCR_H]], np.float32)
    matrix = cv2.getAffineTransform(src, dst)
    rot = cv2.getRotationMatrix2D((OCR_W / 2, OCR_H / 2), angle, 1.0)
    matrix = rot @ np.vstack([matrix, [0, 0, 1]])
    crop = cv2.warpAffine(stored, matrix, (OCR_W, OCR_H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    bgr = real_world(cv2.cvtColor(crop, cv2.COLOR_GRAY2BGR), rng, strength=0.5)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)


def jitter_synth(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Synthetic plates are degraded when made; add only a small shift and scale here."""
    sx, sy = rng.uniform(0.95, 1.05), rng.uniform(0.93, 1.07)
    tx, ty = rng.uniform(-3, 3), rng.uniform(-2, 2)
    matrix = np.array([[sx, 0, (1 - sx) * OCR_W / 2 + tx], [0, sy, (1 - sy) * OCR_H / 2 + ty]], np.float32)
    out = cv2.warpAffine(img, matrix, (OCR_W, OCR_H), borderMode=cv2.BORDER_REPLICATE)
    if rng.random() < 0.1:
        out = 255 - out  # light-on-dark plates and IR polarity
    return out


class PlateTexts(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """``length`` samples a pass, each a real crop with probability ``real_fraction``, else a synthetic
    plate; sample ``index`` of pass ``epoch`` is the same on every run (seeded by both)."""

    def __init__(
        self,
        synth: tuple[np.ndarray, np.ndarray],
        real: tuple[np.ndarray, np.ndarray],
        real_fraction: float,
        length: int,
        seed: int,
    ) -> None:
        self.synth_images, self.synth_labels = synth
        self.real_images, self.real_labels = real
        self.real_fraction = real_fraction if len(self.real_images) else 0.0
        self.length = length
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng((self.seed, self.epoch, index))
        if rng.random() < self.real_fraction:
            k = int(rng.integers(len(self.real_images)))
            img, label = jitter_real(self.real_images[k], rng), str(self.real_labels[k])
        else:
            k = int(rng.integers(len(self.synth_images)))
            img, label = jitter_synth(self.synth_images[k], rng), str(self.synth_labels[k])
        x = torch.from_numpy(img.astype(np.float32)[None] / 255.0)
        return x, torch.from_numpy(encode(label))


def center_crop(stored: np.ndarray) -> np.ndarray:
    """The labelled box of a stored real crop, resized to the model input (for validation)."""
    box_w = STORE_W / (1 + 2 * CROP_MARGIN)
    box_h = STORE_H / (1 + 2 * CROP_MARGIN)
    x1, y1 = (STORE_W - box_w) / 2, (STORE_H - box_h) / 2
    crop = stored[int(y1) : int(y1 + box_h), int(x1) : int(x1 + box_w)]
    return cv2.resize(crop, (OCR_W, OCR_H), interpolation=cv2.INTER_AREA)
