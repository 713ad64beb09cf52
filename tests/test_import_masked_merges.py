"""Merges of masked sequences by the Keras 3 version that wrote the file: ``Maximum``,
``Minimum`` and ``Multiply`` see their inputs' masks from Keras 3.14 on; Keras 3.4-3.13 (on
the NumPy backend) compute them as plain merges. The files were written once by
tests/fixtures/masked_merges/make_masked_merges.py with each Keras version.
"""

import pathlib

import numpy as np
import pytest

from import_helpers import rel_err
from model_import import load_keras

D = pathlib.Path(__file__).parent / "fixtures" / "masked_merges"
VERSIONS = ["3.4.1", "3.9.2", "3.13.2", "3.14.0"]
MERGES = (0, 1, 4, 5)  # Multiply x2, Maximum, Minimum
RNNS = (2, 3)  # unrolled Bidirectional LSTM, unrolled go_backwards GRU on a masked input


@pytest.mark.parametrize("version", VERSIONS)
def test_masked_merges_follow_the_files_keras(version):
    ref = np.load(D / f"mk_{version}.npz")
    m = load_keras(D / f"mk_{version}.keras")
    assert m.keras_version == version
    got = m(ref["x"])
    for i in MERGES:
        assert rel_err(got[i], ref[f"y{i}"]) <= 1e-5, (version, i)
    if version != "3.13.2":  # Keras 3.10-3.13's unrolled masked RNNs: README, limitations
        for i in RNNS:
            assert rel_err(got[i], ref[f"y{i}"]) <= 1e-5, (version, i)
