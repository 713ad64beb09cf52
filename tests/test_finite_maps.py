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


# ------------------------------------------------------------------ coalition methods
def _log_gap(_, v):
    """``log|v0 - v1 + 0.25|`` (-inf where ``v1 = v0 + 0.25``, exact in float32) and a
    finite second target."""
    return jnp.stack([jnp.log(jnp.abs(v[:, 0] - v[:, 1] + 0.25)), v.sum(1)], 1)


_COALITION_METHODS = [(jaxsal.shapley_values, {}),
                      (jaxsal.shapley_value_sampling, {"key": 0, "n": 6}),
                      (jaxsal.kernel_shap, {"key": 0}),
                      (jaxsal.lime, {"key": 0, "n": 64})]


@pytest.mark.parametrize("method, kw", _COALITION_METHODS, ids=lambda v: getattr(v, "__name__",
                                                                                   ""))
def test_a_non_finite_coalition_or_clean_score_is_refused_naming_the_input(method, kw):
    """The coalition methods checked only the score on the fill: a NaN/inf score on x itself
    or on a mixed coalition gave NaN or +-inf maps without a word (occlusion and RISE raise).
    Input 0 of ``copy`` scores -inf on coalition {1} only (0 - 0.25 + 0.25), input 0 of
    ``clean`` on x itself only (0.5 - 0.75 + 0.25); every other score is finite (by hand)."""
    m = jaxsal.FunctionModel(_log_gap, None)
    copy = np.array([[1.0, 0.25, 0.5], [0.5, 0.5, 0.75]], np.float32)
    clean = np.array([[0.5, 0.75, 0.5], [0.5, 0.5, 0.75]], np.float32)
    name = method.__name__
    for x, why in ((copy, r"the model's score on some coalitions \(x with the groups outside "
                          r"them replaced by fill\) of input 0 is NaN or inf \(\d+ of \d+ "
                          r"coalitions x 2 targets for input 0\)"),
                   (clean, r"the model's score on the clean input \(.*\) is NaN/inf for input "
                           r"0")):
        with pytest.raises(jaxsal.NonFiniteMaps, match=rf"^{name}: the maps of input 0 are "
                                                       rf"not finite: {why}") as e:
            method(m, x, [0, 1], **kw)
        assert e.value.rows == [0]
        raw = np.asarray(method(m, x, [0, 1], check_finite=False, **kw))  # as computed
        assert not np.isfinite(raw[0, 0]).all() and np.isfinite(raw[1]).all()
    if method is jaxsal.shapley_values:  # nothing checked under the caller's jit
        traced = jax.jit(lambda v: method(m, v, [0, 1], **kw))(jnp.asarray(copy))
        assert not np.isfinite(np.asarray(traced)[0, 0]).all()


def test_feature_permutation_refuses_a_non_finite_shuffled_or_clean_score():
    """feature_permutation checked nothing: +-inf and NaN maps without a word. With two
    inputs each shuffle swaps a group between them; in ``copy`` input 0 with input 1's
    feature 1 scores -inf (1 - 1.25 + 0.25), and so does input 1 with input 0's feature 0
    (1 - 1.25 + 0.25), their clean scores finite; in ``clean`` input 0's clean score is."""
    m = jaxsal.FunctionModel(_log_gap, None)
    copy = np.array([[1.0, 0.25, 0.5], [0.5, 1.25, 0.75]], np.float32)
    clean = np.array([[0.5, 0.75, 0.5], [0.5, 0.5, 0.75]], np.float32)
    with pytest.raises(jaxsal.NonFiniteMaps, match=r"^feature_permutation: the maps of inputs "
                                                   r"0, 1 are not finite: the model's score on "
                                                   r"some shuffled copies .* of inputs 0, 1 is "
                                                   r"NaN or inf") as e:
        jaxsal.feature_permutation(m, copy, [0, 1], key=0)
    assert e.value.rows == [0, 1]
    with pytest.raises(jaxsal.NonFiniteMaps, match=r"the model's score on the clean input "
                                                   r"\(.*\) is NaN/inf for input 0"):
        jaxsal.feature_permutation(m, clean, [0, 1], key=0)
    raw = np.asarray(jaxsal.feature_permutation(m, copy, [0, 1], key=0, check_finite=False))
    assert not np.isfinite(raw[:, 0]).all() and np.isfinite(raw[:, 1]).all()
