"""Looking inside a model (jaxsal.filter_images, jaxsal.feature_maps and their plots) on the
layouts Keras stores: channels-first layers, transposed, depthwise and separable kernels."""

import inspect
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsal
from model_import import load_keras

keras = pytest.importorskip("keras")


@pytest.fixture(scope="module")
def cf(tmp_path_factory):
    """A channels-first model: (2, 6, 8) inputs, a 3-filter conv to (3, 4, 6) maps."""
    keras.utils.set_random_seed(0)
    i = keras.Input((2, 6, 8))
    x = keras.layers.Conv2D(3, 3, data_format="channels_first", name="conv")(i)
    km = keras.Model(i, keras.layers.Dense(2)(keras.layers.Flatten()(x)))
    path = tmp_path_factory.mktemp("features") / "cf.keras"
    km.save(path)
    x = np.random.default_rng(0).random((2, 2, 6, 8), np.float32)
    want = keras.Model(km.input, km.get_layer("conv").output).predict(x, verbose=0)
    return load_keras(path), x, np.asarray(want)


@pytest.fixture(scope="module")
def convs(tmp_path_factory):
    """Three 2-D convolutions side by side on one RGB input, with Keras's own kernels."""
    keras.utils.set_random_seed(0)
    i = keras.Input((6, 6, 3))
    t = keras.layers.Conv2DTranspose(5, 3, name="convT")(i)
    d = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, name="dw")(i)
    s = keras.layers.SeparableConv2D(4, 3, depth_multiplier=2, name="sep")(i)
    flat = [keras.layers.Flatten()(v) for v in (t, d, s)]
    km = keras.Model(i, keras.layers.Dense(2)(keras.layers.Concatenate()(flat)))
    path = tmp_path_factory.mktemp("features") / "convs.keras"
    km.save(path)
    kernels = {n: [np.asarray(w) for w in km.get_layer(n).get_weights()]
               for n in ("convT", "dw", "sep")}
    return load_keras(path), kernels


