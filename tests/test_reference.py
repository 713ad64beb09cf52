"""Parity with tf-keras-vis 0.8.7 outputs on the MNIST fixture (tests/fixtures/reference)."""

import pathlib

import numpy as np
import pytest

import jaxsal

FIX = pathlib.Path(__file__).parent / "fixtures"
REF = FIX / "reference"


@pytest.fixture(scope="module")
def model(mnist):
    # tf-keras-vis's ReplaceToLinear == jaxsal's logits head
    return mnist.with_head("logits")


def _per_map_rel(ours, ref):
    """max |ours - ref| / max |ref| for every (class, image) map."""
    ours = np.asarray(ours, np.float64)
    axes = tuple(range(2, ref.ndim))
    den = np.abs(ref).max(axis=axes)
    return np.abs(ours - ref).max(axis=axes), den


@pytest.fixture(scope="module")
def sal_ref():
    return np.load(REF / "saliency_linear.npz")


@pytest.fixture(scope="module")
def cam_ref():
    return np.load(REF / "gradcam.npz")


def test_reference_logits(model, sal_ref):
    np.testing.assert_allclose(model(sal_ref["x"]), sal_ref["logits"], atol=1e-4)


def test_saliency_parity(model, sal_ref):
    x, classes = sal_ref["x"], sal_ref["classes"]
    raw = np.moveaxis(np.asarray(jaxsal.saliency(model, x, list(classes))), 1, 0)  # (10,8,H,W)
    err, den = _per_map_rel(raw, sal_ref["raw"])
    assert np.all(err <= 1e-4 * den), f"worst relative error {np.max(err / den):.2e}"
    norm = jaxsal.normalize(raw)
    assert np.abs(np.asarray(norm) - sal_ref["normalized"]).max() <= 1e-3
    signed = jaxsal.saliency(model, x, list(classes), reduce=None)  # (8,10,H,W,1)
    err, den = _per_map_rel(np.moveaxis(np.asarray(signed), 1, 0), sal_ref["signed"])
    assert np.all(err <= 1e-4 * den), f"worst relative error {np.max(err / den):.2e}"


def test_gradcam_parity(model, cam_ref):
    x, classes = cam_ref["x"], list(cam_ref["classes"])
    raw = np.moveaxis(np.asarray(jaxsal.gradcam(model, x, classes, layer="conv2d_2")), 1, 0)
    ref = cam_ref["raw"]
    zero = np.abs(ref).max(axis=(2, 3)) == 0
    assert zero.sum() == 4  # the README's four all-zero maps
    assert np.abs(raw[zero]).max() <= 1e-6
    err, den = _per_map_rel(raw[~zero][:, None], ref[~zero][:, None])
    assert np.all(err <= 1e-4 * den), f"worst relative error {np.max(err / den):.2e}"
    # tf-keras-vis order: low-res -> ReLU -> upsample -> normalize (over each map)
    norm = np.asarray(jaxsal.normalize(raw))
    assert np.abs(norm - cam_ref["normalized"]).max() <= 1e-3
    low = np.moveaxis(np.asarray(jaxsal.gradcam(model, x, classes, layer="conv2d_2",
                                                upsample=False)), 1, 0)
    assert low.shape == cam_ref["lowres"].shape
    lz = np.abs(cam_ref["lowres"]).max(axis=(2, 3)) == 0
    assert np.abs(low[lz]).max(initial=0) <= 1e-6
    err, den = _per_map_rel(low[~lz][:, None], cam_ref["lowres"][~lz][:, None])
    assert np.all(err <= 1e-4 * den), f"worst relative error {np.max(err / den):.2e}"


def test_default_layer_is_the_reference_layer(model):
    assert jaxsal.default_cam_layer(model) == "conv2d_2"
