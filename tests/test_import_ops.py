"""Keras 3 operations (``keras.ops.*`` on symbolic tensors, recorded as ``keras.src.ops``
nodes) against real Keras 3 (NumPy backend unless ``KERAS_BACKEND`` says otherwise: see
conftest.py).

Each zoo is a small Functional model with one output per operation (several per model keep
the file fast); it is saved (``.keras``, and ``.h5`` for some: the legacy format records the
operations without their module), loaded with ``load_keras`` and compared output by output:
exactly for integer and boolean results, to ~1e-5 otherwise. Inputs avoid ties (sorting,
arg-extrema, top-k) and domain errors.
"""

import json
import warnings

import numpy as np
import pytest

keras = pytest.importorskip("keras")
from keras import layers, ops  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from import_helpers import keras_jax_backend_fixes, rel_err  # noqa: E402
from model_import import (BackendWarning, KerasImportError,  # noqa: E402
                          UnsupportedLayerError, load_keras)

TOL = 1e-5
B = 4  # batch size


def _rng(seed=0):
    return np.random.default_rng(seed)


def _distinct(shape, seed=0, lo=-2.0, hi=2.0):
    """Values without ties (a shuffled grid plus jitter)."""
    n = int(np.prod(shape))
    v = np.linspace(lo, hi, n) + _rng(seed).uniform(0, 0.2 * (hi - lo) / n, n)
    return _rng(seed + 1).permutation(v).reshape(shape).astype("float32")


# ---------------------------------------------------------------------------- zoos
def _zoo_elementwise():
    """Unary/binary elementwise operations, activations, comparisons, casts. ``u`` in
    (-0.9, 0.9), ``p`` in (0.2, 3) (logs, roots, arccosh on 1 + p), ``z`` with NaN/inf."""
    u = keras.Input((3, 6), name="u")
    p = keras.Input((3, 6), name="p")
    z = keras.Input((3, 6), name="z")
    d = layers.Dense(6, name="dense_u")(u)  # a weighted layer before the operations
    o = {
        "tan": ops.tan(u), "sinh": ops.sinh(d), "cosh": ops.cosh(d),
        "arcsin": ops.arcsin(u), "arccos": ops.arccos(u), "arctan": ops.arctan(d),
        "arctan2": ops.arctan2(d, u), "arcsinh": ops.arcsinh(d),
        "arccosh": ops.arccosh(1.0 + p), "arctanh": ops.arctanh(u),
        "log2": ops.log2(p), "log10": ops.log10(p), "exp2": ops.exp2(d),
        "round": ops.round(d * 10.0), "round_dec": ops.round(d, 2),
        "trunc": ops.trunc(d * 5.0), "fabs": ops.fabs(d), "cbrt": ops.cbrt(d),
        "hypot": ops.hypot(d, p), "logaddexp": ops.logaddexp(d, p),
        "fmod": ops.fmod(d * 5.0, p), "heaviside": ops.heaviside(ops.round(d), u),
        "sinc": ops.sinc(d), "rsqrt": ops.rsqrt(p), "erfc": ops.erfc(d),
        "erfinv": ops.erfinv(u), "divide_no_nan": ops.divide_no_nan(d, ops.relu(p - 1.0)),
        "nan_to_num": ops.nan_to_num(z, nan=1.5, posinf=9.0, neginf=-8.0),
        "nan_to_num_default": ops.nan_to_num(z),
        "isnan": ops.isnan(z), "isinf": ops.isinf(z), "isfinite": ops.isfinite(z),
        "greater": ops.greater(d, u), "greater_equal": d >= 0.1, "less": ops.less(d, p),
        "less_equal": ops.less_equal(u, 0.0), "logical_xor": ops.logical_xor(d > 0, u > 0),
        "cast_int": ops.cast(d * 10.0, "int32"), "cast_bool": ops.cast(ops.round(d), "bool"),
        "cast_half": ops.cast(d, "float16"),
        "stop_gradient": ops.stop_gradient(d),
        "celu": ops.celu(d, alpha=0.7), "glu": ops.glu(d), "glu_axis": ops.glu(p, axis=-1),
        "hard_tanh": ops.hard_tanh(d * 2.0), "hard_shrink": ops.hard_shrink(d, 0.3),
        "soft_shrink": ops.soft_shrink(d), "tanh_shrink": ops.tanh_shrink(d),
        "threshold": ops.threshold(d, 0.1, -2.0), "squareplus": ops.squareplus(d, 2.0),
        "squareplus_default": ops.squareplus(d), "sparse_plus": ops.sparse_plus(d * 2.0),
        "sparse_sigmoid": ops.sparse_sigmoid(d * 2.0), "sparsemax": ops.sparsemax(d * 2.0),
        "sparsemax_axis1": ops.sparsemax(d * 3.0, axis=1),
        # NaN and inf in statistics: a slice with a NaN gives NaN (NumPy's rule)
        "quantile_nan": ops.quantile(z, 0.25, axis=-1), "median_nan": ops.median(z, axis=-1),
        "percentile_nan": ops.percentile(z, 90.0, axis=1, method="nearest"),
        "deg2rad": ops.deg2rad(d * 90.0), "rad2deg": ops.rad2deg(d),
        "logaddexp2": ops.logaddexp2(d, p), "signbit": ops.signbit(ops.round(d)),
        "isneginf": ops.isneginf(z), "isposinf": ops.isposinf(z), "copy": ops.copy(d),
        "fmax": ops.fmax(z, d), "fmin": ops.fmin(d, z), "diff": ops.diff(d),
        "diff_n2": ops.diff(d, n=2, axis=1),
        "isclose": ops.isclose(d, ops.round(d, 1), rtol=0.01, atol=0.02),
        "isclose_nan": ops.isclose(z, z, equal_nan=True),
        "select": ops.select([d > 0.5, u < -0.2], [d, p], default=-1.0),
        "nansum": ops.nansum(z, axis=-1), "nanmean": ops.nanmean(z, axis=1),
        "nanmax": ops.nanmax(z, axis=-1, keepdims=True), "nanmin": ops.nanmin(z),
        "saturate_cast": ops.saturate_cast(d * 300.0, "uint8"),
        "saturate_cast_int8": ops.saturate_cast(d * 300.0, "int8"),
        "saturate_cast_narrow": ops.saturate_cast(ops.cast(d * 300.0, "int32"), "int8"),
        # +0.0 where u > 0.3, -0.0 elsewhere: Keras's argmax takes -0.0 < +0.0
        "argmax_signed_zero": ops.argmax(ops.where(u > 0.3, 0.0, ops.negative(
            ops.relu(u) * 0.0)), axis=-1),
    }
    return keras.Model({"u": u, "p": p, "z": z}, list(o.values()),
                       name="ops_elementwise"), list(o)


def _x_elementwise():
    rng = _rng(1)
    u = rng.uniform(-0.9, 0.9, (B, 3, 6)).astype("float32")
    p = rng.uniform(0.2, 3.0, (B, 3, 6)).astype("float32")
    z = rng.normal(size=(B, 3, 6)).astype("float32")
    z[0, 0, :3] = [np.nan, np.inf, -np.inf]
    z[2, 1, 4] = np.nan
    return {"u": u, "p": p, "z": z}


