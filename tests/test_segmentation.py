"""Felzenszwalb segmentation: the partitions of scikit-image's ``felzenszwalb`` on MNIST
digits and synthetic RGB images (several scales, sigma 0 and 0.8, several min_sizes), PAIR
saliency's XRAI label images of 224x224 images, analytic cases, and clear refusals.
References: tests/fixtures/felzenszwalb/make_felzenszwalb_reference.py."""

import hashlib
import importlib.util
import pathlib

import jax
import numpy as np
import pytest

import jaxsal

REF = pathlib.Path(__file__).parent / "fixtures" / "felzenszwalb" / "felzenszwalb_reference.npz"


@pytest.fixture(scope="module")
def ref():
    return dict(np.load(REF))


def _partition_mismatch(want: np.ndarray, got: np.ndarray) -> int:
    """How many pixels are grouped differently: those whose (reference segment, our
    segment) pair is not the one their reference segment mostly maps to, or whose segment
    of ours is shared by another reference segment. 0 iff the partitions are equal."""
    w, g = want.ravel().astype(np.int64), got.ravel().astype(np.int64)
    pairs, inverse, counts = np.unique(np.stack([w, g]), axis=1, return_inverse=True,
                                       return_counts=True)
    best = {}
    for (a, b), c in zip(pairs.T, counts):  # each reference segment's main segment of ours
        if c > best.get(a, (0, None))[0]:
            best[a] = (c, b)
    owner = {}
    for a, (c, b) in best.items():  # a segment of ours that two reference segments claim
        owner.setdefault(b, []).append((c, a))
    bad = 0
    for (a, b), c in zip(pairs.T, counts):
        if best[a][1] != b or max(owner[b])[1] != a:
            bad += c
    return int(bad)


def test_the_partition_measure_counts_what_differs():
    a = np.array([[0, 0, 1], [0, 1, 1]])
    assert _partition_mismatch(a, a + 5) == 0  # renumbered: equal
    assert _partition_mismatch(a, np.array([[0, 0, 1], [0, 0, 1]])) == 1  # one pixel moved
    assert _partition_mismatch(a, np.zeros_like(a)) == 3  # two segments merged
    assert _partition_mismatch(np.zeros_like(a), a) == 3  # one split


def _same_graph_and_order(img: np.ndarray, sigma: float, weights_sha: str, order_sha: str):
    """Our edge weights of ``img`` are the reference machine's, bit for bit; skip where NumPy
    here sorts equal weights in another order than there (scikit-image, which sorts them
    with the same ``np.argsort``, would then segment differently here too)."""
    from jaxsal._src.segmentation import _graph, _smooth

    weights = _graph(_smooth(img, sigma))[2]
    assert _sha(weights) == weights_sha  # the smoothing and weights: scipy's and skimage's
    if _sha(np.argsort(weights).astype(np.int64)) != order_sha:
        pytest.skip("NumPy here orders edges of equal weight otherwise than where the "
                    "references were made; scikit-image would segment differently here too")


def _sha(a: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(a).tobytes()).hexdigest()


@pytest.mark.parametrize("image", range(6))
@pytest.mark.parametrize("sigma", [0.0, 0.8])
def test_the_partitions_and_labels_are_scikit_image_s(ref, image, sigma):
    """MNIST digits (0-3) and RGB images (4, 5) at each (scale, min_size): the same pixels
    grouped together, and the same numbering (by each segment's first pixel)."""
    c = ref["channels"][image]
    x = ref["images"][image, ..., :c].astype(np.float64) / 255.0
    _same_graph_and_order(x, sigma, *(ref[k][image, int(sigma > 0)]
                                      for k in ("weights_sha", "order_sha")))
    failures = []
    for k, (scale, sig, min_size) in enumerate(ref["cases"]):
        if sig != sigma:
            continue
        got = jaxsal.felzenszwalb(x[None], scale=scale, sigma=sigma, min_size=int(min_size))[0]
        want = ref["labels"][image, k]
        bad = _partition_mismatch(want, got)
        if bad or not np.array_equal(got, want):
            failures.append(f"scale {scale} min_size {min_size}: {bad} of {want.size} pixels "
                            f"grouped differently, {want.max() + 1} segments against "
                            f"{got.max() + 1}")
    assert not failures, "\n".join(failures)


def test_the_references_hold_fine_and_coarse_segmentations(ref):
    counts = [len(np.unique(lab)) for lab in ref["labels"].reshape(-1, 40, 48)]
    assert min(counts) <= 3 and max(counts) > 1000


