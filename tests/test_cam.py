"""The CAM family and occlusion, checked against by-hand NumPy computations on a one-conv model."""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsal
from model_import import load_keras

FIX = pathlib.Path(__file__).parent / "fixtures"
from scipy import ndimage  # noqa: E402  (declared in the test extras)

H, W, C, K, CLASSES = 9, 8, 2, 4, 3


def _conv_params(seed=0):
    rng = np.random.default_rng(seed)
    return {"k": rng.normal(size=(3, 3, C, K)).astype(np.float32),
            "b": (rng.normal(size=(K,)) * 0.1).astype(np.float32),
            "w": rng.normal(size=(K, CLASSES)).astype(np.float32),
            "c": rng.normal(size=(CLASSES,)).astype(np.float32)}


def _features(p, x):
    z = jax.lax.conv_general_dilated(x, p["k"], (1, 1), "VALID",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                     precision=jax.lax.Precision.HIGHEST)
    return jax.nn.relu(z + p["b"])


def _head(p, a):
    return a.mean(axis=(1, 2)) @ p["w"] + p["c"]


def _np_features(p, x):
    win = np.lib.stride_tricks.sliding_window_view(x, (3, 3), axis=(1, 2))  # N,h,w,C,3,3
    z = np.einsum("nhwcij,ijck->nhwk", win.astype(np.float64), p["k"].astype(np.float64))
    return np.maximum(z + p["b"], 0)


def _np_model(p, x):
    return _np_features(p, x).mean(axis=(1, 2)) @ p["w"] + p["c"]


@pytest.fixture(scope="module")
def conv():
    p = _conv_params()
    m = jaxsal.FunctionModel(features=_features, head_fn=_head, params=p, layer="conv",
                             input_shape=(H, W, C))
    x = np.random.default_rng(1).uniform(size=(3, H, W, C)).astype(np.float32)
    return m, p, x


def _zoom(cam, hw):
    return np.stack([ndimage.zoom(c, (hw[0] / c.shape[0], hw[1] / c.shape[1]), order=1)
                     for c in cam])


def test_one_conv_gradcam_by_hand(conv):
    m, p, x = conv
    A = _np_features(p, x)  # (N, h, w, K)
    h, w = A.shape[1:3]
    for c in range(CLASSES):
        weights = p["w"][:, c] / (h * w)  # dS/dA is constant over positions for a GAP head
        cam = np.maximum(np.einsum("nhwk,k->nhw", A, weights), 0)
        low = jaxsal.gradcam(m, x, c, upsample=False)
        np.testing.assert_allclose(low, cam, rtol=1e-4, atol=1e-6)
        up = jaxsal.gradcam(m, x, c)
        assert up.shape == (3, H, W)
        np.testing.assert_allclose(up, _zoom(cam, (H, W)), rtol=1e-4, atol=1e-6)
        # with a constant gradient, HiResCAM and XGrad-CAM reduce to Grad-CAM
        np.testing.assert_allclose(jaxsal.hirescam(m, x, c, upsample=False), cam, rtol=1e-4,
                                   atol=1e-6)
        np.testing.assert_allclose(jaxsal.xgradcam(m, x, c, upsample=False), cam, rtol=1e-4,
                                   atol=1e-6)
        lc = np.maximum(np.einsum("nhwk,k->nhw", A, np.maximum(weights, 0)), 0)
        np.testing.assert_allclose(jaxsal.layercam(m, x, c, upsample=False), lc, rtol=1e-4,
                                   atol=1e-6)


def test_gradcam_plus_plus_tf_keras_vis_formula(conv):
    m, p, x = conv
    A = _np_features(p, x)
    h, w = A.shape[1:3]
    s = _np_model(p, x)
    for c in range(CLASSES):
        G = np.broadcast_to(p["w"][:, c] / (h * w), A.shape)
        e = np.exp(s[:, c])[:, None, None, None]
        first, second, third = e * G, e * G ** 2, e * G ** 3
        gsum = A.sum(axis=(1, 2), keepdims=True)
        denom = second * 2 + third * gsum
        denom = denom + (second == 0)
        alphas = second / denom
        norm = alphas.sum(axis=(1, 2), keepdims=True)
        alphas = alphas / (norm + (norm == 0))
        wts = (np.maximum(first, 0) * alphas).sum(axis=(1, 2), keepdims=True)
        cam = np.maximum((wts * A).sum(-1), 0)
        got = jaxsal.gradcam_plus_plus(m, x, c, upsample=False)
        np.testing.assert_allclose(got, cam, rtol=1e-4, atol=1e-6 * np.abs(cam).max())
        paper = jaxsal.gradcam_plus_plus(m, x, c, upsample=False, variant="paper")
        a2 = np.where(G != 0, G ** 2 / (2 * G ** 2 + G ** 3 * gsum), 0)
        cam2 = np.maximum(((np.maximum(G, 0) * a2).sum(axis=(1, 2), keepdims=True) * A).sum(-1), 0)
        np.testing.assert_allclose(paper, cam2, rtol=1e-4, atol=1e-7)


