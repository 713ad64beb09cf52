"""Looking inside a model: first-layer filters, feature maps, and image grids (pure arrays).

Plotting lives elsewhere; these functions return arrays ready for ``imshow`` or a PNG writer.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxsal._src import base, ints
from jaxsal._src.base import Inputs, ModelLike
from jaxsal._src.validate import _fits, check_input, layer_format, narrow

Array = jax.Array
ArrayLike = jax.typing.ArrayLike

NORMALIZE = ("filter", "all", None)


def _minmax(a: Array, axes: tuple) -> Array:
    lo = jnp.min(a, axis=axes, keepdims=True)
    hi = jnp.max(a, axis=axes, keepdims=True)
    return (a - lo) / jnp.maximum(hi - lo, 1e-12)


#: Keras classes whose 4-D kernel is ``(kh, kw, filters, C_in)``: the output axis before the
#: input axis, the reverse of a ``Conv2D`` (``(kh, kw, C_in, filters)``)
TRANSPOSED_CONVS = ("Conv2DTranspose", "Convolution2DTranspose")


def conv_kernel(info: Any) -> np.ndarray | None:
    """The filters of a 2-D convolution layer (a :class:`model_import.LayerInfo`) as one
    ``(kh, kw, C_in, C_out)`` kernel in ``Conv2D``'s layout, or ``None`` if it has none.

    ``Conv2D`` (and grouped ones: ``C_in`` is the group's width): its kernel.
    ``Conv2DTranspose``: its ``(kh, kw, filters, C_in)`` kernel with the last two axes
    swapped. ``DepthwiseConv2D``: one single-channel filter per output channel
    (``C_in * depth_multiplier`` of them, in Keras's output order). ``SeparableConv2D``: the
    ``Conv2D`` kernel it equals, the depthwise filters mixed by the pointwise weights.
    Conv1D/3D and their transposes (3-D and 5-D kernels) give ``None``."""
    params = info.params if hasattr(info.params, "get") else {}
    k = params.get("kernel")
    if k is not None and np.ndim(k) == 4:
        k = np.asarray(k)
        return np.swapaxes(k, 2, 3) if info.class_name in TRANSPOSED_CONVS else k
    dw = params.get("depthwise_kernel")
    if dw is None or np.ndim(dw) != 4:
        return None
    dw = np.asarray(dw)  # the importer's grouped layout: (kh, kw, 1, C_in * multiplier)
    pw = params.get("pointwise_kernel")
    if pw is None:
        return dw
    kh, kw, _, cm = dw.shape
    pw = np.asarray(pw).reshape(cm, -1)
    mult = int(info.config.get("depth_multiplier", 1) or 1)
    cin = cm // mult
    return np.einsum("hwcm,cmo->hwco", dw.reshape(kh, kw, cin, mult),
                     pw.reshape(cin, mult, -1))


def _need_layers(model: Any, what: str) -> None:
    if not (hasattr(model, "layer") and hasattr(model, "layers")):
        own = ("pass it as it is, plot.filters(k)" if what == "filters" else
               "jaxsal.normalize(jnp.transpose(k, (3, 0, 1, 2)), axis=(1, 2, 3)) gives the "
               "images of the default normalize='filter', and jnp.transpose(k, (3, 0, 1, 2)) "
               "gives those of normalize=None")
        raise TypeError(f"{what}: expected an imported Keras model (model_import.load_keras"
                        f"(path)), whose layers hold their kernels; got {type(model).__name__}. "
                        f"For a kernel array k (kh, kw, C_in, C_out) of your own, {own}")


def find_conv_kernel(model: Any, layer: str | None, what: str) -> tuple[str, np.ndarray]:
    """``(layer name, kernel (kh, kw, C_in, C_out))`` of ``layer`` (:func:`conv_kernel`), or
    of the model's first 2-D convolution when ``layer`` is ``None``."""
    _need_layers(model, what)
    if layer is None:
        for info in model.layers:
            k = conv_kernel(info)
            if k is not None:
                return info.name, k
        raise ValueError(f"{what}: the model has no 2-D convolution layer (Conv2D, "
                         "Conv2DTranspose, DepthwiseConv2D, SeparableConv2D); pass layer=...")
    info = model.layer(layer)
    k = conv_kernel(info)
    if k is None:
        params = info.params if hasattr(info.params, "get") else {}
        shapes = {n: tuple(np.shape(v)) for n, v in params.items()}
        raise ValueError(f"{what}: layer {layer!r} ({info.class_name}) has no 2-D convolution "
                         f"kernel (its weights: {shapes or 'none'}); expected a Conv2D, "
                         "Conv2DTranspose, DepthwiseConv2D or SeparableConv2D layer, such as "
                         "the first one")
    return info.name, k


def filter_images(model: ModelLike, layer: str | None = None, *,
                  normalize: str | None = "filter") -> Array:
    """The kernels of a convolution layer as images (Krizhevsky et al. 2012, Fig. 3).

    Args:
      model: a :class:`model_import.KerasModel`.
      layer: a 2-D convolution layer; ``None`` takes the first such layer of the model. Each
        kernel is read in its own Keras layout as ``Conv2D``'s ``(kh, kw, C_in, C_out)``:
        ``Conv2D`` (grouped too: ``C_in`` is the group's width) as it is;
        ``Conv2DTranspose``'s ``(kh, kw, filters, C_in)`` with its last two axes swapped;
        ``DepthwiseConv2D`` as one single-channel filter per output channel (``C_in *
        depth_multiplier`` of them, in Keras's output order); ``SeparableConv2D`` as the
        ``Conv2D`` kernel it equals (the depthwise filters mixed by the pointwise weights).
        1-D and 3-D convolutions are refused.
      normalize: ``"filter"`` min-max scales each filter to [0, 1], ``"all"`` scales all
        filters together (their relative strength is kept), ``None`` returns raw weights.
    Returns:
      ``(C_out, kh, kw, C_in)``: one image per filter (RGB for a colour model's first layer).
    """
    if normalize not in NORMALIZE:
        raise ValueError(f"normalize: expected one of {NORMALIZE}, got {normalize!r}")
    _, k = find_conv_kernel(model, layer, "filter_images")
    w = jnp.transpose(jnp.asarray(k, jnp.float32), (3, 0, 1, 2))
    if normalize == "filter":
        return _minmax(w, (1, 2, 3))
    if normalize == "all":
        return _minmax(w, (0, 1, 2, 3))
    return w


def _one_example(model: Any, x: Any) -> bool:
    """Whether ``x`` is one example of ``model``'s inputs (every input without its batch
    axis: an ``(H, W, C)`` image; for a model of several inputs, a list, tuple or dict of
    them) rather than a batch."""
    names = list(getattr(model, "input_names", None) or [])
    shapes = getattr(model, "input_shapes", None)
    if isinstance(x, (list, tuple, dict)) and shapes and len(shapes) > 1:
        items = ([x.get(n) for n in names] if isinstance(x, dict) and set(x) == set(names)
                 else list(x) if not isinstance(x, dict) else [])
        if len(items) != len(shapes):
            return False  # not the model's inputs: check_input says what it takes
        return all(isinstance(s, tuple) and np.ndim(a) == len(s) and _fits(np.shape(a), s)
                   for a, s in zip(items, shapes))
    shape = getattr(model, "input_shape", None)
    if isinstance(x, (list, tuple, dict)):
        return False
    return isinstance(shape, tuple) and np.ndim(x) == len(shape) and _fits(np.shape(x), shape)


def layer_maps(model: Any, x: ArrayLike, layer: str, *,
               pre_activation: bool = False) -> tuple[Array, bool]:
    """``(maps (N, K, h, w), single)``: the activations of ``layer`` for ``x`` (a batch, or
    one input: then ``single``), channels first whatever the layer's layout;
    ``pre_activation``: its values before its fused activation."""
    if base.is_function_pair(model):
        model = base.as_model(model)  # (fn, params), as every method takes it
    if not hasattr(model, "apply") or not hasattr(model, "params"):
        raise TypeError(f"feature_maps: expected a model (model_import.load_keras(path), "
                        f"jaxsal.FunctionModel or (fn, params)), got {type(model).__name__}")
    if not isinstance(pre_activation, (bool, np.bool_)):
        raise TypeError(f"feature_maps: expected pre_activation as a bool, got "
                        f"{pre_activation!r}")
    if pre_activation:
        if not hasattr(model, "pre_activation_layer"):
            raise ValueError(f"feature_maps: pre_activation=True needs a model that captures "
                             f"pre-activation values (model_import.KerasModel); this "
                             f"{type(model).__name__} does not")
        model.pre_activation_layer(layer)  # refuses activation layers and nested models
    single = _one_example(model, x)
    if single:
        x = jax.tree.map(lambda a: jnp.asarray(a)[None], x)
    # the checks of every method: floating inputs (integer ones where the model reads codes),
    # the model's shape (with the fix in the message), finite values; a list, tuple or dict
    # of arrays for a model of several inputs
    x = check_input(model, x, allow_int=True, multi_input=True)
    if hasattr(model, "layer"):
        info = model.layer(layer)
        shape = info.output_shape
        if shape is not None and (not isinstance(shape, tuple) or len(shape) != 3):
            raise ValueError(f"feature_maps: layer {layer!r} has output shape {shape}; expected "
                             "a spatial layer (h, w, channels) such as a Conv2D or pooling "
                             "layer")
    if pre_activation or hasattr(model, "intermediates"):  # a KerasModel: one program per
        # function, layer and kind (the weights passed in), reused by later calls
        def build():
            if pre_activation:
                return lambda p, x: model.apply(p, x, capture_pre=[layer])[2][layer]
            return lambda p, x: model.apply(p, x, capture=[layer])[1][layer]

        a = base.compiled(("feature_maps", base.function_key(model), layer,
                           bool(pre_activation)), build)(model.params, x)
    else:  # a FunctionModel: its features= output, by the layer name it was given
        a = model.apply(model.params, x, capture=[layer])[1][layer]
    if a.ndim != 4:
        raise ValueError(f"feature_maps: layer {layer!r} gives activations of shape "
                         f"{tuple(a.shape)}; expected a spatial layer (N, h, w, channels) "
                         "such as a Conv2D or pooling layer")
    if layer_format(model, layer) != "channels_first":
        a = jnp.transpose(a, (0, 3, 1, 2))
    return a, single


def feature_maps(model: ModelLike, x: Inputs, layer: str, *, normalize: bool = False,
                 pre_activation: bool = False) -> Array:
    """The activations of ``layer`` for the inputs ``x``, one 2-D map per channel.

    Args:
      model: a :class:`model_import.KerasModel` (or a :class:`~jaxsal.FunctionModel` with
        ``features=``: ``layer`` is its layer name).
      x: ``(N, H, W, C)`` inputs (or one ``(H, W, C)`` input), in the model's own layout
        (``(N, C, H, W)`` for a channels-first model); for a model of several inputs, a
        list in their order, a tuple, or a dict keyed by their names (a batch or one example
        of each), as the methods take them.
      layer: a layer with spatial output (``(h, w, K)``, or ``(K, h, w)`` channels-first).
      normalize: min-max scale every map to [0, 1] on its own.
      pre_activation: the layer's values before its fused activation (a ``Conv2D(...,
        activation="relu")`` before its ReLU: the negative part a ReLU hides), as
        ``model.apply(..., capture_pre=[layer])``; a layer without a fused activation gives
        its output, an ``Activation``/``ReLU`` layer is refused (name the layer before it).
    Returns:
      ``(N, K, h, w)`` (``(K, h, w)`` for a single input), for channels-last and
      channels-first layers alike: ``image_grid(maps[0])`` shows all channels of the first
      input.
    """
    if not isinstance(normalize, (bool, np.bool_)):  # "all" read as True: per map
        raise TypeError(f"feature_maps: expected normalize as a bool (True: min-max scale "
                        f"every map to [0, 1] on its own), got {normalize!r}; for one scale "
                        "over all maps, scale the result: jaxsal.normalize(maps, axis=None)")
    maps, single = layer_maps(model, x, layer, pre_activation=pre_activation)
    if normalize:
        maps = _minmax(maps, (2, 3))
    return maps[0] if single else maps


def image_grid(images: ArrayLike, *, ncols: int | None = None, pad: int = 1,
               pad_value: float = 0.0, channels_first: bool | None = None) -> Array:
    """Tile images into one image (pure array function).

    Args:
      images: ``(T, H, W)`` or ``(T, H, W, C)``.
      ncols: images per row (default ``ceil(sqrt(T))``), at most ``T``: more columns than
        images give one row of the ``T`` images.
      pad: pixels between images and around the border.
      pad_value: value of the padding, one the images' dtype holds (integer images: an
        integer in its range, e.g. 255 for uint8; a ``ValueError`` otherwise).
      channels_first: ``True``: the images are ``(T, C, H, W)``, as :func:`jaxsal.maximize`
        returns them for a channels-first model (the grid is channels-last all the same).
        ``False``: they are ``(T, H, W, C)``, whatever their sizes. ``None`` (default):
        ``(T, H, W, C)``, but 4-D images whose axis 1 is 1, 3 or 4 long and whose last axis
        is not (``(T, 3, 32, 32)``) are refused as likely channels-first, since a grid of
        them read channels-last would be wrong without a word; pass ``True`` or ``False``.
    Returns:
      ``(rows * (H + pad) + pad, cols * (W + pad) + pad[, C])``, where
      ``cols = min(ncols, T)`` and ``rows = ceil(T / cols)``.
    """
    base.refuse_explicit_tree(images, "images")  # (sharded over Explicit axes: JAX raised)
    raw = base.native(images)
    if isinstance(raw, (list, tuple)):  # (Python ints: int64 to NumPy)
        try:
            raw = np.asarray(raw)
        except (TypeError, ValueError):
            pass  # (ragged: jnp.asarray refuses it)
    if isinstance(raw, np.ndarray) and raw.dtype.kind in "iu":
        # int64 (uint64) images as JAX takes them without x64, int32 (uint32): values beyond
        # that range refused, where they wrapped around (2**40 tiled as 0)
        raw = narrow(raw, "image_grid: the images", check_finite=False, holds="hold",
                     int_fix="scale them into that range (e.g. to 0..255), convert them "
                             "(images.astype(np.float32), tiled at float32's resolution)")
    a = jnp.asarray(raw)
    if channels_first is not None and not isinstance(channels_first, (bool, np.bool_)):
        raise TypeError(f"image_grid: expected channels_first as a bool or None, got "
                        f"{channels_first!r}")
    if a.ndim == 5:  # maximize(images_per_unit=K): K images per unit
        k = a.shape[1]
        raise ValueError(f"image_grid: expected (T, H, W) or (T, H, W, C) images, got shape "
                         f"{a.shape}, the (T, K, ...) images of maximize(images_per_unit={k}). "
                         f"Flatten the units' images, a row per unit: image_grid(images.reshape("
                         f"-1, *images.shape[2:]), ncols={k}"
                         + (", channels_first=True)" if channels_first else ")"))
    if channels_first:
        if a.ndim != 4:
            raise ValueError(f"image_grid: channels_first=True: expected (T, C, H, W) images, "
                             f"got shape {a.shape}")
        a = jnp.moveaxis(a, 1, -1)
    elif (channels_first is None and a.ndim == 4 and a.shape[1] in (1, 3, 4)
          and a.shape[-1] not in (1, 3, 4)
          and 0 not in a.shape):  # (an empty axis in either layout: refused as such below)
        raise ValueError(f"image_grid: images of shape {a.shape} look channels-first "
                         f"(T, C, H, W) (as maximize returns for a channels-first model) rather "
                         f"than (T, H, W, C) images with {a.shape[-1]} channels; pass "
                         f"channels_first=False if they are channels-last ({a.shape[0]} "
                         f"images {a.shape[1]} pixels high), or channels_first=True if they "
                         "are channels-first (or np.moveaxis(images, 1, -1))")
    if a.ndim not in (3, 4):
        raise ValueError(f"image_grid: expected (T, H, W) or (T, H, W, C) images, got shape "
                         f"{a.shape}")
    squeeze = a.ndim == 3
    if squeeze:
        a = a[..., None]
    t, h, w, c = a.shape
    if t == 0:
        raise ValueError("image_grid: expected at least one image, got 0")
    if not (h and w and c):  # (else a grid of the padding alone, without a word)
        raise ValueError(f"image_grid: expected images of at least one pixel"
                         f"{' and one channel' if not c else ''}, got shape "
                         f"{tuple(np.shape(images))} ({'H' if not h else 'W' if not w else 'C'}"
                         " = 0); pass the images themselves (an empty crop or resize left "
                         "none)")
    if ncols is None:
        ncols = int(np.ceil(np.sqrt(t)))
    ncols = ints.check_int(ncols, "ncols", where="image_grid", kind="images per row",
                           example="5")
    pad = ints.check_int(pad, "pad", low=0, where="image_grid", kind="pixels", example="2")
    if jnp.issubdtype(a.dtype, jnp.integer) or a.dtype == jnp.bool_:
        # a padding value the images' dtype cannot hold was cast into it: 300 -> 44 and
        # 0.5 (a float image's gray) -> 0 for uint8 images, silently
        lo, hi = ((0, 1) if a.dtype == jnp.bool_
                  else (int(np.iinfo(a.dtype).min), int(np.iinfo(a.dtype).max)))
        try:
            ok = float(pad_value) == int(pad_value) and lo <= int(pad_value) <= hi
        except (TypeError, ValueError, OverflowError):
            ok = False
        if not ok:
            raise ValueError(f"image_grid: expected pad_value as an integer in {lo}..{hi} "
                             f"for images of dtype {a.dtype}, got {pad_value!r}; "
                             "e.g. pad_value=255 (white for 0..255 images), or pass float "
                             "images (images / 255) for pad_value=1.0")
    ncols = min(int(ncols), t)
    rows = -(-t // ncols)
    a = jnp.concatenate([a, jnp.full((rows * ncols - t, h, w, c), pad_value, a.dtype)])
    a = jnp.pad(a, ((0, 0), (pad, 0), (pad, 0), (0, 0)), constant_values=pad_value)
    a = a.reshape(rows, ncols, h + pad, w + pad, c).transpose(0, 2, 1, 3, 4)
    a = a.reshape(rows * (h + pad), ncols * (w + pad), c)
    a = jnp.pad(a, ((0, pad), (0, pad), (0, 0)), constant_values=pad_value)
    return a[..., 0] if squeeze else a
