"""Maps of finite inputs that are not finite: the gradient methods raise jaxsal.NonFiniteMaps
naming the inputs (the model's gradient is infinite at a point the method evaluates), unless
check_finite=False; explain_to_file names them by their index in the job."""

import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsal

keras = pytest.importorskip("keras")


@pytest.fixture(scope="module")
def sqrt_model(tmp_path_factory):
    """A Keras model with ``sqrt(|conv(x)|)`` (no bias): at an all-zero input the
    convolution's output is 0 and the square root's derivative is infinite there."""
    from model_import import load_keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((6, 6, 1))
    h = keras.layers.Conv2D(2, 3, use_bias=False, name="conv")(inp)
    h = keras.ops.sqrt(keras.ops.abs(h))
    out = keras.layers.Dense(3, name="dense")(keras.layers.Flatten()(h))
    path = tmp_path_factory.mktemp("sqrt") / "sqrt.keras"
    keras.Model(inp, out).save(path)
    m = load_keras(path)
    x = np.random.default_rng(0).uniform(0.5, 1.0, size=(4, 6, 6, 1)).astype(np.float32)
    x[2] = 0.0  # the convolution's output is exactly 0 for this input
    return m, x


@pytest.mark.parametrize("method", [jaxsal.saliency, jaxsal.gradient_x_input,
                                    jaxsal.gradcam, jaxsal.hirescam, jaxsal.guided_gradcam])
def test_an_infinite_gradient_at_an_input_is_refused_naming_it(sqrt_model, method):
    m, x = sqrt_model
    raw = np.asarray(method(m, x, [0, 1], check_finite=False))  # (was returned silently)
    bad = ~np.isfinite(raw.reshape(len(x), -1)).all(axis=1)
    assert bad.tolist() == [False, False, True, False]
    for _ in range(2):  # the second call runs the kept plan
        with pytest.raises(jaxsal.NonFiniteMaps,
                           match=rf"{method.__name__}: the maps of input 2 are not finite "
                                 r"\(NaN or inf\), although the inputs are.*check_finite=False"
                           ) as e:
            method(m, x, [0, 1])
        assert e.value.rows == [2] and isinstance(e.value, ValueError)
        again = pickle.loads(pickle.dumps(e.value))  # (from a worker process)
        assert again.rows == [2] and str(again) == str(e.value)
    np.testing.assert_array_equal(np.asarray(method(m, x[[0, 1, 3]], [0, 1])), raw[[0, 1, 3]])


def test_integrated_gradients_from_the_zero_baseline_is_refused_for_every_input(sqrt_model):
    """The path from the all-zero baseline starts where the gradient is infinite: every map
    is NaN (the case the new-user sweep found); another baseline gives finite maps."""
    m, x = sqrt_model
    with pytest.raises(jaxsal.NonFiniteMaps, match=r"maps of inputs 0, 1, 2, 3 are not finite"
                                                   r".*pass another baseline") as e:
        jaxsal.integrated_gradients(m, x, 1, steps=8)
    assert e.value.rows == [0, 1, 2, 3]
    raw = np.asarray(jaxsal.integrated_gradients(m, x, 1, steps=8, check_finite=False))
    assert not np.isfinite(raw.reshape(len(x), -1)).all(axis=1).any()
    maps = jaxsal.integrated_gradients(m, x[[0, 1]], 1, steps=8, baseline=np.full_like(x[:2],
                                                                                      0.25))
    assert np.isfinite(np.asarray(maps)).all()


def test_nothing_is_checked_under_the_callers_jit(sqrt_model):
    m, x = sqrt_model
    maps = jax.jit(lambda v: jaxsal.saliency(m, v, 1))(jnp.asarray(x))
    assert np.isnan(np.asarray(maps)[2]).any() and np.isfinite(np.asarray(maps)[[0, 1, 3]]).all()


def test_explain_to_file_names_the_input_by_its_index_in_the_job(sqrt_model, tmp_path):
    m, x = sqrt_model
    xs = np.concatenate([x[[0, 1, 3]], x])  # the zero input is input 5 of the job
    with pytest.raises(ValueError, match=r"chunk 1 \(inputs 4:7, padded to 4 by repeating the "
                                         r"last\) failed: the maps of input 5 are not finite"):
        jaxsal.explain_to_file(jaxsal.saliency, m, xs, tmp_path / "maps.npy", targets=1,
                               batch_size=4)
    np.testing.assert_array_equal(np.load(tmp_path / "maps.npy")[:4],
                                  np.asarray(jaxsal.saliency(m, xs[:4], 1)))
