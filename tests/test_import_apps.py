"""Differential tests of the importer against real Keras 3 (its NumPy backend unless
``KERAS_BACKEND`` says otherwise: see conftest.py) on every ``keras.applications``
architecture the project supports (``weights=None``, small inputs).

Per architecture (built once per module, kernels from a fixed seed): BatchNormalization
statistics, gammas, betas and biases are perturbed (fresh statistics make BN the identity and
would hide bugs), then BN statistics (on eight inputs, two of them the test's) and biases are
fitted to the data (``calibrate_keras``: drawn without it, they let MobileNet, MobileNetV2
and EfficientNetB0 give both samples nearly the same output), the classifier is rescaled so
its logits are far from uniform, and the model is saved as ``.keras`` and ``.h5``. Checked:
the saved head, the logits head (against a Keras clone of the classifier with a linear
activation), three named intermediate layers and the classifier's input, each within 1e-4 of
its scale (with BN, the deepest ones within 2e-3: ``TOL_DEEP``), and each differing across
the two samples by at least 5% of its scale (else an importer that gave every sample the same
output would pass); the ``.h5`` gives the same params.
"""

import jax
import numpy as np
import pytest

keras = pytest.importorskip("keras")

from import_helpers import calibrate_keras, check_spread, perturb_keras, rel_err  # noqa: E402
from model_import import load_keras  # noqa: E402

TOL = 1e-4
# In an architecture with BatchNormalization, the deepest tensors compared (the classifier's
# input, the last layer with weights before it, the logits and the saved head) come after
# 20-200 BNs fitted to the data, and such a network magnifies float32 rounding with depth.
# Measured (Keras 3.15 on NumPy, three kernel seeds): there the port differs from Keras's
# float32 outputs by up to 6e-4 (ResNet50, InceptionV3), as Keras's own float32 outputs
# differ from its float64 ones (up to 8e-4); at a quarter and half of the depth, by at most
# 2e-5. VGG and ConvNeXt (biases fitted, no BN) stay within 6e-5 throughout and keep TOL
# (in ConvNeXt, a GELU computed with the tanh approximation moves them by 8e-4 to 1.2e-3).
TOL_DEEP = 2e-3
A = keras.applications
SLOW = pytest.mark.slow

# name: (constructor, input side, marks). Minimum sizes: InceptionV3 and InceptionResNetV2
# 75, Xception 71.
ARCHS = {
    "VGG16": (lambda **k: A.VGG16(**k), 32, ()),
    "VGG19": (lambda **k: A.VGG19(**k), 32, ()),
    "ResNet50": (lambda **k: A.ResNet50(**k), 32, ()),
    "ResNet50V2": (lambda **k: A.ResNet50V2(**k), 32, ()),
    "MobileNet": (lambda **k: A.MobileNet(**k), 32, ()),
    "MobileNetV2": (lambda **k: A.MobileNetV2(**k), 32, ()),
    "MobileNetV3Small": (lambda **k: A.MobileNetV3Small(**k), 32, ()),
    "EfficientNetB0": (lambda **k: A.EfficientNetB0(**k), 32, ()),
    "InceptionV3": (lambda **k: A.InceptionV3(**k), 75, (SLOW,)),
    "DenseNet121": (lambda **k: A.DenseNet121(**k), 32, (SLOW,)),
    "Xception": (lambda **k: A.Xception(**k), 71, (SLOW,)),
    "ConvNeXtTiny": (lambda **k: A.ConvNeXtTiny(**k), 32, ()),
    # Keras 3's own CustomScaleLayer merges its residual branches
    "InceptionResNetV2": (lambda **k: A.InceptionResNetV2(**k), 75, (SLOW,)),
}


def _head_chain(model):
    """The classifier: the last layer with weights and the layers after it."""
    i = max(j for j, lay in enumerate(model.layers) if lay.weights)
    return model.layers[i - 1].name, model.layers[i:]


def _head_models(chain, in_shape):
    """Keras copies of the classifier (fresh layers from the configs, the same weights):
    as saved, and with the last layer's activation replaced by linear."""
    out = []
    for linear in (False, True):
        inp = keras.Input(in_shape)
        h = inp
        for j, lay in enumerate(chain):
            cfg = lay.get_config()
            if linear and j == len(chain) - 1:
                cfg["activation"] = "linear"
            new = type(lay).from_config(cfg)
            h = new(h)
            new.set_weights(lay.get_weights())
        out.append(keras.Model(inp, h))
    return out


