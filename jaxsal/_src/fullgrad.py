"""FullGrad: the input-gradient and every bias-gradient of a network, as one saliency map.

Srinivas & Fleuret (2019), "Full-Gradient Representation for Neural Network
Visualization". For a network made of affine layers (convolutions, Dense, BatchNormalization
at inference, each ``z_l = L_l(a) + b_l``) and piecewise-linear nonlinearities (ReLU, max and
average pooling), a score is exactly

    ``S(x) = <dS/dx, x> + sum_l <dS/dz_l, b_l>``

(the full-gradient decomposition: ``dS/dz_l`` is the gradient with respect to layer ``l``'s
pre-activation output, ``b_l`` its constant term broadcast over the positions). FullGrad
turns each term with a spatial layout into a map: ``|dS/dx * x|`` and every
``|dS/dz_l * b_l|`` (of the layers whose output has the input's spatial axes) are
normalized, summed over channels, resized to the input and added up.

One forward pass gives the scores and, with zero perturbations added before every affine
layer's fused activation (``KerasModel.apply(perturb_pre=...)``), one backward pass per
target gives ``dS/dx`` and every ``dS/dz_l`` at once. The constant terms ``b_l`` come from
the layers evaluated on zeros (``KerasModel.biases``).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxsal._src import base
from jaxsal._src.base import ModelLike
from jaxsal._src.finite import refuses_non_finite_maps
from jaxsal._src.postprocess import extreme, min_max, upsample_linear
from jaxsal._src.targets import Targets, run_model, target_pullback
from jaxsal._src.validate import layer_format, prepare, to_channels_last

Array = jax.Array
ArrayLike = jax.typing.ArrayLike

FULLGRAD_VARIANTS = ("paper", "pytorch-grad-cam")


def _scale(a: Array, axes: tuple[int, ...], eps: float) -> Array:
    """``a - min``, divided by ``eps + max`` of that, the extremes over ``axes`` (each read at
    one element, :func:`extreme`); terms of values beyond 2**100 (huge biases) scaled as
    :func:`jaxsal.normalize` scales them (:func:`min_max`), not to zeros or NaN."""
    return min_max(a, extreme(a, axes, jnp.argmin), extreme(a, axes, jnp.argmax), eps)


def _term(a: Array, variant: str) -> Array:
    """One term ``(N, T, *s, C)`` (channels last, already ``abs``) -> ``(N, T, *s)``.

    ``"paper"`` (the authors' code): min-max over the whole term of each map (positions and
    channels together, ``eps = 1e-6``), then the channel sum. ``"pytorch-grad-cam"``: min-max
    of each channel's map (``eps = 1e-7``), then the channel sum."""
    spatial = tuple(range(2, a.ndim - 1))
    if variant == "paper":
        a = _scale(a, spatial + (a.ndim - 1,), 1e-6)
    else:
        a = _scale(a, spatial, 1e-7)
    return a.sum(-1)


def bias_layers(model: Any, x: Array) -> list[tuple[str, tuple, bool]]:
    """``(name, output shape, channels-first?)`` of the model's affine layers whose output
    has the input's spatial axes and a channel axis (FullGrad's spatial bias-gradients)."""
    names = tuple(model.affine_layers)
    if not names:
        return []
    _, caps = base.model_shapes(model, x, names)
    out = []
    for name in names:
        shape = tuple(caps[name].shape)
        fmt = layer_format(model, name)
        if len(shape) == x.ndim and fmt is not None:
            out.append((name, shape, fmt == "channels_first"))
    return out


