"""Transposed convolutions, Resizing and CenterCrop against Keras 3 (NumPy backend unless
``KERAS_BACKEND`` says otherwise), over more configurations than the layer zoos build:
each converter is built from a Keras layer's own config and weights and run on the input the
Keras layer was called on. Saved files (``.keras``, ``.h5``) are in the ``upsampling`` zoos
of test_import_layers.py. Also: the adjoint identity of these linear layers (so their
gradients are right), jit, and the refusals.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

keras = pytest.importorskip("keras")
from keras import layers  # noqa: E402

import model_import  # noqa: E402
from import_helpers import rel_err  # noqa: E402
from model_import import UnsupportedLayerError  # noqa: E402
from model_import._layers.activations import get_activation  # noqa: E402
from model_import._layers.image import (aspect_crop_box, aspect_pads,  # noqa: E402
                                        nearest_indices)
from model_import._layers.registry import ConvertContext, lookup  # noqa: E402

TOL = 1e-5


def _ours(layer, x):
    """Our converter for ``layer`` (from its config and weights) applied to ``x``, with the
    fused activation as the model graph applies it."""
    cls = type(layer).__name__
    impl = lookup(cls)(layer.get_config(), ConvertContext(layer.name, cls))
    params = impl.convert_weights([np.asarray(w) for w in layer.get_weights()])
    y = impl.call(params, jnp.asarray(x), rt=None)
    if impl.activation is not None:
        y = get_activation(impl.activation)(y, model_import.Runtime())
    return impl, params, np.asarray(y)


def _check(layer, x):
    ref = np.asarray(layer(x))
    impl, params, y = _ours(layer, x)
    assert y.shape == ref.shape
    assert rel_err(y, ref) <= TOL, rel_err(y, ref)
    return impl, params


def _random_weights(layer, rng):
    layer.set_weights([rng.normal(size=w.shape).astype("float32") for w in layer.get_weights()])


def _transpose_configs():
    out = []
    for k, s, pad, d, op in itertools.product((1, 2, 3, 4), (1, 2, 3), ("valid", "same"),
                                              (1, 2), (None, 0, 1, 2)):
        if (s > 1 and d > 1) or (op is not None and op >= s):
            continue  # Keras refuses both
        out.append((k, s, pad, d, op))
    return out


@pytest.mark.parametrize("rank", [1, 2])
def test_conv_transpose_matches_keras(rank):
    """Every padding x stride x kernel (smaller and larger than the stride) x dilation x
    output_padding that Keras accepts, channels_last and channels_first."""
    rng = np.random.default_rng(rank)
    cls = getattr(layers, f"Conv{rank}DTranspose")
    for i, (k, s, pad, d, op) in enumerate(_transpose_configs()):
        cf = i % 2 == 1
        shape = (2, 3) + (5,) * rank if cf else (2,) + (5,) * rank + (3,)
        x = rng.normal(size=shape).astype("float32")
        layer = cls(4, k, strides=s, padding=pad, dilation_rate=d, output_padding=op,
                    use_bias=i % 3 != 0, activation="tanh" if i % 4 == 0 else None,
                    data_format="channels_first" if cf else "channels_last")
        layer.build(shape)
        _random_weights(layer, rng)
        _check(layer, x)


def test_conv3d_transpose_matches_keras():
    rng = np.random.default_rng(3)
    for i, (k, s, pad, op, cf) in enumerate([
            ((3, 2, 1), (2, 1, 3), "same", None, False),
            ((2, 2, 2), (2, 2, 2), "valid", (1, 0, 1), True),
            (3, 3, "same", (2, 1, 0), False),
            ((1, 3, 2), 1, "valid", None, True)]):
        shape = (2, 2, 4, 3, 5) if cf else (2, 4, 3, 5, 2)
        layer = layers.Conv3DTranspose(3, k, strides=s, padding=pad, output_padding=op,
                                       data_format="channels_first" if cf else None)
        layer.build(shape)
        _random_weights(layer, rng)
        _check(layer, rng.normal(size=shape).astype("float32"))


def test_nearest_indices_match_keras():
    """Keras's "nearest" rule, floor((j + 0.5) * n_in / n_out) in float32, for every pair of
    sizes up to 64 (up and down, ties included). The reference is Keras's NumPy backend's
    resize on every backend: on JAX, Keras calls ``jax.image.resize``, where XLA:CPU divides
    in float32 by a reciprocal and puts exact ties below (``n_in=2, n_out=41, j=20``: 0.99999994,
    index 0, where the rule gives 1), and which compiles a program per size pair (this loop
    ran over 10 minutes there)."""
    import keras.src.backend as backend

    ops = backend.numpy  # on JAX, importing the NumPy backend replaces this attribute
    from keras.src.backend.numpy import image as numpy_image
    backend.numpy = ops

    for n_in in range(1, 65):
        x = np.arange(n_in, dtype="float32").reshape(1, n_in, 1, 1)
        for n_out in range(1, 65):
            ref = numpy_image.resize(x, (n_out, 1), interpolation="nearest")
            np.testing.assert_array_equal(nearest_indices(n_in, n_out),
                                          np.asarray(ref)[0, :, 0, 0].astype(int))


_SIZES = [(5, 7), (8, 8), (1, 3), (13, 6)]
_TARGETS = [(3, 4), (5, 7), (11, 9), (16, 16), (2, 13), (1, 1)]


@pytest.mark.parametrize("interpolation", ["bilinear", "nearest", "bicubic", "lanczos3",
                                           "lanczos5"])
def test_resizing_matches_keras(interpolation):
    """Up- and downsampling, odd sizes, antialias on and off, crop or pad to the aspect
    ratio, both data formats."""
    rng = np.random.default_rng(0)
    for i, ((h, w), (th, tw)) in enumerate(itertools.product(_SIZES, _TARGETS)):
        cf = i % 2 == 1
        mode = ("plain", "crop", "pad")[i % 3]
        x = rng.normal(size=(2, 3, h, w) if cf else (2, h, w, 3)).astype("float32")
        for antialias in (False, True):
            _check(layers.Resizing(th, tw, interpolation=interpolation, antialias=antialias,
                                   crop_to_aspect_ratio=mode == "crop",
                                   pad_to_aspect_ratio=mode == "pad", fill_value=0.7,
                                   data_format="channels_first" if cf else "channels_last"), x)


def test_center_crop_matches_keras():
    """A target inside the image is a centred crop (the extra pixel of an odd difference on
    the bottom/right); one larger than the image along either axis crops to the target's
    aspect ratio and resizes bilinearly."""
    rng = np.random.default_rng(1)
    for (h, w), (th, tw), cf in itertools.product(
            [(5, 7), (8, 8), (13, 6), (4, 20)], [(3, 4), (5, 7), (11, 9), (2, 13), (4, 6)],
            (False, True)):
        x = rng.normal(size=(2, 3, h, w) if cf else (2, h, w, 3)).astype("float32")
        _check(layers.CenterCrop(th, tw, data_format="channels_first" if cf else None), x)


def _area_reference(x, axes, sizes):
    """The exact area average: every pixel repeated ``L / n_in`` times along an axis
    (``L = lcm(n_in, n_out)``), then blocks of ``L / n_out`` averaged."""
    for axis, n_out in zip(axes, sizes):
        n_in = x.shape[axis]
        big = np.lcm(n_in, n_out)
        x = np.repeat(x, big // n_in, axis=axis)
        shape = x.shape[:axis] + (n_out, big // n_out) + x.shape[axis + 1:]
        x = x.reshape(shape).mean(axis=axis + 1)
    return x


def test_resizing_area_is_the_area_average():
    """"area" (tf.keras 2, Keras 3 on TensorFlow: TensorFlow's ResizeArea; Keras 3's NumPy
    and JAX backends have no such method) against the exact area integral, up and down, odd
    ratios, both data formats, crop/pad to the aspect ratio; for whole factors against Keras's
    AveragePooling2D and UpSampling2D. (Checked once against TensorFlow 2.21's ResizeArea on
    every pair of sizes up to 40: equal within 1e-5.)"""
    rng = np.random.default_rng(6)
    for i, ((h, w), (th, tw)) in enumerate(itertools.product(_SIZES, _TARGETS)):
        cf = i % 2 == 1
        x = rng.normal(size=(2, 3, h, w) if cf else (2, h, w, 3)).astype("float32")
        axes = (2, 3) if cf else (1, 2)
        cfg = {"height": th, "width": tw, "interpolation": "area",
               "data_format": "channels_first" if cf else "channels_last"}
        impl = lookup("Resizing")(cfg, ConvertContext("r", "Resizing"))
        y = np.asarray(impl.call({}, x, rt=None))
        assert rel_err(y, _area_reference(x.astype(np.float64), axes, (th, tw))) <= TOL
    x = rng.normal(size=(2, 12, 10, 3)).astype("float32")
    for (th, tw), ref in [((4, 5), layers.AveragePooling2D((3, 2))(x)),
                          ((24, 30), layers.UpSampling2D((2, 3))(x))]:
        impl = lookup("Resizing")({"height": th, "width": tw, "interpolation": "area"},
                                  ConvertContext("r", "Resizing"))
        assert rel_err(impl.call({}, x, rt=None), ref) <= TOL
    # crop/pad to the aspect ratio: the box the other methods use (tested against Keras above)
    x = rng.normal(size=(2, 7, 12, 3)).astype("float32")
    for th, tw, flag in [(4, 3, "crop_to_aspect_ratio"), (5, 2, "pad_to_aspect_ratio")]:
        impl = lookup("Resizing")({"height": th, "width": tw, "interpolation": "area",
                                   flag: True, "fill_value": 0.5},
                                  ConvertContext("r", "Resizing"))
        if flag == "crop_to_aspect_ratio":
            top, left, ch, cw = aspect_crop_box(7, 12, th, tw)
            box = x[:, top:top + ch, left:left + cw]
        else:
            ph, pw = aspect_pads(7, 12, th, tw)
            box = np.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)), constant_values=0.5)
        ref = _area_reference(box.astype(np.float64), (1, 2), (th, tw))
        assert rel_err(impl.call({}, x, rt=None), ref) <= TOL
    # gradients (saliency) through it: finite, and the same under jit
    grad = jax.grad(lambda v: jnp.sum(impl.call({}, v, rt=None)))
    g = np.asarray(grad(jnp.asarray(x)))
    assert np.isfinite(g).all() and np.abs(g).max() > 0
    np.testing.assert_allclose(np.asarray(jax.jit(grad)(x)), g, rtol=1e-5, atol=1e-6)


_LINEAR_LAYERS = [
    lambda: layers.Conv2DTranspose(4, 3, strides=2, padding="same", output_padding=1),
    lambda: layers.Conv2DTranspose(2, (2, 3), strides=(3, 1), data_format="channels_first"),
    lambda: layers.Conv1DTranspose(3, 3, dilation_rate=2, padding="same"),
    lambda: layers.Conv3DTranspose(2, 2, strides=(1, 2, 2)),
    lambda: layers.Resizing(11, 4, interpolation="bicubic"),
    lambda: layers.Resizing(5, 13, interpolation="nearest", crop_to_aspect_ratio=True),
    lambda: layers.Resizing(9, 4, antialias=True, pad_to_aspect_ratio=True, fill_value=0.3),
    lambda: layers.Resizing(3, 12, interpolation="lanczos3"),
    lambda: layers.CenterCrop(3, 4),
    lambda: layers.CenterCrop(9, 4, data_format="channels_first"),
]


@pytest.mark.parametrize("make", _LINEAR_LAYERS)
def test_gradients_are_the_adjoint(make):
    """These layers are affine in their input: the input gradient must be the adjoint,
    <f(x) - f(0), g> = <x, vjp(g)>, and jit gives the same values and gradient."""
    rng = np.random.default_rng(4)
    layer = make()
    name = type(layer).__name__
    rank = 3 if "3D" in name else 1 if "1D" in name else 2
    shape = (2,) + (7, 6, 5)[:rank] + (3,)
    if getattr(layer, "data_format", None) == "channels_first":
        shape = (2, 3) + shape[1:-1]
    x = rng.normal(size=shape).astype("float32")
    if hasattr(layer, "kernel_size"):  # a transposed convolution: random weights
        layer.build(shape)
        _random_weights(layer, rng)
    impl, params = _check(layer, x)

    def f(v):
        return impl.call(params, v, rt=None)

    y, pullback = jax.vjp(f, jnp.asarray(x))
    g = rng.normal(size=y.shape).astype("float32")
    (dx,) = pullback(jnp.asarray(g))
    lhs = float(np.vdot(np.asarray(y) - np.asarray(f(jnp.zeros_like(x))), g))
    rhs = float(np.vdot(x, np.asarray(dx)))
    assert abs(lhs - rhs) <= 1e-4 * max(abs(lhs), 1.0), (lhs, rhs)
    grad = jax.grad(lambda v: jnp.sum(f(v)))
    eager = np.asarray(grad(jnp.asarray(x)))
    assert np.isfinite(eager).all() and np.abs(eager).max() > 0
    np.testing.assert_allclose(np.asarray(jax.jit(grad)(x)), eager, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(jax.jit(f)(x)), np.asarray(y), rtol=1e-5, atol=1e-5)


def _resizing_model(**resizing):
    return {"class_name": "Sequential", "config": {"name": "s", "layers": [
        {"class_name": "InputLayer", "config": {"batch_shape": [None, 6, 5, 3], "name": "in"}},
        {"class_name": "Resizing", "config": {"name": "resize", "height": 4, "width": 4,
                                               **resizing}}]}}


@pytest.mark.parametrize("interpolation", ["gaussian", "mitchellcubic", "cubic"])
def test_resizing_refuses_other_interpolations(interpolation):
    """tf.keras 2 also accepted "gaussian" and "mitchellcubic" (no Keras 3 backend has
    them): refused, naming the method."""
    with pytest.raises(UnsupportedLayerError, match=f"'resize' of class 'Resizing'.*"
                                                    f"interpolation '{interpolation}'"):
        model_import.build_model(_resizing_model(interpolation=interpolation), None,
                                 path="inline")


def test_resizing_refuses_other_fill_modes():
    with pytest.raises(UnsupportedLayerError, match="fill_mode 'reflect'"):
        model_import.build_model(_resizing_model(pad_to_aspect_ratio=True,
                                                 fill_mode="reflect"), None, path="inline")


def test_keras2_style_configs():
    """tf.keras 2 configs: Resizing without data_format/pad_to_aspect_ratio/antialias, a
    transposed convolution with ``output_padding: null``; same kernel layout."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(2, 5, 6, 3)).astype("float32")
    cfg = {"name": "r", "height": 7, "width": 4, "interpolation": "bilinear",
           "crop_to_aspect_ratio": True}
    impl = lookup("Resizing")(cfg, ConvertContext("r", "Resizing"))
    ref = keras.layers.Resizing(7, 4, crop_to_aspect_ratio=True)(x)
    assert rel_err(impl.call({}, x, rt=None), ref) <= TOL
    ct = layers.Conv2DTranspose(2, 3, strides=2)
    ct.build(x.shape)
    _random_weights(ct, rng)
    cfg = {"name": "ct", "filters": 2, "kernel_size": [3, 3], "strides": [2, 2],
           "padding": "valid", "data_format": "channels_last", "dilation_rate": [1, 1],
           "output_padding": None, "activation": "linear", "use_bias": True, "groups": 1}
    impl = lookup("Conv2DTranspose")(cfg, ConvertContext("ct", "Conv2DTranspose"))
    params = impl.convert_weights([np.asarray(w) for w in ct.get_weights()])
    assert rel_err(impl.call(params, x, rt=None), ct(x)) <= TOL


