"""Image augmentation and preprocessing layers (Keras 3 and tf.keras 2), as they compute at
inference: ``model.predict``, ``model(x, training=False)``, which is what attribution explains.

Almost all of them are the identity at inference. Each one registered as such was checked
against Keras 3.15.1 or tf_keras 2.21: ``layer(x, training=False)`` on batched and unbatched
images, channels_last and (Keras 3) channels_first, values in [0, 1] and [0, 255] with the
matching ``value_range``; and the ``predict`` of a model holding it, saved as ``.keras`` and
``.h5`` and loaded back wherever Keras can write and read such a file. Keras 3 applies them
when a model is called as ``model(x)`` without ``training=``: their ``call`` defaults to
``training=True``. The others:

* ``AutoContrast`` rescales every image to span its whole ``value_range``, at training and at
  inference alike.
* ``RandomCrop``: tf.keras 2 crops the largest centred window of the target's aspect ratio
  and resizes it bilinearly to ``(height, width)`` (``smart_resize``). Keras 3.15 returns its
  input unchanged at inference, although the layer declares the cropped shape (an open Keras
  issue, keras-team/keras#21868), so a Keras 3 file gets the identity, as Keras runs it.
* ``Pipeline`` (Keras 3) applies its layers in order: it becomes a nested model whose layers
  are converted one by one (their weights are read as a nested model's).

``ContrastLimitedAdaptiveHistogramEqualization`` has no converter. Keras applies it at
inference too, but its output is a piecewise-constant function of the pixels (it looks up
histograms of integer bins), so its input gradient is zero almost everywhere and every
gradient attribution through it would be zero; the importer refuses it instead.
"""

from __future__ import annotations

import jax.numpy as jnp

from model_import._layers.image import aspect_crop_box, resize_axes
from model_import._layers.pooling import reduce_max, reduce_min
from model_import._layers.registry import LayerImpl, register_layer


def _identity(params, x, *args, rt, **kwargs):
    return x


#: The Keras 3 layers among those that cast the images to their compute dtype (float32) even
#: at inference, before ``if training:``; every Keras 3 release does so from the layer's
#: first release (checked in the sources of 3.0 to 3.15.1). The others return a uint8 image as
#: uint8. tf.keras 2's casts differ from release to release and are not followed (README).
_CAST_AT_INFERENCE = frozenset({
    "RandomFlip", "RandomRotation", "RandomZoom", "RandomTranslation", "RandAugment",
    "AugMix", "CutMix", "RandomElasticTransform", "RandomErasing", "RandomGaussianBlur",
    "RandomPerspective", "RandomSharpness", "RandomShear", "Solarization"})


def _cast_identity(params, x, *args, rt, **kwargs):
    """The identity, but an integer image (``uint8``) becomes float32, as Keras casts it."""
    return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.float32)


@register_layer(
    # Keras 3 and tf.keras 2
    "RandomFlip", "RandomRotation", "RandomZoom", "RandomTranslation", "RandomContrast",
    "RandomBrightness",
    # tf.keras 2 only (``experimental.preprocessing`` ones save the same class names)
    "RandomHeight", "RandomWidth",
    # Keras 3 only. Equalization too: Keras 3.15 equalizes only when training (its docstring
    # says otherwise); MaxNumBoundingBoxes changes bounding boxes, never images.
    "AugMix", "CutMix", "MixUp", "RandAugment", "RandomColorDegeneration",
    "RandomColorJitter", "RandomElasticTransform", "RandomErasing", "RandomGaussianBlur",
    "RandomGrayscale", "RandomHue", "RandomInvert", "RandomPerspective", "RandomPosterization",
    "RandomSaturation", "RandomSharpness", "RandomShear", "Solarization", "Equalization",
    "MaxNumBoundingBoxes")
def _inference_identity(config, ctx):
    if ctx.keras_major >= 3 and ctx.class_name in _CAST_AT_INFERENCE:
        return LayerImpl(call=_cast_identity)
    return LayerImpl(call=_identity)


def _value_range(config, ctx) -> tuple[float, float]:
    vr = config.get("value_range", (0, 255))
    if not isinstance(vr, (list, tuple)) or len(vr) != 2:
        raise ctx.error(f"value_range must be two numbers, got {vr!r}")
    lo, hi = sorted(float(v) for v in vr)
    return lo, hi


