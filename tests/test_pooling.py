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

    @jax.jit  # one compiled program per case (eager, every primitive compiles on its own)
    def both(x, g):
        out = []
        for f in (lambda v: _blocked_max(v, pool), lambda v: nn.max_pool(v, pool, pool, "VALID")):
            y, pull = jax.vjp(f, x)
            out.append((y, pull(g)[0]))
        return out

    g_shape = jax.eval_shape(lambda v: _blocked_max(v, pool), x).shape
    (y, dx), (y_ref, dx_ref) = both(x, jax.random.normal(jax.random.key(1), g_shape))
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(dx, dx_ref)  # first maximum gets it all
