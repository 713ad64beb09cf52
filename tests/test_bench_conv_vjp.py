"""The convolution with a canonical-kernel input gradient (a CPU speed fix, see
benchmarks/README.md) computes exactly what Flax's convolution and JAX's own VJP compute."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from model_import._layers.conv import _conv_module, conv_canonical_vjp

CASES = [c for c in itertools.product((1, 2, 3), ("VALID", "SAME"), (1, 2, 3), (1, 2))
         if not (c[2] > 1 and c[3] > 1)]  # Keras forbids strides > 1 with dilation > 1


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

    y_ref, pull_ref = jax.vjp(ref, x, k)
    y_new, pull_new = jax.vjp(new, x, k)
    assert y_new.shape == y_ref.shape
    np.testing.assert_allclose(y_new, y_ref, rtol=1e-5, atol=1e-5)
    g = jnp.asarray(rng.randn(*y_ref.shape), jnp.float32)
    for a, b in zip(pull_new(g), pull_ref(g)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(jnp.max(jnp.abs(b))))


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
