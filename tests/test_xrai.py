"""XRAI: region selection worked by hand, the sum of the attributions kept, integrated
gradients from two baselines in one call, T targets as T single calls, jit == eager, batch
jobs, the default regions (tests/test_segmentation.py: the segmentation itself), and clear
errors. (Parity with PAIR saliency: tests/test_reference_pair.py.)"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsal
from small_models import grid_regions

# 4x4: the left half 1, the top-right quadrant 3, the bottom-right -1
ATTR = np.array([[1, 1, 3, 3], [1, 1, 3, 3], [1, 1, -1, -1], [1, 1, -1, -1]], np.float32)
LEFT = np.zeros((4, 4), bool)
LEFT[:, :2] = True
TOP_RIGHT = np.zeros((4, 4), bool)
TOP_RIGHT[:2, 2:] = True
ALL = np.ones((4, 4), bool)
REGIONS = np.stack([LEFT, TOP_RIGHT, ALL])  # (M, H, W), for every input


def _one(**options):
    return np.asarray(jaxsal.xrai_regions(ATTR[None], REGIONS, **options))[0]


def test_greedy_selection_by_hand():
    """Gains 1 (left), 3 (top right), 1 (all): the top right first; then the left (mean 1)
    over the rest of the whole image (its 12 new pixels: (8 - 4) / 12); then the bottom
    right, -1. Every pixel its region's mean: the map sums to the attributions' sum."""
    want = np.array([[1, 1, 3, 3]] * 2 + [[1, 1, -1, -1]] * 2, np.float32)
    np.testing.assert_array_equal(_one(min_pixel_diff=1), want)
    np.testing.assert_array_equal(_one(min_pixel_diff=1, algorithm="fast"), want)
    assert _one(min_pixel_diff=1).sum() == ATTR.sum()


def test_maps_beyond_float32_s_range_are_refused_as_such_and_their_scaled_copy_is_exact():
    """float64 maps of finite values above float32's range (1e39), which the regions' means
    are computed in, became inf and were refused as "NaN or infinite values" (under x64 they
    passed that check, and the call ran 10 minutes without an end). Now refused naming the
    range; the power-of-two scaling the message gives chooses the regions by hand's (the
    greedy test above), the gains scaled alike."""
    big = ATTR[None].astype(np.float64) * 2.0 ** 140
    peak = f"{3 * 2.0 ** 140:.3g}".replace("+", r"\+")  # (ATTR's largest, 3)
    with pytest.raises(ValueError, match=f"finite values up to {peak} in magnitude, beyond "
                                         "float32's range"):
        jaxsal.xrai_regions(big, REGIONS, min_pixel_diff=1)
    scaled = big * 2.0 ** -np.ceil(np.log2(np.abs(big).max()))
    want = np.array([[1, 1, 3, 3]] * 2 + [[1, 1, -1, -1]] * 2, np.float32)
    got = np.asarray(jaxsal.xrai_regions(scaled, REGIONS, min_pixel_diff=1))[0]
    np.testing.assert_array_equal(got, want * 2.0 ** (140 - 142))
    # float32 maps in range whose regions' sums are not: the selection never ended (a 60 s
    # timeout on these 16 pixels); refused the same way
    with pytest.raises(ValueError, match="sums over up to 16 pixels would exceed float32's "
                                         "range"):
        jaxsal.xrai_regions(ATTR[None] * np.float32(1e38), REGIONS, min_pixel_diff=1)


def test_maps_beyond_float32_s_range_holding_an_inf_are_refused_as_not_finite_first():
    """float64 maps beyond float32's range that also held an inf got the range refusal, whose
    scaling (by 2 ** -ceil(log2(max |maps|)), inf there) made every value 0 or NaN. The
    non-finite refusal comes first now; its fix, then the range refusal's, work as written."""
    import re

    big = ATTR[None].astype(np.float64) * 2.0 ** 140
    big[0, 3, 3] = np.inf
    with pytest.raises(ValueError, match=r"NaN or infinite values.*\(np\.nan_to_num\(maps\)\)"):
        jaxsal.xrai_regions(big, REGIONS, min_pixel_diff=1)
    maps = np.nan_to_num(big)
    with pytest.raises(ValueError, match="beyond float32's range") as e:
        jaxsal.xrai_regions(maps, REGIONS, min_pixel_diff=1)
    fix = re.search(r"first, (maps \* .*?\)\)):", str(e.value)).group(1)
    got = np.asarray(jaxsal.xrai_regions(eval(fix), REGIONS, min_pixel_diff=1))  # noqa: S307
    assert np.isfinite(got).all() and got.max() > 0


