"""Integrated gradients (Sundararajan, Taly & Yan, 2017, "Axiomatic Attribution for Deep
Networks").

``IG(x) = (x - x') * integral_0^1 dS(x' + a (x - x'))/dx da``, the integral approximated by a
quadrature rule over ``steps`` points. Completeness: ``sum(IG) = S(x) - S(x')`` up to the
quadrature error (the trapezoid rule, the default, is exact for piecewise-linear paths
between kinks and converges as ``1/steps**2`` on smooth ones).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxsal._src import base, ints
from jaxsal._src.base import Inputs, Maps, ModelLike
from jaxsal._src.finite import refuses_non_finite_maps
from jaxsal._src.gradients import first_only, raw_gradients
from jaxsal._src.postprocess import _reduce_inputs, check_reduce
from jaxsal._src.targets import (OutputInfo, TargetSpec, Targets, layer_pullback,
                                 resolve_predicted, run_model)
from jaxsal._src.validate import (LayerTarget, check_fill_ids, check_like, prepare,
                                  prepare_layer)

Array = jax.Array
ArrayLike = jax.typing.ArrayLike

RULES = ("trapezoid", "left", "right", "middle", "gausslegendre")


def quadrature(steps: int, rule: str) -> tuple[np.ndarray, np.ndarray]:
    """``(alphas, weights)`` of a quadrature rule on [0, 1] with ``steps`` gradient
    evaluations: the trapezoid rule, left/right/middle Riemann sums, or Gauss-Legendre
    (Captum's default: the ``steps`` Legendre nodes mapped from [-1, 1] to [0, 1])."""
    steps = ints.check_int(steps, "steps", kind="gradient evaluations along the path")
    k = np.arange(steps, dtype=np.float64)
    if rule == "trapezoid":
        if steps < 2:
            raise ValueError(f"expected steps >= 2 for the trapezoid rule (the path's two "
                             f"ends are two gradient evaluations), got steps={steps}; pass "
                             f"steps >= 2, or rule='middle' for one evaluation")
        alphas = k / (steps - 1)
        w = np.full(steps, 1.0 / (steps - 1))
        w[0] = w[-1] = 0.5 / (steps - 1)
    elif rule == "left":
        alphas, w = k / steps, np.full(steps, 1.0 / steps)
    elif rule == "right":
        alphas, w = (k + 1) / steps, np.full(steps, 1.0 / steps)
    elif rule == "middle":
        alphas, w = (k + 0.5) / steps, np.full(steps, 1.0 / steps)
    elif rule == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(steps)
        alphas, w = 0.5 * (nodes + 1.0), 0.5 * weights
    else:
        raise ValueError(f"unknown rule {rule!r}; expected one of {RULES}")
    return alphas, w  # float64: cast to the inputs' dtype where used (float64 under x64)


def path_integral(grad_at: Any, start: Any, end: Any, steps: int, rule: str,
                  batch_steps: int) -> Any:
    """``(end - start) * sum_k w_k grad_at(z_k)``, ``z_k = start + a_k (end - start)`` on the
    quadrature points of ``rule``, ``batch_steps`` points per batched evaluation.

    ``grad_at(z, b)`` takes ``b`` path points of the whole batch stacked input-major
    (:func:`base.stack_rows`: row ``i b + k`` is point ``k`` of input ``i``), ``(N b, ...)``,
    and returns the per-target gradients there, ``(N b, Tc, ...)``; the result is
    ``(N, Tc, ...)``. ``start``/``end`` may be structures of arrays (the inputs of a
    multi-input model): every input moves along its own straight path, at the same
    ``a_k``."""
    alphas, weights = (jnp.asarray(v) for v in quadrature(steps, rule))

    def group(ks, valid):
        def point(s, e):
            ak = alphas[ks].reshape((-1,) + (1,) * e.ndim).astype(e.dtype)
            return base.stack_rows(s[None] + ak * (e - s)[None])

        g = grad_at(jax.tree_util.tree_map(point, start, end), len(ks))

        def weigh(gi):
            gi = base.unstack_rows(gi, len(ks))  # (b, N, ...)
            return jnp.tensordot(jnp.where(valid, weights[ks], 0.0).astype(gi.dtype), gi,
                                 axes=1)

        return jax.tree_util.tree_map(weigh, g)

    total = base.sum_groups(group, steps, batch_steps)
    return jax.tree_util.tree_map(lambda s, e, t: (e - s)[:, None] * t, start, end, total)


def _start(baseline: Any, x: Any) -> Any:
    """The path's start: ``baseline`` broadcast to ``x`` (per input for several inputs)."""
    return jax.tree_util.tree_map(lambda b, v: jnp.broadcast_to(b, v.shape).astype(v.dtype),
                                  baseline, x)


def raw_integrated(model: Any, spec: TargetSpec, info: OutputInfo, steps: int, rule: str,
                   batch_steps: int):
    """``f(params, x, ids, ts, baseline) -> (N, len(ts), *x.shape[1:])`` un-reduced IG."""
    quadrature(steps, rule)
    grads = raw_gradients(model, spec, info)

    def f(params, x, ids, ts, baseline):
        return path_integral(lambda xb, b: grads(params, xb, base.repeat_rows(ids, b), ts),
                             _start(baseline, x), x, steps, rule, batch_steps)

    return f


def raw_layer_integrated(model: Any, spec: TargetSpec, info: OutputInfo, steps: int, rule: str,
                         batch_steps: int, lt: LayerTarget):
    """``f(params, x, ids, ts, baseline) -> (N, len(ts), *A.shape[1:])``: integrated gradients
    of the layer's output ``A`` along the straight path from ``A(baseline)`` to ``A(x)``
    (Captum's ``LayerIntegratedGradients``). Each path point ``z`` is evaluated as ``x`` run
    with ``z - A(x)`` added at the layer, so the layers after it see ``z``."""
    quadrature(steps, rule)

    def f(params, x, ids, ts, baseline):
        x0 = _start(baseline, x)
        A = run_model(model, params, x, (lt.name,))[1][lt.name]
        A0 = run_model(model, params, x0, (lt.name,))[1][lt.name]

        def grad_at(z, b):
            shifted = _Shifted(model, lt.name, z - base.repeat_rows(A, b))
            _, _, pull = layer_pullback(shifted, params, base.repeat_rows(x, b), lt.name,
                                        z.shape, spec, info, base.repeat_rows(ids, b))
            return jax.vmap(pull, out_axes=1)(ts)

        return path_integral(grad_at, A0, A, steps, rule, batch_steps)

    return f


class _Shifted:
    """``model`` with a fixed ``delta`` added at ``layer`` on top of any perturbation there
    (so a zero perturbation's gradient is the gradient at the shifted activation)."""

    def __init__(self, model: Any, layer: str, delta: Array):
        self.model, self.layer, self.delta = model, layer, delta

    def apply(self, params, x, *, capture=(), perturb=None):
        perturb = dict(perturb or {})
        perturb[self.layer] = perturb.get(self.layer, 0.0) + self.delta
        return self.model.apply(params, x, capture=capture, perturb=perturb)


def check_baseline(baseline: Any, x: Any, *, formats: Sequence[bool]) -> Any:
    """``baseline`` as the path's start for ``x``: zeros for ``None``; otherwise an array that
    broadcasts to ``x``. For several inputs (``x`` a list, tuple or dict) one baseline per
    input (:func:`per_input_values`: each entry the input's own value, Python lists too,
    ``None`` zeros), or one value for every input (a number, an array, a tuple: each input
    checks it). ``formats``: per input (leaf order of ``x``), whether it is channels-first
    (``Prepared.formats``; a 1-D baseline that could be one value per channel or one per
    column of such an input is refused, :func:`check_like`)."""
    leaves, tree = jax.tree_util.tree_flatten(x)
    if len(formats) != len(leaves):
        raise ValueError(f"check_baseline: expected one layout per input ({len(leaves)}), got "
                         f"{len(formats)}")
    if not isinstance(x, jax.Array):  # several inputs
        return tree.unflatten(checked_per_input(
            lambda b, a, cf: check_baseline(b, a, formats=(cf,)), baseline, x, "baseline",
            formats))
    if baseline is None:
        return jnp.zeros((), x.dtype)
    return check_like(baseline, x, "baseline", channels_first=formats[0])


def checked_per_input(check: Callable, v: Any, x: Any, what: str, *per_input: Sequence) -> list:
    """``check(value, input, *extras)`` for every input of ``x`` (several inputs: a list,
    tuple or dict of arrays), in ``x``'s leaf order, of option value ``v``: each input its
    own value where ``v`` is one per input (:func:`per_input_values`), else ``v`` for every
    one (:func:`one_for_every_input`: a tuple's error says it is one value for all).
    ``per_input``: sequences in ``x``'s leaf order whose entries are passed as the input's
    ``extras`` (``Prepared.formats``)."""
    leaves = jax.tree_util.tree_leaves(x)
    values = per_input_values(v, x, what)
    if values is None:  # one value for every input (a number, an array, a tuple, None)
        check = one_for_every_input(check, v, what, len(leaves))
        values = [v] * len(leaves)
    return [check(b, a, *extras) for b, a, *extras in zip(values, leaves, *per_input)]


def one_for_every_input(check: Callable, v: Any, what: str, k: int) -> Callable:
    """``check`` of option value ``v`` given one for every one of ``k`` inputs, whose error
    for a tuple adds that a tuple is one value for every input (the per-input form is a
    list): ``(0.5, vec)`` meant as one per input."""
    def f(*args):
        try:
            return check(*args)
        except (ValueError, TypeError) as e:
            if not isinstance(v, tuple):
                raise
            raise type(e)(f"{e}. A tuple {what} is one value for every input (e.g. one per "
                          f"channel); for one value per input pass a list of {k} in the "
                          "inputs' order or a dict keyed by their names") from e

    return f


def per_input_values(v: Any, x: Any, what: str) -> list | None:
    """Option value ``v`` given one value per input of ``x`` (several inputs: a list, tuple or
    dict of arrays), as a list in ``x``'s leaf order, or ``None`` where ``v`` is one value for
    every input (anything else: a number, an array, a tuple, ``None``). A dict keyed as
    ``x`` (``x`` a dict), or a list of as many (``x`` a list or tuple; the container
    :meth:`~jaxsal._src.validate.Prepared.per_input` arranges the option in), pairs its
    entries with the inputs by key or position, whatever each entry is (a number, an array,
    Python lists, ``None``): no entry is read as more of the structure. Raises for a dict of
    other keys or a list of another count, saying what was received."""
    if isinstance(v, dict):
        if not isinstance(x, dict) or set(v) != set(x):
            raise ValueError(f"expected {what} as one value per input, "
                             + (f"a dict keyed as the inputs ({', '.join(map(repr, x))})"
                                if isinstance(x, dict) else f"a list of {len(x)} in their "
                                "order") + f"; got {_what(v)}. Give every input its value "
                             "(or one value for all of them)")
        return jax.tree_util.tree_structure(x).flatten_up_to(v)
    if isinstance(v, list) and isinstance(x, (list, tuple)):
        if len(v) != len(x):
            raise ValueError(f"expected {what} as one value per input, a list of {len(x)} in "
                             f"the inputs' order; got {_what(v)}")
        return jax.tree_util.tree_structure(x).flatten_up_to(type(x)(v))
    return None


def _what(v: Any) -> str:
    """``v`` as an error names what was received: ``"a list of 3"``, ``"a dict with keys 'a',
    'b'"``, ``"an ndarray of shape (2, 4)"``."""
    if isinstance(v, dict):
        return f"a dict with keys {', '.join(map(repr, v))}"
    if isinstance(v, (list, tuple)):
        return f"a {type(v).__name__} of {len(v)}"
    return f"a {type(v).__name__} of shape {tuple(np.shape(v))}"


@refuses_non_finite_maps
def integrated_gradients(model: ModelLike, x: Inputs, targets: Targets = None, *,
                         baseline: Inputs | None = None, steps: int = 50,
                         rule: str = "trapezoid", batch_steps: int | None = None,
                         reduce: str | None = "sum", head: str | None = None,
                         chunk_size: int | None = None, memory_budget: int | None = None,
                         precision: str | None = None, check_finite: bool = True,
                         layer: str | None = None) -> Maps:
    """Integrated gradients (Sundararajan et al., 2017).

    Args:
      model, x, targets, head, chunk_size, memory_budget, precision, check_finite: as in
        :func:`jaxsal.saliency`. ``targets=None`` fixes each input's predicted class on ``x``.
      baseline: the reference input ``x'``: ``None`` (zeros), a scalar, ``(H, W, C)`` or
        ``(N, H, W, C)``; for several inputs one number for all, or one per input as a list
        in the model's input order or a dict keyed by its input names (``x`` in any
        container).
      steps: gradient evaluations along the straight path (default 50).
      rule: ``"trapezoid"`` (default; endpoints included), ``"left"``, ``"right"`` or
        ``"middle"`` Riemann sums, or ``"gausslegendre"`` (Captum's default ``method``;
        exact for polynomials of degree ``2 * steps - 1`` along the path, but never
        evaluates the endpoints, so completeness holds only as far as the path is smooth).
      batch_steps: path points evaluated together in one batched forward/backward pass
        (memory grows with it; 1 = a loop). Default: as many as fit in ``memory_budget``.
      reduce: channel reduction; the default signed ``"sum"`` keeps completeness
        (``maps.sum((-2, -1)) ~= S(x) - S(baseline)``); ``None`` keeps channels.
      layer: integrate along the layer's output instead of the input, from ``A(baseline)``
        to ``A(x)`` (Captum's ``LayerIntegratedGradients``; ``baseline`` stays an input, e.g.
        all padding tokens). Maps have the layer's shape with its channel axis reduced
        (per-token attributions ``(N, L)`` at an ``Embedding``; ``x`` may then be integer
        token ids); completeness holds over the layer's positions.
    Returns:
      Raw maps ``(N, H, W)`` or ``(N, T, H, W)`` (channels kept when ``reduce=None``).
    """
    check_reduce(reduce)
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; expected one of {RULES}")
    quadrature(steps, rule)
    steps = int(steps)  # checked: an int, not np.array(3), whose program key is unhashable
    p = prepare(model, x, targets, head=head, check_finite=check_finite,
                allow_int=layer is not None, multi_input=True)
    lt = None if layer is None else prepare_layer(p, layer, reduce)
    b = check_baseline(p.per_input(baseline, "baseline"), p.x, formats=p.formats)
    check_fill_ids(p.model, b, p.x, "baseline")  # ids outside the vocabulary: NaN maps
    nb, batch_steps, chunk = base.sampling_plan(p.model, p.x, p.n, p.spec.num, steps,
                                                batch_steps, "batch_steps", chunk_size,
                                                memory_budget)
    m, spec, info = p.model, p.spec, p.info
    # the channel axis of the (N, T, ...) attributions: each input's, or the layer's
    axes = p.map_channel_axes if lt is None else [lt.map_channel_axis]

    def build():
        def run(params, x, ids, baseline):
            sp, ids_ = resolve_predicted(m, params, x, spec, info, ids)
            f = raw_integrated(m, sp, info, steps, rule, batch_steps) if lt is None else \
                raw_layer_integrated(m, sp, info, steps, rule, batch_steps, lt)
            out = base.map_chunks(
                lambda ts: _reduce_inputs(f(params, x, ids_, ts, baseline), reduce, axes),
                spec.num, chunk)
            return first_only(out, spec.class_axis)

        return run

    key = ("integrated_gradients", p.key, spec, info, steps, rule, batch_steps, reduce, chunk,
           nb, lt)
    return base.compiled(key, lambda: base.split_batch(build(), nb, maybe=(3,)),
                         precision)(p.params, p.x, p.ids, b)


#: explain_to_file takes these one per input of a model of several inputs, by name or position.
integrated_gradients.several_input_options = ("baseline",)
