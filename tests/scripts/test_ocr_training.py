"""The OCR data labelling rule and warm-starting the OCR network from an exported model."""

from pathlib import Path

import numpy as np
import pytest

from scripts.make_ocr_data import LabelRule
from scripts.trainlib.teachers import TeacherRead
from tests.scripts.conftest import exported_with_batch_statistics


def rule() -> LabelRule:
    return LabelRule(0.85, 0.5, 0.75, 0.3, 0.97, 0.9)


def test_strict_agreement_on_the_tight_crop_comes_first() -> None:
    pp = [TeacherRead("7ABC123", 0.95, 0.9), TeacherRead("7ABC123", 0.9, 0.8)]
    cct = [TeacherRead("7ABC123", 0.9, 0.6), TeacherRead("7ABC12", 0.9, 0.6)]
    assert rule().label(pp, cct) == ("7ABC123", "strict")


def test_looser_agreement_on_any_pair_of_crops() -> None:
    pp = [TeacherRead("CALIF7ABC123", 0.9, 0.5), TeacherRead("7ABC123", 0.8, 0.5)]
    cct = [TeacherRead("7ABC123", 0.6, 0.35), TeacherRead("7ABC12", 0.9, 0.6)]
    assert rule().label(pp, cct) == ("7ABC123", "agree")
    weak = [TeacherRead("7ABC123", 0.6, 0.2)]
    assert rule().label([TeacherRead("7ABC123", 0.8, 0.5)], weak) == (None, "")


def test_ppocr_alone_needs_the_same_very_confident_read_on_every_crop() -> None:
    sure = [TeacherRead("7ABC123", 0.99, 0.95), TeacherRead("7ABC123", 0.98, 0.93)]
    cct = [TeacherRead("7ABC128", 0.9, 0.6)]
    assert rule().label(sure, cct) == ("7ABC123", "ppocr")
    split = [TeacherRead("7ABC123", 0.99, 0.95), TeacherRead("7ABC12", 0.99, 0.95)]
    assert rule().label(split, cct) == (None, "")


@pytest.mark.training  # torch: `make test-train` (the training extras), not `make test`
def test_warm_start_from_an_exported_model_reads_the_same(tmp_path: Path) -> None:
    import torch

    from scripts.train_ocr import export_onnx, load_onnx_weights
    from scripts.trainlib.nets import PlateOcrNet

    torch.manual_seed(0)
    source = PlateOcrNet()
    path = exported_with_batch_statistics(source, torch.rand(16, 1, 48, 160), export_onnx, tmp_path / "ocr.onnx")
    images = (np.random.default_rng(0).random((24, 48, 160)) * 255).astype(np.uint8)
    target = PlateOcrNet()
    load_onnx_weights(target, path, images[:16])
    source.eval()
    target.eval()
    x = torch.from_numpy(images[16:].astype(np.float32)[:, None] / 255.0)
    with torch.no_grad():
        assert torch.allclose(source(x), target(x), atol=1e-5)
