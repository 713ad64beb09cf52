"""jaxsal's XLA options on CPU: applied to programs with a backward pass only, and dropped when
a method runs inside a user's own trace."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxsal._src import base


def _f(w, x):
    return jnp.tanh(x @ w).sum()


def test_options_only_for_backward_programs_on_cpu():
    assert base.compiler_options(backward=False) is None
    opts = base.compiler_options(backward=True)
    if jax.default_backend() == "cpu" and base._cpu_options_supported():
        assert opts == dict(base.CPU_GRADIENT_COMPILER_OPTIONS)
        hlo = base.Program(jax.grad(_f, argnums=1), opts).lower(
            jnp.ones((8, 4)), jnp.ones((2, 8))).compile().as_text()
        assert "ynn_fusion" not in hlo
    else:
        assert opts is None


def test_program_inside_a_user_trace_runs_plain():
    prog = base.Program(jax.grad(_f, argnums=1), base.compiler_options(backward=True))
    w, x = jnp.arange(32.0).reshape(8, 4) / 32, jnp.ones((3, 8))
    direct = prog(w, x)
    nested = jax.jit(lambda w, x: prog(w, x) * 2)(w, x)  # compiler_options: outermost jit only
    looped = jax.vmap(lambda xi: prog(w, xi[None])[0])(x)
    np.testing.assert_allclose(nested, 2 * direct, rtol=1e-6)
    np.testing.assert_allclose(looped, direct, rtol=1e-6)
    assert prog._cache_size() >= 1