def _zoo_reductions():
    x = keras.Input((5, 6), name="x")
    r = layers.ReLU(name="relu")(x)
    o = {
        "logsumexp": ops.logsumexp(x, axis=1), "logsumexp_all": ops.logsumexp(x),
        "logsumexp_keep": ops.logsumexp(x, axis=(1, 2), keepdims=True),
        "average": ops.average(x, axis=-1,
                               weights=np.array([1, 2, 3, 0.5, 1, 4], "float32")),
        "average_none": ops.average(x, axis=1),
        "median": ops.median(x, axis=-1), "median_keep": ops.median(x, axis=1, keepdims=True),
        "quantile": ops.quantile(x, 0.3, axis=-1),
        "quantile_q": ops.quantile(x, np.array([0.1, 0.5, 0.95]), axis=1, keepdims=True),
        "percentile": ops.percentile(x, 30.0, axis=-1),
        # (6 - 1) * 0.3 = 1.5 and 5 * 0.5 = 2.5: NumPy's `nearest` rounds half to even
        **{f"percentile_{m}": ops.percentile(x, np.array([30.0, 50.0, 100.0]), axis=-1,
                                             method=m)
           for m in ("lower", "higher", "midpoint", "nearest")},
        "cumsum": ops.cumsum(x, axis=1), "cumsum_flat": ops.cumsum(x),
        "cumprod": ops.cumprod(1.0 + 0.1 * x, axis=-1),
        "cumsum_bool": ops.cumsum(r > 0, axis=-1),
        "count_nonzero": ops.count_nonzero(r, axis=1), "count_nonzero_all": ops.count_nonzero(r),
        "argmax": ops.argmax(x, axis=-1), "argmax_flat": ops.argmax(x),
        "argmin": ops.argmin(x, axis=1, keepdims=True),
        "sort": ops.sort(x, axis=1), "argsort": ops.argsort(x, axis=-1),
        # (an int axis: see test_norm_int_axis)
        "norm": ops.norm(x, axis=(-1,)), "norm_l1": ops.norm(x, ord=1, axis=(-1,)),
        "norm_inf": ops.norm(x, ord=float("inf"), axis=(1,), keepdims=True),
        "norm_0": ops.norm(r, ord=0, axis=(-1,)), "norm_all": ops.norm(x),
        "norm_fro": ops.norm(x, ord="fro", axis=(1, 2)),
        "norm_nuc": ops.norm(x, ord="nuc", axis=(1, 2)),
        "norm_2": ops.norm(x, ord=2, axis=(1, 2)), "norm_m1": ops.norm(x, ord=-1, axis=(1, 2)),
        "norm_m2": ops.norm(x, ord=-2, axis=(2, 1), keepdims=True),
        "norm_minf": ops.norm(x, ord=float("-inf"), axis=(-1,)),
        "norm_inf_matrix": ops.norm(x, ord=float("inf"), axis=(2, 1), keepdims=True),
        "norm_minf_matrix": ops.norm(x, ord=float("-inf"), axis=(1, 2)),
        "normalize": ops.normalize(x), "normalize_l1": ops.normalize(x, axis=1, order=1),
        "ptp": ops.ptp(x, axis=1), "ptp_keep": ops.ptp(x, axis=-1, keepdims=True),
        # initial: a bound (some columns' maxima are below 0.8, minima above -0.8)
        "max_initial": ops.max(x, axis=1, initial=0.8),
        "min_initial": ops.min(x, axis=[-2], keepdims=True, initial=-0.8),
        # ...and the value of an empty reduction (the importer raised zero-size)
        "max_initial_empty": ops.max(x[:, :0], axis=1, initial=0.8),
        "min_initial_empty": ops.min(x[..., :0], axis=[-1, 1], keepdims=True, initial=-0.8),
        "amax": ops.amax(x, axis=[2, 1]), "amin_keep": ops.amin(x, axis=-1, keepdims=True),
        "trace": ops.trace(x, offset=1, axis1=1, axis2=2),
    }
    v, i = ops.top_k(x, 3)
    m, var = ops.moments(x, axes=[1, 2])
    mk, vk = ops.moments(x, axes=[-1], keepdims=True)
    o.update({"top_k_values": v, "top_k_indices": i, "moments_mean": m, "moments_var": var,
              "moments_keep_mean": mk, "moments_keep_var": vk})
    out = layers.Dense(3, name="head")(o["logsumexp"])  # a weighted layer after them
    o["dense_head"] = out
    return keras.Model({"x": x}, list(o.values()), name="ops_reductions"), list(o)


def _x_reductions():
    x = _distinct((B, 5, 6), seed=3)
    x[:, 1, 2] = 0.0  # zeros for count_nonzero / norm(ord=0) beyond the ReLU's
    return {"x": x}