def test_gradcam_plus_plus_stays_finite_where_tf_keras_vis_does_not(conv):
    """The tf-keras-vis variant's exp(S): scores shifted by +-100 (same gradients) gave inf
    and NaN maps (0 * inf at dead positions) or an all-zero one; now the factor is clipped
    to exp(+-87.., 88) and the normalized map is the unshifted one. A channel whose
    denominator 2 G^2 + G^3 sum(A) cancels with G != 0 gave NaN everywhere: its alpha is 0."""
    m, p, x = conv

    def scaled(cam):  # each map over its maximum (normalize's eps is absolute)
        return cam / cam.max(axis=(1, 2), keepdims=True)

    want = scaled(np.asarray(jaxsal.gradcam_plus_plus(m, x, 1, upsample=False)))
    for shift in (100.0, -110.0):
        q = dict(p, c=p["c"] + shift)
        mm = jaxsal.FunctionModel(features=_features, head_fn=_head, params=q, layer="conv",
                                  input_shape=(H, W, C))
        raw = np.asarray(jaxsal.gradcam_plus_plus(mm, x, 1, upsample=False))
        assert np.isfinite(raw).all() and (raw.max(axis=(1, 2)) > 0).all()
        np.testing.assert_allclose(scaled(raw), want, rtol=1e-4, atol=1e-5)
    # identity features, a GAP head: channel 0 has A = 1 everywhere and G = -2 / 4, so
    # 2 G^2 + G^3 sum(A) = 0.5 - 0.5 = 0
    a = np.stack([np.ones((2, 2)), np.arange(4.0).reshape(2, 2)], -1)[None].astype(np.float32)
    w = np.array([[-2.0, 1.0], [1.0, 1.0]], np.float32)
    ident = jaxsal.FunctionModel(features=lambda q, v: v,
                                 head_fn=lambda q, v: v.mean(axis=(1, 2)) @ q["w"],
                                 params={"w": w}, layer="id", input_shape=(2, 2, 2))
    tfkv = np.asarray(jaxsal.gradcam_plus_plus(ident, a, 0, upsample=False))
    paper = np.asarray(jaxsal.gradcam_plus_plus(ident, a, 0, upsample=False, variant="paper"))
    assert np.isfinite(tfkv).all() and tfkv.max() > 0
    np.testing.assert_allclose(jaxsal.normalize(tfkv), jaxsal.normalize(paper), atol=1e-6)


# Identity features and a linear score sum(A * g), so G = g exactly, on one channel of 2x2
# positions; a second output keeps class 0 off the one-unit (binary) path.
@pytest.mark.parametrize("variant, g, a, want", [
    # G = -1 at (0, 0), sum(A) = 2: 2 G^2 + G^3 sum(A) = 2 - 2 = 0, alpha 0 there; the
    # renormalized alpha is 1 at (0, 1) (G = 1), the weight ReLU(1) * 1 = 1 and the score
    # -0.5 + 0.5 = 0, exp(0) = 1: the map is A
    ("tf-keras-vis", [[-1.0, 1.0], [0.0, 0.0]], [[0.5, 0.5], [0.5, 0.5]],
     [[0.5, 0.5], [0.5, 0.5]]),
    # G = 1 at (0, 0), sum(A) = -2: 2 - 2 = 0, alpha 0 there; at (0, 1) G = 0.5:
    # alpha = 0.25 / (0.5 - 0.25) = 1, the weight 0.5 * 1 and the map ReLU(0.5 A)
    ("paper", [[1.0, 0.5], [0.0, 0.0]], [[-1.5, -1.5], [0.5, 0.5]],
     [[0.0, 0.0], [0.25, 0.25]])])
def test_gradcam_plus_plus_alpha_is_0_where_its_denominator_cancels(variant, g, a, want):
    """Where ``2 G^2 + G^3 sum(A)`` is exactly 0 with ``G != 0``, alpha was ``G^2`` (the
    guard replaced the denominator by 1), not 0 as documented: the tf-keras-vis map was 0.1
    (alpha 0.8 at the cancelling position took the renormalization), the paper's 0.75."""
    gg = np.asarray(g, np.float32)[..., None]
    ident = jaxsal.FunctionModel(
        features=lambda q, v: v,
        head_fn=lambda q, v: jnp.stack([jnp.sum(v * q["g"], axis=(1, 2, 3)),
                                        jnp.sum(v, axis=(1, 2, 3))], -1),
        params={"g": gg}, layer="id", input_shape=(2, 2, 1))
    x = np.asarray(a, np.float32)[None, ..., None]
    got = jaxsal.gradcam_plus_plus(ident, x, 0, upsample=False, variant=variant)
    np.testing.assert_allclose(got[0], want, rtol=1e-6, atol=1e-7)


