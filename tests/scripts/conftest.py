"""Helpers shared by the training-script tests (torch is imported only by the tests that use them)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any


def exported_with_batch_statistics(net: Any, batch: Any, export: Callable[[Any, Path], None], path: Path) -> Path:
    """Export ``net`` to ``path`` after one training-mode pass over ``batch``, so its BatchNorm statistics
    are not the trivial initial ones and folding them into the convolutions matters."""
    import torch

    net.train()
    with torch.no_grad():
        net(batch)
    export(net, path)
    return path
