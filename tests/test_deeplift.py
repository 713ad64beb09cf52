"""DeepLIFT (rescale rule) and DeepLIFT-SHAP, and the importer's rule hooks they stand on
(``Runtime.elementwise`` / ``Runtime.max_pool``, ``KerasModel.with_rules``).

Analytic truths: through one elementwise nonlinearity the multiplier is its secant slope
between input and reference (checked against a NumPy transcription for several
activations); with the reference equal to the input every rule falls back to the gradient;
summation-to-delta (``sum(map) == S(x) - S(x')``) on networks of affine layers, elementwise
activations (fused, activation layers, PReLU, Keras operations) and max pooling, in both
layouts; DeepLIFT-SHAP is the mean of DeepLIFT over its references. Parity with Captum 0.9.0:
tests/test_reference_torch.py.
"""

import dataclasses
import os
import pathlib

os.environ.setdefault("KERAS_BACKEND", "numpy")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from keras import layers  # noqa: E402

import jaxsal  # noqa: E402
from import_helpers import perturb_keras  # noqa: E402
from jaxsal._src.deeplift import MaxPoolDeltaRule, RescaleRule, _halves, _pair  # noqa: E402
from model_import import load_keras  # noqa: E402
from model_import._layers.activations import (ACTIVATION_NAMES, NOT_ELEMENTWISE,  # noqa: E402
                                              get_activation)


def _load(km, tmp_path, name):
    path = tmp_path / f"{name}.keras"
    km.save(path)
    return load_keras(path).with_head("logits")


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


NUMPY_ACTS = {
    "relu": lambda z: np.maximum(z, 0.0),
    "tanh": np.tanh,
    "sigmoid": _sigmoid,
    "elu": lambda z: np.where(z > 0, z, np.expm1(np.minimum(z, 0.0))),
    "softplus": lambda z: np.log1p(np.exp(z)),
    "swish": lambda z: z * _sigmoid(z),
}


@pytest.mark.parametrize("act", sorted(NUMPY_ACTS))
def test_multiplier_of_one_nonlinearity_is_its_secant_slope(act, tmp_path):
    inp = keras.Input((5,))
    h = layers.Dense(4, activation=act, name="h")(inp)
    km = keras.Model(inp, layers.Dense(3, name="out")(h))
    perturb_keras(km, seed=1, kernels=True)  # every weight seeded
    m = _load(km, tmp_path, act)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 5)).astype(np.float32)
    x0 = rng.normal(size=(6, 5)).astype(np.float32)
    x0[0] = x[0]  # equal input and reference: the gradient
    p = jax.tree_util.tree_map(np.asarray, m.params)
    w1, b1, w2 = p["h"]["kernel"], p["h"]["bias"], p["out"]["kernel"]
    z, z0 = (np.float64(x) @ w1 + b1), (np.float64(x0) @ w1 + b1)
    f = NUMPY_ACTS[act]
    dz = z - z0
    grad = jax.vmap(jax.vmap(jax.grad(_jax_act(act))))(jnp.asarray(z))
    slope = np.where(np.abs(dz) < 1e-10, np.asarray(grad),
                     (f(z) - f(z0)) / np.where(dz == 0, 1, dz))
    expected = np.einsum("ij,nj,jt->nti", w1, slope, w2)  # (N, T, 5)
    mult = np.asarray(jaxsal.deeplift(m, x, [0, 1, 2], baseline=x0, multiply_by_inputs=False,
                                      reduce=None))
    # float32 secants lose digits where |z - z'| is small (the NumPy slopes are float64)
    np.testing.assert_allclose(mult, expected, rtol=1e-3, atol=2e-4)
    attr = np.asarray(jaxsal.deeplift(m, x, [0, 1, 2], baseline=x0, reduce=None))
    delta = np.asarray(m(x) - m(x0))
    np.testing.assert_allclose(attr.sum(-1), delta, rtol=1e-4, atol=2e-5)


def _jax_act(name):
    return {"relu": jax.nn.relu, "tanh": jnp.tanh, "sigmoid": jax.nn.sigmoid, "elu": jax.nn.elu,
            "softplus": jax.nn.softplus, "swish": jax.nn.silu}[name]


