"""Plate recognition engine: the project's own ONNX detector and OCR model."""
