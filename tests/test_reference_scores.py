"""Methods that score a reference input (the fill of the coalition methods and RISE) refuse
one where the model's score is not finite (an all-padding input of a mask_zero attention
model is NaN in Keras too) instead of returning all-NaN maps without a word."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")
from keras import layers  # noqa: E402

import jax  # noqa: E402

import jaxsal  # noqa: E402
from model_import import load_keras  # noqa: E402


@pytest.fixture(scope="module")
def attention(tmp_path_factory):
    """Embedding(50, 8, mask_zero) -> MultiHeadAttention(2, 4)(e, e) -> Add -> LayerNorm ->
    GlobalAveragePooling1D -> Dense(3): NaN on ids all 0 (every token masked)."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((6,), dtype="int32")
    e = layers.Embedding(50, 8, mask_zero=True, name="emb")(inp)
    h = layers.Add()([e, layers.MultiHeadAttention(2, 4, name="mha")(e, e)])
    h = layers.GlobalAveragePooling1D()(layers.LayerNormalization()(h))
    km = keras.Model(inp, layers.Dense(3, name="out")(h))
    assert np.isnan(km.predict(np.zeros((1, 6), np.int32), verbose=0)).all()
    path = tmp_path_factory.mktemp("att") / "att.keras"
    km.save(path)
    ids = np.array([[3, 7, 9, 2, 0, 0], [5, 1, 4, 8, 11, 0]], np.int32)
    return load_keras(path), ids


METHODS = {
    "shapley_values": lambda m, x, **kw: jaxsal.shapley_values(m, x, patch=3, **kw),
    "shapley_value_sampling": lambda m, x, **kw: jaxsal.shapley_value_sampling(
        m, x, patch=3, key=0, n=4, **kw),
    "kernel_shap": lambda m, x, **kw: jaxsal.kernel_shap(m, x, patch=3, key=0, **kw),
    "lime": lambda m, x, **kw: jaxsal.lime(m, x, patch=3, key=0, n=64,
                                           distance="interpretable", **kw),
    "rise": lambda m, x, **kw: jaxsal.rise(m, x, key=0, n=64, **kw),
}


@pytest.mark.parametrize("name", list(METHODS))
def test_a_fill_the_model_scores_nan_is_refused(attention, name):
    m, ids = attention
    with pytest.raises(ValueError, match=r"(?s)fill=0.*NaN.*Pass fill="):
        METHODS[name](m, ids)
    maps = np.asarray(METHODS[name](m, ids, fill=1))  # a non-padding token: finite maps
    assert np.isfinite(maps).all()


def test_a_nan_fill_is_not_checked_under_a_jit_or_without_check_finite(attention):
    m, ids = attention
    maps = jax.jit(lambda x: jaxsal.shapley_values(m, x, patch=3))(ids)
    assert np.isnan(np.asarray(maps)).all()  # no values to check while the jit traces
    maps = jaxsal.shapley_values(m, ids, patch=3, check_finite=False)
    assert np.isnan(np.asarray(maps)).all()
