"""Warm-starting the plate detector from an exported ONNX file (``train_detector.py --init-onnx``)."""

from pathlib import Path

import numpy as np
import pytest

from tests.scripts.conftest import exported_with_batch_statistics


@pytest.mark.training  # torch: `make test-train` (the training extras), not `make test`
def test_warm_start_from_an_exported_detector_gives_the_same_outputs(tmp_path: Path) -> None:
    import onnxruntime as ort
    import torch

    from scripts.train_detector import export_onnx
    from scripts.trainlib.nets import PlateDetectorNet
    from scripts.trainlib.onnx_init import load_onnx_convs

    torch.manual_seed(0)
    path = exported_with_batch_statistics(
        PlateDetectorNet(), torch.rand(4, 3, 128, 128), export_onnx, tmp_path / "detector.onnx"
    )
    target = PlateDetectorNet()
    load_onnx_convs(target, path, torch.rand(4, 3, 128, 128))
    x = np.random.default_rng(0).random((1, 3, 96, 160), dtype=np.float32)
    expected = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"image": x})
    target.eval()
    with torch.no_grad():
        got = target(torch.from_numpy(x))
    for e, g in zip(expected, got, strict=True):
        np.testing.assert_allclose(g.numpy(), e, atol=1e-5)
    # Train mode on a batch like the calibration one stays close: BatchNorm undoes itself.
    target.train()
    batch = torch.rand(4, 3, 128, 128)
    with torch.no_grad():
        heat_train = target(batch)[0]
        target.eval()
        heat_eval = target(batch)[0]
    assert float((heat_train - heat_eval).abs().max()) < 0.05
