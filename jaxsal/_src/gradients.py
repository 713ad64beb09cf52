"""Gradient saliency: vanilla gradient, gradient x input, guided backprop, deconvnet.

Each is one compiled program: one forward pass (``jax.vjp``), then the pullback of every
target (``vmap``-ed over a chunk of targets, chunks in sequence), the channel reduction applied
on device inside the same program, so only the reduced maps ever leave it.

Papers:
- Saliency: Simonyan, Vedaldi & Zisserman (2014), "Deep Inside Convolutional Networks:
  Visualising Image Classification Models and Saliency Maps".
- Gradient x input: Shrikumar et al. (2016), "Not Just a Black Box: Learning Important
  Features Through Propagating Activation Differences".
- Guided backpropagation: Springenberg et al. (2015), "Striving for Simplicity: The All
  Convolutional Net".
- Deconvnet: Zeiler & Fergus (2014), "Visualizing and Understanding Convolutional Networks".
"""

from __future__ import annotations

from typing import Any

import jax

from jaxsal._src import base, plans
from jaxsal._src.base import Inputs, Maps, ModelLike
from jaxsal._src.finite import check_maps
from jaxsal._src.postprocess import _reduce_inputs, check_reduce
from jaxsal._src.targets import (OutputInfo, TargetSpec, Targets, pullback_at, run_model,
                                 target_pullback)
from jaxsal._src.validate import check_flag, prepare, prepare_layer

Array = jax.Array
ArrayLike = jax.typing.ArrayLike


def times(g: Any, x: Any) -> Any:
    """Per-target gradients ``(N, T, ...)`` times their input ``(N, ...)`` (each input of a
    multi-input model with its own)."""
    return jax.tree_util.tree_map(lambda gi, xi: gi * xi[:, None], g, x)


def first_only(out: Any, class_axis: bool) -> Any:
    """Drop the target axis of ``(N, 1, ...)`` maps (every map of a structure) unless the
    caller asked for a class axis."""
    return out if class_axis else jax.tree_util.tree_map(lambda a: a[:, 0], out)


def raw_gradients(model: Any, spec: TargetSpec, info: OutputInfo, times_input: bool = False):
    """``f(params, x, ids, ts) -> (N, len(ts), *x.shape[1:])``: the input gradients (times
    the input) of targets ``ts``, one forward pass. Used by the sampling methods."""

    def f(params, x, ids, ts):
        fwd = lambda xx: (*run_model(model, params, xx, spec.layers), None)  # noqa: E731
        _, _, pull = target_pullback(fwd, x, spec, info, ids)
        g = jax.vmap(pull, out_axes=1)(ts)
        return times(g, x) if times_input else g

    return f


def _input_gradient_method(name: str, model: Any, x: ArrayLike, targets: Any, *,
                           backprop: str | None, times_input: bool, reduce: str | None,
                           head: str | None, chunk_size: int | None, memory_budget: int | None,
                           precision: str | None, check_finite: bool,
                           layer: str | None = None) -> Array:
    """The gradient (times the input) of every target with respect to ``x``, or with
    ``layer`` with respect to that layer's output ``A`` (one forward pass with a zero
    perturbation added there; times ``A``). Planned once per static description of the
    call (:mod:`jaxsal._src.plans`)."""
    m0 = base.with_options(model, head, backprop)
    options = (times_input, reduce, chunk_size, memory_budget, precision, check_finite, layer)
    maps = plans.cached(plans.key(name, m0, x, targets, options), m0, x, lambda: _plan_gradients(
        name, model, x, targets, backprop=backprop, times_input=times_input, reduce=reduce,
        head=head, chunk_size=chunk_size, memory_budget=memory_budget, precision=precision,
        check_finite=check_finite, layer=layer))
    check_maps(name, maps, check_finite)  # NaN/inf maps of finite inputs refused
    return maps


