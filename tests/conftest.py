from pathlib import Path

import cv2
import numpy as np
import pytest

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def huge_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real 10000 x 10000 PNG (black, so it compresses to ~100 kB)."""
    path = tmp_path_factory.mktemp("huge") / "huge.png"
    ok, buf = cv2.imencode(".png", np.zeros((10000, 10000), np.uint8), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    assert ok
    path.write_bytes(buf.tobytes())
    return path