def _zoo(data_format="channels_last"):
    """Every kind of nonlinearity the rules reach: fused activations, activation layers
    (ReLU with a cap, LeakyReLU, ELU, PReLU), Keras operations, max pooling (blocked,
    overlapping and global), batch normalization and average pooling between them."""
    cf = data_format == "channels_first"
    kw = {"data_format": data_format}
    inp = keras.Input((3, 12, 10) if cf else (12, 10, 3))
    h = layers.Conv2D(6, 3, padding="same", activation="elu", name="c1", **kw)(inp)
    h = layers.BatchNormalization(axis=1 if cf else -1, name="bn1")(h)
    h = layers.MaxPooling2D(2, name="mp", **kw)(h)
    h = layers.PReLU(shared_axes=[2, 3] if cf else [1, 2], name="prelu")(h)
    h = layers.Conv2D(6, 3, padding="same", activation="tanh", name="c2", **kw)(h)
    h = layers.MaxPooling2D(3, strides=1, padding="same", name="mp_overlap", **kw)(h)
    h = layers.LeakyReLU(0.1, name="leaky")(h)
    h = layers.Conv2D(8, 3, name="c3", **kw)(h)
    h = keras.ops.sigmoid(h) if cf else keras.ops.relu(h)
    h = layers.ReLU(max_value=1.5, name="relu_cap")(h)
    a = layers.GlobalMaxPooling2D(name="gmp", **kw)(h)
    b = layers.GlobalAveragePooling2D(name="gap", **kw)(h)
    h = layers.Concatenate(name="cat")([a, b])
    h = layers.Dense(7, activation="softplus", name="d1")(h)
    h = layers.ELU(0.7, name="elu_layer")(h)
    out = layers.Dense(4, activation="softmax", name="out")(h)
    return keras.Model(inp, out)


@pytest.fixture(scope="module", params=["channels_last", "channels_first"])
def zoo(request, tmp_path_factory):
    km = _zoo(request.param)
    perturb_keras(km, seed=5, kernels=True)
    m = _load(km, tmp_path_factory.mktemp("dl"), request.param)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3,) + km.input_shape[1:]).astype(np.float32)
    x0 = rng.normal(size=(3,) + km.input_shape[1:]).astype(np.float32)
    return m, x, x0


def test_summation_to_delta_through_every_kind_of_nonlinearity(zoo):
    m, x, x0 = zoo
    classes = [0, 1, 2, 3]
    delta = np.asarray(m(x) - m(x0))
    attr = np.asarray(jaxsal.deeplift(m, x, classes, baseline=x0))
    scale = np.abs(delta).max()
    np.testing.assert_allclose(attr.sum((-2, -1)), delta, atol=1e-4 * scale, rtol=1e-4)
    # a zero baseline (the default)
    zero = np.asarray(jaxsal.deeplift(m, x, classes))
    np.testing.assert_allclose(zero.sum((-2, -1)), np.asarray(m(x) - m(jnp.zeros_like(x))),
                               atol=1e-4 * scale, rtol=1e-4)
    # the rules matter: the plain gradient times (x - x') does not sum to the difference,
    # nor does the max pooling's gradient rule here
    gxi = np.asarray(jaxsal.saliency(m, x, classes, reduce=None)) * (x - x0)[:, None]
    assert np.abs(gxi.sum(tuple(range(2, gxi.ndim))) - delta).max() > 1e-2 * scale
    grad_pool = np.asarray(jaxsal.deeplift(m, x, classes, baseline=x0, maxpool="gradient"))
    assert np.abs(grad_pool.sum((-2, -1)) - delta).max() > 1e-3 * scale


def test_reference_equal_to_input_gives_the_gradient(zoo):
    m, x, _ = zoo
    mult = jaxsal.deeplift(m, x, [0, 3], baseline=x, multiply_by_inputs=False, reduce=None)
    grad = jaxsal.saliency(m, x, [0, 3], reduce=None)
    np.testing.assert_allclose(np.asarray(mult), np.asarray(grad), rtol=1e-5, atol=1e-7)