def _np_scorecam(p, x, c, channels=None):
    A = _np_features(p, x)
    n = x.shape[0]
    out = []
    for i in range(n):
        ks = range(A.shape[-1]) if channels is None else channels[i]
        cam = 0
        for k in ks:
            up = ndimage.zoom(A[i, ..., k], (H / A.shape[1], W / A.shape[2]), order=1)
            mask = (up - up.min()) / (up.max() - up.min() + 1e-7)
            y = _np_model(p, x[i:i + 1] * mask[None, ..., None])[0]
            prob = np.exp(y - y.max()) / np.exp(y - y.max()).sum()
            cam = cam + prob[c] * A[i, ..., k]
        out.append(np.maximum(cam, 0))
    return np.stack(out)


def test_scorecam_by_hand(conv):
    m, p, x = conv
    for c in (0, 2):
        want = _np_scorecam(p, x, c)
        got = jaxsal.scorecam(m, x, c, upsample=False)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(jaxsal.scorecam(m, x, c, upsample=False, batch_size=2), want,
                                   rtol=1e-4, atol=1e-6)
    both = jaxsal.scorecam(m, x, [0, 2], upsample=False)
    np.testing.assert_allclose(both[:, 1], _np_scorecam(p, x, 2), rtol=1e-4, atol=1e-6)


def test_faster_scorecam_top_k(conv):
    m, p, x = conv
    A = _np_features(p, x)
    std = A.std(axis=(1, 2))
    top = np.argsort(-std, axis=1)[:, :2]
    per = jaxsal.scorecam(m, x, 1, upsample=False, top_k=2, top_k_mode="per_sample")
    np.testing.assert_allclose(per, _np_scorecam(p, x, 1, [list(t) for t in top]), rtol=1e-4,
                               atol=1e-6)
    union = sorted(set(top.ravel().tolist()))
    un = jaxsal.scorecam(m, x, 1, upsample=False, top_k=2)
    np.testing.assert_allclose(un, _np_scorecam(p, x, 1, [union] * 3), rtol=1e-4, atol=1e-6)
    full = jaxsal.scorecam(m, x, 1, upsample=False, top_k=K)
    np.testing.assert_allclose(full, _np_scorecam(p, x, 1), rtol=1e-4, atol=1e-6)


def test_faster_scorecam_union_is_refused_by_explain_to_file(conv, tmp_path):
    """top_k_mode="union" picks the union of the batch's top-k channels: a job's chunks would
    each pick their own (the file at batch_size=1 was each input's own top-k, silently).
    Refused before any work, passed or bound in a partial, naming top_k_mode="per_sample",
    whose job equals the by-hand per-input top-k at any batch size."""
    import functools
    m, p, _ = conv
    x = np.random.default_rng(0).uniform(size=(3, H, W, C)).astype(np.float32)
    top = np.argsort(-_np_features(p, x).std(axis=(1, 2)), axis=1)[:, :2]
    union = sorted(set(top.ravel().tolist()))
    assert any(sorted(t) != union for t in top.tolist())  # (the chunks would differ)
    for method, opts in [(jaxsal.scorecam, {"top_k": 2}),
                         (functools.partial(jaxsal.scorecam, top_k=2), {}),
                         (functools.partial(jaxsal.scorecam, top_k_mode="union"), {"top_k": 2})]:
        with pytest.raises(ValueError, match=r'scorecam with top_k=2 and top_k_mode="union".*'
                                             r'depend on the batch.*top_k_mode="per_sample"'):
            jaxsal.explain_to_file(method, m, x, tmp_path / "u.npy", targets=1, batch_size=1,
                                   upsample=False, **opts)
        assert not list(tmp_path.iterdir())
    got = jaxsal.explain_to_file(jaxsal.scorecam, m, x, tmp_path / "s.npy", targets=1,
                                 batch_size=2, upsample=False, top_k=2,
                                 top_k_mode="per_sample")
    np.testing.assert_allclose(got, _np_scorecam(p, x, 1, [list(t) for t in top]), rtol=1e-4,
                               atol=1e-6)


def test_eigencam_first_principal_component(conv):
    m, p, x = conv
    A = _np_features(p, x)
    got = jaxsal.eigencam(m, x, upsample=False)
    for i in range(3):
        X = A[i].reshape(-1, K)
        Xc = X - X.mean(0)
        proj = Xc @ np.linalg.svd(Xc, full_matrices=False)[2][0]
        ref = X.sum(-1) - X.sum(-1).mean()
        proj = proj if proj @ ref >= 0 else -proj
        np.testing.assert_allclose(got[i], np.maximum(proj, 0).reshape(A.shape[1:3]),
                                   rtol=1e-3, atol=1e-5)
    assert jaxsal.eigencam(m, x, [0, 1]).shape == (3, 2, H, W)


