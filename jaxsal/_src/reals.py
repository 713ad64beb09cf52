"""One real-number hyperparameter read from an argument: what counts as a number, and its
bounds. The checks that raise (:func:`jaxsal._src.transforms.check_real`, the segmentation's
``scale`` and ``sigma``) word their own errors; they share what they accept."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def as_float(v: Any) -> float | None:
    """``v`` as a float where ``float`` takes it as one number (a Python or NumPy number, a
    concrete 0-d array), else None: bools, strings and bytes too, which ``float`` would turn
    into numbers (``True -> 1.0``, ``"2" -> 2.0``), and ints too large for a float (``float``
    raises ``OverflowError``; as a number they would be infinite)."""
    if isinstance(v, (bool, np.bool_, str, bytes)):
        return None
    try:
        return float(v)
    except (TypeError, ValueError, OverflowError):
        return None


def in_bounds(f: float, *, low: float | None = None, above: bool = False,
              high: float | None = None) -> bool:
    """Whether ``f`` is finite, ``>= low`` (``> low`` with ``above``) and ``<= high`` (a
    bound of None: none)."""
    return (math.isfinite(f) and (low is None or (f > low if above else f >= low))
            and (high is None or f <= high))
