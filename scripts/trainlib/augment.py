"""Real-world image degradations shared by detector and OCR training.

Each function takes and returns a uint8 BGR image and draws its parameters from the
given generator, so a seeded run is reproducible.
"""

from __future__ import annotations

import cv2
import numpy as np
from cv2.typing import MatLike

Image = MatLike


def color_jitter(img: Image, rng: np.random.Generator) -> Image:
    hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + rng.uniform(-10, 10)) % 180
    hsv[..., 1] *= rng.uniform(0.5, 1.5)
    hsv[..., 2] *= rng.uniform(0.6, 1.4)
    out = cv2.cvtColor(np.clip(hsv, 0, 255).astype(np.uint8), cv2.COLOR_HSV2BGR)
    alpha = rng.uniform(0.6, 1.4)
    beta = rng.uniform(-40, 40)
    return cv2.convertScaleAbs(out, alpha=alpha, beta=beta)


def gamma(img: Image, value: float) -> Image:
    table = ((np.arange(256) / 255.0) ** value * 255).astype(np.uint8)
    return cv2.LUT(img, table)


def night(img: Image, rng: np.random.Generator) -> Image:
    """Dark scene with sensor noise: strong gamma, then additive noise."""
    out = gamma(img, rng.uniform(1.8, 3.5))
    return gaussian_noise(out, rng, sigma=rng.uniform(4, 14))


def infrared(img: Image, rng: np.random.Generator) -> Image:
    """IR-camera look: monochrome, crushed background, bright retroreflective plate."""
    gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    gray = cv2.equalizeHist(gray) if rng.random() < 0.5 else gray
    gray = gamma(np.ascontiguousarray(gray), rng.uniform(0.6, 2.5))
    return cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)


def glare(img: Image, rng: np.random.Generator) -> Image:
    """A soft bright blob, as from headlights or the sun on the plate."""
    h, w = img.shape[:2]
    cx, cy = rng.uniform(0, w), rng.uniform(0, h)
    radius = rng.uniform(0.1, 0.5) * max(h, w)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * radius**2)) * rng.uniform(80, 220)
    out: Image = np.clip(img.astype(np.float32) + blob[..., None], 0, 255).astype(np.uint8)
    return out


def blur(img: Image, rng: np.random.Generator) -> Image:
    if rng.random() < 0.5:
        k = int(rng.choice([3, 5, 7]))
        return cv2.GaussianBlur(img, (k, k), 0)
    length = int(rng.integers(3, max(4, min(10, min(img.shape[:2]) // 6))))
    kernel = np.zeros((length, length), np.float32)
    kernel[length // 2, :] = 1.0 / length
    matrix = cv2.getRotationMatrix2D((length / 2 - 0.5, length / 2 - 0.5), rng.uniform(0, 180), 1.0)
    rotated = cv2.warpAffine(kernel, matrix, (length, length))
    normalised = np.asarray(rotated, np.float32) / np.float32(max(float(rotated.sum()), 1e-6))
    return cv2.filter2D(img, -1, normalised)


def gaussian_noise(img: Image, rng: np.random.Generator, sigma: float | None = None) -> Image:
    s = rng.uniform(3, 18) if sigma is None else sigma
    noise = np.asarray(rng.normal(0, s, img.shape), np.float32)
    out: Image = np.clip(img.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    return out


def jpeg(img: Image, rng: np.random.Generator) -> Image:
    quality = int(rng.integers(12, 90))
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        return img
    decoded = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    return img if decoded is None else decoded


def low_resolution(img: Image, rng: np.random.Generator) -> Image:
    h, w = img.shape[:2]
    factor = rng.uniform(0.25, 0.7)
    small = cv2.resize(img, (max(1, int(w * factor)), max(1, int(h * factor))), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def real_world(img: Image, rng: np.random.Generator, strength: float = 1.0) -> Image:
    """Apply a random mix of the degradations above."""
    out = color_jitter(img, rng) if rng.random() < 0.8 else img
    roll = rng.random()
    if roll < 0.12 * strength:
        out = night(out, rng)
    elif roll < 0.24 * strength:
        out = infrared(out, rng)
    if rng.random() < 0.12 * strength:
        out = glare(out, rng)
    if rng.random() < 0.3 * strength:
        out = blur(out, rng)
    if rng.random() < 0.2 * strength:
        out = low_resolution(out, rng)
    if rng.random() < 0.3 * strength:
        out = gaussian_noise(out, rng)
    if rng.random() < 0.5 * strength:
        out = jpeg(out, rng)
    return out
