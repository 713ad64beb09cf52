"""Every method on channels-first models and on 1-D signals and 3-D volumes.

The reference is the 2-D channels-last path (tested against tf-keras-vis elsewhere), run on
an equivalent model: the same network written channels-first must give the same maps for the
transposed input; a 1-D network equals a 2-D one whose kernels, pools and input have width 1,
and a 2-D one equals a 3-D one of depth 1 (linear upsampling of a size-1 axis to size 1 is
the identity, so the maps agree exactly up to float rounding).
"""

import numpy as np
import pytest

keras = pytest.importorskip("keras")
from keras import layers  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import jaxsal  # noqa: E402
from model_import import load_keras  # noqa: E402

TOL = dict(rtol=2e-4, atol=1e-6)

# name -> (method, options); every map-returning method of jaxsal
METHODS = {
    "saliency": (jaxsal.saliency, {}),
    "saliency_none": (jaxsal.saliency, {"reduce": None}),
    "gradient_x_input": (jaxsal.gradient_x_input, {}),
    "guided_backprop": (jaxsal.guided_backprop, {}),
    "deconvnet": (jaxsal.deconvnet, {}),
    "smoothgrad": (jaxsal.smoothgrad, {"key": jax.random.key(0), "n": 3}),
    "integrated_gradients": (jaxsal.integrated_gradients, {"steps": 8}),
    "gradient_shap": (jaxsal.gradient_shap, {"key": 0, "n": 3, "noise_std": 0.1}),
    "deeplift": (jaxsal.deeplift, {"baseline": 0.25}),
    "deeplift_gradient": (jaxsal.deeplift, {"baseline": 0.25, "maxpool": "gradient"}),
    "deeplift_shap": (jaxsal.deeplift_shap, {"baselines": 0.25}),
    "lrp": (jaxsal.lrp, {"epsilon": 0.01}),
    # (Blur IG is not here: blurring an axis of size 1 with zero padding, as scipy and PAIR
    # do, scales it, so a width-1 twin differs; its layouts: test_blur_guided_ig.py)
    "guided_integrated_gradients": (jaxsal.guided_integrated_gradients, {"steps": 6}),
    "gradcam": (jaxsal.gradcam, {"layer": "c2"}),
    "gradcam_lowres": (jaxsal.gradcam, {"layer": "c2", "upsample": False}),
    "gradcam_plus_plus": (jaxsal.gradcam_plus_plus, {"layer": "c2"}),
    "layercam": (jaxsal.layercam, {"layer": "c2"}),
    "hirescam": (jaxsal.hirescam, {"layer": "c2"}),
    "xgradcam": (jaxsal.xgradcam, {"layer": "c2"}),
    "scorecam": (jaxsal.scorecam, {"layer": "c2"}),
    "scorecam_topk": (jaxsal.scorecam, {"layer": "c2", "top_k": 2}),
    "eigencam": (jaxsal.eigencam, {"layer": "c2"}),
    "eigengradcam": (jaxsal.eigengradcam, {"layer": "c2"}),
    "gradcam_elementwise": (jaxsal.gradcam_elementwise, {"layer": "c2"}),
    "ablationcam": (jaxsal.ablationcam, {"layer": "c2"}),
    "guided_gradcam": (jaxsal.guided_gradcam, {"layer": "c2"}),
    # (per-channel scaling, the layout-sensitive variant; the paper's: test_fullgrad.py)
    "fullgrad": (jaxsal.fullgrad, {"variant": "pytorch-grad-cam"}),
    "guided_gradcam_none": (jaxsal.guided_gradcam, {"layer": "c2", "reduce": None}),
    "occlusion": (jaxsal.occlusion, {}),
    # the default grid, 8 pixels at most the axis: the same groups in every twin
    "shapley_values": (jaxsal.shapley_values, {}),
    "shapley_value_sampling": (jaxsal.shapley_value_sampling, {"key": 0, "n": 3}),
    "kernel_shap": (jaxsal.kernel_shap, {"key": 0, "n": 6}),
    "lime": (jaxsal.lime, {"key": 0, "n": 6}),
    "rise": (jaxsal.rise, {"key": 0, "n": 6}),
    "layer_gradient_x_input": (jaxsal.gradient_x_input, {"layer": "c2"}),
    "layer_integrated_gradients": (jaxsal.integrated_gradients, {"layer": "c2", "steps": 4}),
}