def test_rounding_noise_between_the_halves_gives_the_gradient():
    """Equal values computed with different rounding (XLA may round the two halves of one
    batch differently: measured up to 1e-6 apart with jaxlib 0.4.38 at
    --xla_backend_optimization_level=0) take the gradient, not a secant of the noise;
    ``rtol=0`` is Captum's rule, which divides the noise."""
    z = jnp.linspace(-3.0, 3.0, 64, dtype=jnp.float32)
    noisy = z * (1 + 3e-7 * jnp.cos(7 * z)) + 1e-6 * jnp.sin(5 * z)
    pair = _pair(noisy, z)  # the rules' batch: each input beside its reference

    def multipliers(rule, f):
        y, pull = jax.vjp(lambda v: rule(f, v), pair)
        return np.asarray(_halves(pull(jnp.ones_like(y))[0])[0])

    for f in (jnp.tanh, jax.nn.elu, jax.nn.softplus, jax.nn.relu):
        grad = np.asarray(jax.vmap(jax.grad(f))(noisy))
        np.testing.assert_allclose(multipliers(RescaleRule(), f), grad, rtol=1e-5, atol=1e-6)
    captum = multipliers(RescaleRule(rtol=0.0), jnp.tanh)
    assert np.abs(captum - np.asarray(jax.vmap(jax.grad(jnp.tanh))(z))).max() > 0.05


def test_rules_leave_forward_values_unchanged(zoo):
    m, x, x0 = zoo
    ruled = m.with_rules(elementwise=RescaleRule(), max_pool=MaxPoolDeltaRule())
    pair = np.concatenate([x, x0])
    np.testing.assert_array_equal(np.asarray(ruled(pair)), np.asarray(m(pair)))
    # rules compare by value: the same compiled programs serve every call
    again = m.with_rules(elementwise=RescaleRule(), max_pool=MaxPoolDeltaRule())
    assert hash(again.runtime) == hash(ruled.runtime) and again.runtime == ruled.runtime


def test_deeplift_shap_is_the_mean_over_its_references(zoo):
    m, x, x0 = zoo
    refs = np.concatenate([x0, x0[:1] * 0.5])  # 4 references
    each = [np.asarray(jaxsal.deeplift(m, x, [1, 2], baseline=r)) for r in refs]
    expected = np.mean(each, axis=0)
    scale = np.abs(expected).max()
    for kw in ({}, {"batch_baselines": 1}, {"batch_baselines": 3}, {"memory_budget": 1}):
        got = np.asarray(jaxsal.deeplift_shap(m, x, [1, 2], baselines=refs, **kw))
        # Other batch shapes round differently, and the rescale rule's secant over differences
        # down to rtol=1e-4 of a value amplifies float32 rounding (1.2e-7) up to ~1e-3: with
        # jax 0.12, 2 elements in 720 came 1.2e-4 of the largest value apart. A missing or
        # doubled reference moves the mean by far more.
        np.testing.assert_allclose(got, expected, atol=1e-3 * scale, rtol=1e-4, err_msg=str(kw))
    delta = np.asarray(m(x))[:, [1, 2]] - np.asarray(m(refs)).mean(0)[[1, 2]]
    np.testing.assert_allclose(expected.sum((-2, -1)), delta, atol=1e-4 * np.abs(delta).max())


def test_another_number_of_references_is_not_served_a_stale_program(zoo):
    """The compiled DeepLIFT-SHAP program is cached by its options; the number of
    references is read from the traced shapes (a program built for 4 references once
    averaged 3 as if there were 4)."""
    m, x, x0 = zoo
    four = np.concatenate([x0, x0[:1] * 0.5])
    jaxsal.deeplift_shap(m, x, [0, 2], baselines=four, batch_baselines=3)
    got = np.asarray(jaxsal.deeplift_shap(m, x, [0, 2], baselines=x0, batch_baselines=3))
    want = np.mean([np.asarray(jaxsal.deeplift(m, x, [0, 2], baseline=r)) for r in x0], axis=0)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3 * np.abs(want).max())  # (above)


def test_no_recompile_on_a_second_call(zoo, compiles):
    m, x, x0 = zoo
    jaxsal.deeplift(m, x, [0, 1], baseline=x0)
    jaxsal.deeplift_shap(m, x, [0, 1], baselines=x0)
    compiles.n = 0
    jaxsal.deeplift(m, x + 1.0, [0, 1], baseline=x0 * 2)
    jaxsal.deeplift_shap(m, x + 1.0, [0, 1], baselines=x0 * 2)
    assert compiles.n == 0


def _mlp(params, x, relu=jax.nn.relu):
    h = relu(x @ params["w1"] + params["b1"])
    return h @ params["w2"] + params["b2"]


