"""FullGrad and what it stands on: the importer's pre-activation perturbations and affine
layers' constant terms (``KerasModel.apply(perturb_pre=)``, ``affine_layers``, ``biases``).

Analytic truths: the full-gradient decomposition is complete on a piecewise-linear network
(``<dS/dx, x> + sum_l <dS/dz_l, b_l> == S``); a fused ReLU's pre-activation gradient is the
output gradient masked by ``z > 0``; the constant terms are the biases (BatchNormalization's
``beta - mean * gamma / sqrt(var + eps)``). The maps of both variants are checked against
PyTorch in tests/test_reference_torch.py; here against a NumPy transcription of their rules.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "numpy")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from keras import layers  # noqa: E402

import jaxsal  # noqa: E402
from import_helpers import perturb_keras  # noqa: E402
from model_import import load_keras  # noqa: E402
from jaxsal._src.postprocess import interp_matrix  # noqa: E402


def _cnn(data_format="channels_last"):
    """conv+relu (bias) -> BN -> maxpool -> conv without bias -> BN -> relu -> avgpool ->
    conv+relu (bias, valid) -> Dense on the positions (1x1, bias) -> GAP -> Dense: a
    piecewise-linear network with every kind of constant term."""
    cf = data_format == "channels_first"
    kw = {"data_format": data_format}
    inp = keras.Input((3, 12, 10) if cf else (12, 10, 3))
    h = layers.Conv2D(4, 3, padding="same", activation="relu", name="c1", **kw)(inp)
    h = layers.BatchNormalization(axis=1 if cf else -1, name="bn1")(h)
    h = layers.MaxPooling2D(2, name="mp", **kw)(h)
    h = layers.Conv2D(5, 3, padding="same", use_bias=False, name="c2", **kw)(h)
    h = layers.BatchNormalization(axis=1 if cf else -1, name="bn2")(h)
    h = layers.ReLU(name="r2")(h)
    h = layers.AveragePooling2D(2, name="ap", **kw)(h)
    h = layers.Conv2D(6, 2, activation="relu", name="c3", **kw)(h)
    if not cf:  # Dense acts on the last axis: a 1x1 convolution of a channels-last map
        h = layers.Dense(6, activation="relu", name="d_pos")(h)
    h = layers.GlobalAveragePooling2D(name="gap", **kw)(h)
    out = layers.Dense(4, activation="softmax", name="out")(h)
    return keras.Model(inp, out)


@pytest.fixture(scope="module", params=["channels_last", "channels_first"])
def cnn(request, tmp_path_factory):
    # (seeded: Keras's unseeded kernels made, now and then, a network whose ReLUs are all off
    # for these inputs, every gradient 0: a failure of no test's subject)
    keras.utils.set_random_seed(0)
    km = _cnn(request.param)
    # non-trivial biases, BN statistics and gammas; kernels drawn here too, not by the
    # backend's unseeded initializers (on JAX they left input 0 with an all-zero map)
    perturb_keras(km, seed=3, kernels=True)
    path = tmp_path_factory.mktemp("fg") / f"{request.param}.keras"
    km.save(path)
    x = np.random.default_rng(0).normal(size=(3,) + km.input_shape[1:]).astype(np.float32)
    return load_keras(path).with_head("logits"), x, request.param


def _grads(m, x, cls):
    """``(dS/dx, {layer: dS/dz}, {layer: b})`` for class ``cls`` summed over the batch."""
    b = m.biases(m.params, x)
    zeros = {k: jnp.zeros((len(x),) + v.shape[1:]) for k, v in b.items()}
    gx, gz = jax.grad(lambda xx, d: m.apply(m.params, xx, perturb_pre=d)[:, cls].sum(),
                      argnums=(0, 1))(jnp.asarray(x), zeros)
    return gx, gz, b


def test_affine_layers_and_their_constant_terms(cnn):
    m, x, fmt = cnn
    names = ["c1", "bn1", "bn2", "c3"] + (["d_pos"] if fmt == "channels_last" else []) + ["out"]
    assert m.affine_layers == names  # c2 has no bias
    b = m.biases(m.params, x)
    p = m.params
    shapes = {k: v.shape for k, v in m.intermediates(x[:1], names).items()}
    assert {k: v.shape for k, v in b.items()} == shapes
    chan = (lambda a: np.asarray(a)[0, :, 0, 0]) if fmt == "channels_first" else (
        lambda a: np.asarray(a)[0, 0, 0])
    np.testing.assert_allclose(chan(b["c1"]), p["c1"]["bias"], rtol=1e-6)
    bn = p["bn2"]
    want = bn["beta"] - bn["moving_mean"] * bn["gamma"] / np.sqrt(bn["moving_variance"] + 1e-3)
    np.testing.assert_allclose(chan(b["bn2"]), want, rtol=1e-5, atol=1e-6)
    assert np.ptp(np.asarray(b["c1"]), axis=(2, 3) if fmt == "channels_first"
                  else (1, 2)).max() == 0  # the same at every position
    np.testing.assert_allclose(b["out"][0], p["out"]["bias"], rtol=1e-6)
    # the channels-last view moves a channels-first layer's term as its output
    if fmt == "channels_first":
        v = m.channels_last()
        bv = v.biases(v.params, np.moveaxis(x, 1, -1))
        np.testing.assert_allclose(bv["c1"], np.moveaxis(np.asarray(b["c1"]), 1, -1))


@pytest.mark.parametrize("cls", [0, 3])
def test_full_gradient_decomposition_is_complete(cnn, cls):
    """ReLU, max and average pooling, BN at inference: S = <dS/dx, x> + sum_l <dS/dz_l, b_l>."""
    m, x, _ = cnn
    gx, gz, b = _grads(m, x, cls)
    assert set(gz) == set(b)
    total = (gx * x).reshape(len(x), -1).sum(1)
    for k in b:
        total = total + (gz[k] * b[k]).reshape(len(x), -1).sum(1)
    score = np.asarray(m.apply(m.params, x))[:, cls]
    np.testing.assert_allclose(total, score, rtol=1e-4, atol=1e-5 * np.abs(score).max())


def test_pre_activation_gradient_of_a_fused_relu(cnn):
    m, x, fmt = cnn
    z = m.intermediates(x, ["c1"])["c1"]  # after the ReLU
    pre, post = (jax.grad(lambda d: m.apply(m.params, x, **{kw: {"c1": d}})[:, 1].sum())(
        jnp.zeros_like(z)) for kw in ("perturb_pre", "perturb"))
    np.testing.assert_allclose(pre, np.where(np.asarray(z) > 0, post, 0), rtol=1e-6, atol=1e-7)
    assert np.abs(pre - post).max() > 0  # some units are off
    # a layer without a fused activation: the same as perturb
    bn = m.intermediates(x, ["bn2"])["bn2"]
    pre, post = (jax.grad(lambda d: m.apply(m.params, x, **{kw: {"bn2": d}})[:, 1].sum())(
        jnp.zeros_like(bn)) for kw in ("perturb_pre", "perturb"))
    np.testing.assert_allclose(pre, post, rtol=1e-6)
    with pytest.raises(ValueError, match="unknown layer 'nope'"):
        m.apply(m.params, x, perturb_pre={"nope": z})


def _np_scale(a, axes, eps):
    a = a - a.min(axis=axes, keepdims=True)
    return a / (a.max(axis=axes, keepdims=True) + eps)


def _np_fullgrad(m, x, cls, variant, cf):
    """FullGrad's rules in NumPy, channels last, from the gradients of :func:`_grads`."""
    last = (lambda a: np.moveaxis(np.asarray(a), 1, -1)) if cf else np.asarray
    gx, gz, b = _grads(m, x, cls)
    size = last(x).shape[1:3]
    paper = variant == "paper"

    def term(a):  # (N, h, w, C), non-negative
        a = _np_scale(a, (1, 2, 3) if paper else (1, 2), 1e-6 if paper else 1e-7).sum(-1)
        r, c = (interp_matrix(n, s, paper) for n, s in zip(a.shape[1:], size))
        return np.einsum("Hh,nhw,Ww->nHW", r, a, c)

    total = term(np.abs(last(gx) * last(x)))
    for k in b:
        t = np.abs(last(gz[k]) * last(b[k]))
        if t.ndim == 4:  # layers with the input's spatial axes
            total = total + term(t)
    return total if paper else _np_scale(total, (1, 2), 1e-7)


