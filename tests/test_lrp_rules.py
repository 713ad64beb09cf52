"""LRP's rules beyond epsilon (gamma, alpha-beta, z-plus, z-box, w^2, flat, pass) and which
layer gets which (``lrp_composite``, dicts of layer or class names).

Analytic truths: each rule against a NumPy transcription of its formula on one Dense layer
with inputs, weights and biases of both signs; relevance conserved by every rule on a
network without biases; the special cases (gamma 0 is epsilon, alpha-beta (1, 0) is
z-plus); rules found by nested paths. Parity with zennit 0.5.1's composites:
tests/test_reference_torch.py.
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
from test_lrp import _load, _relu_net  # noqa: E402

EPS = 1e-6


@pytest.fixture(scope="module")
def dense_model(tmp_path_factory):
    """x (5) -> Dense(4, linear) "h" -> Dense(3) "out": the rules are tested at "h", whose
    inputs (the model's) have both signs; "out" keeps the epsilon rule."""
    keras.utils.set_random_seed(11)  # the same model in every run
    inp = keras.Input((5,))
    h = layers.Dense(4, name="h")(inp)
    km = keras.Model(inp, layers.Dense(3, name="out")(h))
    perturb_keras(km, seed=11, kernels=True)
    m = _load(km, tmp_path_factory.mktemp("rules"), "dense")
    x = np.random.default_rng(3).normal(size=(6, 5)).astype(np.float32)
    return m, x


def _stab(z, eps=EPS):
    return z + eps * np.where(z >= 0, 1.0, -1.0)


def _pos(v):
    return np.maximum(v, 0)


def _neg(v):
    return np.minimum(v, 0)


def _relevance_at_h(m, x, target):
    """The relevance reaching h's output (the epsilon rule at "out"), float64."""
    p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), m.params)
    z1 = x @ p["h"]["kernel"] + p["h"]["bias"]
    z2 = z1 @ p["out"]["kernel"] + p["out"]["bias"]
    r2 = np.zeros_like(z2)
    r2[:, target] = z2[:, target]
    return p["h"]["kernel"], p["h"]["bias"], z1, z1 * ((r2 / _stab(z2)) @ p["out"]["kernel"].T)


def _want(rule, x, w, b, z, r):
    x = x.astype(np.float64)
    if rule == "gamma":
        g = 0.4
        up = lambda v: v + g * _pos(v)  # noqa: E731
        down = lambda v: v + g * _neg(v)  # noqa: E731
        zp = _pos(x) @ up(w) + up(b) + _neg(x) @ down(w)
        zn = _pos(x) @ down(w) + down(b) + _neg(x) @ up(w)
        sp = np.where(z > 0, r / _stab(zp), 0)
        sn = np.where(z < 0, r / _stab(zn), 0)
        return (_pos(x) * (sp @ up(w).T) + _neg(x) * (sp @ down(w).T)
                + _pos(x) * (sn @ down(w).T) + _neg(x) * (sn @ up(w).T))
    if rule in ("alpha_beta", "zplus"):
        alpha, beta = (2.0, 1.0) if rule == "alpha_beta" else (1.0, 0.0)
        zp = _pos(x) @ _pos(w) + _pos(b) + _neg(x) @ _neg(w)
        zn = _pos(x) @ _neg(w) + _neg(b) + _neg(x) @ _pos(w)
        sp, sn = r / _stab(zp), r / _stab(zn)
        return (alpha * (_pos(x) * (sp @ _pos(w).T) + _neg(x) * (sp @ _neg(w).T))
                - beta * (_pos(x) * (sn @ _neg(w).T) + _neg(x) * (sn @ _pos(w).T)))
    if rule == "zbox":
        lo, hi = -2.5, 3.0
        zz = x @ w + b - (lo * np.ones_like(x)) @ _pos(w) - _pos(b) \
            - (hi * np.ones_like(x)) @ _neg(w) - _neg(b)
        s = r / _stab(zz)
        return x * (s @ w.T) - lo * (s @ _pos(w).T) - hi * (s @ _neg(w).T)
    if rule == "wsquare":
        s = r / _stab(np.ones_like(x) @ (w * w))
        return s @ (w * w).T
    if rule == "flat":
        s = r / _stab(np.ones_like(x) @ np.ones_like(w))
        return s @ np.ones_like(w).T
    raise AssertionError(rule)


