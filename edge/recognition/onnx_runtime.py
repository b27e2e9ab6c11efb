"""One place that creates onnxruntime sessions, so thread settings and errors are uniform."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort


class ModelLoadError(RuntimeError):
    """A model file is missing or is not a loadable ONNX model."""


def create_session(path: Path, threads: int) -> ort.InferenceSession:
    """A CPU session; ``threads`` <= 0 lets onnxruntime use every core."""
    if not path.is_file():
        raise ModelLoadError(f"model file not found: {path}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(0, threads)
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises several unrelated types for a bad file
        raise ModelLoadError(f"cannot load model {path}: {exc}") from exc
