"""The CTC reader's training script (torch: `make test-train`, not `make test`)."""

from __future__ import annotations

import pytest

from edge.recognition.formats import ALPHABET, PAD_INDEX

pytestmark = pytest.mark.training


def test_greedy_ctc_merges_repeats_and_keeps_letters_a_blank_apart() -> None:
    import torch

    from scripts.train_ocr_ctc import ctc_decode

    columns = ["A", "A", "_", "B", "_", "B", "B", "_", "_", "7"] + ["_"] * 10
    log_probs = torch.full((1, 20, len(ALPHABET)), -10.0)
    for t, char in enumerate(columns):
        log_probs[0, t, ALPHABET.index(char)] = 0.0
    assert ctc_decode(log_probs) == ["ABB7"]


def test_the_ctc_head_learns_a_fixed_batch_and_reads_it() -> None:
    import torch

    from scripts.train_ocr_ctc import PlateCtcNet, ctc_decode, ctc_loss

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
