"""Keras 3 dtype policies and JAX's 64-bit mode: what the importer computes in.

Models saved under ``mixed_float16``/``mixed_bfloat16`` (float32 variables, half-precision
compute) and ``float16``/``bfloat16`` (half-precision variables) import with float32 weights
and compute in float32: equal to the same weights in a float32 copy of the model, and within
the half-precision rounding of Keras's own output. The attribution maps are float32 for
float16, float32 and float64 inputs. Under ``jax_enable_x64`` float32 inputs stay float32
through every layer (average pooling and float64 NumPy constants made them float64) and
float64 inputs compute in float64. Quantized layers are refused in
test_import_lora_quantized.py.
"""

import contextlib
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import keras  # noqa: E402  (tests/conftest.py picks the backend)
from keras import layers, ops  # noqa: E402

import jaxsal  # noqa: E402
from import_helpers import perturb_keras, save_keras_and_h5  # noqa: E402
from model_import import load_keras  # noqa: E402

x64 = getattr(jax, "enable_x64", None)
if x64 is None:  # older JAX (the oldest release pyproject.toml allows)
    from jax.experimental import enable_x64 as x64

#: Keras's rounding of a half-precision computation, relative to the output's scale: a few
#: units in the last place of float16 (2**-11) and of bfloat16 (2**-8), the precision Keras
#: computes these models in (the largest seen: 1.6e-4 and 9e-4).
HALF_TOL = {"float16": 4e-3, "bfloat16": 3e-2}


def _cnn(policy):
    """A small CNN under ``policy``, its probabilities from a float32 softmax as Keras's
    mixed-precision guide writes it."""
    keras.mixed_precision.set_dtype_policy(policy)
    try:
        keras.utils.set_random_seed(0)
        inp = keras.Input((10, 10, 3))
        h = layers.Conv2D(6, 3, activation="relu", name="conv1")(inp)
        h = layers.BatchNormalization(name="bn")(h)
        h = layers.Conv2D(6, 3, activation="relu", name="conv2")(h)
        h = layers.AveragePooling2D(2, padding="same", name="pool")(h)
        h = layers.GlobalAveragePooling2D(name="gap")(h)
        h = layers.Dense(4, name="logits_dense")(h)
        model = keras.Model(inp, layers.Activation("softmax", dtype="float32", name="probs")(h))
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    perturb_keras(model)
    return model


def _float32_copy(model):
    """The same architecture and weights with every dtype policy float32: what the importer
    computes."""
    def strip(c):
        if isinstance(c, dict):
            return {k: "float32" if k == "dtype" else strip(v) for k, v in c.items()}
        return [strip(v) for v in c] if isinstance(c, list) else c

    copy = keras.Model.from_config(strip(json.loads(json.dumps(model.get_config()))))
    copy.set_weights([np.asarray(w, np.float32) for w in model.get_weights()])
    return copy


def _x(seed=0, shape=(3, 10, 10, 3)):
    return np.random.default_rng(seed).uniform(0, 1, shape).astype(np.float32)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16", "float16", "bfloat16"])
def test_half_precision_policies_import_in_float32(policy, tmp_path):
    model, x = _cnn(policy), _x()
    compute = policy.replace("mixed_", "")
    assert {str(w.dtype) for w in model.weights} == (
        {"float32"} if policy.startswith("mixed") else {compute})
    theirs = np.asarray(model(x), np.float64)
    exact = np.asarray(_float32_copy(model)(x), np.float64)
    for ext, path in save_keras_and_h5(model, tmp_path, policy).items():
        m = load_keras(path)
        assert {str(a.dtype) for p in m.params.values() for a in p.values()} == {"float32"}
        ours = m(x)
        assert ours.dtype == jnp.float32, ext
        np.testing.assert_allclose(np.asarray(ours), exact, rtol=0, atol=1e-6, err_msg=ext)
        err = np.abs(np.asarray(ours, np.float64) - theirs).max() / np.abs(theirs).max()
        assert err <= HALF_TOL[compute], (ext, err)


@pytest.fixture(scope="module")
def mixed_model(tmp_path_factory):
    model = _cnn("mixed_bfloat16")
    path = tmp_path_factory.mktemp("mixed") / "m.keras"
    model.save(path)
    return load_keras(path).with_head("logits")