RULES = {
    "gamma": jaxsal.lrp_gamma(0.4, EPS),
    "alpha_beta": jaxsal.lrp_alpha_beta(2, 1, EPS),
    "zplus": jaxsal.lrp_zplus(EPS),
    "zbox": jaxsal.lrp_zbox(-2.5, 3.0, EPS),
    "wsquare": jaxsal.lrp_wsquare(EPS),
    "flat": jaxsal.lrp_flat(EPS),
}


@pytest.mark.parametrize("name", sorted(RULES))
def test_each_rule_against_its_definition(dense_model, name):
    m, x = dense_model
    got = np.asarray(jaxsal.lrp(m, x, [0, 2], rule={"h": RULES[name]}, epsilon=EPS,
                                reduce=None))
    for i, t in enumerate([0, 2]):
        w, b, z, r = _relevance_at_h(m, x, t)
        want = _want(name, x, w, b, z, r)
        np.testing.assert_allclose(got[:, i], want, rtol=2e-4, atol=1e-5 * np.abs(want).max(),
                                   err_msg=name)


def test_special_cases(dense_model):
    m, x = dense_model

    def run(rule):
        return np.asarray(jaxsal.lrp(m, x, [0, 1, 2], rule=rule, epsilon=EPS))

    eps = run(None)
    scale = np.abs(eps).max()  # float32 sums of relevances of this size, in another order
    np.testing.assert_allclose(run(jaxsal.lrp_gamma(0.0, EPS)), eps, rtol=1e-5,
                               atol=1e-5 * scale)
    np.testing.assert_allclose(run(jaxsal.lrp_epsilon(EPS)), eps, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(run(jaxsal.lrp_alpha_beta(1, 0, EPS)),
                               run(jaxsal.lrp_zplus(EPS)), rtol=1e-6, atol=1e-7)
    # the rules really differ from each other
    maps = [run(r) for r in RULES.values()]
    for i in range(len(maps)):
        for j in range(i):
            assert np.abs(maps[i] - maps[j]).max() > 1e-3 * np.abs(maps[i]).max()


@pytest.fixture(scope="module")
def nobias_net(tmp_path_factory):
    km = _relu_net(use_bias=False)
    perturb_keras(km, seed=6, kernels=True)
    m = _load(km, tmp_path_factory.mktemp("rules_nobias"), "nobias")
    x = np.random.default_rng(1).normal(size=(3, 12, 10, 3)).astype(np.float32)
    return m, x


@pytest.mark.parametrize("composite", [
    dict(first=jaxsal.lrp_zbox(-4.0, 4.0, EPS), conv=jaxsal.lrp_gamma(0.25, EPS),
         dense=jaxsal.lrp_zplus(EPS)),
    dict(first=jaxsal.lrp_flat(EPS), conv=jaxsal.lrp_zplus(EPS), dense=jaxsal.lrp_epsilon(EPS)),
    dict(first=jaxsal.lrp_wsquare(EPS), conv=jaxsal.lrp_gamma(1.0, EPS),
         dense=jaxsal.lrp_gamma(0.5, EPS), other=jaxsal.lrp_epsilon(EPS)),
], ids=["zbox-gamma-zplus", "flat-zplus-epsilon", "wsquare-gamma"])
def test_without_biases_every_rule_conserves_relevance(nobias_net, composite):
    """Conv, max pooling, a residual Add, average pooling, GAP and Dense layers: the input's
    relevance adds up to the target's score (a ReLU passes relevance only where it is
    active, where the positive contributions the rules divide by are nonzero)."""
    m, x = nobias_net
    r = np.asarray(jaxsal.lrp(m, x, [0, 2], rule=jaxsal.lrp_composite(**composite),
                              epsilon=EPS))
    y = np.asarray(m(x))[:, [0, 2]]
    np.testing.assert_allclose(r.sum((-2, -1)), y, rtol=1e-3, atol=1e-4 * np.abs(y).max())


def test_which_layer_gets_which_rule(relu_net_cl):
    from jaxsal._src.lrp_rules import Epsilon, layer_rules

    m = relu_net_cl
    names = m.relevance_layers
    convs = [n for n in names if n.startswith("conv2d")]
    dense = [n for n in names if n.startswith("dense")]
    z, g, f = jaxsal.lrp_zplus(), jaxsal.lrp_gamma(), jaxsal.lrp_flat()
    got = layer_rules(m, jaxsal.lrp_composite(first=f, conv=g, dense=z,
                                              layers={dense[0]: jaxsal.lrp_epsilon(0.5),
                                                      "Add": z}), 1e-9)
    assert got.default == Epsilon(1e-9)
    by = dict(got.by_layer)
    assert by[convs[0]] == f and all(by[c] == g for c in convs[1:])
    assert by[dense[0]] == jaxsal.lrp_epsilon(0.5) and by[dense[1]] == z
    assert by[next(n for n in names if n.startswith("add"))] == z
    assert not any(n.startswith(("max_pool", "average", "global", "batch")) for n in by)
    # a dict is a composite of its names; one rule is every layer's
    assert layer_rules(m, {convs[1]: g}, 1e-9).by_layer == ((convs[1], g),)
    assert layer_rules(m, z, 1e-9) == type(got)(z)


def test_first_reaches_every_layer_that_reads_an_input(tmp_path):
    """``first=`` is the rule of every kernel layer reading a model input: both convolutions
    of a stem that reads the image twice (through Rescaling, through zero padding), the
    Dense layer of a second input, a nested model's Dense after a Flatten; not the
    convolution after them, nor the output layer."""
    from jaxsal._src.lrp_rules import layer_rules

    i1, i2 = keras.Input((6, 6, 1), name="i1"), keras.Input((4,), name="i2")
    ca = layers.Conv2D(2, 3, padding="same", name="ca")(layers.Rescaling(0.5)(i1))
    cb = layers.Conv2D(2, 3, name="cb")(layers.ZeroPadding2D(1)(i1))
    cc = layers.Conv2D(2, 3, name="cc")(layers.Concatenate()([ca, cb]))
    inner = keras.Sequential([keras.Input((6, 6, 1)), layers.Flatten(),
                              layers.Dense(2, name="di")], name="inner")
    h = layers.Concatenate()([layers.GlobalAveragePooling2D()(cc), inner(i1),
                              layers.Dense(2, name="d2")(i2)])
    m = _load(keras.Model([i1, i2], layers.Dense(2, name="out")(h)), tmp_path, "readers")
    z, g, e = jaxsal.lrp_zbox(-1.0, 1.0), jaxsal.lrp_gamma(), jaxsal.lrp_epsilon(0.5)
    by = dict(layer_rules(m, jaxsal.lrp_composite(first=z, conv=g, dense=e), 1e-9).by_layer)
    assert {k: v for k, v in by.items() if k in ("ca", "cb", "cc", "inner/di", "d2",
                                                  "out")} == {
        "ca": z, "cb": z, "cc": g, "inner/di": z, "d2": z, "out": e}


def test_composites_by_name(relu_net_cl):
    m = relu_net_cl
    x = np.random.default_rng(0).normal(size=(2, 12, 10, 3)).astype(np.float32)
    J = jaxsal
    for name, composite in (
            ("epsilon_plus", J.lrp_composite(conv=J.lrp_zplus(), dense=J.lrp_epsilon(0.1))),
            ("epsilon_plus_flat", J.lrp_composite(first=J.lrp_flat(), conv=J.lrp_zplus(),
                                                  dense=J.lrp_epsilon(0.1))),
            ("epsilon_alpha2_beta1", J.lrp_composite(conv=J.lrp_alpha_beta(2, 1),
                                                     dense=J.lrp_epsilon(0.1)))):
        np.testing.assert_array_equal(np.asarray(J.lrp(m, x, [0], rule=name, epsilon=0.1)),
                                      np.asarray(J.lrp(m, x, [0], rule=composite,
                                                       epsilon=0.1)), err_msg=name)
    with pytest.raises(ValueError, match="unknown rule 'epsilon_gamma'; expected one of"):
        J.lrp(m, x, [0], rule="epsilon_gamma")


def test_one_weight_rule_everywhere_is_epsilon_on_layers_without_kernels(relu_net_cl):
    m = relu_net_cl
    x = np.random.default_rng(0).normal(size=(2, 12, 10, 3)).astype(np.float32)
    everywhere = np.asarray(jaxsal.lrp(m, x, [1], rule=jaxsal.lrp_zplus(0.01)))
    by_role = np.asarray(jaxsal.lrp(m, x, [1], epsilon=0.01, rule=jaxsal.lrp_composite(
        conv=jaxsal.lrp_zplus(0.01), dense=jaxsal.lrp_zplus(0.01))))
    np.testing.assert_allclose(everywhere, by_role, rtol=1e-5, atol=1e-7)


def test_pass_rule(relu_net_cl):
    m = relu_net_cl
    x = np.random.default_rng(0).normal(size=(2, 12, 10, 3)).astype(np.float32)
    bn = next(n for n in m.relevance_layers if n.startswith("batch"))
    plain = np.asarray(jaxsal.lrp(m, x, [1], layer=bn, reduce=None))
    passed = np.asarray(jaxsal.lrp(m, x, [1], rule={bn: jaxsal.lrp_pass()}, reduce=None))
    # the relevance on bn's output goes to its input unchanged: the first conv's output
    conv = m.relevance_layers[0]
    at_conv = np.asarray(jaxsal.lrp(m, x, [1], rule={bn: jaxsal.lrp_pass()}, layer=conv,
                                    reduce=None))
    np.testing.assert_allclose(at_conv, plain, rtol=1e-5, atol=1e-7)
    assert passed.shape == (2, 1, 12, 10, 3)
    pool = next(n for n in m.relevance_layers if n.startswith("max_pool"))
    with pytest.raises(ValueError, match="lrp_pass: expected a layer with one input"):
        jaxsal.lrp(m, x, [1], rule={pool: jaxsal.lrp_pass()})


def test_a_rule_s_error_in_the_backward_pass_names_its_layer(dense_model):
    """A rule that does not fit a layer fails only in the backward pass: the error names the
    layer (the original is in its chain of causes)."""
    m, x = dense_model
    with pytest.raises(ValueError, match=r"^lrp: layer 'out': lrp_zbox: expected low and "
                                         r"high broadcastable to the layer's input \(4,\)"
                       ) as e:
        jaxsal.lrp(m, x, [0], rule=jaxsal.lrp_zbox(np.zeros(2), np.ones(2)))
    causes, c = [], e.value.__cause__  # JAX puts its trace between them
    while c is not None:
        causes, c = causes + [c], c.__cause__
    assert any(type(c) is ValueError and str(c).startswith("lrp_zbox: ") for c in causes)
    with pytest.raises(ValueError, match=r"^lrp: layer 'h': lrp_pass: expected a layer"):
        jaxsal.lrp(m, x, [0], rule={"h": jaxsal.lrp_pass()})


def test_nested_layers_by_path(tmp_path):
    """A rule reaches a layer inside a nested model by its path (or bare name); the maps
    equal those of the same network written flat."""
    inner = keras.Sequential([keras.Input((8, 8, 2)),
                              layers.Conv2D(4, 3, activation="relu", name="conv")], name="inner")
    inp = keras.Input((8, 8, 2))
    h = layers.GlobalAveragePooling2D(name="gap")(inner(inp))
    nested = keras.Model(inp, layers.Dense(3, name="out")(h))
    perturb_keras(nested, seed=2, kernels=True)
    inp = keras.Input((8, 8, 2))
    h = layers.Conv2D(4, 3, activation="relu", name="conv")(inp)
    flat = keras.Model(inp, layers.Dense(3, name="out")(layers.GlobalAveragePooling2D()(h)))
    flat.get_layer("conv").set_weights(inner.get_layer("conv").get_weights())
    flat.get_layer("out").set_weights(nested.get_layer("out").get_weights())
    mn, mf = _load(nested, tmp_path, "nested"), _load(flat, tmp_path, "flat")
    assert mn.relevance_layers == ["inner/conv", "gap", "out"]
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 2)).astype(np.float32)
    want = np.asarray(jaxsal.lrp(mf, x, [0, 1], rule={"conv": jaxsal.lrp_zbox(-3.0, 3.0)}))
    for key in ("inner/conv", "conv"):
        got = np.asarray(jaxsal.lrp(mn, x, [0, 1], rule={key: jaxsal.lrp_zbox(-3.0, 3.0)}))
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    assert np.abs(want - np.asarray(jaxsal.lrp(mf, x, [0, 1]))).max() > 1e-3


