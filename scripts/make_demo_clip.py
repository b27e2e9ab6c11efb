"""Make the demo's sample clip: three vehicles driving towards a roadside camera.

    python scripts/make_demo_clip.py --out deploy/demo/clip.avi

Each pass is one CC0 photo from tests/data/plates (Kaggle "Car License Plate Detection" by
andrewmvd, CC0-1.0) scaled up frame by frame on a grey road, as a car approaching a camera;
empty frames between passes let the tracker see each car leave. MJPG in AVI, 10 fps, 800x450.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ("cc0-car-1.jpg", "cc0-car-3.jpg", "cc0-car-4.jpg")
SIZE = (800, 450)
FPS = 10
FRAMES_PER_PASS = 14
GAP_FRAMES = 12


def road() -> np.ndarray:
    frame = np.full((SIZE[1], SIZE[0], 3), 96, np.uint8)
    cv2.rectangle(frame, (0, 0), (SIZE[0], 120), (180, 170, 150), -1)  # sky and buildings, roughly
    return frame


def pass_frames(photo: np.ndarray) -> list[np.ndarray]:
    frames = []
    for i in range(FRAMES_PER_PASS):
        scale = 0.75 + 0.45 * i / (FRAMES_PER_PASS - 1)  # approaching: the car grows
        h, w = photo.shape[:2]
        fit = min(SIZE[0] / w, SIZE[1] / h) * scale
        car = cv2.resize(photo, (int(w * fit), int(h * fit)), interpolation=cv2.INTER_AREA)
        frame = road()
        x = (SIZE[0] - car.shape[1]) // 2
        y = SIZE[1] - car.shape[0] - int(20 * (1 - scale))
        x0, y0 = max(0, x), max(0, y)
        crop = car[y0 - y : y0 - y + SIZE[1] - y0, x0 - x : x0 - x + SIZE[0] - x0]
        frame[y0 : y0 + crop.shape[0], x0 : x0 + crop.shape[1]] = crop
        frames.append(frame)
    return frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "deploy" / "demo" / "clip.avi")
    args = parser.parse_args()
    writer = cv2.VideoWriter(str(args.out), cv2.VideoWriter.fourcc(*"MJPG"), FPS, SIZE)
    if not writer.isOpened():
        raise SystemExit(f"cannot write {args.out}")
    for name in PHOTOS:
        photo = cv2.imread(str(ROOT / "tests" / "data" / "plates" / name))
        if photo is None:
            raise SystemExit(f"missing {name}")
        for frame in pass_frames(photo) + [road()] * GAP_FRAMES:
            writer.write(frame)
    writer.release()
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
