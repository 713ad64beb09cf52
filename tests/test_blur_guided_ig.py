"""Blur IG and Guided IG: analytic truths on linear models, the identities that tie them to
integrated gradients, layouts, compilation, and argument errors (parity with PAIR saliency:
test_reference_pair.py)."""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

import jaxsal
from jaxsal._src.blur_ig import sigmas

FIX = pathlib.Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def x4():
    return np.load(FIX / "reference" / "saliency_linear.npz")["x"][:4]


def _linear(shape, classes=3, seed=0):
    """``S(x) = flat(x) @ W + b`` with its weights as images ``(classes, *shape)``."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(int(np.prod(shape)), classes)).astype(np.float32)
    b = rng.normal(size=classes).astype(np.float32)
    m = jaxsal.FunctionModel(lambda p, x: x.reshape(len(x), -1) @ p["w"] + p["b"],
                             {"w": jnp.asarray(w), "b": jnp.asarray(b)})
    return m, np.moveaxis(w.reshape(tuple(shape) + (classes,)), -1, 0)


def _blur(img, s):
    """PAIR's blur of one example ``(*spatial, C)``: scipy, zero padding, channels kept."""
    if s == 0:
        return img
    return ndimage.gaussian_filter(img, [s] * (img.ndim - 1) + [0], mode="constant")


def _blur_ig_linear(w, x, max_sigma, steps, h, sqrt):
    """Blur IG of a linear score, from its definition, in float64 with scipy."""
    s = sigmas(max_sigma, steps, sqrt)
    path = sum((s[k + 1] - s[k]) * (_blur(x, s[k] + h) - _blur(x, s[k])) / h
               for k in range(steps))
    return -w * path


@pytest.mark.parametrize("shape, options", [
    ((9, 11, 2), dict(steps=12)),  # sigmas up to 50 on a 9-pixel axis: the kernel spans it
    ((9, 11, 2), dict(steps=10, max_sigma=3.0, grad_step=0.05, sqrt=True)),
    ((13, 3), dict(steps=8, max_sigma=6.0)),  # a signal (N, L, C)
])
def test_blur_ig_of_a_linear_model_is_its_definition(shape, options):
    m, w = _linear(shape)
    x = np.random.default_rng(1).uniform(size=(2,) + shape)
    got = np.asarray(jaxsal.blur_integrated_gradients(m, x.astype(np.float32), [0, 2],
                                                      reduce=None, **options))
    kw = {"max_sigma": 50.0, "grad_step": 0.01, "sqrt": False, **options}
    for i in range(2):
        for j, c in enumerate([0, 2]):
            want = _blur_ig_linear(w[c], x[i], kw["max_sigma"], kw["steps"], kw["grad_step"],
                                   kw["sqrt"])
            np.testing.assert_allclose(got[i, j], want, atol=1e-5 * np.abs(want).max())


def test_blur_ig_in_float64_keeps_float64_tables():
    """Under jax_enable_x64, float64 inputs: the blur tables and path weights were float32,
    the maps 3.6e-8 off their float64 definition."""
    x64 = getattr(jax, "enable_x64", None)
    if x64 is None:  # older JAX
        from jax.experimental import enable_x64 as x64
    shape, options = (9, 11, 2), dict(steps=10, max_sigma=3.0, grad_step=0.05)
    with x64(True):
        rng = np.random.default_rng(0)
        w = rng.normal(size=(int(np.prod(shape)), 3))
        m = jaxsal.FunctionModel(lambda p, v: v.reshape(len(v), -1) @ p, jnp.asarray(w))
        x = rng.uniform(size=(2,) + shape)
        got = np.asarray(jaxsal.blur_integrated_gradients(m, jnp.asarray(x), 1, reduce=None,
                                                          **options))
    assert got.dtype == np.float64
    ws = np.moveaxis(w.reshape(shape + (3,)), -1, 0)[1]
    for i in range(2):
        want = _blur_ig_linear(ws, x[i], 3.0, 10, 0.05, False)
        np.testing.assert_allclose(got[i], want, rtol=1e-10, atol=1e-12 * np.abs(want).max())