def _zoo_shapes():
    x = keras.Input((5, 6), name="x")
    y = keras.Input((5, 6), name="y")
    ix = keras.Input((3,), dtype="int32", name="ix")
    o = {
        "moveaxis": ops.moveaxis(x, 1, 2), "moveaxis_multi": ops.moveaxis(x, [0, 1], [2, 0]),
        "swapaxes": ops.swapaxes(x, 1, 2), "ravel": ops.ravel(x),
        "broadcast_to": ops.broadcast_to(x[0, :1], (2, 5, 6)),
        "broadcast_to_cols": ops.broadcast_to(x[0, :, :1], (5, 6)),
        "take": ops.take(x, np.array([0, 4, 2, -1]), axis=1),
        "take_flat": ops.take(x, np.array([[3, 7], [1, 0]])),
        "take_tensor": ops.take(x, ix, axis=2),
        "take_along_axis": ops.take_along_axis(x, ops.argsort(y, axis=-1), axis=-1),
        "slice": ops.slice(x[0], (1, 2), (3, 3)),
        "pad_constant": ops.pad(x, ((0, 0), (1, 2), (0, 1)), constant_values=1.5),
        "pad_default": ops.pad(x, ((0, 0), (2, 0), (1, 1))),
        **{f"pad_{m}": ops.pad(x, ((0, 0), (2, 3), (1, 4)), mode=m)
           for m in ("reflect", "symmetric", "edge", "wrap")},
        "roll": ops.roll(x, 2, axis=1), "roll_multi": ops.roll(x, [1, -2], axis=[1, 2]),
        "roll_flat": ops.roll(x, 7), "tril": ops.tril(x, k=1), "triu": ops.triu(x, -1),
        "diagonal": ops.diagonal(x, offset=1, axis1=1, axis2=2),
        "diag_matrix": ops.diag(x[0], k=-1), "diag_vector": ops.diag(x[0, 0], k=1),
        "einsum": ops.einsum("bij,bkj->bik", x, y),
        "dot": ops.dot(x, ops.swapaxes(y, 1, 2)), "tensordot": ops.tensordot(
            x, y, axes=[[1, 2], [1, 2]]),
        "tensordot_pairs": ops.tensordot(x[0], y[1], axes=[[1], [1]]),
        "outer": ops.outer(x[:, 0], y[:, 1]), "inner": ops.inner(x, y),
        "cross": ops.cross(x[..., :3], y[..., 3:]),
        "cross_axis": ops.cross(x[:, :3], y[:, 2:], axis=1),
        "kron": ops.kron(x[:, :2, :2], y[:, 1:3, :3]),
        "append": ops.append(x, y, axis=1), "append_flat": ops.append(x, y),
        "hstack": ops.hstack([x, y]), "vstack": ops.vstack([x, y]),
        "dstack": ops.dstack([x, y]), "dstack_2d": ops.dstack([x[:, 0], y[:, 1]]),
        "vstack_1d": ops.vstack([x[0, 0], y[1, 1]]),
        "rot90": ops.rot90(x, 1, axes=(1, 2)),
        "rot90_k3": ops.rot90(x, 3), "fliplr": ops.fliplr(x), "flipud": ops.flipud(x),
        "repeat": ops.repeat(x, 2, axis=1), "repeat_each": ops.repeat(x, [1, 2, 0, 3, 1],
                                                                      axis=1),
        "repeat_flat": ops.repeat(x, 3),
        "full": ops.full((2, 3), x[0, 0, 0]), "full_like": ops.full_like(x, 2.5),
        "full_like_int": ops.full_like(x, 3, dtype="int32"),
        "linspace": ops.linspace(x[:, 0, 0], y[:, 0, 0], 5, axis=1),
        "linspace_open": ops.linspace(x[:, 0], y[:, 1], 4, endpoint=False),
        # on x * 1.0: Keras's NumPy backend writes the updates into its input array in place
        # (x itself, which the other outputs read). Repeated indices: the last update wins
        "scatter_update": ops.scatter_update(
            x * 1.0, np.array([[0, 1, 2], [1, 4, 5], [0, 1, 2], [-1, 0, 0]]),
            np.array([1.0, 2.0, 3.0, 4.0], "float32")),
        "scatter_update_rows": ops.scatter_update(x * 1.0, [[0, 3], [2, -1]], y[1, :2] * 2.0),
        **{f"scatter_update_{r}": ops.scatter_update(
            x * 1.0, [[0, 1, 2], [3, 4, 5], [0, 1, 2]], np.array([2.0, 3.0, -4.0], "float32"),
            reduction=r) for r in ("add", "max", "min", "mul")},
        # indices of shape (k,): one index (x[2, 4, :] here; the importer took only (N, k))
        "scatter_update_one_index": ops.scatter_update(x * 1.0, np.array([2, 4]),
                                                       y[0, 0] * 2.0),
        "scatter": ops.scatter(np.array([[0, 1], [2, 3], [0, 1]]), x[0, 0, :3], (4, 5)),
        "scatter_rows": ops.scatter(np.array([[1], [3]]), x[1, :2], (4, 6)),
        "slice_update": ops.slice_update(x * 1.0, [0, 1, 2], ops.zeros((1, 2, 3))),
        "slice_update_tensor": ops.slice_update(x * 1.0, [1, 3, 0], y[:2, :2] * 3.0),
        # a start computed from the data (ix[0, 2] = 2): the importer needed int starts
        "slice_tensor_start": ops.slice(x[0], [ix[0, 2], 1], [2, 3]),
        "slice_update_tensor_start": ops.slice_update(x * 1.0, [0, ix[0, 2], 1],
                                                      ops.zeros((1, 2, 3))),
        # compared by partition with Keras's result, exactly with Keras's JAX backend's
        # (_PARTITIONS)
        "argpartition": ops.argpartition(x, 2), "argpartition_axis1": ops.argpartition(
            x, -2, axis=1), "argpartition_flat": ops.argpartition(x[0], 4, axis=None),
    }
    for name, parts in [("split", ops.split(x, 2, axis=-1)),
                        ("split_at", ops.split(x, [1, 3], axis=1)),
                        ("array_split", ops.array_split(x, 4, axis=-1)),
                        ("hsplit", ops.hsplit(x, [2])), ("vsplit", ops.vsplit(x[1], [1, 3])),
                        ("dsplit", ops.dsplit(x, 3)), ("unstack", ops.unstack(x, axis=1))]:
        o.update({f"{name}_{i}": t for i, t in enumerate(parts)})
    return keras.Model({"x": x, "y": y, "ix": ix}, list(o.values()), name="ops_shapes"), \
        list(o)


def _x_shapes():
    return {"x": _distinct((B, 5, 6), seed=5), "y": _distinct((B, 5, 6), seed=7),
            "ix": np.array([[0, 5, 2], [1, 1, 3], [4, 0, 2], [5, 5, 5]], "int32")}


def _zoo_nn():
    t = keras.Input((4, 3), dtype="int32", name="tok")
    q = keras.Input((5, 2, 4), name="q")
    k = keras.Input((6, 2, 4), name="k")
    v = keras.Input((6, 2, 3), name="v")
    x = keras.Input((3, 8), name="x")
    img = keras.Input((4, 6, 8), name="img")
    mask = np.ones((1, 2, 5, 6), bool)
    mask[0, 1, 2, :] = False  # a row masked entirely: attends uniformly
    mask[0, 0, :, 4] = False
    bias = _rng(11).normal(size=(1, 2, 5, 6)).astype("float32")
    keep = ops.greater(ops.einsum("btnh,bsnh->bnts", q, k), -0.5)  # a tensor mask
    o = {
        "one_hot": ops.one_hot(t, 5), "one_hot_axis": ops.one_hot(t, 6, axis=1),
        "one_hot_int": ops.one_hot(t, 5, dtype="int32"), "multi_hot": ops.multi_hot(t, 5),
        "dpa": ops.dot_product_attention(q, k, v),
        "dpa_causal": ops.dot_product_attention(q, k, v, is_causal=True, scale=0.3),
        "dpa_mask_bias": ops.dot_product_attention(q, k, v, bias=bias, mask=mask),
        "dpa_tensor_mask": ops.dot_product_attention(q, k, v, mask=keep, is_causal=True),
        "layer_norm": ops.layer_normalization(x), "layer_norm_params": ops.layer_normalization(
            x, gamma=_rng(12).uniform(0.5, 1.5, 8).astype("float32"),
            beta=_rng(13).normal(size=8).astype("float32"), epsilon=1e-3),
        "layer_norm_axes": ops.layer_normalization(
            x, gamma=_rng(14).uniform(0.5, 1.5, (3, 8)).astype("float32"), axis=[1, 2]),
        "layer_norm_rms": ops.layer_normalization(
            x, gamma=_rng(15).uniform(0.5, 1.5, 8).astype("float32"), rms_scaling=True),
        "rms_norm": ops.rms_normalization(x), "rms_norm_scale": ops.rms_normalization(
            x, scale=_rng(16).uniform(0.5, 1.5, 8).astype("float32"), epsilon=1e-2),
        "depth_to_space": ops.nn.depth_to_space(img, 2),
        "space_to_depth": ops.nn.space_to_depth(img, 2),
        "depth_to_space_cf": ops.nn.depth_to_space(img, 2, data_format="channels_first"),
        "space_to_depth_cf": ops.nn.space_to_depth(img, 2, data_format="channels_first"),
    }
    return keras.Model({"tok": t, "q": q, "k": k, "v": v, "x": x, "img": img},
                       list(o.values()), name="ops_nn"), list(o)


def _x_nn():
    rng = _rng(21)
    tok = rng.integers(0, 5, (B, 4, 3)).astype("int32")
    tok[0, 0, 0] = -1  # one_hot of a negative index: zeros
    return {"tok": tok, "q": rng.normal(size=(B, 5, 2, 4)).astype("float32"),
            "k": rng.normal(size=(B, 6, 2, 4)).astype("float32"),
            "v": rng.normal(size=(B, 6, 2, 3)).astype("float32"),
            "x": rng.normal(1.0, 2.0, (B, 3, 8)).astype("float32"),
            "img": rng.normal(size=(B, 4, 6, 8)).astype("float32")}