def _net(rank, data_format="channels_last", spatial=None, pool=2, channels=2):
    """conv(4) 'c1' -> maxpool -> conv(5) 'c2' -> BN -> GAP -> dense(3), with ``rank``
    spatial axes of sizes ``spatial`` (12 each by default)."""
    conv = {1: layers.Conv1D, 2: layers.Conv2D, 3: layers.Conv3D}[rank]
    maxpool = {1: layers.MaxPooling1D, 2: layers.MaxPooling2D, 3: layers.MaxPooling3D}[rank]
    gap = {1: layers.GlobalAveragePooling1D, 2: layers.GlobalAveragePooling2D,
           3: layers.GlobalAveragePooling3D}[rank]
    cf = data_format == "channels_first"
    sp = tuple(spatial or (12,) * rank)
    inp = keras.Input((channels, *sp) if cf else (*sp, channels))
    kw = {"data_format": data_format}
    h = conv(4, 3, padding="same", activation="relu", name="c1", **kw)(inp)
    h = maxpool(pool, name="pool", **kw)(h)
    h = conv(5, 3, padding="same", activation="relu", name="c2", **kw)(h)
    h = layers.BatchNormalization(axis=1 if cf else -1, name="bn")(h)
    h = gap(name="gap", **kw)(h)
    return keras.Model(inp, layers.Dense(3, name="out")(h))


def _embed(src, dst):
    """Weights of the lower-rank ``src`` into ``dst``, whose convolutions have one more
    window axis, last, and see inputs of size 1 along it ("same" padding): only the
    window's middle slice meets data, and it gets ``src``'s kernel."""
    for ls, ld in zip(src.layers, dst.layers):
        ws = ls.get_weights()
        if not ws:
            continue
        if ls.name in ("c1", "c2"):
            k = np.zeros(ld.get_weights()[0].shape, np.float32)
            k[..., 1, :, :] = ws[0]
            ws = [k, ws[1]]
        ld.set_weights(ws)


def _copy(src, dst):
    """Weights of ``src`` into ``dst`` (kernels reshaped to ``dst``'s window rank)."""
    for ls, ld in zip(src.layers, dst.layers):
        ws = ls.get_weights()
        if ws:
            ld.set_weights([np.reshape(w, d.shape) for w, d in zip(ws, ld.get_weights())])


def _perturbed(model, seed):
    rng = np.random.default_rng(seed)
    for lay in model.layers:
        ws = lay.get_weights()
        if lay.name == "bn":
            ws = [rng.uniform(0.5, 1.5, ws[0].shape), rng.normal(0, 0.2, ws[1].shape),
                  rng.normal(0, 0.2, ws[2].shape), rng.uniform(0.5, 1.5, ws[3].shape)]
        elif ws:
            ws = [w if w.ndim > 1 else rng.normal(0, 0.1, w.shape) for w in ws]
        lay.set_weights([np.asarray(w, np.float32) for w in ws])
    return model


def _load(model, tmp_path, name):
    path = str(tmp_path / f"{name}.keras")
    model.save(path)
    return load_keras(path, head="logits")


def _maps(m, x, name):
    fn, opts = METHODS[name]
    if name == "occlusion":  # patches of 3 along every axis longer than 1
        spatial = x.shape[2:] if m.data_format == "channels_first" else x.shape[1:-1]
        opts = {"patch": tuple(3 if d > 1 else 1 for d in spatial)}
    return np.asarray(fn(m, x, targets=[0, 2], **opts))


