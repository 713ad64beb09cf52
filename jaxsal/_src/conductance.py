"""Layer conductance and internal influence: gradients at a layer along the input's path.

Both walk the straight path ``x(a) = x' + a (x - x')`` in *input* space (unlike
``integrated_gradients(layer=...)``, whose path runs in the layer's space) and read the
target's gradient at a layer's output ``A``, ``G(a) = dS/dA (x(a))``:

- conductance (Dhamdhere, Sundararajan & Yan, 2018, "How Important Is a Neuron?"; Captum's
  ``LayerConductance``): ``integral_0^1 G(a) * dA(x(a))/da da``, each unit's share of the
  score's change. Summed over a layer that every path from the input to the output crosses,
  it is ``S(x) - S(x')`` (the chain rule, integrated) up to the quadrature error.
- neuron conductance (Dhamdhere et al., 2018; Captum's ``NeuronConductance``): the same
  integral for one unit (or channel) ``j`` of the layer, split over the *input*:
  ``(x_i - x'_i) integral_0^1 dS/dA_j * dA_j/dx_i da``. Summed over the input, it is the
  unit's conductance (the flow of integrated gradients through it).
- internal influence (Leino et al., 2018, "Influence-Directed Explanations for Deep
  Convolutional Networks"; Captum's ``InternalInfluence``): ``integral_0^1 G(a) da``.

The conductance integral is taken by the trapezoid rule on ``steps + 1`` points ``a_k =
k / steps``, ``sum_k (G_k + G_{k+1}) / 2 * (A_{k+1} - A_k)``, written as ``sum_k G_k c_k``
with ``c_k = (A_{k+1} - A_{k-1}) / 2`` (the ends' own differences halved), so each point's
gradients are weighed and summed as they come: memory holds one group of points at a time.
Each point costs a forward and backward pass (which also gives its ``A``), and conductance
two more points' forward passes up to the layer per group of points (the neighbours just
outside the group). Every target's gradients come from one backward pass per
point (vmapped pullbacks), as in the other gradient methods.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxsal._src import base, ints
from jaxsal._src.base import Inputs, Maps, ModelLike
from jaxsal._src.finite import refuses_non_finite_maps
from jaxsal._src.gradients import first_only
from jaxsal._src.integrated import RULES, _start, check_baseline, path_integral, quadrature
from jaxsal._src.postprocess import _reduce_inputs, check_reduce
from jaxsal._src.precision import backward_dtype, low_precision
from jaxsal._src.targets import (Targets, layer_pullback, nan_where_invalid, resolve_predicted,
                                 run_model, score_matrix)
from jaxsal._src.validate import LayerTarget, prepare, prepare_layer

Array = jax.Array
ArrayLike = jax.typing.ArrayLike


def _layer_path(name: str, weigh: Callable, alphas: Any, model: Any, x: ArrayLike,
                targets: Any, *, layer: str, baseline: Any, batch_steps: int | None,
                reduce: str | None, head: str | None, chunk_size: int | None,
                memory_budget: int | None, precision: str | None, check_finite: bool) -> Array:
    """``sum_k weigh(ks, G, A, A_at)`` over the path points ``alphas`` (``(P,)``), in groups
    ``ks``: ``G`` the ``(b, N, Tc, *A)`` layer gradients at a group's points and ``A`` the
    layer's output there (``(b, N, *A)``, from the same forward pass), ``A_at(ks)`` the
    layer's output at other points."""
    check_reduce(reduce)
    p = prepare(model, x, targets, head=head, check_finite=check_finite, multi_input=True)
    lt = prepare_layer(p, layer, reduce)
    b = check_baseline(p.per_input(baseline, "baseline"), p.x, formats=p.formats)
    points = len(alphas)
    nb, batch_steps, chunk = base.sampling_plan(p.model, p.x, p.n, p.spec.num, points,
                                                batch_steps, "batch_steps", chunk_size,
                                                memory_budget)
    m, spec, info, L = p.model, p.spec, p.info, lt.name

    def build():
        def run(params, x, ids, baseline):
            sp, ids_ = resolve_predicted(m, params, x, spec, info, ids)
            x0 = _start(baseline, x)
            n = jax.tree_util.tree_leaves(x)[0].shape[0]
            path = jnp.asarray(alphas)

            def inputs(ks):
                """The path points of ``ks``, stacked input-major (:func:`base.stack_rows`:
                a batch sharded over its inputs stays sharded), ``(N b, ...)``."""
                def point(s, e):
                    ak = path[ks].reshape((-1,) + (1,) * e.ndim).astype(e.dtype)
                    return base.stack_rows(s[None] + ak * (e - s)[None])

                return jax.tree_util.tree_map(point, x0, x)

            def A_at(ks):
                A = run_model(m, params, inputs(ks), (L,))[1][L]
                return base.unstack_rows(A, len(ks))  # (b, N, ...)

            def chunk_fn(ts):
                def group(ks, valid):
                    k = len(ks)
                    _, A, pull = layer_pullback(m, params, inputs(ks), L,
                                                (n * k,) + lt.shape[1:], sp, info,
                                                base.repeat_rows(ids_, k))
                    G = jax.vmap(pull, out_axes=1)(ts)  # (N k, Tc, *A)
                    out = weigh(ks, base.unstack_rows(G, k), base.unstack_rows(A, k), A_at)
                    mask = valid.reshape((k,) + (1,) * (out.ndim - 1))
                    return jnp.where(mask, out, 0.0).sum(axis=0)

                total = base.sum_groups(group, points, batch_steps)
                return _reduce_inputs(total, reduce, [lt.map_channel_axis])

            return first_only(base.map_chunks(chunk_fn, spec.num, chunk), spec.class_axis)

        return run

    key = (name, p.key, spec, info, tuple(map(float, alphas)), batch_steps, reduce, chunk, nb,
           lt)
    return base.compiled(key, lambda: base.split_batch(build(), nb, maybe=(3,)),
                         precision)(p.params, p.x, p.ids, b)