def test_small_regions_are_dropped_and_ties_go_to_the_first():
    """With min_pixel_diff=5 the top right (4 pixels) is dropped; the left and the whole
    image tie at mean 1 and the first listed, the left, wins; the whole image's 8 new pixels
    then get (4 * 3 - 4) / 8 = 1."""
    np.testing.assert_array_equal(_one(min_pixel_diff=5), np.ones((4, 4), np.float32))


def test_the_area_threshold_stops_selection_and_the_rest_gets_its_mean():
    """After the top right a quarter of the image is selected, above 0.2: the other 12
    pixels get their mean, (8 - 4) / 12. At 0.25 the selection goes on (at most the
    threshold), as PAIR's loop does."""
    got = _one(min_pixel_diff=1, area_threshold=0.2)
    np.testing.assert_allclose(got[:2, 2:], 3)
    np.testing.assert_allclose(np.delete(got.ravel(), [2, 3, 6, 7]), 1 / 3, rtol=1e-6)
    np.testing.assert_array_equal(_one(min_pixel_diff=1, area_threshold=0.25),
                                  _one(min_pixel_diff=1))


def test_segment_masks_and_their_dilation():
    labels = np.array([[[0, 0, 7], [0, 7, 7], [0, 0, 0]]])  # the labels present: 0 and 7
    masks = np.asarray(jaxsal.segment_masks(labels, dilation=0))
    assert masks.shape == (1, 2, 3, 3)
    np.testing.assert_array_equal(masks[0], [labels[0] == 0, labels[0] == 7])
    one = np.zeros((1, 1, 7, 7), np.int32)
    one[0, 0, 3, 3] = 1
    disk = np.asarray(jaxsal.segment_masks(one, dilation=2))[0, 1]
    yy, xx = np.mgrid[:7, :7]
    np.testing.assert_array_equal(disk, (yy - 3) ** 2 + (xx - 3) ** 2 <= 4)
    # two inputs of different label counts: the shorter padded with empty masks
    two = np.asarray(jaxsal.segment_masks(np.stack([labels[0], np.zeros((3, 3), int)]),
                                          dilation=None))
    assert two.shape == (2, 2, 3, 3) and two[1, 0].all() and not two[1, 1:].any()
    with pytest.raises(ValueError, match=r"2 inputs x 262144 regions x 512x512 pixels would "
                       r"take 128.0 GiB of masks; expected segmentations of fewer regions"):
        jaxsal.segment_masks(np.arange(2 * 512 * 512).reshape(2, 512, 512) % (512 * 512))


@pytest.fixture(scope="module")
def lm(mnist):
    return mnist.with_head("logits")


@pytest.fixture(scope="module")
def x4(mnist_digits):
    return mnist_digits[:4]