def _np_conv_transpose(x, k, strides, pads):
    """A channels-last transposed convolution written out in NumPy (no dilation): the input
    spread ``strides`` apart, padded by ``pads`` (negative: cropped), correlated with the
    spatially flipped kernel ``(*window, out, in)``."""
    rank = k.ndim - 2
    xd = np.zeros((x.shape[0], *[(m - 1) * s + 1 for m, s in zip(x.shape[1:-1], strides)],
                   x.shape[-1]), np.float64)
    xd[(slice(None), *[slice(None, None, s) for s in strides])] = x
    for axis, (lo, hi) in enumerate(pads, start=1):
        widths = [(0, 0)] * xd.ndim
        widths[axis] = (max(lo, 0), max(hi, 0))
        xd = np.pad(xd, widths)
        idx = [slice(None)] * xd.ndim
        idx[axis] = slice(max(-lo, 0), xd.shape[axis] - max(-hi, 0))
        xd = xd[tuple(idx)]
    kf = np.flip(k, axis=tuple(range(rank)))
    out = [xd.shape[1 + i] - k.shape[i] + 1 for i in range(rank)]
    y = np.zeros((x.shape[0], *out, k.shape[-2]))
    for off in np.ndindex(*k.shape[:rank]):
        win = xd[(slice(None), *[slice(o, o + m) for o, m in zip(off, out)])]
        y += np.einsum("n...c,oc->n...o", win, kf[off])
    return y


