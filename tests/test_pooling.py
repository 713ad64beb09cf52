"""The reshape max-pool equals reduce_window max-pool in value and gradient, ties included."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from model_import._layers.pooling import _blocked_max


@pytest.mark.parametrize("shape,pool", [((2, 7, 9, 3), (2, 2)), ((2, 8, 8, 3), (2, 2)),
                                        ((2, 9, 9, 4), (3, 3)), ((2, 10, 5), (2,)),
                                        ((1, 6, 4, 4, 2), (2, 2, 2))])
def test_blocked_max_matches_reduce_window_with_ties(shape, pool):
    x = jax.random.normal(jax.random.key(0), shape)
    x = jnp.where(x < 0, 0.25, x)  # many tied window maxima, as ReLU(bias) gives in blank areas
    ref = lambda v: nn.max_pool(v, pool, pool, "VALID")  # noqa: E731
    y, pull = jax.vjp(lambda v: _blocked_max(v, pool), x)
    y_ref, pull_ref = jax.vjp(ref, x)
    g = jax.random.normal(jax.random.key(1), y.shape)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(pull(g)[0], pull_ref(g)[0])  # first maximum gets it all