def test_blur_ig_completeness_approximately():
    # sum(map) ~= S(x) - S(blurred x): the forward difference and the Riemann sum in sigma
    # converge to the path integral
    m, w = _linear((8, 8, 1))
    x = np.random.default_rng(2).uniform(size=(1, 8, 8, 1)).astype(np.float32)
    got = np.asarray(jaxsal.blur_integrated_gradients(m, x, 1, max_sigma=4.0, steps=400,
                                                      grad_step=1e-3))
    end = _blur(x[0].astype(np.float64), 4.0)
    want = float((w[1] * (x[0] - end)).sum())
    assert abs(got.sum() - want) <= 1e-2 * abs(want)


def test_blur_ig_channels_first_is_channels_last_transposed():
    m, _ = _linear((6, 7, 2))
    x = np.random.default_rng(3).uniform(size=(2, 6, 7, 2)).astype(np.float32)
    cf = jaxsal.FunctionModel(lambda p, v: m.fn(p, jnp.moveaxis(v, 1, -1)), m.params,
                              data_format="channels_first")
    last = np.asarray(jaxsal.blur_integrated_gradients(m, x, [0, 1], steps=6, reduce=None))
    first = np.asarray(jaxsal.blur_integrated_gradients(cf, np.moveaxis(x, -1, 1), [0, 1],
                                                        steps=6, reduce=None))
    np.testing.assert_allclose(np.moveaxis(first, 2, -1), last, rtol=1e-5,
                               atol=1e-6 * np.abs(last).max())


@pytest.mark.parametrize("options", [dict(), dict(steps=17, fraction=0.1, max_dist=1.0),
                                     dict(steps=9, fraction=0.6, max_dist=0.1,
                                          baseline="random")])
def test_guided_ig_of_a_linear_model_is_weight_times_difference(options):
    # the gradient is constant and the path ends at x: every feature gets w * (x - x')
    m, w = _linear((5, 6, 3))
    rng = np.random.default_rng(4)
    x = rng.uniform(size=(2, 5, 6, 3)).astype(np.float32)
    base = rng.uniform(size=(5, 6, 3)).astype(np.float32) \
        if options.get("baseline") == "random" else np.zeros((5, 6, 3), np.float32)
    options = {**options, "baseline": base}
    got = np.asarray(jaxsal.guided_integrated_gradients(m, x, [0, 2], reduce=None, **options))
    want = np.stack([w[[0, 2]] * (xi - base) for xi in x])
    np.testing.assert_allclose(got, want, atol=1e-5 * np.abs(want).max())


def test_guided_ig_without_deviation_is_left_riemann_integrated_gradients(mnist, x4):
    # max_dist=0 keeps every feature on the straight line: IG with left Riemann points
    lm = mnist.with_head("logits")
    got = jaxsal.guided_integrated_gradients(lm, x4[:2], [1, 7], steps=8, max_dist=0.0)
    ig = jaxsal.integrated_gradients(lm, x4[:2], [1, 7], steps=8, rule="left")
    np.testing.assert_allclose(got, ig, atol=1e-5 * np.abs(ig).max())


def test_guided_ig_completeness_on_a_smooth_model():
    rng = np.random.default_rng(5)
    p = {"a": jnp.asarray(rng.normal(size=(48, 16)) / 4, jnp.float32),
         "b": jnp.asarray(rng.normal(size=(16, 3)), jnp.float32)}
    m = jaxsal.FunctionModel(lambda p, x: jnp.tanh(x.reshape(len(x), -1) @ p["a"]) @ p["b"], p)
    x = rng.uniform(size=(2, 4, 4, 3)).astype(np.float32)
    got = np.asarray(jaxsal.guided_integrated_gradients(m, x, [0, 1], steps=200))
    y = np.asarray(m(x))[:, [0, 1]] - np.asarray(m(np.zeros_like(x)))[:, [0, 1]]
    np.testing.assert_allclose(got.sum((2, 3)), y, atol=0.02 * np.abs(y).max())


