"""tf.keras 2 ``TFOpLambda`` functions where NumPy / JAX semantics differ from TensorFlow's:
each checked against TF's documented formula, written here independently of the importer
(TensorFlow is not installed for the tests)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tfops_helpers import tf_function


@pytest.mark.parametrize("fn", ["math.floordiv", "compat.v1.floor_div"])
def test_float_floordiv_is_the_floor_of_the_quotient(fn):
    """TF's ``FloorDiv`` of floats is ``floor(x / y)`` (NumPy's ``floor_divide`` is
    ``(x - fmod(x, y)) / y``: one less where ``x / y`` rounds to an integer, ``1.0 // 0.1``
    is 9 there and 10 in TF); integers keep the floored integer division; static operands
    (sizes from ``tf.shape``) get the same rule."""
    f = tf_function(fn)
    x = np.array([[1.0, 0.3, 7.0, 0.7, -1.0, 2.5]], np.float32)
    want = np.floor(x / np.float32(0.1))
    got = f(jnp.asarray(x), 0.1)
    assert got.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(got), want)
    np.testing.assert_array_equal(np.asarray(f(jnp.asarray(x), jnp.full_like(x, 0.1))), want)
    static = f(x, np.float32(0.1))  # both static: the NumPy path
    assert isinstance(static, np.ndarray)
    np.testing.assert_array_equal(static, want)
    i = np.array([-7, 7, 6], np.int32)
    np.testing.assert_array_equal(np.asarray(f(jnp.asarray(i), 2)), [-4, 3, 3])
    np.testing.assert_array_equal(f(i, np.int32(-2)), [3, -4, -3])


_KINKS = np.array([-1.0, 0.0, 1.0, 2.0, 3.0], np.float32)


def _grad(f, x):
    return np.asarray(jax.grad(lambda v: jnp.sum(f(v)))(jnp.asarray(x)))


@pytest.mark.parametrize("fn, call, want", [
    # tf.clip_by_value is minimum(t, hi) then maximum(., lo); TF's Minimum / Maximum
    # gradients go to x where x <= y (x >= y): 1 at both bounds
    ("clip_by_value", lambda f, v: f(v, 0.0, 2.0),
     lambda x: (x <= 2.0) & (np.minimum(x, 2.0) >= 0.0)),
    ("math.maximum", lambda f, v: f(v, 0.0), lambda x: x >= 0.0),
    ("math.minimum", lambda f, v: f(v, 2.0), lambda x: x <= 2.0),
    ("math.maximum", lambda f, v: f(0.0, v), lambda x: ~(0.0 >= x)),  # the tensor second
    ("math.abs", lambda f, v: f(v), np.sign),  # TF's AbsGrad: sign(x), 0 at 0
    # TF's LeakyReluGrad: features > 0 ? 1 : alpha
    ("nn.leaky_relu", lambda f, v: f(v, alpha=0.2), lambda x: np.where(x > 0, 1.0, 0.2)),
])
def test_gradients_at_the_kinks_are_tensorflows(fn, call, want):
    """At the kinks (a pixel exactly on a clip bound, ``tf.maximum(x, 0.)`` at 0) the
    gradients are TF's, not JAX's (``jnp.clip`` / ``jnp.maximum`` split a tie in halves,
    ``jnp.abs`` has gradient 1 at 0, ``jax.nn.leaky_relu`` 1 at 0); values unchanged."""
    f = tf_function(fn)
    np.testing.assert_array_equal(_grad(lambda v: call(f, v), _KINKS),
                                  want(_KINKS).astype(np.float32))


def test_maximum_and_minimum_of_two_tensors_give_ties_to_the_first():
    """TF's ``Maximum``/``Minimum`` gradients of two tensors: at a tie all to ``x``; the
    values (NaN included) are ``jnp.maximum``'s / ``jnp.minimum``'s."""
    a = jnp.asarray([1.0, 0.0, 1.0, 2.0, np.nan, 0.0])
    b = jnp.asarray([1.0, 1.0, 0.0, 2.0, 0.0, np.nan])
    for fn, ref, mask in [("math.maximum", jnp.maximum, np.greater_equal),
                          ("math.minimum", jnp.minimum, np.less_equal)]:
        f = tf_function(fn)
        np.testing.assert_array_equal(np.asarray(f(a, b)), np.asarray(ref(a, b)))
        ga, gb = jax.grad(lambda u, v: jnp.sum(f(u, v)), argnums=(0, 1))(a[:4], b[:4])
        m = mask(np.asarray(a[:4]), np.asarray(b[:4]))
        np.testing.assert_array_equal(np.asarray(ga), m.astype(np.float32))
        np.testing.assert_array_equal(np.asarray(gb), (~m).astype(np.float32))


def test_relu6_gradient_is_zero_at_6(tmp_path):
    """``tf.nn.relu6``'s gradient is TF's ``Relu6Grad``, ``0 < x < 6``: 0 at 6 (``jnp.minimum``
    gave 1/2 there). Keras's ``ReLU(max_value=6)`` and ``relu6`` activation share the code and
    compute ``relu6`` on every backend too (Keras 3's JAX backend: ``jax.nn.relu6``), which
    keeps NaN (a NaN input is NaN, not 6)."""
    import keras

    from model_import import load_keras

    x = np.array([-1.0, 0.0, 3.0, 6.0, 7.0], np.float32)
    want = ((x > 0) & (x < 6)).astype(np.float32)
    np.testing.assert_array_equal(_grad(jax.nn.relu6, x), want)  # TF's formula is JAX's
    np.testing.assert_array_equal(_grad(tf_function("nn.relu6"), x), want)
    inp = keras.Input((5,))
    m = keras.Model(inp, [keras.layers.ReLU(max_value=6.0)(inp),
                          keras.layers.Activation("relu6")(inp)])
    m.save(tmp_path / "m.keras")
    km = load_keras(tmp_path / "m.keras")
    for i in range(2):
        np.testing.assert_array_equal(_grad(lambda v: km(v[None])[i], x), want)
    v = np.array([[np.nan, -1.0, 3.0, 6.0, np.inf]], np.float32)  # NaN stays NaN, as in Keras
    for got, ref in zip(km.apply(km.params, v), m.predict(v, verbose=0)):
        np.testing.assert_array_equal(np.asarray(got), ref)


@pytest.mark.parametrize("fn", ["compat.v1.nn.sigmoid_cross_entropy_with_logits",
                                "nn.weighted_cross_entropy_with_logits"])
def test_logistic_losses_have_the_analytic_gradient_at_zero_logits(fn):
    """``-q z log(sigmoid(x)) - (1 - z) log(1 - sigmoid(x))`` (``q = 1``: the sigmoid cross
    entropy) is smooth: its gradient in ``x`` is ``(1 - z) - (1 + (q - 1) z) (1 -
    sigmoid(x))``, at ``x == 0`` too, where a stable form built on ``max(x, 0)`` and ``|x|``
    differentiated by autodiff is off (JAX's tie rules gave ``-z`` and ``(1 - z) - l``)."""
    q = 2.0 if fn.startswith("nn.weighted") else 1.0
    f = tf_function(fn)
    kw = {"pos_weight": q} if q != 1.0 else {}
    z = np.array([0.0, 1.0, 0.3, 0.3, 1.0], np.float32)
    x = np.array([0.0, 0.0, 0.0, -3.0, 40.0], np.float32)
    x64 = x.astype(np.float64)
    s = 1.0 / (1.0 + np.exp(-x64))
    # -log(sigmoid(x)) = log(1 + exp(-x)), -log(1 - sigmoid(x)) = log(1 + exp(x))
    loss = q * z * np.logaddexp(0.0, -x64) + (1 - z) * np.logaddexp(0.0, x64)
    got = f(jnp.asarray(z), logits=jnp.asarray(x), **kw)
    np.testing.assert_allclose(np.asarray(got), loss, rtol=1e-6, atol=1e-6)
    g = jax.grad(lambda v: jnp.sum(f(jnp.asarray(z), logits=v, **kw)))(jnp.asarray(x))
    want = (1 - z) - (1 + (q - 1) * z) * (1 - s)
    np.testing.assert_allclose(np.asarray(g), want, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("size", [[4, 4], [2, 2]])
@pytest.mark.parametrize("method", ["bicubic", "bilinear", "area", "lanczos3"])
def test_resize_of_integer_images_gives_float32(method, size):
    """``tf.image.resize`` returns float32 for every method but ``nearest`` (TF's resize
    kernels output floats; TF 2's ``resize`` has no early return at the image's own size):
    a ``uint8`` image's bicubic overshoot (below 0, above 255) is kept, not rounded and
    clipped back to ``uint8``; its values are those of the image as float32."""
    f = tf_function("image.resize")
    u8 = np.array([[0, 255], [255, 0]], np.uint8).reshape(1, 2, 2, 1)
    got = f(jnp.asarray(u8), size, method=method)
    assert got.dtype == jnp.float32, got.dtype
    np.testing.assert_array_equal(np.asarray(got), np.asarray(
        f(jnp.asarray(u8.astype(np.float32)), size, method=method)))
    if size == [2, 2]:
        np.testing.assert_array_equal(np.asarray(got), u8.astype(np.float32))
    assert f(jnp.asarray(u8), size, method="nearest").dtype == jnp.uint8  # TF keeps it


def test_sizes_computed_with_division_and_math_stay_static():
    """Sizes computed from ``tf.shape`` with ``/`` (TF: float64 for int32 operands, then
    ``tf.cast`` back) or with ``tf.math.sqrt`` stay static, under ``jit`` too, and a reshape
    or resize takes them, as TF does: ``tf.reshape(x, [-1, tf.cast(tf.shape(x)[1] / 2,
    tf.int32), 12])`` of a (3, 4, 6) tensor is (3, 2, 12)."""
    shape, cast, reshape = (tf_function(f) for f in ("compat.v1.shape", "cast", "reshape"))
    resize = tf_function("image.resize")

    def by_half(x):
        for div in ("math.truediv", "__operators__.truediv", "math.divide"):
            half = tf_function(div)(shape(x)[1], 2)
            assert isinstance(half, np.generic) and half.dtype == np.float64, div
            x = reshape(x, [-1, cast(half, "int32"), 12])
            x = reshape(x, [-1, 4, 6])
        return reshape(x, [-1, cast(tf_function("math.truediv")(shape(x)[1], 2), "int32"), 12])

    def by_sqrt(x):  # 16x16 -> 4x4
        side = cast(tf_function("math.sqrt")(cast(shape(x)[1:3], "float32")), "int32")
        return resize(x, side)

    for f in (by_half, jax.jit(by_half)):
        assert f(jnp.ones((3, 4, 6))).shape == (3, 2, 12)
    for f in (by_sqrt, jax.jit(by_sqrt)):
        assert f(jnp.ones((1, 16, 16, 1))).shape == (1, 4, 4, 1)
    # a size from a tensor's values is refused, saying which computations keep sizes static
    from model_import import UnsupportedLayerError

    x = jnp.ones((2, 4))
    n = cast(tf_function("math.reduce_sum")(x[0]), "int32")
    with pytest.raises(UnsupportedLayerError, match=r"stay static through .* /, //.*sqrt"):
        reshape(x, [-1, n])


def test_reduce_mean_of_integers_is_a_truncated_integer():
    """``tf.math.reduce_mean`` keeps an integer dtype: the sum divided by the count in
    integers, rounded toward zero (TF's documented ``tf.reduce_mean([1, 0, 1, 0])`` is 0;
    ``jnp.mean`` gives floats)."""
    f = tf_function("math.reduce_mean")
    i = np.array([[1, 2], [2, 2], [-1, -2], [7, 0]], np.int32)
    got = f(jnp.asarray(i), axis=1)
    assert got.dtype == jnp.int32
    s = i.sum(axis=1)
    np.testing.assert_array_equal(np.asarray(got), np.sign(s) * (np.abs(s) // 2))
    assert int(f(jnp.asarray(np.array([1, 0, 1, 0], np.int32)))) == 0
    kept = f(jnp.asarray(i), axis=0, keepdims=True)
    assert kept.shape == (1, 2) and kept.dtype == jnp.int32
    np.testing.assert_array_equal(np.asarray(kept), [[2, 0]])  # 9 // 4, trunc(2 / 4)
    np.testing.assert_allclose(np.asarray(f(jnp.asarray(i, jnp.float32), axis=1)),
                               i.mean(axis=1))


def test_rgb_to_grayscale_of_integer_images_keeps_their_dtype():
    """TF's ``rgb_to_grayscale`` converts an integer image to floats in [0, 1]
    (``convert_image_dtype``: times ``1 / max``), weights the channels and converts back:
    times ``max + 0.5``, cast (truncated) to the image's dtype."""
    f = tf_function("image.rgb_to_grayscale")
    u = np.array([[[[255, 255, 255], [100, 100, 100], [10, 200, 30], [0, 1, 2]]]], np.uint8)
    w = np.array([0.2989, 0.5870, 0.1140], np.float32)
    gray = (u.astype(np.float32) * np.float32(1 / 255)) @ w
    want = (gray * np.float32(255.5)).astype(np.uint8)[..., None]
    got = f(jnp.asarray(u))
    assert got.dtype == jnp.uint8
    np.testing.assert_array_equal(np.asarray(got), want)
    np.testing.assert_allclose(np.asarray(f(jnp.asarray(u, jnp.float32))),
                               (u.astype(np.float32) @ w)[..., None], rtol=1e-6)