METHODS = {
    "saliency": lambda m, x: jaxsal.saliency(m, x, targets=[0, 2]),
    "integrated_gradients": lambda m, x: jaxsal.integrated_gradients(m, x, targets=[0, 2],
                                                                     steps=4),
    "gradcam": lambda m, x: jaxsal.gradcam(m, x, targets=[0, 2], layer="conv2"),
    "smoothgrad": lambda m, x: jaxsal.smoothgrad(m, x, targets=[0, 2], n=2,
                                                 key=jax.random.key(0)),
    "occlusion": lambda m, x: jaxsal.occlusion(m, x, targets=[0, 2], patch=5, stride=5),
}


def test_maps_of_a_mixed_precision_model_are_float32(mixed_model):
    """float16, float32 and float64 inputs (x64 off) all give float32 maps, the float32 and
    float64 ones equal (float64 inputs are computed in float32)."""
    x = _x(1, (2, 10, 10, 3))
    for name, method in METHODS.items():
        want = method(mixed_model, x)
        assert want.dtype == jnp.float32, name
        for dt in (np.float64, np.float16):
            got = method(mixed_model, x.astype(dt))
            assert got.dtype == jnp.float32, (name, dt)
            if dt is np.float64:
                np.testing.assert_array_equal(np.asarray(got), np.asarray(want), err_msg=name)


def _x64_model():
    """Average pooling ("same" and "valid") and float64 NumPy constants (the default dtype of
    ``np.array``) in operations: each made float32 inputs float64 under x64."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 3))
    h = inp - np.array([0.1, 0.2, 0.3])
    h = ops.matmul(h, np.eye(3) * 2.0)
    h = layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(h)
    h = layers.AveragePooling2D(3, strides=1, padding="same", name="pool_same")(h)
    h = layers.AveragePooling2D(2, name="pool_valid")(h)
    h = ops.where(h > 0.1, h, np.array([0.0, 0.5, 1.0, 1.5]))
    h = layers.Flatten()(h)
    model = keras.Model(inp, layers.Dense(3, name="out")(h))
    perturb_keras(model)
    return model


def test_float32_inputs_stay_float32_under_x64(tmp_path):
    model = _x64_model()
    x = _x(2, (2, 8, 8, 3))
    theirs = np.asarray(model(x))
    paths = save_keras_and_h5(model, tmp_path, "x64")
    with x64(True):
        for ext, path in paths.items():
            m = load_keras(path)
            y, acts = m.apply(m.params, x, capture=m.layer_names)
            assert y.dtype == jnp.float32, ext
            wide = {k: str(v.dtype) for k, v in acts.items() if v.dtype != jnp.float32}
            assert not wide, (ext, wide)
            np.testing.assert_allclose(np.asarray(y), theirs, rtol=1e-5, atol=1e-5, err_msg=ext)
            y64 = m(x.astype(np.float64))
            assert y64.dtype == jnp.float64, ext
            np.testing.assert_allclose(np.asarray(y64), theirs, rtol=1e-5, atol=1e-5)
        # the methods whose maps take the model's dtype (scores, activations) were float64
        assert jaxsal.occlusion(m, x, targets=[0], patch=4).dtype == jnp.float32
        assert jaxsal.gradcam(m, x, targets=[0], layer="conv").dtype == jnp.float32
        assert jaxsal.saliency(m, x.astype(np.float64), targets=[0]).dtype == jnp.float64


def test_float64_constants_beside_integer_tensors_under_x64(tmp_path):
    """``ids * np.array([...])``: float32 in Keras 3, float64 under x64 before."""
    inp = keras.Input((3,), dtype="int32")
    model = keras.Model(inp, layers.Dense(2)(ops.multiply(inp, np.array([0.5, 0.25, 2.0]))))
    x = np.array([[1, 2, 3], [4, 0, 1]], np.int32)
    path = tmp_path / "ids.keras"
    model.save(path)
    with x64(True):
        y = load_keras(path)(x)
    assert y.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(y), np.asarray(model(x)), rtol=1e-6)


def test_truncatediv_by_a_python_int_under_x64(fixtures_dir):
    """tf.keras 2's ``x // 3`` of an int32 tensor (``tf.truncatediv(x, 3)``): the Python int
    became int64 under x64, and ``lax.div`` refused int32 by int64 at load."""
    ref = np.load(fixtures_dir / "keras2_tfops" / "misc_tf221.expected.npz")
    with x64(True):
        m = load_keras(fixtures_dir / "keras2_tfops" / "misc_tf221.h5")
        _, got = m.apply(m.params, ref["x"], capture=["tf.truncatediv"])
    np.testing.assert_array_equal(np.asarray(got["tf.truncatediv"]),
                                  ref["act__tf.truncatediv"])


def test_half_precision_inputs_are_widened_as_keras_casts_them(tmp_path):
    """Keras casts a float16 input to its Input's float32; the importer computed the
    operations before the first weighted layer in float16, where exp(12) overflows."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((3,))
    model = keras.Model(inp, layers.Dense(2)(ops.exp(inp * 3.0)))
    x = np.array([[4.0, 1.0, -0.5], [0.25, 3.5, 2.0]], np.float16)
    theirs = np.asarray(model(x))
    assert np.isfinite(theirs).all()
    path = tmp_path / "exp.keras"
    model.save(path)
    m = load_keras(path)
    for xx in (x, jnp.asarray(x, jnp.bfloat16)):
        want = np.asarray(model(np.asarray(xx, np.float32)))
        for y in (m(xx), m.apply(m.params, xx)):
            assert y.dtype == jnp.float32
            np.testing.assert_allclose(np.asarray(y), want, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(m(x)), theirs, rtol=1e-5)


