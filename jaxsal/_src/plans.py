"""Call plans: what a method works out before it runs, kept for the next call like it.

A method call validates the model, the input's structure and shapes, the targets and the
layer, then sizes its chunks and finds its compiled program: work that depends only on what
is static about the call (the model's function and parameter shapes, the input's shape and
dtype, the targets when they are class ids or score functions, the options), about 1 ms of
Python per call for VGG16, where the compiled program itself dispatches in a fraction of
that. A :class:`Plan` keeps the outcome; the next call with the same static description
only checks what depends on the input's values (NaN/inf, token ids outside a vocabulary;
:func:`jaxsal._src.validate.check_input`) and runs the program with the model's current
parameters.

Anything not static (targets given as JAX arrays, several input arrays) takes the full path
every time, as does a call while JAX traces (inside a user's ``jit``), whose values are
tracers.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Hashable

import jax
import numpy as np

from jaxsal._src import base
from jaxsal._src.validate import _all_finite, check_input, not_finite

Array = jax.Array

#: Plans by static description (:func:`key`); bounded, least recently used dropped.
PLANS = base._LRU(512)


@dataclasses.dataclass(frozen=True)
class Plan:
    """A validated, sized call: the compiled program ``fn(params, x, ids)``, the targets'
    device ids (``None`` when the program takes none) and how the input is checked
    (:func:`~jaxsal._src.validate.check_input`'s keyword arguments)."""

    fn: Callable
    ids: Array | None
    check: dict

    def run(self, model: Any, x: Any) -> Any:
        """Check ``x``'s values and run the program on the model's current parameters.

        A device array's NaN/inf check is dispatched before the program and read after it
        has been dispatched (the host then waits for the small check alone, while the
        program runs): the maps of an input that fails it are discarded and the same error
        raised. The full path checks before it dispatches anything."""
        check = dict(self.check)
        deferred = bool(check.get("check_finite")) and isinstance(x, jax.Array)
        if deferred:
            check["check_finite"] = False
        xa = check_input(model, x, **check)
        with jax.ensure_compile_time_eval():  # under the caller's jit: a value, not a tracer
            finite = _all_finite(xa) if deferred else None
        out = self.fn(model.params, xa, self.ids)
        if finite is not None and not bool(finite):
            raise not_finite()
        return out


def _targets_key(targets: Any) -> Hashable | None:
    """A hashable description of ``targets`` that determines them, or ``None``."""
    if targets is None:
        return ("predicted",)
    if isinstance(targets, (bool, np.bool_)):
        return None  # refused by the full path, with its message
    if isinstance(targets, (int, np.integer)):
        return ("int", int(targets))
    if isinstance(targets, range) and len(targets):
        return ("ids", list, tuple(targets))  # as the list of its ids
    if isinstance(targets, np.ndarray) and targets.dtype.kind in "iu" and targets.size <= 4096:
        return ("array", targets.shape, targets.dtype.str, targets.tobytes())
    if isinstance(targets, (list, tuple)) and targets:
        if all(isinstance(t, (int, np.integer)) and not isinstance(t, (bool, np.bool_))
               for t in targets):
            return ("ids", type(targets), tuple(int(t) for t in targets))
        if all(callable(t) for t in targets):
            return _hashable(("scores", type(targets),
                              tuple(base.callable_key(t) for t in targets)))
        return None
    if callable(targets):
        return _hashable(("score", base.callable_key(targets)))
    return None


def _hashable(key: Hashable) -> Hashable | None:
    try:
        hash(key)
    except TypeError:
        return None
    return key


def key(name: str, model: Any, x: Any, targets: Any, options: tuple) -> Hashable | None:
    """The static description of a call to method ``name`` of ``model`` (with its head and
    backward rule applied) on ``x``, or ``None`` when it has none (the full path runs).

    It holds the abstract mesh in context (``jax.set_mesh``; :func:`_context_mesh`): a plan's
    target ids are typed on that mesh when they are made, and a plan made under one mesh
    (``Auto`` axes) failed under another (``Explicit`` ones: "context mesh ... should match
    the aval mesh")."""
    if not isinstance(x, (jax.Array, np.ndarray)) or isinstance(x, jax.core.Tracer):
        return None
    t = _targets_key(targets)
    if t is None:
        return None
    return _hashable((name, base.function_key(model), type(x), tuple(x.shape), x.dtype, t,
                      base.typed(options), jax.default_backend(), base.default_budget(),
                      _context_mesh()))


def _context_mesh() -> Hashable:
    """The abstract mesh ``jax.set_mesh`` put in context (its axes' names, sizes and types;
    an empty one without), or ``None`` on a JAX release without
    ``jax.sharding.get_abstract_mesh``."""
    get = getattr(jax.sharding, "get_abstract_mesh", None)
    return None if get is None else get()


def cached(plan_key: Hashable | None, model: Any, x: Any, make: Callable[[], tuple]) -> Any:
    """Run the plan for ``plan_key`` on ``x``, or the full path: ``make()`` validates and
    runs the call and returns ``(result, plan)``; its plan is kept when ``plan_key`` is not
    ``None`` (an error in the full path keeps nothing)."""
    plan = None if plan_key is None else PLANS.find(plan_key)
    if plan is not None:
        return plan.run(model, x)
    result, plan = make()
    if plan_key is not None and plan is not None and not any(
            isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(plan.ids)):
        # (a plan made while the caller's jit traces holds its ids as that trace's tracers:
        # kept, they escaped into the next call, an UnexpectedTracerError)
        PLANS.get(plan_key, lambda: plan)
    return result