def test_eigencam_needs_no_class_output(conv):
    """Eigen-CAM reads no score, but ``targets=None`` asked for a predicted class: a model
    of several outputs or of a segmentation (detection...) output, Eigen-CAM's use beyond
    classifiers, was refused until given a score function it never used."""
    m, p, x = conv
    want = np.asarray(jaxsal.eigencam(m, x, upsample=False))
    heads = {"seg": lambda q, a: a @ q["w"],  # (N, h, w, classes)
             "two": lambda q, a: [_head(q, a), a.mean(axis=(1, 2))]}
    for name, head in heads.items():
        f = jaxsal.FunctionModel(features=_features, head_fn=head, params=p, layer="conv",
                                 input_shape=(H, W, C))
        np.testing.assert_array_equal(jaxsal.eigencam(f, x, upsample=False), want, name)
        assert jaxsal.eigencam(f, x).shape == (3, H, W)
        with pytest.raises(ValueError, match="outputs"):  # class ids still need classes
            jaxsal.eigencam(f, x, 0)


def _oriented_component(X):
    """First principal component projection of X (P, K), channels centred, its sign
    correlating positively with the channel sum."""
    Xc = X - X.mean(0)
    proj = Xc @ np.linalg.svd(Xc, full_matrices=False)[2][0]
    return proj if proj @ X.sum(-1) >= 0 else -proj


def test_gradcam_elementwise_and_eigengradcam_by_hand(conv):
    m, p, x = conv
    A = _np_features(p, x)
    h, w = A.shape[1:3]
    for c in range(CLASSES):
        GA = A * p["w"][:, c] / (h * w)  # dS/dA * A: the gradient is constant over positions
        np.testing.assert_allclose(jaxsal.gradcam_elementwise(m, x, c, upsample=False),
                                   np.maximum(GA, 0).sum(-1), rtol=1e-4, atol=1e-7)
        got = jaxsal.eigengradcam(m, x, c, upsample=False)
        for i in range(len(x)):
            want = np.maximum(_oriented_component(GA[i].reshape(-1, K)), 0).reshape(h, w)
            np.testing.assert_allclose(got[i], want, rtol=1e-3, atol=1e-6 * np.abs(want).max())
    # the T-class call is the T single-class calls (one SVD per input and target)
    both = jaxsal.eigengradcam(m, x, [2, 0])
    for j, c in enumerate([2, 0]):
        np.testing.assert_allclose(both[:, j], jaxsal.eigengradcam(m, x, c), rtol=1e-4,
                                   atol=1e-6 * np.abs(both).max())


def _np_ablationcam(A, y, wc, fill):
    """Ablation-CAM of the one-conv model (a GAP head): setting channel k to ``fill`` moves
    score c by ``wc[k] * (fill - mean_ij A_k)``."""
    drop = -wc * (fill[:, None] - A.mean(axis=(1, 2)))  # (N, K): S - S_k
    return np.maximum(np.einsum("nhwk,nk->nhw", A, drop / y[:, None]), 0)


def test_ablationcam_by_hand(conv):
    m, p, x = conv
    A = _np_features(p, x)
    y = _np_model(p, x)
    zero = np.zeros(len(x))
    for c in range(CLASSES):
        want = _np_ablationcam(A, y[:, c], p["w"][:, c], zero)
        got = jaxsal.ablationcam(m, x, c, upsample=False)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6 * np.abs(want).max())
    # one set of ablated passes serves every target; batches of ablated passes do not matter
    many = jaxsal.ablationcam(m, x, [2, 0, 1], upsample=False)
    for j, c in enumerate([2, 0, 1]):
        want = jaxsal.ablationcam(m, x, c, upsample=False)
        np.testing.assert_allclose(many[:, j], want, rtol=1e-5, atol=1e-6 * np.abs(want).max())
    np.testing.assert_allclose(jaxsal.ablationcam(m, x, [2, 0, 1], upsample=False, batch_size=2),
                               many, rtol=1e-5, atol=1e-6 * np.abs(many).max())
    assert jaxsal.ablationcam(m, x, [2, 0]).shape == (3, 2, H, W)
    with pytest.raises(ValueError, match="variant"):
        jaxsal.ablationcam(m, x, 0, variant="torch")