@register_layer("AutoContrast")
def _auto_contrast(config, ctx):
    """Each image is mapped from ``value_range`` to [0, 255], stretched linearly so that its
    minimum becomes 0 and its maximum 255, clipped to [0, 255] and mapped back. Keras takes
    the minimum and maximum over axes 1 and 2 of the batch whatever the data format: height
    and width (per channel) in channels_last, channels and height (per column) in
    channels_first. A slice whose values are all equal (Keras divides by zero there and keeps
    the input where the result is NaN) is returned unchanged, with a finite gradient. The
    minimum and maximum are :func:`reduce_min`/:func:`reduce_max`: ``jnp.min``'s values and
    derivative, whose term XLA computing the image's producer twice cannot drop. An integer
    image (``uint8``) is cast to float32 first, and the result is float32, as in Keras."""
    lo, hi = _value_range(config, ctx)
    same_range = (lo, hi) == (0.0, 255.0)  # Keras skips the range mapping then

    def call(params, x, *, rt):
        if x.ndim not in (3, 4):
            raise ValueError(f"AutoContrast expects an image (rank 3) or a batch of images "
                             f"(rank 4), got shape {x.shape}")
        if not jnp.issubdtype(x.dtype, jnp.floating):
            x = x.astype(jnp.float32)  # Keras: an integer image is cast to float32 first
        axes = (x.ndim - 3, x.ndim - 2)  # an unbatched image is a batch of one in Keras
        v = x if same_range else (x - lo) / (hi - lo) * 255.0
        low = reduce_min(v, axis=axes, keepdims=True)  # jnp.min's derivative, kept whole
        high = reduce_max(v, axis=axes, keepdims=True)
        flat = high == low
        scale = 255.0 / jnp.where(flat, 1.0, high - low)
        y = jnp.clip(v * scale + (-low * scale), 0.0, 255.0)
        if not same_range:
            y = y / 255.0 * (hi - lo) + lo
        return jnp.where(flat | jnp.isnan(y), x, y)

    return LayerImpl(call=call)


@register_layer("RandomCrop")
def _random_crop(config, ctx):
    height, width = int(config["height"]), int(config["width"])
    if ctx.keras_major >= 3:
        # Keras 3.15 leaves the image as it is at inference (see the module docstring)
        return LayerImpl(call=_identity)

    def call(params, x, *, rt):
        # tf.keras 2: the centred window of the target's aspect ratio, resized bilinearly
        axes = (x.ndim - 3, x.ndim - 2)  # channels_last, batched or not
        top, left, h, w = aspect_crop_box(x.shape[axes[0]], x.shape[axes[1]], height, width)
        idx = [slice(None)] * x.ndim
        idx[axes[0]], idx[axes[1]] = slice(top, top + h), slice(left, left + w)
        return resize_axes(x[tuple(idx)], axes, (height, width), "bilinear", keep_int=False)

    return LayerImpl(call=call, data_format="channels_last")


@register_layer("Pipeline")
def _pipeline(config, ctx):
    """Keras 3's ``Pipeline(layers)``: its layers one after the other, built as a nested
    Sequential model named like the pipeline. Keras keeps the sublayers' weights as it keeps
    a nested model's (``.keras``: ``layers/pipeline/layers/<layer>/vars``; ``.h5``: one group
    whose weight names carry the sublayers' names), so they load the same way. Its layers
    find converters as the model's own do (``custom_layers=``, then the registry)."""
    from model_import._graph import GraphBuilder  # _graph imports this package

    sub_layers = config.get("layers")
    if not isinstance(sub_layers, list) or not all(
            isinstance(lc, dict) and "class_name" in lc for lc in sub_layers):
        raise ctx.error(f"expected a list of serialized layers under 'layers', got "
                        f"{str(sub_layers)[:200]}")
    if not sub_layers:
        return LayerImpl(call=_identity)
    builder = GraphBuilder(keras_version=ctx.keras_version, path=ctx.path,
                           custom_layers=ctx.custom_layers, keras_backend=ctx.keras_backend)
    sub = builder.build({"class_name": "Sequential",
                         "config": {"name": ctx.layer_name, "layers": list(sub_layers)}})
    return LayerImpl(call=None, subgraph=sub, n_weights=None)