@refuses_non_finite_maps
def layer_conductance(model: ModelLike, x: Inputs, targets: Targets = None, *, layer: str,
                      baseline: Inputs | None = None, steps: int = 50,
                      batch_steps: int | None = None, reduce: str | None = "sum",
                      head: str | None = None, chunk_size: int | None = None,
                      memory_budget: int | None = None, precision: str | None = None,
                      check_finite: bool = True) -> Array:
    """Conductance of a layer's units (Dhamdhere et al., 2018; Captum's
    ``LayerConductance``): along the straight path from ``baseline`` to ``x``, the target's
    gradient at the layer's output times that output's change, integrated (trapezoid rule
    on ``steps + 1`` points; see the module). Summed over a layer that every path from the
    input to the output crosses, the map is ``S(x) - S(baseline)`` up to the quadrature
    error.

    Args:
      model, x, targets, head, chunk_size, memory_budget, precision, check_finite: as in
        :func:`jaxsal.saliency` (a model of several inputs: every input moves on its own
        straight path).
      layer: the layer whose output's units are explained.
      baseline: the path's start, as in :func:`jaxsal.integrated_gradients`.
      steps: path segments (``steps + 1`` gradient evaluations).
      batch_steps: path points per batched pass (default: from ``memory_budget``).
      reduce: channel reduction of the layer's output (the default signed ``"sum"`` keeps
        the sum over units); ``None`` keeps every unit.
    Returns:
      ``(N, *A)`` or ``(N, T, *A)``: the layer's output shape with its channel axis reduced.
    """
    steps = ints.check_int(steps, "steps", kind="path segments: steps + 1 gradient "
                           "evaluations")
    alphas = np.arange(steps + 1, dtype=np.float64) / steps

    def weigh(ks, G, A, A_at):
        # c_k = (A_{k+1} - A_{k-1}) / 2, the ends' own differences halved. A group's points
        # are consecutive (the padding repeats the last, `steps`): its neighbours are the
        # group's own A but for the points just before and after it
        ends = A_at(jnp.stack([jnp.maximum(ks[0] - 1, 0), jnp.minimum(ks[-1] + 1, steps)]))
        around = jnp.concatenate([ends[:1], A, ends[1:]])
        c = 0.5 * (around[2:] - around[:-2])
        return G * c[:, :, None].astype(G.dtype)

    return _layer_path("layer_conductance", weigh, alphas, model, x, targets, layer=layer,
                       baseline=baseline, batch_steps=batch_steps, reduce=reduce, head=head,
                       chunk_size=chunk_size, memory_budget=memory_budget,
                       precision=precision, check_finite=check_finite)


