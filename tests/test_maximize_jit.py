"""maximize inside a caller's ``jax.jit``: traced seed images and keys; concrete targets."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsal

PLAIN = dict(transforms=jaxsal.identity(), regularizers=(), steps=2)


def _linear_fn(p, x):
    return x.reshape(x.shape[0], -1) @ p["w"]


@pytest.fixture(scope="module")
def linear():
    """A linear model of 4x4x1 images with 3 outputs, ``y = vec(x) @ w``."""
    w = jax.random.normal(jax.random.key(0), (16, 3))
    return jaxsal.FunctionModel(_linear_fn, {"w": w}, input_shape=(4, 4, 1))


def test_traced_seed_images_and_key_give_the_eager_images(linear):
    seeds = jax.random.uniform(jax.random.key(1), (2, 4, 4, 1))
    key = jax.random.key(2)
    want = jaxsal.maximize(linear, [0, 2], key=key, seed_images=seeds, **PLAIN)
    got = jax.jit(lambda s, k: jaxsal.maximize(linear, [0, 2], key=k, seed_images=s,
                                               **PLAIN).images)(seeds, key)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want.images))
    # objectives built inside the jitted function, from constants
    objs = lambda: [jaxsal.output_objective(1) - 0.5 * jaxsal.output_objective(2)]  # noqa: E731
    want = jaxsal.maximize(linear, objs(), seed_images=seeds[0], **PLAIN).images
    got = jax.jit(lambda s: jaxsal.maximize(linear, objs(), seed_images=s, **PLAIN).images)(
        seeds[0])
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_traced_unit_indices_are_refused_with_the_fix(linear):
    f = jax.jit(lambda t: jaxsal.maximize(linear, t, **PLAIN).images)
    with pytest.raises(ValueError, match="concrete unit indices.*outside jax.jit"):
        f(jnp.asarray([0, 1]))
