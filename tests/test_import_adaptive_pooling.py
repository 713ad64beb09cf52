"""Keras 3's adaptive pooling layers (AdaptiveAveragePooling1D/2D/3D, AdaptiveMaxPooling1D/2D/3D)
against real Keras 3 (NumPy backend unless ``KERAS_BACKEND`` says otherwise: see conftest.py),
saved as ``.keras``, legacy ``.h5`` and ``.weights.h5``.

One Functional model holds every case, layer by layer: sizes that divide the input (the
reshape path, all axes or some), sizes that do not (overlapping bins of two widths), an output
larger than the input (repeated elements), ``output_size`` as an int and as a tuple, both
data formats, ranks 1, 2 and 3.
"""

import numpy as np
import pytest

keras = pytest.importorskip("keras")
from keras import layers  # noqa: E402

from import_helpers import (keras_jax_backend_fixes, keras_outputs, layer_errors,  # noqa: E402
                            load_saved, perturb_keras, rel_err, save_all_formats)
from model_import._layers.pooling import adaptive_bins  # noqa: E402

TOL = 1e-5
CF = "channels_first"

# (layer name, class, output_size, data_format, input)
CASES = [
    ("a1_avg_uneven", "AdaptiveAveragePooling1D", 5, None, "seq"),       # 13 -> 5
    ("a1_max_uneven", "AdaptiveMaxPooling1D", (4,), None, "seq"),        # 13 -> 4
    ("a1_avg_even", "AdaptiveAveragePooling1D", 4, None, "seq12"),       # 12 -> 4
    ("a1_max_up_cf", "AdaptiveMaxPooling1D", 5, CF, "seq12"),            # 3 -> 5 (channels 12)
    ("a2_avg_mixed", "AdaptiveAveragePooling2D", (3, 4), None, "img"),   # 11 -> 3, 12 -> 4
    ("a2_max_mixed", "AdaptiveMaxPooling2D", (4, 5), None, "img"),       # 11 -> 4, 12 -> 5
    ("a2_avg_even", "AdaptiveAveragePooling2D", (4, 3), None, "img8"),   # 8 -> 4, 12 -> 3
    ("a2_max_even", "AdaptiveMaxPooling2D", 4, None, "img8"),            # 8 -> 4, 12 -> 4
    ("a2_avg_cf_up", "AdaptiveAveragePooling2D", (5, 4), CF, "img"),     # 12 -> 5, 3 -> 4
    ("a2_max_cf", "AdaptiveMaxPooling2D", (3, 2), CF, "img8"),           # 12 -> 3, 3 -> 2
    ("a3_avg", "AdaptiveAveragePooling3D", (2, 4, 3), None, "vol"),      # 5, 6, 7
    ("a3_max", "AdaptiveMaxPooling3D", 3, None, "vol"),
    ("a3_avg_cf", "AdaptiveAveragePooling3D", 2, CF, "vol"),             # spatial 6, 7, 2
    ("a3_max_cf_even", "AdaptiveMaxPooling3D", (3, 7, 1), CF, "vol"),
]
NAMES = [c[0] for c in CASES]
SHAPES = {"seq": (13, 3), "seq12": (12, 3), "img": (11, 12, 3), "img8": (8, 12, 3),
          "vol": (5, 6, 7, 2)}


def _model():
    ins = {k: keras.Input(s, name=k) for k, s in SHAPES.items()}
    # a Dense projection first, so that the pooled values depend on weights from the file
    feats = {k: layers.Dense(3, name=f"proj_{k}")(v) for k, v in ins.items()}
    outs = []
    for name, cls, size, fmt, src in CASES:
        kw = {"data_format": fmt} if fmt else {}
        y = getattr(layers, cls)(size, name=name, **kw)(feats[src])
        outs.append(layers.Flatten(name=f"flat_{name}")(y))
    out = layers.Dense(4, name="head")(layers.Concatenate(name="cat")(outs))
    return keras.Model(list(ins.values()), out, name="adaptive_zoo")


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    km = _model()
    perturb_keras(km)
    rng = np.random.default_rng(0)
    x = [rng.normal(0.0, 1.0, (2, *s)).astype("float32") for s in SHAPES.values()]
    x[1][0, 2:5] = 0.5  # ties inside max-pooling windows
    with keras_jax_backend_fixes():  # its bins under KERAS_BACKEND=jax (NaN and wrong values)
        ref = keras_outputs(km, NAMES, x)
        y = np.asarray(km(x, training=False))
    return km, x, ref, y, save_all_formats(km, tmp_path_factory.mktemp("adaptive"), "adaptive")


@pytest.mark.parametrize("ext", [".keras", ".h5", ".weights.h5"])
def test_adaptive_pooling_matches_keras(zoo, ext):
    km, x, ref, ref_y, paths = zoo
    m = load_saved(paths, ext, km)
    y, acts = m.apply(m.params, x, capture=NAMES)
    errs = layer_errors(acts, ref)
    assert max(errs.values()) <= TOL, {k: v for k, v in errs.items() if v > TOL}
    assert rel_err(y, ref_y) <= TOL
    assert np.allclose(np.asarray(m(x)), np.asarray(y), rtol=1e-5, atol=1e-6)  # jit == eager


def test_bins_are_pytorch_bins():
    """Bin j of an axis of n split into o: [floor(j n / o), ceil((j + 1) n / o))."""
    s, e = adaptive_bins(5, 3)
    assert s.tolist() == [0, 1, 3] and e.tolist() == [2, 4, 5]
    s, e = adaptive_bins(3, 5)  # more bins than elements: each element repeated
    assert s.tolist() == [0, 0, 1, 1, 2] and e.tolist() == [1, 2, 2, 3, 3]