def test_float64_policy_weights_stay_float64_under_x64(tmp_path):
    """A ``float64`` policy's weights were rounded to float32 also under x64. Keras 3 keeps
    them float64 on TensorFlow and on JAX with x64 (its layers cast their inputs to float64),
    so under x64 they stay float64 and the model computes in float64 from its first float64
    layer, float32 inputs included: equal to the model in NumPy float64 (within 1e-12; the
    float32 weights were 1e-8 off). Without x64 the weights are float32, as before. (Keras on
    JAX holds a float64 policy's weights as float32 without x64, so there the model is built
    and saved under x64.)"""
    with x64(True) if keras.backend.backend() == "jax" else contextlib.nullcontext():
        keras.config.set_dtype_policy("float64")
        try:
            keras.utils.set_random_seed(0)
            inp = keras.Input((5, 5, 2), dtype="float64")
            h = layers.Conv2D(3, 3, activation="relu", name="conv")(inp)
            h = layers.BatchNormalization(name="bn")(h)
            h = layers.Dense(4, activation="tanh", name="dense")(layers.Flatten()(h))
            model = keras.Model(inp, layers.Dense(3, activation="softmax", name="out")(h))
        finally:
            keras.config.set_dtype_policy("float32")
        perturb_keras(model)
        w = {lay.name: [np.asarray(a, np.float64) for a in lay.get_weights()]
             for lay in model.layers if lay.weights}
        w["dense"][0] = w["dense"][0] + 2.0 ** -40  # digits float32 cannot hold
        for name, arrays in w.items():  # (the NumPy backend keeps its float32 initial kernels)
            model.get_layer(name).set_weights(arrays)
        assert np.asarray(model.get_layer("dense").get_weights()[0]).dtype == np.float64
        paths = save_keras_and_h5(model, tmp_path, "float64")

    def forward(x):  # the model in NumPy float64
        k, b = w["conv"]
        win = np.lib.stride_tricks.sliding_window_view(x, (3, 3), axis=(1, 2))
        h = np.maximum(np.einsum("nijcab,abco->nijo", win, k) + b, 0.0)
        gamma, beta, mean, var = w["bn"]
        h = (h - mean) / np.sqrt(var + 1e-3) * gamma + beta
        h = np.tanh(h.reshape(len(x), -1) @ w["dense"][0] + w["dense"][1])
        z = h @ w["out"][0] + w["out"][1]
        e = np.exp(z - z.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    x = np.random.default_rng(1).normal(size=(2, 5, 5, 2))
    for ext, path in paths.items():
        assert {str(a.dtype) for p in load_keras(path).params.values()
                for a in p.values()} == {"float32"}, ext
        with x64(True):
            m = load_keras(path)
            for name, arrays in w.items():
                got = [np.asarray(m.params[name][k]) for k in
                       (("gamma", "beta", "moving_mean", "moving_variance") if name == "bn"
                        else ("kernel", "bias"))]
                for a, b in zip(got, arrays):
                    assert a.dtype == np.float64, (ext, name)
                    np.testing.assert_array_equal(a, b, err_msg=f"{ext} {name}")
            for xx in (x, x.astype(np.float32)):
                y = m(xx)
                assert y.dtype == jnp.float64, (ext, xx.dtype)
                np.testing.assert_allclose(np.asarray(y), forward(xx.astype(np.float64)),
                                           rtol=0, atol=1e-12, err_msg=ext)
            g = jaxsal.gradcam(m.with_head("logits"), x.astype(np.float32), [0, 2],
                               layer="conv")
            assert g.dtype == jnp.float64 and np.isfinite(np.asarray(g)).all()


def test_floats_given_to_an_integer_input_are_cast_as_keras_casts_them(tmp_path):
    """Keras casts a model's inputs to their ``Input``'s dtype (``convert_to_tensor(x,
    dtype)`` in ``Functional._standardize_inputs``): floats given to an int32 or uint8
    ``Input`` are truncated toward zero. The importer computed them as floats (2.7 where Keras
    reads 2). Values the dtype cannot hold, which Keras's backends cast differently (NumPy
    wraps 300.0 to 44 in uint8, JAX's ``predict`` saturates it to 255), are refused.
    ``apply`` still computes the floats as given (a relaxation to differentiate, which
    maximize's recipe for uint8 image models uses): the Dense layer written in NumPy."""
    keras.utils.set_random_seed(0)
    x = np.array([[-2.7, -0.5, 0.5, 2.7], [1.0, 7.9, 255.6, 0.0]], np.float32)
    for dtype in ("int32", "uint8"):
        inp = keras.Input((4,), dtype=dtype)
        model = keras.Model(inp, layers.Dense(2)(inp))
        path = tmp_path / f"{dtype}.keras"
        model.save(path)
        m = load_keras(path)
        xx = np.abs(x) if dtype == "uint8" else x
        want = np.asarray(model.predict(xx, verbose=0))
        np.testing.assert_allclose(np.asarray(m(xx)), want, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(np.asarray(m(xx.astype(np.int64))), want, rtol=1e-6,
                                   atol=1e-6)
        kernel, bias = model.layers[-1].get_weights()
        np.testing.assert_allclose(np.asarray(m.apply(m.params, xx)), xx @ kernel + bias,
                                   rtol=1e-5, atol=1e-5)
        for bad in (np.nan, np.inf, 2.0 ** 40, -1.0 if dtype == "uint8" else -2.0 ** 40):
            with pytest.raises(ValueError, match=f"InputLayer is {dtype}.*cannot hold"):
                m(np.where(np.arange(4) == 1, np.float32(bad), xx))
    i = keras.Input((4,), dtype="int32")
    model = keras.Model(i, i * 3)
    model.save(tmp_path / "ints.keras")
    y = load_keras(tmp_path / "ints.keras")(x)
    assert y.dtype == jnp.int32
    np.testing.assert_array_equal(np.asarray(y), np.asarray(model.predict(x, verbose=0)))


def test_a_bool_input_stays_bool_as_keras_casts_it(tmp_path):
    """A ``keras.Input(dtype="bool")`` is bool in Keras whatever it is given (non-zero, NaN
    included, is True): ``ops.sum`` of it is an int32 count, ``ops.max`` a bool, and a float
    0.5 given to it is True. The importer made every bool input float32 (float32 sums) and
    computed a float input as given (0.5 where Keras reads 1)."""
    keras.utils.set_random_seed(0)
    x, b = keras.Input((4,), name="x"), keras.Input((4,), dtype="bool", name="b")
    outs = [ops.sum(b, axis=-1), ops.max(b, axis=-1), ops.cumsum(b, axis=-1),
            x * ops.cast(b, "float32"), layers.Dense(2)(b)]
    model = keras.Model([x, b], outs)
    model.save(tmp_path / "b.keras")
    m = load_keras(tmp_path / "b.keras")
    xv = np.array([[1.0, -2.0, 3.0, 0.5], [4.0, 5.0, -6.0, 7.0]], np.float32)
    for bv in (np.array([[1, 0, 1, 1], [0, 0, 0, 1]], bool),
               np.array([[0.5, 0.0, -1.0, np.nan], [0.0, 0.0, 0.0, 2.0]], np.float32)):
        want = model.predict({"x": xv, "b": bv}, verbose=0)
        for y, w in zip(m({"x": xv, "b": bv}), want):
            assert np.asarray(y).dtype == np.asarray(w).dtype
            np.testing.assert_allclose(np.asarray(y), np.asarray(w), rtol=1e-6, atol=1e-6)


def test_a_bool_input_has_no_gradient_map_and_occlusion_takes_it(tmp_path):
    """The methods that need an input gradient refuse a bool ``Input`` (the model casts it to
    bool as Keras does, so its map would be 0; they gave the gradient of a float relaxation
    Keras never computes); occlusion takes it as bools (it refused them) and occludes with
    False: the drop in Keras's score."""
    keras.utils.set_random_seed(0)
    x, b = keras.Input((4,), name="x"), keras.Input((4,), dtype="bool", name="b")
    model = keras.Model([x, b], layers.Dense(3)(x * ops.cast(b, "float32")))
    model.save(tmp_path / "mask.keras")
    m = load_keras(tmp_path / "mask.keras")
    xv = np.array([[1.0, -2.0, 0.5, 3.0], [2.0, 1.0, -1.0, 0.25]], np.float32)
    bv = np.array([[1, 0, 1, 1], [0, 1, 1, 1]], bool)
    for mask in (bv, bv.astype(np.float32)):
        with pytest.raises(TypeError, match="InputLayer for it is bool.*no gradient"):
            jaxsal.saliency(m, [xv, mask], targets=0)
    occ = jaxsal.occlusion(m, [xv, bv], targets=0, patch=1)
    score = model.predict([xv, bv], verbose=0)[:, 0]
    for j in range(4):
        off = bv.copy()
        off[:, j] = False
        np.testing.assert_allclose(np.asarray(occ[1])[:, j],
                                   score - model.predict([xv, off], verbose=0)[:, 0],
                                   rtol=1e-5, atol=1e-6)


def test_the_cams_take_a_bool_mask_into_their_layer(tmp_path):
    """Beside a float image, a bool mask that goes into the CAM layer (a ``Multiply``): Grad-CAM,
    Grad-CAM++, Eigen-CAM and Ablation-CAM take it as bools and as 0/1 floats, with equal
    maps; Grad-CAM's is ``ReLU(sum_k w_k A_k)`` of Keras's activations, ``w_k`` the Dense
    weight over the pooled size (global average pooling then a linear Dense)."""
    keras.utils.set_random_seed(0)
    x = keras.Input((5, 5, 2), name="x")
    mk = keras.Input((5, 5, 1), dtype="bool", name="mk")
    conv = layers.Conv2D(3, 3, padding="same", name="conv")(x)
    a = layers.Multiply(name="mul")([conv, ops.cast(mk, "float32")])
    dense = layers.Dense(2, name="dense")
    model = keras.Model([x, mk], dense(layers.GlobalAveragePooling2D()(a)))
    model.save(tmp_path / "mask.keras")
    m = load_keras(tmp_path / "mask.keras")
    rng = np.random.default_rng(0)
    xv = rng.normal(size=(2, 5, 5, 2)).astype(np.float32)
    bv = rng.random((2, 5, 5, 1)) > 0.3
    for name in ("gradcam", "gradcam_plus_plus", "eigencam", "ablationcam"):
        kw = dict(layer="mul") if name == "eigencam" else dict(layer="mul", targets=0)
        method = getattr(jaxsal, name)
        maps = method(m, [xv, bv], **kw)
        np.testing.assert_array_equal(np.asarray(maps),
                                      np.asarray(method(m, [xv, bv.astype(np.float32)], **kw)))
        if name == "gradcam":
            acts = keras.Model(model.inputs, model.get_layer("mul").output).predict(
                [xv, bv], verbose=0)
            w = dense.get_weights()[0][:, 0] / 25
            np.testing.assert_allclose(np.asarray(maps), np.maximum(acts @ w, 0),
                                       rtol=1e-5, atol=1e-6)


def test_int64_values_beyond_int32_are_refused_or_kept_under_x64(tmp_path):
    """An ``int64`` Input is computed in int32 without x64: ``3_000_000_000`` wrapped around
    to -1294967296 in ``m(x)`` and ``intermediates`` (floats of that size were refused). It
    is refused naming the range; under x64 the input is int64 and the output Keras's."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((2,), dtype="int64")
    model = keras.Model(inp, layers.Dense(1, name="d")(ops.cast(inp, "float32")))
    model.save(tmp_path / "i64.keras")
    x = np.array([[3_000_000_000, 1]], np.int64)
    m = load_keras(tmp_path / "i64.keras")
    for run in (m, lambda v: m.intermediates(v, ["d"])):
        with pytest.raises(ValueError, match=r"InputLayer is int64.*3000000000 beyond "
                           r"int32's range.*wrap around to -1294967296.*jax_enable_x64"):
            run(x)
    kernel, bias = model.get_layer("d").get_weights()
    ok = np.array([[2_000_000_000, -1]], np.int64)  # within int32: computed as given
    np.testing.assert_allclose(np.asarray(m(ok)), ok.astype(np.float32) @ kernel + bias,
                               rtol=1e-6)
    with x64():
        m = load_keras(tmp_path / "i64.keras")
        np.testing.assert_allclose(np.asarray(m(x)), np.asarray(model(x)), rtol=1e-6)