def test_function_model_with_a_relu_kwarg():
    rng = np.random.default_rng(2)
    params = {"w1": rng.normal(size=(5, 8)).astype(np.float32),
              "b1": rng.normal(size=8).astype(np.float32),
              "w2": rng.normal(size=(8, 3)).astype(np.float32),
              "b2": rng.normal(size=3).astype(np.float32)}
    x = rng.normal(size=(4, 5)).astype(np.float32)
    x0 = rng.normal(size=(4, 5)).astype(np.float32)
    fm = jaxsal.FunctionModel(_mlp, params, relu_kwarg="relu")
    attr = np.asarray(jaxsal.deeplift(fm, x, [0, 2], baseline=x0, reduce=None))
    delta = np.asarray(_mlp(params, x) - _mlp(params, x0))[:, [0, 2]]
    np.testing.assert_allclose(attr.sum(-1), delta, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="relu_kwarg"):
        jaxsal.deeplift((_mlp, params), x, 0)


def test_bad_options_are_refused(zoo):
    m, x, x0 = zoo
    with pytest.raises(ValueError, match="maxpool rule 'captum'.*'delta'"):
        jaxsal.deeplift(m, x, 0, maxpool="captum")
    for eps in (-1.0, 0, 0.0):  # 0: where z == z' exactly, a secant slope of 0 / 0 (NaN)
        with pytest.raises(ValueError, match=r"expected eps > 0 \(Captum uses 1e-10.*got "
                                             rf"{eps!r}; pass e.g. eps=1e-10"):
            jaxsal.deeplift(m, x, 0, eps=eps)
    with pytest.raises(ValueError, match="rtol >= 0"):
        jaxsal.deeplift_shap(m, x, 0, rtol=float("nan"))
    with pytest.raises(ValueError, match="baseline"):
        jaxsal.deeplift(m, x, 0, baseline=x0[:, :, :5])
    with pytest.raises(ValueError, match=r"baselines of shape \(B"):
        jaxsal.deeplift_shap(m, x, 0, baselines=x0[:, :, :5])
    with pytest.raises(ValueError, match="NaN"):
        jaxsal.deeplift_shap(m, x, 0, baselines=np.full_like(x0, np.nan))


@dataclasses.dataclass(frozen=True)
class _Marked:
    """A rule that shows it was used: the plain value plus 1000."""

    def __call__(self, f, x, *consts):
        return f(x, *consts) + 1000.0


def _marked_difference(impl, x, ctx_rt, **kwargs):
    from model_import import Runtime

    plain = impl.call({}, x, rt=Runtime(), **kwargs)
    marked = impl.call({}, x, rt=ctx_rt, **kwargs)
    if impl.activation is not None:
        plain = get_activation(impl.activation)(plain, Runtime())
        marked = get_activation(impl.activation)(marked, ctx_rt)
    return np.asarray(marked - plain)