@pytest.mark.parametrize("variant", ["paper", "pytorch-grad-cam"])
def test_maps_follow_their_rules(cnn, variant):
    m, x, fmt = cnn
    got = np.asarray(jaxsal.fullgrad(m, x, [0, 3], variant=variant))
    assert got.shape == (3, 2, 12, 10)
    for j, cls in enumerate([0, 3]):
        want = _np_fullgrad(m, x, cls, variant, fmt == "channels_first")
        np.testing.assert_allclose(got[:, j], want, rtol=1e-4, atol=1e-5 * want.max())
    if variant == "pytorch-grad-cam":
        np.testing.assert_allclose(got.max(axis=(2, 3)), 1, rtol=1e-5)
        assert got.min() == 0
    if fmt == "channels_first":  # its channels-last view: the same maps
        view = jaxsal.fullgrad(m.channels_last(), np.moveaxis(x, 1, -1), [0, 3], variant=variant)
        np.testing.assert_allclose(view, got, rtol=1e-5, atol=1e-6 * got.max())


def test_interp_matrix_half_pixel_is_opencv_linear():
    # OpenCV INTER_LINEAR (half-pixel centres, clamped at the edges): 2 -> 4 and 4 -> 2
    np.testing.assert_allclose(interp_matrix(2, 4, False), [[1, 0], [0.75, 0.25], [0.25, 0.75],
                                                            [0, 1]])
    np.testing.assert_allclose(interp_matrix(4, 2, False), [[0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5]])
    np.testing.assert_allclose(interp_matrix(3, 3, False), np.eye(3))


