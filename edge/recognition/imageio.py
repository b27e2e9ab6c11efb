"""Loading still images with one clear error per bad file instead of a crash or a silent None."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from edge.recognition import const
from edge.recognition.types import BgrImage

JPEG_END_OF_IMAGE = b"\xff\xd9"


class ImageLoadError(ValueError):
    """The file cannot be used as an image; the message says why in one line."""


def load_image(path: Path, max_pixels: int = const.MAX_IMAGE_PIXELS) -> BgrImage:
    """Decode any still image OpenCV reads into 8-bit BGR.

    Grayscale, 16-bit and alpha images are converted; empty, truncated, oversized and
    non-image files raise :class:`ImageLoadError`.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImageLoadError("no such file") from None
    except IsADirectoryError:
        raise ImageLoadError("is a directory") from None
    except OSError as exc:
        raise ImageLoadError(f"cannot read file: {exc.strerror or exc}") from None
    return decode_image(data, max_pixels)


def decode_image(data: bytes, max_pixels: int = const.MAX_IMAGE_PIXELS) -> BgrImage:
    if not data:
        raise ImageLoadError("empty file (0 bytes)")
    width, height, fmt = _header(data)
    if width * height > max_pixels:
        raise ImageLoadError(
            f"image is {width}x{height} ({width * height / 1e6:.0f} MP), above the {max_pixels / 1e6:.0f} MP limit"
        )
    if fmt == "JPEG" and not data.rstrip(b"\x00").endswith(JPEG_END_OF_IMAGE):
        raise ImageLoadError("truncated JPEG (no end-of-image marker)")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ImageLoadError(f"corrupt {fmt} image (decoder failed)")
    return to_bgr8(image)


def _header(data: bytes) -> tuple[int, int, str]:
    """Size and format from the header alone, so huge images are refused before decoding."""
    try:
        with warnings.catch_warnings():
            # PIL warns about huge images; the caller refuses them itself, with a clearer message.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as probe:
                return probe.width, probe.height, str(probe.format)
    except Image.DecompressionBombError:
        raise ImageLoadError("image is far above the pixel limit (refused before decoding)") from None
    except UnidentifiedImageError:
        raise ImageLoadError("not an image (unrecognised format)") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageLoadError(f"unreadable image header: {exc}") from None


def to_bgr8(image: np.ndarray) -> BgrImage:
    """Any decoded array (gray, 16-bit, float, alpha) to uint8 BGR."""
    if image.dtype == np.uint16:
        image = (image // 257).astype(np.uint8)
    elif image.dtype != np.uint8:  # float TIFF/EXR: stretch the value range onto 0..255
        low, high = float(image.min()), float(image.max())
        image = ((image - low) * (255.0 / max(high - low, 1e-12))).astype(np.uint8)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.shape[2] == 1:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    return np.ascontiguousarray(image)
