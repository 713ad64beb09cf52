"""DeepLIFT through elementwise functions of two tensors that are neither sums nor products
(``Runtime.pairwise``, :class:`jaxsal._src.deeplift.PairRule`): a maximum, a minimum, a
division, a power.

The truths:
- Each operand's contribution is its two-player Shapley value, ``C_a = (f(a, b') - f(a', b')
  + f(a, b) - f(a', b)) / 2`` (and ``C_b`` likewise), in closed form for Keras 3's
  ``maximum``, ``minimum``, ``divide`` and ``power`` of two inputs; they sum to the
  difference.
- Summation-to-delta through a three-input ``Maximum`` layer, and a softmax and an L2
  normalization written with operations (their divisors broadcast over features; ``exp``,
  ``sqrt``, ``square``... take the rescale rule as activations do),
  where the operations' gradient (``products="gradient"``, Captum's) breaks it.
- The converters route two tensors through ``Runtime.pair`` (Keras 3 operations, the
  ``Maximum``/``Minimum`` layers, tf.keras's ``TFOpLambda`` forms), a tensor and a constant
  through ``Runtime.act``, and sums and products through neither; math functions of one
  tensor go through ``Runtime.act``, piecewise constant ones and ``stop_gradient`` do not.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "numpy")

import jax.numpy as jnp  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from keras import layers, ops  # noqa: E402

import jaxsal  # noqa: E402
from import_helpers import perturb_keras  # noqa: E402
from test_lrp import _load  # noqa: E402

TOL = dict(rtol=1e-4, atol=1e-5)
FUNCTIONS = {"maximum": np.maximum, "minimum": np.minimum, "divide": np.divide,
             "power": np.power}


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_two_operands_take_their_shapley_values(tmp_path, name):
    a_in, b_in = keras.Input((4,), name="a"), keras.Input((4,), name="b")
    z = getattr(ops, name)(a_in, b_in)
    km = keras.Model([a_in, b_in], layers.Dense(2, use_bias=False, name="w")(z))
    perturb_keras(km, seed=1, kernels=True)
    m = _load(km, tmp_path, name)
    w = np.asarray(m.params["w"]["kernel"])[:, 0]
    rng = np.random.default_rng(2)
    a, b, a0, b0 = (rng.uniform(0.5, 2.0, size=(3, 4)).astype(np.float32) for _ in range(4))
    f = FUNCTIONS[name]
    got = jaxsal.deeplift(m, [a, b], 0, baseline=[a0, b0], reduce=None)
    want_a = w * ((f(a, b0) - f(a0, b0)) + (f(a, b) - f(a0, b))) / 2
    want_b = w * ((f(a0, b) - f(a0, b0)) + (f(a, b) - f(a, b0))) / 2
    np.testing.assert_allclose(np.asarray(got[0]), want_a, **TOL)
    np.testing.assert_allclose(np.asarray(got[1]), want_b, **TOL)
    delta = np.asarray(m([a, b]) - m([a0, b0]))[:, 0]
    np.testing.assert_allclose(sum(np.asarray(g).sum(-1) for g in got), delta, **TOL)


def _pair_net():
    """Three Dense branches merged by a Maximum layer, then a softmax and an L2
    normalization written with operations (``exp(h) / sum(exp(h))``, ``h / sqrt(sum(h**2))``:
    divisors of shape (N, 1) broadcast over 6 features), then Dense(3)."""
    inp = keras.Input((5,))
    branches = [layers.Dense(6, activation="tanh", name=f"d{i}")(inp) for i in range(3)]
    h = layers.Maximum(name="max")(branches)
    e = ops.exp(h)
    h = e / ops.sum(e, axis=-1, keepdims=True) - ops.minimum(h, ops.log1p(ops.abs(h)))
    h = h / ops.sqrt(ops.sum(ops.square(h), axis=-1, keepdims=True) + 0.1)
    return keras.Model(inp, layers.Dense(3, name="out")(h))


def test_summation_to_delta_through_maximum_and_normalization(tmp_path):
    km = _pair_net()
    perturb_keras(km, seed=3, kernels=True)
    m = _load(km, tmp_path, "pairs")
    rng = np.random.default_rng(0)
    x, x0 = (rng.normal(size=(4, 5)).astype(np.float32) for _ in "ab")
    delta = np.asarray(m(x) - m(x0))
    scale = np.abs(delta).max()
    attr = np.asarray(jaxsal.deeplift(m, x, [0, 1, 2], baseline=x0))
    np.testing.assert_allclose(attr.sum(-1), delta, rtol=1e-4, atol=1e-4 * scale)
    grad = np.asarray(jaxsal.deeplift(m, x, [0, 1, 2], baseline=x0, products="gradient"))
    assert np.abs(grad.sum(-1) - delta).max() > 1e-2 * scale
    refs = np.concatenate([x0[:2], np.zeros_like(x0[:1])])
    shap = np.asarray(jaxsal.deeplift_shap(m, x, 2, baselines=refs))
    np.testing.assert_allclose(shap.sum(-1), np.asarray(m(x))[:, 2]
                               - np.asarray(m(refs))[:, 2].mean(), rtol=1e-4,
                               atol=1e-4 * scale)


def test_two_tensors_go_through_the_pairwise_rule():
    from model_import import Runtime
    from model_import._layers.registry import ConvertContext, lookup

    class Recorded:
        def __init__(self):
            self.calls = 0

        def __call__(self, f, *args):
            self.calls += 1
            return f(*args)

    x = jnp.linspace(0.5, 2.0, 8, dtype=jnp.float32).reshape(2, 4)
    y = x[::-1] + 0.25

    def routed(cls, *args, fn=None):
        """(rt.pair calls, rt.act calls) of one call of layer class ``cls``."""
        pairs, acts = Recorded(), Recorded()
        cfg = {} if fn is None else {"function": fn}
        impl = lookup(cls)(cfg, ConvertContext(layer_name="o", class_name=cls))
        impl.call({}, *args, rt=Runtime(elementwise=acts, pairwise=pairs))
        return pairs.calls, acts.calls

    for cls in ("Divide", "TrueDivide", "Power", "Maximum", "Minimum"):
        assert routed(f"ops.{cls}", x, y) == (1, 0), cls
        assert routed(f"ops.{cls}", x, 2.0) == (0, 1), cls
    for cls in ("Add", "Subtract", "Multiply"):  # merges: Runtime.layer_rule's business
        assert routed(f"ops.{cls}", x, y) == (0, 0), cls
    assert routed("Maximum", [x, y, x + y]) == (2, 0)  # pairwise, in order
    assert routed("Minimum", [x, y]) == (1, 0)
    for fn in ("math.truediv", "math.divide", "__operators__.truediv", "math.pow",
               "math.maximum", "math.minimum", "math.squared_difference"):
        assert routed("TFOpLambda", x, y, fn=fn) == (1, 0), fn
        assert routed("TFOpLambda", x, 2.0, fn=fn) == (0, 1), fn
    assert routed("TFOpLambda", x, y, fn="math.floordiv") == (0, 0)  # piecewise constant
    for cls in ("Exp", "Log", "Sqrt", "Square", "Absolute", "Negative", "Reciprocal", "Erf",
                "Log2", "Arctan", "Rsqrt"):
        assert routed(f"ops.{cls}", x) == (0, 1), cls
    for cls in ("Arctan2", "Hypot", "Logaddexp", "Fmax"):
        assert routed(f"ops.{cls}", x, y) == (1, 0), cls
        assert routed(f"ops.{cls}", x, 2.0) == (0, 1), cls
    for cls in ("Sign", "Floor", "StopGradient"):
        assert routed(f"ops.{cls}", x) == (0, 0), cls
    for fn in ("math.exp", "math.log", "math.sqrt", "math.square", "math.abs"):
        assert routed("TFOpLambda", x, fn=fn) == (0, 1), fn
