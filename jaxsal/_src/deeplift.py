"""DeepLIFT with the rescale rule, and DeepLIFT-SHAP.

Shrikumar, Greenside & Kundaje (2017), "Learning Important Features Through Propagating
Activation Differences"; DeepLIFT-SHAP: Lundberg & Lee (2017), "A Unified Approach to
Interpreting Model Predictions" (Captum's ``DeepLift`` and ``DeepLiftShap``).

DeepLIFT explains ``S(x) - S(x')`` for a reference input ``x'``. It backpropagates
"multipliers" instead of gradients: through a linear (affine) layer the gradient, through an
elementwise nonlinearity ``y = f(z)`` the secant slope ``(f(z) - f(z')) / (z - z')`` between
the activations of the input and of the reference (the *rescale rule*; the gradient ``f'(z)``
where ``z`` and ``z'`` are equal up to ``eps`` and ``rtol``), and through a max pooling
(``maxpool="delta"``, Captum's rule) each window's output difference placed at the position of
the larger of the two maxima and divided by that position's input difference, and through a
product of tensors (``products="delta"``: ``Multiply``, an unnormalized ``Dot``, ``x * y`` and
``matmul`` operations, and the gated state updates inside recurrent cells) the mean of its
gradient along the straight line from the reference's factors to the input's
(:class:`ProductRule`; for two factors the gradient at their midpoint: ``d(ab) = da (b +
b')/2 + (a + a')/2 db``, each factor its own first-order term and half of the interaction
``da db``), through an elementwise function of two tensors (a maximum, a division) each
operand's two-player Shapley value over its difference (:class:`PairRule`), and through a
softmax over an axis the composition of those rules (:class:`SoftmaxRule`). The attribution
is ``(x - x') * m``. For a network of affine layers, elementwise activations, max pooling,
products, recurrent cells, such functions, softmaxes, attention and normalization layers
it sums to ``S(x) - S(x')`` ("summation-to-delta"); other operations (``log_softmax``,
reductions such as a maximum over an axis) pass their gradient, as in Captum, and break
that sum. Captum passes products,
the cells' gates and two-tensor functions their gradient too (``products="gradient"``).

The rules need the reference's activations at every nonlinearity. As Captum does, the input
and its reference run as one batch ``[x; x']`` (one forward pass), and the rules --
``jax.custom_vjp`` functions installed in the model's :class:`~model_import.Runtime` -- read
the two halves of the batch axis, ``(2 N, ...)`` pair-major (:func:`_pair`: row ``2 i`` input
``i``, row ``2 i + 1`` its reference; Captum's half after half did not stay split over
devices). Every target's multipliers are one vmapped backward pass through that forward pass.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxsal._src import base, reals
from jaxsal._src.base import Inputs, Maps, ModelLike
from jaxsal._src.finite import refuses_non_finite_maps
from jaxsal._src.gradient_shap import check_baselines
from jaxsal._src.gradients import first_only
from jaxsal._src.integrated import _start, check_baseline
from jaxsal._src.backward import with_backward
from jaxsal._src.lrp_rules import is_product
from jaxsal._src.postprocess import _reduce_inputs, check_reduce
from jaxsal._src.targets import Targets, pullback_at, resolve_predicted
from jaxsal._src.validate import (LayerTarget, check_fill_ids, check_flag,
                                  check_reference_ids, prepare, prepare_layer)

Array = jax.Array
ArrayLike = jax.typing.ArrayLike

MAXPOOL_RULES = ("delta", "gradient")
PRODUCT_RULES = ("delta", "gradient")


def _halves(a: Array) -> tuple[Array, Array]:
    """The input half and the reference half, each ``(N, ...)``, of a paired batch ``(2 N,
    ...)`` ``[z; z']`` (:func:`_pair`: rows ``2 i`` and ``2 i + 1``)."""
    pairs = a.reshape((a.shape[0] // 2, 2) + a.shape[1:])
    return pairs[:, 0], pairs[:, 1]


def _pair(a: Array, r: Array) -> Array:
    """The batch ``[a; r]`` of inputs ``a`` and their references ``r`` (both ``(N, ...)``),
    pair-major: row ``2 i`` is ``a[i]``, row ``2 i + 1`` is ``r[i]``. A batch sharded over its
    inputs (several devices) stays sharded, each device holding its inputs' pairs; half after
    half (``concatenate``), the devices of one half needed the other's rows, and XLA gathered
    them (each device did 0.37 of the one-device work for 8 inputs on 4 devices)."""
    return jnp.stack([a, r], axis=1).reshape((2 * a.shape[0],) + a.shape[1:])


def _both(a: Array) -> Array:
    """One half's values ``(N, ...)`` for both halves of the batch axis, ``(2 N, ...)``."""
    return _pair(a, a)


def _delta(v: Array) -> Array:
    """``[a - a'; a - a']`` of a batch ``[a; a']``."""
    x, ref = _halves(v)
    return _both(x - ref)


def _near(z1: Array, z0: Array, eps: float, rtol: float) -> Array:
    """Where the input's and the reference's values count as equal, for both halves:
    ``|z - z'| < eps + rtol * max(|z|, |z'|)``. The relative part absorbs float rounding:
    XLA may compute the two halves of one batch with differently rounded code (measured up
    to 1e-6 apart for equal inputs), and a secant slope of rounding noise is noise."""
    near = jnp.abs(z1 - z0) < eps + rtol * jnp.maximum(jnp.abs(z1), jnp.abs(z0))
    return _both(near)


@dataclasses.dataclass(frozen=True)
class RescaleRule:
    """DeepLIFT's rescale rule for an elementwise nonlinearity, as a
    ``Runtime.elementwise`` rule: on a batch ``[z; z']`` (input half, reference half),
    ``f`` computes its values; the backward pass multiplies the cotangent of both halves by
    ``(f(z) - f(z')) / (z - z')``, or by the gradient ``f'`` where ``z`` and ``z'`` are
    within ``eps + rtol * max(|z|, |z'|)`` (Captum: ``|z - z'| < eps``, ``rtol`` 0)."""

    eps: float = 1e-10
    rtol: float = 1e-4

    def __call__(self, f: Callable[..., Array], x: Array, *consts: Array) -> Array:
        eps, rtol = self.eps, self.rtol

        def multiplier(c, a, y, g):  # the consts c are not differentiated
            (z,) = a
            dz, dy = _delta(z), _delta(y)
            small = _near(*_halves(z), eps, rtol)
            plain = jax.vjp(lambda v: f(v, *c), z)[1](g)[0]
            secant = g * dy / jnp.where(small, jnp.ones_like(dz), dz)
            return (jnp.where(small, plain, secant),)

        return with_backward(lambda c, z: f(z, *c), multiplier, consts, (x,))


@dataclasses.dataclass(frozen=True)
class MaxPoolDeltaRule:
    """Captum's DeepLIFT rule for max pooling, as a ``Runtime.max_pool`` rule: on a batch
    ``[z; z']`` with outputs ``[y; y']``, each window's ``y - y'`` (times its cotangent) goes
    to the position of ``max(y, y')`` -- the input's maximum where ``y >= y'``, the
    reference's otherwise -- through the pooling's own gradient, and the multiplier there is
    that share over ``z - z'`` (the plain gradient where ``|z - z'| < eps``). The window
    differences are kept whole: the rule preserves summation-to-delta. (No relative
    tolerance here: a share is at most the cotangent, since where the input's window maximum
    ``y = z_p`` is the larger, ``0 <= y - y' <= z_p - z'_p``; rounding cannot inflate it.)"""

    eps: float = 1e-10

    def __call__(self, p: Callable[[Array], Array], x: Array) -> Array:
        eps = self.eps

        def share(_, a, y, g):
            (z,) = a
            (y1, y0), (g1, g0) = _halves(y), _halves(g)
            top = jnp.maximum(y1, y0)
            pull = jax.vjp(p, z)[1]
            u1, u0 = _halves(pull(_pair(g1 * (top - y0), g0 * (y1 - top)))[0])
            dz = _delta(z)
            small = _near(*_halves(z), eps, 0.0)
            return (jnp.where(small, pull(g)[0],
                              _both(u1 + u0) / jnp.where(small, jnp.ones_like(dz), dz)),)

        return with_backward(lambda _, z: p(z), share, (), (x,))


@dataclasses.dataclass(frozen=True)
class SoftmaxRule:
    """DeepLIFT's multipliers for a softmax over an axis, as a ``Runtime.softmax`` rule
    (SHAP's ``DeepExplainer`` splits softmax so, shifts included). On a batch ``[z; z']``
    the softmax is taken apart as ``u = z - max(z)`` (each half shifted by its own maximum:
    every sum of exponentials is at least 1), ``e = exp(u)`` (the rescale rule), ``s =
    sum(e)`` and ``y = e / s`` (the two-player Shapley split of the division: ``e``'s
    multiplier ``(1/s + 1/s') / 2``, ``s``'s ``-(e + e') / (2 s s')``); the shift's change
    ``max(z) - max(z')`` goes back to the position of the larger of the two maxima, as the
    max-pooling rule places a window's (its share of that position's difference is at most
    1). The contributions then sum to ``y - y'`` exactly; where ``z`` equals ``z'`` the
    multipliers are the softmax's gradient."""

    eps: float = 1e-10
    rtol: float = 1e-4

    def __call__(self, z: Array, axis: Any) -> Array:
        eps, rtol = self.eps, self.rtol
        axes = tuple(sorted(a % z.ndim for a in (axis if isinstance(axis, (tuple, list))
                                                 else (axis,))))

        def first_max(v: Array) -> Array:  # one-hot of the first maximum over the axes
            moved = jnp.moveaxis(v, axes, range(v.ndim - len(axes), v.ndim))
            flat = moved.reshape(moved.shape[:v.ndim - len(axes)] + (-1,))
            hot = jax.nn.one_hot(jnp.argmax(flat, axis=-1), flat.shape[-1], dtype=v.dtype)
            return jnp.moveaxis(hot.reshape(moved.shape), range(v.ndim - len(axes), v.ndim),
                                axes)

        def multipliers(_, a, y, g):
            (v,) = a
            z1, z0 = _halves(v)
            c1, c0 = z1.max(axes, keepdims=True), z0.max(axes, keepdims=True)
            u1, u0 = z1 - c1, z0 - c0
            e1, e0 = jnp.exp(u1), jnp.exp(u0)
            s1, s0 = e1.sum(axes, keepdims=True), e0.sum(axes, keepdims=True)
            # exp's gradient where u and u' are equal, up to the rounding of z and of the
            # maxima: at a maximum u is 0 whatever that rounding (which XLA may do twice, one
            # way for this test and another for the division: 0 / 0 there)
            near = _both(jnp.abs(u1 - u0) < eps + rtol * jnp.maximum(
                jnp.maximum(jnp.abs(u1), jnp.abs(u0)), jnp.maximum(jnp.abs(c1), jnp.abs(c0))))
            m_e = jnp.where(near, _pair(e1, e0),
                            _both(e1 - e0) / jnp.where(near, 1.0, _both(u1 - u0)))
            # the secant slope of exp lies between e' and e: only rounding leaves that range
            m_e = jnp.clip(m_e, _both(jnp.minimum(e1, e0)), _both(jnp.maximum(e1, e0)))
            m_ye = _both(0.5 * (1.0 / s1 + 1.0 / s0))
            m_ys = _both(-0.5 * (e1 + e0) / (s1 * s0))
            ct_u = m_e * (g * m_ye + (g * m_ys).sum(axes, keepdims=True))
            # u = z - max(z): the change of the maximum, c - c', at the position p of the
            # larger maximum, as a share r = (c - c') / (z_p - z'_p) of its difference
            hot = jnp.where(c1 >= c0, first_max(z1), first_max(z0))
            dz_p = (hot * (z1 - z0)).sum(axes, keepdims=True)
            # 0 <= r <= 1 exactly (z_p - z'_p is c - c' plus the other half's distance below
            # its maximum): kept there, and 1 where a dz_p of rounding noise, computed twice,
            # was 0 for the division only (0 / 0). No relative tolerance: r * dz_p must be
            # c - c' (a share of 1 misses by up to dz_p, first order)
            small = jnp.abs(dz_p) < eps
            ratio = (c1 - c0) / jnp.where(small, 1.0, dz_p)
            r = jnp.where(small | jnp.isnan(ratio), 1.0, jnp.clip(ratio, 0.0, 1.0))
            return (ct_u - _both(hot * r) * ct_u.sum(axes, keepdims=True),)

        return with_backward(lambda _, v: jax.nn.softmax(v, axis=axes), multipliers, (), (z,))


@dataclasses.dataclass(frozen=True)
class _RescaleReLU:
    """The rescale rule on ``jax.nn.relu`` alone: a plain function's ReLU
    (``FunctionModel(relu_kwarg=...)``)."""

    eps: float = 1e-10
    rtol: float = 1e-4

    def __call__(self, x: Array) -> Array:
        return RescaleRule(self.eps, self.rtol)(jax.nn.relu, x)


@dataclasses.dataclass(frozen=True)
class ProductRule:
    """DeepLIFT's multipliers for products of tensors, as a ``Runtime.layer_rule`` acting on
    the layers in ``products`` (paths) and on the steps inside layers (``name=None``, through
    ``Runtime.rule``: an RNN cell's projections and gated state updates, and with
    ``product=True`` a ``Bidirectional`` layer's ``mul`` merge); every other layer is
    computed as it is. On a batch ``[a; a']`` of each of the ``n`` factors, the backward
    pass gives every factor the mean of the product's gradient along the straight line
    ``a' + t (a - a')``, ``t`` in ``[0, 1]``: an integral of a polynomial of degree ``n - 1``
    in ``t``, computed exactly by Gauss-Legendre quadrature at ``ceil(n / 2)`` points (for
    two factors, a ``matmul``, or a cell's step, a polynomial of degree at most 2 in its
    tensors by ``Runtime.rule``'s contract: the gradient at the midpoint ``(a + a') / 2``).
    The factors' contributions then sum to the product's difference exactly
    (summation-to-delta); for two factors they are the Shapley values of the two-player game
    ``a * b``."""

    products: tuple[str, ...]

    def __call__(self, f: Callable[..., Array], params: Any, *args: Array,
                 name: str | None, product: bool = False) -> Array:
        if product or name in self.products:
            degree = len(jax.tree_util.tree_leaves(args))  # a merge's factors: one list
        elif name is None:  # a step inside a layer: of degree <= 2 in its tensors
            degree = 2
        else:
            return f(params, *args)
        nodes, weights = np.polynomial.legendre.leggauss((degree + 1) // 2)
        tmap = jax.tree_util.tree_map

        def mean_gradient(p, a, _, g):
            ref, delta = tmap(lambda v: _both(_halves(v)[1]), a), tmap(_delta, a)
            total = None
            for t, w in zip((nodes + 1) / 2, weights / 2):  # on [0, 1]
                point = tmap(lambda r, d: r + float(t) * d, ref, delta)
                cot = tmap(lambda c: float(w) * c, jax.vjp(lambda *v: f(p, *v), *point)[1](g))
                total = cot if total is None else tmap(jnp.add, total, cot)
            return total

        return with_backward(f, mean_gradient, params, args)


@dataclasses.dataclass(frozen=True)
class _InnerProduct:
    """:class:`ProductRule` for the products inside attention layers
    (``Runtime.inner_product``): ``f(*tensors)`` with each factor's mean gradient along the
    straight line from the reference's factors to the input's."""

    def __call__(self, f: Callable[..., Array], *tensors: Array) -> Array:
        return ProductRule(())(lambda _, *a: f(*a), {}, *tensors, name=None, product=True)


@dataclasses.dataclass(frozen=True)
class PairRule:
    """DeepLIFT's multipliers for an elementwise function ``y = f(a, b)`` of two tensors that
    is neither a sum nor a product (a maximum, a minimum, a division, a power), as a
    ``Runtime.pairwise`` rule: on batches ``[a; a']`` and ``[b; b']``, the two-player
    Shapley split of ``f(a, b) - f(a', b')``, ``C_a = (f(a, b') - f(a', b') + f(a, b) -
    f(a', b)) / 2`` and ``C_b`` likewise (SHAP's ``DeepExplainer`` splits these operations
    so), divided by ``a - a'`` and ``b - b'`` (broadcast to ``y``'s shape) gives each
    operand's multiplier, the partial derivative at the input where the two are equal up to
    ``eps`` and ``rtol``. ``C_a + C_b`` is the difference exactly. Operands that do not both
    carry the ``[x; x']`` batch axis with ``y``'s rank, or are not floats, pass their
    gradient. A normalization's values times their inverse scale (``f`` with
    ``ordered_at_zero``, ``model_import``'s ``scale_values``) is split in order where the
    values' reference ``a'`` is exactly 0: ``C_a = f(a, b) - f(a', b)`` (all of it),
    ``C_b = f(a', b) - f(a', b') = 0``. There the reference's scale is the normalization's
    floor (``1 / epsilon``, 1e12 for ``UnitNormalization``), and Shapley's
    ``+-a (b' - b) / 2`` shares, exact in reals, cancelled in float32 to maps summing to
    -13312 for a difference of -0.32 (a zero baseline, DeepLIFT's default)."""

    eps: float = 1e-10
    rtol: float = 1e-4

    def __call__(self, f: Callable[[Array, Array], Array], a: Array, b: Array) -> Array:
        y = jax.eval_shape(f, a, b)
        paired = (jnp.ndim(a) == jnp.ndim(b) == len(y.shape) >= 1
                  and jnp.shape(a)[0] == jnp.shape(b)[0] == y.shape[0]
                  and y.shape[0] % 2 == 0
                  and all(jnp.issubdtype(jnp.result_type(v), jnp.inexact) for v in (a, b, y)))
        if not paired:
            return f(a, b)
        eps, rtol = self.eps, self.rtol

        def shapley(_, args, y, g):
            a, b = args
            (a1, a0), (b1, b0), (y1, y0) = _halves(a), _halves(b), _halves(y)
            y10, y01 = f(a1, b0), f(a0, b1)
            share_a, share_b = ((y10 - y0) + (y1 - y01)) / 2, ((y01 - y0) + (y1 - y10)) / 2
            if getattr(f, "ordered_at_zero", False):  # see the docstring
                zero = jnp.broadcast_to(a0 == 0, y0.shape)
                share_a = jnp.where(zero, y1 - y01, share_a)
                share_b = jnp.where(zero, y01 - y0, share_b)
            shares = (_both(share_a), _both(share_b))
            partials = (jax.jvp(lambda u: f(u, b), (a,), (jnp.ones_like(a),))[1],
                        jax.jvp(lambda u: f(a, u), (b,), (jnp.ones_like(b),))[1])
            cots = []
            for v, share, partial in zip((a, b), shares, partials):
                dv = jnp.broadcast_to(_delta(v), y.shape)
                small = jnp.broadcast_to(_near(*_halves(v), eps, rtol), y.shape)
                m = jnp.where(small, partial, share / jnp.where(small, jnp.ones_like(dv), dv))
                cots.append(_unbroadcast(g * m, v.shape))
            return cots

        return with_backward(lambda _, u, v: f(u, v), shapley, (), (a, b))


def _unbroadcast(v: Array, shape: tuple) -> Array:
    """``v`` summed over the axes where ``shape`` (of the same rank) has 1: the cotangent of
    an operand broadcast to ``v``'s shape."""
    axes = tuple(i for i, (s, t) in enumerate(zip(shape, v.shape)) if s == 1 and t != 1)
    return v.sum(axis=axes, keepdims=True) if axes else v


def _time_major(config: Any) -> bool:
    """Whether a layer's config (or a config nested in it: ``Bidirectional``'s layer, an
    RNN's cell) has ``time_major=True``."""
    if isinstance(config, dict):
        return config.get("time_major") is True or any(_time_major(v) for v in config.values())
    if isinstance(config, (list, tuple)):
        return any(_time_major(v) for v in config)
    return False


def deeplift_model(model: Any, maxpool: str = "delta", eps: float = 1e-10,
                   rtol: float = 1e-4, products: str = "delta") -> Any:
    """``model`` with DeepLIFT's rules: every elementwise activation, (``maxpool="delta"``)
    max pooling and (``products="delta"``) product of tensors, function of two tensors and
    softmax of a ``KerasModel``; the ReLU
    of a :class:`FunctionModel` given through its ``relu_kwarg``. The model must then run on
    ``[x; x']`` batches."""
    if maxpool not in MAXPOOL_RULES:
        raise ValueError(f"unknown maxpool rule {maxpool!r}; expected one of {MAXPOOL_RULES}: "
                         "'delta' (Captum's rule, keeps summation-to-delta) or 'gradient' (the "
                         "DeepLIFT authors' default: the max pooling's gradient)")
    if products not in PRODUCT_RULES:
        raise ValueError(f"unknown products rule {products!r}; expected one of "
                         f"{PRODUCT_RULES}: 'delta' (the mean gradient between the reference's "
                         f"and the input's factors, keeps summation-to-delta) or 'gradient' "
                         f"(the product's gradient, as Captum)")
    if hasattr(model, "with_rules"):  # model_import.KerasModel
        moving = [n for n in model.layer_names if _time_major(model._spec(n).config)]
        if moving:
            raise ValueError(
                f"DeepLIFT runs each input and its reference as the two halves of one batch "
                f"and pairs them along the batch axis, but {moving} read their inputs "
                f"time-major (tf.keras's time_major=True: the batch on axis 1), so the "
                f"halves would be paired wrongly. Use integrated_gradients (DeepLIFT's "
                f"path-integral counterpart) or gradient_shap for this model")
        found = tuple(path for path in model.relevance_layers
                      if is_product(model._spec(path)))
        return model.with_rules(
            elementwise=RescaleRule(eps, rtol),
            max_pool=MaxPoolDeltaRule(eps) if maxpool == "delta" else None,
            layer_rule=ProductRule(found) if products == "delta" else None,
            pairwise=PairRule(eps, rtol) if products == "delta" else None,
            softmax=SoftmaxRule(eps, rtol) if products == "delta" else None,
            inner_product=_InnerProduct() if products == "delta" else None)
    if isinstance(model, base.FunctionModel):
        if model.relu_kwarg is None:
            raise ValueError(
                "DeepLIFT needs to replace the function's nonlinearities, but this "
                "FunctionModel has no relu_kwarg. Write fn(params, x, relu=jax.nn.relu) with "
                "every ReLU through `relu` and pass FunctionModel(fn, params, "
                "relu_kwarg='relu'), or load the model with jaxsal's importer (load_keras), "
                "whose every activation and max pooling gets the rule")
        if model.head not in ("saved", "logits"):
            # the head jaxsal applies after the function would keep its gradient: the maps
            # would not sum to the difference of the scores. 'saved' returns to the head the
            # model was made with: offered only where that is the function's own output
            saved = getattr(model, "saved_head", "saved")
            heads = ("head='logits' or 'saved', the head it was made with"
                     if saved in ("saved", "logits") else
                     f"head='logits'; 'saved' is the {saved!r} head it was made with")
            raise ValueError(
                f"DeepLIFT gives a FunctionModel's ReLUs (its relu_kwarg) its rule, not the "
                f"{model.head!r} head jaxsal applies after the function, whose gradient would "
                f"break summation-to-delta. Explain the function's own output ({heads}), or "
                f"load the model with load_keras, whose heads get the rules")
        return model._replace(relu=_RescaleReLU(eps, rtol), relu_mode="deeplift")
    raise TypeError(f"DeepLIFT needs a model whose nonlinearities it can replace "
                    f"(model_import.KerasModel, or a FunctionModel with relu_kwarg); got "
                    f"{type(model).__name__}")


def _check_tolerance(value: Any, name: str) -> float:
    """``eps`` (> 0) or ``rtol`` (>= 0) as a float. ``eps=0`` is refused: where an input's
    and its reference's values are equal (a zero baseline meeting zero inputs, both halves at
    a ReLU's 0), ``|z - z'| < rtol * max(|z|, |z'|)`` can fail too (``0 < 0``), and the
    secant slope is ``0 / 0``: NaN maps that read as the model's fault."""
    if name == "eps":
        return reals.check_real(value, name, low=0, above=True, kind=(
            "Captum uses 1e-10; where |z - z'| < eps + rtol * max(|z|, |z'|) a rule uses "
            "the gradient, and with eps = 0 equal values give a secant slope of 0 / 0 = NaN"),
            example="1e-10")
    return reals.check_real(value, name, low=0, kind="a finite number: where |z - z'| < eps + "
                            "rtol * max(|z|, |z'|) a rule uses the gradient")


def _pair_pullback(dl: Any, params: Any, x: Any, refs: Any, spec, info, ids,
                   lt: LayerTarget | None = None):
    """One forward pass of ``[x; refs]`` through the DeepLIFT model ``dl``. Returns
    ``(pull, delta)``: ``pull(t)``, target ``t``'s multipliers with respect to ``x``
    (``(N, ...)`` per input), and ``delta = x - refs``; with ``lt``, the multipliers with
    respect to that layer's output ``A`` (a zero perturbation added there) and
    ``A(x) - A(refs)``. Both halves' scores are differentiated, as Captum does (the
    reference half's cotangents reach the input half only through the max-pool rule)."""
    pair = jax.tree_util.tree_map(_pair, x, refs)
    _, primal, pull = pullback_at(dl, params, pair, spec, info, base.repeat_rows(ids, 2), lt)
    delta = jax.tree_util.tree_map(lambda a: jnp.subtract(*_halves(a)), primal)
    return (lambda t: jax.tree_util.tree_map(lambda g: _halves(g)[0], pull(t))), delta


def _attribute(g: Any, delta: Any, multiply_by_inputs: bool) -> Any:
    """``(N, Tc, ...)`` multipliers times ``delta`` (``(N, ...)``, per input), or as they
    are."""
    if not multiply_by_inputs:
        return g
    return jax.tree_util.tree_map(lambda gi, d: gi * d[:, None], g, delta)


def _setup(model, x, targets, head, check_finite, maxpool, products, eps, rtol, reduce,
           multiply_by_inputs, layer, memory_budget):
    """Validation and the plan both DeepLIFT functions share: ``(prepared call, DeepLIFT
    model, multiply_by_inputs, layer target, channel axes, inputs per pass, bytes of one
    pass of those inputs and as many references)``."""
    check_reduce(reduce)
    eps, rtol = _check_tolerance(eps, "eps"), _check_tolerance(rtol, "rtol")
    multiply_by_inputs = check_flag(multiply_by_inputs, "multiply_by_inputs")
    p = prepare(model, x, targets, head=head, backprop="standard", check_finite=check_finite,
                allow_int=layer is not None, multi_input=True)
    lt = None if layer is None else prepare_layer(p, layer, reduce)
    axes = p.map_channel_axes if lt is None else [lt.map_channel_axis]
    fb = 2 * base.forward_bytes(p.model, p.x)  # each input and a reference in one pass
    nb = base.batch_chunk(p.n, fb // p.n, memory_budget)
    dl = deeplift_model(p.model, maxpool, eps, rtol, products)
    if isinstance(dl, base.FunctionModel):
        # the rule's ReLU reaches the function through relu_kwarg: a jax.jit-ed function
        # that does not take it static is told so here, not by JAX's TypeError alone
        base.model_shapes(dl, p.x)
    return p, dl, multiply_by_inputs, lt, axes, nb, fb * nb // p.n


@refuses_non_finite_maps
def deeplift(model: ModelLike, x: Inputs, targets: Targets = None, *,
             baseline: Inputs | None = None, maxpool: str = "delta",
             products: str = "delta", eps: float = 1e-10,
             rtol: float = 1e-4, multiply_by_inputs: bool = True, reduce: str | None = "sum",
             head: str | None = None, chunk_size: int | None = None,
             memory_budget: int | None = None, precision: str | None = None,
             check_finite: bool = True, layer: str | None = None) -> Maps:
    """DeepLIFT, rescale rule (Shrikumar et al., 2017; Captum's ``DeepLift``).

    ``(x - x') * m`` where ``m`` are the multipliers of the target's score: the backward
    pass with every elementwise activation's derivative replaced by its secant slope between
    ``x`` and the reference ``x'``, every max pooling by the ``maxpool`` rule and every
    product of tensors by the ``products`` rule (see the module). With the default
    ``reduce="sum"`` each map sums to ``S(x) - S(x')`` on networks of affine layers,
    elementwise activations, max pooling and products of tensors.

    Args:
      model, x, targets, head, chunk_size, memory_budget, precision, check_finite: as in
        :func:`jaxsal.saliency`. ``model``: a ``KerasModel`` (every elementwise activation,
        fused or a layer or an operation, and every max pooling get the rules), or a
        :class:`FunctionModel` with ``relu_kwarg`` (its ReLU gets the rule; anything else in
        the function passes its gradient).
      baseline: the reference ``x'``: ``None`` (zeros), a number, ``(H, W, C)`` or
        ``(N, H, W, C)`` (per input; for several inputs, one per input as
        :func:`jaxsal.integrated_gradients`' ``baseline``).
      maxpool: ``"delta"`` (default; Captum's rule, keeps summation-to-delta) or
        ``"gradient"`` (the max pooling's own gradient, the DeepLIFT authors' default).
      products: ``"delta"`` (default; a product of tensors -- ``Multiply``, an unnormalized
        ``Dot``, ``x * y`` or ``matmul`` operations, as in squeeze-and-excitation blocks and
        attention written with operations, and the gated state updates inside LSTM, GRU
        and ConvLSTM cells -- gives each factor the mean of its gradient between the
        reference's factors and the input's, and an elementwise function of two tensors --
        ``Maximum``, ``Minimum``, ``a / b``, ``a ** b`` -- gives each operand its two-player
        Shapley value, a softmax over an axis -- ``Softmax`` layers, ``softmax``
        activations and operations -- is taken apart into those rules (SHAP's split), and
        attention layers' softmax and products take them; all keep summation-to-delta)
        or ``"gradient"`` (their gradient at the input, as Captum).
      eps, rtol: where ``|z - z'| < eps + rtol * max(|z|, |z'|)`` a rule uses the plain
        gradient instead of the secant (Captum: ``|z - z'| < eps``, 1e-10). ``eps`` must
        be > 0: with 0, equal values (zero inputs at a zero baseline) give ``0 / 0``. ``rtol``
        (default 1e-4) keeps float rounding out of the secant: XLA may round the input's
        and the reference's halves of one batch differently, and where they are equal up to
        that rounding, a secant of two rounding errors is noise, while the gradient is what
        the secant tends to. ``rtol=0`` is Captum's rule.
      multiply_by_inputs: ``True``: ``(x - x') * m``; ``False``: the multipliers ``m``
        (Captum's ``multiply_by_inputs=False``).
      reduce: channel reduction (default signed ``"sum"``, which keeps summation-to-delta;
        ``None`` keeps channels).
      layer: attribute to this layer's output ``A`` instead of the input:
        ``(A(x) - A(x')) * m_A`` (Captum's ``LayerDeepLift``; with an ``Embedding`` layer,
        ``x`` and ``baseline`` may be integer token ids). Maps have the layer's shape, its
        channel axis reduced; they sum to ``S(x) - S(x')`` as well.
    Returns:
      Raw maps ``(N, H, W)`` or ``(N, T, H, W)`` (channels kept when ``reduce=None``).
    """
    p, dl, multiply_by_inputs, lt, axes, nb, fb = _setup(
        model, x, targets, head, check_finite, maxpool, products, eps, rtol, reduce,
        multiply_by_inputs, layer, memory_budget)
    b = check_baseline(p.per_input(baseline, "baseline"), p.x, formats=p.formats)
    check_fill_ids(p.model, b, p.x, "baseline")  # ids outside the vocabulary: NaN maps
    chunk = base.chunk_for(p.spec.num, fb, chunk_size, memory_budget, rows=2 * nb)
    m, spec, info = p.model, p.spec, p.info

    def build():
        def run(params, x, ids, baseline):
            sp, ids_ = resolve_predicted(m, params, x, spec, info, ids)
            pull, delta = _pair_pullback(dl, params, x, _start(baseline, x), sp, info, ids_,
                                         lt)

            def chunk_fn(ts):
                g = jax.vmap(pull, out_axes=1)(ts)
                return _reduce_inputs(_attribute(g, delta, multiply_by_inputs), reduce, axes)

            return first_only(base.map_chunks(chunk_fn, spec.num, chunk), spec.class_axis)

        return run

    key = ("deeplift", p.key, base.model_key(dl), spec, info, multiply_by_inputs, reduce,
           chunk, nb, lt)
    return base.compiled(key, lambda: base.split_batch(build(), nb, maybe=(3,)),
                         precision)(p.params, p.x, p.ids, b)


@refuses_non_finite_maps
def deeplift_shap(model: ModelLike, x: Inputs, targets: Targets = None, *,
                  baselines: Inputs | None = None, maxpool: str = "delta",
                  products: str = "delta", eps: float = 1e-10, rtol: float = 1e-4,
                  multiply_by_inputs: bool = True,
                  reduce: str | None = "sum", batch_baselines: int | None = None,
                  head: str | None = None, chunk_size: int | None = None,
                  memory_budget: int | None = None, precision: str | None = None,
                  check_finite: bool = True, layer: str | None = None) -> Maps:
    """DeepLIFT-SHAP (Lundberg & Lee, 2017; Captum's ``DeepLiftShap``): :func:`deeplift`
    against each reference of a distribution ``baselines`` ``(B, ...)``, averaged. Each map
    sums to ``S(x) - mean_b S(b)`` where DeepLIFT's summation-to-delta holds. Exact (no
    sampling): every input is paired with every baseline.

    Args:
      model, x, targets, maxpool, products, eps, rtol, multiply_by_inputs, reduce, head,
        chunk_size, memory_budget, precision, check_finite, layer: as in :func:`deeplift`
        (``layer``: Captum's ``LayerDeepLiftShap``).
      baselines: the reference distribution ``(B, H, W, C)`` (a structure of them for
        several inputs), e.g. a few dozen training images; one reference ``(H, W, C)``, a
        number or ``None`` (zeros) make it :func:`deeplift`.
      batch_baselines: references evaluated together in one pass (default: as many as fit
        in ``memory_budget``).
    Returns:
      Raw maps ``(N, H, W)`` or ``(N, T, H, W)`` (channels kept when ``reduce=None``).
    """
    p, dl, multiply_by_inputs, lt, axes, nb, fb = _setup(
        model, x, targets, head, check_finite, maxpool, products, eps, rtol, reduce,
        multiply_by_inputs, layer, memory_budget)
    dist = check_baselines(p.per_input(baselines, "baselines"), p.x)
    if lt is not None:  # ids outside the vocabulary: NaN maps
        check_reference_ids(p.model, dist)
    n_ref = int(jax.tree_util.tree_leaves(dist)[0].shape[0])
    batch_baselines = base.auto_batch(n_ref, fb, batch_baselines, memory_budget,
                                      "batch_baselines")
    chunk = base.chunk_for(p.spec.num, fb * batch_baselines, chunk_size, memory_budget)
    m, spec, info = p.model, p.spec, p.info

    def build():
        def run(params, x, ids, dist):
            sp, ids_ = resolve_predicted(m, params, x, spec, info, ids)
            n = jax.tree_util.tree_leaves(x)[0].shape[0]
            n_ref = jax.tree_util.tree_leaves(dist)[0].shape[0]  # this trace's, not the key's

            def chunk_fn(ts):
                def group(ks, valid):
                    bs = len(ks)
                    # input-major (base.stack_rows): row i bs + k pairs input i with
                    # reference ks[k], so a batch sharded over its inputs stays sharded
                    xs = base.repeat_rows(x, bs)
                    refs = base.tile_batch(jax.tree_util.tree_map(lambda r: r[ks], dist), n)
                    pull, delta = _pair_pullback(dl, params, xs, refs, sp, info,
                                                 base.repeat_rows(ids_, bs), lt)
                    a = _attribute(jax.vmap(pull, out_axes=1)(ts), delta, multiply_by_inputs)

                    def total(ai):
                        ai = ai.reshape((n, bs) + ai.shape[1:])
                        v = valid.reshape((1, -1) + (1,) * (ai.ndim - 2))
                        return jnp.sum(jnp.where(v, ai, 0.0), axis=1)

                    return jax.tree_util.tree_map(total, a)

                sums = base.sum_groups(group, n_ref, batch_baselines)
                mean = jax.tree_util.tree_map(lambda s: s / n_ref, sums)
                return _reduce_inputs(mean, reduce, axes)

            return first_only(base.map_chunks(chunk_fn, spec.num, chunk), spec.class_axis)

        return run

    key = ("deeplift_shap", p.key, base.model_key(dl), spec, info, multiply_by_inputs, reduce,
           batch_baselines, chunk, nb, lt)
    return base.compiled(key, lambda: base.split_batch(build(), nb),
                         precision)(p.params, p.x, p.ids, dist)


#: explain_to_file passes ``baselines`` whole to every chunk (a distribution, not per input).
deeplift_shap.shared_options = ("baselines",)
#: explain_to_file takes these one per input of a model of several inputs, by name or position.
deeplift.several_input_options = ("baseline",)
deeplift_shap.several_input_options = ("baselines",)
