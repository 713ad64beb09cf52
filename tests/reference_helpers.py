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


def pearson(a, b) -> np.ndarray:
    """Pearson r of every ``(class, image)`` map of two ``(T, N, ...)`` arrays."""
    a = np.asarray(a, np.float64)
    a = a.reshape(a.shape[0] * a.shape[1], -1)
    b = np.asarray(b, np.float64).reshape(a.shape)
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    return (a * b).sum(axis=1) / np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))


def assert_same_estimate(ours, ref, r_min: float = 0.98, scale_tol: float = 0.02) -> None:
    """Two Monte Carlo estimates of the same maps (different random draws): every map's
    Pearson r >= ``r_min`` and the mean magnitudes within ``scale_tol``."""
    r = pearson(ours, ref)
    scale = float(np.abs(ours).mean() / np.abs(ref).mean())
    assert r.min() >= r_min and abs(scale - 1.0) <= scale_tol, (float(r.min()), scale)
