"""Image augmentation and preprocessing layers (model_import/_layers/augment.py) against real
Keras 3 at inference (``predict``, ``model(x, training=False)``), after saving as ``.keras``
and ``.h5``; tf.keras 2's RandomCrop, RandomHeight and RandomWidth against a small tf_keras
2.21 file (tests/fixtures/keras2/make_random_crop_tfkeras2.py).
"""

import json

import numpy as np
import pytest

keras = pytest.importorskip("keras")
from keras import layers  # noqa: E402

from import_helpers import keras_outputs, perturb_keras, rel_err  # noqa: E402
from model_import import build_model, load_keras  # noqa: E402

TOL = 1e-5

# Keras's own symbolic build (and its division by zero on a constant image) warns
pytestmark = pytest.mark.filterwarnings("ignore:.*encountered in:RuntimeWarning")

# The classes these tests build (for test_import_layers.py's coverage check)
COVERED = {"AugMix", "AutoContrast", "CutMix", "Equalization", "MaxNumBoundingBoxes", "MixUp",
           "Pipeline", "RandAugment", "RandomColorDegeneration", "RandomColorJitter",
           "RandomCrop", "RandomElasticTransform", "RandomErasing", "RandomGaussianBlur",
           "RandomGrayscale", "RandomHue", "RandomInvert", "RandomPerspective",
           "RandomPosterization", "RandomSaturation", "RandomSharpness", "RandomShear",
           "Solarization", "RandomFlip", "RandomRotation", "RandomZoom", "RandomTranslation",
           "RandomContrast", "RandomBrightness", "RandomHeight", "RandomWidth"}


def _identity_layers(df, vr, h5):
    """Keras 3 layers that are the identity at inference. Keras 3.15 cannot write some of
    them to a legacy .h5 (their config holds a module: ``h5=False``) and cannot build
    RandomColorJitter channels_first in a model."""
    c = {"data_format": df}
    out = [layers.AugMix(value_range=vr, **c), layers.CutMix(**c), layers.MixUp(**c),
           layers.MaxNumBoundingBoxes(3, **c), layers.RandAugment(value_range=vr, **c),
           layers.RandomElasticTransform(value_range=vr, **c),
           layers.RandomErasing(value_range=vr, **c),
           layers.RandomGaussianBlur(value_range=vr, **c),
           layers.RandomGrayscale(1.0, **c), layers.RandomHue(0.5, vr, **c),
           layers.RandomInvert(value_range=vr, **c), layers.RandomPerspective(1.0, **c),
           layers.RandomShear(**c), layers.RandomFlip(**c), layers.RandomRotation(0.3, **c),
           layers.RandomZoom(0.3, **c), layers.RandomTranslation(0.2, 0.2, **c),
           layers.RandomContrast(0.5, value_range=vr, **c)]
    if df == "channels_last":
        out.append(layers.RandomColorJitter(vr, 0.3, 0.3, 0.3, 0.3, **c))
    if not h5:
        out += [layers.RandomColorDegeneration(0.5, vr, **c),
                layers.RandomPosterization((1, 4), vr, **c),
                layers.RandomSaturation(0.5, vr, **c), layers.RandomSharpness(0.5, vr, **c),
                layers.Solarization(0.3, 0.5, vr, **c),
                layers.RandomBrightness(0.3, value_range=vr, **c),
                layers.RandomShear(0.4, 0.3, **c)]  # Keras 3.15 cannot load this one back
    return out


def _x(shape, scale, n=3, seed=0):
    return (np.random.default_rng(seed).uniform(0.05, 0.95, (n, *shape)) * scale).astype(
        "float32")


def _compare(km, path, x, names):
    """The ported model's named layer outputs and final output against Keras's."""
    m = load_keras(path)
    y, acts = m.apply(m.params, x, capture=names)
    ref = keras_outputs(km, names, x)
    bad = {n: rel_err(acts[n], ref[n]) for n in names if rel_err(acts[n], ref[n]) > TOL}
    assert not bad, bad
    assert rel_err(y, km.predict(x, verbose=0)) <= TOL
    return m


