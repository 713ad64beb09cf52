"""LRP with ``fold_batchnorm=True``: every BatchNormalization that directly follows a
convolution or Dense layer is merged into it (zennit's SequentialMergeBatchNorm).

The truth: the maps equal those of the same network written without the batch norms, its
layers' weights and biases merged by hand in NumPy (``s = gamma / sqrt(var + eps)``, ``W s``,
``b s + beta - mean s``), for every kind of kernel layer (Conv2D with and without bias,
DepthwiseConv2D, SeparableConv2D, Conv2DTranspose, Dense, a channels-first Conv2D), under a
composite of rules that reads weights and biases. Batch norms that cannot be folded stay as
they are.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "numpy")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from keras import layers  # noqa: E402

import jaxsal  # noqa: E402
from import_helpers import perturb_keras  # noqa: E402
from test_lrp import _load  # noqa: E402

RULES = jaxsal.lrp_composite(first=jaxsal.lrp_zbox(-3.0, 3.0), conv=jaxsal.lrp_gamma(0.5),
                             dense=jaxsal.lrp_alpha_beta(2, 1), other=jaxsal.lrp_epsilon(0.01))

# (layer factory, with a batch norm after it); every factory is called with name= and
# use_bias=
KINDS = [
    ("conv_nobias", lambda **kw: layers.Conv2D(6, 3, padding="same", **kw), False),
    ("conv", lambda **kw: layers.Conv2D(6, 3, padding="same", **kw), True),
    ("depthwise", lambda **kw: layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same",
                                                      **kw), True),
    ("separable", lambda **kw: layers.SeparableConv2D(5, 3, padding="same", **kw), False),
    ("transpose", lambda **kw: layers.Conv2DTranspose(4, 2, strides=2, **kw), True),
]


def _network(with_bn: bool):
    """Each kind of layer followed by a batch norm (or, without, given a bias), ReLUs
    between, a max pooling, then Dense -> BN -> ReLU -> Dense."""
    inp = keras.Input((8, 8, 3))
    h = inp
    for name, make, use_bias in KINDS:
        h = make(name=name, use_bias=use_bias or not with_bn)(h)
        if with_bn:
            h = layers.BatchNormalization(name=f"bn_{name}",
                                          epsilon=1e-3 if name != "conv" else 0.1)(h)
        h = layers.ReLU()(h)
        if name == "depthwise":
            h = layers.MaxPooling2D(2)(h)
    h = layers.Flatten(name="flat")(h)
    h = layers.Dense(7, name="fc", use_bias=not with_bn)(h)
    if with_bn:
        h = layers.BatchNormalization(name="bn_fc", scale=False)(h)
    h = layers.ReLU()(h)
    return keras.Model(inp, layers.Dense(3, name="out")(h))


def _merged(km):
    """The folded twin of ``km``: the batch norms' scale and shift merged into the layers
    before them, by hand."""
    twin = _network(with_bn=False)
    for layer in twin.layers:
        if not layer.weights:
            continue
        src = km.get_layer(layer.name)
        w = [np.asarray(v, np.float64) for v in src.get_weights()]
        bn_name = f"bn_{layer.name}"
        if bn_name not in [x.name for x in km.layers]:
            layer.set_weights(w)
            continue
        bn = km.get_layer(bn_name)
        cfg = bn.get_config()
        p = dict(zip([v.path.split("/")[-1] for v in bn.weights],
                     [np.asarray(v, np.float64) for v in bn.get_weights()]))
        s = p.get("gamma", 1.0) / np.sqrt(p["moving_variance"] + cfg["epsilon"])
        t = p.get("beta", 0.0) - p["moving_mean"] * s
        k = w[0] if layer.name != "separable" else w[1]
        if layer.name == "transpose":
            k = k * s[:, None]  # (h, w, out, in)
        elif layer.name == "depthwise":
            k = k * s.reshape(k.shape[-2], k.shape[-1])  # (h, w, in, multiplier)
        else:
            k = k * s
        b = (w[-1] if len(w) > (2 if layer.name == "separable" else 1) else 0.0) * s + t
        new = [w[0], k, b] if layer.name == "separable" else [k, b]
        layer.set_weights([v.astype(np.float32) for v in new])
    return twin


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    km = _network(with_bn=True)
    perturb_keras(km, seed=9, kernels=True)
    d = tmp_path_factory.mktemp("fold")
    return _load(km, d, "bn"), _load(_merged(km), d, "folded")


def test_folded_network_is_the_network_without_batch_norms(pair):
    m, twin = pair
    x = np.random.default_rng(0).normal(size=(3, 8, 8, 3)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(m(x)), np.asarray(twin(x)), rtol=1e-4, atol=1e-5)
    want = np.asarray(jaxsal.lrp(twin, x, [0, 2], rule=RULES))
    got = np.asarray(jaxsal.lrp(m, x, [0, 2], rule=RULES, fold_batchnorm=True))
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4 * np.abs(want).max())
    unfolded = np.asarray(jaxsal.lrp(m, x, [0, 2], rule=RULES))
    assert np.abs(unfolded - want).max() > 1e-2 * np.abs(want).max()
    # relevance of a layer after the folds, and of a folded batch norm's output (the
    # merged layer's): as in the twin
    for layer, twin_layer, reduce in (("flat", "flat", None),
                                      ("bn_separable", "separable", "sum")):
        want = np.asarray(jaxsal.lrp(twin, x, [1], rule=RULES, layer=twin_layer,
                                     reduce=reduce))
        got = np.asarray(jaxsal.lrp(m, x, [1], rule=RULES, layer=layer, fold_batchnorm=True,
                                    reduce=reduce))
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4 * np.abs(want).max(),
                                   err_msg=layer)


def test_every_pair_is_found(pair):
    from jaxsal._src.lrp_fold import fold_plan

    m, _ = pair
    plan = {f.batch_norm_path: f.layer_path for f in fold_plan(m)}
    assert plan == {f"bn_{n}": n for n, _, _ in KINDS} | {"bn_fc": "fc"}
    # a layer whose output is asked for keeps its batch norm
    assert "bn_conv" not in {f.batch_norm_path for f in fold_plan(m, frozenset({"conv"}))}


def test_a_layer_the_score_reads_is_not_folded(pair):
    """A ``jaxsal.neuron`` target on a layer that could fold: its relevance totals the score
    (the bias-free conv conserves it); folded, the maps explained the batch norm's output on
    that channel, a rescaled and shifted score."""
    m, _ = pair
    x = np.random.default_rng(4).normal(size=(2, 8, 8, 3)).astype(np.float32)
    score = np.asarray(m.apply(m.params, x, capture=["conv_nobias"])[1]["conv_nobias"])
    score = score[..., 1].mean((1, 2))  # the channel's mean over positions
    r = np.asarray(jaxsal.lrp(m, x, [jaxsal.neuron("conv_nobias", 1)], fold_batchnorm=True))
    np.testing.assert_allclose(r.reshape(2, -1).sum(-1), score, rtol=1e-4,
                               atol=1e-5 * np.abs(score).max())


def test_batch_norms_that_cannot_fold_stay(tmp_path):
    """After an activation, after a layer whose output is read twice, over another axis, or
    after a pooling: nothing is folded, and the maps are those without folding."""
    from jaxsal._src.lrp_fold import fold_plan

    inp = keras.Input((6, 6, 3))
    a = layers.Conv2D(4, 3, activation="relu", name="act")(inp)
    a = layers.BatchNormalization(name="bn_act")(a)
    b = layers.Conv2D(4, 1, name="twice")(a)
    b = layers.Add()([layers.BatchNormalization(name="bn_twice")(b), b])
    c = layers.Conv2D(4, 1, name="axis")(b)
    c = layers.BatchNormalization(axis=1, name="bn_axis")(c)
    c = layers.BatchNormalization(name="bn_pool")(layers.AveragePooling2D(2)(c))
    km = keras.Model(inp, layers.Dense(2)(layers.Flatten()(c)))
    perturb_keras(km, seed=1, kernels=True)
    m = _load(km, tmp_path, "nofold")
    assert fold_plan(m) == ()
    x = np.random.default_rng(1).normal(size=(2, 6, 6, 3)).astype(np.float32)
    np.testing.assert_array_equal(
        np.asarray(jaxsal.lrp(m, x, [0], rule=RULES, fold_batchnorm=True)),
        np.asarray(jaxsal.lrp(m, x, [0], rule=RULES)))


def test_channels_first_and_nested(tmp_path):
    """A channels-first Conv2D -> BatchNormalization(axis=1) inside a nested model folds
    like its channels-last twin."""
    def build(cf, with_bn):
        kw = {"data_format": "channels_first"} if cf else {}
        shape = (3, 6, 6) if cf else (6, 6, 3)
        inner_in = keras.Input(shape)
        h = layers.Conv2D(4, 3, name="c", use_bias=not with_bn, **kw)(inner_in)
        if with_bn:
            h = layers.BatchNormalization(axis=1 if cf else -1, name="bn")(h)
        inner = keras.Model(inner_in, layers.ReLU()(h), name="inner")
        inp = keras.Input(shape)
        h = layers.GlobalAveragePooling2D(**kw)(inner(inp))
        return keras.Model(inp, layers.Dense(2, name="out")(h))

    km = build(True, True)
    perturb_keras(km, seed=3, kernels=True)
    twin = build(True, False)
    inner, tinner = km.get_layer("inner"), twin.get_layer("inner")
    bn = inner.get_layer("bn")
    g, beta, mean, var = [np.asarray(v, np.float64) for v in bn.get_weights()]
    s = g / np.sqrt(var + bn.get_config()["epsilon"])
    k = np.asarray(inner.get_layer("c").get_weights()[0], np.float64)
    tinner.get_layer("c").set_weights([(k * s).astype(np.float32),
                                       (beta - mean * s).astype(np.float32)])
    twin.get_layer("out").set_weights(km.get_layer("out").get_weights())
    m, mt = _load(km, tmp_path, "cf"), _load(twin, tmp_path, "cf_twin")
    from jaxsal._src.lrp_fold import fold_plan

    assert [(f.layer_path, f.batch_norm_path) for f in fold_plan(m)] == [("inner/c",
                                                                          "inner/bn")]
    x = np.random.default_rng(2).normal(size=(2, 3, 6, 6)).astype(np.float32)
    rule = jaxsal.lrp_composite(first=jaxsal.lrp_zplus(), dense=jaxsal.lrp_epsilon(0.01))
    want = np.asarray(jaxsal.lrp(mt, x, [0, 1], rule=rule))
    got = np.asarray(jaxsal.lrp(m, x, [0, 1], rule=rule, fold_batchnorm=True))
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4 * np.abs(want).max())


def test_refusals(pair):
    m, _ = pair
    x = np.zeros((1, 8, 8, 3), np.float32)
    with pytest.raises(TypeError, match="fold_batchnorm: expected True or False"):
        jaxsal.lrp(m, x, 0, fold_batchnorm=1)
    with pytest.raises(ValueError, match="'bn_conv' is folded into the layer before it"):
        jaxsal.lrp(m, x, 0, rule={"bn_conv": jaxsal.lrp_epsilon()}, fold_batchnorm=True)


def test_time_distributed_pairs(tmp_path):
    """``TimeDistributed(Conv2D)`` -> ``TimeDistributed(BatchNormalization)`` and
    ``TimeDistributed(Dense)`` -> ``TimeDistributed(BatchNormalization)`` fold as plain pairs
    do (the wrapper's params are the wrapped layer's), as does a wrapped Conv2D -> a plain
    BatchNormalization over its channels; a wrapped pair over another axis, or after a
    wrapped activation, stays."""
    from jaxsal._src.lrp_fold import fold_plan

    td = layers.TimeDistributed

    def build(with_bn):
        inp = keras.Input((2, 5, 5, 3))
        h = td(layers.Conv2D(4, 3, use_bias=not with_bn), name="c")(inp)
        if with_bn:
            h = td(layers.BatchNormalization(epsilon=0.1), name="bn_c")(h)
        h = td(layers.Conv2D(3, 1), name="m")(layers.ReLU()(h))
        if with_bn:
            h = layers.BatchNormalization(name="bn_m")(h)  # (N, T, H, W, C): channels
        h = td(layers.Flatten())(h)
        h = td(layers.Dense(5), name="d")(h)
        if with_bn:
            h = td(layers.BatchNormalization(scale=False), name="bn_d")(h)
        h = layers.ReLU()(layers.Flatten()(h))
        return keras.Model(inp, layers.Dense(2, name="out")(h))

    km = build(True)
    perturb_keras(km, seed=5, kernels=True)
    twin = build(False)
    for layer in twin.layers:
        if not layer.weights:
            continue
        w = [np.asarray(v, np.float64) for v in km.get_layer(layer.name).get_weights()]
        if layer.name in ("c", "m", "d"):
            bn = km.get_layer(f"bn_{layer.name}")
            bn = bn.layer if isinstance(bn, td) else bn
            p = dict(zip([v.path.split("/")[-1] for v in bn.weights],
                         [np.asarray(v, np.float64) for v in bn.get_weights()]))
            s = p.get("gamma", 1.0) / np.sqrt(p["moving_variance"]
                                              + bn.get_config()["epsilon"])
            b = (w[1] if len(w) > 1 else 0.0) * s + p["beta"] - p["moving_mean"] * s
            w = [w[0] * s, b]
        layer.set_weights([v.astype(np.float32) for v in w])
    m, mt = _load(km, tmp_path, "td"), _load(twin, tmp_path, "td_twin")
    assert {(f.layer_path, f.batch_norm_path) for f in fold_plan(m)} == {
        ("c", "bn_c"), ("m", "bn_m"), ("d", "bn_d")}
    x = np.random.default_rng(3).normal(size=(2, 2, 5, 5, 3)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(m(x)), np.asarray(mt(x)), rtol=1e-4, atol=1e-5)
    want = np.asarray(jaxsal.lrp(mt, x, [0, 1], rule=RULES))
    got = np.asarray(jaxsal.lrp(m, x, [0, 1], rule=RULES, fold_batchnorm=True))
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4 * np.abs(want).max())
    # (unfolded, the maps differ from the twin's by 1.0x their largest element)
    # a layer= read keeps its batch norm
    assert "bn_d" not in {f.batch_norm_path for f in fold_plan(m, frozenset({"d"}))}
    # after a wrapped activation, over the rows, over the time axis (a plain batch norm's
    # axis 1): none folds; a wrapped channels-first pair (axis=1 per step) does
    inp = keras.Input((2, 4, 4, 3))
    h = td(layers.Conv2D(3, 1, activation="relu"), name="act")(inp)
    h = td(layers.BatchNormalization(), name="bn_act")(h)
    h = td(layers.Conv2D(3, 1), name="axis")(h)
    h = td(layers.BatchNormalization(axis=1), name="bn_axis")(h)
    h = td(layers.Conv2D(3, 1), name="time")(h)
    h = layers.BatchNormalization(axis=1, name="bn_time")(h)
    h = td(layers.Conv2D(3, 1, data_format="channels_first"), name="cf")(h)
    h = td(layers.BatchNormalization(axis=1), name="bn_cf")(h)
    plan = fold_plan(_load(keras.Model(inp, h), tmp_path, "td_others"))
    assert [(f.layer_path, f.batch_norm_path) for f in plan] == [("cf", "bn_cf")]