@pytest.fixture(scope="module", params=[pytest.param(n, marks=ARCHS[n][2]) for n in ARCHS])
def app(request, tmp_path_factory):
    name = request.param
    make, side, _ = ARCHS[name]
    keras.utils.set_random_seed(0)  # the kernels: the checks below hold for these
    km = make(weights=None, input_shape=(side, side, 3), classes=7)
    # the test's two samples and six more: BN statistics are fitted to all eight (fitted to
    # two, they magnify rounding, see calibrate_keras); biases alone (VGG, ConvNeXt) to the
    # two, since Keras's NumPy backend takes 1-6 s more for eight
    xs = np.random.default_rng(4).uniform(0.0, 255.0, (8, side, side, 3)).astype("float32")
    x = xs[:2]
    perturb_keras(km, seed=3)
    bn = any(isinstance(lay, keras.layers.BatchNormalization) for lay in km.layers)
    calibrate_keras(km, xs if bn else x, np.random.default_rng(5))
    penult, chain = _head_chain(km)
    body = [lay for lay in km.layers if lay.weights and lay not in chain]
    inter = [body[len(body) // 4].name, body[len(body) // 2].name, body[-1].name]
    sub = keras.Model(km.input, [km.get_layer(n).output for n in [penult, *inter]])
    feats = [np.asarray(a) for a in sub.predict(x, verbose=0)]
    # Rescale the classifier so that its logits have std ~4 on these inputs.
    first = chain[0]
    w = first.get_weights()
    head, clone = _head_models(chain, feats[0].shape[1:])
    z = np.asarray(clone(feats[0]))
    s = 4.0 / max(float(np.std(z - np.mean(z, axis=-1, keepdims=True))), 1e-9)
    first.set_weights([a * s for a in w])
    head, clone = _head_models(chain, feats[0].shape[1:])
    ref = {"saved": np.asarray(head(feats[0])), "logits": np.asarray(clone(feats[0])),
           **dict(zip([penult, *inter], feats))}
    assert np.std(ref["logits"]) > 1.0  # the head is not near-uniform: the test can fail
    d = tmp_path_factory.mktemp(name)
    km.save(d / f"{name}.keras")
    km.save(d / f"{name}.h5")
    tol = {n: TOL_DEEP for n in ("saved", "logits", penult, inter[2]) if bn}
    return {"name": name, "x": x, "ref": ref, "dir": d, "capture": [penult, *inter],
            "tol": {n: tol.get(n, TOL) for n in ref},
            "keras_layers": [lay.name for lay in km.layers]}


def test_keras_archive_matches_keras(app):
    m = load_keras(app["dir"] / f"{app['name']}.keras")
    lm = m.with_head("logits")
    names = app["capture"]
    fn = jax.jit(lambda p, x: (m.apply(p, x), lm.apply(p, x, capture=names)))
    y, (logits, acts) = fn(m.params, app["x"])
    ref, tol = app["ref"], app["tol"]
    for n, r in ref.items():
        check_spread(r, f"{app['name']} {n}")
    assert rel_err(y, ref["saved"]) <= tol["saved"]
    assert rel_err(logits, ref["logits"]) <= tol["logits"]
    for n in names:
        assert rel_err(acts[n], ref[n]) <= tol[n], n
    assert [n for n in m.layer_names if "/" not in n] == app["keras_layers"]
    assert m.head == "saved" and lm.head == "logits"


def _semantic(cfg):
    """A layer config without what does not change the computation (dtype policies,
    initializers, regularizers, serialization bookkeeping)."""
    if isinstance(cfg, dict):
        return {k: _semantic(v) for k, v in cfg.items()
                if k not in ("dtype", "module", "registered_name", "shared_object_id",
                             "build_config", "trainable")
                and not k.endswith(("_initializer", "_regularizer", "_constraint"))}
    if isinstance(cfg, (list, tuple)):
        return [_semantic(v) for v in cfg]
    return cfg


def _structure(m):
    return [(p, m._spec(p).class_name, _semantic(m._spec(p).config))
            for p in m.graph.layer_paths(include_ops=True)]


def test_legacy_h5_matches_keras(app):
    """The .h5 gives the same graph (layer classes and configs) and bit-identical params as
    the .keras file, so the same function; its saved head is checked once more (smaller
    architectures only: compiling each large graph twice is the slowest part on CPU)."""
    a = load_keras(app["dir"] / f"{app['name']}.keras")
    b = load_keras(app["dir"] / f"{app['name']}.h5")
    assert a.layer_names == b.layer_names
    assert _structure(a) == _structure(b)
    assert [r for r in a.graph.outputs] == [r for r in b.graph.outputs]
    assert jax.tree_util.tree_structure(a.params) == jax.tree_util.tree_structure(b.params)
    for u, v in zip(jax.tree_util.tree_leaves(a.params), jax.tree_util.tree_leaves(b.params)):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))
    if len(b.layer_names) < 120:
        assert rel_err(b(app["x"]), app["ref"]["saved"]) <= app["tol"]["saved"]