def _zoo_image():
    img = keras.Input((8, 10, 3), name="img")
    cf = keras.Input((3, 8, 10), name="cf")
    vol = keras.Input((4, 6, 4, 2), name="vol")
    o = {
        "resize_bilinear": ops.image.resize(img, (5, 6)),
        "resize_up": ops.image.resize(img, (11, 17)),
        "resize_nearest": ops.image.resize(img, (13, 7), interpolation="nearest"),
        "resize_bicubic_aa": ops.image.resize(img, (5, 4), interpolation="bicubic",
                                              antialias=True),
        "resize_bilinear_aa": ops.image.resize(img, (3, 7), antialias=True),
        "resize_lanczos3": ops.image.resize(img, (12, 9), interpolation="lanczos3"),
        "resize_lanczos5": ops.image.resize(img, (6, 6), interpolation="lanczos5"),
        "resize_crop": ops.image.resize(img, (6, 6), crop_to_aspect_ratio=True),
        "resize_pad": ops.image.resize(img, (6, 6), pad_to_aspect_ratio=True,
                                       fill_value=0.5),
        "resize_pad_w": ops.image.resize(img, (4, 9), pad_to_aspect_ratio=True),
        "resize_cf": ops.image.resize(cf, (5, 12), data_format="channels_first"),
        "resize_crop_cf": ops.image.resize(cf, (9, 3), crop_to_aspect_ratio=True,
                                           data_format="channels_first"),
        "patches": ops.image.extract_patches(img, 4),
        "patches_rect": ops.image.extract_patches(img, (3, 2), strides=(2, 3),
                                                  dilation_rate=2, padding="same"),
        "patches_cf": ops.image.extract_patches(cf, 2, strides=3,
                                                data_format="channels_first"),
        "patches_3d": ops.image.extract_patches(vol, (2, 3, 2), strides=(2, 2, 1)),
        "gray": ops.image.rgb_to_grayscale(img),
        "gray_cf": ops.image.rgb_to_grayscale(cf, data_format="channels_first"),
        "pad_images": ops.image.pad_images(img, 1, 2, target_height=12, target_width=14),
        "pad_images_br": ops.image.pad_images(img, bottom_padding=2, right_padding=1,
                                              target_height=11, target_width=12),
        "pad_images_cf": ops.image.pad_images(cf, 1, 0, 2, 3, data_format="channels_first"),
        "crop_images": ops.image.crop_images(img, 1, 2, target_height=5, target_width=5),
        "crop_images_br": ops.image.crop_images(img, bottom_cropping=2, right_cropping=3,
                                                target_height=4, target_width=6),
        "crop_images_cf": ops.image.crop_images(cf, 1, 2, 3, 1,
                                                data_format="channels_first"),
    }
    return keras.Model({"img": img, "cf": cf, "vol": vol}, list(o.values()),
                       name="ops_image"), list(o)


def _x_image():
    rng = _rng(31)
    return {"img": rng.uniform(0, 1, (B, 8, 10, 3)).astype("float32"),
            "cf": rng.uniform(0, 1, (B, 3, 8, 10)).astype("float32"),
            "vol": rng.normal(size=(B, 4, 6, 4, 2)).astype("float32")}


ZOOS = {"elementwise": (_zoo_elementwise, _x_elementwise),
        "reductions": (_zoo_reductions, _x_reductions),
        "shapes": (_zoo_shapes, _x_shapes), "nn": (_zoo_nn, _x_nn),
        "image": (_zoo_image, _x_image)}
H5_ZOOS = ("elementwise", "reductions", "shapes")  # Average, Dot: layer names too


def _compare(names, ours, ref):
    assert len(ours) == len(ref) == len(names)
    bad = {}
    for name, a, r in zip(names, ours, ref):
        a, r = np.asarray(a), np.asarray(r)
        if a.shape != r.shape:
            bad[name] = f"shape {a.shape} != {r.shape}"
        elif r.dtype.kind in "biu" or a.dtype.kind in "biu":
            if a.dtype.kind != r.dtype.kind or not np.array_equal(a, r):
                bad[name] = f"{a.dtype} vs {r.dtype}, equal={np.array_equal(a, r)}"
        else:
            fin = np.isfinite(r)
            if not np.array_equal(fin, np.isfinite(a)) or not np.array_equal(
                    np.isnan(r), np.isnan(a)):
                bad[name] = "non-finite entries differ"
            elif fin.any() and rel_err(np.where(fin, a, 0), np.where(fin, r, 0)) > TOL:
                bad[name] = f"rel err {rel_err(np.where(fin, a, 0), np.where(fin, r, 0)):.2e}"
    assert not bad, bad


@pytest.fixture(scope="module")
def zoo_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("ops")
    keras.utils.set_random_seed(0)
    out = {}
    with keras_jax_backend_fixes():  # its reference outputs under KERAS_BACKEND=jax
        for key, (build, inputs) in ZOOS.items():
            out[key] = _zoo_file(d, key, build, inputs)
    return out


def _zoo_file(d, key, build, inputs):
    """One zoo saved (``.keras``, and ``.h5`` for ``H5_ZOOS``) with Keras's outputs."""
    with warnings.catch_warnings():  # Keras's own, on purpose: NumPy's floating-point
        # warnings on the NaN/inf inputs and divide_no_nan's zeros; layer_normalization's
        # rms_scaling=True is deprecated
        warnings.filterwarnings("ignore", category=RuntimeWarning)
        warnings.filterwarnings("ignore", ".*rms_scaling=True", UserWarning)
        model, names = build()
        x = inputs()
        ref = model(x)
    paths = {".keras": d / f"{key}.keras"}
    model.save(paths[".keras"])
    if key in H5_ZOOS:
        paths[".h5"] = d / f"{key}.h5"
        model.save(paths[".h5"])
    return paths, names, x, [np.asarray(r) for r in ref]


@pytest.mark.parametrize("key,ext", [(k, ".keras") for k in ZOOS] +
                         [(k, ".h5") for k in H5_ZOOS])
def test_ops_match_keras(zoo_files, key, ext):
    paths, names, x, ref = zoo_files[key]
    # argpartition's order inside a partition is the backend's: a warning unless the file
    # records Keras's JAX backend (an .h5 written there). One that records the NumPy backend
    # says the order differs from its Keras model, without the advice for a file of unknown
    # backend to pass keras_backend='jax'
    if key == "shapes" and not (ext == ".h5" and keras.backend.backend() == "jax"):
        with pytest.warns(BackendWarning, match="argpartition") as rec:
            m = load_keras(paths[ext])
        said = " ".join(str(w.message) for w in rec if "Argpartition" in str(w.message))
        on_numpy = ext == ".h5" and keras.backend.backend() == "numpy"
        assert ("keras_backend='jax'" not in said) == on_numpy, said
        assert ("ran on Keras's NumPy backend" in said) == on_numpy, said
    else:
        m = load_keras(paths[ext])
    if keras.backend.backend() == "jax" and key == "reductions":
        ref = [_numpy_percentile(x["x"], n) if n in _JAX_PERCENTILES else r
               for n, r in zip(names, ref)]
    ours = m(x)
    if key == "shapes":
        for n, (kth, axis, of) in _PARTITIONS.items():
            i = names.index(n)
            _same_partitions(ours[i], ref[i], kth, axis)
            ref[i] = np.asarray(jnp.argpartition(of(x["x"]), kth, axis=axis))
    _compare(names, ours, ref)