def test_xrai_is_the_regions_of_ig_from_the_image_s_minimum_and_maximum(lm, x4):
    """One call of integrated gradients over both baselines, averaged, maxed over channels,
    then the regions; the maps keep the attributions' sum."""
    x = np.asarray(x4[:3])
    segments = grid_regions()
    got = np.asarray(jaxsal.xrai(lm, x, [1, 7], segments=segments, steps=8, min_pixel_diff=5))
    lo = np.broadcast_to(x.min(axis=(1, 2, 3), keepdims=True), x.shape)
    hi = np.broadcast_to(x.max(axis=(1, 2, 3), keepdims=True), x.shape)
    ig = [np.asarray(jaxsal.integrated_gradients(lm, x, [1, 7], baseline=b, steps=8,
                                                 reduce=None)) for b in (lo, hi)]
    attr = jaxsal.reduce_channels((ig[0] + ig[1]) / 2, "max")
    want = np.asarray(jaxsal.xrai_regions(attr, segments, min_pixel_diff=5))
    scale = np.abs(want).max()
    np.testing.assert_allclose(got, want, atol=1e-5 * scale)
    np.testing.assert_allclose(got.sum((-2, -1)), np.asarray(attr).sum((-2, -1)),
                               atol=1e-5 * np.abs(attr).sum((-2, -1)).max())
    assert len(np.unique(got[0, 0])) > 5  # many regions ranked


def test_per_input_targets_and_given_baselines(lm, x4):
    """(N, T) class ids are repeated for every baseline's copy of the inputs; baselines
    given as a list (a scalar, an image) replace the two defaults."""
    x = np.asarray(x4[:2])
    segments = grid_regions()
    ids = np.array([[3, 1], [0, 8]])
    got = np.asarray(jaxsal.xrai(lm, x, ids, segments=segments, steps=4, min_pixel_diff=5,
                                 baselines=[0.0, np.full((28, 28, 1), 0.5, np.float32)]))
    for i in range(2):
        for j in range(2):
            one = np.asarray(jaxsal.xrai(lm, x[i:i + 1], int(ids[i, j]), segments=segments,
                                         steps=4, min_pixel_diff=5,
                                         baselines=[0.0, np.full((28, 28, 1), 0.5)]))[0]
            np.testing.assert_allclose(got[i, j], one, atol=1e-5 * np.abs(one).max())


def test_jit_equals_eager(lm, x4):
    x = jnp.asarray(x4[:2])
    segments = grid_regions()
    eager = jaxsal.xrai(lm, x, [2, 5], segments=segments, steps=4, min_pixel_diff=5)
    jitted = jax.jit(lambda x: jaxsal.xrai(lm, x, [2, 5], segments=segments, steps=4,
                                           min_pixel_diff=5))(x)
    np.testing.assert_allclose(jitted, eager, atol=1e-5 * np.abs(eager).max())


def test_a_batch_job_slices_per_input_segments(tmp_path, lm, x4):
    """(N, M, H, W) regions are sliced with the inputs: the file equals one call."""
    x = np.asarray(x4[:3])
    segments = np.asarray(jnp.broadcast_to(grid_regions(), (3, 65, 28, 28))).copy()
    segments[1, :16] = False  # the second input without the coarse grid
    one = np.asarray(jaxsal.xrai(lm, x, 4, segments=segments, steps=4, min_pixel_diff=5))
    out = jaxsal.explain_to_file(jaxsal.xrai, lm, x, tmp_path / "xrai.npy", targets=4,
                                 batch_size=2, segments=segments, steps=4, min_pixel_diff=5)
    np.testing.assert_allclose(out, one, atol=1e-5 * np.abs(one).max())


def test_without_segments_xrai_uses_the_authors_felzenszwalb_regions(lm, x4):
    """segments=None: jaxsal.xrai_segments of the images (channels last), for a
    channels-first model too (its images moved to channels last to be segmented)."""
    x = np.asarray(x4[:2])
    masks = jaxsal.xrai_segments(x)
    assert masks.shape[:2] == (2, int(masks.any((2, 3)).sum(1).max())) and masks.shape[1] > 6
    want = np.asarray(jaxsal.xrai(lm, x, [1, 7], segments=masks, steps=4))
    got = np.asarray(jaxsal.xrai(lm, x, [1, 7], steps=4))
    np.testing.assert_array_equal(got, want)
    w = jnp.asarray(np.random.default_rng(0).normal(size=(3, 28, 28)), jnp.float32)
    first = jaxsal.FunctionModel(lambda p, v: jnp.einsum("nchw,khw->nk", v, p), w,
                                 data_format="channels_first")
    xc = np.moveaxis(x, -1, 1)
    np.testing.assert_array_equal(jaxsal.xrai(first, xc, 2, steps=4),
                                  jaxsal.xrai(first, xc, 2, segments=masks, steps=4))