@refuses_non_finite_maps
def internal_influence(model: ModelLike, x: Inputs, targets: Targets = None, *, layer: str,
                       baseline: Inputs | None = None, steps: int = 50,
                       rule: str = "trapezoid", batch_steps: int | None = None,
                       reduce: str | None = "sum", head: str | None = None,
                       chunk_size: int | None = None, memory_budget: int | None = None,
                       precision: str | None = None, check_finite: bool = True) -> Array:
    """Internal influence (Leino et al., 2018; Captum's ``InternalInfluence``): the target's
    gradient at a layer's output averaged along the straight path from ``baseline`` to
    ``x``, ``integral_0^1 dS/dA (x' + a (x - x')) da``, by the quadrature ``rule`` of
    :func:`jaxsal.integrated_gradients` on ``steps`` points.

    Arguments as in :func:`layer_conductance`; ``rule``: ``"trapezoid"`` (default),
    ``"left"``, ``"right"``, ``"middle"`` or ``"gausslegendre"``. Returns ``(N, *A)`` or
    ``(N, T, *A)`` with the channel axis reduced (``reduce``; ``None`` keeps it).
    """
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; expected one of {RULES}")
    alphas, weights = quadrature(steps, rule)

    def weigh(ks, G, A, A_at):
        w = jnp.asarray(weights)[ks]
        return G * w.reshape((-1,) + (1,) * (G.ndim - 1)).astype(G.dtype)

    return _layer_path(f"internal_influence_{rule}", weigh, alphas, model, x, targets,
                       layer=layer, baseline=baseline, batch_steps=batch_steps, reduce=reduce,
                       head=head, chunk_size=chunk_size, memory_budget=memory_budget,
                       precision=precision, check_finite=check_finite)


def _neuron_mask(neuron: Any, lt: LayerTarget, layer: str) -> np.ndarray:
    """The units of ``lt``'s output (one example's shape) that ``neuron`` names, as 0/1: a
    tuple indexes one unit, an int one channel (every position of it); an array sharded
    over ``Explicit`` mesh axes is refused (:func:`jaxsal._src.base.refuse_explicit_tree`)."""
    base.refuse_explicit_tree(neuron, "neuron")
    shape = tuple(lt.shape[1:])
    channel_axis = 0 if lt.channels_first else len(shape) - 1
    mask = np.zeros(shape, np.float32)
    if isinstance(neuron, (int, np.integer)) and not isinstance(neuron, (bool, np.bool_)):
        c = int(neuron)
        if not -shape[channel_axis] <= c < shape[channel_axis]:
            raise ValueError(f"neuron={c} is not a channel of layer {layer!r}, whose output "
                             f"has {shape[channel_axis]} channels (shape {lt.shape}, batch "
                             "first)")
        index = [slice(None)] * len(shape)
        index[channel_axis] = c
        mask[tuple(index)] = 1.0
        return mask
    # one unit: a tuple, a list or a 1-D integer array (np.array([i, j, k]), as
    # jaxsal.neuron takes it); a bool or float array is no indices
    why, given = "", neuron
    if isinstance(neuron, (np.ndarray, jax.Array)) and np.ndim(neuron) == 1:
        if isinstance(neuron, jax.core.Tracer):
            why = ("; a traced index is not known when the program is built: pass Python "
                   "ints")
        elif not jnp.issubdtype(neuron.dtype, jnp.integer):
            why = f"; got dtype {neuron.dtype}: pass integer indices (.astype(int))"
        else:
            neuron = tuple(np.asarray(neuron).tolist())
    idx = base.int_sizes(neuron) if isinstance(neuron, (tuple, list)) else None
    if idx is None or len(idx) != len(shape) or not all(
            -d <= i < d for i, d in zip(idx, shape)):
        raise ValueError(f"expected neuron as a channel (an int) or one unit of layer "
                         f"{layer!r}, a tuple of {len(shape)} indices into its output of "
                         f"shape {shape} (without the batch axis) or a 1-D integer array; got "
                         f"{given!r}{why}")
    mask[tuple(idx)] = 1.0
    return mask


