"""Call plans (jaxsal._src.plans): a second call with the same static description skips the
validation and planning of the first, and still checks what depends on the input's values
and uses the model's current parameters."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import keras  # noqa: E402  (tests/conftest.py picks the backend)
from keras import layers  # noqa: E402

import jaxsal
from import_helpers import save_keras_and_h5  # noqa: E402
from jaxsal._src import base, plans
from model_import import load_keras  # noqa: E402


def _linear(w):
    """A linear model of (N, 3, 2) inputs: the gradient of class k is w[:, k] reshaped."""
    def f(p, x):
        return x.reshape(x.shape[0], -1) @ p

    return jaxsal.FunctionModel(f, jnp.asarray(w, jnp.float32), input_shape=(3, 2))


W1 = np.arange(12, dtype=np.float32).reshape(6, 2) - 5.0
W2 = -2.0 * W1 + 1.0
F = _linear(W1).fn


def test_second_call_runs_the_plan_with_the_same_maps(mnist, mnist_digits):
    m = mnist.with_head("logits")
    x = jnp.asarray(mnist_digits[:3])
    for method, kw in ((jaxsal.saliency, {}), (jaxsal.gradient_x_input, {}),
                       (jaxsal.guided_backprop, {}), (jaxsal.gradcam, {"layer": "conv2d_2"}),
                       (jaxsal.layercam, {})):
        base.clear_caches()
        first = method(m, x, [1, 4], **kw)
        assert len(plans.PLANS.data) == 1
        (prog,) = base._PROGRAMS.data.values()
        compiled = prog._cache_size()
        second = method(m, x, [1, 4], **kw)  # the plan's program: nothing compiled again
        assert len(plans.PLANS.data) == 1 and prog._cache_size() == compiled
        np.testing.assert_array_equal(np.asarray(first), np.asarray(second))
        # another static description: a plan of its own
        method(m, x, 2, **kw)
        assert len(plans.PLANS.data) == 2


def test_plans_skip_validation_and_planning(mnist, mnist_digits, monkeypatch):
    m = mnist.with_head("logits")
    x = jnp.asarray(mnist_digits[:2])
    base.clear_caches()
    jaxsal.saliency(m, x, [0, 3])
    calls = []
    from jaxsal._src import gradients

    monkeypatch.setattr(gradients, "prepare", lambda *a, **k: calls.append(1))
    jaxsal.saliency(m, x, [0, 3])  # the plan: prepare() is not called
    assert calls == []


def test_a_plan_still_refuses_nan_inputs(mnist, mnist_digits):
    m = mnist.with_head("logits")
    x = np.array(mnist_digits[:2])
    base.clear_caches()
    jaxsal.saliency(m, x, 1)
    jaxsal.gradcam(m, x, 1)
    x[1, 3, 4, 0] = np.nan
    for method in (jaxsal.saliency, jaxsal.gradcam):
        with pytest.raises(ValueError, match="NaN or infinite"):
            method(m, x, 1)
        with pytest.raises(ValueError, match="NaN or infinite"):
            method(m, jnp.asarray(x), 1)
    # check_finite=False is another plan, which lets them through
    assert jaxsal.saliency(m, x, 1, check_finite=False).shape == (2, 28, 28)
    assert len(plans.PLANS.data) == 3


def test_a_plan_uses_the_models_current_parameters():
    """Two models of one function with parameters of the same shapes share a plan: the
    second call's gradient is its own weight, not the first model's."""
    x = np.ones((2, 3, 2), np.float32)
    base.clear_caches()
    g1 = jaxsal.saliency(jaxsal.FunctionModel(F, jnp.asarray(W1), input_shape=(3, 2)), x, 1,
                         reduce=None)
    g2 = jaxsal.saliency(jaxsal.FunctionModel(F, jnp.asarray(W2), input_shape=(3, 2)), x, 1,
                         reduce=None)
    assert len(plans.PLANS.data) == 1
    np.testing.assert_allclose(g1, np.broadcast_to(W1[:, 1].reshape(3, 2), (2, 3, 2)))
    np.testing.assert_allclose(g2, np.broadcast_to(W2[:, 1].reshape(3, 2), (2, 3, 2)))


def test_a_plan_still_refuses_token_ids_outside_the_vocabulary(tmp_path):
    tok = keras.Input((5,), dtype="int32")
    e = layers.Embedding(20, 4, name="emb")(tok)
    model = keras.Model(tok, layers.Dense(2)(layers.GlobalAveragePooling1D()(e)))
    m = load_keras(save_keras_and_h5(model, tmp_path, "tok")[".keras"])
    base.clear_caches()
    ok = np.array([[1, 2, 3, 0, 19]], np.int32)
    jaxsal.saliency(m, ok, 0, layer="emb")
    assert len(plans.PLANS.data) == 1
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 20\)"):
        jaxsal.saliency(m, np.array([[1, 2, 25, 0, 0]], np.int32), 0, layer="emb")


def test_calls_without_a_static_description_take_the_full_path(mnist, mnist_digits):
    m = mnist.with_head("logits")
    x = jnp.asarray(mnist_digits[:2])
    base.clear_caches()
    ids = jnp.asarray([[1, 2], [3, 4]])  # device arrays: values not read on the host
    a = jaxsal.saliency(m, x, ids)
    b = jaxsal.saliency(m, [x][0], np.asarray(ids))  # numpy ids: a plan
    assert len(plans.PLANS.data) == 1
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # inside a user's jit the input is a tracer: no plan, the same maps
    c = jax.jit(lambda v: jaxsal.saliency(m, v, [1, 2]))(x)
    np.testing.assert_allclose(c, jaxsal.saliency(m, x, [1, 2]), rtol=1e-6, atol=1e-7)
    assert len(plans.PLANS.data) == 2


def test_a_plan_still_refuses_options_equal_to_good_ones():
    """True == 1 == 1.0: an option of another type than a good call's is not that call's plan
    (it would skip validation) and is refused as on the full path."""
    m = _linear(W1)
    x = np.ones((2, 3, 2), np.float32)
    base.clear_caches()
    for good, bad in ((dict(chunk_size=1), dict(chunk_size=True)),
                      (dict(chunk_size=2), dict(chunk_size=2.0)),
                      (dict(memory_budget=1), dict(memory_budget=True)),
                      (dict(check_finite=True), dict(check_finite=1.0))):
        jaxsal.saliency(m, x, 1, **good)
        with pytest.raises((TypeError, ValueError), match=f"expected {next(iter(bad))}"):
            jaxsal.saliency(m, x, 1, **bad)
    fm = jaxsal.FunctionModel(lambda p, x: x.mean((1, 2)) @ p, W1[:2],
                              features=lambda p, x: x, head_fn=lambda p, a: a.mean((1, 2)) @ p)
    xi = np.ones((2, 4, 4, 2), np.float32)
    jaxsal.gradcam(fm, xi, 0, upsample=True)
    with pytest.raises(TypeError, match="expected upsample as a bool"):
        jaxsal.gradcam(fm, xi, 0, upsample=1.0)
