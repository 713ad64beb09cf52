"""Small models shared by several test files."""

import jax.numpy as jnp
import numpy as np

import jaxsal


def smooth_model(shape=(5, 4, 2)):
    """A smooth 4-class function of ``(N, *shape)`` inputs (40 features): tanh hidden layer,
    no ReLU, no bias, so integrated gradients and GradientSHAP are exact up to their
    quadrature or sampling error."""
    rng = np.random.default_rng(3)
    params = {"w1": jnp.asarray(rng.normal(size=(40, 16)) * 0.3, jnp.float32),
              "w2": jnp.asarray(rng.normal(size=(16, 4)), jnp.float32)}

    def f(p, x):
        return jnp.tanh(x.reshape(x.shape[0], -1) @ p["w1"]) @ p["w2"]

    return jaxsal.FunctionModel(f, params, input_shape=shape)