@pytest.fixture(scope="module")
def twins(tmp_path_factory):
    """``{"cf": (channels-last model, x, channels-first twin, x transposed), "1d"/"3d":
    (model, x, its twin with one more spatial axis of size 1, x with that axis)}``."""
    tmp = tmp_path_factory.mktemp("layouts")
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(1)
    out = {}
    # 12x8, not square: an axis swapped or a size read from the wrong axis shows
    cl = _perturbed(_net(2, spatial=(12, 8)), 2)
    cf = _net(2, "channels_first", spatial=(12, 8))
    _copy(cl, cf)
    x = rng.normal(size=(2, 12, 8, 2)).astype(np.float32)
    m_cl = _load(cl, tmp, "cl")
    out["cf"] = (m_cl, x, _load(cf, tmp, "cf"), np.moveaxis(x, -1, 1))

    one = _perturbed(_net(1), 3)
    wide = _net(2, spatial=(12, 1), pool=(2, 1))
    _embed(one, wide)
    x1 = rng.normal(size=(2, 12, 2)).astype(np.float32)
    out["1d"] = (_load(one, tmp, "one"), x1, _load(wide, tmp, "wide"), x1[:, :, None])

    # the 2-D model is the channels-last one of "cf": the same model object, so the methods'
    # programs compiled for it are compiled once for both tests
    deep = _net(3, spatial=(12, 8, 1), pool=(2, 2, 1))
    _embed(cl, deep)
    out["3d"] = (m_cl, x, _load(deep, tmp, "deep"), x[:, :, :, None])
    return out


@pytest.mark.parametrize("name", sorted(METHODS))
def test_channels_first_equals_channels_last(twins, name):
    m_cl, x_cl, m_cf, x_cf = twins["cf"]
    assert m_cf.data_format == "channels_first" and m_cl.data_format == "channels_last"
    np.testing.assert_allclose(m_cf(x_cf), m_cl(x_cl), **TOL)
    a, b = _maps(m_cl, x_cl, name), _maps(m_cf, x_cf, name)
    if name.endswith("_none"):  # channels kept: each in its model's own layout
        assert b.shape == (2, 2, 2, 12, 8)
        b = np.moveaxis(b, 2, -1)
    assert a.shape == b.shape
    np.testing.assert_allclose(b, a, **TOL)


@pytest.mark.parametrize("name", sorted(METHODS))
@pytest.mark.parametrize("twin", ["1d", "3d"])
def test_one_more_axis_of_size_one_changes_nothing(twins, twin, name):
    """A 1-D model equals its width-1 2-D twin, a 2-D model its depth-1 3-D twin."""
    m, x, m_up, x_up = twins[twin]
    np.testing.assert_allclose(m_up(x_up), m(x), **TOL)
    a, b = _maps(m, x, name), _maps(m_up, x_up, name)  # b has one more spatial axis, last
    b = b[..., 0, :] if name.endswith("_none") else b[..., 0]
    assert a.shape == b.shape
    np.testing.assert_allclose(b, a, **TOL)


def test_layer_formats_and_cam_layers(twins):
    m_cl, _, m_cf, _ = twins["cf"]
    assert [m_cf.layer_data_format(n) for n in m_cf.layer_names] == [
        "channels_first"] * 5 + [None, None]
    assert jaxsal.spatial_layers(m_cf) == ["c1", "pool", "c2", "bn"]
    assert jaxsal.default_cam_layer(m_cf) == "c2"
    m1, x1, _, _ = twins["1d"]
    assert jaxsal.spatial_layers(m1) == ["c1", "pool", "c2", "bn"]
    assert jaxsal.default_cam_layer(m1) == "c2"
    with pytest.raises(ValueError, match="layer 'gap' has output shape .*1 spatial axes"):
        jaxsal.gradcam(m1, x1, layer="gap")
    with pytest.raises(ValueError, match=r"1 to 3 axes besides .* got shape \(2, 12\)"):
        jaxsal.gradcam(m1, x1[..., 0])


def test_occlusion_counts_and_patch_sizes(twins):
    _, _, m3, x3 = twins["3d"]
    # one patch covering everything: every position's map is the full score drop
    full = np.asarray(jaxsal.occlusion(m3, x3, targets=1, patch=(12, 8, 1)))
    s = np.asarray(m3(x3))[:, 1] - np.asarray(m3(np.zeros_like(x3)))[:, 1]
    np.testing.assert_allclose(full, np.broadcast_to(s[:, None, None, None], full.shape),
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="one per spatial axis"):
        jaxsal.occlusion(m3, x3, patch=(2, 2))


