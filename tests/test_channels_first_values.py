"""Fills and baselines of channels-first inputs: NumPy's broadcasting lines a 1-D value up with
the LAST axis, so ``(C,)`` for ``(N, C, H, W)`` with ``C == W`` is one value per column, not
per channel. Such a value (and ``(C, 1)`` with ``C == H``) is refused as ambiguous by every
method that takes one; ``(C, 1, 1)`` and ``(1, 1, W)`` say which and are read as written."""

import jax.numpy as jnp
import numpy as np
import pytest

import jaxsal
from jaxsal._src.validate import check_not_per_channel

C = 3  # channels == H == W: (C,) and (C, 1) line up with W and H
RNG = np.random.default_rng(0)
W = RNG.normal(size=(C * C * C, 2)).astype(np.float32)  # a linear model, 2 classes


def _features(p, x, relu=None):  # (linear: no ReLU to replace; relu_kwarg for DeepLIFT)
    return x * p["s"]


def _head(p, a, relu=None):
    return a.reshape(len(a), -1) @ p["w"]


@pytest.fixture(scope="module")
def cf():
    """A linear channels-first model ``(N, C, H, W) -> (N, 2)``, its layer ``'features'``."""
    return jaxsal.FunctionModel(features=_features, head_fn=_head,
                                params={"s": jnp.ones(()), "w": jnp.asarray(W)},
                                relu_kwarg="relu", data_format="channels_first")


@pytest.fixture(scope="module")
def x():
    return RNG.normal(size=(2, C, C, C)).astype(np.float32)


AMBIGUOUS = {
    "occlusion": lambda m, x, v: jaxsal.occlusion(m, x, 0, patch=1, fill=v),
    "rise": lambda m, x, v: jaxsal.rise(m, x, 0, key=0, n=4, fill=v),
    "shapley_values": lambda m, x, v: jaxsal.shapley_values(m, x, 0, patch=3, fill=v),
    "kernel_shap": lambda m, x, v: jaxsal.kernel_shap(m, x, 0, key=0, n=4, patch=3, fill=v),
    "integrated_gradients": lambda m, x, v: jaxsal.integrated_gradients(m, x, 0, baseline=v,
                                                                        steps=2),
    "smoothgrad_ig": lambda m, x, v: jaxsal.smoothgrad(
        m, x, 0, key=0, n=2, method="integrated_gradients",
        method_options={"baseline": v, "steps": 2}),
    "deeplift": lambda m, x, v: jaxsal.deeplift(m, x, 0, baseline=v),
    "guided_integrated_gradients": lambda m, x, v: jaxsal.guided_integrated_gradients(
        m, x, 0, baseline=v, steps=2),
    "layer_conductance": lambda m, x, v: jaxsal.layer_conductance(
        m, x, 0, layer="features", baseline=v, steps=2),
    "deletion": lambda m, x, v: jaxsal.deletion(m, x, np.ones((2, C, C), np.float32), 0,
                                                steps=2, fill=v),
    "insertion": lambda m, x, v: jaxsal.insertion(m, x, np.ones((2, C, C), np.float32), 0,
                                                  steps=2, baseline=v),
    "infidelity": lambda m, x, v: jaxsal.infidelity(m, x, np.ones(x.shape, np.float32), 0,
                                                    key=0, n=2, baseline=v),
    "xrai": lambda m, x, v: jaxsal.xrai(m, x, 0, segments=np.zeros((2, C, C), np.int32),
                                        baselines=[v], steps=2),
}


@pytest.mark.parametrize("name", sorted(AMBIGUOUS))
@pytest.mark.parametrize("shape, along", [((C,), r"one value per W \(axis 3"),
                                          ((C, 1), r"one value per H \(axis 2")])
def test_a_per_channel_looking_value_is_refused(cf, x, name, shape, along):
    """(C,) for channels-first (N, C, H, W) with C == W broadcast along W: it was used per
    column silently (deletion curves differed from the (C, 1, 1) fill's). Refused before
    anything is compiled, naming both readings."""
    with pytest.raises(ValueError, match=r"ambiguous for x of shape \(2, 3, 3, 3\), which is "
                                         r"channels-first.*" + along + r".*Expected one value "
                                         r"per channel as \(3, 1, 1\)"):
        AMBIGUOUS[name](cf, x, np.linspace(0.1, 0.3, C, dtype=np.float32).reshape(shape))


def test_explicit_per_channel_and_per_column_values_are_read_as_written(cf, x):
    """Integrated gradients of a linear model is ``(x - baseline) * w`` exactly (a constant
    gradient), so each accepted baseline shape is checked against its own broadcast."""
    b = np.array([0.5, -1.0, 2.0], np.float32)
    w = W[:, 0].reshape(C, C, C)
    for shape in ((C, 1, 1), (1, 1, C), (1, C, 1)):
        got = jaxsal.integrated_gradients(cf, x, 0, baseline=b.reshape(shape), steps=2,
                                          reduce=None)
        np.testing.assert_allclose(got, (x - b.reshape(shape)) * w, rtol=1e-5, atol=1e-5)


def test_channels_last_per_channel_value_still_accepted():
    """Channels-last ``(N, H, W, C)``: ``(C,)`` lines up with the channels, as meant."""
    m = jaxsal.FunctionModel(lambda p, x: x.reshape(len(x), -1) @ p, jnp.asarray(W))
    xl = RNG.normal(size=(2, C, C, C)).astype(np.float32)
    b = np.array([0.5, -1.0, 2.0], np.float32)
    got = jaxsal.integrated_gradients(m, xl, 0, baseline=b, steps=2, reduce=None)
    np.testing.assert_allclose(got, (xl - b) * W[:, 0].reshape(C, C, C), rtol=1e-5, atol=1e-5)


