"""The convolution with a canonical-kernel input gradient (a CPU speed fix, see
benchmarks/README.md) computes exactly what Flax's convolution and JAX's own VJP compute."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from model_import._layers.conv import _conv_module, conv_canonical_vjp, conv_patches

# (rank, padding, stride, dilation); Keras forbids strides > 1 with dilation > 1
CASES = [(2, "VALID", 1, 1), (2, "SAME", 1, 1), (2, "SAME", 2, 1), (2, "VALID", 3, 1),
         (2, "SAME", 1, 2), (1, "SAME", 2, 1), (1, "VALID", 1, 2), (3, "SAME", 2, 1)]


def _assert_same_function(new, ref, x, k, rng):
    """``new`` and ``ref`` agree in value and in both gradients (a random cotangent)."""
    shape = jax.eval_shape(ref, x, k).shape
    g = jnp.asarray(rng.randn(*shape), jnp.float32)
    y_ref, grads_ref = _vjp_both(ref, x, k, g)
    y_new, grads_new = _vjp_both(new, x, k, g)
    assert y_new.shape == y_ref.shape
    np.testing.assert_allclose(y_new, y_ref, rtol=1e-5, atol=1e-5)
    for a, b in zip(grads_new, grads_ref):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(jnp.max(jnp.abs(b))))


def _vjp_both(fn, x, k, g):
    @jax.jit
    def run(x, k, g):
        y, pull = jax.vjp(fn, x, k)
        return y, pull(g)
    return run(x, k, g)


@pytest.mark.parametrize("rank,padding,stride,dilation", CASES)
def test_values_and_both_gradients_match_flax(rank, padding, stride, dilation):
    rng = np.random.RandomState(rank * 100 + stride * 10 + dilation)
    size = {1: (13,), 2: (11, 12), 3: (7, 8, 9)}[rank]
    x = jnp.asarray(rng.randn(2, *size, 3), jnp.float32)
    k = jnp.asarray(rng.randn(*(3,) * rank, 3, 4), jnp.float32)
    cfg = {"kernel_size": 3, "strides": stride, "dilation_rate": dilation,
           "padding": padding.lower()}
    module = _conv_module(cfg, rank, 4, 1, use_bias=False)

    def ref(x, k):
        return module.apply({"params": {"kernel": k}}, x)

    k_eff = [2 * dilation + 1] * rank
    pads = tuple(tuple(int(v) for v in p) for p in
                 lax.padtype_to_pads(x.shape[1:1 + rank], k_eff, (stride,) * rank, padding))

    def new(x, k):
        return conv_canonical_vjp(x, k, (stride,) * rank, pads, (dilation,) * rank)

    _assert_same_function(new, ref, x, k, rng)


@pytest.mark.parametrize("rank,padding,stride,size", [
    (2, "VALID", 1, (11, 12)), (2, "SAME", 1, (11, 12)), (2, "SAME", 2, (11, 12)),
    (1, "SAME", 1, (13,)), (3, "VALID", 1, (7, 8, 9)), (2, "SAME", 1, (5, 4))])
def test_one_input_channel_matches_flax(rank, padding, stride, size):
    """One input channel (a grayscale first layer): the input gradient is a matmul and
    shifted sums (stride 1; other strides keep the transposed convolution)."""
    rng = np.random.RandomState(7 + rank + stride)
    x = jnp.asarray(rng.randn(3, *size, 1), jnp.float32)
    k = jnp.asarray(rng.randn(*(3,) * rank, 1, 5), jnp.float32)
    cfg = {"kernel_size": 3, "strides": stride, "padding": padding.lower()}
    module = _conv_module(cfg, rank, 5, 1, use_bias=False)
    pads = tuple(tuple(int(v) for v in p) for p in
                 lax.padtype_to_pads(x.shape[1:1 + rank], (3,) * rank, (stride,) * rank, padding))

    def new(x, k):
        return conv_canonical_vjp(x, k, (stride,) * rank, pads, (1,) * rank)

    _assert_same_function(new, lambda x, k: module.apply({"params": {"kernel": k}}, x),
                          x, k, rng)
    # a convolution producing the input's shape is the transposed one: only where stride > 1
    jaxpr = str(jax.make_jaxpr(lambda x: jax.grad(lambda a: new(a, k).sum())(x))(x))
    shape = "f32[" + ",".join(map(str, x.shape)) + "] = conv_general_dilated"
    assert (shape in jaxpr) == (stride != 1)


def test_input_gradient_inside_a_loop_uses_the_canonical_kernel_layout():
    """The point of the function: in a while loop the input-gradient convolution keeps
    XLA's canonical kernel dimension labels (JAX's own rule gives swapped in/out labels)."""
    x = jnp.ones((2, 8, 8, 3))
    k = jnp.ones((3, 3, 3, 4))
    pads = ((0, 0), (0, 0))

    def loop(conv):
        def f(x, k):
            def body(i, acc):
                g = jax.grad(lambda a: conv(a, k).sum())(x * i)
                return acc + g.sum()
            return lax.fori_loop(0, 2, body, 0.0)
        return jax.jit(f).lower(x, k).compile().as_text()

    ours = loop(lambda a, kk: conv_canonical_vjp(a, kk, (1, 1), pads, (1, 1)))
    assert "01oi" not in ours and "01io" in ours


DW_CASES = [(2, "SAME", 1, 1, 1), (2, "SAME", 2, 1, 1), (2, "VALID", 1, 1, 2),
            (2, "VALID", 3, 1, 1), (2, "SAME", 1, 2, 1), (1, "SAME", 2, 1, 2),
            (1, "VALID", 1, 2, 1)]


@pytest.mark.parametrize("rank,padding,stride,dilation,mult", DW_CASES)
def test_depthwise_as_shifted_slices_matches_grouped_convolution(rank, padding, stride,
                                                                 dilation, mult):
    from model_import._layers.conv import depthwise_shifted

    rng = np.random.RandomState(rank + 10 * stride + 100 * dilation + 1000 * mult)
    size = {1: (13,), 2: (11, 12)}[rank]
    x = jnp.asarray(rng.randn(2, *size, 3), jnp.float32)
    k = jnp.asarray(rng.randn(*(3,) * rank, 1, 3 * mult), jnp.float32)
    cfg = {"kernel_size": 3, "strides": stride, "dilation_rate": dilation,
           "padding": padding.lower()}
    module = _conv_module(cfg, rank, 3 * mult, 3, kernel_size=(3,) * rank, use_bias=False)

    def ref(x, k):
        return module.apply({"params": {"kernel": k}}, x)

    def new(x, k):
        return depthwise_shifted(x, k, (stride,) * rank, padding, (dilation,) * rank)

    _assert_same_function(new, ref, x, k, rng)


@pytest.mark.parametrize("shape,window,strides,padding,dilation", [
    ((3, 2, 2, 5), (3, 3), (1, 1), "SAME", (1, 1)),
    ((2, 4, 4, 3), (3, 3), (2, 2), "SAME", (1, 1)),
    ((2, 5, 6, 3), (3, 2), (1, 2), "VALID", (1, 1)),
    ((2, 6, 6, 4), (3, 3), (1, 1), "SAME", (2, 2)),
    ((2, 7, 3), (3,), (1,), "SAME", (1,)),
    ((1, 3, 3, 3, 2), (2, 2, 2), (1, 1, 1), "VALID", (1, 1, 1)),
])
def test_conv_patches_equals_convolution(shape, window, strides, padding, dilation):
    """Small convolutions as patches @ kernel: values and both gradients as lax's conv."""
    rank = len(window)
    kx, kk = jax.random.split(jax.random.key(3))
    x = jax.random.normal(kx, shape)
    k = jax.random.normal(kk, (*window, shape[-1], 4))
    k_eff = [(w - 1) * d + 1 for w, d in zip(window, dilation)]
    pads = tuple(tuple(int(v) for v in p)
                 for p in lax.padtype_to_pads(shape[1:1 + rank], k_eff, strides, padding))
    dims = {1: ("NWC", "WIO", "NWC"), 2: ("NHWC", "HWIO", "NHWC"),
            3: ("NDHWC", "DHWIO", "NDHWC")}[rank]

    def ref(x, k):
        return lax.conv_general_dilated(x, k, strides, pads, rhs_dilation=dilation,
                                        dimension_numbers=dims,
                                        precision=lax.Precision.HIGHEST)

    def got(x, k):
        return conv_patches(x, k, strides, pads, dilation)

    loss = lambda f: lambda x, k: jnp.sum(jnp.sin(f(x, k)))  # noqa: E731

    @jax.jit  # one compiled program (eager, every primitive would compile on its own)
    def values_and_grads(x, k):
        return [(f(x, k), jax.grad(loss(f), (0, 1))(x, k)) for f in (got, ref)]

    with jax.default_matmul_precision("highest"):
        (y, grads), (y_ref, grads_ref) = values_and_grads(x, k)
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
    for a, b in zip(grads, grads_ref):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
