"""Reader for the datasets' ``manifest.jsonl`` files (see ../shared/datasets/README.md)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from edge.recognition.types import Box

LABELLED_BOX_PADS = (0.03, 0.06)
"""The margin (x, y fractions of the box) of the crop our reader and the teachers get around a labelled
box: the engine's crop until 2026-12-06. The engine now trims a detector box, which frames the whole
plate, while labelled boxes may hug the characters; the teachers' labels (``make_ocr_data.py``) and the
labelled-box column of ``eval.py`` keep this crop, so they stay as they were."""


@dataclass(frozen=True, slots=True)
class LabelledPlate:
    box: Box
    text: str | None


@dataclass(frozen=True, slots=True)
class ManifestImage:
    path: Path
    width: int
    height: int
    plates: tuple[LabelledPlate, ...]
    source: str
    license: str
    split: str | None
    region: str | None

    def boxes_for(self, width: int, height: int) -> list[Box]:
        """Plate boxes scaled to an image of the given size (the stored file may differ from the manifest)."""
        sx, sy = width / self.width, height / self.height
        return [(p.box[0] * sx, p.box[1] * sy, p.box[2] * sx, p.box[3] * sy) for p in self.plates]


def read_manifest(manifest: Path, split: str | None = None) -> list[ManifestImage]:
    """All images of a manifest, optionally only one split; paths resolved against its folder's parent."""
    root = manifest.resolve().parent.parent
    images = []
    with manifest.open(encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            row = json.loads(line)
            if split is not None and row.get("split") != split:
                continue
            plates = tuple(
                LabelledPlate(
                    box=(float(p["box"][0]), float(p["box"][1]), float(p["box"][2]), float(p["box"][3])),
                    text=p.get("text"),
                )
                for p in row["plates"]
            )
            images.append(
                ManifestImage(
                    path=root / row["path"],
                    width=int(row["width"]),
                    height=int(row["height"]),
                    plates=plates,
                    source=row.get("source", ""),
                    license=row.get("license", ""),
                    split=row.get("split"),
                    region=row.get("region"),
                )
            )
    return images
