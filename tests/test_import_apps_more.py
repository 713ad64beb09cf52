"""Regression tests from the differential sweep over the remaining ``keras.applications``
architectures (Keras 3.15 and tf_keras 2.21; see README "Verification").

Legacy ``.h5`` files keep each layer's ``weight_names`` (and the file's ``layer_names``) in
HDF5 attributes, which live in a 64 KiB object header; Keras's legacy writers split a longer
list into chunks ``weight_names0``, ``weight_names1``, ... A nested model holds the names
of all its weights in one such list, so a large base used as a layer (NASNetMobile in a
transfer model: three chunks) was read as having no weights.
"""

import numpy as np
import pytest

keras = pytest.importorskip("keras")
h5py = pytest.importorskip("h5py")

from import_helpers import calibrate_keras, check_spread, perturb_keras, rel_err  # noqa: E402
from model_import import load_keras  # noqa: E402

TOL = 1e-4


def _chunked(path, group: str, attr: str) -> bool:
    with h5py.File(path, "r") as f:
        attrs = f["model_weights"][group].attrs
        return attr not in attrs and f"{attr}0" in attrs and f"{attr}1" in attrs


def test_nested_model_with_chunked_weight_names(tmp_path):
    # 70 BatchNormalization layers with 240-character names: 280 weight names of ~250
    # bytes each, over the 64 KiB limit. Each layer's statistics differ, and per channel the
    # composition of their affine maps depends on the order, so weights assigned to the
    # wrong layer change the output.
    inner = keras.Sequential(
        [keras.Input((5,))]
        + [keras.layers.BatchNormalization(name=f"bn_{i:03d}_" + "n" * 240) for i in range(70)],
        name="inner")
    inp = keras.Input((5,))
    out = keras.layers.Dense(3, name="out")(inner(inp))
    model = keras.Model(inp, out)
    perturb_keras(model, seed=1)
    x = np.random.default_rng(0).normal(size=(4, 5)).astype("float32")
    ref = np.asarray(model.predict(x, verbose=0))
    check_spread(ref, "nested BN chain")
    path = tmp_path / "nested_long.h5"
    model.save(path)
    assert _chunked(path, "inner", "weight_names")  # the file exercises the split lists

    m = load_keras(path)
    assert rel_err(m(x), ref) <= TOL
    bn = m.layer("inner/bn_069_" + "n" * 240).params
    np.testing.assert_array_equal(np.asarray(bn["moving_mean"]),
                                  np.asarray(inner.layers[-1].moving_mean.numpy()))


@pytest.mark.slow
def test_transfer_nasnet_mobile_h5(tmp_path):
    """The case the sweep found: a frozen NASNetMobile base in a Functional model, .h5."""
    keras.utils.set_random_seed(0)  # the kernels: the checks below hold for these
    base = keras.applications.NASNetMobile(weights=None, include_top=False, pooling="avg",
                                           input_shape=(32, 32, 3))
    base.trainable = False
    inp = keras.Input((32, 32, 3))
    out = keras.layers.Dense(4, name="cls")(base(inp, training=False))
    model = keras.Model(inp, out)
    perturb_keras(model, seed=2)
    # BN statistics and biases fitted to eight inputs, two of them compared: with statistics
    # drawn without the data, the two samples' outputs differed by 4% of their scale
    xs = np.random.default_rng(1).uniform(0.0, 255.0, (8, 32, 32, 3)).astype("float32")
    x = xs[:2]
    calibrate_keras(model, xs, np.random.default_rng(3))
    ref = np.asarray(model.predict(x, verbose=0))
    check_spread(ref, "NASNetMobile transfer model")
    path = tmp_path / "nasnet_transfer.h5"
    model.save(path)
    assert _chunked(path, base.name, "weight_names")
    assert rel_err(load_keras(path)(x), ref) <= TOL