def test_a_new_rule_compiles_a_new_program(relu_net_cl, compiles):
    m = relu_net_cl
    x = np.random.default_rng(0).normal(size=(2, 12, 10, 3)).astype(np.float32)
    rule = jaxsal.lrp_composite(conv=jaxsal.lrp_gamma(0.25))
    a = np.asarray(jaxsal.lrp(m, x, [0], rule=rule))
    compiles.n = 0
    np.testing.assert_array_equal(
        np.asarray(jaxsal.lrp(m, x, [0], rule=jaxsal.lrp_composite(conv=jaxsal.lrp_gamma(0.25)))),
        a)
    assert compiles.n == 0  # an equal composite is the same program
    b = np.asarray(jaxsal.lrp(m, x, [0], rule=jaxsal.lrp_composite(conv=jaxsal.lrp_gamma(1.0))))
    assert np.abs(a - b).max() > 1e-4 * np.abs(a).max()


def test_bad_rules_are_refused(relu_net_cl):
    m = relu_net_cl
    x = np.zeros((1, 12, 10, 3), np.float32)
    with pytest.raises(ValueError, match="alpha - beta = 1"):
        jaxsal.lrp_alpha_beta(2, 2)
    with pytest.raises(ValueError, match="lrp_gamma: expected gamma >= 0 \\(a finite number"):
        jaxsal.lrp_gamma(-0.1)
    with pytest.raises(ValueError, match="low <= high"):
        jaxsal.lrp_zbox(1.0, 0.0)
    with pytest.raises(ValueError, match="do not broadcast"):
        jaxsal.lrp_zbox([0.0, 0.0], [1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="lrp_zplus: expected epsilon > 0"):
        jaxsal.lrp_zplus(0.0)
    with pytest.raises(TypeError, match="expected an LRP rule"):
        jaxsal.lrp_composite(conv="gamma")
    with pytest.raises(TypeError, match="expected rule= an LRP rule"):
        jaxsal.lrp(m, x, 0, rule=0.25)
    with pytest.raises(ValueError, match="unknown layer 'nope'"):
        jaxsal.lrp(m, x, 0, rule={"nope": jaxsal.lrp_zplus()})
    relu = next(n for n in m.layer_names if n.startswith("re_lu"))
    with pytest.raises(ValueError, match="takes no rule.*the rule layers are"):
        jaxsal.lrp(m, x, 0, rule={relu: jaxsal.lrp_zplus()})
    first = m.relevance_layers[0]
    with pytest.raises(ValueError, match=r"broadcastable to the layer's input \(12, 10, 3\)"):
        jaxsal.lrp(m, x, 0, rule={first: jaxsal.lrp_zbox(np.zeros(4), np.ones(4))})


def test_alpha_beta_takes_float32_parameters():
    """alpha and beta given as float32 (np.float32(1.1) - np.float32(0.1) is 1 in float32, 2e-8
    from it in float64) are accepted as the Python floats are; a real miss is still refused."""
    import jax.numpy as jnp

    for a, b in ((1.1, 0.1), (1.7, 0.7), (101.1, 100.1)):
        for cast in (np.float32, jnp.float32):
            assert np.float32(cast(a) - cast(b)) == 1  # in their own precision
            r = jaxsal.lrp_alpha_beta(cast(a), cast(b))
            np.testing.assert_allclose((r.alpha, r.beta), (a, b), rtol=1e-6)
    with pytest.raises(ValueError, match="alpha - beta = 1"):
        jaxsal.lrp_alpha_beta(np.float32(2.0), np.float32(1.001))


@pytest.fixture(scope="module")
def relu_net_cl(tmp_path_factory):
    km = _relu_net()
    perturb_keras(km, seed=4, kernels=True)
    return _load(km, tmp_path_factory.mktemp("rules_net"), "net")


def test_preprocessing_layers_pass_relevance_unchanged(tmp_path):
    """Rescaling and Normalization inside the model pass relevance on unchanged (their
    gradient would scale it by 1/255 or 1/std): a bias-free network still conserves the
    score at its input, under the default rule, one rule everywhere and a composite; a rule
    named for them applies."""
    inp = keras.Input((6, 6, 3))
    h = layers.Rescaling(1 / 255, offset=-0.5, name="rescale")(inp)
    h = layers.Normalization(mean=[0.1, -0.2, 0.0], variance=[4.0, 0.25, 1.0], name="norm")(h)
    h = layers.Conv2D(5, 3, activation="relu", use_bias=False)(h)
    h = layers.GlobalAveragePooling2D()(h)
    km = keras.Model(inp, layers.Dense(2, use_bias=False)(h))
    perturb_keras(km, seed=5, kernels=True)
    m = _load(km, tmp_path, "prep")
    x = np.random.default_rng(0).uniform(0, 255, size=(3, 6, 6, 3)).astype(np.float32)
    y = np.asarray(m(x))[:, [0, 1]]
    for rule in (None, jaxsal.lrp_zplus(1e-6),
                 jaxsal.lrp_composite(first=jaxsal.lrp_zbox(-5.0, 5.0, 1e-6))):
        r = np.asarray(jaxsal.lrp(m, x, [0, 1], rule=rule, epsilon=1e-6))
        np.testing.assert_allclose(r.sum((-2, -1)), y, rtol=1e-3, atol=1e-4 * np.abs(y).max(),
                                   err_msg=str(rule))
    g = np.asarray(jaxsal.lrp(m, x, [0, 1], rule={"rescale": jaxsal.lrp_epsilon(1e-6),
                                                 "Normalization": jaxsal.lrp_epsilon(1e-6)},
                              epsilon=1e-6))
    assert np.abs(g.sum((-2, -1)) - y).max() > 1e-2 * np.abs(y).max()  # offsets absorb


def _merged(wd, wp, multiplier):
    """The Conv kernel (*window, C, F) of a separable layer's (*window, C, M) depthwise and
    (1..., C * M, F) pointwise kernels."""
    c = wd.shape[-2]
    return np.einsum("...cm,cmf->...cf", wd, wp.reshape(c, multiplier, wp.shape[-1]))


# Each program is compiled once per rule (rules are closed over), so each case runs the epsilon
# rule (the separable layer kept in two steps) and one weight-changing rule per bias setting
# (the kernels merged, jaxsal/_src/lrp_separable.py): once merged, the layer is the Conv
# twin's and every rule's own code is the Conv's, so the rule does not interact with the
# merge's geometry (rank, layout, multiplier, strides). Each of the four weight-changing rules
# runs once without biases (conservation) and once with a folded batch norm.
_SEPARABLE_WEIGHT_RULES = {"zplus": lambda: jaxsal.lrp_zplus(),
                           "gamma": lambda: jaxsal.lrp_gamma(0.5),
                           "alpha_beta": lambda: jaxsal.lrp_alpha_beta(2, 1),
                           "zbox": lambda: jaxsal.lrp_zbox(0.0, 3.0)}


@pytest.mark.parametrize("rank, data_format, multiplier, opts, weight_rules", [
    (2, "channels_last", 1, dict(strides=1, padding="same"), ("zplus", "gamma")),
    (2, "channels_last", 2, dict(strides=2, padding="valid"), ("gamma", "alpha_beta")),
    (2, "channels_first", 2, dict(dilation_rate=2, padding="same"), ("alpha_beta", "zbox")),
    (1, "channels_last", 3, dict(strides=1, padding="same"), ("zbox", "zplus")),
])
def test_a_separable_convolution_s_rules_are_those_of_its_one_kernel(tmp_path, rank,
                                                                    data_format, multiplier,
                                                                    opts, weight_rules):
    """A SeparableConv is one linear map: the weight rules see its composed kernel, as they
    see the same map written as a Conv (its rules on the two kernels apart dropped the
    positive products of two negative weights, and lost or made up relevance). Bias-free,
    after a ReLU: the relevance is conserved; with biases and a batch norm folded into it,
    the maps equal the Conv twin's. ``weight_rules``: the weight-changing rule run without
    and with biases."""
    shape = (7,) * rank + (3,) if data_format == "channels_last" else (3,) + (7,) * rank
    sep_cls = layers.SeparableConv2D if rank == 2 else layers.SeparableConv1D
    conv_cls = layers.Conv2D if rank == 2 else layers.Conv1D
    rng = np.random.default_rng(rank + multiplier)
    for use_bias in (False, True):
        twins = []
        for sep in (True, False):
            inp = keras.Input(shape)
            h = conv_cls(3, 1, use_bias=False, activation="relu", data_format=data_format,
                         name="c1")(inp)
            cls = sep_cls if sep else conv_cls
            kw = dict(depth_multiplier=multiplier) if sep else {}
            h = cls(4, 3, use_bias=use_bias, data_format=data_format, name="s", **kw, **opts)(h)
            if use_bias:
                h = layers.BatchNormalization(axis=1 if data_format == "channels_first"
                                              else -1, name="bn")(h)
            h = layers.Activation("relu")(h)
            pool = layers.GlobalAveragePooling2D if rank == 2 else layers.GlobalAveragePooling1D
            out = layers.Dense(2, use_bias=False, name="fc")(pool(data_format=data_format)(h))
            twins.append(keras.Model(inp, out))
        ks, kc = twins
        c1 = rng.normal(size=(1,) * rank + (3, 3)).astype(np.float32)
        wd = rng.normal(size=(3,) * rank + (3, multiplier)).astype(np.float32)
        wp = rng.normal(size=(1,) * rank + (3 * multiplier, 4)).astype(np.float32)
        fc = rng.normal(size=(4, 2)).astype(np.float32)
        bias = [rng.normal(size=4).astype(np.float32)] if use_bias else []
        bn = [rng.uniform(0.5, 1.5, 4).astype(np.float32) for _ in range(4)]
        for k in twins:
            k.get_layer("c1").set_weights([c1])
            k.get_layer("fc").set_weights([fc])
            if use_bias:
                k.get_layer("bn").set_weights(bn)
        ks.get_layer("s").set_weights([wd, wp, *bias])
        kc.get_layer("s").set_weights([_merged(wd, wp, multiplier), *bias])
        ms = _load(ks, tmp_path, f"sep_{use_bias}")
        mc = _load(kc, tmp_path, f"conv_{use_bias}")
        x = np.abs(rng.normal(size=(2, *shape))).astype(np.float32)
        np.testing.assert_allclose(ms(x), mc(x), rtol=1e-5, atol=1e-5)
        for rule in (_SEPARABLE_WEIGHT_RULES[weight_rules[use_bias]](),
                     jaxsal.lrp_epsilon(1e-6)):
            rules = {"s": rule, "c1": jaxsal.lrp_epsilon(1e-9)}
            got = np.asarray(jaxsal.lrp(ms, x, [0, 1], rule=rules, fold_batchnorm=use_bias))
            want = np.asarray(jaxsal.lrp(mc, x, [0, 1], rule=rules, fold_batchnorm=use_bias))
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max(),
                                       err_msg=f"{type(rule).__name__} bias={use_bias}")
            if not use_bias and not isinstance(rule, type(jaxsal.lrp_alpha_beta(2, 1))):
                axes = tuple(range(2, got.ndim))
                np.testing.assert_allclose(got.sum(axes), np.asarray(ms(x)), rtol=1e-4)


