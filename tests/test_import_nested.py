"""Nested models (a keras.applications base used as a layer, Sequential and Functional, frozen
or partly frozen; models built on ``input_tensor``) and weights-only files, against Keras 3.

A frozen base changes the order in which a legacy ``.h5`` lists the nested model's weights
(all trainable weights of all its layers first, then the non-trainable ones); the importer
assigns them by name, which these tests pin down for both writers (by position where the
names are not the layers': tests/test_import_nested_renamed.py).
"""

import h5py
import jax
import numpy as np
import pytest

keras = pytest.importorskip("keras")
from keras import layers  # noqa: E402

from import_helpers import perturb_keras, rel_err  # noqa: E402
from model_import import load_keras  # noqa: E402

TOL = 1e-4
SIDE = 32


def _base(**kw):
    return keras.applications.MobileNetV2(alpha=0.35, include_top=False, weights=None,
                                          input_shape=(SIDE, SIDE, 3), **kw)


def _x(n=2, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, SIDE, SIDE, 3)).astype(np.float32)


def _sequential_frozen():
    base = _base()
    base.trainable = False
    m = keras.Sequential([keras.Input((SIDE, SIDE, 3)), base,
                          layers.GlobalAveragePooling2D(name="gap"),
                          layers.Dense(5, activation="softmax", name="predictions")],
                         name="seq_transfer")
    return m, base