def test_several_scales_in_one_call_equal_one_call_each(ref):
    x = ref["images"][4:6].astype(np.float32) / 255.0
    both = jaxsal.felzenszwalb(x, scale=[30, 300], sigma=0.8, min_size=10)
    assert both.shape == (2, 2, 40, 48) and both.dtype == np.int32
    for j, s in enumerate((30, 300)):
        np.testing.assert_array_equal(both[:, j], jaxsal.felzenszwalb(x, scale=s,
                                                                      min_size=10))


@pytest.mark.parametrize("image", range(2))
def test_xrai_labels_are_pair_s_at_224(ref, image):
    """PAIR's own label images (its normalization to [-1, 1], six scales, min_size 150) of
    224x224 images, grey and one digit per channel: equal, labels included."""
    x = ref["pair_images"][image:image + 1].astype(np.float64) / 255.0
    _same_graph_and_order(x[0] * 2 - 1, 0.8, ref["pair_weights_sha"][image],
                          ref["pair_order_sha"][image])
    got = jaxsal.xrai_labels(x)
    assert got.shape == (1, 6, 224, 224)
    for s in range(6):
        want = ref["pair_labels"][image, s]
        bad = _partition_mismatch(want, got[0, s])
        assert not bad, f"scale {s}: {bad} of {want.size} pixels grouped differently"
        np.testing.assert_array_equal(got[0, s], want)


def test_a_constant_image_is_one_segment():
    x = np.full((2, 20, 30, 3), 0.25)
    x[1] = -7.0
    got = jaxsal.felzenszwalb(x, scale=[1, 100], sigma=0.8, min_size=0)
    assert got.shape == (2, 2, 20, 30) and not got.any()
    assert not jaxsal.xrai_labels(x).any()  # (PAIR divides by zero there: NaN)


def test_two_flat_halves_are_two_segments_at_a_small_scale():
    """A black and a white half: the edge across (weight 1) exceeds every threshold at
    scale 1 (1/255 per pixel plus no internal difference), so two segments; at a scale
    above 255 * (half's pixels) the halves join."""
    x = np.zeros((1, 16, 20, 1))
    x[0, :, 10:] = 1.0
    got = jaxsal.felzenszwalb(x, scale=1, sigma=0, min_size=0)[0]
    np.testing.assert_array_equal(got, x[0, ..., 0].astype(int))
    assert not jaxsal.felzenszwalb(x, scale=255 * 160 * 1.01, sigma=0, min_size=0).any()
    rgb = np.zeros((1, 16, 20, 3))
    rgb[0, :, 10:] = [1.0, 0.0, 0.5]  # colours apart by their Euclidean distance
    np.testing.assert_array_equal(jaxsal.felzenszwalb(rgb, scale=1, sigma=0.8)[0], got)


@pytest.mark.parametrize("img, scale", [
    (np.zeros((1, 4, 1)), 1e-44),  # thresholds 3.9e-47: float32 0, so nothing joins
    (np.array([0.0, 1e39, 1e39, 3e39]).reshape(1, 4, 1), 255e39)])  # beyond it: inf, all join
def test_thresholds_outside_float32_s_normal_range_are_rounded_as_scikit_image_s(img, scale):
    """scikit-image compares a weight with its threshold rounded to float32; the shortcut
    that skipped the rounding unless the weight was within 2.5e-7 of it (a normal float32 is
    that close) took thresholds below float32's smallest (0 there) or above its largest (inf)
    as they were: other partitions."""
    if importlib.util.find_spec("skimage") is None:
        pytest.skip("scikit-image not installed")
    from skimage.segmentation import felzenszwalb as skf
    want = skf(img, scale=scale, sigma=0, min_size=0, channel_axis=-1)
    got = jaxsal.felzenszwalb(img[None], scale=scale, sigma=0, min_size=0)[0]
    np.testing.assert_array_equal(got, want)


def test_min_size_is_respected():
    """No segment smaller than min_size remains (an image of more than min_size pixels),
    and the segments smaller than it at min_size 0 are the ones that change."""
    x = np.random.default_rng(0).uniform(size=(2, 30, 30, 3))
    for min_size in (5, 40, 200):
        got = jaxsal.felzenszwalb(x, scale=20, sigma=0.5, min_size=min_size)
        for lab in got:
            sizes = np.bincount(lab.ravel())
            assert sizes.min() >= min_size and (sizes > 0).all(), (min_size, sizes.min())
    free = jaxsal.felzenszwalb(x, scale=20, sigma=0.5, min_size=0)
    assert np.bincount(free[0].ravel()).min() < 5  # (so the pass had work to do)