#: argpartition outputs of the shapes zoo: (kth, axis, its input from x). Keras's backends
#: order the indices inside each partition differently (its NumPy backend as
#: np.argpartition): the importer's are compared with Keras's by partition, and exactly with
#: Keras's JAX backend's, jnp.argpartition (flattened for axis=None).
_PARTITIONS = {"argpartition": (2, -1, lambda x: x),
               "argpartition_axis1": (-2, 1, lambda x: x),
               "argpartition_flat": (4, 0, lambda x: x[0].reshape(-1))}


@pytest.mark.parametrize("backend", ["tensorflow", "torch"])
def test_argpartition_refused_on_tensorflow_and_torch(zoo_files, backend):
    """Keras on TensorFlow and PyTorch partitions ``x`` cast to int32: not reproduced."""
    paths = zoo_files["shapes"][0]
    with pytest.raises(UnsupportedLayerError, match="argpartition.*cast to int32"):
        load_keras(paths[".keras"], keras_backend=backend)


def _same_partitions(a, r, kth, axis):
    """``a`` and ``r`` put the same indices before, at and after position ``kth``."""
    a, r = np.moveaxis(np.asarray(a), axis, -1), np.moveaxis(np.asarray(r), axis, -1)
    k = kth % a.shape[-1]
    for part in (np.s_[..., :k], np.s_[..., k:k + 1], np.s_[..., k + 1:]):
        np.testing.assert_array_equal(np.sort(a[part], -1), np.sort(r[part], -1))


#: Outputs that Keras computes on its JAX backend with ``jnp.percentile``, whose values differ
#: from NumPy's in JAX 0.10.2: ``method="nearest"`` takes the lower element at a position
#: halfway between two (NumPy the even one: 30% of 6 values, position 1.5, gives the second
#: where NumPy gives the third), and ``q=100`` with ``"lower"`` or ``"midpoint"`` does not give
#: the largest element (4 and 4.5 for ``arange(6)``, NumPy 5). Keras on NumPy, and the
#: importer, give NumPy's (README "Known limitations"); there they are compared with NumPy.
_JAX_PERCENTILES = {"percentile_lower": "lower", "percentile_midpoint": "midpoint",
                    "percentile_nearest": "nearest"}


def _numpy_percentile(x, name):
    return np.percentile(x, [30.0, 50.0, 100.0], axis=-1, method=_JAX_PERCENTILES[name])


#: Operation converters older than this file (exercised, where at all, by the layer zoos of
#: test_import_layers.py and the mask tests); every later one must be in a zoo here.
_OLDER_OPS = {f"ops.{c}" for c in """Abs Absolute Add All Amax Amin Any Ceil Clip Concatenate
    ConvertToTensor Cos Divide Elu Equal Erf Exp ExpandDims Expm1 Flip Floor FloorDivide Gelu
    GetItem HardSigmoid HardSilu HardSwish LeakyRelu Log Log1p LogSigmoid LogSoftmax LogicalAnd
    LogicalNot LogicalOr Matmul Max Maximum Mean Min Minimum Mod Multiply Negative NotEqual
    OnesLike Power Prod Reciprocal Relu Relu6 Repeat Reshape Selu Sigmoid Sign Silu Swish Sin
    Softmax Softplus Softsign Sqrt Square Squeeze Stack Std Subtract Sum Tanh Tile Transpose
    TrueDivide Var Where ZerosLike""".split()}


def test_zoos_cover_the_op_converters():
    import model_import

    seen = set()
    for build, _ in ZOOS.values():
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", ".*rms_scaling=True", UserWarning)
            model, _ = build()
        seen |= {f"ops.{lay['class_name']}" for lay in model.get_config()["layers"]
                 if str(lay.get("module", "")).startswith("keras.src.ops")}
    registered = {c for c in model_import.registered_classes() if c.startswith("ops.")}
    missing = registered - _OLDER_OPS - seen
    assert not missing, f"operation converters without a differential test: {sorted(missing)}"


def test_ops_gradients_are_finite(zoo_files):
    """The float outputs of the elementwise zoo are differentiable in the inputs (masked
    divisions included): jax.grad gives finite values."""
    paths, names, x, ref = zoo_files["elementwise"]
    m = load_keras(paths[".keras"])
    floats = [i for i, r in enumerate(ref) if r.dtype.kind == "f" and np.isfinite(r).all()
              and names[i] != "stop_gradient"]

    def total(up):
        outs = m.apply(m.params, {**x, **up})
        return sum(jnp.sum(outs[i].astype(jnp.float32)) for i in floats)

    g = jax.jit(jax.grad(total))({"u": jnp.asarray(x["u"]), "p": jnp.asarray(x["p"])})
    for v in g.values():
        assert np.isfinite(np.asarray(v)).all() and float(jnp.abs(v).sum()) > 0


def test_stop_gradient_stops_gradients(zoo_files):
    paths, names, x, ref = zoo_files["elementwise"]
    m = load_keras(paths[".keras"])
    i, j = names.index("stop_gradient"), names.index("sinh")  # both of Dense(u)
    u = jnp.asarray(x["u"])
    outs = jax.jit(lambda u: m.apply(m.params, {**x, "u": u}))
    g_stop = jax.grad(lambda u: jnp.sum(outs(u)[i]))(u)
    g_sinh = jax.grad(lambda u: jnp.sum(outs(u)[j]))(u)
    assert not np.asarray(g_stop).any() and np.asarray(g_sinh).any()


def test_l2_normalize_has_its_gradient_at_zero(tmp_path):
    """``ops.normalize`` (L2) is ``x * min(rsqrt(sum(x^2)), 1 / epsilon)``: ``x / epsilon``
    near 0, whose derivative is ``1 / epsilon``. Written as Keras writes it, autodiff gave
    ``0 * inf = NaN`` at 0 (so integrated gradients from a zero baseline were NaN)."""
    inp = keras.Input((4,))
    h = layers.Dense(3, use_bias=False, name="d1")(inp)
    model = keras.Model(inp, layers.Dense(2, use_bias=False, name="d2")(
        ops.normalize(h, axis=-1, epsilon=1e-3)))
    model.save(tmp_path / "l2.keras")
    m = load_keras(tmp_path / "l2.keras")
    x = _distinct((B, 4))
    assert rel_err(m(x), model.predict(x, verbose=0)) <= TOL
    g = jax.grad(lambda v: m.apply(m.params, v)[:, 0].sum())(jnp.zeros((1, 4)))
    w1, w2 = (np.asarray(model.get_layer(n).kernel) for n in ("d1", "d2"))
    np.testing.assert_allclose(np.asarray(g)[0], (w1 @ w2)[:, 0] / 1e-3, rtol=1e-5)


