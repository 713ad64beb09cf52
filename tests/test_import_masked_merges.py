"""Merges of masked sequences: ``Maximum``, ``Minimum`` and ``Multiply`` see their inputs'
masks in files of Keras 3.4 and later (as Keras computes them on JAX and TensorFlow; the
NumPy backend of Keras 3.4-3.13 loses the masks and is not followed), and unrolled RNNs on
the same masked input. The files were written once, on the JAX backend, by
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
def test_masked_merges_and_unrolled_rnns(version):
    ref = np.load(D / f"mk_{version}.npz")
    m = load_keras(D / f"mk_{version}.keras")
    assert m.keras_version == version
    got = m(ref["x"])
    for i in MERGES:
        assert rel_err(got[i], ref[f"y{i}"]) <= 1e-5, (version, i)
    for i in RNNS:
        assert rel_err(got[i], ref[f"y{i}"]) <= 1e-5, (version, i)