def test_feature_maps_of_a_channels_first_layer_are_n_k_h_w(cf):
    m, x, want = cf
    assert want.shape == (2, 3, 4, 6)  # Keras: (N, K, h, w)
    np.testing.assert_allclose(jaxsal.feature_maps(m, x, "conv"), want, rtol=1e-4, atol=1e-5)
    one = jaxsal.feature_maps(m, x[1], "conv", normalize=True)
    assert one.shape == (3, 4, 6)
    np.testing.assert_allclose(one.max(axis=(1, 2)), 1.0, atol=1e-6)  # per channel
    # the channels-last view of the same model gives the same maps
    view = jaxsal.feature_maps(m.channels_last(), np.moveaxis(x, 1, -1), "conv")
    np.testing.assert_allclose(view, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("pre_activation", [False, True])
def test_feature_maps_and_intermediates_compile_once(cf, compiles, pre_activation):
    """A second call with inputs of the same shapes reuses the program (a new jax.jit of a
    fresh lambda on every call compiled it again), for the same model with other weights too
    (the program is keyed by the function the model computes, the weights passed in);
    KerasModel.intermediates likewise."""
    m, x, want = cf
    np.testing.assert_allclose(jaxsal.feature_maps(m, x, "conv", pre_activation=pre_activation),
                               want, rtol=1e-4, atol=1e-5)  # (a linear conv: pre = post)
    jax.block_until_ready(m.intermediates(x, ["conv"]))
    negated = m.with_params(jax.tree.map(lambda w: -np.asarray(w), m.params))  # -maps
    n = compiles.n
    again = jaxsal.feature_maps(m, x[::-1], "conv", pre_activation=pre_activation)
    np.testing.assert_allclose(again, want[::-1], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(jaxsal.feature_maps(negated, x, "conv",
                                                   pre_activation=pre_activation),
                               -want, rtol=1e-4, atol=1e-5)
    jax.block_until_ready(m.intermediates(x[::-1], ("conv",)))
    assert compiles.n == n


def test_plot_feature_maps_of_a_channels_first_layer(cf):
    from jaxsal import plot

    m, x, want = cf
    fig = plot.feature_maps(m, x[:1], "conv")
    assert plot.count_panels(fig) == 3
    assert "3 of 3 channels, 4x6" in fig._suptitle.get_text()
    np.testing.assert_allclose(plot.panel_axes(fig)[2].images[0].get_array(), want[0, 2],
                               rtol=1e-4, atol=1e-5)


def test_filter_images_read_each_keras_kernel_layout(convs):
    m, k = convs
    # Conv2DTranspose: Keras stores (kh, kw, filters, in)
    assert k["convT"][0].shape == (3, 3, 5, 3)
    t = jaxsal.filter_images(m, "convT", normalize=None)
    np.testing.assert_array_equal(t, np.transpose(k["convT"][0], (2, 0, 1, 3)))
    assert jaxsal.filter_images(m).shape == (5, 3, 3, 3)  # the first conv: convT, RGB
    # DepthwiseConv2D (kh, kw, in, multiplier): output channel c * multiplier + j
    dk = k["dw"][0]
    d = np.asarray(jaxsal.filter_images(m, "dw", normalize=None))
    assert d.shape == (6, 3, 3, 1)
    for c in range(3):
        for j in range(2):
            np.testing.assert_array_equal(d[2 * c + j, ..., 0], dk[:, :, c, j])
    # SeparableConv2D: the Conv2D kernel it equals; convolving with it gives the layer
    s = np.asarray(jaxsal.filter_images(m, "sep", normalize=None))
    assert s.shape == (4, 3, 3, 3)
    x = np.random.default_rng(1).random((1, 6, 6, 3), np.float32)
    y = jax.lax.conv_general_dilated(x, jnp.transpose(s, (1, 2, 3, 0)), (1, 1), "VALID",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    _, acts = m.apply(m.params, x, capture=["sep"])
    np.testing.assert_allclose(y + k["sep"][2], acts["sep"], rtol=1e-4, atol=1e-5)


def test_plot_filters_read_each_keras_kernel_layout(convs):
    from jaxsal import plot

    m, k = convs
    fig = plot.filters(m, "convT")
    assert plot.count_panels(fig) == 5
    assert "5 of 5 filters, 3x3x3" in fig._suptitle.get_text()
    assert plot.panel_axes(fig)[0].images[0].get_array().shape == (3, 3, 3)  # RGB
    dw = plot.filters(m, "dw")
    assert plot.count_panels(dw) == 6
    np.testing.assert_allclose(plot.panel_axes(dw)[3].images[0].get_array(),
                               k["dw"][0][:, :, 1, 1])


def test_function_models(cf):
    """A FunctionModel's feature maps come from its features= (in its layout); it has no
    layers whose kernels could be shown, which filter_images says."""
    w = jax.random.normal(jax.random.key(0), (2, 3))

    def features(p, x):  # channels-last (N, 6, 8, 2) -> (N, 6, 8, 3)
        return x @ p["w"]

    def head(p, a):
        return a.mean(axis=(1, 2))

    x = np.random.default_rng(0).random((2, 6, 8, 2), np.float32)
    last = jaxsal.FunctionModel(params={"w": w}, features=features, head_fn=head,
                                input_shape=(6, 8, 2))
    want = np.moveaxis(x @ np.asarray(w), -1, 1)
    np.testing.assert_allclose(jaxsal.feature_maps(last, x, "features"), want, rtol=1e-5)
    assert jaxsal.feature_maps(last, x[0], "features").shape == (3, 6, 8)
    first = jaxsal.FunctionModel(
        params={"w": w}, features=lambda p, x: jnp.moveaxis(features(p, jnp.moveaxis(x, 1, -1)),
                                                            -1, 1),
        head_fn=lambda p, a: a.mean(axis=(2, 3)), data_format="channels_first")
    np.testing.assert_allclose(jaxsal.feature_maps(first, np.moveaxis(x, -1, 1), "features"),
                               want, rtol=1e-5)
    with pytest.raises(ValueError, match="unknown layer 'conv'"):
        jaxsal.feature_maps(last, x, "conv")
    with pytest.raises(TypeError, match="imported Keras model"):
        jaxsal.filter_images(last)
    from jaxsal import plot

    with pytest.raises(TypeError, match="imported Keras model"):
        plot.filters(last)


def test_feature_maps_normalize_is_a_bool(cf):
    """normalize= is True or False (each map on its own). filter_images's "all" (one scale
    for every filter) was read as True, each map scaled on its own; refused with the way to
    scale all maps together."""
    m, x, _ = cf
    for bad in ("all", "filter", 1):
        with pytest.raises(TypeError, match=r"normalize as a bool.*axis=None"):
            jaxsal.feature_maps(m, x, "conv", normalize=bad)
    maps = jaxsal.feature_maps(m, x, "conv", normalize=np.bool_(True))
    np.testing.assert_allclose(maps.max(axis=(2, 3)), 1.0, atol=1e-6)


def test_image_grid_of_channels_first_images():
    """maximize returns (T, C, H, W) images for a channels-first model; jaxsal.image_grid
    tiled them as (T, H=C, W=H, C=W): a grid of 3-pixel-high images with W channels."""
    imgs = jnp.asarray(np.random.default_rng(0).uniform(size=(5, 6, 7, 3)), jnp.float32)
    first = jnp.moveaxis(imgs, -1, 1)
    np.testing.assert_array_equal(jaxsal.image_grid(first, channels_first=True, ncols=2),
                                  jaxsal.image_grid(imgs, ncols=2))
    with pytest.raises(ValueError, match=r"\(5, 3, 6, 7\) look channels-first.*"
                                         r"channels_first=True"):
        jaxsal.image_grid(first)
    with pytest.raises(ValueError, match="channels_first=True: expected"):
        jaxsal.image_grid(imgs[..., 0], channels_first=True)


@pytest.mark.parametrize("x64", [False, True])
def test_image_grid_of_int64_images_beyond_int32_is_refused_not_wrapped(x64):
    """Without x64 JAX takes NumPy int64 images as int32: a pixel of 2**40 was tiled as 0
    without a word. It is refused naming int32's range (as post-processing refuses such
    maps); under x64 it is tiled as it is. int64 images within int32's range tile as before,
    and uint64 ones as uint32 where they fit."""
    x64_ctx = getattr(jax, "enable_x64", None)
    if x64_ctx is None:  # older JAX
        from jax.experimental import enable_x64 as x64_ctx
    big = np.array([[[2**40, 3]]], np.int64)
    with x64_ctx(x64):
        for ok in (np.array([[[70000, -5]]], np.int64), np.array([[[2**32 - 1]]], np.uint64)):
            np.testing.assert_array_equal(jaxsal.image_grid(ok, pad=0), ok[0])
        if x64:
            np.testing.assert_array_equal(jaxsal.image_grid(big, pad=0), big[0])
        else:
            with pytest.raises(ValueError, match=r"^image_grid: the images hold 1099511627776, "
                                                 r"beyond int32's range.*wrap around to 0"):
                jaxsal.image_grid(big, pad=0)
            with pytest.raises(ValueError, match="beyond int32's range"):
                jaxsal.image_grid([[[2**40]]], pad=0)  # (a list: int64 to NumPy)


def test_image_grid_caps_ncols_at_the_image_count():
    """More columns than images make one row of T: 3 images 4 wide, pad 1, are 3 * (4 + 1) + 1
    = 16 pixels wide with ncols=5 (the docstring's width said ncols * (W + pad) + pad = 26)."""
    g = jaxsal.image_grid(np.zeros((3, 2, 4), np.float32), ncols=5, pad=1)
    assert g.shape == (1 * (2 + 1) + 1, 3 * (4 + 1) + 1)
    doc = re.sub(r"\s+", " ", inspect.getdoc(jaxsal.image_grid))
    assert "cols = min(ncols, T)" in doc and "rows = ceil(T / cols)" in doc


def test_image_grid_of_channels_last_images_of_1_3_or_4_rows():
    """Channels-last images 4 rows high with 2 channels were refused as channels-first, and
    the refusal's advice (channels_first=True) tiled them as 4 channels of 10x2 images. An
    explicit channels_first=False reads them as they are: six 4x10 images (a NumPy grid); the
    default (None) still refuses them, naming both ways out."""
    imgs = np.random.default_rng(0).uniform(size=(6, 4, 10, 2)).astype(np.float32)
    want = np.zeros((2 * 5 + 1, 3 * 11 + 1, 2), np.float32)
    for i, im in enumerate(imgs):
        r, c = divmod(i, 3)
        want[1 + 5 * r:5 + 5 * r, 1 + 11 * c:11 + 11 * c] = im
    np.testing.assert_array_equal(jaxsal.image_grid(imgs, ncols=3, channels_first=False), want)
    with pytest.raises(ValueError, match=r"channels_first=False.*channels-last.*"
                                         r"channels_first=True.*channels-first"):
        jaxsal.image_grid(imgs, ncols=3)
    with pytest.raises(TypeError, match="channels_first as a bool or None"):
        jaxsal.image_grid(imgs, channels_first="no")


def test_image_grid_of_images_of_no_pixel_is_refused():
    """Images with H = 0 or W = 0 (or no channel) were tiled into a grid of the padding
    alone, without an error; refused, naming the shape and the empty axis."""
    # (2, 3, 6, 0): one of 3 or 4 pixels and no channel was read as channels-first (its
    # error advised channels_first=True, whose own error then said W = 0): empty first
    for shape, axis in (((3, 0, 4), "H"), ((3, 4, 0, 3), "W"), ((2, 5, 5, 0), "C"),
                        ((2, 3, 6, 0), "C"), ((2, 4, 4, 0), "C"), ((2, 3, 0, 5), "W")):
        with pytest.raises(ValueError, match=re.escape(
                f"image_grid: expected images of at least one pixel"
                f"{' and one channel' if axis == 'C' else ''}, got shape {shape} "
                f"({axis} = 0)")):
            jaxsal.image_grid(np.zeros(shape, np.float32))
    with pytest.raises(ValueError, match=r"got shape \(2, 3, 0, 4\) \(H = 0\)"):
        jaxsal.image_grid(np.zeros((2, 3, 0, 4), np.float32), channels_first=True)
    with pytest.raises(ValueError, match="expected at least one image, got 0"):
        jaxsal.image_grid(np.zeros((0, 3, 8, 8), np.float32))


def test_image_grid_pad_value_must_fit_integer_images():
    """A pad_value that uint8 images cannot hold was cast into their dtype: 300 became 44,
    0.5 (gray for float images) 0, silently. Refused; values the dtype holds are kept."""
    u8 = np.full((3, 4, 4, 3), 7, np.uint8)
    for bad in (300, 0.5, -1, "w"):
        with pytest.raises(ValueError, match=r"pad_value as an integer in 0\.\.255 .*uint8"):
            jaxsal.image_grid(u8, pad_value=bad)
    g = np.asarray(jaxsal.image_grid(u8, pad_value=255, ncols=2))
    assert g.dtype == np.uint8 and g[0, 0, 0] == 255 and g[-1, -1, 0] == 255
    assert g[1, 1, 0] == 7
    f = np.asarray(jaxsal.image_grid(u8 / 255.0, pad_value=0.5, ncols=2))
    assert f[0, 0, 0] == 0.5


def test_filter_images_refusal_gives_expressions_equal_to_its_images(tmp_path):
    """filter_images' refusal of a model without layers said the transpose of a kernel "gives
    the same images", but the default min-max scales each filter: the transpose alone is
    ``normalize=None``'s. Both expressions it gives, evaluated as written on a Keras kernel,
    equal filter_images of the model with that kernel; plot.filters is told to take the
    kernel itself, which it draws."""
    keras.utils.set_random_seed(1)
    i = keras.Input((4, 4, 3))
    km = keras.Model(i, keras.layers.Conv2D(2, 3, name="conv")(i))
    km.save(tmp_path / "conv.keras")
    m, k = load_keras(tmp_path / "conv.keras"), np.asarray(km.get_layer("conv").kernel)
    fm = jaxsal.FunctionModel(lambda p, v: v.reshape(len(v), -1) @ p, jnp.ones((48, 3)))
    with pytest.raises(TypeError, match=r"kernel array k \(kh, kw, C_in, C_out\)") as e:
        jaxsal.filter_images(fm)
    default, raw = re.findall(r"(jaxsal\.normalize\(.*?\), axis=.*?\)\)|jnp\.transpose\(k, "
                              r"\(3, 0, 1, 2\)\)) gives", str(e.value))
    scope = {"jaxsal": jaxsal, "jnp": jnp, "k": k}
    np.testing.assert_allclose(eval(default, scope), jaxsal.filter_images(m),  # noqa: S307
                               atol=1e-6)
    np.testing.assert_array_equal(eval(raw, scope),  # noqa: S307
                                  jaxsal.filter_images(m, normalize=None))
    from jaxsal import plot  # plot.filters is told to take the kernel as it is

    with pytest.raises(TypeError, match=r"of your own, pass it as it is, plot\.filters\(k\)"):
        plot.filters(fm)
    assert plot.count_panels(plot.filters(k)) == 2