@pytest.mark.parametrize("ext", [".keras", ".h5"])
@pytest.mark.parametrize("df,vr", [("channels_last", (0, 255)), ("channels_first", (0, 1))])
def test_identity_at_inference(tmp_path, df, vr, ext):
    shape = (9, 11, 3) if df == "channels_last" else (3, 9, 11)
    inp = keras.Input(shape)
    h, names = inp, []
    for lay in _identity_layers(df, vr, h5=ext == ".h5"):
        h = lay(h)
        names.append(lay.name)
    km = keras.Model(inp, layers.Conv2D(2, 3, data_format=df, name="conv")(h))
    km.save(tmp_path / f"m{ext}")
    _compare(km, tmp_path / f"m{ext}", _x(shape, vr[1]), names)


def test_identity_layers_on_integer_images(tmp_path):
    """A uint8 image through each Keras 3 identity layer: 14 of them cast it to float32 even
    at inference (RandomFlip, RandomRotation...), the others pass it on as uint8; the dtype
    decides what follows (uint8 arithmetic wraps, Resizing rounds back to uint8)."""
    inp = keras.Input((5, 6, 3), dtype="uint8")
    lays = [layers.RandomFlip(), layers.RandomRotation(0.2), layers.RandomZoom(0.2),
            layers.RandomTranslation(0.1, 0.1), layers.RandAugment(), layers.AugMix(),
            layers.CutMix(), layers.RandomElasticTransform(), layers.RandomErasing(),
            layers.RandomGaussianBlur(), layers.RandomPerspective(),
            layers.RandomSharpness(0.2), layers.RandomShear(0.2), layers.Solarization(),
            layers.RandomContrast(0.2), layers.RandomBrightness(0.2), layers.RandomHue(0.2),
            layers.MixUp(), layers.RandomGrayscale(), layers.RandomInvert(),
            layers.RandomCrop(3, 4)]
    outs = [lay(inp) for lay in lays]
    outs += [keras.ops.multiply(outs[0], 2), layers.Resizing(3, 3)(outs[0])]
    km = keras.Model(inp, outs)
    km.save(tmp_path / "m.keras")
    x = np.random.default_rng(0).integers(0, 256, (2, 5, 6, 3)).astype("uint8")
    m = load_keras(tmp_path / "m.keras")
    wants = km.predict(x, verbose=0)
    assert sum(w.dtype == np.float32 for w in wants) == 14 + 2  # Keras 3.15
    for i, (got, want) in enumerate(zip(m.apply(m.params, x), wants)):
        assert np.asarray(got).dtype == want.dtype, (i, got.dtype, want.dtype)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-4, err_msg=str(i))


def test_equalization_is_the_identity_at_inference():
    """Keras 3.15 cannot build Equalization into a model on the NumPy backend (the symbolic
    call makes a cycle; a JAX-backend Pipeline can hold one), so its config is spliced into a
    saved architecture and compared with the layer called at inference."""
    inp = keras.Input((6, 7, 3))
    km = keras.Model(inp, layers.Identity(name="eq")(inp))
    cfg = json.loads(km.to_json())
    lay = next(c for c in cfg["config"]["layers"] if c["config"]["name"] == "eq")
    eq = layers.Equalization(value_range=(0, 1), bins=64)
    lay["class_name"], lay["config"] = "Equalization", {**eq.get_config(), "name": "eq"}
    m = build_model(cfg, None)
    x = _x((6, 7, 3), 1.0)
    assert rel_err(m.apply(m.params, x), eq(x, training=False)) == 0.0


@pytest.mark.parametrize("ext", [".keras", ".h5"])
@pytest.mark.parametrize("df,vr", [("channels_last", (0, 255)), ("channels_first", (0, 1)),
                                   ("channels_last", (-1, 1))])
def test_auto_contrast(tmp_path, df, vr, ext):
    """Min/max rescaling per image over Keras's axes 1 and 2 (per channel in channels_last,
    per column in channels_first); a constant image passes unchanged."""
    shape = (9, 11, 3) if df == "channels_last" else (3, 9, 11)
    inp = keras.Input(shape)
    a = layers.AutoContrast(value_range=vr, data_format=df, name="ac")(inp)
    km = keras.Model(inp, layers.Conv2D(2, 3, data_format=df, name="conv")(a))
    x = _x(shape, 1.0) * (vr[1] - vr[0]) * 0.8 + vr[0] + 0.05 * (vr[1] - vr[0])
    x[0] = x[0, 0, 0, 0]  # all values equal: Keras returns the input
    km.save(tmp_path / f"m{ext}")
    _compare(km, tmp_path / f"m{ext}", x.astype("float32"), ["ac", "conv"])