def test_every_elementwise_activation_reaches_the_runtime_rule():
    """The hooks DeepLIFT stands on: every activation string, activation layer, Keras 3
    activation or math operation of one tensor and tf.keras ``tf.nn`` activation goes
    through ``Runtime.elementwise`` (activations over an axis and piecewise constant
    operations do not), every max pooling through ``Runtime.max_pool``."""
    from model_import import Runtime
    from model_import._layers import tf_ops
    from model_import._layers.registry import ConvertContext, lookup

    rt = Runtime(elementwise=_Marked())
    x = jnp.linspace(-2.0, 2.0, 16, dtype=jnp.float32).reshape(2, 8)
    for name in ACTIVATION_NAMES:
        d = np.asarray(get_activation(name)(x, rt) - get_activation(name)(x, Runtime()))
        np.testing.assert_allclose(d, 0.0 if name in NOT_ELEMENTWISE else 1000.0, atol=1e-3,
                                   err_msg=name)

    def ctx(cls):
        return ConvertContext(layer_name="l", class_name=cls)

    layer_configs = {"ReLU": {"max_value": 6.0}, "LeakyReLU": {"negative_slope": 0.1},
                     "ELU": {}, "ThresholdedReLU": {"theta": 0.5}, "Activation":
                     {"activation": "tanh"}}
    for cls, config in layer_configs.items():
        d = _marked_difference(lookup(cls)(config, ctx(cls)), x, rt)
        np.testing.assert_allclose(d, 1000.0, atol=1e-3, err_msg=cls)
    prelu = lookup("PReLU")({}, ctx("PReLU"))
    alpha = {"alpha": jnp.full((8,), 0.25)}
    d = prelu.call(alpha, x, rt=rt) - prelu.call(alpha, x, rt=Runtime())
    np.testing.assert_allclose(np.asarray(d), 1000.0, atol=1e-3)
    for op in ("Relu", "Relu6", "LeakyRelu", "Elu", "Gelu", "Celu", "Sigmoid", "Tanh", "Silu",
               "Softplus", "Softsign", "Selu", "HardSigmoid", "HardSilu", "SoftShrink"):
        d = _marked_difference(lookup(f"ops.{op}")({}, ctx(op)), x, rt)
        np.testing.assert_allclose(d, 1000.0, atol=1e-3, err_msg=op)
    for op in ("Exp", "Sqrt", "Log1p", "Erf"):  # math functions of one tensor, as activations
        d = _marked_difference(lookup(f"ops.{op}")({}, ctx(op)), jnp.abs(x), rt)
        np.testing.assert_allclose(d, 1000.0, atol=1e-3, err_msg=op)
    for op in ("Softmax", "Sign", "Add"):  # over an axis, piecewise constant, two arguments
        args = (x, x) if op == "Add" else (x,)
        impl = lookup(f"ops.{op}")({}, ctx(op))
        d = impl.call({}, *args, rt=rt) - impl.call({}, *args, rt=Runtime())
        np.testing.assert_allclose(np.asarray(d), 0.0, err_msg=op)
    # inputs in each function's domain: positive (tf.math.log, sqrt, rsqrt), within (-1, 1)
    # (asin, acos, atanh, erfinv), above 1 (acosh), within (0, 2) (erfcinv), (0, 1) (ndtri)
    inside = {"math.asin": x / 4.0, "math.acos": x / 4.0, "math.atanh": x / 4.0,
              "math.erfinv": x / 4.0, "math.acosh": jnp.abs(x) + 1.5,
              "math.erfcinv": x / 4.0 + 1.0, "math.ndtri": x / 8.0 + 0.5}
    # a range per channel of the last axis (8 here), as TF requires
    options = {"quantization.fake_quant_with_min_max_vars_per_channel":
               {"min": jnp.full((8,), -6.0), "max": jnp.full((8,), 6.0)}}
    for fn in sorted(tf_ops._ACTIVATIONS):
        impl = lookup("TFOpLambda")({"function": fn}, ctx("TFOpLambda"))
        d = _marked_difference(impl, inside.get(fn, jnp.abs(x) + 0.5), rt,
                               **options.get(fn, {}))
        np.testing.assert_allclose(d, 1000.0, atol=1e-3, err_msg=fn)

    pooled = Runtime(max_pool=lambda p, v: p(v) + 1000.0)
    img = jnp.arange(2 * 4 * 6 * 3, dtype=jnp.float32).reshape(2, 4, 6, 3)
    for cls, config in (("MaxPooling2D", {"pool_size": 2}),
                        ("MaxPooling2D", {"pool_size": 3, "strides": 1, "padding": "same"}),
                        ("GlobalMaxPooling2D", {}),
                        ("AdaptiveMaxPooling2D", {"output_size": 2}),
                        ("AveragePooling2D", {"pool_size": 2})):
        impl = lookup(cls)(config, ctx(cls))
        d = impl.call({}, img, rt=pooled) - impl.call({}, img, rt=Runtime())
        expected = 0.0 if cls.startswith("Average") else 1000.0
        np.testing.assert_allclose(np.asarray(d), expected, err_msg=f"{cls} {config}")


def test_explain_to_file_chunks_equal_one_call(zoo, tmp_path):
    """A per-input ``baseline`` is sliced with the inputs; DeepLIFT-SHAP's ``baselines``, a
    distribution with as many rows as inputs here, is passed whole to every chunk."""
    m, x, x0 = zoo
    for f, kw in ((jaxsal.deeplift, {"baseline": x0}), (jaxsal.deeplift_shap, {"baselines": x0})):
        one = np.asarray(f(m, x, [0, 2], **kw))
        path = tmp_path / f"{f.__name__}.npy"
        out = jaxsal.explain_to_file(f, m, x, path, targets=[0, 2], batch_size=2, **kw)
        # chunks of 2 against one call of 3 round differently, and the rescale rule's secant
        # amplifies it (jax 0.12.1 on an Intel Xeon: 4.2e-5 of the largest value); a baseline
        # sliced wrong moves the maps by about their largest value
        np.testing.assert_allclose(out, one, rtol=1e-5, atol=1e-3 * np.abs(one).max())