@pytest.mark.parametrize("ext", [".keras", ".h5"])
def test_applications_preprocess_input_on_the_keras_tensor(tmp_path, ext):
    """``x = keras.applications.<app>.preprocess_input(inputs)`` inside a model (what the
    Lambda refusal advises): Keras records the operations it runs. One model, one output per
    mode: "caffe" (RGB to BGR, ImageNet means), "torch" (means and deviations), "tf" (to
    [-1, 1]) and EfficientNet's identity."""
    A = keras.applications
    inp = keras.Input((3, 4, 3))
    model = keras.Model(inp, [A.resnet50.preprocess_input(inp), A.densenet.preprocess_input(inp),
                              A.mobilenet_v2.preprocess_input(inp),
                              A.efficientnet.preprocess_input(inp)])
    model.save(tmp_path / f"pre{ext}")
    m = load_keras(tmp_path / f"pre{ext}")
    x = _rng(3).uniform(0, 255, (B, 3, 4, 3)).astype("float32")
    for got, ref in zip(m(x), model.predict(x, verbose=0)):
        assert rel_err(got, ref) <= 1e-6


def test_resize_pads_integer_images_in_float(tmp_path):
    """``ops.image.resize(pad_to_aspect_ratio=True)`` on a uint8 image: Keras 3 pads with
    ``fill_value`` in float and rounds and saturates back to uint8, so a fill of 0.6 gives 1
    (cast to uint8 before padding here, it gave 0)."""
    img = keras.Input((2, 6, 1), dtype="uint8")
    model = keras.Model(img, [ops.image.resize(img, (4, 4), interpolation=i,
                                               pad_to_aspect_ratio=True, fill_value=0.6)
                              for i in ("nearest", "bilinear")])
    model.save(tmp_path / "m.keras")
    x = np.random.default_rng(0).integers(0, 256, (1, 2, 6, 1)).astype("uint8")
    ours = load_keras(tmp_path / "m.keras")(x)
    for got, want in zip(ours, model.predict(x, verbose=0)):
        assert np.asarray(got).dtype == want.dtype == np.uint8
        np.testing.assert_array_equal(got, want)
    assert np.asarray(ours[0])[0, 0, 0, 0] == 1  # the padded row: round(0.6)


def test_grouped_query_attention(tmp_path):
    """Query heads grouped over fewer key/value heads (as Keras's JAX backend computes it;
    the NumPy backend refuses): equal to attention with the key/value heads repeated."""
    q = keras.Input((5, 4, 3), name="q")
    k = keras.Input((6, 2, 3), name="k")
    v = keras.Input((6, 2, 3), name="v")
    gqa = keras.Model([q, k, v], ops.dot_product_attention(q, k, v, is_causal=True))
    rep = keras.Model([q, k, v], ops.dot_product_attention(
        q, ops.repeat(k, 2, axis=2), ops.repeat(v, 2, axis=2), is_causal=True))
    rng = _rng(41)
    xs = [rng.normal(size=(2, 5, 4, 3)).astype("float32"),
          rng.normal(size=(2, 6, 2, 3)).astype("float32"),
          rng.normal(size=(2, 6, 2, 3)).astype("float32")]
    gqa.save(tmp_path / "gqa.keras")
    ours = load_keras(tmp_path / "gqa.keras")(xs)
    assert rel_err(ours, rep(xs)) < TOL


def test_norm_int_axis(tmp_path):
    """``norm(x, axis=-1)``: Keras's Norm turns the int into a list, which its JAX and
    NumPy backends reject when the model runs; the file still means the vector norm."""
    x = keras.Input((5, 6), name="x")
    keras.Model(x, [ops.norm(x, ord=1, axis=-1), ops.norm(x, axis=1, keepdims=True)]).save(
        tmp_path / "norm.keras")
    a = _distinct((B, 5, 6), seed=9)
    ours = load_keras(tmp_path / "norm.keras")(a)
    assert rel_err(ours[0], np.linalg.norm(a, 1, axis=-1)) < TOL
    assert rel_err(ours[1], np.linalg.norm(a, axis=1, keepdims=True)) < TOL


def test_slice_starts_from_the_data_are_clamped_as_on_jax(tmp_path):
    """``slice``/``slice_update`` with a start computed from the data: Keras's JAX backend
    (``lax.dynamic_slice``) counts a negative start from the end and clamps it so that the
    window fits; its NumPy backend raises past the end and takes a window that wraps for a
    negative start (rows 3 and 0 for -1). The importer follows JAX: rows 2:4 of 4 for a start
    of 3, and for -1 (4 - 1 = 3); an in-range start agrees with Keras."""
    x_in = keras.Input((4, 5), name="x")
    j = keras.Input((1,), dtype="int32", name="j")
    s = j[0, 0]
    model = keras.Model({"x": x_in, "j": j}, [
        ops.slice(x_in, [0, s, 0], [1, 2, 5]),
        ops.slice_update(x_in * 1.0, [0, s, 0], ops.zeros((1, 2, 5)))])
    model.save(tmp_path / "m.keras")
    m = load_keras(tmp_path / "m.keras")
    x = _distinct((2, 4, 5), seed=4)
    for start, lo in [(1, 1), (3, 2), (-1, 2)]:
        inputs = {"x": x, "j": np.full((2, 1), start, "int32")}
        got_slice, got_update = m(inputs)
        want_update = x.copy()
        want_update[0, lo:lo + 2] = 0.0
        np.testing.assert_array_equal(np.asarray(got_slice), x[:1, lo:lo + 2])
        np.testing.assert_array_equal(np.asarray(got_update), want_update)
        if start == 1:
            for g, r in zip((got_slice, got_update), model(inputs)):
                np.testing.assert_array_equal(np.asarray(g), np.asarray(r))
        elif start == 3 and keras.backend.backend() == "numpy":
            with pytest.raises(IndexError):
                model(inputs)


def test_scatter_broadcasts_its_values_as_on_jax(tmp_path):
    """``ops.scatter`` with values that broadcast against the indices' leading shape
    (indices (2, 3, 1), values (3,), shape (4,)): Keras's JAX backend broadcasts them, its
    NumPy backend raises; the importer broadcasts (it failed with a raw broadcasting error).
    Checked against ``np.add.at`` of the broadcast values."""
    x_in = keras.Input((5,), name="x")
    idx = np.array([[[0], [2], [3]], [[1], [1], [0]]])
    model = keras.Model(x_in, ops.scatter(idx, x_in[0, :3], (4,)))
    model.save(tmp_path / "m.keras")
    x = _distinct((2, 5), seed=6)
    want = np.zeros(4, "float32")
    np.add.at(want, idx[..., 0], np.broadcast_to(x[0, :3], (2, 3)))
    np.testing.assert_allclose(np.asarray(load_keras(tmp_path / "m.keras")(x)), want,
                               rtol=1e-6)
    if keras.backend.backend() == "numpy":
        with pytest.raises(ValueError):
            model(x)
    else:
        np.testing.assert_allclose(np.asarray(model(x)), want, rtol=1e-6)