def test_several_inputs_are_checked_each_in_its_own_layout():
    """Per input (leaf order: a dict's sorted keys): a (D,) baseline of an (N, D) input is
    one value per feature; the channels-first image's (C,) is refused."""
    def f(p, x):
        return x["img"].reshape(len(x["img"]), -1) @ p["w"] + x["feat"] @ p["v"]

    m = jaxsal.FunctionModel(f, {"w": jnp.asarray(W), "v": jnp.ones((C, 2))},
                             data_format="channels_first")
    xs = {"img": RNG.normal(size=(2, C, C, C)).astype(np.float32),
          "feat": RNG.normal(size=(2, C)).astype(np.float32)}
    v = np.arange(1, C + 1, dtype=np.float32)
    with pytest.raises(ValueError, match=r"baseline of shape \(3,\) is ambiguous for x of "
                                         r"shape \(2, 3, 3, 3\), which is channels-first"):
        jaxsal.integrated_gradients(m, xs, 0, baseline={"img": v, "feat": 0.0}, steps=2)
    with pytest.raises(ValueError, match=r"fill of shape \(3,\) is ambiguous for input 'img'"):
        jaxsal.occlusion(m, xs, 0, fill={"img": v, "feat": 0.0}, patch={"img": 1, "feat": 1})
    got = jaxsal.integrated_gradients(m, xs, 0, baseline={"img": v[:, None, None], "feat": v},
                                      steps=2, reduce=None)
    np.testing.assert_allclose(got["feat"], xs["feat"] - v, rtol=1e-5, atol=1e-5)


def test_lrp_zbox_bounds_of_a_channels_first_first_layer(tmp_path):
    """lrp_zbox's per-channel bounds: ``(C,)`` at a channels-first convolution whose input
    has ``C == W`` was used per column; refused (when the rule is traced), naming the
    layer's data_format. ``(C, 1, 1)`` gives what a channels-last twin with ``(C,)`` gives
    (the same weights, transposed input)."""
    keras = pytest.importorskip("keras")
    from model_import import load_keras

    wc, wd = RNG.normal(size=(1, 1, C, 2)), RNG.normal(size=(2, 2))

    def net(fmt):  # the same weights either way (a 1x1 kernel and Dense read no layout)
        cf = fmt == "channels_first"
        inp = keras.Input((C, 2, C) if cf else (2, C, C))
        h = keras.layers.Conv2D(2, 1, data_format=fmt, name="c")(inp)
        h = keras.layers.GlobalAveragePooling2D(data_format=fmt)(h)
        km = keras.Model(inp, keras.layers.Dense(2, name="d")(h))
        km.get_layer("c").set_weights([wc, np.zeros(2)])
        km.get_layer("d").set_weights([wd, np.zeros(2)])
        km.save(tmp_path / f"{fmt}.keras")
        return load_keras(tmp_path / f"{fmt}.keras").with_head("logits")

    cl, cf = net("channels_last"), net("channels_first")
    x = RNG.uniform(0.2, 0.8, size=(2, C, 2, C)).astype(np.float32)
    lo, hi = np.array([0.0, -1.0, -2.0], np.float32), np.array([1.0, 2.0, 3.0], np.float32)

    def run(m, x, low, high):
        rule = jaxsal.lrp_composite(first=jaxsal.lrp_zbox(low, high))
        return np.asarray(jaxsal.lrp(m, x, 0, rule=rule, reduce=None))

    with pytest.raises(ValueError, match=r"lrp_zbox: low of shape \(3,\) is ambiguous for the "
                                         r"layer's input of shape \(2, 3, 2, 3\), which is "
                                         r"channels-first \(the layer's data_format\)"):
        run(cf, x, lo, hi)
    np.testing.assert_allclose(run(cf, x, lo[:, None, None], hi[:, None, None]),
                               np.moveaxis(run(cl, np.moveaxis(x, 1, -1), lo, hi), -1, 1),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape, a_shape, refused", [
    ((3,), (2, 3, 8, 3), True),
    ((3, 1), (2, 3, 3, 8), True),
    ((3,), (2, 3, 3), True),  # a signal (N, C, L), C == L
    ((3, 1, 1), (2, 3, 3, 4, 5), True),  # a volume's per channel is (3, 1, 1, 1); C == D
    ((3, 1, 1), (2, 3, 3, 3), False),  # reaches the channel axis: said
    ((1, 1, 3), (2, 3, 3, 3), False),
    ((3, 3, 3), (2, 3, 3, 3), False),  # one example's own shape
    ((3,), (2, 3, 8, 5), False),  # lines up with nothing of size 3: NumPy's own error
    ((1,), (2, 1, 4, 1), False),  # one channel: either reading is the same
    ((3, 3), (2, 3, 3, 3), False),  # a value per (H, W) position
    ((), (2, 3, 3, 3), False),
    ((3,), (2, 3), False),  # features: no channel axis
])
def test_check_not_per_channel(shape, a_shape, refused):
    if refused:
        with pytest.raises(ValueError, match="ambiguous"):
            check_not_per_channel(shape, a_shape, "fill")
    else:
        check_not_per_channel(shape, a_shape, "fill")
