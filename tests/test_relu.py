"""The importer's ReLU (derivative read off the output) has jax.nn.relu's values and
derivatives: reverse and forward mode, second order, at zero, NaN and infinities."""

import jax
import jax.numpy as jnp
import numpy as np

from model_import._layers.relu import relu

X = jnp.array([-2.0, -0.0, 0.0, 1e-30, 3.0, jnp.inf, -jnp.inf, jnp.nan])


def _same(a, b):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_values_and_derivatives_are_jax_nn_relus():
    _same(relu(X), jax.nn.relu(X))
    g = jnp.arange(1.0, 9.0)
    _same(jax.vjp(relu, X)[1](g)[0], jax.vjp(jax.nn.relu, X)[1](g)[0])
    _same(jax.jvp(relu, (X,), (g,))[1], jax.jvp(jax.nn.relu, (X,), (g,))[1])
    second = jax.vmap(jax.grad(jax.grad(relu)))(X)
    _same(second, jax.vmap(jax.grad(jax.grad(jax.nn.relu)))(X))
    assert jax.grad(relu)(0.0) == 0.0


def test_dtypes_kept_and_usable_under_jit_and_vmap():
    x = jnp.linspace(-1, 1, 7, dtype=jnp.bfloat16)
    assert relu(x).dtype == jnp.bfloat16
    assert jax.grad(lambda v: relu(v).sum())(x).dtype == jnp.bfloat16
    f = jax.jit(jax.vmap(jax.grad(lambda v: relu(v * 2.0).sum())))
    _same(f(jnp.ones((3, 4)) * jnp.array([[-1.0], [0.0], [1.0]])),
          np.array([[0.0] * 4, [0.0] * 4, [2.0] * 4]))


def test_imported_models_use_it_and_guided_backprop_keeps_its_rule(tmp_path):
    from model_import import load_keras
    import keras

    m = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4, activation="relu"),
                          keras.layers.Dense(3)])
    path = tmp_path / "m.keras"
    m.save(path)
    km = load_keras(path)
    assert km.runtime.relu is relu
    x = np.random.default_rng(0).normal(size=(2, 5)).astype(np.float32)
    # the same gradients as with jax.nn.relu
    g = jax.grad(lambda v: km(v).sum())(x)
    g_ref = jax.grad(lambda v: km.with_relu(jax.nn.relu)(v).sum())(x)
    np.testing.assert_allclose(g, g_ref, rtol=1e-6, atol=1e-7)
    assert km.with_backprop("standard").runtime.relu is relu


def test_guided_relu_keeps_a_boolean_not_its_input():
    from jaxsal._src.guided import guided_relu

    x = jnp.linspace(-1, 1, 12).reshape(3, 4)
    res = [a for a in jax.tree_util.tree_leaves(jax.vjp(guided_relu, x)[1])
           if hasattr(a, "dtype") and a.shape == x.shape]
    assert [a.dtype for a in res] == [jnp.bool_]
    g = jnp.array([[1.0, -1.0, 2.0, -2.0]] * 3)
    _same(jax.vjp(guided_relu, x)[1](g)[0], jnp.where((g > 0) & (x > 0), g, 0.0))


_SLOPE = 0.0


def _leaky(v):
    return jnp.where(v > 0, v, _SLOPE * v)


def test_with_relu_of_a_function_reading_a_reassigned_variable_is_traced_again(tmp_path):
    """with_relu(f): the compiled program is found by f's code and the values it reads now,
    as FunctionModel(relu=...) is: after `_SLOPE = 0.5` the maps are the leaky ReLU's (the
    gradient of Dense(relu) -> Dense, with each unit's slope 1 or _SLOPE, in NumPy)."""
    global _SLOPE
    import keras
    import jaxsal
    from model_import import load_keras

    rng = np.random.default_rng(0)
    net = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4, activation="relu"),
                            keras.layers.Dense(3)])
    path = tmp_path / "m.keras"
    net.save(path)
    (w1, b1), (w2, _) = (layer.get_weights() for layer in net.layers)
    km = load_keras(path)
    x = rng.normal(size=(2, 5)).astype(np.float32)
    h = x.astype(np.float64) @ w1 + b1
    try:
        for slope in (0.0, 0.5):
            _SLOPE = slope
            g = jaxsal.saliency(km.with_relu(_leaky), x, 1, reduce=None)
            np.testing.assert_allclose(g, (np.where(h > 0, 1.0, slope) * w2[:, 1]) @ w1.T,
                                       rtol=1e-5, atol=1e-6)
    finally:
        _SLOPE = 0.0
