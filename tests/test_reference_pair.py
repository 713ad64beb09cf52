"""Parity with Google PAIR saliency 0.2.1's Blur IG and Guided IG on an RGB classifier of
non-square images (tests/fixtures/reference_models/rgb.keras), PAIR's gradients computed by
Keras on the torch backend: tests/fixtures/reference_pair/make_pair_references.py, which says
what each array is. Raw attributions within ``1e-5 * max|ref|`` per map (PAIR's float32-input
Blur IG, whose blurs are rounded to float32 before they are differenced, within 2e-4). And with
its XRAI: segment masks and region selection from given attributions
(tests/fixtures/reference_pair/make_xrai_references.py).
"""

import pathlib

import numpy as np
import pytest

import jaxsal
from reference_helpers import assert_per_map, by_class

F = pathlib.Path(__file__).parent / "fixtures"
CLASSES = [0, 2, 4]


@pytest.fixture(scope="module")
def ref():
    return np.load(F / "reference_pair" / "pair_rgb.npz")


@pytest.fixture(scope="module")
def model(rgb_logits):
    return rgb_logits


def test_logits(model, ref):
    np.testing.assert_allclose(model(ref["x"]), ref["logits"], atol=5e-5)


@pytest.mark.parametrize("key, options, rtol", [
    ("blur_ig", dict(steps=20), 1e-5),
    ("blur_ig_sqrt", dict(steps=16, max_sigma=10, grad_step=0.05, sqrt=True), 1e-5),
    ("blur_ig_f32x", dict(steps=20), 2e-4),
])
def test_blur_integrated_gradients(model, ref, key, options, rtol):
    ours = jaxsal.blur_integrated_gradients(model, ref["x"], CLASSES, reduce=None, **options)
    assert_per_map(by_class(ours), ref[key], rtol=rtol)


@pytest.mark.parametrize("key, options", [
    ("guided_ig", dict(steps=50)),
    ("guided_ig_unbounded", dict(steps=40, fraction=0.1, max_dist=1.0)),
    ("guided_ig_baseline", dict(steps=30, fraction=0.5, max_dist=0.1, baseline="baseline")),
])
def test_guided_integrated_gradients(model, ref, key, options):
    if "baseline" in options:
        options = {**options, "baseline": ref[options["baseline"]]}
    ours = jaxsal.guided_integrated_gradients(model, ref["x"], CLASSES, reduce=None, **options)
    _assert_guided_paths(by_class(ours), ref[key])


def _assert_guided_paths(ours, ref):
    """Guided IG's path is discontinuous: which features move at a step depends on the order
    of their |gradient|s, and where two of them lie closer than float32 rounding of the
    gradient, the path may take the other branch. (Seen with jax 0.12.1: one path of
    "guided_ig", class 4 of image 3, where two |gradient|s at the selection threshold are
    2.4e-5 apart, relative, at step 16, and that jaxlib's program rounds the gradients
    ~2e-7 of their largest value differently; 564 of its 1188 values then moved by up to
    1.7e-2 of the largest, r = 0.99997 with PAIR's, the sum 8e-4 apart.) So each map equals
    PAIR's within 1e-5 of its largest value (the same path), or -- one map per reference at
    most -- took another branch and still agrees as a whole: Pearson r >= 0.999 and its sum
    (the path's completeness) within 2e-3 of PAIR's."""
    other = []
    for t in range(ref.shape[0]):
        for i in range(ref.shape[1]):
            a, b = ours[t, i], ref[t, i]
            if np.max(np.abs(a - b)) <= 1e-5 * max(np.max(np.abs(b)), 0.1):
                continue
            r = np.corrcoef(a.ravel(), b.ravel())[0, 1]
            assert r >= 0.999 and abs(a.sum() - b.sum()) <= 2e-3 * abs(b.sum()), (t, i, r)
            other.append((t, i))
    assert len(other) <= 1, f"maps on another path than PAIR's: {other}"


# ---------------------------------------------------------------------- XRAI
@pytest.fixture(scope="module")
def xrai_ref():
    return np.load(F / "reference_pair" / "pair_xrai.npz")


def test_segment_masks_are_pair_s(xrai_ref):
    """PAIR's masks (every Felzenszwalb label of six scales, dilated by disk(5)) from the
    label images they were made of, in its order; PAIR's also lists labels the downscaling
    lost, as empty masks (XRAI drops them), which segment_masks leaves out."""
    masks = np.asarray(jaxsal.segment_masks(xrai_ref["labels"], dilation=5))
    for i, count in enumerate(xrai_ref["counts"]):
        ref = xrai_ref["masks"][i, :count]
        ref = ref[ref.any(axis=(1, 2))]
        assert not xrai_ref["masks"][i, count:].any() and len(ref) < count  # some were empty
        np.testing.assert_array_equal(masks[i, :len(ref)], ref)
        assert not masks[i, len(ref):].any()  # padding to the largest count


@pytest.mark.parametrize("key, options", [
    ("full", {}), ("area03", dict(area_threshold=0.3)), ("fast", dict(algorithm="fast")),
    ("diff10", dict(min_pixel_diff=10))])
def test_xrai_regions_equal_pair_s(xrai_ref, key, options):
    """PAIR's XRAI maps from given attributions (maxed over channels) and regions."""
    maps = jaxsal.reduce_channels(xrai_ref["attr"], "max")
    ours = np.asarray(jaxsal.xrai_regions(maps, xrai_ref["masks"], **options))
    ref = xrai_ref[key]
    assert len(np.unique(ref[0])) >= 4  # several regions were ranked
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-6 * np.abs(ref).max())