def test_auto_contrast_on_integer_images(tmp_path):
    """uint8 and int32 images: Keras casts them to float32 first and returns float32. With the
    default value_range (0, 255) there is no range mapping, and ``-low`` was computed in
    uint8 here (wrapping: every value came out 255)."""
    x = np.array([[[10, 200], [60, 110]], [[0, 255], [7, 7]]], "uint8")[..., None]
    ins = [keras.Input((2, 2, 1), dtype="uint8"), keras.Input((2, 2, 1), dtype="int32")]
    outs = [layers.AutoContrast()(ins[0]), layers.AutoContrast()(ins[1]),
            layers.AutoContrast(value_range=(0, 100))(ins[0])]
    km = keras.Model(ins, outs)
    km.save(tmp_path / "m.keras")
    xs = [x, x.astype("int32")]
    m = load_keras(tmp_path / "m.keras")
    for got, want in zip(m.apply(m.params, xs), km.predict(xs, verbose=0)):
        assert np.asarray(got).dtype == want.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-4)
    # (10, 200, 60, 110) stretched to span [0, 255]
    np.testing.assert_allclose(np.ravel(m.apply(m.params, xs)[0][0]),
                               (np.array([10, 200, 60, 110]) - 10) * 255 / 190, rtol=1e-6)


def test_auto_contrast_gradient():
    """Finite everywhere: on a constant image (where Keras divides by zero) it is the
    identity's; elsewhere, at a pixel that is neither its channel's minimum nor its maximum,
    it is the rescaling's slope ``1 / (max - min)``."""
    import jax
    import jax.numpy as jnp

    inp = keras.Input((5, 6, 2))
    km = keras.Model(inp, layers.AutoContrast(value_range=(0, 1), name="ac")(inp))
    cfg = json.loads(km.to_json())
    m = build_model(cfg, None)
    x = _x((5, 6, 2), 1.0, n=2)
    x[1] = 0.4
    w = np.random.default_rng(1).normal(size=x.shape).astype("float32")

    def f(v):
        return jnp.sum(m.apply(m.params, v) * w)

    g = np.asarray(jax.grad(f)(x))
    assert np.isfinite(g).all()
    np.testing.assert_allclose(g[1], w[1])  # a constant image: the identity
    x64 = x[:1].astype(np.float64)
    lo, hi = x64.min(axis=(1, 2), keepdims=True), x64.max(axis=(1, 2), keepdims=True)
    inner = (x64 > lo) & (x64 < hi)  # neither the minimum nor the maximum of its channel
    expect = w[:1] / (hi - lo)  # the direct term of (x - lo) / (hi - lo) per pixel
    np.testing.assert_allclose(g[:1][inner], np.broadcast_to(expect, x64.shape)[inner],
                               rtol=1e-5)



def test_auto_contrast_gradient_after_a_recomputed_producer():
    """After a per-channel affine map (a normalization before it), whose values XLA may
    compute twice with other roundings, the gradient of ``sum(w * AutoContrast(x))`` is the
    rescaling's, derived in NumPy (float64): ``y = 255 (x - lo) / (hi - lo)`` per image and
    channel, so each pixel gets its direct term ``255 w / (hi - lo)``, the channel's minimum
    also ``sum(w dy/dlo)`` and its maximum ``sum(w dy/dhi)`` (``w`` is 0 at the extrema,
    where the clip to [0, 255] is reached). ``jnp.min``/``jnp.max``'s derivative dropped
    the term of 4 minima and 4 maxima of the 9 (image, channel) slices (suite flags,
    jax 0.10.2)."""
    import jax
    import jax.numpy as jnp

    from model_import._layers.registry import ConvertContext, lookup

    impl = lookup("AutoContrast")({"value_range": [0, 255]}, ConvertContext("ac", "AutoContrast"))
    rng = np.random.default_rng(0)
    z, w = rng.normal(size=(3, 4, 4, 3)), rng.normal(size=(3, 4, 4, 3))
    scale, shift = rng.normal(size=3), rng.normal(size=3)
    z, w, scale, shift = (v.astype("float32") for v in (z, w, scale, shift))
    x = (z * scale + shift).astype(np.float64)  # NumPy: float32 values, no ties
    lo, hi = x.min(axis=(1, 2), keepdims=True), x.max(axis=(1, 2), keepdims=True)
    is_lo, is_hi = x == lo, x == hi
    w[is_lo | is_hi] = 0.0
    g = jax.jit(jax.grad(lambda u: jnp.sum(impl.call({}, u * scale + shift, rt=None) * w)))(z)
    span = hi - lo
    d_lo = np.sum(w * 255.0 * (x - hi) / span ** 2, axis=(1, 2), keepdims=True)
    d_hi = np.sum(w * -255.0 * (x - lo) / span ** 2, axis=(1, 2), keepdims=True)
    want = (255.0 * w / span + is_lo * d_lo + is_hi * d_hi) * scale
    np.testing.assert_allclose(g, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())