@pytest.mark.parametrize("shape, window, strides, padding, output_padding", [
    ((2, 3, 3, 1), (2, 4), (2, 2), "SAME", (0, 1)),  # aborted the process in XLA before
    ((2, 3, 3, 2), (4, 2), (2, 2), "VALID", None),
    ((1, 2, 3, 2), (3, 4), (1, 2), "SAME", None),
    ((2, 3, 3, 3, 1), (2, 2, 4), (2, 2, 2), "SAME", (1, 0, 1))])
def test_conv_transpose_with_a_window_larger_than_the_input(shape, window, strides, padding,
                                                            output_padding):
    """XLA (jax 0.10.2) aborts the whole process on some input-dilated convolutions whose
    window is larger than the input (found by a random sweep); the port dilates and pads
    such inputs itself. Checked against the operation written out in NumPy, with its
    gradient and vmap."""
    from model_import._layers.conv import conv_transpose, transpose_pads

    rng = np.random.default_rng(0)
    x = rng.normal(size=shape).astype("float32")
    k = rng.normal(size=(*window, 3, shape[-1])).astype("float32")
    rank = len(window)
    op = output_padding or (None,) * rank
    pads = [transpose_pads(shape[1 + i], window[i], strides[i], padding, op[i], 1)
            for i in range(rank)]
    f = lambda x: conv_transpose(x, jnp.asarray(k), strides, padding, output_padding,  # noqa: E731
                                 (1,) * rank)
    y = np.asarray(jax.jit(f)(jnp.asarray(x)))
    assert rel_err(y, _np_conv_transpose(x, k, strides, pads)) <= TOL
    g = jax.grad(lambda x: jnp.sum(f(x) ** 2))(jnp.asarray(x))
    assert g.shape == x.shape and bool(jnp.all(jnp.isfinite(g)))
    yv = jax.vmap(lambda a: f(a[None])[0])(jnp.asarray(x))
    assert rel_err(yv, y) <= TOL