def test_a_batch_job_without_segments_segments_each_input(tmp_path, lm, x4):
    """A job of xrai without segments: each chunk's images segmented by the default; the
    file equals one call over every input."""
    x = np.asarray(x4[:3])
    one = np.asarray(jaxsal.xrai(lm, x, 4, steps=4))
    out = jaxsal.explain_to_file(jaxsal.xrai, lm, x, tmp_path / "xrai.npy", targets=4,
                                 batch_size=2, steps=4)
    np.testing.assert_allclose(out, one, atol=1e-5 * np.abs(one).max())


@pytest.mark.parametrize("options, error", [
    (dict(segments=np.zeros((3, 4, 4), np.int32)), "boolean region masks.*segment_masks"),
    (dict(segments=np.zeros((3, 4, 5), bool)), r"segments of shape \(1, M, 4, 4\)"),
    (dict(segments=np.zeros((0, 4, 4), bool)), "no region"),
    (dict(segments=REGIONS, min_pixel_diff=0), "min_pixel_diff as an int >= 1"),
    (dict(segments=REGIONS, area_threshold=0.0), r"area_threshold in \(0, 1\]"),
    (dict(segments=REGIONS, algorithm="greedy"), "unknown algorithm 'greedy'"),
])
def test_xrai_regions_refuses_clearly(options, error):
    with pytest.raises(ValueError, match=error):
        jaxsal.xrai_regions(ATTR[None], **options)


@pytest.mark.parametrize("maps, error", [
    (np.ones((1, 4, 4), np.int32), r"floating-point maps, got dtype int32.*astype"),
    (np.ones((1, 4, 4, 3), np.float32), r"maps of shape \(1, 4, 4, 3\) look un-reduced, "
     r"\(N, H, W, C\) with C = 3 channels.*reduce_channels\(maps, \"max\"\)"),
    (np.ones((1, 2, 4, 4, 3), np.float32), r"look un-reduced.*reduce_channels\(maps, \"max\"\)"),
])
def test_xrai_regions_names_what_the_maps_look_like(maps, error):
    """Integer maps: their dtype named (not their valid shape); maps still holding channels
    last: called un-reduced, naming jaxsal.reduce_channels (not a segments' shape)."""
    with pytest.raises(ValueError, match=error):
        jaxsal.xrai_regions(maps, REGIONS)


@pytest.mark.parametrize("options, error", [
    (dict(segments=REGIONS, algorithm="greedy"), "unknown algorithm 'greedy'"),
    (dict(segments=REGIONS, area_threshold=0.0), r"area_threshold in \(0, 1\]"),
    (dict(segments=REGIONS, min_pixel_diff=0), "min_pixel_diff as an int >= 1"),
    (dict(algorithm="greedy"), "unknown algorithm 'greedy'"),  # before the default regions
    (dict(segments=REGIONS.astype(np.int32)), "boolean region masks"),
    (dict(segments=REGIONS[:, :, :3]), r"segments of shape \(2, M, 4, 4\) or \(M, 4, 4\) "
     r"for images of shape \(2, 4, 4, 1\), got \(3, 4, 3\)"),
])
def test_xrai_refuses_options_and_segments_before_any_work(monkeypatch, options, error):
    """Options and given segments are checked before xrai segments the images or runs
    integrated gradients (both replaced here by functions that fail if called)."""
    import jaxsal._src.xrai as xrai_module

    def ran(*args, **kwargs):
        raise AssertionError("xrai did work before refusing its options")

    monkeypatch.setattr(xrai_module, "integrated_gradients", ran)
    monkeypatch.setattr(xrai_module, "xrai_segments", ran)
    flat = jaxsal.FunctionModel(lambda p, x: x.reshape(len(x), -1) @ p, jnp.ones((16, 2)))
    with pytest.raises(ValueError, match=error):
        jaxsal.xrai(flat, np.ones((2, 4, 4, 1), np.float32), 1, steps=2, **options)


