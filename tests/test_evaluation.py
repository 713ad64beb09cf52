"""Evaluation of maps: deletion and insertion curves, infidelity, maximum sensitivity.

Closed forms on linear models (the curves are the score minus the cumulated contributions in
the map's order; a linear model's gradient has infidelity 0), the definitions recomputed by
hand on a nonlinear model with the same perturbations, batching and key invariance, and the
errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsal
from small_models import token_sum_model


def _linear(shape=(4, 5, 2), k=3, seed=0, data_format="channels_last"):
    w = np.random.default_rng(seed).normal(size=(int(np.prod(shape)), k)).astype(np.float32)

    def f(p, x):
        return x.reshape(len(x), -1) @ p

    return jaxsal.FunctionModel(f, jnp.asarray(w), data_format=data_format), w


def _x(shape=(4, 5, 2), n=3, seed=1):
    return np.random.default_rng(seed).normal(size=(n, *shape)).astype(np.float32)


def _trapezoid(y, x):
    """The trapezoid rule along the last axis (np.trapezoid is NumPy >= 2 only)."""
    return ((y[..., 1:] + y[..., :-1]) * np.diff(x)).sum(-1) / 2


def _curve_by_hand(s0, contrib, steps, order="most"):
    """Scores of a linear model as the positions (last axis of ``contrib``, each one's share
    of the score) are deleted in ``contrib``'s order (stable)."""
    key = -contrib if order == "most" else contrib
    srt = np.take_along_axis(contrib, np.argsort(key, axis=-1, kind="stable"), -1)
    cum = np.concatenate([np.zeros(contrib.shape[:-1] + (1,)), np.cumsum(srt, -1)], -1)
    counts = np.round(np.arange(steps + 1) * contrib.shape[-1] / steps).astype(int)
    return s0[..., None] - cum[..., counts]


# ------------------------------------------------------------------ deletion / insertion
@pytest.mark.parametrize("order", ["most", "least"])
def test_deletion_of_a_linear_model_is_its_score_minus_the_sorted_contributions(order):
    m, w = _linear()
    x = _x()
    contrib = np.einsum("nd,dk->nkd", x.reshape(3, -1), w)  # gradient x input per value
    maps = contrib.reshape(3, 3, 4, 5, 2)
    c = jaxsal.deletion(m, x, maps, [0, 1, 2], steps=16, order=order)
    want = _curve_by_hand(contrib.sum(-1), contrib, 16, order)
    np.testing.assert_allclose(c.scores, want, atol=2e-5 * np.abs(want).max())
    # 40 values in 16 steps: point k deletes round(2.5 k) of them, its fraction of the 40
    frac = np.round(np.arange(17) * 2.5) / 40
    np.testing.assert_allclose(c.fractions, frac, rtol=1e-6)
    np.testing.assert_allclose(c.auc, _trapezoid(want, frac), rtol=1e-5, atol=1e-5)
    # insertion from 0 in the same order is the deletion curve turned around: S(x) - deletion
    ins = jaxsal.insertion(m, x, maps, [0, 1, 2], steps=16, order=order)
    np.testing.assert_allclose(ins.scores, contrib.sum(-1)[..., None] - want,
                               atol=2e-5 * np.abs(want).max())


