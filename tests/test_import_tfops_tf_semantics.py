"""tf.keras 2 ``TFOpLambda`` functions where NumPy / JAX semantics differ from TensorFlow's:
each checked against TF's documented formula, written here independently of the importer
(TensorFlow is not installed for the tests)."""

import jax.numpy as jnp
import numpy as np
import pytest

from tfops_helpers import tf_function


@pytest.mark.parametrize("fn", ["math.floordiv", "compat.v1.floor_div"])
def test_float_floordiv_is_the_floor_of_the_quotient(fn):
    """TF's ``FloorDiv`` of floats is ``floor(x / y)`` (NumPy's ``floor_divide`` is
    ``(x - fmod(x, y)) / y``: one less where ``x / y`` rounds to an integer, ``1.0 // 0.1``
    is 9 there and 10 in TF); integers keep the floored integer division; static operands
    (sizes from ``tf.shape``) get the same rule."""
    f = tf_function(fn)
    x = np.array([[1.0, 0.3, 7.0, 0.7, -1.0, 2.5]], np.float32)
    want = np.floor(x / np.float32(0.1))
    got = f(jnp.asarray(x), 0.1)
    assert got.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(got), want)
    np.testing.assert_array_equal(np.asarray(f(jnp.asarray(x), jnp.full_like(x, 0.1))), want)
    static = f(x, np.float32(0.1))  # both static: the NumPy path
    assert isinstance(static, np.ndarray)
    np.testing.assert_array_equal(static, want)
    i = np.array([-7, 7, 6], np.int32)
    np.testing.assert_array_equal(np.asarray(f(jnp.asarray(i), 2)), [-4, 3, 3])
    np.testing.assert_array_equal(f(i, np.int32(-2)), [3, -4, -3])