def test_xrai_refuses_clearly(lm, x4):
    with pytest.raises(ValueError, match="NaN"):
        jaxsal.xrai_regions(np.full((1, 4, 4), np.nan, np.float32), REGIONS)
    with pytest.raises(jax.errors.JAXTypeError, match=r"xrai without segments= segments the "
                       r"images on the host.*segments=jaxsal.xrai_segments\(x\)"):
        jax.jit(lambda x: jaxsal.xrai(lm, x, 1, steps=2))(x4[:1])
    with pytest.raises(ValueError, match="NaN"):
        jaxsal.xrai(lm, np.full((1, 28, 28, 1), np.nan, np.float32), 1, steps=2)
    with pytest.raises(ValueError, match=r"baselines\[0\] has shape \(3,\)"):
        jaxsal.xrai(lm, x4[:1], 1, segments=grid_regions(), baselines=[np.zeros(3)])
    with pytest.raises(ValueError, match="integer label images"):
        jaxsal.segment_masks(np.zeros((2, 4, 4), np.float32))
    with pytest.raises(ValueError, match="dilation"):
        jaxsal.segment_masks(np.zeros((2, 4, 4), np.int32), dilation=-1)
    signal = jaxsal.FunctionModel(lambda p, x: x.reshape(len(x), -1) @ p, jnp.ones((12, 2)))
    with pytest.raises(ValueError, match=r"xrai explains images.*got \(2, 6, 2\)"):
        jaxsal.xrai(signal, np.ones((2, 6, 2), np.float32), 1, segments=REGIONS)


@pytest.mark.parametrize("algorithm", ["full", "fast"])
def test_atoms_and_pixels_give_the_same_selection(monkeypatch, algorithm):
    """Both selections run on atoms (pixels in exactly the same regions) when the masks are
    known, so that the (N, M, H*W) pixel masks never go to a device ("fast" sent them, and
    float32 copies: 1.5 GB of temporaries for 8 x 986 masks of 224x224); on pixels under the
    caller's jax.jit over the masks (the former "fast" path): the same maps."""
    import jaxsal._src.xrai as xrai_module
    from jaxsal._src.xrai import _atom_bits

    members_seen = []
    regions = xrai_module._regions

    def spy(maps, ids, members, *rest):
        members_seen.append(members.shape)
        return regions(maps, ids, members, *rest)

    monkeypatch.setattr(xrai_module, "_regions", spy)

    masks = np.asarray(grid_regions())
    flat = masks.reshape(len(masks), -1)
    ids, bits = _atom_bits(flat)
    count = len(bits)
    assert count < 28 * 28 and ids.max() == count - 1  # 380: the dilated cells' overlaps
    one = np.zeros(count, int)
    one[ids] = np.arange(28 * 28)  # a pixel of each atom
    np.testing.assert_array_equal(flat, flat[:, one[ids]])  # its pixels: the same regions
    assert len({tuple(col) for col in flat.T}) == count  # and atoms differ
    maps = jnp.asarray(np.random.default_rng(0).normal(size=(2, 3, 28, 28)), jnp.float32)
    on_atoms = jaxsal.xrai_regions(maps, masks, min_pixel_diff=5, algorithm=algorithm)
    assert members_seen == [(65, 512)]  # 380 atoms, rounded up: not the 28 * 28 pixels
    on_pixels = jax.jit(lambda s: jaxsal.xrai_regions(maps, s, min_pixel_diff=5,
                                                      algorithm=algorithm))(masks)
    assert members_seen[1] == (65, 28 * 28)
    np.testing.assert_allclose(on_atoms, on_pixels, atol=1e-6 * np.abs(on_pixels).max())
    np.testing.assert_allclose(np.asarray(on_atoms).sum((-2, -1)),
                               np.asarray(maps).sum((-2, -1)), atol=1e-4)


