"""DeepLIFT through a softmax over an axis (``Runtime.softmax``,
:class:`jaxsal._src.deeplift.SoftmaxRule`), through attention layers (their softmax and
their products, ``Runtime.inner_product``) and through normalization layers (their values
times their inverse scale, ``Runtime.pairwise``).

The truths: the rule's contributions sum to ``softmax(z) - softmax(z')`` exactly (for any
pair, including maxima at different positions, ties, logits hundreds apart and masked
entries; up to float32 rounding of ``(z - z') * m``), it is the softmax's gradient where
``z == z'``, and through ``Softmax`` layers (a mask, two axes), ``softmax`` activations, the
softmax operations, attention and normalization layers DeepLIFT keeps summation-to-delta; with
``products="gradient"`` (Captum's: the gradient passes) it misses."""

import os

os.environ.setdefault("KERAS_BACKEND", "numpy")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from keras import layers, ops  # noqa: E402

import jaxsal  # noqa: E402
from jaxsal._src.deeplift import SoftmaxRule, _halves, _pair  # noqa: E402
from test_lrp import _load  # noqa: E402


def _contributions(z1, z0, axis=-1):
    """(dz * m summed per cotangent one-hot): the rule's multipliers for each output unit,
    as the Jacobian-like matrix J[o, j] = multiplier of z_j for output o, times dz."""
    rule = SoftmaxRule()
    both = _pair(z1, z0)  # the rules' batch: each input beside its reference
    y, pull = jax.vjp(lambda v: rule(v, axis), both)
    size = z1.shape[-1]
    rows = []
    for o in range(size):
        g = jnp.zeros_like(both).at[..., o].set(1.0)
        m = _halves(pull(g)[0])[0]
        rows.append(np.asarray(m * (z1 - z0)))
    return np.stack(rows, 1), np.asarray(jnp.subtract(*_halves(y)))  # (N, out, in), (N, out)


@pytest.mark.parametrize("case", ["random", "ties", "far_apart", "masked", "max_moves"])
def test_contributions_sum_to_the_difference(case):
    rng = np.random.default_rng(0)
    z1 = rng.normal(size=(3, 6)).astype(np.float32)
    z0 = rng.normal(size=(3, 6)).astype(np.float32)
    if case == "ties":
        z1[:, :3] = z0[:, :3]
        z1[0] = z0[0]
    elif case == "far_apart":
        z1 = z1 * 300.0
    elif case == "masked":  # masked entries (the same in both), a fully masked row
        z1[:, 4:] = z0[:, 4:] = -1e9
        z1[1, :] = z0[1, :] = -1e9
    elif case == "max_moves":
        z1[:, 0], z0[:, 1] = 5.0, 5.0  # the maxima at other positions, equal values
        z1[:, 2] = z0[:, 2]
    contrib, delta = _contributions(jnp.asarray(z1), jnp.asarray(z0))
    assert np.all(np.isfinite(contrib))
    scale = np.abs(contrib).max() if case != "masked" else 1.0  # rounding of z * m
    np.testing.assert_allclose(contrib.sum(-1), delta, atol=2e-6 * max(scale, 1.0))


