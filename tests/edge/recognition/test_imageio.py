from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.recognition.imageio import ImageLoadError, decode_image, load_image


def _write(path: Path, image: np.ndarray) -> Path:
    ok, buf = cv2.imencode(path.suffix, image)
    assert ok
    path.write_bytes(buf.tobytes())
    return path


def test_colour_jpeg_loads_as_bgr(tmp_path: Path) -> None:
    image = np.zeros((40, 60, 3), np.uint8)
    image[:, :, 2] = 200
    loaded = load_image(_write(tmp_path / "red.jpg", image))
    assert loaded.shape == (40, 60, 3) and loaded.dtype == np.uint8
    assert loaded[20, 30, 2] > 180 and loaded[20, 30, 0] < 30


def test_grayscale_png_is_converted_to_three_channels(tmp_path: Path) -> None:
    loaded = load_image(_write(tmp_path / "gray.png", np.full((10, 20), 99, np.uint8)))
    assert loaded.shape == (10, 20, 3)
    assert (loaded == 99).all()


def test_16_bit_png_is_scaled_to_8_bit(tmp_path: Path) -> None:
    image = np.full((10, 20), 65535, np.uint16)
    image[:, :10] = 257 * 100
    loaded = load_image(_write(tmp_path / "deep.png", image))
    assert loaded.dtype == np.uint8 and loaded.shape == (10, 20, 3)
    assert loaded[0, 0, 0] == 100 and loaded[0, 15, 0] == 255


def test_png_with_alpha_drops_the_alpha_channel(tmp_path: Path) -> None:
    loaded = load_image(_write(tmp_path / "alpha.png", np.full((8, 8, 4), 50, np.uint8)))
    assert loaded.shape == (8, 8, 3)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: None, "no such file"),
        (lambda p: p.write_bytes(b""), "empty file"),
        (lambda p: p.write_text("plate,list\n7ABC123,stolen\n"), "not an image"),
    ],
)
def test_bad_files_raise_one_clear_error(tmp_path: Path, make: object, message: str) -> None:
    path = tmp_path / "input.jpg"
    make(path)  # type: ignore[operator]
    with pytest.raises(ImageLoadError, match=message):
        load_image(path)


def test_truncated_jpeg_is_refused(tmp_path: Path) -> None:
    image = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".jpg", image)
    assert ok
    with pytest.raises(ImageLoadError, match="truncated JPEG"):
        decode_image(buf.tobytes()[: len(buf) // 2])


def test_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ImageLoadError, match="directory"):
        load_image(tmp_path)


def test_oversized_image_is_refused_before_decoding(huge_png: Path) -> None:
    with pytest.raises(ImageLoadError, match="10000x10000"):
        load_image(huge_png)
