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


def test_method_in_a_user_jit_without_traced_arguments_runs_plain(mnist, mnist_digits):
    """A method called inside a user's trace with no traced argument (inputs captured as a
    constant: ``jax.jit(lambda: saliency(m, x))``, or ``jax.eval_shape`` as
    ``explain_to_file`` traces a chunk) runs as a plain nested jit: CPU's XLA options belong
    to the outermost program, a nested jit with them is refused."""
    import jaxsal

    m = mnist.with_head("logits")
    x = jnp.asarray(mnist_digits[:2])
    direct = jaxsal.saliency(m, x, None)
    nested = jax.jit(lambda: jaxsal.saliency(m, x, None))()
    np.testing.assert_allclose(nested, direct, rtol=1e-5, atol=1e-7)


def test_explain_to_file_with_a_sharding_and_predicted_targets(mnist, mnist_digits, tmp_path):
    """``explain_to_file(..., sharding=)`` (the command line's ``--devices``) with the predicted
    classes: the dry run of the first chunk traced the method with the chunk as a constant,
    and the CPU-tuned program refused to nest in it."""
    import jaxsal
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

    m = mnist.with_head("logits")
    x = mnist_digits[:3]
    rows = NamedSharding(Mesh(np.array(jax.devices()[:1]), ("data",)), P("data"))
    got = jaxsal.explain_to_file(jaxsal.saliency, m, x, str(tmp_path / "maps.npy"),
                                 batch_size=3, sharding=rows)
    np.testing.assert_allclose(got, jaxsal.saliency(m, x, None), rtol=1e-5, atol=1e-7)
