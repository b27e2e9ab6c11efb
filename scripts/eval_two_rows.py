"""How readers do on two-row plates: synthetic plates seen as a detector box frames them.

    python scripts/eval_two_rows.py --ocr models/plate_ocr.onnx [other.onnx ...] [--plates 400] [--seed 123]

For each reader, the exact-read rate of synthetic two-row plates (motorcycle, Mercosur and square EU
layouts) and, as the check that row-by-row reading costs single-row plates nothing, of synthetic
single-row plates of the other layouts, each read three ways: the whole crop only, the two rows only
(``edge.recognition.ocr.split_rows`` and ``join_rows``) and as the engine reads (``OnnxPlateReader.read``:
squarish crops both ways, the surer reading kept). The plates come from the training renderer with a
seed of their own (training sets use seeds 1-4), so no plate here was trained on; they measure the
mechanism, not real-world accuracy (there are no labelled two-row photographs here).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge.recognition.ocr import OnnxPlateReader, join_rows, split_rows  # noqa: E402
from edge.recognition.types import BgrImage  # noqa: E402
from scripts.trainlib.synth import LAYOUTS, TWO_ROW_LAYOUTS, Layout, place_in_scene, render_plate  # noqa: E402

SINGLE_ROW_LAYOUTS = tuple(layout for layout in LAYOUTS if not layout.two_rows and layout.name != "random")


def synthetic_crops(layouts: tuple[Layout, ...], count: int, rng: np.random.Generator) -> list[tuple[BgrImage, str]]:
    """``count`` plates of ``layouts`` at the size the camera saw them, with their labels."""
    crops = []
    for _ in range(count):
        plate, label, _, text_box = render_plate(rng, layouts)
        crops.append((place_in_scene(plate, rng, None, None, text_box, 0.0), label))
    return crops


def exact_rates(reader: OnnxPlateReader, crops: list[tuple[BgrImage, str]]) -> dict[str, float]:
    """The share of ``crops`` read exactly from the whole crop, from its two rows, and by the engine."""
    whole = rows = engine = 0
    for crop, label in crops:
        alone, top, bottom = reader.probabilities([crop, *split_rows(crop)])
        whole += reader.decode(alone).text == label
        joined = join_rows(top, bottom)
        rows += joined is not None and reader.decode(joined).text == label
        engine += reader.read([crop])[0].text == label
    n = max(1, len(crops))
    return {"whole crop": whole / n, "two rows": rows / n, "engine": engine / n}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ocr", type=Path, nargs="+", required=True)
    parser.add_argument("--plates", type=int, default=400, help="plates of each kind")
    parser.add_argument("--seed", type=int, default=123)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    sets = {
        "two-row": synthetic_crops(TWO_ROW_LAYOUTS, args.plates, rng),
        "single-row": synthetic_crops(SINGLE_ROW_LAYOUTS, args.plates, rng),
    }
    print(f"| reader | plates | whole crop | two rows | engine |  ({args.plates} of each, seed {args.seed})")
    print("|---|---|---|---|---|")
    for path in args.ocr:
        reader = OnnxPlateReader(path)
        for kind, crops in sets.items():
            rates = " | ".join(f"{rate:.3f}" for rate in exact_rates(reader, crops).values())
            print(f"| {path} | {kind} | {rates} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