def test_guided_ig_of_the_baseline_itself_is_zero():
    m, _ = _linear((4, 4, 1))
    x = np.random.default_rng(6).uniform(size=(1, 4, 4, 1)).astype(np.float32)
    np.testing.assert_array_equal(
        jaxsal.guided_integrated_gradients(m, x, 0, baseline=x[0], steps=5), 0.0)


@pytest.mark.parametrize("method", [jaxsal.blur_integrated_gradients,
                                    jaxsal.guided_integrated_gradients])
def test_jit_equals_eager_and_no_recompile(method, mnist, x4, compiles):
    lm = mnist.with_head("logits")
    eager = np.asarray(method(lm, x4[:2], [1, 3], steps=4))
    jitted = jax.jit(lambda x: method(lm, x, [1, 3], steps=4))(jnp.asarray(x4[:2]))
    np.testing.assert_allclose(jitted, eager, rtol=1e-5, atol=1e-6 * np.abs(eager).max())
    first = compiles.n
    # other classes, and for Blur IG other sigmas: the same program
    jax.block_until_ready(method(lm, x4[:2], [5, 0], steps=4))
    if method is jaxsal.blur_integrated_gradients:
        jax.block_until_ready(method(lm, x4[:2], [5, 0], steps=4, max_sigma=7.0, sqrt=True))
    assert compiles.n == first


def test_bad_arguments_raise_clear_errors(mnist, x4):
    blur, guided = jaxsal.blur_integrated_gradients, jaxsal.guided_integrated_gradients
    x = x4[:1]
    for kw, match in ((dict(max_sigma=0), r"expected max_sigma > 0 \(a finite number: .*\), got 0; "
                       r"pass e.g. max_sigma=50"),
                      (dict(max_sigma=np.inf), "max_sigma"),
                      (dict(grad_step=-0.01), "grad_step"),
                      (dict(steps=0), "steps"),
                      (dict(steps=2.5), "steps")):
        with pytest.raises(ValueError, match=match):
            blur(mnist, x, 1, **kw)
    with pytest.raises(TypeError, match="sqrt as a bool"):
        blur(mnist, x, 1, sqrt="yes")
    features = jaxsal.FunctionModel(lambda p, v: v @ p, jnp.ones((5, 2)))
    with pytest.raises(ValueError, match="1 to 3 axes besides the batch and channel"):
        blur(features, np.ones((2, 5), np.float32), 0)
    for kw, match in ((dict(fraction=1.5), "expected fraction in \\[0, 1\\]"),
                      (dict(max_dist=-0.1), "expected max_dist in \\[0, 1\\]"),
                      (dict(steps=0), "steps"),
                      (dict(baseline=np.zeros((3, 3))), "baseline of shape")):
        with pytest.raises(ValueError, match=match):
            guided(mnist, x, 1, **kw)


def test_a_path_whose_blurs_change_nothing_is_refused():
    """steps=1 runs the path at the input alone (sigma 0), where a blur of grad_step=0.01 is
    the identity (scipy's kernel has one tap below sigma 0.125): the map was 0 everywhere,
    and so it was for a max_sigma below 0.125. A grad_step of 0.2 blurs: taken."""
    m, _ = _linear((6, 5, 1))
    x = np.random.default_rng(0).normal(size=(1, 6, 5, 1)).astype(np.float32)
    blur = jaxsal.blur_integrated_gradients
    with pytest.raises(ValueError, match=r"steps=1, max_sigma=50 and grad_step=0\.01.*map "
                                         r"would be 0 everywhere\. Pass steps >= 2"):
        blur(m, x, 0, steps=1)
    with pytest.raises(ValueError, match=r"Pass a larger max_sigma \(the path's largest blur "
                                         r"is sigma 0\.0475\)"):
        blur(m, x, 0, steps=4, max_sigma=0.05)
    assert np.abs(np.asarray(blur(m, x, 0, steps=1, grad_step=0.2))).max() > 0
