"""Looking inside a model: first-layer filters, feature maps, and image grids (pure arrays).

Plotting lives elsewhere; these functions return arrays ready for ``imshow`` or a PNG writer.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
ArrayLike = jax.typing.ArrayLike

NORMALIZE = ("filter", "all", None)


def _minmax(a: Array, axes: tuple) -> Array:
    lo = jnp.min(a, axis=axes, keepdims=True)
    hi = jnp.max(a, axis=axes, keepdims=True)
    return (a - lo) / jnp.maximum(hi - lo, 1e-12)


def filter_images(model: Any, layer: str | None = None, *,
                  normalize: str | None = "filter") -> Array:
    """The kernels of a convolution layer as images (Krizhevsky et al. 2012, Fig. 3).

    Args:
      model: a :class:`model_import.KerasModel`.
      layer: a layer with a 4-D ``kernel`` ``(kh, kw, C_in, C_out)``; ``None`` takes the first
        such layer of the model (its first convolution).
      normalize: ``"filter"`` min-max scales each filter to [0, 1], ``"all"`` scales all
        filters together (their relative strength is kept), ``None`` returns raw weights.
    Returns:
      ``(C_out, kh, kw, C_in)``: one image per filter (RGB for a colour model's first layer).
    """
    if normalize not in NORMALIZE:
        raise ValueError(f"normalize: expected one of {NORMALIZE}, got {normalize!r}")
    if layer is None:
        for info in model.layers:
            k = info.params.get("kernel") if hasattr(info.params, "get") else None
            if k is not None and np.ndim(k) == 4:
                layer = info.name
                break
        else:
            raise ValueError("filter_images: the model has no layer with a 4-D kernel "
                             "(Conv2D); pass layer=...")
    info = model.layer(layer)
    k = info.params.get("kernel") if hasattr(info.params, "get") else None
    if k is None or np.ndim(k) != 4:
        shape = None if k is None else tuple(np.shape(k))
        raise ValueError(f"filter_images: layer {layer!r} ({info.class_name}) has no 4-D kernel "
                         f"(got {shape}); expected a Conv2D layer such as the first one")
    w = jnp.transpose(jnp.asarray(k, jnp.float32), (3, 0, 1, 2))
    if normalize == "filter":
        return _minmax(w, (1, 2, 3))
    if normalize == "all":
        return _minmax(w, (0, 1, 2, 3))
    return w


def feature_maps(model: Any, x: ArrayLike, layer: str, *, normalize: bool = False) -> Array:
    """The activations of ``layer`` for the inputs ``x``, one 2-D map per channel.

    Args:
      model: a :class:`model_import.KerasModel`.
      x: ``(N, H, W, C)`` inputs (or one ``(H, W, C)`` input).
      layer: a layer with spatial output ``(h, w, K)``.
      normalize: min-max scale every map to [0, 1] on its own.
    Returns:
      ``(N, K, h, w)`` (``(K, h, w)`` for a single input): ``image_grid(maps[0])`` shows all
      channels of the first input.
    """
    x = jnp.asarray(x)
    single = model.input_shape is not None and x.ndim == len(model.input_shape)
    if single:
        x = x[None]
    info = model.layer(layer)
    shape = info.output_shape
    if shape is not None and (not isinstance(shape, tuple) or len(shape) != 3):
        raise ValueError(f"feature_maps: layer {layer!r} has output shape {shape}; expected a "
                         "spatial layer (h, w, channels) such as a Conv2D or pooling layer")
    a = model.intermediates(x, [layer])[layer]
    maps = jnp.transpose(a, (0, 3, 1, 2))
    if normalize:
        maps = _minmax(maps, (2, 3))
    return maps[0] if single else maps


def image_grid(images: ArrayLike, *, ncols: int | None = None, pad: int = 1,
               pad_value: float = 0.0) -> Array:
    """Tile images into one image (pure array function).

    Args:
      images: ``(T, H, W)`` or ``(T, H, W, C)``.
      ncols: images per row (default ``ceil(sqrt(T))``).
      pad: pixels between images and around the border.
      pad_value: value of the padding.
    Returns:
      ``(rows * (H + pad) + pad, ncols * (W + pad) + pad[, C])``.
    """
    a = jnp.asarray(images)
    if a.ndim not in (3, 4):
        raise ValueError(f"image_grid: expected (T, H, W) or (T, H, W, C) images, got shape "
                         f"{a.shape}")
    squeeze = a.ndim == 3
    if squeeze:
        a = a[..., None]
    t, h, w, c = a.shape
    if t == 0:
        raise ValueError("image_grid: expected at least one image, got 0")
    if ncols is None:
        ncols = int(np.ceil(np.sqrt(t)))
    if not isinstance(ncols, (int, np.integer)) or ncols < 1:
        raise ValueError(f"image_grid: expected ncols >= 1, got {ncols!r}")
    if pad < 0:
        raise ValueError(f"image_grid: expected pad >= 0, got {pad}")
    ncols = min(int(ncols), t)
    rows = -(-t // ncols)
    a = jnp.concatenate([a, jnp.full((rows * ncols - t, h, w, c), pad_value, a.dtype)])
    a = jnp.pad(a, ((0, 0), (pad, 0), (pad, 0), (0, 0)), constant_values=pad_value)
    a = a.reshape(rows, ncols, h + pad, w + pad, c).transpose(0, 2, 1, 3, 4)
    a = a.reshape(rows * (h + pad), ncols * (w + pad), c)
    a = jnp.pad(a, ((0, pad), (0, pad), (0, 0)), constant_values=pad_value)
    return a[..., 0] if squeeze else a
