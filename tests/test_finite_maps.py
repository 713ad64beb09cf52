"""Maps of finite inputs that are not finite: the gradient methods raise jaxsal.NonFiniteMaps
naming the inputs (the model's gradient is infinite at a point the method evaluates), and so
do Score-CAM, Ablation-CAM and Eigen-CAM (a score or activation overflowing, Ablation-CAM's
division by a zero score), unless check_finite=False; explain_to_file names them by their
index in the job."""

import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsal
from batch_helpers import rows_of

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
    # (a batch of 3 may compile other float roundings than one of 4: jax 0.12)
    ok = raw[[0, 1, 3]]
    np.testing.assert_allclose(np.asarray(method(m, x[[0, 1, 3]], [0, 1])), ok, rtol=1e-5,
                               atol=1e-6 * np.abs(ok).max())


def test_integrated_gradients_from_the_zero_baseline_is_refused_for_every_input(sqrt_model):
    """The path from the all-zero baseline starts where the gradient is infinite: every map
    is NaN (the case the new-user sweep found); another baseline gives finite maps."""
    m, x = sqrt_model
    with pytest.raises(jaxsal.NonFiniteMaps, match=r"maps of inputs 0, 1, 2, 3 are not finite"
                                                   r".*pass another baseline") as e:
        jaxsal.integrated_gradients(m, x, 1, steps=8)
    assert e.value.rows == [0, 1, 2, 3]
    # the channel norm too (it turned NaN into 0: zero maps, returned)
    with pytest.raises(jaxsal.NonFiniteMaps, match=r"maps of inputs 0, 1, 2, 3 are not finite"):
        jaxsal.integrated_gradients(m, x, 1, steps=8, reduce="l2")
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
    np.testing.assert_array_equal(rows_of(tmp_path / "maps.npy")[:4],
                                  np.asarray(jaxsal.saliency(m, xs[:4], 1)))


@pytest.fixture(scope="module")
def exp_model(tmp_path_factory):
    """A Keras model with ``exp(conv(x))`` (no bias): a finite input of large values makes
    the exponential overflow, and the score (through the dense layer: inf times weights of
    both signs) is not finite; an all-zero input gives a score of exactly 0 once the
    exponential is taken off (``Dense`` without bias after a zero convolution)."""
    from model_import import load_keras

    keras.utils.set_random_seed(1)
    inp = keras.Input((6, 6, 1))
    c = keras.layers.Conv2D(2, 3, use_bias=False, name="conv")(inp)
    h = keras.layers.Activation("exponential", name="expo")(c)
    out = keras.layers.Dense(3, name="dense")(keras.layers.Flatten()(h))
    zero = keras.layers.Dense(3, use_bias=False, name="dense0")(keras.layers.Flatten()(c))
    paths = []
    for name, o in (("exp", out), ("zero", zero)):
        paths.append(tmp_path_factory.mktemp(name) / f"{name}.keras")
        keras.Model(inp, o).save(paths[-1])
    x = np.random.default_rng(1).uniform(0.5, 1.0, size=(4, 6, 6, 1)).astype(np.float32)
    return load_keras(paths[0]), load_keras(paths[1]), x


def _refused_at(method, m, x, row, **kw):
    raw = np.asarray(method(m, x, [0, 1], check_finite=False, **kw))  # (was returned as is)
    bad = ~np.isfinite(raw.reshape(len(x), -1)).all(axis=1)
    assert bad.tolist() == [i == row for i in range(len(x))]
    with pytest.raises(jaxsal.NonFiniteMaps, match=rf"{method.__name__}: the maps of input "
                                                   rf"{row} are not finite") as e:
        method(m, x, [0, 1], **kw)
    assert e.value.rows == [row]
    keep = [i for i in range(len(x)) if i != row]
    # (float32 sums of another batch size; Ablation-CAM's weights divide by the score)
    np.testing.assert_allclose(np.asarray(method(m, x[keep], [0, 1], **kw)), raw[keep],
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("method, layer", [(jaxsal.scorecam, "conv"),
                                           (jaxsal.ablationcam, "conv"),
                                           (jaxsal.eigencam, "expo")])
def test_forward_only_cams_refuse_an_overflowing_input(exp_model, method, layer):
    m, _, x = exp_model
    x = x.copy()
    x[1] *= 1e3  # finite: passes the input check; exp(conv(x)) overflows (not constant:
    # Score-CAM's masks of a constant input's activations are 0)
    _refused_at(method, m, x, 1, layer=layer)


def test_ablationcam_refuses_a_score_of_exactly_zero(exp_model):
    """w_k = (S - S_k) / S: 0 / 0 for an all-zero input of a model without biases."""
    _, m, x = exp_model
    x = x.copy()
    x[3] = 0.0
    _refused_at(jaxsal.ablationcam, m, x, 3, layer="conv")