def test_refusals(cnn):
    m, x, _ = cnn
    with pytest.raises(ValueError, match="unknown FullGrad variant 'torch'.*paper"):
        jaxsal.fullgrad(m, x, 0, variant="torch")
    fm = jaxsal.FunctionModel(lambda p, x: x.reshape(len(x), -1) @ p, jnp.ones((360, 2)))
    with pytest.raises(TypeError, match="biases and pre-activations.*model_import.load_keras"):
        jaxsal.fullgrad(fm, x, 0)


def test_huge_biases_are_scaled_as_normalize_scales_them(tmp_path):
    """A bias of 1e38 makes FullGrad's bias term |dS/dz * b| of values near float32's
    largest: its min-max scaling divided by a maximum whose reciprocal is below float32's
    smallest normal number, which XLA:CPU flushes to 0, so the term became zeros. Scaled by
    2**-100 first, as jaxsal.normalize: the maps are those of the analytic terms. The model:
    a 1x1 conv (kernel k, bias b) on a 2x2 image, Flatten, Dense of weights w: S = sum_p
    w_p (k x_p + b) + c, so the input term is |w k x| and the bias term |w b|."""
    k, b = 0.5, 1e38
    w = np.array([1.0, 0.5, 0.25, 0.125])  # S = 1.875e38: below float32's largest
    inp = keras.Input((2, 2, 1))
    h = layers.Conv2D(1, 1, name="c")(inp)
    out = layers.Dense(1, name="d")(layers.Flatten()(h))
    km = keras.Model(inp, out)
    km.get_layer("c").set_weights([np.full((1, 1, 1, 1), k, np.float32),
                                   np.array([b], np.float32)])
    km.get_layer("d").set_weights([w[:, None].astype(np.float32), np.zeros(1, np.float32)])
    km.save(tmp_path / "huge.keras")
    m = load_keras(tmp_path / "huge.keras").with_head("logits")
    x = np.array([[1.0, 2.0], [4.0, 3.0]], np.float32)[None, ..., None]

    def scale(t, eps):  # in float64: no overflow, no flush
        t = t - t.min()
        return t / (t.max() + eps)

    xs = x.reshape(4).astype(np.float64)
    for variant, eps in (("paper", 1e-6), ("pytorch-grad-cam", 1e-7)):
        want = scale(np.abs(w * k * xs), eps) + scale(np.abs(w * b), eps)
        if variant == "pytorch-grad-cam":
            want = scale(want, 1e-7)
        got = np.asarray(jaxsal.fullgrad(m, x, 0, variant=variant))
        np.testing.assert_allclose(got.reshape(4), want, rtol=1e-5, atol=1e-6)