@pytest.mark.parametrize("ext", [".keras", ".h5"])
def test_random_crop_keras3_is_the_identity(tmp_path, ext):
    """Keras 3.15 returns RandomCrop's input unchanged at inference (keras-team/keras#21868),
    though the layer declares the cropped shape; the ported model runs as Keras does."""
    inp = keras.Input((9, 11, 3))
    a = layers.GlobalAveragePooling2D(name="gap")(layers.RandomCrop(5, 6, name="crop")(inp))
    cf = {"data_format": "channels_first"}  # (C, H, W) = (9, 11, 3) here
    b = layers.RandomCrop(4, 2, name="crop_cf", **cf)(inp)
    b = layers.GlobalAveragePooling2D(name="gap_cf", **cf)(b)
    km = keras.Model(inp, layers.Concatenate(name="cat")([a, b]))
    x = _x((9, 11, 3), 255.0)
    km.save(tmp_path / f"m{ext}")
    m = _compare(km, tmp_path / f"m{ext}", x, ["crop", "crop_cf"])
    assert m.apply(m.params, x, capture=["crop"])[1]["crop"].shape == x.shape


def test_tf_keras2_random_crop_height_width(fixtures_dir):
    """tf.keras 2 at inference: RandomCrop is ``smart_resize`` (the centred window of the
    target's aspect ratio, resized bilinearly), RandomHeight/RandomWidth the identity."""
    ref = np.load(fixtures_dir / "keras2" / "random_crop_tfkeras2.expected.npz")
    m = load_keras(fixtures_dir / "keras2" / "random_crop_tfkeras2.h5")
    ys = m.apply(m.params, ref["x"])
    for i, y in enumerate(ys):
        assert rel_err(y, ref[f"y{i}"]) <= TOL, i
    np.testing.assert_array_equal(ys[2], ref["x"])


def _pipeline_model():
    rng = np.random.default_rng(3)
    norm = layers.Normalization(axis=-1, name="norm")
    norm.adapt(rng.normal(0.5, 2.0, (8, 9, 11, 3)).astype("float32"))
    inner = layers.Pipeline([layers.RandomZoom(0.2, name="zoom"),
                             layers.Dense(4, name="inner_dense")], name="inner")
    pipe = layers.Pipeline([layers.RandomFlip(name="flip"),
                            layers.Rescaling(2.0, offset=-0.5, name="rescale"),
                            layers.AutoContrast(value_range=(0, 1), name="ac"), norm,
                            layers.Conv2D(5, 3, name="conv"), inner,
                            layers.Dense(3, name="dense")], name="prep")
    inp = keras.Input((9, 11, 3))
    h = layers.GlobalAveragePooling2D(name="gap")(pipe(inp))
    km = keras.Model(inp, layers.Dense(2, name="out")(h))
    perturb_keras(km)
    return km


@pytest.mark.parametrize("ext", [".keras", ".h5"])
def test_pipeline(tmp_path, ext):
    """Pipeline's layers in order, a nested Pipeline and weights (trainable and
    non-trainable) included; its layers are addressable as ``prep/<layer>``."""
    km = _pipeline_model()
    km.save(tmp_path / f"m{ext}")
    x = _x((9, 11, 3), 1.0)
    m = _compare(km, tmp_path / f"m{ext}", x, ["prep", "gap"])
    sub = keras.Sequential(km.get_layer("prep").layers[:5])  # flip .. conv, at inference
    _, acts = m.apply(m.params, x, capture=["prep/conv", "prep/inner/inner_dense"])
    assert rel_err(acts["prep/conv"], sub.predict(x, verbose=0)) <= TOL
    assert acts["prep/inner/inner_dense"].shape == (3, 7, 9, 4)