def test_single_pixels_and_lines():
    """A 1x1 image (no edges) is one segment, whatever min_size; at scale 0 nothing joins
    (no weight is below a zero threshold), so every pixel of a line is its own segment, and
    a large sigma (a kernel wider than the image: mirrored again) still segments."""
    one = np.full((1, 1, 1, 3), 0.5)
    for min_size in (0, 2, 50):
        assert jaxsal.felzenszwalb(one, scale=100, min_size=min_size).tolist() == [[[0]]]
    line = np.random.default_rng(4).uniform(size=(2, 1, 7, 1))
    np.testing.assert_array_equal(jaxsal.felzenszwalb(line, scale=0, min_size=0),
                                  np.broadcast_to(np.arange(7), (2, 1, 7)))
    assert jaxsal.felzenszwalb(line.transpose(0, 2, 1, 3), scale=1e6, sigma=5.0).max() == 0


def test_labels_are_numbered_by_first_pixel():
    x = np.random.default_rng(1).uniform(size=(1, 12, 14, 1))
    lab = jaxsal.felzenszwalb(x, scale=5, sigma=0, min_size=3)[0].ravel()
    firsts = [np.flatnonzero(lab == v)[0] for v in range(lab.max() + 1)]
    assert firsts == sorted(firsts) and lab[0] == 0


def test_xrai_labels_take_integer_images_as_pair_does():
    """PAIR scales any image to [-1, 1], integer ones too (felzenszwalb refuses them)."""
    x = np.random.default_rng(3).integers(0, 256, size=(1, 30, 26, 3)).astype(np.uint8)
    np.testing.assert_array_equal(jaxsal.xrai_labels(x, scales=[50, 300]),
                                  jaxsal.xrai_labels(x.astype(np.float64), scales=[50, 300]))
    with pytest.raises(ValueError, match="floating-point"):
        jaxsal.felzenszwalb(x)


def test_xrai_segments_are_the_labels_masks():
    """By default, the masks of PAIR's own labels (tests/fixtures/reference_pair/pair_xrai.npz,
    one 40x48 image: six scales at 224x224); with every option set otherwise (not resized,
    so cheap), the masks of xrai_labels' labels at those options, for a batch of two."""
    ref = np.load(pathlib.Path(__file__).parent / "fixtures" / "reference_pair" /
                  "pair_xrai.npz")
    np.testing.assert_array_equal(jaxsal.xrai_segments(ref["images"][:1]),
                                  jaxsal.segment_masks(ref["labels"][:1]))
    x = np.random.default_rng(2).uniform(size=(2, 30, 26, 3)).astype(np.float32)
    # each option, set back to its default alone, changes 18-95% of these labels
    opts = dict(scales=[10, 300], sigma=0.5, min_size=10, size=None, value_range=(0, 1))
    labels = jaxsal.xrai_labels(x, **opts)
    assert labels.shape == (2, 2, 30, 26)
    np.testing.assert_array_equal(jaxsal.xrai_segments(x, dilation=0, **opts),
                                  jaxsal.segment_masks(labels, dilation=0))


def test_xrai_labels_resize_other_sizes_to_224_and_back():
    """A 28x28 image is segmented at 224x224 (resized by _resize_like_skimage) and its labels
    taken back by nearest neighbour: each 8x8 block of the 224x224 labels' pixel (centre at
    8i + 4) gives pixel i. At size=None no resize: felzenszwalb itself."""
    from jaxsal._src.segmentation import _resize_like_skimage

    d = np.load(pathlib.Path(__file__).parent / "fixtures" / "mnist_5k.npz")
    x = (d["x"][:2].astype(np.float32) / 255.0)[..., None]
    got = jaxsal.xrai_labels(x, scales=[100])
    big = np.stack([_resize_like_skimage(im * 2 - 1, (224, 224)) for im in x])
    at224 = jaxsal.felzenszwalb(big.astype(np.float64), scale=100, min_size=150)
    np.testing.assert_array_equal(got[:, 0], at224[:, 4::8, 4::8])
    native = jaxsal.xrai_labels(x, scales=[100], size=None)
    np.testing.assert_array_equal(native[:, 0], jaxsal.felzenszwalb(
        x.astype(np.float64) * 2 - 1, scale=100, min_size=150))


