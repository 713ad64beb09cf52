"""The one check of a real-number hyperparameter (a Python value closed over, optax style: a
noise's standard deviation, a weight, a radius, a probability), shared by every method and
factory so that all of them accept and refuse the same values with errors in one style.

Accepted: a Python ``int`` or ``float``, a NumPy real scalar (``np.float32(0.1)``), a concrete
0-d real NumPy or JAX array (``jnp.float32(0.1)``, ``np.array(0.1)``): the number it holds.
Refused with a ``ValueError`` that names the argument, its expected range, the value got and
the fix: bools (``True`` is no amount), strings and bytes (``float("2")`` would read them),
complex numbers, arrays of any other shape (several values, or one value in a 1-element
array), NaN and infinity (they make every result computed with them NaN), values out of the
range, and a value traced by the caller's ``jax.jit`` (a hyperparameter is part of the
compiled program: it is read in Python, before tracing).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def as_float(v: Any) -> float | None:
    """``v`` as a float where it is one real number (a Python or NumPy number, a concrete 0-d
    real array), else None: bools, strings and bytes too, which ``float`` would turn into
    numbers (``True -> 1.0``, ``"2" -> 2.0``), complex numbers and arrays of other shapes
    (``float`` takes a 1-element array, with a warning), tracers, and ints too large for a
    float (``float`` raises ``OverflowError``; as a number they would be infinite)."""
    if isinstance(v, (bool, np.bool_, str, bytes, complex, jax.core.Tracer)):
        return None
    if isinstance(v, (np.ndarray, np.generic, jax.Array)) and (
            v.shape != () or not (np.issubdtype(v.dtype, np.integer)
                                  or jnp.issubdtype(v.dtype, jnp.floating))):  # (bfloat16)
        return None  # several values, bools, complex, strings, objects
    try:
        return float(v)
    except (TypeError, ValueError, OverflowError):
        return None


def in_bounds(f: float, *, low: float | None = None, above: bool = False,
              high: float | None = None, below: bool = False) -> bool:
    """Whether ``f`` is finite, ``>= low`` (``> low`` with ``above``) and ``<= high``
    (``< high`` with ``below``) (a bound of None: none)."""
    return (math.isfinite(f) and (low is None or (f > low if above else f >= low))
            and (high is None or (f < high if below else f <= high)))


def expected_range(low: float | None = None, above: bool = False,
                   high: float | None = None, below: bool = False) -> str:
    """The range as the errors word it: ``"> 0"``, ``">= 0"``, ``"in (0, 1]"``,
    ``"in (0, 1)"`` (``below``: an open upper bound), ``"<= 1"``, ``"< 1"``, or ``""`` (any
    finite number); an int bound as written (a count's), a float one in ``:g`` form."""
    def num(v: float) -> str:
        return str(v) if isinstance(v, (int, np.integer)) else f"{v:g}"

    if low is not None and high is not None:
        return f"in {'(' if above else '['}{num(low)}, {num(high)}{')' if below else ']'}"
    if low is not None:
        return f"{'>' if above else '>='} {num(low)}"
    return "" if high is None else f"{'<' if below else '<='} {num(high)}"


NONFINITE = "; NaN and infinity make every result computed with them NaN"


def traced(expected: str, value: jax.core.Tracer, name: str,
           python: str = "a Python number") -> ValueError:
    """The error for a hyperparameter ``name`` traced by the caller's ``jax.jit``:
    ``expected`` (``"[where: ]expected NAME ..."``) and the reason."""
    return ValueError(f"{expected}, got a value traced by jax.jit ({value.dtype}, shape "
                      f"{value.shape}); {name} is a hyperparameter, part of the compiled "
                      f"program: pass {python}, outside the jitted function")


def check_real(value: Any, name: str, *, low: float | None = None, above: bool = False,
               high: float | None = None, below: bool = False, where: str = "",
               kind: str = "a finite number",
               example: str | None = None) -> float:
    """``value``, a real hyperparameter named ``name``, as a finite float ``>= low`` (``> low``
    with ``above``) and ``<= high`` (``< high`` with ``below``), or a ``ValueError`` (see the
    module's docstring for what counts as a number).

    Args:
      value: what the user passed.
      name: the argument's name, as the user wrote it (``"noise_std"``).
      low, above, high, below: the range (None: unbounded on that side; ``above``/``below``:
        that bound excluded).
      where: the function or factory, prefixed to the error (``"random_scale"``); "" for none.
      kind: what the number is, in the error (``"a finite number: the noise's standard
        deviation"``).
      example: a valid value the error suggests (``"0.1"``), as ``pass e.g. name=0.1``.
    Returns:
      ``float(value)``.

    The error reads ``"[where: ]expected NAME RANGE (KIND), got VALUE[; why][; pass e.g.
    NAME=EXAMPLE]"``.
    """
    cond = expected_range(low, above, high, below)
    expected = f"{name} {cond} ({kind})" if cond else f"{name} as {kind}"
    prefix = f"{where}: " if where else ""
    fix = f"; pass e.g. {name}={example}" if example is not None else ""
    if isinstance(value, jax.core.Tracer):
        raise traced(f"{prefix}expected {expected}", value, name)
    f = as_float(value)
    if f is None or not in_bounds(f, low=low, above=above, high=high, below=below):
        why = (NONFINITE if f is not None and not math.isfinite(f)
               else "; pass one number, not an array" if _several(value) else "")
        raise ValueError(f"{prefix}expected {expected}, got {value!r}{why}{fix}")
    return f


def _several(value: Any) -> bool:
    """Whether ``value`` is an array or sequence (not one number)."""
    if isinstance(value, (str, bytes)):
        return False
    try:
        return np.ndim(value) > 0
    except ValueError:  # a ragged sequence
        return True


def check_interval(value: Any, name: str, *, where: str = "", kind: str = "",
                   example: str = "(0, 1)") -> tuple[float, float]:
    """``value``, a ``(low, high)`` pair named ``name`` (an input range, the values black and
    white stand for), as two floats with ``low < high``, or a ``ValueError``.

    The pair is a tuple, a list or a 1-D array of two entries; each is a real by
    :func:`check_real`'s rule (named ``NAME[0] (low)`` and ``NAME[1] (high)`` in its error).
    A string, a scalar, another length, or ``low >= high`` is refused naming ``name``, what it
    is (``kind``) and an ``example``.
    """
    prefix = f"{where}: " if where else ""
    what = f" ({kind})" if kind else ""
    expected = (f"{prefix}expected {name} as (low, high), two finite numbers with low < high"
                f"{what}")
    if isinstance(value, jax.core.Tracer):
        raise traced(expected, value, name, "Python numbers")
    pair = isinstance(value, (list, tuple)) or (
        isinstance(value, (np.ndarray, jax.Array)) and value.ndim == 1)
    if not pair or len(value) != 2:
        raise ValueError(f"{expected}, got {value!r}; pass e.g. {name}={example}")
    low = check_real(value[0], f"{name}[0] (low)", where=where)
    high = check_real(value[1], f"{name}[1] (high)", where=where)
    if not low < high:
        raise ValueError(f"{expected}, got {value!r}; pass e.g. {name}={example}")
    return low, high