def _plan_gradients(name: str, model: Any, x: ArrayLike, targets: Any, *,
                    backprop: str | None, times_input: bool, reduce: str | None,
                    head: str | None, chunk_size: int | None, memory_budget: int | None,
                    precision: str | None, check_finite: bool,
                    layer: str | None) -> tuple[Array, plans.Plan]:
    """:func:`_input_gradient_method`'s full path: ``(maps, its plan)``."""
    check_reduce(reduce)
    p = prepare(model, x, targets, head=head, backprop=backprop, check_finite=check_finite,
                allow_int=layer is not None, multi_input=True)
    lt = None if layer is None else prepare_layer(p, layer, reduce)
    fb = base.forward_bytes(p.model, p.x)
    nb = base.batch_chunk(p.n, fb // p.n, memory_budget)
    per_target = (base.target_bytes(p.model, p.x, nb) if lt is None  # a pullback to x, or
                  else base.target_bytes(p.model, p.x, nb, lt.name, lt.shape))  # to a layer
    chunk = base.chunk_for(p.spec.num, per_target, chunk_size, memory_budget, rows=nb)
    m, spec, info = p.model, p.spec, p.info
    # the channel axis of the (N, T, ...) gradients: each input's, or the layer's
    axes = p.map_channel_axes if lt is None else [lt.map_channel_axis]

    def build():
        def run(params, x, ids):
            _, primal, pull = pullback_at(m, params, x, spec, info, ids, lt)

            def chunk_fn(ts):
                g = jax.vmap(pull, out_axes=1)(ts)  # (N, Tc, *primal.shape[1:])
                if times_input:
                    g = times(g, primal)
                return _reduce_inputs(g, reduce, axes)

            return first_only(base.map_chunks(chunk_fn, spec.num, chunk), spec.class_axis)

        return run

    fn = base.compiled((name, p.key, spec, info, times_input, reduce, chunk, nb, lt),
                       lambda: base.split_batch(build(), nb), precision)
    check = dict(check_finite=check_flag(check_finite, "check_finite"),
                 allow_int=layer is not None, multi_input=True)
    return fn(p.params, p.x, p.ids), plans.Plan(fn, p.ids, check)


def saliency(model: ModelLike, x: Inputs, targets: Targets = None, *,
             reduce: str | None = "max_abs", head: str | None = None,
             chunk_size: int | None = None, memory_budget: int | None = None,
             precision: str | None = None, check_finite: bool = True,
             layer: str | None = None) -> Maps:
    """Vanilla gradient saliency (Simonyan et al., 2014): ``d score / d x``.

    Args:
      model: a ``KerasModel`` (``load_keras``), a :class:`FunctionModel` or ``(fn, params)``.
      x: inputs ``(N, H, W, C)`` (any ``(N, ...)`` the model takes), preprocessed, floating.
        For a model with several inputs, a list, tuple or dict of such arrays (keyed by
        ``model.input_names``): every input gets its map, returned in the same container.
        ``(N, D)`` feature inputs have no channel axis: each feature keeps its value.
      targets: ``None`` (each input's predicted class), an int (that class for every input),
        a 1-D sequence of ``T`` class ids (every class for every input: output ``(N, T, ...)``),
        an ``(N, T)`` int array (per-input ids), or a score function ``outputs -> (N,)``
        (or a list of them) such as :func:`jaxsal.class_score` / :func:`jaxsal.neuron`.
      reduce: channel reduction applied on device: ``"max_abs"`` (default, as keras-vis and
        tf-keras-vis), ``"abs_sum"``, ``"sum"``/``"signed"``, ``"max"``, ``"mean"``,
        ``"l2"``, or ``None`` to keep the channel axis.
      head: override the model's head (``"logits"``, ``"softmax"``, ``"sigmoid"``,
        ``"sigmoid_complement"``, ``"saved"``); default: the model's own.
      chunk_size: at most how many targets share one batched backward pass, a positive int
        (default: as many as fit in ``memory_budget`` bytes). Chunks are equal (the last one
        padded), so the size used is the one up to this that pads least: 10 targets with
        ``chunk_size=3`` run as 5 chunks of 2, not 4 of 3.
      memory_budget: bytes one chunk of backward passes may use, a positive number (default: a
        quarter of the accelerator's memory, at least ``jaxsal.DEFAULT_MEMORY_BUDGET``; 256 MiB
        on CPU). Floats work (``2e9``); below 1, NaN, inf or a bool raises a ``ValueError``.
      precision: ``"highest"`` for exact float32 matmuls on accelerators (parity tests);
        ``"bfloat16"`` (opt-in speed on accelerators): the backward passes' matmuls and
        convolutions take bfloat16 operands, accumulated in float32; the forward pass, every
        other operation, inputs, params and maps stay float32. (Forward-only methods, Score-CAM,
        Eigen-CAM and occlusion, run all their matmuls that way.) Rounding the forward pass
        too would flip ReLU/max-pool routing in deep networks and change the gradients.
      check_finite: raise on NaN/inf inputs (one cheap device reduction).
      layer: attribute to this layer's output instead of the input: ``d score / d A`` (a
        "layer" method, as Captum's; with an ``Embedding`` layer, the way to explain a model
        of integer token ids, which are then accepted as ``x``). The map has the layer's
        shape, its channel axis reduced (``(N, L)`` for an embedding output ``(N, L, E)``);
        a layer without one (``Dense``) needs ``reduce=None``.
    Returns:
      Raw (un-normalized) maps ``(N, H, W)`` (``(N, T, H, W)`` with a class axis; the channel
      axis kept when ``reduce=None``).

    Example::

        maps = jaxsal.saliency(model.with_head("logits"), x, targets=range(10))  # (N,10,H,W)
    """
    return _input_gradient_method("saliency", model, x, targets, backprop=None,
                                  times_input=False, reduce=reduce, head=head,
                                  chunk_size=chunk_size, memory_budget=memory_budget,
                                  precision=precision, check_finite=check_finite, layer=layer)


def gradient_x_input(model: ModelLike, x: Inputs, targets: Targets = None, *,
                     reduce: str | None = "sum", head: str | None = None,
                     chunk_size: int | None = None, memory_budget: int | None = None,
                     precision: str | None = None, check_finite: bool = True,
                     layer: str | None = None) -> Maps:
    """Gradient times input (Shrikumar et al., 2016): ``x * d score / d x``.

    Same arguments as :func:`saliency`; the default reduction is the signed channel
    ``"sum"`` (for a linear model with zero bias, the map sums to the score). With
    ``layer=``: gradient times activation, ``A * d score / d A`` (Captum's
    ``LayerGradientXActivation``).
    Returns raw maps ``(N, H, W)`` / ``(N, T, H, W)`` (channels kept with ``reduce=None``).
    """
    return _input_gradient_method("gradient_x_input", model, x, targets, backprop=None,
                                  times_input=True, reduce=reduce, head=head,
                                  chunk_size=chunk_size, memory_budget=memory_budget,
                                  precision=precision, check_finite=check_finite, layer=layer)


def guided_backprop(model: ModelLike, x: Inputs, targets: Targets = None, *,
                    reduce: str | None = "max_abs", head: str | None = None,
                    chunk_size: int | None = None, memory_budget: int | None = None,
                    precision: str | None = None, check_finite: bool = True,
                    layer: str | None = None) -> Maps:
    """Guided backpropagation (Springenberg et al., 2015).

    The gradient with every ReLU's backward rule replaced by ``dy * [dy > 0] * [z > 0]``
    (``jax.custom_vjp``, :func:`jaxsal.guided_relu`; keras-vis ``backprop_modifier="guided"``,
    tf-keras-vis ``GuidedBackpropagation``); forward values are unchanged. Same arguments
    as :func:`saliency`; returns raw maps ``(N, H, W)`` / ``(N, T, H, W)``. With ``layer=``,
    the guided gradient with respect to that layer's output (the rule applies to the ReLUs
    after it).
    """
    return _input_gradient_method("guided_backprop", model, x, targets, backprop="guided",
                                  times_input=False, reduce=reduce, head=head,
                                  chunk_size=chunk_size, memory_budget=memory_budget,
                                  precision=precision, check_finite=check_finite, layer=layer)


def deconvnet(model: ModelLike, x: Inputs, targets: Targets = None, *,
              reduce: str | None = "max_abs", head: str | None = None,
              chunk_size: int | None = None, memory_budget: int | None = None,
              precision: str | None = None, check_finite: bool = True,
              layer: str | None = None) -> Maps:
    """Deconvnet / "rectified" backprop (Zeiler & Fergus, 2014).

    Every ReLU's backward rule becomes ``dy * [dy > 0]`` (the input's sign is ignored;
    keras-vis ``backprop_modifier="relu"``). Same arguments as :func:`saliency` (``layer=``
    included); returns raw maps ``(N, H, W)`` / ``(N, T, H, W)``.
    """
    return _input_gradient_method("deconvnet", model, x, targets, backprop="deconvnet",
                                  times_input=False, reduce=reduce, head=head,
                                  chunk_size=chunk_size, memory_budget=memory_budget,
                                  precision=precision, check_finite=check_finite, layer=layer)
