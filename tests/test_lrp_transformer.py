"""LRP through attention and normalization layers (Ali et al. 2022, "XAI for Transformers:
Better Explanations through Conservative Propagation"): attention probabilities and
normalization scales are held constant in the backward pass (``Runtime.hold``), which makes
those layers linear in their inputs, and they take the layer rules.

The truth: a network of such layers without biases, held this way, is linear in its input
given the held values, so LRP with a vanishing epsilon conserves the score at the input; the
plain gradient through the softmax and the normalization does not (checked, so that the
test can fail). Self-attention called with positional arguments and with ``query=``/
``value=`` keywords gives the same maps.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "numpy")

import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from keras import layers  # noqa: E402

import jaxsal  # noqa: E402
from import_helpers import perturb_keras  # noqa: E402
from test_lrp import _load  # noqa: E402

EPS = 1e-7


def _block(kind, keywords=False):
    """(T=6, D=8) -> self-attention -> Add -> a normalization -> Dense(relu) -> Dense -> Add
    -> a normalization -> average over time -> Dense(3); no biases anywhere."""
    inp = keras.Input((6, 8))
    if kind == "mha":
        mha = layers.MultiHeadAttention(2, 4, use_bias=False, name="attn")
        a = mha(query=inp, value=inp) if keywords else mha(inp, inp)
    elif kind == "gqa":
        a = layers.GroupQueryAttention(head_dim=4, num_query_heads=2, num_key_value_heads=1,
                                       use_bias=False, name="attn")(inp, inp)
    else:
        a = layers.Attention(name="attn")([inp, inp])
    h = layers.Add()([inp, a])
    norm = {"mha": lambda: layers.LayerNormalization(center=False),
            "gqa": lambda: layers.RMSNormalization(),
            "dot": lambda: layers.UnitNormalization()}[kind]
    h = norm()(h)
    f = layers.Dense(16, activation="relu", use_bias=False)(h)
    h = norm()(layers.Add()([h, layers.Dense(8, use_bias=False)(f)]))
    h = layers.GlobalAveragePooling1D()(h)
    return keras.Model(inp, layers.Dense(3, use_bias=False, name="out")(h))


@pytest.fixture(scope="module", params=["mha", "gqa", "dot"])
def block(request, tmp_path_factory):
    km = _block(request.param)
    perturb_keras(km, seed=7, kernels=True)
    m = _load(km, tmp_path_factory.mktemp("tr"), request.param)
    x = np.random.default_rng(0).normal(size=(3, 6, 8)).astype(np.float32)
    return m, x


def test_relevance_is_conserved_through_attention_and_normalization(block):
    m, x = block
    y = np.asarray(m(x))[:, [0, 2]]
    r = np.asarray(jaxsal.lrp(m, x, [0, 2], epsilon=EPS, reduce=None))  # (N, T, 6, 8)
    np.testing.assert_allclose(r.sum((-2, -1)), y, rtol=1e-3, atol=1e-4 * np.abs(y).max())
    # gradient x input (the softmax and the scales differentiated) does not conserve
    g = np.asarray(jaxsal.gradient_x_input(m, x, [0, 2], reduce=None))
    assert np.abs(g.sum((-2, -1)) - y).max() > 1e-2 * np.abs(y).max()
    # the layers named: attention and normalization layers are rule layers
    names = m.relevance_layers
    assert "attn" in names
    assert any(m.layer(n).class_name.endswith("Normalization") for n in names)


def test_weight_rules_leave_attention_with_the_epsilon_rule(block):
    """One weight-changing rule everywhere gives attention layers the epsilon rule (their
    query and key kernels set the attention weights); naming one for them is refused."""
    m, x = block
    everywhere = np.asarray(jaxsal.lrp(m, x, [1], rule=jaxsal.lrp_zplus(EPS), epsilon=EPS))
    by_role = np.asarray(jaxsal.lrp(m, x, [1], epsilon=EPS, rule=jaxsal.lrp_composite(
        dense=jaxsal.lrp_zplus(EPS), layers={"attn": jaxsal.lrp_epsilon(EPS)})))
    np.testing.assert_allclose(everywhere, by_role, rtol=1e-5, atol=1e-6 * np.abs(by_role).max())
    # by role (`other`), a weight rule leaves attention layers with the epsilon rule as well
    other = np.asarray(jaxsal.lrp(m, x, [1], epsilon=EPS, rule=jaxsal.lrp_composite(
        dense=jaxsal.lrp_zplus(EPS), other=jaxsal.lrp_zplus(EPS))))
    np.testing.assert_allclose(other, everywhere, rtol=1e-5, atol=1e-6 * np.abs(by_role).max())
    with pytest.raises(ValueError, match="'attn' is an attention layer"):
        jaxsal.lrp(m, x, [1], rule={"attn": jaxsal.lrp_gamma()})


def test_keyword_call_of_attention(tmp_path):
    """``mha(query=x, value=x)`` (tensors as keyword arguments) gives the maps of
    ``mha(x, x)``: relevance reaches tensors passed either way."""
    ka, kb = _block("mha"), _block("mha", keywords=True)
    perturb_keras(ka, seed=7, kernels=True)
    kb.set_weights(ka.get_weights())
    ma, mb = _load(ka, tmp_path, "pos"), _load(kb, tmp_path, "kw")
    x = np.random.default_rng(1).normal(size=(2, 6, 8)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(mb(x)), np.asarray(ma(x)), rtol=1e-5, atol=1e-6)
    a = np.asarray(jaxsal.lrp(ma, x, [0, 1], epsilon=EPS))
    b = np.asarray(jaxsal.lrp(mb, x, [0, 1], epsilon=EPS))
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5 * np.abs(a).max())


def test_attention_scores_output_passes_by_gradient(tmp_path):
    """An attention layer returning its scores too (two outputs) keeps its plain call."""
    inp = keras.Input((5, 4))
    a, scores = layers.MultiHeadAttention(1, 4, name="attn")(inp, inp,
                                                             return_attention_scores=True)
    h = layers.Flatten()(layers.Concatenate()([a, layers.Reshape((5, 5))(scores)]))
    km = keras.Model(inp, layers.Dense(2)(h))
    perturb_keras(km, seed=2, kernels=True)
    m = _load(km, tmp_path, "scores")
    x = np.random.default_rng(2).normal(size=(2, 5, 4)).astype(np.float32)
    r = np.asarray(jaxsal.lrp(m, x, [0, 1]))
    assert r.shape == (2, 2, 5) and np.isfinite(r).all()


def test_forward_values_unchanged(block):
    from jaxsal._src.lrp import lrp_model

    m, x = block
    lm = lrp_model(m, EPS)
    np.testing.assert_allclose(np.asarray(jax.jit(lm.apply)(m.params, x)), np.asarray(m(x)),
                               rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kind", ["mha", "gqa"])
def test_relevance_is_conserved_through_a_gated_attention(tmp_path, kind):
    """``use_gate=True``: the attended heads times ``sigmoid`` of the query's gate projection.
    The gate weighs the heads as attention probabilities do: held, the layer is linear in its
    value path and LRP with a vanishing epsilon conserves the score (differentiated through
    the sigmoid, it did not: off by ~10%)."""
    inp = keras.Input((6, 8))
    if kind == "mha":
        a = layers.MultiHeadAttention(2, 4, use_bias=False, use_gate=True)(inp, inp)
    else:
        a = layers.GroupQueryAttention(4, 2, 1, use_bias=False, use_gate=True)(inp, inp)
    h = layers.Dense(8, activation="relu", use_bias=False)(layers.Add()([inp, a]))
    km = keras.Model(inp, layers.Dense(3, use_bias=False)(layers.GlobalAveragePooling1D()(h)))
    perturb_keras(km, seed=1, kernels=True)
    m = _load(km, tmp_path, f"gate_{kind}")
    x = np.random.default_rng(0).normal(size=(2, 6, 8)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(m(x)), np.asarray(km(x)), rtol=1e-5, atol=1e-5)
    y = np.asarray(m(x))[:, [0, 2]]
    r = np.asarray(jaxsal.lrp(m, x, [0, 2], epsilon=EPS, reduce=None))  # (N, 2, 6, 8)
    np.testing.assert_allclose(r.sum((-2, -1)), y, rtol=1e-3, atol=1e-4 * np.abs(y).max())