def test_fractions_are_the_positions_changed_and_least_is_most_reversed_with_ties():
    """10 positions in 4 steps change 0, 2 (2.5 rounds to even), 5, 8 and 10 of them: the
    fractions and the area's abscissae are those, not k / 4. A map with ties (a CAM's zeros):
    deletion with order="least" is insertion backwards (with fill == baseline), ties
    included (both kept raster order, so they were not)."""
    m, w = _linear((5, 2, 1))
    x = _x((5, 2, 1))
    maps = np.zeros((3, 5, 2), np.float32)
    maps[:, 1, 1], maps[:, 3, 0] = 2.0, 1.0
    c = jaxsal.deletion(m, x, maps, 1, steps=4)
    np.testing.assert_allclose(c.fractions, [0, 0.2, 0.5, 0.8, 1.0], rtol=1e-6)
    np.testing.assert_allclose(c.auc, _trapezoid(np.asarray(c.scores), np.asarray(c.fractions)),
                               rtol=1e-5)
    fill = 0.5 * _x((5, 2, 1), seed=3)
    least = jaxsal.deletion(m, x, maps, 1, steps=10, fill=fill, order="least")
    ins = jaxsal.insertion(m, x, maps, 1, steps=10, baseline=fill)
    # one position per step: the RISE code's area, (sum - first / 2 - last / 2) / steps
    s = np.asarray(least.scores, np.float64)
    np.testing.assert_allclose(least.auc, (s.sum(-1) - s[:, 0] / 2 - s[:, -1] / 2) / 10,
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(least.scores, np.asarray(ins.scores)[:, ::-1], rtol=1e-5,
                               atol=1e-6)


def test_pixel_maps_delete_a_pixels_channels_together_and_one_target_drops_the_class_axis():
    m, w = _linear()
    x = _x()
    per_value = np.einsum("nd,d->nd", x.reshape(3, -1), w[:, 1]).reshape(3, 4, 5, 2)
    per_pixel = per_value.sum(-1)  # (N, H, W): a pixel's two channels leave together
    c = jaxsal.deletion(m, x, per_pixel, 1, steps=20, fill=0.0)
    assert c.scores.shape == (3, 21) and c.auc.shape == (3,)
    want = _curve_by_hand(per_pixel.reshape(3, -1).sum(-1), per_pixel.reshape(3, -1), 20)
    np.testing.assert_allclose(c.scores, want, atol=2e-5 * np.abs(want).max())


def test_patches_delete_cells_in_the_order_of_their_sums():
    m, w = _linear((4, 6, 2))
    x = _x((4, 6, 2))
    per_pixel = np.einsum("nd,d->nd", x.reshape(3, -1), w[:, 2]).reshape(3, 4, 6, 2).sum(-1)
    c = jaxsal.deletion(m, x, per_pixel, 2, patch=(2, 3), steps=4)  # 2 x 2 cells of 2 x 3
    cells = per_pixel.reshape(3, 2, 2, 2, 3).sum((2, 4)).reshape(3, 4)
    want = _curve_by_hand(per_pixel.reshape(3, -1).sum(-1), cells, 4)
    np.testing.assert_allclose(c.scores, want, atol=2e-5 * np.abs(want).max())
    np.testing.assert_allclose(jaxsal.deletion(m, x, per_pixel, 2, patch=1, steps=24).scores,
                               jaxsal.deletion(m, x, per_pixel, 2, steps=24).scores)
    with pytest.raises(ValueError, match="more than the map's 4 cells"):
        jaxsal.deletion(m, x, per_pixel, 2, patch=(2, 3), steps=5)
    with pytest.raises(ValueError, match="Reduce the channels first"):
        jaxsal.insertion(m, x, np.zeros((3, 4, 6, 2)), 2, patch=2)
    # a patch larger than the map, as occlusion's and the Shapley methods' (it was one cell
    # for the whole axis: a curve of two points, without a word)
    with pytest.raises(ValueError, match=r"patch 5 is larger than axis 0 of the maps, 4: "
                                         r"expected a patch of at most 4"):
        jaxsal.deletion(m, x, per_pixel, 2, patch=5)
    with pytest.raises(ValueError, match="patch 7 is larger than axis 1"):
        jaxsal.insertion(m, x, per_pixel, 2, patch=(2, 7))


def test_channels_first_and_a_fill_per_channel():
    m, w = _linear((2, 4, 5), data_format="channels_first")
    x = _x((2, 4, 5))
    fill = np.asarray([0.5, -1.0], np.float32).reshape(2, 1, 1)
    per_value = (x - fill).reshape(3, -1) * w[:, 0]  # the score's drop when a value is filled
    per_pixel = per_value.reshape(3, 2, 4, 5).sum(1)
    c = jaxsal.deletion(m, x, per_pixel, 0, steps=10, fill=fill)
    s0 = (x.reshape(3, -1) @ w[:, 0])
    want = _curve_by_hand(s0, per_pixel.reshape(3, -1), 10)
    np.testing.assert_allclose(c.scores, want, atol=2e-5 * np.abs(want).max())


def test_ties_go_in_raster_order_and_features_work():
    m, w = _linear((6,), k=2)
    x = np.ones((1, 6), np.float32)
    flat = np.zeros((1, 6), np.float32)  # every position ties: first position first
    c = jaxsal.deletion(m, x, flat, 0, steps=6)
    np.testing.assert_allclose(c.scores[0], w[:, 0].sum() - np.concatenate(
        [[0], np.cumsum(w[:, 0])]), atol=1e-5)


def test_token_ids_with_an_id_as_fill():
    m, table, ids = token_sum_model()
    contrib = np.asarray(table[ids][..., 0] - table[0, 0])  # replacing a token by id 0
    c = jaxsal.deletion(m, ids, contrib, 0, steps=4, fill=0)
    want = _curve_by_hand(np.asarray(table[ids][..., 0]).sum(1), contrib, 4)
    np.testing.assert_allclose(c.scores, want, atol=1e-5)
    with pytest.raises(ValueError, match="whole numbers"):
        jaxsal.deletion(m, ids, contrib, 0, fill=0.5)


def test_raw_uint8_images_delete_a_pixels_channels_together():
    """A model of raw uint8 images (it scales them itself; a Keras uint8 InputLayer or a
    plain function) takes them as they are, channel axis and all: a pixel's map value
    deletes (inserts) its channels together, as for float images. Integer images were taken
    for token ids without a channel axis, and the curves failed with a broadcasting error."""
    w = np.random.default_rng(0).normal(size=(4 * 5 * 2, 2)).astype(np.float32)
    m = jaxsal.FunctionModel(
        lambda p, x: x.reshape(len(x), -1).astype(jnp.float32) / 255.0 @ p, jnp.asarray(w))
    x = np.random.default_rng(1).integers(0, 256, size=(3, 4, 5, 2)).astype(np.uint8)
    per_pixel = (x.reshape(3, -1) / 255.0 * w[:, 1]).reshape(3, 4, 5, 2).sum(-1)
    s0 = per_pixel.reshape(3, -1).sum(-1)
    want = _curve_by_hand(s0, per_pixel.reshape(3, -1), 10)
    c = jaxsal.deletion(m, x, per_pixel.astype(np.float32), 1, steps=10)
    np.testing.assert_allclose(c.scores, want, atol=2e-5 * np.abs(want).max())
    ins = jaxsal.insertion(m, x, per_pixel.astype(np.float32), 1, steps=10)
    np.testing.assert_allclose(ins.scores, s0[:, None] - want, atol=2e-5 * np.abs(want).max())


def test_curves_of_a_real_model_order_faithful_maps_first(mnist, mnist_digits):
    """On the MNIST CNN (softmax head), deleting integrated gradients' most relevant pixels
    first lowers the class probability sooner than deleting the least relevant first, and
    than a random order; insertion the other way round."""
    x = mnist_digits[:8]
    cls = np.asarray(mnist(x)).argmax(1)
    t = cls[:, None]
    maps = np.asarray(jaxsal.integrated_gradients(mnist, x, t, steps=32, head="logits"))
    kw = dict(steps=28)
    most = jaxsal.deletion(mnist, x, maps, t, **kw).auc.mean()
    least = jaxsal.deletion(mnist, x, maps, t, order="least", **kw).auc.mean()
    noise = np.random.default_rng(0).random(maps.shape)  # no ties
    rand = jaxsal.deletion(mnist, x, noise, t, **kw)
    assert most < 0.5 * rand.auc.mean() and rand.auc.mean() < least
    ins = jaxsal.insertion(mnist, x, maps, t, **kw).auc.mean()
    ins_least = jaxsal.insertion(mnist, x, maps, t, order="least", **kw).auc.mean()
    assert ins > ins_least + 0.2
    # with fill = baseline, deleting the least relevant first retraces insertion backwards
    back = jaxsal.insertion(mnist, x, noise, t, order="most", **kw).scores
    np.testing.assert_allclose(jaxsal.deletion(mnist, x, noise, t, order="least",
                                               **kw).scores[..., ::-1], back, atol=1e-6)


def test_curves_batching_jit_cache_and_predicted_targets(mnist, mnist_digits, compiles):
    x = mnist_digits[:5]
    maps = np.asarray(jaxsal.saliency(mnist, x, [2, 7]))
    full = jaxsal.deletion(mnist, x, maps, [2, 7], steps=10)
    for kw in (dict(batch_size=3), dict(memory_budget=1)):
        part = jaxsal.deletion(mnist, x, maps, [2, 7], steps=10, **kw)
        np.testing.assert_allclose(part.scores, full.scores, rtol=1e-5, atol=1e-6)
    before = compiles.n
    again = jaxsal.deletion(mnist, x + 0.01, maps, [2, 7], steps=10)
    assert compiles.n == before and not np.allclose(again.scores, full.scores)
    pred = np.asarray(mnist(x)).argmax(1)
    one = jaxsal.deletion(mnist, x, maps[:, 0], None, steps=10)
    ids = jaxsal.deletion(mnist, x, maps[:, :1], pred[:, None], steps=10)
    # targets=None: the clean input's predicted class all along the curve
    np.testing.assert_allclose(one.scores, np.asarray(ids.scores)[:, 0], rtol=1e-6)


def test_curve_errors(mnist, mnist_digits):
    x = mnist_digits[:2]
    good = np.zeros((2, 2, 28, 28), np.float32)
    with pytest.raises(ValueError, match=r"class axis of T=2"):
        jaxsal.deletion(mnist, x, good[:, 0], [1, 2])
    with pytest.raises(ValueError, match=r"jaxsal.resize\(maps, \(28, 28\)\)"):
        jaxsal.deletion(mnist, x, np.zeros((2, 2, 7, 7)), [1, 2])
    with pytest.raises(ValueError, match="NaN"):
        jaxsal.deletion(mnist, x, np.where(good == 0, np.nan, good), [1, 2])
    with pytest.raises(ValueError, match="more than the map's 784 positions"):
        jaxsal.deletion(mnist, x, good, [1, 2], steps=785)
    with pytest.raises(ValueError, match="unknown order"):
        jaxsal.insertion(mnist, x, good, [1, 2], order="random")
    with pytest.raises(ValueError, match="baseline of shape"):
        jaxsal.insertion(mnist, x, good, [1, 2], baseline=np.zeros((3, 28, 28, 1)))
    # a NaN fill makes the curves NaN (the message said "the maps")
    with pytest.raises(ValueError, match="fill contains NaN .*; the curves' scores would be"):
        jaxsal.deletion(mnist, x, good, [1, 2], fill=np.nan)


def _nan_above_5():
    """A linear model whose scores are NaN where an input's first value is above 5."""
    m, w = _linear()

    def f(p, v):
        flat = v.reshape(len(v), -1)
        return jnp.where(flat[:, :1] > 5, jnp.nan, flat @ p)

    return jaxsal.FunctionModel(f, m.params)


def _push(key, xi):
    """A perturbation I of -10 at the first value (one function: part of the program)."""
    return jnp.zeros(xi.shape, xi.dtype).at[0, 0, 0].set(-10.0)


def _scored(method, m, x, check_finite=True):
    """``method``'s values on ``x`` (first values: -20, input 1's chosen by the case): the
    curves' areas, or the infidelity values; the copies it perturbs push input 1's first
    value above 5 (fill / baseline 6 for input 1 alone; I = -10 at the first value)."""
    fill = np.zeros_like(x)
    fill[1, 0, 0, 0] = 6.0
    maps = _x((2, 4, 5, 2), n=len(x), seed=4)  # (N, T, H, W, C)
    if method == "infidelity":
        return jaxsal.infidelity(m, x, maps, [0, 2], key=0, n=3, perturbation=_push,
                                 check_finite=check_finite)
    fn = getattr(jaxsal, method)
    other = {"fill": fill} if method == "deletion" else {"baseline": fill}
    return fn(m, x, maps[..., 0], [0, 2], steps=4, check_finite=check_finite, **other).auc


@pytest.mark.parametrize("method", ["deletion", "insertion", "infidelity"])
@pytest.mark.parametrize("where", ["clean", "perturbed"])
def test_non_finite_scores_are_refused_naming_the_input(method, where):
    """A NaN/inf score made NaN areas and infidelity values without a word (review probes
    p5, p12), where occlusion and rise raise NonFiniteMaps. Now, with check_finite (the
    default), the same: naming the inputs, saying whether the clean input's score (x itself)
    or some perturbed copies' are not finite. check_finite=False returns the values as
    computed: NaN for that input alone."""
    m = _nan_above_5()
    x = _x()
    x[:, 0, 0, 0] = -20.0
    x[1, 0, 0, 0] = 6.0 if where == "clean" else 0.0
    copies = {"deletion": "deleted copies", "insertion": "inserted copies",
              "infidelity": r"perturbed copies x - I"}[method]
    said = (r"the model's score on the clean input \(.*\) is NaN/inf for input 1"
            if where == "clean" else
            rf"the model's score on some {copies} of input 1 is NaN or inf \(\d+ of ")
    with pytest.raises(jaxsal.NonFiniteMaps, match=rf"{method}: the .* of input 1 are not "
                                                   rf"finite: {said}.*check_finite=False"
                       ) as e:
        _scored(method, m, x)
    assert e.value.rows == [1]
    got = np.asarray(_scored(method, m, x, check_finite=False))
    assert got.shape == (3, 2) and np.isnan(got[1]).all() and np.isfinite(got[[0, 2]]).all()
    if where == "clean":  # nothing is checked under the caller's jit: NaN as computed
        jitted = np.asarray(jax.jit(lambda: _scored(method, m, x))())
        np.testing.assert_array_equal(np.isnan(jitted), np.isnan(got))


def test_an_infinite_score_makes_an_infinite_area_as_the_message_says():
    """A score of -inf (log of a deleted value, 0) makes the curve's area -inf, not NaN, as
    the docstring and the NonFiniteMaps message said: both now say 'NaN or +-inf'."""
    m = jaxsal.FunctionModel(lambda p, x: jnp.stack([jnp.log(x).mean((1, 2, 3)),
                                                     x.mean((1, 2, 3))], -1) * p,
                             jnp.float32(1.0), input_shape=(2, 2, 1))  # target 0: log
    x = np.random.default_rng(0).uniform(0.5, 1.0, (2, 2, 2, 1)).astype(np.float32)
    maps = np.random.default_rng(1).uniform(size=(2, 2, 2)).astype(np.float32)
    c = jaxsal.deletion(m, x, maps, 0, fill=0.0, steps=4, check_finite=False)
    np.testing.assert_allclose(c.scores[:, 0], np.log(x).mean((1, 2, 3)), rtol=1e-6)
    assert (np.asarray(c.scores[:, 1:]) == -np.inf).all()  # log(0): a deleted value
    assert (np.asarray(c.auc) == -np.inf).all()
    with pytest.raises(jaxsal.NonFiniteMaps, match=r"so the curves would not be finite \(NaN "
                       r"or \+-inf\).*check_finite=False to get the curves as computed "
                       r"\(NaN or \+-inf\)"):
        jaxsal.deletion(m, x, maps, 0, fill=0.0, steps=4)
    doc = " ".join(jaxsal.deletion.__doc__.split())
    assert "its curve's area not finite (NaN or +-inf" in doc


# ------------------------------------------------------------------ infidelity
def test_infidelity_of_a_linear_models_gradient_is_zero_and_its_double_has_the_expected_error():
    m, w = _linear()
    x = _x()
    grads = np.broadcast_to(w.T.reshape(1, 3, 4, 5, 2), (3, 3, 4, 5, 2))
    zero = np.asarray(jaxsal.infidelity(m, x, grads, [0, 1, 2], key=0, noise_std=0.1))
    assert zero.shape == (3, 3) and np.abs(zero).max() < 1e-9
    # maps 2w: (<2w, I> - <w, I>)^2 = <w, I>^2, mean sigma^2 |w|^2 over many draws
    two = np.asarray(jaxsal.infidelity(m, x, 2 * grads, [0, 1, 2], key=0, n=4000,
                                       noise_std=0.1))
    np.testing.assert_allclose(two, np.broadcast_to(0.01 * (w ** 2).sum(0), (3, 3)), rtol=0.1)
    # normalize: 2w scaled by its best beta (1/2) is exact again
    norm = np.asarray(jaxsal.infidelity(m, x, 2 * grads, [0, 1, 2], key=0, noise_std=0.1,
                                        normalize=True))
    assert np.abs(norm).max() < 1e-6 * np.abs(two).max()
    # pixel maps: one draw per pixel shared by its channels; the channel sum is exact
    pix = np.asarray(jaxsal.infidelity(m, x, grads.sum(-1), [0, 1, 2], key=0, noise_std=0.1))
    assert np.abs(pix).max() < 1e-9
    # with baseline=: maps w (x - b) are read against I / (x - b)
    b = 0.5
    rel = np.asarray(jaxsal.infidelity(m, x, grads * (x[:, None] - b), [0, 1, 2], key=0,
                                       noise_std=0.1, baseline=b))
    assert np.abs(rel).max() < 1e-8
    # ... also maps of pixels of a one-channel input
    m1, w1 = _linear((4, 5, 1))
    x1 = _x((4, 5, 1))
    g1 = np.broadcast_to(w1.T.reshape(1, 3, 4, 5), (3, 3, 4, 5)) * (x1[:, None, ..., 0] - b)
    rel1 = np.asarray(jaxsal.infidelity(m1, x1, g1, [0, 1, 2], key=0, noise_std=0.1,
                                        baseline=b))
    assert np.abs(rel1).max() < 1e-8
    off = np.asarray(jaxsal.infidelity(m1, x1, g1, [0, 1, 2], key=0, noise_std=0.1))
    assert off.min() > 1e-4  # read against I instead of I / (x - b): far off


def _tanh_model():
    w = np.random.default_rng(3).normal(size=(12, 2)).astype(np.float32)

    def f(p, x):
        return jnp.tanh(x.reshape(len(x), -1)) @ p

    return jaxsal.FunctionModel(f, jnp.asarray(w)), w


def test_infidelity_is_its_definition_with_given_perturbations():
    """A perturbation function that ignores its key: every draw is the same I (per input),
    so the value is the squared error of that one perturbation, computed by hand."""
    m, _ = _tanh_model()
    x = _x((3, 4, 1), n=2)
    maps = _x((2, 3, 4, 1), n=2, seed=5)
    fixed = jnp.asarray(_x((3, 4, 1), n=1, seed=6)[0]) * 0.3

    def same(key, xi):
        return fixed

    got = np.asarray(jaxsal.infidelity(m, x, maps, [0, 1], key=1, n=3, perturbation=same))
    s0, s1 = np.asarray(m(x)), np.asarray(m(x - fixed[None]))
    want = (np.einsum("ntijc,ijc->nt", maps, fixed) - (s0 - s1)) ** 2
    np.testing.assert_allclose(got, want, rtol=1e-5)
    lin = np.einsum("ntijc,ijc->nt", maps, fixed)
    beta = lin * (s0 - s1) / lin ** 2
    normed = np.asarray(jaxsal.infidelity(m, x, maps, [0, 1], key=1, n=3, perturbation=same,
                                          normalize=True))
    np.testing.assert_allclose(normed, (beta * lin - (s0 - s1)) ** 2, atol=1e-6)


def test_infidelity_draws_depend_on_the_key_and_the_global_index_only():
    m, _ = _tanh_model()
    x = _x((3, 4, 1), n=5)
    maps = _x((2, 3, 4, 1), n=5, seed=7)
    kw = dict(key=jax.random.key(4), n=7, noise_std=0.5)
    full = np.asarray(jaxsal.infidelity(m, x, maps, [0, 1], **kw))
    for extra in (dict(batch_size=4), dict(memory_budget=1)):
        np.testing.assert_allclose(jaxsal.infidelity(m, x, maps, [0, 1], **kw, **extra), full,
                                   rtol=1e-5)
    np.testing.assert_allclose(jaxsal.infidelity(m, x[2:], maps[2:], [0, 1], index_offset=2,
                                                 **kw), full[2:], rtol=1e-5)
    other = np.asarray(jaxsal.infidelity(m, x, maps, [0, 1], **{**kw, "key": 5}))
    assert np.abs(other - full).max() > 1e-3 * np.abs(full).max()


def test_infidelity_errors(mnist, mnist_digits):
    x = mnist_digits[:2]
    maps = np.zeros((2, 28, 28), np.float32)
    with pytest.raises(ValueError, match="explicit PRNG key"):
        jaxsal.infidelity(mnist, x, maps, 1)
    m2, _ = _linear()
    with pytest.raises(ValueError, match=r"needs maps of x's shape \(3, 4, 5, 2\); got"):
        jaxsal.infidelity(m2, _x(), np.zeros((3, 4, 5)), 1, key=0, baseline=0.0)
    with pytest.raises(ValueError, match=r"one map's shape \(28, 28\)"):
        jaxsal.infidelity(mnist, x, maps, 1, key=0, perturbation=lambda k, xi: xi)
    with pytest.raises(ValueError, match="noise_std"):
        jaxsal.infidelity(mnist, x, maps, 1, key=0, noise_std=0)
    with pytest.raises(ValueError, match="baseline contains NaN .*; the infidelity would be"):
        jaxsal.infidelity(m2, _x(), np.zeros((3, 4, 5, 2)), 1, key=0, baseline=np.inf)
    # normalize is a flag like the others: the string "False" was taken as True
    for bad in ("False", "no", 2):
        with pytest.raises(TypeError, match="normalize"):
            jaxsal.infidelity(m2, _x(), np.zeros((3, 4, 5)), 1, key=0, normalize=bad)


# ------------------------------------------------------------------ sensitivity
def test_sensitivity_of_a_constant_map_is_zero_and_of_the_input_is_its_relative_change():
    m, _ = _linear()
    x = _x()
    const = np.asarray(jaxsal.sensitivity_max(lambda v: jaxsal.saliency(m, v, 1), x, key=0))
    assert const.shape == (3,) and np.abs(const).max() < 1e-6
    seen = []

    def identity(v):
        seen.append(np.asarray(v))
        return v

    got = np.asarray(jaxsal.sensitivity_max(identity, x, key=0, n=5, radius=0.1))
    assert len(seen) == 6
    deltas = np.stack(seen[1:]) - x[None]
    assert np.abs(deltas).max() <= 0.1 and np.abs(deltas).max() > 0.09
    want = (np.sqrt((deltas.reshape(5, 3, -1) ** 2).sum(-1)).max(0)
            / np.sqrt((x.reshape(3, -1) ** 2).sum(-1)))
    np.testing.assert_allclose(got, want, rtol=1e-5)
    inf = np.asarray(jaxsal.sensitivity_max(identity, x, key=0, n=5, radius=0.1, ord=np.inf))
    np.testing.assert_allclose(inf, np.abs(deltas).reshape(5, 3, -1).max(-1).max(0)
                               / np.abs(x).reshape(3, -1).max(-1), rtol=1e-5)
    # the same key and global index give the same draws
    part = np.asarray(jaxsal.sensitivity_max(identity, x[1:], key=0, n=5, radius=0.1,
                                             index_offset=1))
    np.testing.assert_allclose(part, got[1:], rtol=1e-6)


def test_sensitivity_per_target_and_errors(mnist, mnist_digits, compiles):
    x = mnist_digits[:3]

    def explain(v):
        return jaxsal.saliency(mnist, v, [0, 5])

    s = np.asarray(jaxsal.sensitivity_max(explain, x, key=1, n=3, batch_dims=2))
    assert s.shape == (3, 2) and (s > 0).all()
    before = compiles.n
    jaxsal.sensitivity_max(explain, x, key=2, n=2, batch_dims=2)
    assert compiles.n == before  # the method's program and the draws are reused
    with pytest.raises(ValueError, match="same shape"):
        calls = iter(range(10))
        jaxsal.sensitivity_max(lambda v: v[: 3 - min(1, next(calls))], x, key=0)
    with pytest.raises(ValueError, match="ord"):
        jaxsal.sensitivity_max(explain, x, key=0, ord=3)
    with pytest.raises(TypeError, match="floating"):
        jaxsal.sensitivity_max(explain, np.zeros((2, 4), np.int32), key=0)


def test_sensitivity_max_raises_non_finite_maps_naming_the_inputs():
    """NaN/inf maps from explain (of x itself or of a perturbed copy) raise NonFiniteMaps
    naming the inputs, as the methods, deletion, insertion and infidelity do; it was a plain
    ValueError naming none. Under the caller's jit nothing is checked: NaN comes back."""
    x = np.linspace(0.1, 1.0, 12, dtype=np.float32).reshape(3, 4)
    nan_row = np.asarray([0.0, np.nan, 0.0])[:, None]
    with pytest.raises(jaxsal.NonFiniteMaps, match=r"sensitivity_max: explain returned maps "
                       r"that are not finite \(NaN or inf\) for input 1 \(on x\)") as e:
        jaxsal.sensitivity_max(lambda v: v + nan_row, x, key=0, n=2)
    assert e.value.rows == [1]
    calls = iter(range(10))

    def late(v):  # finite on x, inf for inputs 0 and 2 of the second perturbation
        return v * np.where(next(calls) == 2, np.asarray([np.inf, 1, np.inf])[:, None], 1)

    with pytest.raises(jaxsal.NonFiniteMaps, match=r"for inputs 0, 2 \(on perturbation 1\)"
                       ) as e:
        jaxsal.sensitivity_max(late, x, key=0, n=3)
    assert e.value.rows == [0, 2]
    got = jax.jit(lambda v: jaxsal.sensitivity_max(lambda a: a + nan_row, v, key=0, n=2))(x)
    assert np.isnan(np.asarray(got)).tolist() == [False, True, False]


def test_sensitivity_max_refuses_ragged_lists_as_no_array():
    """Nested lists of rows of different lengths are no array; they were refused as 'the
    inputs of a model of several?', like a list of input arrays (which the shared error of a
    method of one input array now names)."""
    with pytest.raises(TypeError, match=r"sensitivity_max: expected x as one floating array "
                                        r"\(N, \.\.\.\), got a list that is no array .*pass "
                                        r"np\.asarray\(x\)"):
        jaxsal.sensitivity_max(lambda a: a, [[1.0, 2.0], [3.0]], key=0)


def test_sensitivity_of_float16_maps_is_measured_without_overflow():
    """Maps in float16 (an explain of a float16 model, or one that casts): the norms are taken
    in float32. A float16 sum of squares overflows above 65504 (here: 256 values near 300),
    and the sensitivity came out 0 (a finite change over an infinite norm) for every ord."""
    x = np.random.default_rng(0).uniform(0.5, 1.0, size=(2, 16, 16, 1)).astype(np.float16)
    seen = []

    def explain(v):
        e = (300 * jnp.asarray(v)).astype(jnp.float16)
        seen.append(np.asarray(e, np.float64))
        return e

    for ord in (2, 1, np.inf):
        seen.clear()
        got = np.asarray(jaxsal.sensitivity_max(explain, x, key=0, n=3, ord=ord))
        e0, rest = seen[0].reshape(2, -1), np.stack(seen[1:]).reshape(3, 2, -1)
        want = (np.linalg.norm(rest - e0, ord, axis=-1).max(0)
                / np.linalg.norm(e0, ord, axis=-1))
        assert want.min() > 1e-3  # (the draws change the float16 maps)
        np.testing.assert_allclose(got, want, rtol=1e-4)


@pytest.mark.parametrize("dtype", [jnp.uint8, jnp.bool_, np.int64])
def test_sensitivity_of_integer_and_bool_maps_is_that_of_the_same_values_as_floats(dtype):
    """Maps of uint8 (a map saved as an 8-bit image) or bool (a thresholded mask): the change
    e(x + d) - e(x) was taken in the maps' dtype. uint8 wrapped around (0 - 1 = 255: 54.37
    instead of 0.213 in the review's probe), bool raised JAX's raw TypeError ('sub does not
    accept dtype bool'). NumPy int64 maps beyond int32's range wrapped around without x64
    (2**32 + 1024 read as 1024). They are compared as the float32 maps of the same values."""
    x = np.random.default_rng(0).uniform(size=(2, 6, 6, 1)).astype(np.float32)
    if dtype == np.int64:  # NumPy, exact in float32 (multiples of its spacing there, 512)
        def explain(v):
            return np.asarray(v > 0.5, np.int64) * 1024 + 2 ** 32

        def as_floats(v):
            return (v > 0.5).astype(jnp.float32) * 1024 + 2.0 ** 32
    else:
        def explain(v):
            return (v > 0.5).astype(dtype)

        def as_floats(v):
            return (v > 0.5).astype(jnp.float32)
    got = np.asarray(jaxsal.sensitivity_max(explain, x, key=0, radius=0.05))
    want = np.asarray(jaxsal.sensitivity_max(as_floats, x, key=0, radius=0.05))
    assert want.min() > 0  # (the draws flip some values)
    np.testing.assert_allclose(got, want, rtol=1e-6)


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
def test_half_precision_inputs_are_perturbed_in_float32(dtype):
    """float16/bfloat16 inputs were perturbed in their own dtype: the draw and the sum were
    rounded to the input's grid (bfloat16's spacing is 2^-8 on [0.5, 1), 2 x the radius
    here), so most values did not change and the others moved by up to twice the radius.
    They are widened to float32 first (exactly, as the methods widen half inputs) and
    explain gets the float32 perturbed inputs: the same draws as for the float32 copy."""
    x = jnp.asarray(np.random.default_rng(0).uniform(0.3, 0.9, size=(2, 6, 6, 1)), dtype)
    seen = []

    def identity(v):
        seen.append(v)
        return v

    got = np.asarray(jaxsal.sensitivity_max(identity, x, key=0, n=3, radius=0.002))
    assert all(v.dtype == jnp.float32 for v in seen)
    deltas = np.stack([np.asarray(v, np.float64) for v in seen[1:]]) - np.asarray(x,
                                                                                 np.float64)
    assert np.abs(deltas).max() <= 0.002 and (deltas == 0).mean() < 0.01
    want = np.asarray(jaxsal.sensitivity_max(lambda v: v, x.astype(jnp.float32), key=0, n=3,
                                             radius=0.002))
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_float64_maps_keep_their_order_and_ranks_under_x64():
    """Under jax_enable_x64 methods return float64 maps for float64 inputs. Their values were
    rounded to float32 first: values apart by less than float32's resolution tied, so
    deletion went in raster order instead of the map's, and rank_correlation called a map
    that is not constant constant (NaN)."""
    x64 = getattr(jax, "enable_x64", None)
    if x64 is None:  # older JAX
        from jax.experimental import enable_x64 as x64
    with x64(True):
        w = np.arange(1.0, 7.0).reshape(6, 1)
        m = jaxsal.FunctionModel(lambda p, v: v @ p, jnp.asarray(w))
        x = jnp.ones((1, 6))
        maps = (1.0 + 1e-10 * np.arange(6))[None]  # the last position first (1 in float32)
        c = jaxsal.deletion(m, x, jnp.asarray(maps), 1, steps=6)
        least = jaxsal.deletion(m, x, jnp.asarray(maps), 1, steps=6, order="least")
        corr = jaxsal.rank_correlation(jnp.asarray(maps), jnp.asarray(maps[:, ::-1]))
    # each position's share of the score (x is 1), increasing as the map: the map's order
    # is the contributions' (raster order is the reverse)
    contrib = w[:, 0][None]
    np.testing.assert_allclose(c.scores, _curve_by_hand(contrib.sum(-1), contrib, 6),
                               rtol=1e-12)
    np.testing.assert_allclose(least.scores, _curve_by_hand(contrib.sum(-1), contrib, 6,
                                                            order="least"), rtol=1e-12)
    np.testing.assert_allclose(corr, [-1.0], rtol=1e-12)


@pytest.mark.parametrize("x64", [False, True])
def test_integer_maps_are_ranked_exactly_not_rounded_to_float(x64):
    """Integer maps were made float32 (float64 under x64) before deletion ranked them: ints
    1 apart beyond 2**24 (2**53) tied and went in raster order. They are ranked as ints, the
    smallest int too (whose negation wraps onto itself); under x64 int32 maps' patch sums
    are exact (float64)."""
    x64_ctx = getattr(jax, "enable_x64", None)
    if x64_ctx is None:  # older JAX
        from jax.experimental import enable_x64 as x64_ctx
    dtype, bits = (np.int64, 63) if x64 else (np.int32, 31)
    lo, hi, mid = np.iinfo(dtype).min, np.iinfo(dtype).max, 2 ** (bits - 7)
    maps = np.array([[lo, lo + 1, mid, mid + 1, mid + 2, hi]], dtype)  # increasing
    with x64_ctx(x64):
        w = np.arange(1.0, 7.0).reshape(6, 1)  # each position's share, increasing as the map
        m = jaxsal.FunctionModel(lambda p, v: v.reshape(v.shape[0], -1) @ p, jnp.asarray(w))
        c = jaxsal.deletion(m, np.ones((1, 6), np.float32), maps, 1, steps=6)
        least = jaxsal.deletion(m, np.ones((1, 6), np.float32), maps, 1, steps=6,
                                order="least")
        if x64:  # cells of 2 (1 x 6 pixels): sums -2**31, 2**25 + 1 and 2**25 + 2 (both
            # 2**25 in float32)
            m32 = np.array([[-2 ** 31, 0, 2 ** 25, 1, 2 ** 25, 2]], np.int32)
            p = jaxsal.deletion(m, np.ones((1, 1, 6, 1), np.float32), m32.reshape(1, 1, 6),
                                1, steps=3, patch=(1, 2))
            # infidelity reads the values as floats: int64 maps as float64 (as documented;
            # they were float32: 2**30 + 1 read as 2**30)
            wide = (2 ** 30 + np.array([[3, 1, 5, 2, 6, 4]])).astype(np.int64)
            inf = [np.asarray(jaxsal.infidelity(m, np.ones((1, 6)), v, 0, key=0, n=2))
                   for v in (wide, wide.astype(np.float64))]
    contrib = w[:, 0][None]
    np.testing.assert_allclose(c.scores, _curve_by_hand(contrib.sum(-1), contrib, 6))
    np.testing.assert_allclose(least.scores, _curve_by_hand(contrib.sum(-1), contrib, 6,
                                                            order="least"))
    if x64:
        cells = m32.astype(np.int64).reshape(1, 3, 2).sum(-1)  # increasing, as the shares
        np.testing.assert_array_equal(np.diff(cells) > 0, [[True, True]])
        share = contrib.reshape(1, 3, 2).sum(-1)
        np.testing.assert_allclose(p.scores, _curve_by_hand(share.sum(-1), share, 3))
        np.testing.assert_array_equal(inf[0], inf[1])


def test_bfloat16_maps_are_taken_as_the_float32_maps_of_their_values():
    """bfloat16 maps (NumPy kind "V", JAX's or ml_dtypes' NumPy arrays) were refused by
    deletion, insertion and infidelity as "not real numbers", where float16 ones are taken.
    They are taken as the float32 maps of their values (exact)."""
    w = np.arange(1.0, 7.0).reshape(6, 1)
    m = jaxsal.FunctionModel(lambda p, v: v @ p, jnp.asarray(w, jnp.float32))
    x = np.ones((1, 6), np.float32)
    maps32 = np.array([[3.0, 1.0, 5.0, 2.0, 6.0, 4.0]], np.float32)
    # (float8: past the type check, JAX refused to promote it with float32)
    for maps in (jnp.asarray(maps32, jnp.bfloat16), maps32.astype(jnp.bfloat16),
                 maps32.astype(jnp.float8_e4m3fn)):
        for f in (jaxsal.deletion, jaxsal.insertion):
            np.testing.assert_array_equal(f(m, x, maps, 0, steps=3).scores,
                                          f(m, x, maps32, 0, steps=3).scores)
        np.testing.assert_array_equal(jaxsal.infidelity(m, x, maps, 0, key=0, n=2),
                                      jaxsal.infidelity(m, x, maps32, 0, key=0, n=2))


def test_noise_std_and_radius_take_a_scalar_array_as_smoothgrads_noise_std_does():
    """A 0-d array (jnp.float32(0.1), np.array(0.1)) is the number it holds, as smoothgrad's
    noise_std takes it; infidelity and sensitivity_max refused it as no 'positive number'.
    A traced one (under the caller's jit) is refused, saying why: it is part of the compiled
    program."""
    m, _ = _tanh_model()
    x = _x((3, 4, 1), n=2)
    maps = _x((2, 3, 4, 1), n=2, seed=5)
    want = np.asarray(jaxsal.infidelity(m, x, maps, [0, 1], key=1, n=3, noise_std=0.25))
    for std in (jnp.float32(0.25), np.array(0.25), np.float64(0.25)):
        np.testing.assert_array_equal(
            jaxsal.infidelity(m, x, maps, [0, 1], key=1, n=3, noise_std=std), want)
    sens = np.asarray(jaxsal.sensitivity_max(lambda v: v, x, key=0, n=2, radius=0.25))
    np.testing.assert_array_equal(
        jaxsal.sensitivity_max(lambda v: v, x, key=0, n=2, radius=jnp.float32(0.25)), sens)
    for bad in (jnp.zeros(1) + 0.25, jnp.float32(-0.25), jnp.float32(np.nan), True, "0.25"):
        with pytest.raises(ValueError,
                           match=r"expected noise_std > 0 \(a finite number: the perturbations"):
            jaxsal.infidelity(m, x, maps, [0, 1], key=1, noise_std=bad)
        with pytest.raises(ValueError, match="expected radius > 0"):
            jaxsal.sensitivity_max(lambda v: v, x, key=0, radius=bad)
    with pytest.raises(ValueError, match=r"noise_std .*traced .*a Python number"):
        jax.jit(lambda s: jaxsal.infidelity(m, x, maps, [0, 1], key=1, noise_std=s))(0.25)
    with pytest.raises(ValueError, match=r"radius .*traced .*a Python number"):
        jax.jit(lambda s: jaxsal.sensitivity_max(lambda v: v, x, key=0, radius=s))(0.25)


def test_sensitivity_refuses_several_maps_from_explain():
    """explain returning a list (tuple, dict) of maps, as a method returns them for a model
    of several inputs: they were stacked into one array, the list's axis first, so with as
    many maps as inputs (2 here) each 'input's' sensitivity mixed both inputs' maps without a
    word (and with another number the error named a shape no explain returned)."""
    x = _x((3, 4, 1), n=2)
    for several in (lambda v: [v, 2 * v], lambda v: (v, v), lambda v: {"a": v, "b": v}):
        with pytest.raises(ValueError, match=r"sensitivity_max: explain returned a "
                                             r"(list|tuple|dict) of 2 maps .*one array of "
                                             r"maps \(N, \.\.\.\)"):
            jaxsal.sensitivity_max(several, x, key=0, n=2)


def test_a_list_of_maps_is_refused_not_stacked_on_the_wrong_axis():
    """Maps given as a list of arrays (one per target, as separate calls return them) were
    stacked by np.asarray with the list's axis first, (T, N, ...): with as many targets as
    inputs the shapes passed and every curve and infidelity paired an input with another
    target's map, without a word."""
    m, _ = _linear()
    x = _x(n=2)
    per_target = [np.asarray(jaxsal.gradient_x_input(m, x, t)) for t in (0, 2)]  # (2, 4, 5)
    for call in (lambda mp: jaxsal.deletion(m, x, mp, [0, 2], steps=4),
                 lambda mp: jaxsal.insertion(m, x, mp, [0, 2], steps=4),
                 lambda mp: jaxsal.infidelity(m, x, mp, [0, 2], key=0)):
        for several in (per_target, tuple(per_target), dict(zip("ab", per_target))):
            with pytest.raises(ValueError, match=r"expected maps as one array, got a "
                                                 r"(list|tuple|dict) of 2 arrays.*"
                                                 r"np\.stack\(maps, axis=1\)"):
                call(several)
    jaxsal.deletion(m, x, np.stack(per_target, axis=1), [0, 2], steps=4)  # (N, T, H, W)


def test_float64_maps_beyond_float32_s_range_are_read_by_their_order_or_refused_as_such():
    """Without x64, JAX computes float64 maps in float32: finite values above its range
    (1e39) became inf and the maps were refused as "NaN or infinite". Deletion and insertion
    read each map's order only, so such a map is scaled by a power of two (exact): the curves
    are those of the contributions themselves. Infidelity with ``normalize=True`` scales each
    map by its best beta (scale-free: exact again for a multiple of the gradient); without it
    the values themselves count, so the maps are refused saying why, as sensitivity_max
    refuses such maps from explain."""
    m, w = _linear()
    x = _x()
    contrib = np.einsum("nd,dk->nkd", x.reshape(3, -1), w)
    scale = np.array([1e45, 1.0, 2e300])[:, None, None]  # (one map per input in range)
    maps = (contrib * scale).reshape(3, 3, 4, 5, 2)
    want = _curve_by_hand(contrib.sum(-1), contrib, 8)
    c = jaxsal.deletion(m, x, maps, [0, 1, 2], steps=8)
    np.testing.assert_allclose(c.scores, want, atol=2e-5 * np.abs(want).max())
    ins = jaxsal.insertion(m, x, maps.tolist(), [0, 1, 2], steps=8)  # (a list: float64 too)
    np.testing.assert_allclose(ins.scores, contrib.sum(-1)[..., None] - want,
                               atol=2e-5 * np.abs(want).max())
    grads = np.broadcast_to(w.T.reshape(1, 3, 4, 5, 2), (3, 3, 4, 5, 2)) * scale[..., None, None]
    norm = np.asarray(jaxsal.infidelity(m, x, grads, [0, 1, 2], key=0, noise_std=0.1,
                                        normalize=True))
    # (rounding only: below 1e-6 of the error of maps 2w unnormalized, 0.01 |w|^2; as the
    # maps in range)
    assert np.isfinite(norm).all() and np.abs(norm).max() < 1e-8 * (w ** 2).sum(0).max()
    peak = f"{np.abs(grads).max():.3g}".replace("+", r"\+")
    with pytest.raises(ValueError, match=f"finite values up to {peak} in magnitude, beyond "
                                         "float32's range.*normalize=True"):
        jaxsal.infidelity(m, x, grads, [0, 1, 2], key=0)
    peak = f"{float(np.abs(x).max()) * 1e39:.3g}".replace("+", r"\+")
    with pytest.raises(ValueError, match=f"explain returned maps .for x.: the maps hold "
                                         f"finite values up to {peak} in magnitude, beyond "
                                         "float32's range.*float64 maps.*divide them"):
        jaxsal.sensitivity_max(lambda v: np.asarray(v, np.float64) * 1e39, x, key=0, n=1)


def _huge(maps, k=127):
    """``maps`` (float32, largest magnitude below 2) times ``2**k``: exact, within float32's
    range (below 2**128, 3.4e38) for ``k <= 127``."""
    big = np.asarray(maps, np.float32) * np.float32(2.0 ** k)
    assert np.isfinite(big).all()
    return big


def test_float32_maps_huge_but_in_range_give_the_scores_of_the_maps_scaled_down():
    """Float32 maps within float32's range but huge (peak 2**127, 1.7e38) overflowed inside
    the evaluations: patch sums of deletion (inf and inf - inf = NaN cells, ordered at
    random), infidelity(normalize=True)'s sums of squares (NaN values) and sensitivity_max's
    norms and differences (NaN or inf). These read each map up to a positive factor, so the
    values are those of the same maps divided by the exact power of two 2**127."""
    m, w = _linear((4, 6, 2))
    x = _x((4, 6, 2))
    # 2 x 3 cells of 2 x 2 pixels, summing to 0, 3.2, 4, 0.4, -2 and 3.8: times 2**127 all
    # but 0.4 and -2 went beyond 2**128 (inf, or NaN for 1.9 + 1.9 - 1.9 - 1.9)
    cells = [[1.9, 1.9, -1.9, -1.9], [0.8] * 4, [1.0] * 4, [0.1] * 4, [-0.5] * 4,
             [1.9, 1.9, 0.0, 0.0]]
    cells = np.asarray(cells, np.float32).reshape(2, 3, 2, 2)
    small = np.broadcast_to(cells.transpose(0, 2, 1, 3).reshape(1, 4, 6), (3, 4, 6))
    big = _huge(small)
    want = jaxsal.deletion(m, x, small, 2, patch=2, steps=6).scores
    got = jaxsal.deletion(m, x, big, 2, patch=2, steps=6).scores
    np.testing.assert_array_equal(got, want)
    # a map that is not a gradient: its normalized infidelity is not 0
    grads = np.broadcast_to(w[:, 1].reshape(1, 4, 6, 2), x.shape)
    maps = grads * (1.0 + 0.5 * np.sin(np.arange(48).reshape(4, 6, 2)))[None]
    maps = (maps / np.abs(maps).max()).astype(np.float32)
    want = np.asarray(jaxsal.infidelity(m, x, maps, 1, key=0, noise_std=0.1, normalize=True))
    got = np.asarray(jaxsal.infidelity(m, x, _huge(maps), 1, key=0, noise_std=0.1,
                                       normalize=True))
    assert np.isfinite(want).all() and want.min() > 0
    np.testing.assert_allclose(got, want, rtol=1e-6)
    # sensitivity: the signs flip under the perturbations (differences beyond 2**128 too)

    def wavy(v):
        return 1.9 * jnp.sin(300.0 * v)

    for ord in (1, 2, np.inf):
        want = np.asarray(jaxsal.sensitivity_max(wavy, x, key=0, n=3, ord=ord))
        got = np.asarray(jaxsal.sensitivity_max(lambda v: wavy(v) * 2.0 ** 127, x, key=0,
                                                n=3, ord=ord))
        assert np.isfinite(want).all() and want.min() > 0.1
        np.testing.assert_allclose(got, want, rtol=1e-6, err_msg=f"ord={ord}")


def test_sensitivity_of_tiny_maps_is_their_relative_change_not_their_absolute_one():
    """Maps of peak 2**-100 (8e-31): their squares underflowed to 0 in float32, so the norm of
    e(x) came out 0 and the change was measured as absolute (about 1e-30), not relative."""
    x = _x((4, 6, 2))

    def wavy(v):
        return 1.9 * jnp.sin(300.0 * v)

    for ord in (1, 2, np.inf):
        want = np.asarray(jaxsal.sensitivity_max(wavy, x, key=0, n=3, ord=ord))
        got = np.asarray(jaxsal.sensitivity_max(lambda v: wavy(v) * 2.0 ** -100, x, key=0,
                                                n=3, ord=ord))
        np.testing.assert_allclose(got, want, rtol=1e-6, err_msg=f"ord={ord}")


def test_infidelity_of_huge_float32_maps_without_normalize_is_refused_naming_the_peak():
    """Without normalize the infidelity reads the maps' values: maps of peak 2**127 (in
    float32's range) make squared errors far beyond it, which came back inf without a word.
    They are refused naming the peak and the fixes (scale the maps, normalize=True)."""
    m, w = _linear((4, 6, 2))
    x = _x((4, 6, 2))
    grads = np.broadcast_to(w[:, 1].reshape(1, 4, 6, 2), x.shape)
    big = _huge(grads / np.abs(grads).max())
    peak = f"{np.abs(big).max():.3g}".replace("+", r"\+")
    with pytest.raises(ValueError, match=f"infidelity: the values for inputs 0, 1, 2 are "
                                         f"beyond float32's range.*maps up to {peak} in "
                                         "magnitude.*normalize=True"):
        jaxsal.infidelity(m, x, big, 1, key=0, noise_std=0.1)
    # a value in range passes: the gradient's infidelity is 0 at any scale
    ok = jaxsal.infidelity(m, x, grads * np.float32(2.0 ** 40), 1, key=0, noise_std=0.1)
    assert np.isfinite(ok).all()


def test_sensitivity_of_a_zero_map_whose_change_is_beyond_float32_is_refused():
    """A map of norm 0 at x is compared by its absolute change (Captum's), which is not
    scale-free: maps of 1.7e38 on the perturbed inputs made a 2-norm beyond float32 (inf,
    without a word); refused naming the inputs and the peak. Its inf-norm is in range."""
    x = _x((4, 6, 2))

    def jump(v):
        return jnp.sign(v - x) * 2.0 ** 127

    with pytest.raises(ValueError, match=r"maps of norm 0 for x at inputs 0, 1, 2.*2-norm of "
                                         r"the change.*beyond float32's range.*1\.7e\+38.*"
                                         r"2\.0 \*\* 128"):
        jaxsal.sensitivity_max(jump, x, key=0, n=2)
    inf = np.asarray(jaxsal.sensitivity_max(jump, x, key=0, n=2, ord=np.inf))
    np.testing.assert_array_equal(inf, np.float32(2.0 ** 127))


def test_patches_of_maps_with_channels_are_refused_with_a_reduction_that_works():
    """deletion/insertion with patch= refused maps of x's own shape with "e.g. reduce='sum'",
    an option they do not take (TypeError). The message names jaxsal.reduce_channels;
    applied as written it gives the curve of the per-pixel sums (by hand)."""
    import re

    m, w = _linear((4, 6, 2))
    x = _x((4, 6, 2))
    per_value = np.einsum("nd,d->nd", x.reshape(3, -1), w[:, 2]).reshape(3, 4, 6, 2)
    maps = per_value
    with pytest.raises(ValueError, match=r"Reduce the channels first") as e:
        jaxsal.deletion(m, x, maps, 2, patch=(2, 3), steps=4)
    fix = re.search(r"\(e\.g\. (jaxsal\.reduce_channels\(maps, '\w+'\))", str(e.value)).group(1)
    c = jaxsal.deletion(m, x, eval(fix), 2, patch=(2, 3), steps=4)  # noqa: S307
    per_pixel = per_value.sum(-1)
    cells = per_pixel.reshape(3, 2, 2, 2, 3).sum((2, 4)).reshape(3, 4)
    want = _curve_by_hand(per_pixel.reshape(3, -1).sum(-1), cells, 4)
    np.testing.assert_allclose(c.scores, want, atol=2e-5 * np.abs(want).max())