@refuses_non_finite_maps
def fullgrad(model: ModelLike, x: ArrayLike, targets: Targets = None, *, variant: str = "paper",
             head: str | None = None, chunk_size: int | None = None,
             memory_budget: int | None = None, precision: str | None = None,
             check_finite: bool = True) -> Array:
    """FullGrad (Srinivas & Fleuret, 2019): the input-gradient map plus the bias-gradient
    map of every affine layer with a spatial output.

    Terms: ``|dS/dx * x|`` and, for every convolution or Dense with a bias and every
    BatchNormalization whose output has the input's spatial axes (``model.affine_layers``),
    ``|dS/dz * b|``: ``z`` is the layer's output before its fused activation, ``b`` its
    bias (for BatchNormalization ``beta - mean * gamma / sqrt(var + eps)``). Affine layers
    without spatial axes (a ``Dense`` after ``Flatten``) are part of the decomposition but
    have no map, as in the paper.

    ``variant="paper"`` (default) is the authors' released implementation: each term is
    min-max scaled over all of its values of one map (channels and positions,
    ``eps = 1e-6``), summed over its channels and resized with bilinear interpolation,
    ``align_corners=True``; the terms are added, not rescaled. ``variant="pytorch-grad-cam"``
    is pytorch-grad-cam's ``FullGrad``: each channel of each term is min-max scaled on its
    own (``eps = 1e-7``), resized with OpenCV's bilinear (half-pixel centres) and summed;
    the total is min-max scaled once more, to ``[0, 1]`` per map. (pytorch-grad-cam uses
    only ``Conv2d`` and ``BatchNorm2d`` modules: a model whose ``Dense`` or transposed
    convolution keeps spatial axes has terms there that it would not count.)

    Cost: one forward pass and one backward pass per target, each giving ``dS/dx`` and every
    ``dS/dz`` at once; the constant terms come from the affine layers evaluated on zeros.
    The normalization, channel sums and resizing run on device in the same program.

    Args:
      model: a ``KerasModel`` (``model_import.load_keras``): FullGrad needs the model's biases
        and pre-activations, which a plain function does not expose.
      x, targets, head, chunk_size, memory_budget, precision, check_finite: as in
        :func:`jaxsal.saliency` (one input array ``(N, H, W, C)``, ``(N, C, H, W)`` for a
        channels-first model, or signals ``(N, L, C)`` and volumes alike).
      variant: ``"paper"`` or ``"pytorch-grad-cam"`` (above).
    Returns:
      Maps ``(N, H, W)`` / ``(N, T, H, W)`` with a class axis: non-negative; in ``[0, 1]``
      for ``"pytorch-grad-cam"``.
    """
    if variant not in FULLGRAD_VARIANTS:
        raise ValueError(f"unknown FullGrad variant {variant!r}; expected one of "
                         f"{FULLGRAD_VARIANTS}")
    p = prepare(model, x, targets, head=head, check_finite=check_finite, spatial=True,
                method=fullgrad)
    m, spec, info = p.model, p.spec, p.info
    if not (hasattr(m, "affine_layers") and hasattr(m, "biases")):
        raise TypeError(f"fullgrad needs a model that exposes its biases and pre-activations "
                        f"(a KerasModel from model_import.load_keras), got {type(m).__name__}")
    layers = bias_layers(m, p.x)
    size = p.spatial_shape
    fb = base.forward_bytes(m, p.x)
    nb = base.batch_chunk(p.n, fb // p.n, memory_budget)
    chunk = base.chunk_for(spec.num, fb * nb // p.n, chunk_size, memory_budget, rows=nb)
    align = variant == "paper"
    axes = tuple(range(-len(size), 0))
    x_cf = p.channels_first  # (the program closes over this, not over `p` and its arrays)

    def build():
        def run(params, x, ids):
            b = m.biases(params, x)

            def fwd(primal):
                return (*run_model(m, params, primal[0], spec.layers, perturb_pre=primal[1]),
                        None)

            # (varying as x under jax.shard_map: base.zeros_varying_as)
            zeros = {name: base.zeros_varying_as(x, (x.shape[0],) + shape[1:], x.dtype)
                     for name, shape, _ in layers}
            _, _, pull = target_pullback(fwd, (x, zeros), spec, info, ids)

            def chunk_fn(ts):
                gx, gz = jax.vmap(pull, out_axes=1)(ts)
                total = _term(to_channels_last(jnp.abs(gx * x[:, None]), x_cf, 2), variant)
                for name, _, cf in layers:
                    t = _term(to_channels_last(jnp.abs(gz[name] * b[name][:, None]), cf, 2),
                              variant)
                    total = total + upsample_linear(t, size, axes, align_corners=align)
                if variant == "pytorch-grad-cam":
                    total = _scale(total, tuple(range(2, total.ndim)), 1e-7)
                return total

            out = base.map_chunks(chunk_fn, spec.num, chunk)
            return out if spec.class_axis else out[:, 0]

        return run

    key = ("fullgrad", p.key, spec, info, variant, tuple(layers), chunk, nb)
    return base.compiled(key, lambda: base.split_batch(build(), nb),
                         precision)(p.params, p.x, p.ids)


#: explain_to_file refuses a job over several inputs before any work (see job_inputs.py).
fullgrad.one_input = "it adds the bias gradients upsampled to one input"