@pytest.mark.parametrize("m", [1, 8, 13, 70])
def test_atoms_are_numbered_as_packbits_bytes_number_them(m):
    """_atom_bits packs each pixel's regions into bytes itself (8 passes over whole rows): the
    ids are those of np.packbits(masks, axis=0)'s rows (its former code, here), in the same
    order, for region counts that fill the last byte or not, and for strided masks."""
    from jaxsal._src.xrai import _atom_bits

    rng = np.random.default_rng(m)
    patterns = rng.random((m, 40)) < 0.5  # 40 region sets (some equal), 300 pixels
    masks = patterns[:, rng.integers(0, 40, 300)]
    for given in (masks, np.repeat(masks, 2, axis=0)[::2], np.repeat(masks, 2, axis=1)[:, ::2]):
        rows = np.ascontiguousarray(np.packbits(given, axis=0).T)
        want = np.unique(rows.view(np.dtype((np.void, rows.shape[1]))).reshape(-1),
                         return_inverse=True)[1].reshape(-1)
        ids, bits = _atom_bits(given)
        np.testing.assert_array_equal(ids, want)
        assert len(bits) == want.max() + 1


def test_partition_reads_each_atom_s_regions_from_its_bits():
    """_partition unpacks each atom's regions from the bits that numbered it: the members
    the masks at a pixel of each atom give (its former code, here), the same sizes."""
    from jaxsal._src.xrai import _atom_bits, _partition

    rng = np.random.default_rng(3)
    patterns = rng.random((2, 13, 30)) < 0.4
    masks = np.stack([p[:, rng.integers(0, 30, 500)] for p in patterns])  # (2, 13, 500)
    masks[1, 5] = False  # an empty region
    ids, members, sizes = _partition(masks)
    assert members.shape == (2, 13, 256) and sizes.shape == (2, 256)
    for k in range(2):
        want_ids, bits = _atom_bits(masks[k])
        count = len(bits)
        first = np.zeros(count, np.int64)
        first[want_ids] = np.arange(500)
        np.testing.assert_array_equal(ids[k], want_ids)
        np.testing.assert_array_equal(members[k, :, :count], masks[k][:, first])
        assert not members[k, :, count:].any()
        np.testing.assert_array_equal(sizes[k, :count], np.bincount(want_ids))
        assert not sizes[k, count:].any()


@pytest.mark.parametrize("algorithm", ["full", "fast"])
def test_regions_for_every_input_equal_them_given_per_input(algorithm):
    """(M, H, W) masks (passed to the compiled selection once, not copied per input) give each
    input what the same masks repeated per input (N, M, H, W) give; on the host or a device,
    and under the caller's jax.jit (every pixel an atom)."""
    masks = np.asarray(grid_regions())
    maps = jnp.asarray(np.random.default_rng(2).normal(size=(3, 2, 28, 28)), jnp.float32)
    per_input = np.ascontiguousarray(np.broadcast_to(masks, (3, *masks.shape)))
    want = np.asarray(jaxsal.xrai_regions(maps, per_input, min_pixel_diff=5,
                                          algorithm=algorithm))
    assert not np.allclose(want[0], want[1])  # the inputs' own selections
    for shared in (masks, jnp.asarray(masks)):
        np.testing.assert_allclose(jaxsal.xrai_regions(maps, shared, min_pixel_diff=5,
                                                       algorithm=algorithm),
                                   want, atol=1e-6 * np.abs(want).max())
    jitted = jax.jit(lambda s: jaxsal.xrai_regions(maps, s, min_pixel_diff=5,
                                                   algorithm=algorithm))(masks)
    np.testing.assert_allclose(jitted, want, atol=1e-6 * np.abs(want).max())


