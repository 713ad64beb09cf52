"""A layer called with an explicit ``mask=None`` on a masked sequence
(tests/fixtures/explicit_mask, written once by make_explicit_mask_fixtures.py).

What the recorded ``"mask": null`` means depends on the Keras that wrote the config:

- tf.keras 2 (2.11 here): the user's ``mask=None``; the layer got no mask, and its output
  mask was computed from none (``gap_after`` averages every step).
- standalone Keras 2.3.1: the layer got no mask, but its output mask was still computed
  from the tensor's (``gap_after`` averages the unmasked steps).
- Keras 3.9: the kwargs after Keras filled in the built tensor's mask: a ``mask=None`` on a
  masked tensor is recorded as that mask; a ``null`` says the built tensor had none (here
  after a custom layer that drops the mask), which the port trusts only where it cannot know
  the mask (see tests/test_import_null_mask_k3.py).
- Keras 3.14: the user's ``mask=None``, which Keras replaced by the tensor's mask.
"""

import gzip
import pathlib

import numpy as np
import pytest

from model_import import KerasImportError, LayerImpl, load_keras
from model_import._layers.masking import null_mask_rule

EM = pathlib.Path(__file__).parent / "fixtures" / "explicit_mask"
TOL = 1e-4


def _scale(config, ctx):  # the fixtures' custom layer, `2 * x`; no mask rule: unknown
    return LayerImpl(call=lambda params, x, *, rt: 2.0 * x)


def _scale_drops_mask(config, ctx):
    return LayerImpl(call=lambda params, x, *, rt: 2.0 * x, compute_mask="drop")


def _load(tag, ext, tmp_path, converter=_scale):
    path = tmp_path / f"explicit_mask_{tag}{ext}"
    path.write_bytes(gzip.decompress((EM / f"explicit_mask_{tag}{ext}.gz").read_bytes()))
    return load_keras(path, custom_layers={"Scale": converter}), np.load(
        EM / f"explicit_mask_{tag}.expected.npz")


def _check(model, exp, names):
    ys = model(exp["x"])
    for name, y in zip(names, ys):
        err = float(np.max(np.abs(np.asarray(y) - exp[name])))
        assert err < TOL, (name, err)


K2_NAMES = ("gap_none", "gap_after", "gap_masked")
K3_NAMES = K2_NAMES + ("gap_custom",)


@pytest.mark.parametrize("tag", ["tfk211", "keras231"])
def test_keras2_mask_none(tag, tmp_path):
    model, exp = _load(tag, ".h5", tmp_path)
    _check(model, exp, K2_NAMES)
    # the three outputs differ: the mask=None really changed what Keras computed
    assert not np.allclose(exp["gap_none"], exp["gap_masked"], atol=1e-3)


def test_same_weights_different_meanings():
    # tf.keras 2.11 and Keras 3.9 wrote the same weights (the masked average agrees), but
    # mask=None removed the mask in one and was replaced by it in the other
    tf, k39 = (np.load(EM / f"explicit_mask_{t}.expected.npz") for t in ("tfk211", "k39"))
    np.testing.assert_allclose(tf["gap_masked"], k39["gap_masked"], atol=1e-6)
    assert not np.allclose(tf["gap_none"], k39["gap_none"], atol=1e-3)
    assert not np.allclose(tf["gap_after"], k39["gap_after"], atol=1e-3)


def test_keras39_null_is_no_mask(tmp_path):
    # gap_custom's recorded null (the custom layer dropped the mask in Keras) is honoured;
    # without that, the converter's unknown mask rule would make the import refuse
    model, exp = _load("k39", ".keras", tmp_path)
    _check(model, exp, K3_NAMES)


def test_keras314_mask_none_is_replaced(tmp_path):
    # Keras 3.14 applies the tensor's mask despite mask=None: gap_none == gap_masked
    model, exp = _load("k314", ".keras", tmp_path, _scale_drops_mask)
    _check(model, exp, K3_NAMES)
    np.testing.assert_allclose(exp["gap_none"], exp["gap_masked"], atol=1e-6)
    # a recorded null is not taken to mean "no mask" there: the unknown rule still refuses
    with pytest.raises(KerasImportError, match="custom converter"):
        _load("k314", ".keras", tmp_path)


@pytest.mark.parametrize("version, rule", [
    ("2.3.1", "call"), ("2.2.4", "call"), ("2", "call"), ("2.2.4-tf", "none"),
    ("2.4.0", "none"), ("2.13", "none"), ("2.21.0", "none"), ("3.0.5", "if_unknown"),
    ("3.9.2", "if_unknown"), ("3.10.0", "implicit"), ("3.14.1", "implicit"), ("3", "implicit")])
def test_null_mask_rule(version, rule):
    assert null_mask_rule(version) == rule