@pytest.mark.parametrize("make,match", [
    (lambda x: ops.scatter_update(x * 1.0, np.zeros((1, 1, 2), "int32"), x[0, 0]),
     r"scatter_update: expected integer indices of shape \(k,\) \(one index\) or \(N, k\) "
     r"\(N of them\) with k <= 3 \(the input's rank\), got int32 \(1, 1, 2\)"),
    (lambda x: ops.scatter(np.zeros((2, 3, 1), "int32"), x[0, 0, :2], (4,)),
     r"scatter: expected values of shape \(2, 3\) \(the indices' \(2, 3\), then "
     r"shape\[1:\]\) or broadcastable to it, got \(2,\)"),
], ids=["scatter_update_indices", "scatter_values"])
def test_scatter_shapes_refused_naming_the_accepted_forms(tmp_path, make, match):
    x = keras.Input((2, 4), name="x")
    keras.Model(x, make(x)).save(tmp_path / "m.keras")
    with pytest.raises(KerasImportError, match=match):
        load_keras(tmp_path / "m.keras")


def _edited(model, class_name, **changes):
    """``model``'s architecture with ``changes`` made to the config of its (one) operation
    of class ``class_name``: configurations Keras refuses to build on this platform."""
    cfg = json.loads(model.to_json())
    [op] = [lc for lc in cfg["config"]["layers"] if lc["class_name"] == class_name]
    op["config"].update(changes)
    return cfg


@pytest.mark.parametrize("make,cls,changes,match", [
    (lambda x: ops.quantile(x, 0.5, axis=-1, method="lower"), None, {},
     "ignores the method"),
    (lambda x: ops.pad(x, ((0, 0), (1, 1)), mode="mean"), None, {}, "pad mode 'mean'"),
    (lambda x: ops.dot_product_attention(*[ops.reshape(x, (-1, 3, 2, 2))] * 3),
     "DotProductAttention", {"attn_logits_soft_cap": 5.0}, "soft_cap"),
    (lambda x: ops.linspace(x[:, 0], x[:, 1], 3), "Linspace", {"retstep": True}, "retstep"),
    (lambda x: ops.image.resize(ops.reshape(x, (-1, 2, 2, 3)), (3, 3)), "Resize",
     {"interpolation": "gaussian"}, "interpolation 'gaussian'"),
], ids=["quantile_method", "pad_mean", "dpa_soft_cap", "linspace_retstep", "resize_gaussian"])
def test_refused_configurations(tmp_path, make, cls, changes, match):
    """Configurations whose Keras result the converters do not reproduce are refused with
    an error naming the operation."""
    x = keras.Input((12,), name="x")
    model = keras.Model(x, make(x))
    model.save(tmp_path / "m.keras")
    config = _edited(model, cls, **changes) if cls else None
    with pytest.raises(UnsupportedLayerError, match=match):
        load_keras(tmp_path / "m.keras", config=config)


