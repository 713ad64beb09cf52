"""Maps that are not finite: found, named by input, refused.

The methods check their inputs for NaN/inf before anything runs (``check_finite=True``, the
default). Finite inputs can still give NaN or infinite maps: the model's score for an input
overflows, or its gradient is not finite at a point the method evaluates (``sqrt(|h|)``,
``log``, ``h ** 0.5`` or a division meeting 0: integrated gradients and DeepLIFT evaluate the
all-zero baseline, where such a unit is exactly 0; Ablation-CAM divides by the score). The
gradient methods and the forward-only CAMs (Score-CAM, Ablation-CAM, Eigen-CAM), decorated
with :func:`refuses_non_finite_maps`, then raise :class:`NonFiniteMaps` naming the inputs
instead of returning the maps; :func:`jaxsal.explain_to_file` names them by their index in
the job. Occlusion marks the pixels under a patch whose score is not finite (NaN there by
design) and raises :class:`NonFiniteMaps` for a clean input whose score is not finite (every
value of its map would be); RISE raises it for an input some of whose masked copies score
NaN/inf (every mask weighs every pixel: the map would be NaN); the Shapley methods, LIME,
KernelSHAP and feature_permutation raise it for an input whose clean score or some
coalition's (shuffled copy's) is NaN/inf (:func:`check_scores`). The evaluations that score
perturbed copies of the input (deletion, insertion, infidelity) raise it for an input whose
clean score or some copy's is NaN/inf (its area would be NaN or +-inf, its infidelity value
NaN): :func:`check_scores`; sensitivity_max for an input whose maps, of ``x`` or of a
perturbed copy, are NaN/inf.
The methods that score inputs filled with a reference (RISE, LIME, the Shapley methods) check
their fill themselves.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxsal._src.validate import all_finite


class NonFiniteMaps(ValueError):
    """Raised by the gradient methods (saliency, the gradient CAMs, integrated gradients,
    SmoothGrad, DeepLIFT, LRP...), by Score-CAM, Ablation-CAM and Eigen-CAM, by RISE (a
    masked copy's score NaN/inf), by occlusion (the clean input's score NaN/inf) and by the
    coalition methods and feature_permutation (the clean input's or a coalition's) for maps
    of finite inputs that hold NaN/inf values, and by deletion, insertion and infidelity for
    NaN/inf scores of the clean input or of a perturbed copy (curves, values), and by
    sensitivity_max for NaN/inf maps that its ``explain`` returns; a ``ValueError``.
    ``check_finite=False`` returns such maps as computed instead.

    Args:
      message: what happened and what to do about it.
      rows: the indices of those inputs in the call (axis 0 of its maps), kept as
        ``.rows``.
    """

    def __init__(self, message: str, rows: list[int]):
        super().__init__(message)
        self.rows = rows

    def __reduce__(self):  # (pickled whole: across processes, a multiprocessing pool)
        return type(self), (str(self), self.rows)


def non_finite_rows(maps: Any) -> list[int]:
    """The rows (axis 0) of ``maps`` (an array or a structure of arrays, one per input of a
    model with several) that hold NaN/inf, sorted; ``[]`` where every value is finite or
    the values are not known (tracers under the caller's ``jax.jit``)."""
    leaves = [a for a in jax.tree_util.tree_leaves(maps)
              if hasattr(a, "dtype") and jnp.issubdtype(a.dtype, jnp.inexact)]
    # (jnp's test: bfloat16 and float8 of ml_dtypes are no np.inexact, but inexact to JAX)
    if any(isinstance(a, jax.core.Tracer) for a in leaves):
        return []
    bad: set[int] = set()
    for a in leaves:
        if np.ndim(a) and not all_finite(a):  # one reduction on device; rows only if needed
            values = np.asarray(a)
            bad.update(np.flatnonzero(~np.isfinite(values.reshape(len(values), -1))
                                      .all(axis=1)).tolist())
    return sorted(bad)


def listed(rows: list[int]) -> str:
    """``"input 3"`` / ``"inputs 3, 5, 8"`` (the first ten, then ``...``)."""
    shown = ", ".join(map(str, rows[:10])) + (", ..." if len(rows) > 10 else "")
    return f"input{'s' if len(rows) > 1 else ''} {shown}"


def check_maps(name: str, maps: Any, check_finite: Any = True) -> None:
    """Raise :class:`NonFiniteMaps` where method ``name``'s ``maps`` of finite inputs hold
    NaN/inf, naming the inputs. Costs one check of the maps, which waits for them; none with
    ``check_finite=False`` (the maps as computed) or under the caller's ``jax.jit``."""
    if not check_finite:  # (the method has checked it is a bool)
        return
    rows = non_finite_rows(maps)
    if rows:
        raise NonFiniteMaps(
            f"{name}: the maps of {listed(rows)} are not finite (NaN or inf), although the "
            f"inputs are: the model's score or activations for them, or its gradient at a "
            f"point {name} evaluates, is not finite (a square root, logarithm, fractional power "
            "or division meeting 0: the all-zero baseline of integrated gradients and DeepLIFT "
            "is such a point, and Ablation-CAM divides by the score; or a value overflowing). "
            "Check the model's outputs for these inputs "
            "(model(x[i:i+1])) and on the baseline; pass another baseline, or "
            "check_finite=False to get the maps as computed", rows)


def check_scores(name: str, clean: Any, bad: Any, *, result: str, clean_what: str,
                 copies: str, count: Callable[[int], str], fix: str) -> None:
    """Raise :class:`NonFiniteMaps` for the inputs of a method that scores perturbed copies
    of each input (deletion, insertion, infidelity) where some of those scores are NaN/inf,
    naming the inputs: those whose clean score is not finite first (every value of theirs
    would be NaN or +-inf), then the others. Nothing under the caller's ``jax.jit`` (tracers).

    Args:
      name: the method, as the message starts (``"deletion"``).
      clean: ``(N,)`` bool: whether each input's clean score (every target's) is finite.
      bad: ``(N,)`` ints: how many of each input's scores are NaN/inf, the clean one's
        included (as counted in the program: the check is one small transfer).
      result: what would not be finite, plural (``"curves"``).
      clean_what: where the clean score enters (``"the curve's first point"``).
      copies: the perturbed copies, plural (``"copies with positions replaced by fill"``).
      count: ``count(i)`` says how many of input ``i``'s scores were not finite, and where.
      fix: what to try on such copies (another fill...).
    """
    if isinstance(clean, jax.core.Tracer) or isinstance(bad, jax.core.Tracer):
        return
    clean, bad = np.asarray(clean), np.asarray(bad)
    rows = np.flatnonzero((bad > 0) | ~clean).tolist()
    if not rows:
        return
    dirty = np.flatnonzero(~clean).tolist()
    rest = [r for r in rows if r not in set(dirty)]
    parts = []
    if dirty:
        parts.append(f"the model's score on the clean input ({clean_what}) is NaN/inf for "
                     f"{listed(dirty)}, so the {result} would not be finite (NaN or "
                     "+-inf). Check the "
                     "model's outputs for these inputs (model(x[i:i+1]))")
    if rest:
        parts.append(f"the model's score on some {copies} of {listed(rest)} is NaN or inf "
                     f"({count(rest[0])}), so the {result} would not be finite (NaN or "
                     f"+-inf). {fix}")
    raise NonFiniteMaps(f"{name}: the {result} of {listed(rows)} are not finite: "
                        + "; ".join(parts) + f". Or pass check_finite=False to get the "
                        f"{result} as computed (NaN or +-inf)", rows)


def refuses_non_finite_maps(method: Callable) -> Callable:
    """Decorate a method ``method(model, x, targets, *, ..., check_finite=True)`` with
    :func:`check_maps` of its maps."""
    default = inspect.signature(method).parameters["check_finite"].default

    @functools.wraps(method)
    def checked(*args: Any, **kwargs: Any) -> Any:
        maps = method(*args, **kwargs)
        check_maps(method.__name__, maps, kwargs.get("check_finite", default))
        return maps

    return checked