def test_the_resize_blends_the_border_towards_zero_as_pair_s():
    """scikit-image's resize(mode="constant"), which PAIR calls, has zeros outside the image:
    its border pixels blend towards 0 (then clipped to the image's range). The same here,
    for enlarging and shrinking; the inside is the image's value (within 1e-3: the cubic
    spline's ringing from the border and the step decays by sqrt(3) - 2 per input pixel)."""
    from jaxsal._src.segmentation import _resize_like_skimage

    for size in (28, 300):
        img = -np.ones((size, size, 1), np.float32)
        img[:, size // 2:] = 1.0
        out = _resize_like_skimage(img, (224, 224))[..., 0]
        assert out.dtype == np.float32
        # top and right borders (shrinking 300 -> 224, the outermost row overshoots past -1
        # and is clipped; the next blends)
        assert out[:2, 50].max() > -0.99 and out[120, -2:].min() < 0.99
        np.testing.assert_allclose(out[100:120, 40:60], -1.0, atol=1e-3)
        assert out.min() >= -1.0 and out.max() <= 1.0


def _resize_inputs():
    """The inputs tests/fixtures/felzenszwalb/make_resize_reference.py resized (its
    ``inputs()``, which needs only NumPy) and its case names."""
    path = REF.parent / "make_resize_reference.py"
    spec = importlib.util.spec_from_file_location("make_resize_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.inputs(), [case[0] for case in module.CASES]


def test_the_resize_is_scikit_image_s():
    """PAIR's resize, scikit-image 0.26.0's resize(order=3, mode="constant",
    preserve_range=True, anti_aliasing=True) to 224x224 (scipy 1.17.1's Gaussian, spline
    prefilter and zoom): enlarging 28x28x1, 5x7x3 and 40x48x3 (float64 and float32),
    shrinking 299x299x3, 300x260x1 and 229x230x2, one side each way (150x300x3), one side
    unchanged (224x97x3), an image whose range excludes 0, a constant one. Each output's
    pixels at 14x14 places (the borders included) and its sums over every row and column
    equal scikit-image's within 1e-9 (they were equal bit for bit when the fixture was
    made); the dtype is kept as scikit-image keeps it."""
    from jaxsal._src.segmentation import _resize_like_skimage

    ref = np.load(REF.parent / "resize_reference.npz")
    images, names = _resize_inputs()
    for k, (x, name) in enumerate(zip(images, names)):
        out = _resize_like_skimage(x, (224, 224))
        assert out.shape == (224, 224, x.shape[2]) and out.dtype == x.dtype, name
        out = out.astype(np.float64)
        np.testing.assert_allclose(out[np.ix_(ref["rows"], ref["cols"])],
                                   ref["subset"][k, :, :, :x.shape[2]], rtol=0, atol=1e-9,
                                   err_msg=name)
        np.testing.assert_allclose(out.sum(axis=(1, 2)), ref["row_sums"][k], rtol=0,
                                   atol=1e-9, err_msg=name)
        np.testing.assert_allclose(out.sum(axis=(0, 2)), ref["col_sums"][k], rtol=0,
                                   atol=1e-9, err_msg=name)


def test_the_labels_resize_back_is_scikit_image_s():
    """PAIR resizes the 224x224 labels back by scikit-image's resize(order=0): the rows
    (columns) it takes are _nearest's, for sizes below and above 224."""
    from jaxsal._src.segmentation import _nearest

    ref = np.load(REF.parent / "resize_reference.npz")
    for n, want in zip(ref["nearest_sizes"], ref["nearest"]):
        np.testing.assert_array_equal(_nearest(224, int(n)), want[:n], err_msg=f"size {n}")


def test_xrai_labels_of_other_sizes_are_pair_s():
    """PAIR's own label images of three 40x48 RGB images
    (tests/fixtures/reference_pair/pair_xrai.npz: resized to 224x224, segmented at six
    scales, resized back): equal, label for label."""
    ref = np.load(pathlib.Path(__file__).parent / "fixtures" / "reference_pair" /
                  "pair_xrai.npz")
    np.testing.assert_array_equal(jaxsal.xrai_labels(ref["images"]), ref["labels"])


@pytest.mark.parametrize("call, error", [
    (lambda: jaxsal.felzenszwalb(np.zeros((4, 4, 3))), r"\(N, H, W, C\).*got shape \(4, 4, 3\)"),
    (lambda: jaxsal.felzenszwalb(np.zeros((1, 4, 4, 3), np.uint8)), r"floating-point.*255"),
    (lambda: jaxsal.felzenszwalb(np.zeros((2, 3, 32, 40))),
     r"looks channels-first \(3 channels of 32x40\): pass np.moveaxis\(images, 1, -1\)"),
    (lambda: jaxsal.xrai_segments(np.zeros((1, 1, 28, 28))), "looks channels-first"),
    (lambda: jaxsal.felzenszwalb(np.full((1, 4, 4, 1), np.nan)), "NaN"),
    (lambda: jaxsal.xrai_segments(np.full((1, 4, 4, 3), np.inf)), "NaN or infinite"),
    (lambda: jaxsal.felzenszwalb(np.zeros((1, 4, 4, 1)), scale=-1), "expected scale >= 0"),
    (lambda: jaxsal.felzenszwalb(np.zeros((1, 4, 4, 1)), scale=[]), "non-empty"),
    # (an int too large for a float: math.isfinite raised OverflowError before)
    (lambda: jaxsal.felzenszwalb(np.zeros((1, 4, 4, 1)), scale=10**400), "expected scale >= 0"),
    (lambda: jaxsal.xrai_labels(np.zeros((1, 4, 4, 1)), sigma=-1),
     r"expected sigma >= 0 \(a finite number\), got -1$"),
    (lambda: jaxsal.felzenszwalb(np.zeros((1, 4, 4, 1)), sigma=float("nan")), "sigma"),
    (lambda: jaxsal.felzenszwalb(np.zeros((1, 4, 4, 1)), min_size=2.5), "min_size as an int"),
    (lambda: jaxsal.xrai_labels(np.zeros((1, 4, 4, 1)), size=(224,)), r"size=\(h, w\)"),
    (lambda: jaxsal.xrai_labels(np.zeros((1, 4, 4, 1)), value_range=(1, -1)), "low < high"),
])
def test_refusals(call, error):
    with pytest.raises(ValueError, match=error):
        call()


def test_traced_images_are_refused_as_jax_refuses_a_tracer_read_on_the_host():
    """A JAXTypeError (a TypeError), as JAX's TracerArrayConversionError: explain_to_file's
    dry run (jax.eval_shape) leaves such calls to the real one."""
    for fn in (jaxsal.felzenszwalb, jaxsal.xrai_labels, jaxsal.xrai_segments):
        with pytest.raises(jax.errors.JAXTypeError, match="outside jax.jit"):
            jax.jit(fn)(np.zeros((1, 4, 4, 1)))


def test_bfloat16_images_are_segmented_as_their_float32_values():
    """NumPy does not count ml_dtypes' bfloat16 as a floating dtype: such images (a bfloat16
    model's inputs) are segmented as float32, not refused as integer ones."""
    x = np.random.default_rng(4).uniform(size=(1, 20, 18, 3))
    bf = jax.numpy.asarray(x, jax.numpy.bfloat16)
    f32 = np.asarray(bf.astype(jax.numpy.float32))
    np.testing.assert_array_equal(jaxsal.felzenszwalb(bf, scale=50),
                                  jaxsal.felzenszwalb(f32, scale=50))
    np.testing.assert_array_equal(jaxsal.xrai_labels(bf, scales=[50, 300]),
                                  jaxsal.xrai_labels(f32, scales=[50, 300]))


def test_scale_and_sigma_take_numpy_numbers_and_0d_arrays():
    """As the other hyperparameters of jaxsal (:func:`jaxsal._src.reals.as_float`): a 0-d
    array was refused before."""
    x = np.random.default_rng(6).uniform(size=(1, 12, 10, 3))
    want = jaxsal.felzenszwalb(x, scale=30, sigma=0.5)
    np.testing.assert_array_equal(
        jaxsal.felzenszwalb(x, scale=np.array(30.0), sigma=np.float32(0.5)), want)
    np.testing.assert_array_equal(
        jaxsal.felzenszwalb(x, scale=[np.int64(30)], sigma=np.array(0.5))[:, 0], want)


def test_value_range_takes_numpy_numbers():
    x = np.random.default_rng(5).uniform(size=(1, 16, 12, 1))
    np.testing.assert_array_equal(
        jaxsal.xrai_labels(x, value_range=(np.float32(-1), np.int64(1)), size=None),
        jaxsal.xrai_labels(x, value_range=(-1, 1), size=None))


@pytest.mark.parametrize("dtype, fix", [(np.float32, "as float64"),
                                        (np.float64, "scale the images down")])
def test_a_range_overflowing_the_dtype_is_refused_not_segmented_as_nan(dtype, fix):
    """max - min overflowing the images' dtype would scale them to NaN (PAIR's code too),
    whose edges compare false: labels that mean nothing."""
    big = np.finfo(dtype).max / 1.5
    x = np.zeros((1, 6, 5, 1), dtype)
    x[0, :3], x[0, 3:] = -big, big
    with pytest.raises(ValueError, match=f"image 0 spans .*overflows .*{fix}"):
        jaxsal.xrai_labels(x, size=None)