def test_ablationcam_pytorch_grad_cam_fill():
    # without the ReLU the layer's minimum is not 0: pytorch-grad-cam's rule fills min - 1e7
    p = _conv_params(2)

    def feats(p, x):
        z = jax.lax.conv_general_dilated(x, p["k"], (1, 1), "VALID",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                         precision=jax.lax.Precision.HIGHEST)
        return z + p["b"]

    m = jaxsal.FunctionModel(features=feats, head_fn=_head, params=p, layer="conv")
    x = np.random.default_rng(4).uniform(size=(2, H, W, C)).astype(np.float32)
    win = np.lib.stride_tricks.sliding_window_view(x, (3, 3), axis=(1, 2))
    A = np.einsum("nhwcij,ijck->nhwk", win.astype(np.float64), p["k"]) + p["b"]
    y = A.mean(axis=(1, 2)) @ p["w"] + p["c"]
    fill = A.reshape(len(x), -1).min(-1) - 1e7
    for c in range(CLASSES):
        want = _np_ablationcam(A, y[:, c], p["w"][:, c], fill)
        got = jaxsal.ablationcam(m, x, c, upsample=False, variant="pytorch-grad-cam")
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())
        paper = _np_ablationcam(A, y[:, c], p["w"][:, c], np.zeros(len(x)))
        np.testing.assert_allclose(jaxsal.ablationcam(m, x, c, upsample=False), paper,
                                   rtol=1e-4, atol=1e-6 * np.abs(paper).max())
        assert np.abs(want - paper).max() > 0.1 * np.abs(paper).max()


def test_ablationcam_runs_the_layers_before_the_layer_once(compiles):
    # cos marks the layers before the explained one: in the optimized program it appears
    # once, whatever the number of chunks of ablated channels (the vmapped ablated passes
    # leave it unbatched; XLA merges it with the clean pass and keeps it out of the loop)
    from jaxsal._src import base

    p = _conv_params()

    def feats(p, x):
        return _features(p, jnp.cos(x))

    m = jaxsal.FunctionModel(features=feats, head_fn=_head, params=p, layer="conv")
    x = np.random.default_rng(1).uniform(size=(3, H, W, C)).astype(np.float32)
    ids = jnp.asarray(np.tile([[0, 2]], (3, 1)), jnp.int32)
    for batch_size in (None, 3):  # 1 chunk of K channels, K chunks of 1 (a loop)
        jaxsal.ablationcam(m, x, [0, 2], batch_size=batch_size)
        key, program = next(reversed(base._PROGRAMS.data.items()))
        assert key[0][0] == "ablationcam"
        hlo = program.lower(p, jnp.asarray(x), ids).compile().as_text()
        assert hlo.count("cosine(") == 1, batch_size
        assert (" while(" in hlo) == (batch_size is not None)
    # a second call compiles nothing
    first = compiles.n
    jax.block_until_ready(jaxsal.ablationcam(m, x, [1, 2], batch_size=3))
    jax.block_until_ready(jaxsal.eigengradcam(m, x, [1, 2]))
    jax.block_until_ready(jaxsal.gradcam_elementwise(m, x, [1, 2]))
    second = compiles.n
    jax.block_until_ready(jaxsal.ablationcam(m, x, [0, 1], batch_size=3))
    jax.block_until_ready(jaxsal.eigengradcam(m, x, [0, 1]))
    jax.block_until_ready(jaxsal.gradcam_elementwise(m, x, [0, 1]))
    assert second > first and compiles.n == second


def test_guided_gradcam_is_cam_times_guided_gradient(conv):
    m, p, x = conv
    # no ReLU swap is possible in this FunctionModel, so build one that allows it
    def feats(p, x, relu=jax.nn.relu):
        z = jax.lax.conv_general_dilated(x, p["k"], (1, 1), "VALID",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return relu(z + p["b"])

    def head(p, a, relu=jax.nn.relu):
        return _head(p, a)

    gm = jaxsal.FunctionModel(features=feats, head_fn=head, params=p, layer="conv",
                              relu_kwarg="relu")
    got = jaxsal.guided_gradcam(gm, x, [0, 1], reduce=None)
    cam = jaxsal.gradcam(gm, x, [0, 1])
    gb = jaxsal.guided_backprop(gm, x, [0, 1], reduce=None)
    np.testing.assert_allclose(got, cam[..., None] * gb, rtol=1e-5, atol=1e-8)


def test_cam_upsample_matches_resize(conv):
    m, p, x = conv
    low = jaxsal.layercam(m, x, [0, 1], upsample=False)
    up = jaxsal.layercam(m, x, [0, 1])
    np.testing.assert_allclose(up, jaxsal.resize(low, (H, W)), rtol=1e-5, atol=1e-7)


def test_occlusion_linear_model_by_hand():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(5 * 4 * 2, 3)).astype(np.float32)

    def f(p, x):
        return x.reshape(x.shape[0], -1) @ p

    m = jaxsal.FunctionModel(f, jnp.asarray(w))
    x = rng.normal(size=(2, 5, 4, 2)).astype(np.float32)
    got = jaxsal.occlusion(m, x, [0, 2], patch=2, stride=1, fill=0.5)
    wr = w.T.reshape(3, 5, 4, 2)
    for n in range(2):
        for j, c in enumerate([0, 2]):
            total = np.zeros((5, 4))
            count = np.zeros((5, 4))
            for r in range(4):
                for q in range(3):
                    drop = (wr[c, r:r + 2, q:q + 2] * (x[n, r:r + 2, q:q + 2] - 0.5)).sum()
                    total[r:r + 2, q:q + 2] += drop
                    count[r:r + 2, q:q + 2] += 1
            np.testing.assert_allclose(got[n, j], total / count, rtol=1e-4, atol=1e-5)
    # batched positions give the same result as one position per forward pass
    np.testing.assert_allclose(jaxsal.occlusion(m, x, [0, 2], patch=2, stride=1, fill=0.5,
                                                batch_size=2), got, rtol=1e-5, atol=1e-6)