def test_resizing_pads_integer_images_in_float():
    """``pad_to_aspect_ratio`` on a uint8 image: Keras 3 pads with ``fill_value`` in float,
    interpolates in float and rounds and saturates back to uint8, so a fill of 0.6 becomes 1
    (it was cast to uint8 first here: 0), and -1 and 300 become 0 and 255 (they were
    refused: out of bounds for uint8). The padded rows, analytically: round and clip of the
    fill; the image rows stay 100."""
    x = np.full((1, 2, 4, 1), 100, np.uint8)  # padded to 4 x 4: no interpolation
    x2 = np.random.default_rng(2).integers(0, 256, (1, 2, 6, 1)).astype(np.uint8)  # 6 x 6
    for interpolation, fill, img in itertools.product(("nearest", "bilinear"),
                                                      (0.6, -1.0, 300.0), (x, x2)):
        layer = layers.Resizing(4, 4, interpolation=interpolation, pad_to_aspect_ratio=True,
                                fill_value=fill)
        y = _ours(layer, img)[2]
        want = np.asarray(layer(img))
        assert y.dtype == want.dtype == np.uint8, (interpolation, fill)
        np.testing.assert_array_equal(y, want, err_msg=f"{interpolation} {fill}")
        if interpolation == "nearest" and img is x:
            np.testing.assert_array_equal(y[0, :, 0, 0], [np.clip(round(fill), 0, 255), 100,
                                                          100, np.clip(round(fill), 0, 255)])


