"""The one check of an integer count (a Python value closed over, like a real hyperparameter:
a number of steps, samples or masks, a batch or chunk size, a patch side, an index offset),
shared by every method, factory and plot so that all of them accept and refuse the same
values with errors in one style (the reals' is :func:`jaxsal._src.reals.check_real`).

Accepted: a Python ``int``, a NumPy integer scalar (``np.int64(4)``), a concrete 0-d integer
NumPy or JAX array (``np.array(4)``, ``jnp.int32(4)``): the int it holds. Refused with a
``ValueError`` that names the argument, its expected range, the value got and the fix: bools
(``True`` is no count), floats, even whole ones (``3.0``: a count computed in floats may be
``2.9999999`` elsewhere; the error says ``pass int(...)``), strings and bytes, complex numbers,
arrays of any other shape (several values, or one value in a 1-element array), values out of
the range, and a value traced by the caller's ``jax.jit`` (a count sets shapes and loop
lengths of the compiled program: it is read in Python, before tracing).
"""

from __future__ import annotations

import math
import operator
from typing import Any

import jax
import numpy as np

from jaxsal._src import reals


def as_int(v: Any) -> int | None:
    """``v`` as an int where it is one integer (a Python or NumPy integer, a concrete 0-d
    integer array), else None: bools (``operator.index(True)`` is 1), floats, strings, complex
    numbers, arrays of other shapes and tracers."""
    if isinstance(v, (bool, np.bool_, jax.core.Tracer)):
        return None
    if isinstance(v, (np.ndarray, np.generic, jax.Array)):
        if v.shape != () or not np.issubdtype(v.dtype, np.integer):
            return None
        return int(v.item())
    try:
        return operator.index(v)
    except TypeError:
        return None


def per_axis(v: Any) -> bool:
    """Whether ``v`` gives one value per axis (a patch or grid size): a tuple, a list or a
    1-D array (``np.array([2, 2])``), whose entries are then checked one by one; else it is
    one value for every axis."""
    return isinstance(v, (tuple, list)) or (isinstance(v, (np.ndarray, jax.Array))
                                            and np.ndim(v) == 1)


def check_int(value: Any, name: str, *, low: int | None = 1, high: int | None = None,
              where: str = "", kind: str = "", example: str | None = None,
              allow_none: bool = False) -> int | None:
    """``value``, an integer count named ``name``, as an int ``>= low`` and ``<= high``, or a
    ``ValueError`` (see the module's docstring for what counts as an integer).

    Args:
      value: what the user passed.
      name: the argument's name, as the user wrote it (``"steps"``).
      low, high: the range (None: unbounded on that side); counts are ``>= 1`` by default.
      where: the function or factory, prefixed to the error (``"maximize"``); "" for none.
      kind: what the count is, in the error (``"masks per input"``); "" for nothing.
      example: a valid value the error suggests (``"4"``), as ``pass e.g. name=4``.
      allow_none: ``None`` passes through (the argument's default), else it is refused.
    Returns:
      ``value`` as a Python int (None where ``allow_none`` and ``value`` is None).

    The error reads ``"[where: ]expected NAME as an int RANGE[ (KIND)][ or None], got
    VALUE[; why][; pass e.g. NAME=EXAMPLE]"``.
    """
    if value is None and allow_none:
        return None
    cond = reals.expected_range(low, False, high)
    expected = (f"{name} as an int{' ' + cond if cond else ''}{f' ({kind})' if kind else ''}"
                f"{' or None' if allow_none else ''}")
    prefix = f"{where}: " if where else ""
    fix = f"; pass e.g. {name}={example}" if example is not None else ""
    if isinstance(value, jax.core.Tracer):
        raise reals.traced(f"{prefix}expected {expected}", value, name, "a Python int")
    i = as_int(value)
    if i is not None and (low is None or i >= low) and (high is None or i <= high) \
            and abs(i) < 2 ** 63:
        return i
    why = "; too large for a 64-bit integer" if i is not None and abs(i) >= 2 ** 63 else ""
    if i is None:
        f = reals.as_float(value)
        if f is not None and f.is_integer():
            why = f"; pass an int: {name}=int(...)"
            fix = ""
        elif f is not None and math.isfinite(f):
            why = f"; a count is a whole number: pass an int, e.g. {name}=round(...)"
            fix = ""
        elif reals._several(value):
            why = "; pass one int, not an array"
    raise ValueError(f"{prefix}expected {expected}, got {value!r}{why}{fix}")