def test_layer_attributions_sum_to_the_difference(zoo):
    """``layer=``: ``(A(x) - A(x')) * m_A`` over the layer's units adds up to
    ``S(x) - S(x')`` too, for DeepLIFT and DeepLIFT-SHAP; ``reduce=None`` keeps the layer's
    channels, in its own layout."""
    m, x, x0 = zoo
    delta = np.asarray(m(x) - m(x0))[:, [1, 3]]
    scale = np.abs(delta).max()
    for layer in ("c2", "prelu", "d1"):
        kw = {} if layer != "d1" else {"reduce": None}
        a = np.asarray(jaxsal.deeplift(m, x, [1, 3], baseline=x0, layer=layer, **kw))
        np.testing.assert_allclose(a.sum(tuple(range(2, a.ndim))), delta, atol=1e-4 * scale,
                                   err_msg=layer)
    full = np.asarray(jaxsal.deeplift(m, x, [1, 3], baseline=x0, layer="c2", reduce=None))
    shape = m.intermediates(x[:1], ["c2"])["c2"].shape
    assert full.shape == (3, 2) + tuple(shape[1:])
    shap = np.asarray(jaxsal.deeplift_shap(m, x, [1, 3], baselines=x0, layer="c2"))
    gap = np.asarray(m(x))[:, [1, 3]] - np.asarray(m(x0)).mean(0)[[1, 3]]
    np.testing.assert_allclose(shap.sum((-2, -1)), gap, atol=1e-4 * np.abs(gap).max())


def test_token_model_at_its_embedding(tmp_path):
    """Integer token ids: DeepLIFT at the embedding output against a padding-token
    reference; per-token maps ``(N, L)`` that sum to ``S(x) - S(x')``."""
    inp = keras.Input((7,), dtype="int32")
    h = layers.Embedding(20, 6, name="emb")(inp)
    h = layers.Conv1D(5, 3, activation="tanh", name="conv")(h)
    h = layers.GlobalMaxPooling1D(name="gmp")(h)
    km = keras.Model(inp, layers.Dense(3, name="out")(h))
    perturb_keras(km, seed=2, kernels=True)
    m = _load(km, tmp_path, "tokens")
    x = np.random.default_rng(0).integers(1, 20, size=(4, 7)).astype(np.int32)
    pad = np.zeros_like(x)
    a = np.asarray(jaxsal.deeplift(m, x, [0, 2], baseline=0, layer="emb"))
    assert a.shape == (4, 2, 7)
    delta = np.asarray(m(x) - m(pad))[:, [0, 2]]
    np.testing.assert_allclose(a.sum(-1), delta, atol=1e-4 * np.abs(delta).max())
    with pytest.raises(TypeError, match="integer inputs.*deeplift"):
        jaxsal.deeplift(m, x, 0)  # token ids have no gradient: a layer is needed


def test_sigmoid_heads_of_a_binary_model_get_the_rule():
    """The ``sigmoid`` and ``sigmoid_complement`` heads are elementwise activations: DeepLIFT
    sums to the difference of the probabilities (class 1 and class 0 of a one-unit model)."""
    fix = pathlib.Path(__file__).parent / "fixtures"
    m = load_keras(fix / "binary_cnn_keras3.keras")
    x = np.load(fix / "binary_cnn_keras3.expected.npz")["x"][:3]
    x0 = np.zeros_like(x)
    for head in ("sigmoid", "sigmoid_complement"):
        mh = m.with_head(head)
        y = np.asarray(mh(x) - mh(x0))[:, 0]
        for cls in (0, 1):
            a = np.asarray(jaxsal.deeplift(mh, x, cls, baseline=x0)).sum((-2, -1))
            want = y if (cls == 1) == (head == "sigmoid") else -y
            np.testing.assert_allclose(a, want, atol=1e-5 * max(np.abs(y).max(), 1e-3),
                                       err_msg=f"{head} class {cls}")


def test_time_major_rnns_are_refused():
    """DeepLIFT pairs the input and reference halves along the batch axis, which a tf.keras
    2 ``time_major`` RNN has on axis 1: such models are refused before anything runs."""
    from jaxsal._src.deeplift import deeplift_model
    from model_import import load_keras

    path = pathlib.Path(__file__).parent / "fixtures" / "keras2" / "time_major_tfkeras2.h5"
    m = load_keras(path).with_head("logits")
    with pytest.raises(ValueError, match=r"\['lstm_tm', 'bi_tm', 'gru_tm'\] read their inputs "
                                         r"time-major.*integrated_gradients"):
        deeplift_model(m)
