"""Image preprocessing layers that change the image: Resizing, CenterCrop (Keras 3 semantics,
channels_last and channels_first).

Resizing is written as one small matrix per resized axis, built in NumPy when the function
is traced (the sizes are static) and applied with ``tensordot``: Keras resizes by
``scale_and_translate`` (half-pixel centres, weights normalized to sum to one, antialiasing
only when the layer's ``antialias`` is true), which is exactly a linear map per axis; so is
"area" (TensorFlow's area average). The "nearest" rule is a gather. All are differentiable,
so saliency flows through them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from model_import._layers.registry import LayerImpl, register_layer


def _triangle(x):
    return np.maximum(0.0, 1.0 - x)


def keys_cubic(x, a=-0.5):
    # Keys' cubic convolution kernel; a = -0.5 is what Keras, JAX and TF call "bicubic",
    # PyTorch's bicubic takes a = -0.75.
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    far = ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


def _lanczos(radius):
    def kernel(x):
        # sinc(x) * sinc(x / radius) on |x| <= radius; Keras takes the value 1 below 1e-3.
        with np.errstate(divide="ignore", invalid="ignore"):
            y = radius * np.sin(np.pi * x) * np.sin(np.pi * x / radius) / (np.pi * x) ** 2
        return np.where(x > radius, 0.0, np.where(x > 1e-3, y, 1.0))
    return kernel


_KERNELS = {"bilinear": _triangle, "bicubic": keys_cubic, "lanczos3": _lanczos(3.0),
            "lanczos5": _lanczos(5.0)}
INTERPOLATIONS = ("nearest", *_KERNELS, "area")
#: what :meth:`ConvertContext.backend_dependent` says of bicubic resizing
BICUBIC_BACKENDS = ("bicubic resizing differs on Keras's TensorFlow backend (a kernel table "
                    "of 1024 steps: up to about 1e-3 of the output scale) and on PyTorch "
                    "(a = -0.75, border pixels repeated: up to about 1e-1)")


def _area_matrix(n_in: int, n_out: int) -> np.ndarray:
    # Output j averages the input over [j * s, (j + 1) * s), s = n_in / n_out, each input
    # pixel i weighted by its overlap with that interval (TensorFlow's ResizeArea, which
    # Keras 3 on TensorFlow and tf.keras 2 call for "area"; antialias does not apply).
    s = n_in / n_out
    lo = np.arange(n_out, dtype=np.float64) * s
    i = np.arange(n_in, dtype=np.float64)[:, None]
    overlap = np.minimum(i + 1.0, lo + s) - np.maximum(i, lo)
    return (np.maximum(overlap, 0.0) / s).astype(np.float32)


def _sample32(n_in: int, n_out: int) -> np.ndarray:
    # the half-pixel sample positions in float32, as TensorFlow's and PyTorch's kernels
    return ((np.arange(n_out, dtype=np.float32) + np.float32(0.5))
            * (np.float32(n_in) / np.float32(n_out)) - np.float32(0.5))


def _torch_bicubic_matrix(n_in: int, n_out: int) -> np.ndarray:
    # PyTorch's bicubic upsampling (align_corners=False, no antialiasing): four taps
    # floor(s) - 1 .. floor(s) + 2 around the sample s, Keys' kernel with a = -0.75, taps
    # outside the image reading the border pixel (their weights add up there); no
    # normalization.
    s = _sample32(n_in, n_out).astype(np.float64)
    base = np.floor(s)
    w = np.zeros((n_in, n_out), np.float64)
    for k in (-1, 0, 1, 2):
        rows = np.clip(base + k, 0, n_in - 1).astype(np.int64)
        np.add.at(w, (rows, np.arange(n_out)), keys_cubic(np.abs(s - base - k), a=-0.75))
    return w.astype(np.float32)


def resize_matrix(n_in: int, n_out: int, interpolation: str, antialias: bool,
                  backend: str | None = None) -> np.ndarray:
    """``(n_in, n_out)`` float32 weights of Keras's resize along one axis (not "nearest").

    Output sample ``j`` sits at input coordinate ``(j + 0.5) * n_in / n_out - 0.5``; input
    ``i`` weighs ``kernel(|sample - i| / width)`` with ``width = max(n_in / n_out, 1)`` when
    antialiasing, else 1; each column is normalized to sum to one (computed in float64, as
    Keras's NumPy backend does). "area" is the exact area average (:func:`_area_matrix`).
    That is Keras on JAX and NumPy (``backend=None``).

    ``backend="tensorflow"`` changes bicubic without antialiasing to TensorFlow's
    ``ResizeBicubic`` (tf.keras 2, Keras 3 on TensorFlow): the sample in float32 and the
    kernel read from a table of 1024 steps, i.e. at the sample's fractional part rounded
    to a multiple of 1/1024 (up to about 1e-3 of the output scale from the exact kernel).
    ``backend="torch"`` changes it to PyTorch's bicubic (:func:`_torch_bicubic_matrix`;
    up to about 1e-1 of the output scale from JAX's).
    """
    if interpolation == "area":
        return _area_matrix(n_in, n_out)
    if backend == "torch" and interpolation == "bicubic" and not antialias:
        return _torch_bicubic_matrix(n_in, n_out)
    inv_scale = n_in / n_out
    width = max(inv_scale, 1.0) if antialias else 1.0
    sample = (np.arange(n_out, dtype=np.float64) + 0.5) * inv_scale - 0.5
    if backend == "tensorflow" and interpolation == "bicubic" and not antialias:
        s32 = _sample32(n_in, n_out)
        base = np.floor(s32)
        sample = base + np.rint((s32 - base) * np.float32(1024)) / 1024
    dist = np.abs(sample[None, :] - np.arange(n_in, dtype=np.float64)[:, None]) / width
    w = _KERNELS[interpolation](dist)
    total = w.sum(axis=0, keepdims=True)
    ok = np.abs(total) > 1000.0 * np.finfo(np.float32).eps
    w = np.where(ok, w / np.where(ok, total, 1.0), 0.0)
    return w.astype(np.float32)


def nearest_indices(n_in: int, n_out: int) -> np.ndarray:
    """Input index of each output position for Keras's "nearest" resize:
    ``floor((j + 0.5) * n_in / n_out)``, evaluated in float32 as Keras evaluates it (so that
    ties fall the same way)."""
    pos = (np.arange(n_out, dtype=np.float32) + np.float32(0.5)) * np.float32(n_in)
    idx = np.floor(pos / np.float32(n_out)).astype(np.int64)
    return np.minimum(idx, n_in - 1)


def round_saturate(y: jax.Array, dtype) -> jax.Array:
    """Float ``y`` back in integer ``dtype`` as Keras 3 returns a resized integer image:
    rounded (half to even), then saturated to the dtype's range (``saturate_cast``)."""
    info = jnp.iinfo(dtype)
    return jnp.clip(jnp.round(y), info.min, info.max).astype(dtype)


def resize_axes(x, axes, sizes, interpolation, antialias=False, backend=None,
                keep_int=True):
    """Resize ``x`` along ``axes`` to ``sizes`` as Keras 3 does; axes whose size does not
    change are left untouched (as Keras leaves them). ``backend``: see
    :func:`resize_matrix`. An integer ``x`` (a raw ``uint8`` image) is interpolated in
    float32 and, with ``keep_int`` (Keras 3's ``Resizing`` and ``UpSampling``), rounded and
    saturated back to its dtype as Keras does; without, returned as float32 (tf.keras 2,
    whose layers cast integer images to floats first)."""
    dtype = x.dtype
    if jnp.issubdtype(dtype, jnp.integer) and interpolation != "nearest" and any(
            x.shape[a] != n for a, n in zip(axes, sizes)):
        y = resize_axes(x.astype(jnp.float32), axes, sizes, interpolation, antialias,
                        backend)
        return round_saturate(y, dtype) if keep_int else y
    for axis, n_out in zip(axes, sizes):
        n_in = x.shape[axis]
        if n_in == n_out:
            continue
        if interpolation == "nearest":
            x = jnp.take(x, nearest_indices(n_in, n_out), axis=axis)
        else:
            w = jnp.asarray(resize_matrix(n_in, n_out, interpolation, antialias, backend),
                            x.dtype)
            x = jnp.moveaxis(jnp.tensordot(x, w, axes=(axis, 0)), -1, axis)
    return x


def aspect_crop_box(height, width, target_h, target_w):
    """``(top, left, crop_h, crop_w)``: the largest centred window of ``height x width`` with
    the target's aspect ratio (Keras's ``crop_to_aspect_ratio`` and ``smart_resize``)."""
    crop_h = max(min(height, int(float(width * target_h) / target_w)), 1)
    crop_w = max(min(width, int(float(height * target_w) / target_h)), 1)
    return int(float(height - crop_h) / 2), int(float(width - crop_w) / 2), crop_h, crop_w


def aspect_pads(height, width, target_h, target_w):
    """``(pad_h, pad_w)`` added on *both* sides by Keras's ``pad_to_aspect_ratio``: half the
    missing rows (or columns), rounded down, on each side, so the padded image may be one
    short of the target aspect ratio, as in Keras."""
    full_h = max(height, int(float(width * target_h) / target_w))
    full_w = max(width, int(float(height * target_w) / target_h))
    pad_h = int(float(full_h - height) / 2)
    pad_w = int(float(full_w - width) / 2)
    return (pad_h, 0) if pad_h > 0 else (0, pad_w)


def _hw_axes(config):
    cf = config.get("data_format") == "channels_first"
    return ((2, 3) if cf else (1, 2)), cf


def _df(cf):
    return "channels_first" if cf else "channels_last"


def _crop(x, axes, top, left, h, w):
    idx = [slice(None)] * x.ndim
    idx[axes[0]] = slice(top, top + h)
    idx[axes[1]] = slice(left, left + w)
    return x[tuple(idx)]


@register_layer("Resizing")
def _resizing(config, ctx):
    height, width = int(config["height"]), int(config["width"])
    interpolation = str(config.get("interpolation", "bilinear")).lower()
    if interpolation not in INTERPOLATIONS:
        raise ctx.error(f"interpolation {interpolation!r} is not supported; supported: "
                        f"{', '.join(INTERPOLATIONS)}")
    crop = bool(config.get("crop_to_aspect_ratio", False))
    pad = bool(config.get("pad_to_aspect_ratio", False))
    if crop and pad:
        raise ctx.error("crop_to_aspect_ratio and pad_to_aspect_ratio are both set")
    fill_mode = str(config.get("fill_mode", "constant"))
    if pad and fill_mode != "constant":
        raise ctx.error(f"fill_mode {fill_mode!r} is not supported (Keras supports "
                        "'constant' only)")
    fill_value = float(config.get("fill_value", 0.0) or 0.0)
    antialias = bool(config.get("antialias", False))
    backend = ctx.backend
    if interpolation == "bicubic" and not antialias:
        ctx.backend_dependent(BICUBIC_BACKENDS)
    axes, cf = _hw_axes(config)
    keras3 = ctx.keras_major >= 3  # tf.keras 2 casts integer images to floats first

    def call(params, x, *, rt):
        dtype = x.dtype
        if not jnp.issubdtype(dtype, jnp.floating) and (not keras3 or pad):
            # tf.keras 2 casts integer images to floats first; Keras 3 pads an integer image
            # with fill_value in float, interpolates in float and rounds and saturates back
            x = x.astype(jnp.float32)
        h, w = x.shape[axes[0]], x.shape[axes[1]]
        if crop:
            x = _crop(x, axes, *aspect_crop_box(h, w, height, width))
        elif pad:
            ph, pw = aspect_pads(h, w, height, width)
            widths = [(0, 0)] * x.ndim
            widths[axes[0]], widths[axes[1]] = (ph, ph), (pw, pw)
            x = jnp.pad(x, widths, constant_values=jnp.asarray(fill_value, x.dtype))
        y = resize_axes(x, axes, (height, width), interpolation, antialias, backend,
                        keep_int=keras3)
        if keras3 and pad and jnp.issubdtype(dtype, jnp.integer):  # as Keras 3 returns it
            y = round_saturate(y, dtype)
        return y

    return LayerImpl(call=call, data_format=_df(cf))


@register_layer("CenterCrop")
def _center_crop(config, ctx):
    height, width = int(config["height"]), int(config["width"])
    axes, cf = _hw_axes(config)

    def call(params, x, *, rt):
        if not jnp.issubdtype(x.dtype, jnp.floating):
            x = x.astype(jnp.float32)  # as Keras: an integer image is cast to floats first
        h, w = x.shape[axes[0]], x.shape[axes[1]]
        if h >= height and w >= width:
            return _crop(x, axes, (h - height) // 2, (w - width) // 2, height, width)
        # Keras 3: an image smaller than the target along either axis is cropped to the
        # target's aspect ratio and resized bilinearly (``smart_resize``), not padded.
        x = _crop(x, axes, *aspect_crop_box(h, w, height, width))
        return resize_axes(x, axes, (height, width), "bilinear")

    return LayerImpl(call=call, data_format=_df(cf))

