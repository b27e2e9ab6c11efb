"""Training-only helpers (PyTorch). Not imported by the runtime packages."""