def test_integer_images_through_resizing_layers_as_keras(tmp_path):
    """A raw uint8 (or int32) image model: ``Resizing``, bilinear ``UpSampling2D`` and an
    enlarging ``CenterCrop`` interpolate in float and, as Keras 3 does, round and saturate
    back to the image's dtype (``CenterCrop``: cast to float32 first). The interpolation
    weights were cast to the integer dtype: zeros. The input keeps its ``InputLayer`` dtype,
    so uint8 arithmetic wraps as in Keras. Rounding ties may fall either way by backend
    (NumPy computes in float64): values within 1."""
    from import_helpers import save_keras_and_h5

    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, size=(2, 6, 6, 3)).astype(np.uint8)
    for dtype in ("uint8", "int32"):
        cases = {"resize_bilinear": lambda: layers.Resizing(4, 9),
                 "resize_bicubic": lambda: layers.Resizing(4, 9, interpolation="bicubic"),
                 "upsampling": lambda: layers.UpSampling2D(2, interpolation="bilinear"),
                 "center_crop_up": lambda: layers.CenterCrop(8, 4)}
        if dtype == "int32":  # bicubic overshoot below 0: kept by Keras's JAX backend (and
            del cases["resize_bicubic"]  # here), clipped by its NumPy one
        for name, make in cases.items():
            inp = keras.Input((6, 6, 3), dtype=dtype)
            model = keras.Model(inp, make()(inp))
            want = np.asarray(model(x.astype(dtype)))
            for path in save_keras_and_h5(model, tmp_path, f"{dtype}_{name}").values():
                got = np.asarray(model_import.load_keras(path)(x.astype(dtype)))
                assert got.dtype == want.dtype, (dtype, name, path)
                diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
                assert diff.max() <= 1 and (diff > 0).mean() < 0.05, (dtype, name, path)
    inp = keras.Input((4,), dtype="uint8")
    model = keras.Model(inp, keras.ops.subtract(inp, 200))
    u = np.array([[0, 100, 200, 255]], np.uint8)
    for path in save_keras_and_h5(model, tmp_path, "wrap").values():
        np.testing.assert_array_equal(np.asarray(model_import.load_keras(path)(u)),
                                      np.asarray(model(u)))
