"""precision="bfloat16": the low-precision matmul transform and the methods that use it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import jaxsal
from jaxsal._src.precision import backward_dtype, low_precision


# ------------------------------------------------------------------ the transform
def _layer(x, w, m):
    """A convolution then a dot: (N, H, W, C) -> (N, H, W, C)."""
    y = lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jnp.tanh(y @ m)


@jax.custom_vjp
def _custom(x, w, m):
    return _layer(x, w, m)


_custom.defvjp(lambda x, w, m: (_layer(x, w, m), None), lambda _, g: (g, None, None))

FUNCTIONS = {
    "scan": lambda x, w, m: lax.scan(lambda c, _: (_layer(c, w, m), None), x, None, length=2)[0],
    "fori_loop": lambda x, w, m: lax.fori_loop(0, 2, lambda i, c: _layer(c, w, m), x),
    "while_loop": lambda x, w, m: lax.while_loop(
        lambda s: s[0] < 2, lambda s: (s[0] + 1, _layer(s[1], w, m)), (0, x))[1],
    "cond": lambda x, w, m: lax.cond(jnp.sum(x) > -1e9, _layer, lambda x, w, m: x, x, w, m),
    "jit": lambda x, w, m: jax.jit(_layer)(x, w, m),
    "checkpoint": lambda x, w, m: jax.checkpoint(_layer)(x, w, m),
    "custom_vjp": _custom,
}


def _args(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(2, 6, 6, 4)).astype(np.float32)
    w = (rng.normal(size=(3, 3, 4, 4)) / 6.0).astype(np.float32)
    m = (rng.normal(size=(4, 4)) / 2.0).astype(np.float32)
    return x, w, m


def _eqns(jaxpr):
    """Every equation of ``jaxpr`` and of the jaxprs in its parameters."""
    for eqn in jaxpr.eqns:
        yield eqn
        for value in eqn.params.values():
            for sub in value if isinstance(value, tuple) else (value,):
                if isinstance(sub, jax.extend.core.ClosedJaxpr):
                    sub = sub.jaxpr
                if isinstance(sub, jax.extend.core.Jaxpr):
                    yield from _eqns(sub)


@pytest.mark.parametrize("native", [None, True])
@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_low_precision_rounds_every_matmul(name, native):
    f, args = FUNCTIONS[name], _args()
    with jax.default_matmul_precision("highest"):
        ref = np.asarray(jax.jit(f)(*args))
    out = jax.jit(low_precision(f, native=native))(*args)
    assert out.dtype == jnp.float32
    err = np.linalg.norm(np.asarray(out) - ref) / np.linalg.norm(ref)
    assert 0 < err < 2e-2  # rounded, and only by the operands' rounding
    if native:
        ops = [e for e in _eqns(jax.make_jaxpr(low_precision(f, native=True))(*args).jaxpr)
               if e.primitive.name in ("dot_general", "conv_general_dilated")]
        assert {e.primitive.name for e in ops} == {"dot_general", "conv_general_dilated"}
        for e in ops:
            assert [v.aval.dtype for v in e.invars] == [jnp.bfloat16] * 2
            assert e.outvars[0].aval.dtype == jnp.float32
            assert e.params["preferred_element_type"] == jnp.float32


def test_low_precision_keeps_integer_and_highest_dots():
    a = np.arange(12, dtype=np.int32).reshape(3, 4)
    f = lambda a, b: a @ b  # noqa: E731
    jaxpr = jax.make_jaxpr(low_precision(f, native=True))(a, a.T)
    assert [v.aval.dtype for e in _eqns(jaxpr.jaxpr) for v in e.invars] == [jnp.int32] * 2
    np.testing.assert_array_equal(jax.jit(low_precision(f))(a, a.T), f(a, a.T))
    x, _, m = _args()
    exact = lambda x, m: jnp.matmul(x, m, precision=lax.Precision.HIGHEST)  # noqa: E731
    np.testing.assert_array_equal(jax.jit(low_precision(exact))(x, m), jax.jit(exact)(x, m))


def test_low_precision_pytrees_kwargs_vmap_grad_and_closures():
    x, w, m = _args()
    f = lambda p, *, x: {"y": _layer(x, p["w"], p["m"])}  # noqa: E731
    out = jax.jit(lambda p, x: low_precision(f)(p, x=x))({"w": w, "m": m}, x)
    np.testing.assert_allclose(out["y"], jax.jit(_layer)(x, w, m), atol=2e-2)
    grad = jax.jit(lambda fn, w: jax.grad(lambda w: fn(x, w, m).sum())(w), static_argnums=0)
    g = grad(low_precision(_layer), w)
    np.testing.assert_allclose(g, grad(_layer, w), rtol=5e-2, atol=5e-2 * np.abs(g).max())

    @jax.jit
    def pullbacks(x, w, m, cts):  # a vmapped pullback closing over the outer jit's residuals
        _, pull = jax.vjp(lambda x: _layer(x, w, m), x)
        return jax.vmap(low_precision(lambda c: pull(c)[0]))(cts)

    cts = np.random.default_rng(5).normal(size=(3,) + x.shape).astype(np.float32)
    ref = jax.jit(lambda x, w, m, cts: jax.vmap(
        lambda c: jax.vjp(lambda x: _layer(x, w, m), x)[1](c)[0])(cts))(x, w, m, cts)
    got = pullbacks(x, w, m, cts)
    assert got.shape == ref.shape and got.dtype == jnp.float32
    assert 0 < np.linalg.norm(got - ref) / np.linalg.norm(ref) < 2e-2


# ------------------------------------------------------------------ the methods
CHANNELS = (8, 8, "pool", 16, 16, "pool", 32, 32, "pool")


def _deep_relu_net(seed=0):
    """A VGG-like ReLU/max-pool conv net on 32x32x3 inputs (6 convolutions, He init), split
    at its last pooling layer for the CAMs."""
    rng = np.random.default_rng(seed)
    params, c = {}, 3
    convs = [ch for ch in CHANNELS if ch != "pool"]
    for i, ch in enumerate(convs):
        params[f"w{i}"] = jnp.asarray(rng.normal(size=(3, 3, c, ch)) * np.sqrt(2 / (9 * c)),
                                      jnp.float32)
        params[f"b{i}"] = jnp.asarray(rng.normal(size=(ch,)) * 0.1, jnp.float32)
        c = ch
    params["wd"] = jnp.asarray(rng.normal(size=(16 * c, 10)) / np.sqrt(16 * c), jnp.float32)

    def features(p, x):
        i = 0
        for ch in CHANNELS:
            if ch == "pool":
                x = lax.reduce_window(x, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
            else:
                x = lax.conv_general_dilated(x, p[f"w{i}"], (1, 1), "SAME",
                                             dimension_numbers=("NHWC", "HWIO", "NHWC"))
                x, i = jax.nn.relu(x + p[f"b{i}"]), i + 1
        return x

    return jaxsal.FunctionModel(features=features, head_fn=lambda p, a: a.reshape(
        len(a), -1) @ p["wd"], params=params, input_shape=(32, 32, 3))


@pytest.fixture(scope="module")
def net():
    return _deep_relu_net()


@pytest.fixture(scope="module")
def x32():
    return np.random.default_rng(1).uniform(0, 1, (4, 32, 32, 3)).astype(np.float32)


def _pearson(a, b):
    a = np.asarray(a, np.float64).reshape(len(a), -1)
    b = np.asarray(b, np.float64).reshape(len(b), -1)
    return np.array([np.corrcoef(u, v)[0, 1] for u, v in zip(a, b)])


def test_bfloat16_saliency_of_a_deep_relu_net(net, x32, compiles):
    ref = jaxsal.saliency(net, x32)
    bf = jaxsal.saliency(net, x32, precision="bfloat16")
    assert bf.dtype == jnp.float32 and not np.array_equal(bf, ref)
    assert _pearson(bf, ref).min() >= 0.99
    assert backward_dtype() is None  # a trace-time setting only

    before = compiles.n  # a second call reuses the compiled program
    again = jaxsal.saliency(net, x32[::-1], precision="bfloat16")
    assert compiles.n == before
    np.testing.assert_allclose(again, bf[::-1], rtol=1e-6, atol=1e-6 * np.abs(bf).max())

    # why only the backward pass: bfloat16 operands in the forward pass flip ReLU/max-pool
    # routing, and the gradient changes wherever they flip
    ids = jnp.argmax(jax.jit(net.apply)(net.params, x32), -1)

    @jax.jit
    def rounded_forward(p, x):
        s = lambda x: low_precision(net.apply)(p, x)[jnp.arange(len(x)), ids].sum()  # noqa
        return jnp.abs(jax.grad(s)(x)).max(-1)

    assert _pearson(rounded_forward(net.params, jnp.asarray(x32)), ref).min() < 0.99


@pytest.mark.parametrize("method,kw", [("scorecam", {}), ("occlusion", {"patch": 8}),
                                       ("eigencam", {}), ("ablationcam", {})])
def test_bfloat16_forward_only_methods(net, x32, method, kw):
    f = getattr(jaxsal, method)
    ref = f(net, x32[:2], **kw)  # the predicted class
    bf = f(net, x32[:2], precision="bfloat16", **kw)
    assert bf.dtype == jnp.float32 and bf.shape == ref.shape and not np.array_equal(bf, ref)
    assert _pearson(bf, ref).min() >= 0.99



def _bf16(a):
    """``a`` rounded to bfloat16, as float64."""
    return np.asarray(jnp.asarray(a, jnp.bfloat16).astype(jnp.float32), np.float64)


def test_bfloat16_under_a_highest_default_matmul_precision():
    """jax_default_matmul_precision="highest" (global or a context) gives every traced dot
    precision HIGHEST; only a dot that asks for it itself keeps float32 operands: the
    product is that of the bfloat16-rounded operands, and a linear model's saliency is its
    weight column rounded to bfloat16."""
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(3, 5)).astype(np.float32), rng.normal(size=(5, 4)).astype(np.float32)
    exact = lambda a, b: jnp.matmul(a, b, precision=lax.Precision.HIGHEST)  # noqa: E731
    with jax.default_matmul_precision("highest"):
        out = jax.jit(low_precision(lambda a, b: a @ b))(a, b)
        kept = jax.jit(low_precision(exact))(a, b)
    np.testing.assert_allclose(out, _bf16(a) @ _bf16(b), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(kept, a.astype(np.float64) @ b, rtol=1e-6, atol=1e-6)
    assert np.abs(np.asarray(kept) - np.asarray(out)).max() > 1e-3
    m = jaxsal.FunctionModel(lambda p, x: x @ p, b)
    before = jax.config.jax_default_matmul_precision
    jax.config.update("jax_default_matmul_precision", "highest")
    try:
        g = jaxsal.saliency(m, a, 2, reduce=None, precision="bfloat16")
    finally:
        jax.config.update("jax_default_matmul_precision", before)
    np.testing.assert_array_equal(g, np.broadcast_to(_bf16(b[:, 2]), (3, 5)))