def test_time_distributed_layers_take_their_wrapped_layer_s_rules(tmp_path):
    """``TimeDistributed(Conv1D)`` is a convolution and ``TimeDistributed(SeparableConv1D)``
    a separable one for LRP (roles, class keys, the merged kernel): ``"epsilon_plus"`` gives
    both z-plus, as naming them does (it left them the epsilon rule: equal maps), the class
    keys ``Conv1D`` and ``SeparableConv1D`` reach them, and the separable layer's z-plus maps
    equal its ``TimeDistributed(Conv1D)`` twin's with the composed kernel (the rule saw the
    two kernels apart)."""
    from jaxsal._src.lrp_rules import layer_rules

    rng = np.random.default_rng(7)
    wd = rng.normal(size=(3, 3, 1)).astype(np.float32)
    wp = rng.normal(size=(1, 3, 4)).astype(np.float32)
    twins = []
    for sep in (True, False):
        inp = keras.Input((3, 6, 3))  # (N, T, L, C)
        first = layers.SeparableConv1D(4, 3, use_bias=False) if sep else layers.Conv1D(
            4, 3, use_bias=False)
        h = layers.Activation("relu")(layers.TimeDistributed(first, name="sep")(inp))
        h = layers.TimeDistributed(layers.Conv1D(3, 2, activation="relu"), name="conv")(h)
        km = keras.Model(inp, layers.Dense(2, name="fc")(layers.Flatten()(h)))
        perturb_keras(km, seed=3, kernels=True)
        km.get_layer("sep").set_weights([wd, wp] if sep else [_merged(wd, wp, 1)])
        twins.append(km)
    twins[1].get_layer("conv").set_weights(twins[0].get_layer("conv").get_weights())
    twins[1].get_layer("fc").set_weights(twins[0].get_layer("fc").get_weights())
    ms, mc = (_load(k, tmp_path, f"td_{i}") for i, k in enumerate(twins))
    x = rng.normal(size=(2, 3, 6, 3)).astype(np.float32)
    np.testing.assert_allclose(ms(x), mc(x), rtol=1e-5, atol=1e-5)
    z = jaxsal.lrp_zplus()
    assert dict(layer_rules(ms, {"SeparableConv1D": z, "Conv1D": z}, 1e-9).by_layer) == {
        "sep": z, "conv": z}
    plain = np.asarray(jaxsal.lrp(ms, x, [0, 1]))
    plus = np.asarray(jaxsal.lrp(ms, x, [0, 1], rule="epsilon_plus"))
    named = np.asarray(jaxsal.lrp(ms, x, [0, 1], rule={"sep": z, "conv": z}))
    assert np.abs(plus - plain).max() > 1e-2 * np.abs(plain).max()
    np.testing.assert_allclose(plus, named, rtol=1e-5, atol=1e-6 * np.abs(named).max())
    twin = np.asarray(jaxsal.lrp(mc, x, [0, 1], rule="epsilon_plus"))
    np.testing.assert_allclose(plus, twin, rtol=1e-4, atol=1e-4 * np.abs(twin).max())


def test_an_epsilon_no_layer_would_use_is_refused(relu_net_cl):
    """With one rule for every rule layer, lrp's epsilon is nobody's (the rule has its own):
    epsilon=10 ran as if left out. Refused; with a composite that leaves layers to it, used."""
    m = relu_net_cl
    x = np.random.default_rng(0).normal(size=(2, 12, 10, 3)).astype(np.float32)
    with pytest.raises(ValueError, match=r"lrp: epsilon=10 would be unused: rule=AlphaBeta\(.*"
                                         r"jaxsal.lrp_zplus\(epsilon=1e-6\)"):
        jaxsal.lrp(m, x, 0, rule=jaxsal.lrp_zplus(), epsilon=10)
    some = jaxsal.lrp_composite(conv=jaxsal.lrp_zplus())
    a = np.asarray(jaxsal.lrp(m, x, 0, rule=some, epsilon=10.0))
    b = np.asarray(jaxsal.lrp(m, x, 0, rule=some))
    assert not np.allclose(a, b)
