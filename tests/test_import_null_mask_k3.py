"""A recorded ``"mask": null`` in files of Keras 3.0-3.9 is the mask the tensor had when the
model was built, not the run's: a nested model's inner layers and the layer after a nested
Sequential record ``null`` but get the mask at run time (Keras replaces a ``None`` mask by
the tensor's own). Files written once by Keras 3.4.1 and 3.9.2 on JAX
(tests/fixtures/null_mask_k3/make_null_mask_fixtures.py); the outputs are Keras's eager ones.
"""

import pathlib

import numpy as np
import pytest

from import_helpers import rel_err
from model_import import load_keras

D = pathlib.Path(__file__).parent / "fixtures" / "null_mask_k3"


@pytest.mark.parametrize("version", ["3.4.1", "3.9.2"])
def test_null_masks_follow_the_run(version):
    ref = np.load(D / f"nm_{version}.npz")
    model = load_keras(D / f"nm_{version}.keras")
    assert model.keras_version == version
    got = model([ref["ids"], ref["x"]])
    assert len(got) == 7
    errs = [rel_err(g, ref[f"y{i}"]) for i, g in enumerate(got)]
    assert max(errs) <= 1e-5, errs
