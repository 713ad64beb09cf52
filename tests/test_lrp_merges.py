"""LRP through sums and products of tensors, and through elementwise operations on one tensor.

The truths:
- A product ``z = x * y`` is homogeneous of degree one in each factor, so the epsilon rule
  (and the gradient) hands every factor the whole relevance; the uniform rule (Achtibat et
  al. 2024, AttnLRP) gives each of ``n`` factors ``R / n``. Checked in closed form on a
  two-input model (``Multiply``, ``matmul``), and by conservation: a bias-free network with a
  squeeze-excitation ``Multiply``, a hard-swish written with operations (``x * relu6(x +
  3.0) / 6.0``), residual sums as operations (``x + y``) and a ``Subtract`` merge conserves
  the score at the input, which it did not before (each product doubled the relevance and
  each constant scaled it).
- An elementwise operation with a constant (``x * 0.5``, ``(x + 1.0) ** 2.0``) is an
  activation of ``x`` for the runtime's rules: DeepLIFT's rescale rule reaches it, so
  DeepLIFT's summation-to-delta holds through it.
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

EPS = 1e-7


def _se_net():
    """conv -> squeeze-excitation (Multiply) -> conv -> hard-swish (operations with
    constants) -> residual sum as an operation -> two branches subtracted -> GAP -> Dense;
    no biases anywhere."""
    inp = keras.Input((8, 8, 3))
    h = layers.Conv2D(6, 3, padding="same", activation="relu", use_bias=False, name="c1")(inp)
    g = layers.GlobalAveragePooling2D(keepdims=True, name="squeeze")(h)
    g = layers.Conv2D(3, 1, activation="relu", use_bias=False, name="reduce")(g)
    g = layers.Conv2D(6, 1, activation="sigmoid", use_bias=False, name="expand")(g)
    h = layers.Multiply(name="excite")([h, g])
    h2 = layers.Conv2D(6, 3, padding="same", use_bias=False, name="c2")(h)
    h2 = h2 * (layers.ReLU(6.0, name="relu6")(h2 + 3.0) * (1.0 / 6.0))  # hard-swish
    h = h + h2  # a residual sum recorded as an operation
    a = layers.Conv2D(4, 1, activation="relu", use_bias=False, name="branch_a")(h)
    b = layers.Conv2D(4, 1, activation="relu", use_bias=False, name="branch_b")(h)
    h = layers.Subtract(name="diff")([a, b])
    h = layers.GlobalAveragePooling2D(name="gap")(h)
    return keras.Model(inp, layers.Dense(3, use_bias=False, name="out")(h))


@pytest.fixture(scope="module")
def se_net(tmp_path_factory):
    km = _se_net()
    perturb_keras(km, seed=3, kernels=True)
    m = _load(km, tmp_path_factory.mktemp("se"), "se")
    x = np.random.default_rng(0).normal(size=(3, 8, 8, 3)).astype(np.float32)
    return m, x


def test_products_and_sums_of_tensors_conserve_relevance(se_net):
    m, x = se_net
    y = np.asarray(m(x))
    r = np.asarray(jaxsal.lrp(m, x, [0, 1, 2], epsilon=EPS, reduce=None))  # (N, 3, 8, 8, 3)
    np.testing.assert_allclose(r.sum((-3, -2, -1)), y, rtol=1e-3,
                               atol=1e-4 * np.abs(y).max())
    # the composites too: the Multiply takes the uniform rule whatever role reaches it
    zp = np.asarray(jaxsal.lrp(m, x, [0], rule=jaxsal.lrp_composite(
        conv=jaxsal.lrp_epsilon(EPS), other=jaxsal.lrp_zplus(EPS)), reduce=None))
    np.testing.assert_allclose(zp.sum((-3, -2, -1))[:, 0], y[:, 0], rtol=1e-3,
                               atol=1e-4 * np.abs(y).max())


def test_rule_layers_are_the_merges_of_tensors(se_net):
    m, _ = se_net
    names = m.relevance_layers
    classes = {m.layer(n).class_name for n in names}
    # the Multiply, the Subtract, the operations multiplying and adding two tensors
    assert {"Multiply", "Subtract", "ops.Multiply", "ops.Add"} <= classes
    ops_mul = [n for n in names if m.layer(n).class_name == "ops.Multiply"]
    assert len(ops_mul) == 1  # x * hard_sigmoid(x); not `relu6(...) * (1 / 6)`
    # of the four additions and multiplications recorded as operations, the two with a
    # constant (`h2 + 3.0`, `* (1 / 6)`) are elementwise maps, not rule layers
    all_ops = [n for n in m.graph.layer_paths(include_ops=True)
               if m.layer(n).class_name in ("ops.Add", "ops.Multiply")]
    assert len(all_ops) == 4 and len([n for n in names if n in all_ops]) == 2


def test_uniform_rule_in_closed_form(tmp_path):
    """score = sum_i w_i x_i y_i (Multiply) + sum_ij v_ij (A B)_ij (matmul): each factor of
    each product gets half of each term's relevance."""
    x_in, y_in = keras.Input((4,), name="x"), keras.Input((4,), name="y")
    a_in, b_in = keras.Input((3, 4), name="a"), keras.Input((4, 2), name="b")
    p = layers.Multiply(name="prod")([x_in, y_in])
    q = layers.Flatten()(ops.matmul(a_in, b_in))
    s1 = layers.Dense(1, use_bias=False, name="w")(p)
    s2 = layers.Dense(1, use_bias=False, name="v")(q)
    km = keras.Model([x_in, y_in, a_in, b_in], layers.Add()([s1, s2]))
    perturb_keras(km, seed=1, kernels=True)
    m = _load(km, tmp_path, "two")
    rng = np.random.default_rng(2)
    x, y = (rng.normal(size=(2, 4)).astype(np.float32) for _ in range(2))
    a, b = rng.normal(size=(2, 3, 4)).astype(np.float32), rng.normal(size=(2, 4, 2)).astype(
        np.float32)
    # one output unit: class 1 is the unit (class 0, its complement, scores -z)
    rx, ry, ra, rb = (np.asarray(v) for v in jaxsal.lrp(m, [x, y, a, b], 1, epsilon=EPS,
                                                         reduce=None))
    w = np.asarray(m.params["w"]["kernel"])[:, 0]
    v = np.asarray(m.params["v"]["kernel"])[:, 0].reshape(3, 2)
    np.testing.assert_allclose(rx, w * x * y / 2, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(ry, w * x * y / 2, rtol=1e-4, atol=1e-6)
    # R_a[i,k] = a_ik sum_j b_kj v_ij / 2, R_b[k,j] = b_kj sum_i a_ik v_ij / 2
    np.testing.assert_allclose(ra, np.einsum("nik,nkj,ij->nik", a, b, v) / 2, rtol=1e-4,
                               atol=1e-6)
    np.testing.assert_allclose(rb, np.einsum("nik,nkj,ij->nkj", a, b, v) / 2, rtol=1e-4,
                               atol=1e-6)
    # the epsilon rule named for the Multiply: each factor receives the whole relevance
    ex = np.asarray(jaxsal.lrp(m, [x, y, a, b], 1, epsilon=EPS, reduce=None,
                               rule={"prod": jaxsal.lrp_epsilon(EPS)})[0])
    np.testing.assert_allclose(ex, w * x * y, rtol=1e-4, atol=1e-6)


def test_rules_that_do_not_fit_a_product_are_refused(se_net):
    m, x = se_net
    with pytest.raises(ValueError, match="multiplies tensors"):
        jaxsal.lrp(m, x, 0, rule={"excite": jaxsal.lrp_zplus()})
    with pytest.raises(ValueError, match="multiplies tensors"):
        jaxsal.lrp(m, x, 0, rule={"Multiply": jaxsal.lrp_gamma()})
    with pytest.raises(ValueError, match="products of tensors"):
        jaxsal.lrp(m, x, 0, rule={"c2": jaxsal.lrp_uniform()})
    # one uniform rule for everything: the epsilon rule for what is not a product
    everywhere = np.asarray(jaxsal.lrp(m, x, 0, rule=jaxsal.lrp_uniform(EPS)))
    np.testing.assert_allclose(everywhere, np.asarray(jaxsal.lrp(m, x, 0, epsilon=EPS)),
                               rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="epsilon"):
        jaxsal.lrp_uniform(0.0)


def test_operations_with_a_constant_reach_the_elementwise_rule():
    """``x + 3.0``, ``0.5 * x``, ``x ** 2.0``, tf.keras's ``x * 2.0``: an activation of the
    one tensor for ``Runtime.elementwise``; two tensors, or a constant that broadcasts the
    tensor to a larger shape, are not."""
    from model_import import Runtime
    from model_import._layers.registry import ConvertContext, lookup

    class Marked:
        def __call__(self, f, v, *consts):
            return f(v, *consts) + 1000.0

    rt = Runtime(elementwise=Marked())
    x = jnp.linspace(0.5, 2.0, 8, dtype=jnp.float32).reshape(2, 4)

    def diff(impl, *args, **kwargs):
        return np.asarray(impl.call({}, *args, rt=rt, **kwargs)
                          - impl.call({}, *args, rt=Runtime(), **kwargs))

    def op(cls):
        return lookup(f"ops.{cls}")({}, ConvertContext(layer_name="o", class_name=cls))

    for cls, args in (("Add", (x, 3.0)), ("Multiply", (0.5, x)), ("Power", (x, 2.0)),
                      ("Subtract", (1.0, x)), ("Divide", (x, 4.0)), ("Maximum", (x, 1.0))):
        np.testing.assert_allclose(diff(op(cls), *args), 1000.0, atol=1e-3, err_msg=cls)
    np.testing.assert_allclose(diff(op("Add"), x, x), 0.0)
    np.testing.assert_allclose(diff(op("Add"), x[:, :1], np.ones((1, 4), np.float32)), 0.0)
    tf_mul = lookup("TFOpLambda")({"function": "__operators__.mul"},
                                  ConvertContext(layer_name="t", class_name="TFOpLambda"))
    np.testing.assert_allclose(diff(tf_mul, x, y=[2.0, 2.0, 2.0, 2.0]), 1000.0, atol=1e-3)
    assert tf_mul.merge == "product" and tf_mul.relevance


def test_deeplift_sums_to_delta_through_operations_with_constants(tmp_path):
    inp = keras.Input((5,))
    h = layers.Dense(6, activation="tanh", name="d1")(inp)
    h = (h + 1.0) ** 2.0 * 0.5 - 0.25
    out = layers.Dense(2, name="out")(h)
    km = keras.Model(inp, out)
    perturb_keras(km, seed=4, kernels=True)
    m = _load(km, tmp_path, "dl_ops")
    rng = np.random.default_rng(3)
    x, x0 = rng.normal(size=(4, 5)).astype(np.float32), rng.normal(size=(4, 5)).astype(
        np.float32)
    delta = np.asarray(m(x) - m(x0))
    attr = np.asarray(jaxsal.deeplift(m, x, [0, 1], baseline=x0))
    np.testing.assert_allclose(attr.sum(-1), delta, rtol=1e-4,
                               atol=1e-4 * np.abs(delta).max())


def test_time_distributed_and_layer_scale_are_rule_layers(tmp_path):
    """``TimeDistributed(Dense)`` and ConvNeXt's ``LayerScale`` take the layer rules (their
    gradients would pass ``W^T R`` and ``gamma R``): a bias-free network of them conserves
    the score; the wrapped layer's activation is the wrapper's."""
    from keras.src.applications.convnext import LayerScale

    inp = keras.Input((5, 6))
    h = layers.TimeDistributed(layers.Dense(8, activation="relu", use_bias=False), name="td1")(
        inp)
    h = layers.TimeDistributed(layers.Dense(6, use_bias=False), name="td2")(h)
    h = layers.Add()([inp, LayerScale(0.5, 6, name="scale")(h)])
    h = layers.GlobalAveragePooling1D()(h)
    km = keras.Model(inp, layers.Dense(3, use_bias=False, name="out")(h))
    perturb_keras(km, seed=6, kernels=True)
    km.get_layer("scale").set_weights([np.linspace(0.2, 1.5, 6).astype(np.float32)])
    m = _load(km, tmp_path, "td")
    assert {"td1", "td2", "scale"} <= set(m.relevance_layers)
    x = np.random.default_rng(4).normal(size=(3, 5, 6)).astype(np.float32)
    y = np.asarray(m(x))
    np.testing.assert_allclose(np.asarray(m(x)), np.asarray(km(x)), rtol=1e-5, atol=1e-6)
    r = np.asarray(jaxsal.lrp(m, x, [0, 1, 2], epsilon=EPS, reduce=None))  # (N, 3, 5, 6)
    np.testing.assert_allclose(r.sum((-2, -1)), y, rtol=1e-3, atol=1e-4 * np.abs(y).max())


def test_logits_head_removes_a_time_distributed_softmax(tmp_path):
    """A per-step classifier ``TimeDistributed(Dense(4, softmax))``: the ``logits`` head
    gives its pre-softmax values (their log-softmax is the log of the saved output)."""
    inp = keras.Input((5, 6))
    h = layers.TimeDistributed(layers.Dense(4, activation="softmax"), name="tag")(inp)
    km = keras.Model(inp, h)
    perturb_keras(km, seed=8, kernels=True)
    path = tmp_path / "tagger.keras"
    km.save(path)
    from model_import import load_keras

    x = np.random.default_rng(5).normal(size=(2, 5, 6)).astype(np.float32)
    saved = np.asarray(load_keras(path)(x))
    np.testing.assert_allclose(saved, np.asarray(km(x)), rtol=1e-5, atol=1e-6)
    logits = np.asarray(load_keras(path).with_head("logits")(x))
    assert np.abs(logits - saved).max() > 0.1
    shifted = logits - logits.max(-1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    np.testing.assert_allclose(log_softmax, np.log(saved), rtol=1e-4, atol=1e-5)


def test_signal_take_all_gives_the_gates_nothing(se_net, tmp_path):
    """``lrp_signal_take_all(i)``: factor ``i`` of the product receives the whole relevance
    (``R_x = w x y``), the other none; the relevance is conserved as with the uniform rule."""
    x_in, y_in = keras.Input((4,), name="x"), keras.Input((4,), name="y")
    p = layers.Multiply(name="prod")([x_in, y_in])
    km = keras.Model([x_in, y_in], layers.Dense(1, use_bias=False, name="w")(p))
    perturb_keras(km, seed=1, kernels=True)
    m = _load(km, tmp_path, "gate")
    rng = np.random.default_rng(2)
    x, y = (rng.normal(size=(2, 4)).astype(np.float32) for _ in range(2))
    w = np.asarray(m.params["w"]["kernel"])[:, 0]
    for signal, (want_x, want_y) in ((0, (w * x * y, 0 * x)), (-1, (0 * x, w * x * y))):
        rx, ry = jaxsal.lrp(m, [x, y], 1, epsilon=EPS, reduce=None,  # the unit: class 1
                            rule={"prod": jaxsal.lrp_signal_take_all(signal, EPS)})
        np.testing.assert_allclose(np.asarray(rx), want_x, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(np.asarray(ry), want_y, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="names no factor"):
        jaxsal.lrp(m, [x, y], 0, rule={"prod": jaxsal.lrp_signal_take_all(2)})
    with pytest.raises(ValueError, match="expected signal an int"):
        jaxsal.lrp_signal_take_all(1.0)
    # the squeeze-excitation's gate held: still conserved, and a different map
    sm, sx = se_net
    y_se = np.asarray(sm(sx))[:, 0]
    held = np.asarray(jaxsal.lrp(sm, sx, 0, epsilon=EPS, reduce=None,
                                 rule={"Multiply": jaxsal.lrp_signal_take_all(0, EPS)}))
    np.testing.assert_allclose(held.sum((-3, -2, -1)), y_se, rtol=1e-3,
                               atol=1e-4 * np.abs(y_se).max())
    uniform = np.asarray(jaxsal.lrp(sm, sx, 0, epsilon=EPS, reduce=None))
    assert np.abs(held - uniform).max() > 1e-3 * np.abs(uniform).max()
    with pytest.raises(ValueError, match="rule of products"):
        jaxsal.lrp(sm, sx, 0, rule={"c2": jaxsal.lrp_signal_take_all()})
