"""The reader's training script, both heads (torch: `make test-train`, not `make test`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.recognition.formats import ALPHABET, PAD_INDEX, SLOTS

pytestmark = pytest.mark.training


def test_greedy_ctc_merges_repeats_and_keeps_letters_a_blank_apart() -> None:
    import torch

    from scripts.train_ocr import ctc_decode

    columns = ["A", "A", "_", "B", "_", "B", "B", "_", "_", "7"] + ["_"] * 10
    log_probs = torch.full((1, 20, len(ALPHABET)), -10.0)
    for t, char in enumerate(columns):
        log_probs[0, t, ALPHABET.index(char)] = 0.0
    assert ctc_decode(log_probs) == ["ABB7"]


def test_the_ctc_head_learns_a_fixed_batch_and_reads_it() -> None:
    import torch

    from scripts.train_ocr import ctc_decode, ctc_loss
    from scripts.trainlib.nets import PlateCtcNet

    torch.manual_seed(0)
    net = PlateCtcNet()
    x = torch.rand(4, 1, 48, 160)
    labels = ["AB12", "7XYZ", "Q0Q0", "88C"]
    y = torch.tensor([[ALPHABET.index(c) for c in label] + [PAD_INDEX] * (10 - len(label)) for label in labels])
    out = net(x)
    assert out.shape == (4, 20, len(ALPHABET))
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(150):
        loss = ctc_loss(net(x), y)
        optimizer.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
    net.eval()
    with torch.no_grad():
        assert ctc_decode(net(x)) == labels


def test_column_context_keeps_the_shape_and_none_keeps_the_shipped_weights_names() -> None:
    import torch

    from scripts.trainlib.nets import PlateCtcNet

    plain, wider = PlateCtcNet(), PlateCtcNet(context=3)
    assert not any(name.startswith("context.") for name in plain.state_dict())
    assert set(plain.state_dict()) < set(wider.state_dict())
    wider.eval()
    with torch.no_grad():
        out = wider(torch.rand(2, 1, 48, 160))
    assert out.shape == (2, 20, len(ALPHABET))
    assert torch.allclose(out.exp().sum(dim=-1), torch.ones(2, 20), atol=1e-5)


def _tiny_sets(tmp_path: Path) -> tuple[Path, Path]:
    import numpy as np

    from scripts.make_ocr_data import OCR_H, OCR_W, STORE_H, STORE_W

    rng = np.random.default_rng(0)
    synth = tmp_path / "synth.npz"
    np.savez(synth, images=rng.integers(0, 255, (1010, OCR_H, OCR_W), np.uint8), labels=np.array(["AB12"] * 1010))
    real = tmp_path / "real.npz"
    np.savez(
        real,
        images=rng.integers(0, 255, (6, STORE_H, STORE_W), np.uint8),
        labels=np.array(["7XYZ123", "8ABC234", "AB1234", "CD5678", "EF9", "GH12"]),
        splits=np.array(["train", "train", "train", "train", "val", "val"]),
        rules=np.array(["strict", "agree", "ppocr", "strict", "strict", "agree"]),
    )
    return synth, real


def test_a_run_saves_its_checkpoints_resumes_and_exports_what_the_engine_reads(tmp_path: Path) -> None:
    import sys

    import numpy as np

    from edge.recognition.ocr import OnnxPlateReader
    from scripts import train_ocr

    synth, real = _tiny_sets(tmp_path)
    out, onnx = tmp_path / "run", tmp_path / "reader.onnx"
    common = ["train_ocr.py", "--synth", str(synth), "--real", str(real), "--context", "2"]  # ctc by default
    common += ["--batch", "4", "--eval-every", "2", "--out", str(out), "--onnx", str(onnx)]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", [*common, "--steps", "4"])
        train_ocr.main()
        assert (out / "last.pt").exists() and (out / "best.pt").exists() and onnx.exists()
        patch.setattr(sys, "argv", [*common, "--steps", "6", "--resume"])
        train_ocr.main()
    log = (out / "train.log").read_text()
    assert "resumed at step 4" in log
    assert "head=ctc step 6 " in log
    assert "step 6 " in log
    assert "real train=3" in log  # strict and agree by default; the PP-OCR-alone crop is left out
    probabilities = OnnxPlateReader(onnx).probabilities([np.full((48, 160, 3), 128, np.uint8)])
    assert probabilities.shape == (1, SLOTS, len(ALPHABET))


def test_the_slot_head_trains_on_the_same_stream_and_is_not_fine_tuned_from_a_ctc_file(tmp_path: Path) -> None:
    import sys

    from scripts import train_ocr

    synth, real = _tiny_sets(tmp_path)
    out = tmp_path / "slot"
    argv = ["train_ocr.py", "--head", "slot", "--synth", str(synth), "--real", str(real), "--batch", "4"]
    argv += ["--eval-every", "2", "--steps", "2", "--out", str(out)]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", argv)
        train_ocr.main()
        assert "head=slot step 2 " in (out / "train.log").read_text()
        patch.setattr(sys, "argv", [*argv, "--init-onnx", str(tmp_path / "reader.onnx")])
        with pytest.raises(SystemExit) as refused:
            train_ocr.main()
    assert refused.value.code == 2


def test_resume_without_a_run_folder_is_refused_before_any_work(tmp_path: Path) -> None:
    import sys

    from scripts import train_ocr

    missing = str(tmp_path / "none.npz")
    argv = ["train_ocr.py", "--head", "ctc", "--synth", missing, "--real", missing]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", [*argv, "--resume"])
        with pytest.raises(SystemExit) as refused:
            train_ocr.main()
    assert refused.value.code == 2


def test_a_reader_started_from_its_export_reads_as_the_export_does(tmp_path: Path) -> None:
    import numpy as np
    import onnxruntime
    import torch

    from scripts.train_ocr import export_ctc_onnx, load_onnx_reader
    from scripts.trainlib.nets import PlateCtcNet

    torch.manual_seed(0)
    trained = PlateCtcNet()
    with torch.no_grad():  # away from the fresh initialisation, so a load that skips a layer shows
        for parameter in trained.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    for module in trained.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            assert module.running_mean is not None
            module.running_mean.uniform_(-0.2, 0.2)
    path = tmp_path / "reader.onnx"
    export_ctc_onnx(trained, path)
    calibration = torch.rand(8, 1, 48, 160)
    started = PlateCtcNet()
    load_onnx_reader(started, path, calibration)
    started.eval()
    batch = np.random.default_rng(1).random((3, 1, 48, 160), np.float32)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    exported = session.run(["ctc_probs"], {"image": batch})[0]
    with torch.no_grad():
        ours = started(torch.from_numpy(batch)).exp().numpy()
    assert ours.shape == exported.shape
    assert np.abs(ours - exported).max() < 1e-4


def test_a_wider_file_than_the_network_is_refused(tmp_path: Path) -> None:
    import torch

    from scripts.train_ocr import export_ctc_onnx, load_onnx_reader
    from scripts.trainlib.nets import PlateCtcNet

    path = tmp_path / "reader.onnx"
    export_ctc_onnx(PlateCtcNet(context=1), path)
    with pytest.raises(ValueError):
        load_onnx_reader(PlateCtcNet(), path, torch.rand(4, 1, 48, 160))