def test_equal_inputs_give_the_softmax_gradient():
    z = jnp.asarray(np.random.default_rng(1).normal(size=(2, 5)), jnp.float32)
    g = jnp.asarray(np.random.default_rng(2).normal(size=(4, 5)), jnp.float32)
    both = _pair(z, z)
    got = jax.vjp(lambda v: SoftmaxRule()(v, -1), both)[1](g)[0]
    want = jax.vjp(lambda v: jax.nn.softmax(v, axis=-1), both)[1](g)[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def _net(kind):
    if kind == "layers":
        inp = keras.Input((6,))
        h = layers.Softmax(name="sm")(layers.Dense(5, name="d1")(inp))
        h = layers.Dense(4, activation="softmax", name="d2")(h)
        return keras.Model(inp, layers.Dense(3, activation="softmax", name="out")(h))
    if kind == "two_axes":
        inp = keras.Input((3, 4))
        h = layers.Softmax(axis=(1, 2), name="sm")(layers.Dense(4, name="d1")(inp))
        return keras.Model(inp, layers.Dense(3, name="out")(layers.Flatten()(h)))
    if kind == "masked":
        inp = keras.Input((5,))
        mask = keras.Input((5,), name="mask")
        h = layers.Dense(5, name="d1")(inp)
        h = layers.Softmax(name="sm")(h, mask=mask)
        return keras.Model([inp, mask], layers.Dense(3, name="out")(h))
    inp = keras.Input((6,))  # operations
    h = ops.softmax(layers.Dense(5, name="d1")(inp), axis=-1)
    return keras.Model(inp, layers.Dense(3, name="out")(h))


@pytest.mark.parametrize("kind", ["layers", "two_axes", "masked", "ops"])
def test_summation_to_delta_through_softmaxes(tmp_path, kind):
    km = _net(kind)
    rng = np.random.default_rng(3)
    for w in km.weights:
        w.assign(rng.normal(size=w.shape).astype("float32") * 2.0)
    m = _load(km, tmp_path, kind)
    shape = (4,) + tuple(km.inputs[0].shape[1:])
    x, x0 = (rng.normal(size=shape).astype(np.float32) * 2.0 for _ in "ab")
    if kind == "masked":  # a mask input is held fixed: the same for input and reference
        mask = (rng.random((4, 5)) > 0.3).astype(np.float32)
        x, x0 = [x, mask], [x0, mask]
    delta = np.asarray(m(x)) - np.asarray(m(x0))

    def total(products):
        got = jaxsal.deeplift(m, x, [0, 1, 2], baseline=x0, products=products,
                              reduce=None)
        leaves = got if isinstance(got, (list, tuple)) else [got]
        return sum(np.asarray(a).reshape(4, 3, -1).sum(-1) for a in leaves)

    np.testing.assert_allclose(total("delta"), delta, atol=1e-5 * np.abs(delta).max() + 1e-6)
    assert np.abs(total("gradient") - delta).max() > 0.01 * np.abs(delta).max()
    assert m.with_rules().runtime.softmax is None  # plain softmax without the rules
    if kind == "layers":  # the saved head: the classifier's probabilities
        m = m.with_head("saved")
        delta = np.asarray(m(x)) - np.asarray(m(x0))
        np.testing.assert_allclose(total("delta"), delta, atol=1e-5 * np.abs(delta).max())
        assert np.abs(total("gradient") - delta).max() > 0.01 * np.abs(delta).max()


def _sums_to_delta(km, tmp_path, name, seed):
    """Random weights, inputs and references ``(3, 5, 4)``: DeepLIFT's maps sum to the
    difference of the three scores (within 2e-5 of the largest), and with
    ``products="gradient"`` they miss it by over 5%."""
    rng = np.random.default_rng(seed)
    for w in km.weights:
        w.assign(rng.normal(size=w.shape).astype("float32"))
    m = _load(km, tmp_path, name)
    x, x0 = (rng.normal(size=(3, 5, 4)).astype(np.float32) for _ in "ab")
    delta = np.asarray(m(x)) - np.asarray(m(x0))

    def total(products):
        return np.asarray(jaxsal.deeplift(m, x, [0, 1, 2], baseline=x0, products=products,
                                          reduce=None)).sum((-2, -1))

    np.testing.assert_allclose(total("delta"), delta, atol=2e-5 * np.abs(delta).max())
    assert np.abs(total("gradient") - delta).max() > 0.05 * np.abs(delta).max()


def _attention_net(kind):
    inp = keras.Input((5, 4))
    if kind == "mha":
        h = layers.MultiHeadAttention(2, 3, name="att")(inp, inp, use_causal_mask=True)
    elif kind == "mha_gated":  # the gate: a * sigmoid(g), through the pair rule
        h = layers.MultiHeadAttention(2, 3, use_gate=True, name="att")(inp, inp)
    elif kind == "gqa":
        h = layers.GroupQueryAttention(head_dim=3, num_query_heads=2, num_key_value_heads=1,
                                       name="att")(inp, inp)
    elif kind == "dot":
        h = layers.Attention(use_scale=True, name="att")([inp, inp], use_causal_mask=True)
    elif kind == "dot_self":  # no mask: each row's maximum is an unshifted score
        h = layers.Attention(use_scale=True, name="att")([inp, inp])
    elif kind == "additive":
        h = layers.AdditiveAttention(name="att")([inp, inp])
    else:  # keras.ops.dot_product_attention on projections split into 2 heads
        q, k, v = (layers.Reshape((5, 2, 3))(layers.Dense(6, name=f"p{i}")(inp))
                   for i in range(3))
        h = ops.dot_product_attention(q, k, v, is_causal=True)
    return keras.Model(inp, layers.Dense(3, name="out")(layers.Flatten()(h)))


@pytest.mark.parametrize("kind", ["mha", "mha_gated", "gqa", "dot", "dot_self", "additive",
                                  "op"])
def test_summation_to_delta_through_attention_layers(tmp_path, kind):
    """The attention layers' scores and weighted values (Runtime.inner_product: the product
    rule) and their softmax (the softmax rule), causal masks included: DeepLIFT sums to the
    difference; their gradient misses it by over 5% of the largest difference."""
    _sums_to_delta(_attention_net(kind), tmp_path, kind, seed=4)


def _norm_net(kind):
    inp = keras.Input((5, 4))
    h = layers.Dense(4, name="d")(inp)
    if kind == "layer":
        h = layers.LayerNormalization(name="n")(h)
    elif kind == "rms":
        h = layers.RMSNormalization(name="n")(h)
    elif kind == "group":
        h = layers.GroupNormalization(groups=2, name="n")(h)
    elif kind == "unit":
        h = layers.UnitNormalization(name="n")(h)
    elif kind == "dot":  # the cosines of h's and a tanh branch's steps, (5, 5)
        g = layers.Dense(4, activation="tanh", name="g")(inp)
        h = layers.Dot(axes=2, normalize=True, name="n")([h, g])
    else:  # a transformer block: attention, residuals, layer norms, a GELU feed-forward
        a = layers.MultiHeadAttention(2, 3, name="att")(h, h)
        h = layers.LayerNormalization(name="n1")(h + a)
        f = layers.Dense(4, name="f")(layers.Dense(6, activation="gelu", name="ff")(h))
        h = layers.LayerNormalization(name="n2")(h + f)
    return keras.Model(inp, layers.Dense(3, name="out")(layers.Flatten()(h)))


@pytest.mark.parametrize("kind", ["layer", "rms", "group", "unit", "dot",
                                  "transformer_block"])
def test_summation_to_delta_through_normalization_layers(tmp_path, kind):
    """A normalization's values times their inverse scale go through the pair rule, the
    scale's square and reciprocal root through the rescale rule: DeepLIFT sums to the
    difference through LayerNormalization, RMSNormalization, GroupNormalization,
    UnitNormalization, a normalized Dot (its product through Runtime.inner_product: the
    product rule) and a whole transformer block; their gradient misses by over 5%."""
    _sums_to_delta(_norm_net(kind), tmp_path, kind, seed=5)


def test_the_heads_jaxsal_applies_get_the_rules(tmp_path):
    """A model with a linear output explained under head="softmax" (or "sigmoid"): the head
    jaxsal applies gets DeepLIFT's rule, and the maps sum to the difference of the
    probabilities (the softmax head kept its gradient: off by more than the difference
    itself). A FunctionModel's heads cannot get the rules: refused."""
    inp = keras.Input((5,))
    h = layers.Dense(8, activation="relu")(inp)
    model = keras.Model(inp, layers.Dense(3)(h))
    m = _load(model, tmp_path, "linear_out")
    rng = np.random.default_rng(5)
    x = rng.normal(size=(4, 5)).astype(np.float32)
    b = rng.normal(size=(4, 5)).astype(np.float32)
    z, zb = np.asarray(model(x)), np.asarray(model(b))
    for head, f in (("softmax", jax.nn.softmax), ("sigmoid", jax.nn.sigmoid)):
        d = np.asarray(jaxsal.deeplift(m, x, [0, 1, 2], baseline=b, reduce=None, head=head))
        want = np.asarray(f(z) - f(zb))
        np.testing.assert_allclose(d.sum(-1), want, atol=2e-6 * np.abs(want).max() + 1e-7)
    fm = jaxsal.FunctionModel(lambda p, v, relu=jax.nn.relu: relu(v @ p) @ jnp.ones((8, 3)),
                              jnp.ones((5, 8)), relu_kwarg="relu", head="softmax")
    with pytest.raises(ValueError, match="not the 'softmax' head jaxsal applies"):
        jaxsal.deeplift(fm, x, 0, baseline=b)


def test_normalizations_from_a_zero_baseline_sum_to_the_difference(tmp_path):
    """From a zero baseline (DeepLIFT's default) a normalization's reference scale is its
    floor, 1 / epsilon (1e12 for UnitNormalization): the Shapley split of values times scale
    gave each operand +-x * 5e11, which cancelled in float32 (maps summing to 8192 for a
    difference of 1.16). Where the values' reference is exactly 0 the values take the whole
    difference at the input's scale: UnitNormalization -> Dense gives ``x_i / |x| * W[i, t]``
    (analytic), and a cosine ``Dot(normalize=True)`` head sums to Keras's difference."""
    rng = np.random.default_rng(0)
    x1, x2 = (rng.normal(size=(3, 4)).astype(np.float32) for _ in "ab")
    i = keras.Input((4,))
    dense = layers.Dense(2, name="out")
    unit = keras.Model(i, dense(layers.UnitNormalization(name="n")(i)))
    w = np.asarray(dense.kernel)
    maps = np.asarray(jaxsal.deeplift(_load(unit, tmp_path, "unit0"), x1, [0], reduce=None))
    want = x1 / np.linalg.norm(x1, axis=1, keepdims=True) * w[:, 0]
    np.testing.assert_allclose(maps.reshape(want.shape), want, rtol=1e-4, atol=1e-6)
    a, b = keras.Input((4,)), keras.Input((4,))
    cos = keras.Model([a, b], layers.Dense(2)(layers.Dot(axes=1, normalize=True)([a, b])))
    zeros = [np.zeros_like(x1), np.zeros_like(x2)]
    delta = (cos.predict([x1, x2], verbose=0) - cos.predict(zeros, verbose=0))[:, 0]
    maps = jaxsal.deeplift(_load(cos, tmp_path, "cos0"), [x1, x2], [0], reduce=None)
    total = sum(np.asarray(v).reshape(3, -1).sum(1) for v in maps)
    np.testing.assert_allclose(total, delta, rtol=1e-4, atol=1e-5)


def test_the_function_model_head_refusal_offers_only_heads_that_work():
    """DeepLIFT's refusal of a FunctionModel's softmax head offered "head='logits' or 'saved'";
    on a model made with head="softmax", 'saved' returns to softmax and is refused again. It
    offers 'saved' only on a model made with another head; every head offered works, its maps
    summing to the difference of the function's own outputs (numpy)."""
    w1 = np.random.default_rng(1).normal(size=(5, 8)).astype(np.float32)
    w2 = np.random.default_rng(2).normal(size=(8, 3)).astype(np.float32)

    def fn(p, v, relu=jax.nn.relu):
        return relu(v @ p[0]) @ p[1]

    rng = np.random.default_rng(5)
    x, b = (rng.normal(size=(2, 5)).astype(np.float32) for _ in "xb")
    want = np.maximum(x @ w1, 0) @ w2 - np.maximum(b @ w1, 0) @ w2
    made = jaxsal.FunctionModel(fn, (w1, w2), relu_kwarg="relu", head="softmax")
    later = jaxsal.FunctionModel(fn, (w1, w2), relu_kwarg="relu").with_head("softmax")
    for fm, offered in ((made, ("logits",)), (later, ("logits", "saved"))):
        with pytest.raises(ValueError, match="not the 'softmax' head") as e:
            jaxsal.deeplift(fm, x, 0, baseline=b)
        assert ("or 'saved'" in str(e.value)) == ("saved" in offered), str(e.value)
        for head in offered:
            d = np.asarray(jaxsal.deeplift(fm, x, 0, baseline=b, reduce=None, head=head))
            np.testing.assert_allclose(d.sum(-1), want[:, 0], rtol=1e-5, atol=1e-5)