def test_channels_last_view(twins):
    m_cl, x_cl, m_cf, x_cf = twins["cf"]
    v = m_cf.channels_last()
    assert v.channels_last() is v and m_cl.channels_last() is m_cl and m_cf.channels_last_view \
        is False
    assert v.data_format == "channels_last" and v.input_shape == (12, 8, 2)
    assert v.layer("c2").output_shape == (6, 4, 5) == m_cl.layer("c2").output_shape
    assert m_cf.layer("c2").output_shape == (5, 6, 4)
    y, caps = v.apply(v.params, x_cl, capture=["bn"], perturb={"c1": np.ones((2, 12, 8, 4))})
    y2, caps2 = m_cl.apply(m_cl.params, x_cl, capture=["bn"],
                           perturb={"c1": np.ones((2, 12, 8, 4))})
    np.testing.assert_allclose(y, y2, **TOL)
    np.testing.assert_allclose(caps["bn"], caps2["bn"], **TOL)
    np.testing.assert_allclose(jaxsal.gradcam(v, x_cl, targets=1),
                               jaxsal.gradcam(m_cf, x_cf, targets=1), **TOL)


def test_maximize_channels_first(twins):
    """Images come back in the model's layout and equal the channels-last twin's."""
    m_cl, _, m_cf, _ = twins["cf"]
    a = jaxsal.maximize(m_cl, [0, 2], steps=6, input_range=(0.0, 1.0), key=3)
    b = jaxsal.maximize(m_cf, [0, 2], steps=6, input_range=(0.0, 1.0), key=3)
    assert b.images.shape == (2, 2, 12, 8)
    np.testing.assert_allclose(np.moveaxis(np.asarray(b.images), 1, -1), a.images,
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(b.scores, np.diagonal(np.asarray(m_cf(b.images))[:, [0, 2]]),
                               rtol=1e-4, atol=1e-5)
    f = jaxsal.maximize(m_cf, "all", layer="c2", steps=2, input_range=(0.0, 1.0))
    assert f.images.shape == (5, 2, 12, 8)  # the 5 filters of c2, not its 4 columns
    seed = np.full((2, 12, 8), 0.5, np.float32)
    s = jaxsal.maximize(m_cf, 1, steps=2, input_range=(0.0, 1.0), seed_images=seed,
                        image_shape=(2, 12, 8))
    assert s.images.shape == (1, 2, 12, 8)


def test_function_model_channels_first():
    """A plain JAX network written channels-first equals its channels-last twin."""
    from jax import lax

    rng = np.random.default_rng(7)
    p = {"k": jnp.asarray(rng.normal(size=(3, 3, 2, 4)), jnp.float32),
         "w": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32)}

    def feats(cf):
        dn = ("NCHW", "HWIO", "NCHW") if cf else ("NHWC", "HWIO", "NHWC")
        return lambda p, x: jax.nn.relu(lax.conv_general_dilated(x, p["k"], (1, 1), "SAME",
                                                                 dimension_numbers=dn))

    def head(cf):
        return lambda p, a: a.mean(axis=(2, 3) if cf else (1, 2)) @ p["w"]

    cl = jaxsal.FunctionModel(features=feats(False), head_fn=head(False), params=p)
    cf = jaxsal.FunctionModel(features=feats(True), head_fn=head(True), params=p,
                              data_format="channels_first")
    x = rng.normal(size=(2, 6, 6, 2)).astype(np.float32)
    xt = np.moveaxis(x, -1, 1)
    for fn, opts in ((jaxsal.saliency, {}), (jaxsal.gradcam, {}), (jaxsal.scorecam, {}),
                     (jaxsal.occlusion, {"patch": 2})):
        np.testing.assert_allclose(fn(cf, xt, [0, 2], **opts), fn(cl, x, [0, 2], **opts),
                                   **TOL)
    with pytest.raises(ValueError, match="data_format"):
        jaxsal.FunctionModel(features=feats(True), head_fn=head(True), params=p,
                             data_format="NCHW")
    # one value per channel given as (C,) to channels-first x: the error names (C, 1, 1),
    # the form for the model's layout only (it named both layouts' forms, from x.shape[-1]
    # and x.shape[1], whichever the model's was: (6,) as if C were W here)
    per_channel = r"one value per channel is \(2, 1, 1\) for x, which is channels-first\)$"
    with pytest.raises(ValueError,
                       match=r"fill of shape \(2,\) does not broadcast.*" + per_channel):
        jaxsal.occlusion(cf, xt, 0, patch=2, fill=np.ones(2, np.float32))
    with pytest.raises(ValueError, match=r"baseline of shape \(2,\).*" + per_channel) as e:
        jaxsal.integrated_gradients(cf, xt, 0, baseline=np.ones(2, np.float32))
    assert "(6,)" not in str(e.value)
    # channels-last x, one example's shape for a batch of one: (C,), not (H, 1, 1)
    with pytest.raises(ValueError, match=r"baseline of shape \(2, 6, 6, 2\) does not "
                       r"broadcast.*one value per channel is \(2,\) for x, which is "
                       r"channels-last\)$") as e:
        jaxsal.integrated_gradients(cl, x[:1], 0, baseline=np.zeros_like(x))
    assert "(6, 1, 1)" not in str(e.value)
    np.testing.assert_allclose(
        jaxsal.occlusion(cf, xt, 0, patch=2, fill=np.ones((2, 1, 1), np.float32)),
        jaxsal.occlusion(cl, x, 0, patch=2, fill=np.ones(2, np.float32)), **TOL)