@refuses_non_finite_maps
def neuron_conductance(model: ModelLike, x: Inputs, targets: Targets = None, *, layer: str,
                       neuron: int | tuple | np.ndarray | jax.Array,
                       baseline: Inputs | None = None,
                       steps: int = 50, rule: str = "trapezoid",
                       batch_steps: int | None = None, reduce: str | None = "sum",
                       head: str | None = None, chunk_size: int | None = None,
                       memory_budget: int | None = None, precision: str | None = None,
                       check_finite: bool = True) -> Maps:
    """Neuron conductance (Dhamdhere, Sundararajan & Yan, 2018; Captum's
    ``NeuronConductance``): how much of one unit's conductance each input feature carries,
    ``(x - x') * integral_0^1 sum_j dS/dA_j * dA_j/dx da`` along the straight path from
    ``baseline`` to ``x``, ``j`` over the chosen unit(s) of ``layer``'s output ``A``.
    Summed over the input, it is the conductance of those units
    (:func:`jaxsal.layer_conductance` with ``reduce=None``) up to the quadrature error.

    Each path point costs one forward pass and two backward passes per target: ``dS/dA``,
    then its part at the unit pulled back to the input.

    Args:
      model, x, targets, head, chunk_size, memory_budget, precision, check_finite: as in
        :func:`jaxsal.saliency` (a model of several inputs: every input moves on its own
        straight path, and the maps come back per input).
      layer: the layer whose unit is explained.
      neuron: a tuple indexing one unit of the layer's output (without the batch axis,
        e.g. ``(3, 4, 7)`` for row 3, column 4, channel 7 of ``(N, h, w, K)``; ``(7,)`` for
        a Dense layer; a list or a 1-D integer array, ``np.array([3, 4, 7])``, alike, as
        :func:`jaxsal.neuron` takes it), or an int: a whole channel (the sum of its units'
        conductances).
      baseline, steps, rule, batch_steps: as in :func:`jaxsal.integrated_gradients`.
      reduce: channel reduction of the input attributions (signed ``"sum"``, default,
        keeps the sum); ``None`` keeps the channels.
    Returns:
      ``(N, H, W)`` or ``(N, T, H, W)`` (channels kept with ``reduce=None``).
    """
    check_reduce(reduce)
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; expected one of {RULES}")
    quadrature(steps, rule)
    steps = int(steps)  # checked: an int, not np.array(3), whose program key is unhashable
    p = prepare(model, x, targets, head=head, check_finite=check_finite, multi_input=True)
    lt = prepare_layer(p, layer, None)
    mask = _neuron_mask(neuron, lt, layer)
    b = check_baseline(p.per_input(baseline, "baseline"), p.x, formats=p.formats)
    nb, batch_steps, chunk = base.sampling_plan(p.model, p.x, p.n, p.spec.num, steps,
                                                batch_steps, "batch_steps", chunk_size,
                                                memory_budget)
    m, spec, info, L = p.model, p.spec, p.info, lt.name
    axes = p.map_channel_axes

    def build():
        def run(params, x, ids, baseline, unit):  # unit: the neuron's 0/1 mask, an argument
            sp, ids_ = resolve_predicted(m, params, x, spec, info, ids)

            def flow(ts):  # (N, Tc, ...): each target's gradient through the unit(s)
                def grad_at(z, k):
                    ids_k = base.repeat_rows(ids_, k)  # (path_integral: input-major)

                    def fwd(xx, delta):
                        y, caps = run_model(m, params, xx, (L,) + sp.layers,
                                            perturb={L: delta})
                        return score_matrix(sp, info, y, caps, ids_k), caps[L]

                    n_k = jax.tree_util.tree_leaves(z)[0].shape[0]
                    zeros = base.zeros_varying_as(jax.tree_util.tree_leaves(z)[0],
                                                  (n_k,) + lt.shape[1:], jnp.float32)
                    (s, A), pull = jax.vjp(fwd, z, zeros)
                    dtype = backward_dtype()
                    if dtype is not None:
                        pull = low_precision(pull, dtype, pullback=True)

                    def one(t):
                        # (zeros_like(s): the scores' type, as targets.target_pullback)
                        ct = jnp.zeros_like(s) + (jnp.arange(spec.num) == t).astype(s.dtype)
                        G = pull((ct, jnp.zeros_like(A)))[1]  # dS_t/dA
                        g = pull((jnp.zeros_like(s), (G * unit).astype(A.dtype)))[0]
                        # traced ids out of range: NaN (their scores' gradients are 0)
                        return g if sp.checked else nan_where_invalid(g, ids_k[:, t], info)

                    return jax.vmap(one, out_axes=1)(ts)

                return path_integral(grad_at, _start(baseline, x), x, steps, rule, batch_steps)

            out = base.map_chunks(lambda ts: _reduce_inputs(flow(ts), reduce, axes),
                                  spec.num, chunk)
            return first_only(out, spec.class_axis)

        return run

    # the neuron is an argument (its mask), so that a sweep over a layer's units compiles
    # once (the mask was baked into the program, one compilation per neuron)
    key = ("neuron_conductance", p.key, spec, info, steps, rule, batch_steps, reduce, chunk,
           nb, lt, mask.shape, str(mask.dtype))
    return base.compiled(key, lambda: base.split_batch(build(), nb, maybe=(3,)),
                         precision)(p.params, p.x, p.ids, b, jnp.asarray(mask))


#: explain_to_file takes these one per input of a model of several inputs, by name or position.
layer_conductance.several_input_options = ("baseline",)
internal_influence.several_input_options = ("baseline",)
neuron_conductance.several_input_options = ("baseline",)
