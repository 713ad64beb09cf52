"""DeepLIFT through products of tensors (``products="delta"``, :class:`ProductRule`).

The truths:
- For ``z = a * b`` with reference ``(a', b')``, ``z - z' = da (b + b')/2 + (a + a')/2 db``
  exactly: the multipliers are the gradient at the midpoint of the factors. Checked in
  closed form on a two-input model (``Multiply``, and ``matmul``, bilinear too).
- Three factors: the mean gradient along the straight line, ``C_a = da (b'c' + (b' dc +
  c' db)/2 + db dc/3)``, in closed form.
- Summation-to-delta holds through a squeeze-excitation ``Multiply`` and a hard-swish written
  with operations (``x * relu6(x + 3) / 6``), where the products' gradient
  (``products="gradient"``, Captum's) breaks it.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "numpy")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from keras import layers, ops  # noqa: E402

import jaxsal  # noqa: E402
from import_helpers import perturb_keras  # noqa: E402
from test_lrp import _load  # noqa: E402
from test_lrp_merges import _se_net  # noqa: E402

TOL = dict(rtol=1e-4, atol=1e-5)


def _product_model(tmp_path, kind):
    """Inputs a, b (and c) of 4 features; z = a * b (* c) or a[:, None] @ B; score 0 is
    z . w."""
    a = keras.Input((4,), name="a")
    b = keras.Input((4,) if kind != "matmul" else (4, 3), name="b")
    inputs = [a, b]
    if kind == "multiply":
        z = layers.Multiply(name="prod")([a, b])
    elif kind == "three":
        c = keras.Input((4,), name="c")
        inputs.append(c)
        z = layers.Multiply(name="prod")([a, b, c])
    else:
        z = layers.Flatten()(ops.matmul(layers.Reshape((1, 4))(a), b))
    out = layers.Dense(2, use_bias=False, name="w")(z)  # target 0: z . w[:, 0]
    km = keras.Model(inputs, out)
    perturb_keras(km, seed=1, kernels=True)
    m = _load(km, tmp_path, kind)
    w = np.asarray(m.params["w"]["kernel"])[:, 0]
    rng = np.random.default_rng(2)
    xs = [rng.normal(size=(2,) + tuple(i.shape[1:])).astype(np.float32) for i in inputs]
    refs = [rng.normal(size=(2,) + tuple(i.shape[1:])).astype(np.float32) for i in inputs]
    return m, w, xs, refs


@pytest.mark.parametrize("kind", ["multiply", "matmul"])
def test_two_factors_take_the_gradient_at_their_midpoint(tmp_path, kind):
    m, w, (a, b), (a0, b0) = _product_model(tmp_path, kind)
    got = jaxsal.deeplift(m, [a, b], 0, baseline=[a0, b0], reduce=None)
    ga, gb = (np.asarray(g) for g in got)  # one target: no target axis
    if kind == "multiply":
        want_a = w * (a - a0) * (b + b0) / 2
        want_b = w * (a + a0) / 2 * (b - b0)
    else:  # out = sum_k w_k sum_j a_j B_jk
        wk = w.reshape(1, 1, 3)
        want_a = ((a - a0)[:, :, None] * (b + b0) / 2 * wk).sum(-1)
        want_b = (a + a0)[:, :, None] / 2 * (b - b0) * wk
    np.testing.assert_allclose(ga, want_a, **TOL)
    np.testing.assert_allclose(gb, want_b, **TOL)
    delta = np.asarray(m([a, b]) - m([a0, b0]))[:, 0]
    total = ga.reshape(2, -1).sum(1) + gb.reshape(2, -1).sum(1)
    np.testing.assert_allclose(total, delta, **TOL)
    # Captum's rule: the gradient at the input gives a the term w (a - a') b
    grad = jaxsal.deeplift(m, [a, b], 0, baseline=[a0, b0], reduce=None, products="gradient")
    if kind == "multiply":
        np.testing.assert_allclose(np.asarray(grad[0]), w * (a - a0) * b, **TOL)


def test_three_factors_take_their_mean_gradient_on_the_line(tmp_path):
    m, w, (a, b, c), (a0, b0, c0) = _product_model(tmp_path, "three")
    got = jaxsal.deeplift(m, [a, b, c], 0, baseline=[a0, b0, c0], reduce=None)
    da, db, dc = a - a0, b - b0, c - c0
    want_a = w * da * (b0 * c0 + (b0 * dc + c0 * db) / 2 + db * dc / 3)
    np.testing.assert_allclose(np.asarray(got[0]), want_a, **TOL)
    delta = np.asarray(m([a, b, c]) - m([a0, b0, c0]))[:, 0]
    total = sum(np.asarray(g).sum(-1) for g in got)
    np.testing.assert_allclose(total, delta, **TOL)


def test_summation_to_delta_through_squeeze_excitation_and_hard_swish(tmp_path):
    km = _se_net()
    perturb_keras(km, seed=3, kernels=True)
    m = _load(km, tmp_path, "se")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 8, 8, 3)).astype(np.float32)
    x0 = rng.normal(size=(3, 8, 8, 3)).astype(np.float32)
    delta = np.asarray(m(x) - m(x0))
    scale = np.abs(delta).max()
    attr = np.asarray(jaxsal.deeplift(m, x, [0, 1, 2], baseline=x0))
    np.testing.assert_allclose(attr.sum((-2, -1)), delta, atol=1e-4 * scale, rtol=1e-4)
    grad = np.asarray(jaxsal.deeplift(m, x, [0, 1, 2], baseline=x0, products="gradient"))
    assert np.abs(grad.sum((-2, -1)) - delta).max() > 1e-2 * scale
    # DeepLIFT-SHAP averages deeplift over references: it sums to the mean difference
    refs = np.concatenate([x0[:2], np.zeros_like(x0[:1])])
    shap = np.asarray(jaxsal.deeplift_shap(m, x, 1, baselines=refs))
    np.testing.assert_allclose(shap.sum((-2, -1)), np.asarray(m(x))[:, 1]
                               - np.asarray(m(refs))[:, 1].mean(), atol=1e-4 * scale,
                               rtol=1e-4)


def test_unknown_products_rule_is_refused(tmp_path):
    m, _, xs, _ = _product_model(tmp_path, "multiply")
    with pytest.raises(ValueError, match="unknown products rule 'shapley'.*'delta'"):
        jaxsal.deeplift(m, xs, 0, products="shapley")
