"""jaxsal's XLA options on CPU: no YNNPACK convolution fusions in its programs, and no options
when a method runs inside a user's own trace."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxsal._src import base


def _f(w, x):
    return jnp.tanh(x @ w).sum()


def test_options_on_cpu():
    opts = base.compiler_options()
    if jax.default_backend() == "cpu" and base._cpu_options_supported():
        assert opts == dict(base.CPU_COMPILER_OPTIONS)
        def conv_grad(x, k):
            return jax.grad(lambda a: jnp.sum(jax.lax.conv_general_dilated(
                a, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")) ** 2))(x)

        args = (jnp.ones((2, 16, 16, 8)), jnp.ones((3, 3, 8, 8)))
        tuned = base.Program(conv_grad, opts).lower(*args).compile().as_text()
        plain = jax.jit(conv_grad).lower(*args).compile().as_text()
        # no YNNPACK convolution fusion (XLA's defaults make one here, where this jaxlib has it)
        assert tuned.count("ynn_fusion") < max(plain.count("ynn_fusion"), 1)
    else:
        assert opts is None


def test_program_inside_a_user_trace_runs_plain():
    prog = base.Program(jax.grad(_f, argnums=1), base.compiler_options())
    w, x = jnp.arange(32.0).reshape(8, 4) / 32, jnp.ones((3, 8))
    direct = prog(w, x)
    nested = jax.jit(lambda w, x: prog(w, x) * 2)(w, x)  # compiler_options: outermost jit only
    looped = jax.vmap(lambda xi: prog(w, xi[None])[0])(x)
    np.testing.assert_allclose(nested, 2 * direct, rtol=1e-6)
    np.testing.assert_allclose(looped, direct, rtol=1e-6)
    assert prog._cache_size() >= 1