def _windows_drop_mean(w, x, fill, windows):
    """The occlusion map of the linear model ``x -> x . w`` (``w`` ``(H, W, C)``) on ``x``
    ``(H, W, C)`` by hand: each window ``(rows, cols)`` of slices drops ``w . (x - fill)``
    over it; every pixel gets the mean drop of the windows covering it."""
    total, count = np.zeros(x.shape[:2]), np.zeros(x.shape[:2])
    for r, c in windows:
        total[r, c] += (w[r, c] * (x[r, c] - fill)).sum()
        count[r, c] += 1
    return total / count


def test_occlusion_last_window_is_aligned_to_the_border_not_truncated():
    """A stride that does not divide ``side - patch``: the last window along an axis is a
    whole patch ending at the border (starts 0, 2, 3 for side 5, patch 2, stride 2), so every
    window occludes ``patch`` pixels. Captum's ``Occlusion`` slides on to start 4 and
    truncates that window to the one pixel left (``ceil((side - patch) / stride) + 1``
    windows), which gives the border pixels the drop of a smaller window. Along the
    columns (side 7, patch 3, stride 3): ours 0, 3, 4, Captum's 0, 3, 6 (one pixel)."""
    rng = np.random.default_rng(0)
    h, w_, c = 5, 7, 2
    w = rng.normal(size=(h, w_, c)).astype(np.float32)
    m = jaxsal.FunctionModel(lambda p, v: v.reshape(len(v), -1) @ p,  # class 0: x . w
                             jnp.asarray(np.stack([w.ravel(), -w.ravel()], 1)))
    x = rng.normal(size=(1, h, w_, c)).astype(np.float32)
    got = np.asarray(jaxsal.occlusion(m, x, 0, patch=(2, 3), stride=(2, 3), fill=0.5))[0]

    def aligned(d, q, s):
        starts = list(range(0, d - q + 1, s))
        return [slice(a, a + q) for a in starts + ([d - q] if starts[-1] != d - q else [])]

    def truncated(d, q, s):  # Captum's shift counts and windows
        return [slice(k * s, min(k * s + q, d)) for k in range(-(-(d - q) // s) + 1)]

    ours = _windows_drop_mean(w, x[0], 0.5, [(r, q) for r in aligned(h, 2, 2)
                                             for q in aligned(w_, 3, 3)])
    captum = _windows_drop_mean(w, x[0], 0.5, [(r, q) for r in truncated(h, 2, 2)
                                               for q in truncated(w_, 3, 3)])
    np.testing.assert_allclose(got, ours, rtol=1e-5, atol=1e-5)
    # the conventions agree away from the last row and column of windows only
    np.testing.assert_allclose(got[:3, :4], captum[:3, :4], rtol=1e-5, atol=1e-5)
    assert np.abs(got[3:] - captum[3:]).max() > 0.1
    assert np.abs(got[:, 4:] - captum[:, 4:]).max() > 0.1


def test_default_cam_layer_and_spatial_layers():
    m = load_keras(FIX / "mnist_cnn_tfkeras2.h5")
    assert jaxsal.default_cam_layer(m) == "conv2d_2"
    assert jaxsal.spatial_layers(m) == ["conv2d_1", "conv2d_2", "max_pooling2d_1", "dropout_1"]
    b = load_keras(FIX / "binary_cnn_keras3.keras")
    assert jaxsal.default_cam_layer(b) == "block2_conv2"
    x = np.load(FIX / "binary_cnn_keras3.expected.npz")["x"][:2]
    # the binary model: class 0 through the complement, class 1 through the unit
    cams = jaxsal.gradcam(b.with_head("logits"), x, [0, 1], upsample=False)
    assert cams.shape == (2, 2, 16, 16) and np.all(np.isfinite(cams))
    # on logits, class 0's gradient is minus class 1's: the two ReLU'd maps never overlap
    assert np.all(np.asarray(cams[:, 0]) * np.asarray(cams[:, 1]) == 0)
    assert np.asarray(cams).max() > 0
    for layer in ["block1_pool", "max_pooling2d_1"]:
        if layer in b.layer_names:
            assert jaxsal.gradcam(b, x, 1, layer=layer).shape == (2, 32, 32)


def test_gradcam_plus_plus_on_a_probability_head_is_tf_keras_vis_s_binary_score():
    """tf-keras-vis's raw Grad-CAM++ maps carry exp(BinaryScore): on a one-unit sigmoid
    output class 0 scores -p there, 1 - p here (the same gradient): its maps were e times
    tf-keras-vis's. Now as the score function tf-keras-vis uses, for ids, the predicted
    class and the sigmoid_complement head (where class 1 is 1 - output)."""
    b = load_keras(FIX / "binary_cnn_keras3.keras")
    x = np.load(FIX / "binary_cnn_keras3.expected.npz")["x"][[0, 5, 6, 10]]
    p = np.asarray(b(x))[:, 0]
    assert (p > 0.5).any() and (p < 0.5).any()  # both classes predicted among them

    def cam(m, t):
        return np.asarray(jaxsal.gradcam_plus_plus(m, x, t, upsample=False))

    for m, minus in ((b, 0), (b.with_head("sigmoid_complement"), 1)):
        got = cam(m, [0, 1])
        for c in (0, 1):  # BinaryScore(c) of the unit: -output or +output
            sign = -1.0 if c == minus else 1.0
            want = cam(m, lambda y, s=sign: s * y[:, 0])
            np.testing.assert_allclose(got[:, c], want, rtol=1e-5,
                                       atol=1e-6 * np.abs(want).max())
        # the predicted class: as its id (class ids keep their meaning under the complement)
        pred = (p > 0.5).astype(int)
        np.testing.assert_allclose(cam(m, None), got[np.arange(len(x)), pred], rtol=1e-5,
                                   atol=1e-6 * np.abs(got).max())


def test_occlusion_default_patch_fits_small_inputs():
    """The default patch (8) is at most each side, as the Shapley methods': a volume 4 deep
    was refused ("patch 8 is larger than the input's side 4"); a patch too large for a side
    names the axis and the largest that fits."""
    w = np.random.default_rng(0).normal(size=(4 * 6 * 6, 2)).astype(np.float32)
    vol = jaxsal.FunctionModel(lambda p, v: v.reshape(len(v), -1) @ p, w,
                               input_shape=(4, 6, 6, 1))
    x = np.random.default_rng(1).normal(size=(2, 4, 6, 6, 1)).astype(np.float32)
    got = np.asarray(jaxsal.occlusion(vol, x, 1))
    # one patch covers the whole volume: every voxel gets S(x) - S(0), here S(x)
    np.testing.assert_allclose(got, np.broadcast_to((x.reshape(2, -1) @ w)[:, 1, None, None,
                                                                              None],
                                                    got.shape), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"patch 5 is larger than spatial axis 0 .*side 4.*"
                                         r"at most 4"):
        jaxsal.occlusion(vol, x, 1, patch=5)


def test_gray_images_without_a_channel_axis_are_told_how_to_get_one(tmp_path):
    """A model of (28, 28) gray images (Input((28, 28)), then Reshape) reads x (N, 28, 28)
    as a signal: its 2-D convolutions have a spatial axis too many for a CAM, and the errors
    only said 'the input's 1 spatial axes'. They now say why and how to give the model a
    channel axis; the wrapper they describe gets its CAMs."""
    keras = pytest.importorskip("keras")
    i = keras.Input((28, 28))
    h = keras.layers.Conv2D(4, 3, name="conv")(keras.layers.Reshape((28, 28, 1))(i))
    gray = keras.Model(i, keras.layers.Dense(3)(keras.layers.Flatten()(h)), name="gray")
    gray.save(tmp_path / "gray.keras")
    m = load_keras(tmp_path / "gray.keras")
    x = np.random.default_rng(0).random((2, 28, 28), np.float32)
    for layer in (None, "conv"):
        with pytest.raises(ValueError, match=r"Images without a channel axis, \(N, H, W\), "
                                             r"are read as signals"):
            jaxsal.gradcam(m, x, 0, layer=layer)
    inp = keras.Input((28, 28, 1))  # as the message says
    keras.Model(inp, gray(keras.layers.Reshape((28, 28))(inp))).save(tmp_path / "wrap.keras")
    w = load_keras(tmp_path / "wrap.keras")
    assert jaxsal.default_cam_layer(w) == "gray/conv"
    assert jaxsal.gradcam(w, x[..., None], 0).shape == (2, 28, 28)


def test_default_cam_layer_passes_over_convolutions_after_global_pooling(tmp_path):
    """keras.applications' MobileNet ends in GlobalAveragePooling2D(keepdims=True) and a 1x1
    Conv2D, ``conv_preds`` (1, 1, classes): the last convolution, so it was the default CAM
    layer, and every default CAM was a constant map. A convolution whose output has one
    position is passed over for the last one with more; when every convolution's has one
    (a tiny input), the last is kept."""
    keras = pytest.importorskip("keras")
    i = keras.Input((12, 12, 2))
    h = keras.layers.Conv2D(4, 3, strides=2, activation="relu", name="c1")(i)
    h = keras.layers.Conv2D(5, 3, activation="relu", name="c2")(h)
    h = keras.layers.GlobalAveragePooling2D(keepdims=True)(h)
    h = keras.layers.Conv2D(3, 1, name="conv_preds")(h)
    keras.Model(i, keras.layers.Reshape((3,))(h)).save(tmp_path / "mobile.keras")
    m = load_keras(tmp_path / "mobile.keras")
    assert jaxsal.default_cam_layer(m) == "c2"
    # MobileNet's own head: conv_preds -> Reshape -> Activation("softmax"), a classifier
    keras.Model(i, keras.layers.Activation("softmax")(keras.layers.Reshape((3,))(h))).save(
        tmp_path / "mobile_softmax.keras")
    assert jaxsal.default_cam_layer(load_keras(tmp_path / "mobile_softmax.keras")) == "c2"
    x = np.random.default_rng(0).uniform(size=(2, 12, 12, 2)).astype(np.float32)
    np.testing.assert_array_equal(jaxsal.gradcam(m, x, [0, 1]),
                                  jaxsal.gradcam(m, x, [0, 1], layer="c2"))
    tiny = keras.Input((3, 3, 2))
    keras.Model(tiny, keras.layers.Flatten()(keras.layers.Conv2D(3, 3, name="c")(tiny))).save(
        tmp_path / "tiny.keras")
    assert jaxsal.default_cam_layer(load_keras(tmp_path / "tiny.keras")) == "c"


def test_a_layer_of_unknown_layout_is_refused_for_that_reason(tmp_path):
    """A Permute's output (6, 5, 4) has the input's spatial axes and a channel axis, but no
    known layout; the CAMs refused it saying it lacked them."""
    keras = pytest.importorskip("keras")
    i = keras.Input((8, 7, 3))
    h = keras.layers.Permute((3, 1, 2))(i)
    h = keras.layers.Conv2D(4, 3, activation="relu", data_format="channels_first",
                            name="ccf")(h)
    h = keras.layers.Permute((2, 3, 1), name="back")(h)
    h = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(3, 1, name="cl")(h))
    keras.Model(i, keras.layers.Dense(2)(h)).save(tmp_path / "permuted.keras")
    m = load_keras(tmp_path / "permuted.keras")
    x = np.random.default_rng(0).uniform(size=(2, 8, 7, 3)).astype(np.float32)
    with pytest.raises(ValueError, match=r"layer 'back' has output shape \(2, 6, 5, 4\) .*, "
                                         r"as many axes as the input, but no known layout"):
        jaxsal.gradcam(m, x, 1, layer="back")
    assert jaxsal.gradcam(m, x, 1, layer="ccf").shape == (2, 8, 7)


@pytest.mark.parametrize("head", ["fused", "activation", "softmax", "relu_reshape"])
def test_default_cam_layer_of_a_segmentation_model_is_before_its_output_convolution(
        tmp_path, head):
    """A U-Net-like model whose output is a per-pixel softmax Conv2D ('seg'): the CAM layer is
    the last spatial layer before that convolution, not the convolution itself (whose CAM is
    the score's own channel; fails before: 'seg'); a region's score function explains. The
    same where the softmax is a layer of its own after the convolution (``Activation``,
    ``Softmax``; a ``ReLU`` then a ``Reshape``): 'seg' was chosen there before."""
    keras = pytest.importorskip("keras")
    from keras import layers

    keras.utils.set_random_seed(3)
    inp = keras.Input((8, 8, 3))
    e1 = layers.Conv2D(4, 3, padding="same", activation="relu", name="enc")(inp)
    b = layers.Conv2D(8, 3, padding="same", activation="relu", name="mid")(
        layers.MaxPooling2D(name="pool")(e1))
    u = layers.Concatenate(name="cat")([layers.UpSampling2D(name="up")(b), e1])
    d = layers.Conv2D(4, 3, padding="same", activation="relu", name="dec")(u)
    if head == "fused":
        out = layers.Conv2D(3, 1, activation="softmax", name="seg")(d)
    else:
        out = layers.Conv2D(3, 1, name="seg")(d)
        out = {"activation": layers.Activation("softmax"), "softmax": layers.Softmax(),
               "relu_reshape": layers.ReLU()}[head](out)
        if head == "relu_reshape":
            out = layers.Reshape((8, 8, 3))(layers.Identity()(out))
    km = keras.Model(inp, out)
    km.save(tmp_path / "unet.keras")
    m = load_keras(tmp_path / "unet.keras")
    assert jaxsal.default_cam_layer(m) == "dec"
    x = np.random.default_rng(0).random((2, 8, 8, 3)).astype("float32")
    region = lambda y: y[:, 2:6, 2:6, 1].mean((1, 2))  # noqa: E731
    cam = np.asarray(jaxsal.gradcam(m, x, targets=region))
    np.testing.assert_allclose(cam, np.asarray(jaxsal.gradcam(m, x, targets=region,
                                                              layer="dec")))
    assert cam.shape == (2, 8, 8) and np.isfinite(cam).all()