@pytest.mark.parametrize("radius", [1, 5, 12])
def test_dilation_label_by_label_in_its_box_is_the_whole_image_s(radius):
    """segment_masks dilates each label within its bounding box widened by the radius: the
    same masks as dilating each whole-image mask, for labels scattered over the image
    (boxes that overlap, span it, or touch its borders) and negative ones."""
    from jaxsal._src.xrai import _dilate

    labels = np.random.default_rng(radius).integers(-2, 6, size=(2, 3, 19, 26))
    labels[0, 1] = 7  # one label everywhere
    yy, xx = np.mgrid[:19, :26]
    labels[1, 2] = (yy // 5) * 10 + xx // 6  # compact cells, small boxes (at the borders too)
    got = jaxsal.segment_masks(labels, dilation=radius)
    for i in range(2):
        plain = jaxsal.segment_masks(labels[i:i + 1], dilation=0)[0]
        want = _dilate(plain, radius)
        np.testing.assert_array_equal(got[i, :len(want)], want)
        assert not got[i, len(want):].any()


def test_segment_masks_stay_on_the_host():
    """Made on the host and read there by xrai_regions (its atoms): a NumPy array, never a
    device round trip."""
    masks = jaxsal.segment_masks(np.array([[[0, 1], [1, 1]]]), dilation=0)
    assert type(masks) is np.ndarray and masks.dtype == np.bool_


def test_other_regions_of_the_same_shape_reuse_the_program(compiles):
    """The atoms' count is rounded up to a power of two: regions that cut a 64x64 image
    into another number of atoms (two shifted grids: 384, 361, 342, 441 atoms) compile
    nothing new while the rounded count (512) stays; the masks are padded to one count."""
    from jaxsal._src.xrai import _atom_bits

    maps = jnp.asarray(np.random.default_rng(1).normal(size=(1, 64, 64)), jnp.float32)
    yy, xx = np.mgrid[:64, :64]
    sets = []
    for a, b in ((4, 8), (5, 8), (6, 7), (5, 6)):
        labels = np.stack([(yy // a) * 64 + xx // a, (yy // b) * 64 + (xx + 1) // b])
        masks = np.asarray(jaxsal.segment_masks(labels[None], dilation=0))
        sets.append(np.pad(masks, ((0, 0), (0, 400 - masks.shape[1]), (0, 0), (0, 0))))
    assert [len(_atom_bits(m[0].reshape(400, -1))[1]) for m in sets] == [384, 361, 342, 441]
    jax.block_until_ready(jaxsal.xrai_regions(maps, sets[0], min_pixel_diff=4))
    n = compiles.n
    for masks in sets[1:]:
        jax.block_until_ready(jaxsal.xrai_regions(maps, masks, min_pixel_diff=4))
    assert compiles.n == n


def test_traced_maps_with_nan_or_overflowing_sums_end_the_selection():
    """Maps traced by the caller's ``jax.jit`` are not checked: with NaN, or with regions'
    sums beyond float32's range, the gains were NaN or inf and ``argmax`` could pick a region
    already dropped, so the greedy loop never ended (a 60 s timeout on these 16 pixels). Now
    a live region is always taken; such maps give NaN gains, not a hang. (Run in a daemon
    thread so that a regression fails here instead of hanging the suite.)"""
    import threading

    f = jax.jit(lambda m: jaxsal.xrai_regions(m, REGIONS, min_pixel_diff=1))
    bad = {"nan": np.where(ATTR > 2, np.nan, ATTR)[None].astype(np.float32),
           "overflow": ATTR[None] * np.float32(1e38)}
    out = {}
    t = threading.Thread(target=lambda: out.update(
        {k: np.asarray(f(jnp.asarray(m))) for k, m in bad.items()}), daemon=True)
    t.start()
    t.join(timeout=120)
    assert not t.is_alive(), "xrai_regions did not end on traced non-finite maps"
    for k in bad:
        assert out[k].shape == (1, 4, 4) and np.isnan(out[k]).any(), k
