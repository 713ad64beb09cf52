"""Benchmark inputs (numpy only): real MNIST digits, seeded uniform noise otherwise."""

from __future__ import annotations

import numpy as np

from benchmarks import models


def inputs(spec: dict, batch: int) -> np.ndarray:
    """``(batch, H, W, C)`` float32 inputs in [0, 1] for the workload's model."""
    model = spec["model"]
    if model["name"] == "mnist":
        d = np.load(models.MNIST_DATA)
        idx = d["test_idx"]
        idx = np.resize(idx, batch)  # held-out digits, interleaved 0..9, repeated if needed
        return (d["x"][idx].astype(np.float32) / 255.0)[..., None]
    rng = np.random.RandomState(0)
    return rng.uniform(0.0, 1.0, (batch, *models.input_shape(model))).astype(np.float32)


def class_ids(spec: dict) -> list[int]:
    """The T classes explained for every input (``targets`` an int T: classes 0..T-1, or an
    explicit list of class ids)."""
    t = spec["targets"]
    return [int(c) for c in t] if isinstance(t, (list, tuple)) else list(range(int(t)))


def seeds(spec: dict, n: int) -> np.ndarray:
    """Starting images for activation maximization: uniform noise in [0, 1), seeded."""
    return np.random.RandomState(7).uniform(
        0.0, 1.0, (n, *models.input_shape(spec["model"]))).astype(np.float32)