def _tiny(tmp_path, inputs, outputs, x):
    """A small model of ``inputs`` -> ``outputs`` saved, loaded, run on ``x``: (ours, Keras's,
    the loaded model)."""
    model = keras.Model(inputs, outputs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ref = model(x)
    model.save(tmp_path / "m.keras")
    m = load_keras(tmp_path / "m.keras")
    ours = m(x)
    if len(outputs) == 1:  # one output: one array, not a list, from either model
        ours, ref = [ours], [ref]
    return ours, ref, m


def test_tile_with_one_count(tmp_path):
    """``ops.tile(x, 2)`` records ``repeats`` as an int (it was refused as a malformed
    config)."""
    x = keras.Input((3,), name="x")
    xv = np.arange(6, dtype="float32").reshape(2, 3)
    ours, ref, _ = _tiny(tmp_path, x, [ops.tile(x, 2), ops.tile(x, (2, 1))], xv)
    _compare(["tile_int", "tile_tuple"], ours, ref)
    np.testing.assert_array_equal(np.asarray(ours[0]), np.tile(xv, 2))


def test_int8_matmul_and_einsum_accumulate_in_int32(tmp_path):
    """Keras computes ``matmul``/``einsum`` of int8 tensors in int32 (an int32 result:
    100 * 100 * 3 = 30000), ``tensordot`` in int8 as NumPy: the importer wrapped around."""
    a = keras.Input((2, 3), dtype="int8", name="a")
    outs = [ops.matmul(a, ops.transpose(a, (0, 2, 1))), ops.einsum("bij,bkj->bik", a, a),
            ops.tensordot(a, a, axes=[[1, 2], [1, 2]])]
    av = np.full((1, 2, 3), 100, "int8")
    av[0, 1] = [-100, 7, 1]
    ours, ref, _ = _tiny(tmp_path, a, outs, av)
    _compare(["matmul", "einsum", "tensordot"], ours, ref)
    exact = np.einsum("bij,bkj->bik", av.astype(np.int32), av.astype(np.int32))
    for o in ours[:2]:
        assert np.asarray(o).dtype == np.int32
        np.testing.assert_array_equal(np.asarray(o), exact)


def test_floor_and_ceil_of_integers_are_float(tmp_path):
    """Keras's ``floor``/``ceil`` cast integer and boolean tensors to float first (on every
    backend): a later ``negative`` of a uint8 floor is -202, not 54 (uint8 wrapped), and
    ``power(floor(int32), -1)`` is a float reciprocal."""
    x = keras.Input((4,), name="x")
    u8, i32, b = ops.cast(x, "uint8"), ops.cast(x, "int32"), ops.greater(x, 2.0)
    outs = [ops.negative(ops.floor(u8)), ops.ceil(u8), ops.floor(i32), ops.ceil(b),
            ops.power(ops.floor(i32), -1)]
    xv = np.array([[202.0, 1.0, 3.0, 7.0]], "float32")
    ours, ref, _ = _tiny(tmp_path, x, outs, xv)
    _compare(["neg_floor_u8", "ceil_u8", "floor_i32", "ceil_bool", "power_floor_i32"], ours,
             ref)
    assert all(np.asarray(o).dtype == np.float32 for o in ours)
    np.testing.assert_array_equal(np.asarray(ours[0]), -xv)


def test_hard_activations_have_keras_gradients_at_their_kinks(tmp_path):
    """``relu6``, ``hard_sigmoid``, ``hard_silu`` and ``hard_tanh`` (operations and activation
    strings) have the derivative Keras's JAX backend computes at their kinks, that of
    ``jax.nn.relu6``/``hard_sigmoid``/``hard_silu``/``hard_tanh``, which it calls: 0 at 6
    and at +-3 (``relu6(x + 3) / 6``), 1 at +-1 for ``hard_tanh`` (TF's and PyTorch's hard
    sigmoids give 0 at +-3 too). ``jnp.minimum``/``jnp.clip`` split a tie, 1/2 each side."""
    x = keras.Input((5,), name="x")
    act = {n: layers.Activation(n)(x) for n in ("hard_sigmoid", "hard_silu", "hard_tanh")}
    outs = [ops.relu6(x), ops.hard_sigmoid(x), ops.hard_silu(x), ops.hard_tanh(x), *act.values()]
    refs = [jax.nn.relu6, jax.nn.hard_sigmoid, jax.nn.hard_silu, jax.nn.hard_tanh,
            jax.nn.hard_sigmoid, jax.nn.hard_silu, jax.nn.hard_tanh]
    xv = np.array([[6.0, 3.0, -3.0, 1.0, -1.0], [0.0, 2.5, -0.5, 7.0, -4.0]], "float32")
    ours, ref, m = _tiny(tmp_path, x, outs, xv)
    _compare([f"out{i}" for i in range(len(outs))], ours, ref)
    grads = jax.jit(lambda v: [jax.grad(lambda u: jnp.sum(m.apply(m.params, u)[i]))(v)
                               for i in range(len(refs))])(jnp.asarray(xv))
    want = jax.jit(lambda v: [jax.vmap(jax.grad(f))(v) for f in refs])(xv.ravel())
    for i, f in enumerate(refs):
        np.testing.assert_allclose(np.asarray(grads[i]), np.asarray(want[i]).reshape(xv.shape),
                                   rtol=1e-6, atol=1e-7, err_msg=f"output {i} ({f.__name__})")
    # analytic, at 6, 3, -3, 1, -1: relu6 0 1 0 1 0; hard_sigmoid 0 0 0 1/6 1/6
    np.testing.assert_allclose(np.asarray(grads[0])[0], [0, 1, 0, 1, 0])
    np.testing.assert_allclose(np.asarray(grads[1])[0], [0, 0, 0, 1 / 6, 1 / 6], rtol=1e-6)


def _keras_sparsemax(x):
    """Keras 3.15's JAX-backend ``sparsemax`` on the last axis, as its source writes it
    (descending order by ``-sort(-x)``, stable: a tie keeps the lower index first)."""
    z = -1.0 * jnp.sort(x * -1.0, axis=-1)
    cums = jnp.cumsum(z, axis=-1)
    support = z - (cums - 1) / jnp.arange(1, x.shape[-1] + 1) > 0
    k = jnp.sum(support, axis=-1, keepdims=True)
    tau = (jnp.sum(jnp.where(support, cums, 0.0), axis=-1, keepdims=True) - 1) / k
    return jnp.maximum(x - tau, 0.0)


def test_sparsemax_gradient_at_tied_logits(tmp_path):
    """Tied logits: the order of the sorted ties decides which one the threshold's
    derivative reads; Keras sorts descending as ``-sort(-x)`` (the importer reversed an
    ascending sort, giving [-0.25, -0.5, 0, 0] below where Keras on JAX gives
    [-1, 0.25, 0, 0])."""
    x = keras.Input((4,), name="x")
    xv = np.array([[1.0, 1.0, 0.2, 0.0], [1.0, 0.9, 0.2, 0.0], [0.5, 0.5, 0.5, 0.0]],
                  "float32")
    ours, ref, m = _tiny(tmp_path, x, [ops.sparsemax(x * 1.0)], xv)
    _compare(["sparsemax"], ours, ref)
    w = jnp.asarray([[1.0, 2.0, 3.0, 4.0]])
    g = jax.jit(jax.grad(lambda v: jnp.sum(m.apply(m.params, v) * w)))(jnp.asarray(xv))
    g_ref = jax.jit(jax.grad(lambda v: jnp.sum(_keras_sparsemax(v) * w)))(jnp.asarray(xv))
    np.testing.assert_allclose(np.asarray(g), np.asarray(g_ref), atol=1e-6)
    np.testing.assert_allclose(np.asarray(g)[0], [-1.0, 0.25, 0.0, 0.0], atol=1e-6)


def test_top_k_order_left_to_the_backend_warns(tmp_path):
    """``top_k(sorted=False)`` is ordered by each backend (Keras's NumPy backend:
    ``np.argpartition``'s order), and with ``sorted=True`` Keras's NumPy backend puts tied
    values' higher index first (JAX and TensorFlow the lower): the importer computes JAX's
    order and says so (``BackendWarning``), as for ``argpartition``. The values and indices
    found are Keras's."""
    x = keras.Input((6,), name="x")
    (v, i), (v2, i2) = ops.top_k(x, 3, sorted=False), ops.top_k(x, 3)
    xv = np.array([[0.1, 0.5, 0.3, 0.9, 0.7, 0.2], [1.0, 2.0, 2.0, 0.0, 2.0, 1.0]], "float32")
    with pytest.warns(BackendWarning, match=r"top_k\(sorted=False\).*keras_backend='jax'"):
        ours, ref, _ = _tiny(tmp_path, x, [v, i, v2, i2], xv)
    # the same k values and indices, in the backend's order
    for a, r in zip(ours[:2], ref[:2]):
        np.testing.assert_array_equal(np.sort(np.asarray(a), -1), np.sort(np.asarray(r), -1))
    np.testing.assert_array_equal(np.asarray(ours[2]), np.asarray(ref[2]))
    np.testing.assert_array_equal(np.asarray(ours[3]), [[3, 4, 1], [1, 2, 4]])  # lower first
    np.testing.assert_array_equal(np.asarray(ours[3]), np.asarray(
        jax.lax.top_k(jnp.asarray(xv), 3)[1]))
    with warnings.catch_warnings():
        warnings.simplefilter("error", BackendWarning)  # JAX's order: nothing to say
        load_keras(tmp_path / "m.keras", keras_backend="jax")
    with pytest.warns(BackendWarning) as rec:
        load_keras(tmp_path / "m.keras", keras_backend="numpy")
    said = [str(w.message) for w in rec]
    assert any("tied values" in w for w in said) and any("sorted=False" in w for w in said)
    assert not any("keras_backend='jax'" in w for w in said), said


def test_shrink_and_sparse_activations_of_integers_follow_the_backend(tmp_path):
    """``sparse_plus``, ``sparse_sigmoid`` and ``hard_shrink`` of integer or boolean tensors:
    Keras's JAX backend computes them in float32 (``jax.nn.sparse_plus(0)`` is 0.25), its
    NumPy backend in the tensor's dtype (0). The importer kept the dtype whatever the
    backend; it now follows JAX's unless the backend is NumPy, and says so where the file
    does not record it."""
    x = keras.Input((5,), name="x")
    i32, b = ops.cast(x, "int32"), ops.greater(x, 0.5)
    outs = [ops.sparse_plus(i32), ops.sparse_sigmoid(i32), ops.hard_shrink(i32, 1.5),
            ops.sparse_plus(b), ops.hard_shrink(b)]
    xv = np.array([[-2.0, -1.0, 0.0, 1.0, 3.0]], "float32")
    with pytest.warns(BackendWarning, match="integer or boolean.*keras_backend"):
        got, ref, _ = _tiny(tmp_path, x, outs, xv)  # ref on NumPy: the tensor's dtype
    iv, bv = jnp.asarray(xv, jnp.int32), jnp.asarray(xv > 0.5)
    # Keras 3.15's JAX backend: jax.nn's functions, hard_shrink written out as it writes it
    want = [jax.nn.sparse_plus(iv), jax.nn.sparse_sigmoid(iv),
            jnp.where(jnp.abs(iv) > 1.5, iv, 0.0), jax.nn.sparse_plus(bv),
            jnp.where(jnp.abs(bv) > 0.5, bv, 0.0)]
    for g, w in zip(got, want):  # the file records no backend: JAX's, with a warning
        assert np.asarray(g).dtype == np.float32
        np.testing.assert_array_equal(np.asarray(g), np.asarray(w))
    np.testing.assert_array_equal(np.asarray(got[0])[0], [0, 0, 0.25, 1, 3])
    names = [f"out{i}" for i in range(5)]
    if keras.backend.backend() != "numpy":  # KERAS_BACKEND=jax: Keras's float32 outputs
        _compare(names, got, ref)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("error", BackendWarning)
        _compare(names, load_keras(tmp_path / "m.keras", keras_backend="numpy")(xv), ref)
