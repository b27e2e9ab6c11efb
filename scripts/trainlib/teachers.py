"""The two pretrained OCR teachers in ../shared/teachers, used to label real crops and as baselines.

PP-OCRv4 (Apache-2.0) is loaded from the installed ``rapidocr-onnxruntime`` wheel; the
fast-plate-ocr CCT model (MIT) from a file path. Nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort

from scripts.trainlib.augment import Image

CCT_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_"
ALNUM = set("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ")


@dataclass(frozen=True, slots=True)
class TeacherRead:
    text: str
    mean_confidence: float
    min_confidence: float


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def ppocr_model_path() -> Path:
    spec = importlib.util.find_spec("rapidocr_onnxruntime")
    if spec is None or spec.origin is None:
        raise RuntimeError("the PP-OCRv4 teacher needs: pip install --no-deps rapidocr-onnxruntime==1.4.4")
    return Path(spec.origin).parent / "models" / "ch_PP-OCRv4_rec_infer.onnx"


class PpOcrTeacher:
    """PP-OCRv4 recogniser: CTC over 6,625 classes; keeps only A-Z and 0-9."""

    def __init__(self, path: Path | None = None) -> None:
        self.session = _session(path or ppocr_model_path())
        meta = self.session.get_modelmeta().custom_metadata_map
        self.characters = ["<blank>", *meta["character"].splitlines(), " "]

    def read(self, crop: Image) -> TeacherRead:
        h, w = crop.shape[:2]
        target_w = int(min(320, max(16, np.ceil(48 * w / max(h, 1)))))
        resized = cv2.resize(crop, (target_w, 48)).astype(np.float32)
        x = np.zeros((1, 3, 48, 320), np.float32)
        x[0, :, :, :target_w] = ((resized / 255.0 - 0.5) / 0.5).transpose(2, 0, 1)
        probs = self.session.run(None, {"x": x})[0][0]
        best = probs.argmax(axis=1)
        chars: list[str] = []
        confs: list[float] = []
        previous = -1
        for t, k in enumerate(best.tolist()):
            if k != previous and k != 0:
                ch = self.characters[k].upper()
                if ch in ALNUM:
                    chars.append(ch)
                    confs.append(float(probs[t, k]))
            previous = k
        if not confs:
            return TeacherRead("", 0.0, 0.0)
        return TeacherRead("".join(chars), float(np.mean(confs)), float(np.min(confs)))


class CctTeacher:
    """fast-plate-ocr cct_xs_v1_global: nine slots over 0-9A-Z and a pad."""

    def __init__(self, path: Path) -> None:
        self.session = _session(path)
        self.input_name = self.session.get_inputs()[0].name

    def read(self, crop: Image) -> TeacherRead:
        rgb = cv2.cvtColor(cv2.resize(crop, (128, 64)), cv2.COLOR_BGR2RGB)
        probs = self.session.run(None, {self.input_name: rgb[None]})[0][0]
        best = probs.argmax(axis=1)
        chars = [CCT_ALPHABET[k] for k in best.tolist()]
        confs = [float(probs[i, k]) for i, k in enumerate(best.tolist())]
        text = "".join(c for c in chars if c != "_")
        return TeacherRead(text, float(np.mean(confs)), float(np.min(confs)))