def test_maximize_refuses_signals(twins):
    m1 = twins["1d"][0]
    with pytest.raises(ValueError, match=r"maximize optimizes images \(H, W, C\); this model's "
                                         r"input is \(12, 2\)"):
        jaxsal.maximize(m1, 0, steps=2, input_range=(0.0, 1.0))


def test_permute_to_channels_first_inside_the_model(tmp_path):
    """An input permuted to channels-first inside the model stays channels-last for the
    methods (the Permute does not pass its layout on); the layer after it is channels-first."""
    keras.utils.set_random_seed(2)
    inp = keras.Input((10, 10, 3))
    h = layers.Permute((3, 1, 2), name="perm")(inp)
    h = layers.Conv2D(4, 3, data_format="channels_first", activation="relu", name="c")(h)
    h = layers.GlobalAveragePooling2D(data_format="channels_first", name="gap")(h)
    perm = keras.Model(inp, layers.Dense(2, name="out")(h))
    inp = keras.Input((10, 10, 3))
    h = layers.Conv2D(4, 3, activation="relu", name="c")(inp)
    twin = keras.Model(inp, layers.Dense(2, name="out")(layers.GlobalAveragePooling2D()(h)))
    twin.get_layer("c").set_weights(perm.get_layer("c").get_weights())
    twin.get_layer("out").set_weights(perm.get_layer("out").get_weights())
    m, t = _load(perm, tmp_path, "perm"), _load(twin, tmp_path, "twin")
    assert m.data_format == "channels_last" and m.layer_data_format("perm") is None
    assert m.layer_data_format("c") == "channels_first"
    x = np.random.default_rng(0).normal(size=(2, 10, 10, 3)).astype(np.float32)
    for fn in (jaxsal.saliency, jaxsal.gradcam, jaxsal.scorecam):
        np.testing.assert_allclose(fn(m, x, [0, 1]), fn(t, x, [0, 1]), **TOL)


def test_an_einsum_that_moves_the_channel_axis_leaves_the_layout_unknown(tmp_path):
    """After ``keras.ops.einsum("nchw->nhwc", ...)`` in a channels-first model the channel
    axis is last: the layers until the next declared layout have no known layout, and a CAM
    there is refused instead of reading a spatial axis as channels."""
    inp = keras.Input((2, 8, 8))
    h = layers.Conv2D(4, 3, padding="same", data_format="channels_first", name="c")(inp)
    h = layers.Activation("relu", name="act")(keras.ops.einsum("nchw->nhwc", h))
    h = layers.Conv2D(4, 3, name="c2")(h)
    m = _load(keras.Model(inp, layers.Dense(3)(layers.GlobalAveragePooling2D()(h))),
              tmp_path, "einsum")
    assert m.layer_data_format("c") == "channels_first"
    assert m.layer_data_format("act") is None
    assert m.layer_data_format("c2") == "channels_last"
    assert "act" not in jaxsal.spatial_layers(m)
    with pytest.raises(ValueError, match="as many axes as the input, but no known layout"):
        jaxsal.gradcam(m, np.ones((1, 2, 8, 8), np.float32), layer="act")


def test_maximize_refuses_a_channels_first_function_model():
    """A plain channels-first function has no channels-last view to optimize through: an
    error, not images optimized along the wrong axes."""
    p = {"w": jnp.ones((3, 2))}
    m = jaxsal.FunctionModel(lambda p, x: x.mean(axis=(2, 3)) @ p["w"], p,
                             input_shape=(3, 8, 8), data_format="channels_first")
    with pytest.raises(ValueError, match="channels-first: give it a function of"):
        jaxsal.maximize(m, 0, steps=2, input_range=(0.0, 1.0))


