"""Comparing jaxsal's maps with other libraries' (tests/test_reference_*.py)."""

import numpy as np


def by_class(maps) -> np.ndarray:
    """jaxsal's ``(N, T, ...)`` maps as the references stack them, ``(T, N, ...)``."""
    return np.moveaxis(np.asarray(maps, np.float64), 1, 0)


def assert_per_map(ours, ref, rtol: float = 1e-4, atol: float = 1e-6) -> None:
    """Every ``(class, image)`` map of ``ours`` (already ``(T, N, ...)``) within ``rtol`` of
    the reference map's largest magnitude, or ``atol`` where that is smaller (all-zero maps)."""
    ours = np.asarray(ours, np.float64)
    axes = tuple(range(2, ref.ndim))
    den = np.abs(ref).max(axis=axes)
    err = np.abs(ours - ref).max(axis=axes)
    assert np.all(err <= np.maximum(rtol * den, atol)), \
        f"worst relative error {np.max(err / np.maximum(den, 1e-12)):.2e}"