def _functional_partly_frozen():
    base = _base()
    for lay in base.layers[: len(base.layers) // 2]:
        lay.trainable = False  # a frozen half: weights of one layer in two orders
    aug = keras.Sequential([layers.RandomFlip("horizontal", name="flip"),
                            layers.Rescaling(1 / 127.5, offset=-1, name="to_pm1")], name="prep")
    inp = keras.Input((SIDE, SIDE, 3), name="image")
    h = aug(inp)
    h = base(h, training=False)
    h = layers.GlobalAveragePooling2D(name="gap")(h)
    h = layers.Dropout(0.2)(h)
    out = layers.Dense(4, activation="sigmoid", name="predictions")(h)
    return keras.Model(inp, out, name="func_transfer"), base


def _input_tensor():
    inp = keras.Input((SIDE, SIDE, 3), name="image")
    base = keras.applications.MobileNet(alpha=0.25, include_top=False, weights=None,
                                        input_tensor=inp)
    h = layers.GlobalAveragePooling2D(name="gap")(base.output)
    out = layers.Dense(3, activation="softmax", name="predictions")(h)
    return keras.Model(inp, out, name="on_input_tensor"), base


MODELS = {"sequential_frozen": _sequential_frozen,
          "functional_partly_frozen": _functional_partly_frozen,
          "input_tensor": _input_tensor}
INNER = {"sequential_frozen": "block_3_expand_relu",
         "functional_partly_frozen": "block_6_project_BN",
         "input_tensor": "conv_pw_5_relu"}


@pytest.fixture(scope="module", params=sorted(MODELS))
def nested(request, tmp_path_factory):
    km, base = MODELS[request.param]()
    perturb_keras(km, seed=5)
    x = _x()
    d = tmp_path_factory.mktemp(request.param)
    km.save(d / "m.keras")
    km.save(d / "m.h5")
    km.save_weights(d / "m.weights.h5")
    from keras.src.legacy.saving import legacy_h5_format

    with h5py.File(d / "legacy_weights.h5", "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, km)
    (d / "config.json").write_text(km.to_json())
    y = np.asarray(km(x, training=False))
    inner = INNER[request.param]
    if request.param == "input_tensor":
        a = keras.Model(km.input, km.get_layer(inner).output)(x)
    else:  # run the base alone on the base's input
        pre = x if request.param == "sequential_frozen" else km.get_layer("prep")(x)
        a = keras.Model(base.input, base.get_layer(inner).output)(pre, training=False)
    return {"name": request.param, "x": x, "y": y, "dir": d, "inner": inner,
            "inner_ref": np.asarray(a), "base": base.name, "km": km}


def _check(m, case):
    names = [case["inner"]]
    y, acts = jax.jit(lambda p, x: m.apply(p, x, capture=names))(m.params, case["x"])
    assert rel_err(y, case["y"]) <= TOL
    assert rel_err(acts[case["inner"]], case["inner_ref"]) <= TOL


@pytest.mark.parametrize("fname", ["m.keras", "m.h5"])
def test_nested_model_matches_keras(nested, fname):
    m = load_keras(nested["dir"] / fname)
    _check(m, nested)
    if nested["name"] != "input_tensor":
        base = nested["base"]
        assert base in m.layer_names
        assert m.resolve_layer(nested["inner"]) == f"{base}/{nested['inner']}"
        assert m.layer(f"{base}/{nested['inner']}").output_shape == \
            nested["inner_ref"].shape[1:]
    else:  # built on input_tensor: the base's layers are the model's own
        assert nested["inner"] in m.layer_names


@pytest.mark.parametrize("fname, config_kind", [("m.weights.h5", "json_string"),
                                                ("legacy_weights.h5", "json_path")])
def test_weights_only_with_config(nested, fname, config_kind):
    """Weights-only files + the architecture give exactly the params of the full file (whose
    outputs test_nested_model_matches_keras checks against Keras)."""
    d = nested["dir"]
    ref = load_keras(d / "m.keras")
    config = (d / "config.json").read_text() if config_kind == "json_string" else \
        str(d / "config.json")
    m = load_keras(d / fname, config=config)
    assert m.layer_names == ref.layer_names
    assert jax.tree_util.tree_structure(m.params) == jax.tree_util.tree_structure(ref.params)
    for u, v in zip(jax.tree_util.tree_leaves(m.params), jax.tree_util.tree_leaves(ref.params)):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


def test_partly_frozen_legacy_h5_lists_weights_out_of_layer_order(tmp_path):
    """The situation the name-based assignment exists for actually occurs (and the loads
    above pass with it)."""
    km, base = _functional_partly_frozen()
    km.save(tmp_path / "m.h5")
    with h5py.File(tmp_path / "m.h5") as f:
        names = [n.decode() if isinstance(n, bytes) else n
                 for n in f["model_weights"][base.name].attrs["weight_names"]]
    owners = [n.rsplit("/", 1)[0] for n in names]
    where: dict = {}
    for i, o in enumerate(owners):
        where.setdefault(o, []).append(i)
    split = [o for o, v in where.items() if v[-1] - v[0] + 1 != len(v)]
    assert split, "expected a partly frozen base to interleave some layers' weights"


def test_a_nested_model_called_twice_is_captured_and_perturbed_at_its_first_call(tmp_path):
    """A Siamese model: one nested encoder applied to two inputs. Its inner layers are
    captured and perturbed at the encoder's first call, as a shared layer is (README); the
    capture returned the second call's values and a perturbation shifted both branches."""
    keras.utils.set_random_seed(0)
    enc_in = keras.Input((6, 6, 2))
    enc = keras.Model(enc_in, layers.Flatten()(layers.Conv2D(3, 3, activation="relu",
                                                             name="conv")(enc_in)), name="enc")
    a, b = keras.Input((6, 6, 2), name="a"), keras.Input((6, 6, 2), name="b")
    ya = layers.Activation("linear", name="after_a")(enc(a))
    yb = layers.Activation("linear", name="after_b")(enc(b))
    keras.Model([a, b], layers.Dense(2, name="out")(layers.Concatenate()([ya, yb]))).save(
        tmp_path / "siamese.keras")
    m = load_keras(tmp_path / "siamese.keras")
    rng = np.random.default_rng(1)
    xa, xb = (rng.normal(size=(2, 6, 6, 2)).astype(np.float32) for _ in range(2))
    conv_of = keras.Model(enc_in, enc.get_layer("conv").output)
    _, caps = m.apply(m.params, [xa, xb], capture=["enc/conv", "after_a", "after_b"])
    np.testing.assert_allclose(caps["enc/conv"], conv_of(xa), rtol=1e-5, atol=1e-6)
    # two names of one layer (its path and its own unique name): each asked name a key
    _, both = m.apply(m.params, [xa, xb], capture=["enc/conv", "conv"])
    assert set(both) == {"enc/conv", "conv"}
    np.testing.assert_array_equal(both["conv"], both["enc/conv"])
    with pytest.raises(ValueError, match=r"perturb names layer 'enc/conv' twice \('enc/conv' "
                       r"and 'conv'\); expected one value per layer"):
        m.apply(m.params, [xa, xb], perturb={"enc/conv": 0.0, "conv": 1.0})
    delta = {"enc/conv": 0.5 * np.ones((2, 4, 4, 3), np.float32)}
    _, shifted = m.apply(m.params, [xa, xb], capture=["after_a", "after_b"], perturb=delta)
    np.testing.assert_array_equal(shifted["after_b"], caps["after_b"])  # second call as is
    np.testing.assert_allclose(shifted["after_a"], caps["after_a"] + 0.5, rtol=1e-6)
    _, pre = m.apply(m.params, [xa, xb], capture=["after_a", "after_b"],
                     perturb_pre={"enc/conv": -100.0 * np.ones((2, 4, 4, 3), np.float32)})
    np.testing.assert_array_equal(pre["after_b"], caps["after_b"])
    assert np.all(np.asarray(pre["after_a"]) == 0)  # the first branch's ReLU closed