def test_class_ids_on_a_channels_first_output_map_suggest_its_channel_axis(tmp_path):
    """Class ids on a segmentation output are refused with a score function to use instead;
    for a channels-first map (N, K, H, W) it read out[..., k] (a column of the width). The
    suggested function, now out[:, k], averages class k and runs."""
    i = keras.Input((3, 8, 6))
    x = layers.Conv2D(4, 3, padding="same", activation="relu", data_format="channels_first")(i)
    keras.Model(i, layers.Conv2D(5, 1, data_format="channels_first")(x)).save(
        tmp_path / "seg.keras")
    m = load_keras(tmp_path / "seg.keras")
    x = np.random.default_rng(0).random((2, 3, 8, 6), np.float32)
    with pytest.raises(ValueError, match=r"\(2, 5, 8, 6\).*targets=lambda out: out\[:, k\]") as e:
        jaxsal.saliency(m, x, targets=4)
    fn = eval(str(e.value).split("e.g. targets=")[1].split(" (unit k")[0], {"k": 4})
    np.testing.assert_allclose(fn(m.apply(m.params, x)), m.apply(m.params, x)[:, 4].mean((1, 2)),
                               rtol=1e-5)
    assert jaxsal.saliency(m, x, targets=fn).shape == (2, 8, 6)


def test_xrai_channels_first_equals_channels_last(twins):
    """XRAI maxes the averaged IG over each model's own channel axis (xrai explains images,
    so only the 2-D twins)."""
    m_cl, x_cl, m_cf, x_cf = twins["cf"]
    yy, xx = np.mgrid[:12, :8]
    labels = np.stack([(yy // 3) * 4 + xx // 3, (yy // 4) * 3 + (xx + 2) // 4])
    masks = jaxsal.segment_masks(labels[None], dilation=1)[0]
    a, b = (np.asarray(jaxsal.xrai(m, x, [0, 2], segments=masks, steps=8, min_pixel_diff=3))
            for m, x in ((m_cl, x_cl), (m_cf, x_cf)))
    assert a.shape == b.shape == (2, 2, 12, 8) and len(np.unique(a[0, 0])) > 3
    np.testing.assert_allclose(b, a, **TOL)


def test_a_raw_waveform_model_is_told_how_to_give_x_a_channel_axis(tmp_path):
    """A model of raw waveforms, Input((L,)) -> Reshape((L, 1)) -> Conv1D, was refused by the
    CAMs with "token ids (N, L) with a CAM method" and no fix (x[..., None] then fails the
    model's shape). The error gives the wrapper, which works: its Grad-CAM equals
    relu(sum_k w_k A_k), w_k the mean of d score / d A_k, from Keras' own activations."""
    keras.utils.set_random_seed(2)
    inp = keras.Input((16,))
    h = layers.Conv1D(3, 3, padding="same", name="c")(layers.Reshape((16, 1))(inp))
    k = keras.Model(inp, layers.Dense(2)(layers.GlobalAveragePooling1D()(h)))
    m = _load(k, tmp_path, "raw")
    x = np.random.default_rng(0).normal(size=(2, 16)).astype(np.float32)
    with pytest.raises(ValueError) as e:
        jaxsal.gradcam(m, x, targets=1)
    msg = str(e.value)
    assert "token ids" not in msg
    fix = ("inp = keras.Input((16, 1)); "
           "keras.Model(inp, model(keras.layers.Reshape((16,))(inp)))")
    assert fix in msg and "x[..., None]" in msg
    scope = {"keras": keras, "model": k}
    exec(fix.replace("keras.Model(", "wrapped = keras.Model("), scope)  # noqa: S102
    w = _load(scope["wrapped"], tmp_path, "wrapped")
    cam = np.asarray(jaxsal.gradcam(w, x[..., None], targets=1))
    acts = keras.Model(k.input, k.get_layer("c").output).predict(x, verbose=0)  # (2, 16, 3)
    weights = k.layers[-1].get_weights()[0][:, 1] / 16  # d score / d A_k, the same everywhere
    want = np.maximum(acts @ weights, 0)
    np.testing.assert_allclose(cam, want, rtol=1e-4, atol=1e-6)
