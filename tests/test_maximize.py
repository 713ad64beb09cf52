"""Activation maximization: objectives, the vmapped optax loop, transforms, helpers."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxsal
from jaxsal._src import base
from jaxsal._src import maximize as _max
from jaxsal._src import objectives as _obj
from model_import import load_keras

PLAIN = dict(transforms=jaxsal.identity(), regularizers=())


@pytest.fixture(scope="module")
def few(mnist):
    """Three classes, default options, 24 steps (compiled once, shared by several tests)."""
    return jaxsal.maximize(mnist, [0, 3, 7], steps=24, key=5)


# ---------------------------------------------------------------- objectives
def test_objective_terms_match_direct_computation(mnist):
    x = jax.random.uniform(jax.random.key(0), (28, 28, 1))
    y, acts = mnist.with_head("logits").apply(mnist.params, x[None],
                                             capture=["conv2d_2", "dense_1"])
    y, a2, d1 = y[0], acts["conv2d_2"][0], acts["dense_1"][0]
    direction = jnp.linspace(-1, 1, 64)
    cases = [
        (jaxsal.output_objective(4), y[4]),
        (jaxsal.channel_objective("conv2d_2", 7), a2[..., 7].mean()),
        (jaxsal.channel_objective("dense_1", 9), d1[9]),
        (jaxsal.neuron_objective("conv2d_2", 7), a2[12, 12, 7]),
        (jaxsal.neuron_objective("conv2d_2", 7, (3, 20)), a2[3, 20, 7]),
        (jaxsal.direction_objective("conv2d_2", direction), (a2 @ direction).mean()),
        (jaxsal.channel_objective("conv2d_2", 1) - 0.5 * jaxsal.output_objective(2),
         a2[..., 1].mean() - 0.5 * y[2]),
        (2.0 * jaxsal.output_objective(1) + jaxsal.output_objective(3), 2 * y[1] + y[3]),
    ]
    for obj, want in cases:
        got = obj(y, {"conv2d_2": a2, "dense_1": d1})
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=repr(obj))


def test_combined_objectives_are_vmapped_and_scored_on_returned_images(mnist):
    objs = [jaxsal.channel_objective("conv2d_2", c) - 0.5 * jaxsal.output_objective(k)
            for c, k in [(1, 2), (5, 8)]]
    res = jaxsal.maximize(mnist, objs, steps=4, key=0, **PLAIN)
    _, acts = mnist.apply(mnist.params, res.images, capture=["conv2d_2"])
    logits = mnist.with_head("logits")(res.images)
    want = [acts["conv2d_2"][0, ..., 1].mean() - 0.5 * logits[0, 2],
            acts["conv2d_2"][1, ..., 5].mean() - 0.5 * logits[1, 8]]
    np.testing.assert_allclose(res.scores, want, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- the loop
def test_result_shapes_range_and_scores(mnist, few):
    assert few.images.shape == (3, 28, 28, 1)
    assert few.scores.shape == (3,)
    assert few.trajectory.shape == (3, 24)
    assert float(few.images.min()) >= 0.0 and float(few.images.max()) <= 1.0
    logits = mnist.with_head("logits")(few.images)
    np.testing.assert_allclose(few.scores, logits[jnp.arange(3), jnp.array([0, 3, 7])],
                               rtol=1e-4, atol=1e-4)


def test_objective_increases_on_average(mnist, few):
    # plain gradient ascent: the mean objective rises window after window
    res = jaxsal.maximize(mnist, [0, 3, 7], steps=40, key=5, **PLAIN)
    windows = np.asarray(res.trajectory).reshape(3, 8, 5).mean(axis=(0, 2))
    assert np.all(np.diff(windows) > 0), windows
    # with the default transforms and regularizers, it still rises from start to end
    tr = np.asarray(few.trajectory)
    assert tr[:, -6:].mean() > tr[:, :6].mean() + 1.0, tr


def test_vmapped_over_units_equals_one_unit_at_a_time(mnist, few):
    for i, t in enumerate([0, 3, 7]):
        one = jaxsal.maximize(mnist, [t], steps=24, key=5)
        # batched and unbatched convolutions round differently; 24 steps amplify that a bit
        np.testing.assert_allclose(one.images[0], few.images[i], atol=3e-3)
        np.testing.assert_allclose(one.scores[0], few.scores[i], rtol=1e-3, atol=1e-2)
    assert float(jnp.abs(few.images[0] - few.images[1]).max()) > 0.1  # units really differ


def test_same_key_same_image_other_key_other_image(mnist, few):
    again = jaxsal.maximize(mnist, [0, 3, 7], steps=24, key=5)
    np.testing.assert_array_equal(again.images, few.images)
    other = jaxsal.maximize(mnist, [0, 3, 7], steps=24, key=jax.random.key(6))
    assert float(jnp.abs(other.images - few.images).max()) > 1e-3


def test_no_recompile_on_second_call(mnist):
    jaxsal.maximize(mnist, [1, 2], steps=3, key=0, **PLAIN)
    before = _max._build.cache_info()
    run = _max._build(*_last_build_args(mnist, [1, 2]))
    n_compiled = run._cache_size()
    jaxsal.maximize(mnist, [4, 9], steps=3, key=1, **PLAIN)  # other units, other key
    after = _max._build.cache_info()
    assert after.misses == before.misses
    assert run._cache_size() == n_compiled


def _last_build_args(model, targets):
    obj = _max._as_objective(model.with_head("logits"), targets, None, "channel")
    return (_max._ModelKey(model), "logits", obj.needed_layers, obj.needed_pre_layers, True,
            (28, 28, 1), (0.0, 1.0), 3, 1, 1.2, 0.0,
            _max._OptionKey(None), None, _max.DEFAULT_LEARNING_RATE, _max._OptionKey(()),
            _max._OptionKey(PLAIN["transforms"]), len(targets), False, 1, None)
    # unit_chunk: every unit of the MNIST model fits in one chunk; no seed, one image per
    # unit, no diversity


def _linear(w):
    """A linear model of 8x8x1 images, ``y = vec(x) @ w``."""
    return jaxsal.FunctionModel(_linear_fn, {"w": w}, input_shape=(8, 8, 1))


def _linear_fn(p, x):
    return x.reshape(x.shape[0], -1) @ p["w"]


def test_inline_options_compile_once(compiles):
    """Options built in the call (jaxsal's factories, as in the README's recipe) find the
    compiled program of an identical earlier call: they compare equal by hyperparameters."""
    m = _linear(jax.random.normal(jax.random.key(0), (64, 2)))
    opt = optax.adam(0.05)  # optax transformations: built once, matched by identity

    def call():
        return jaxsal.maximize(
            m, [0, 1], steps=2, key=0, optimizer=opt,
            parameterization=jaxsal.fourier(), transforms=jaxsal.standard_transforms(8),
            regularizers=(jaxsal.total_variation(0.5, beta=0.5), jaxsal.lp_norm(1.0, p=0.5),
                          jaxsal.l2_decay(0.1), jaxsal.blur_every(2, 0.5))).images

    first = call()
    compiles.n = 0
    second = call()
    assert compiles.n == 0
    np.testing.assert_array_equal(first, second)


_GAIN = 1.0  # read by _brightness and _gain (reassigned by the test below)


def _brightness(x):
    return _GAIN * jnp.sum(x)


def _gain(key, x):
    del key
    return _GAIN * x


def _own_options(kind):
    if kind == "regularizer":
        return dict(transforms=jaxsal.identity(),
                    regularizers=(jaxsal.Regularizer(penalty=_brightness),))
    if kind == "transform":
        return dict(transforms=_gain, regularizers=())
    par = jaxsal.pixels()
    return dict(transforms=jaxsal.identity(), regularizers=(),
                parameterization=jaxsal.Parameterization(
                    par.init, lambda q, r: par.to_image(q, r) * _GAIN, par.from_image,
                    par.project))


@pytest.mark.parametrize("kind", ["regularizer", "transform", "parameterization"])
def test_functions_of_one_s_own_reading_a_changed_variable_are_traced_again(compiles, kind):
    """A regularizer, transform or parameterization function of one's own that reads a
    module (notebook) variable: the program was found by the function's identity, so after
    the variable changed the same function reused the program that baked the old value in
    (review probe p7). They are keyed by their code and the values they read now
    (base.callable_key, as FunctionModel's functions): a change traces again, the same
    values find the program again."""
    global _GAIN
    m = _linear(jax.random.normal(jax.random.key(0), (64, 2)))
    opts = dict(steps=3, key=0, optimizer=optax.sgd(1.0), **_own_options(kind))
    try:
        first = jaxsal.maximize(m, [0], **opts).images
        compiles.n = 0
        again = jaxsal.maximize(m, [0], **_own_options(kind),  # built afresh: equal
                                **{k: v for k, v in opts.items()
                                   if k not in ("transforms", "regularizers",
                                                "parameterization")}).images
        assert compiles.n == 0  # the same code and values: the program is found again
        np.testing.assert_array_equal(again, first)
        _GAIN = 0.5
        changed = jaxsal.maximize(m, [0], **opts).images
        assert compiles.n > 0
        assert float(jnp.abs(changed - first).max()) > 1e-3
    finally:
        _GAIN = 1.0


def test_factories_compare_equal_by_hyperparameters_only():
    same = [lambda: jaxsal.pixels(squash="clip", init_value=0.3), jaxsal.fourier,
            lambda: jaxsal.fourier(color_matrix=np.eye(3)), lambda: jaxsal.jitter(2),
            lambda: jaxsal.pad(1, value=0.5), lambda: jaxsal.random_scale(0.9, 1.1),
            lambda: jaxsal.random_rotate(10), lambda: jaxsal.standard_transforms(16),
            lambda: jaxsal.compose(jaxsal.jitter(1), jaxsal.identity()),
            lambda: jaxsal.total_variation(0.5), lambda: jaxsal.lp_norm(2, p=0.5, center=0.5),
            lambda: jaxsal.l2_decay(1.0), lambda: jaxsal.blur_every(4, 1.0, weight=0.5)]
    for make in same:
        a, b = make(), make()
        assert a == b and hash(a) == hash(b), a
    different = [(jaxsal.pixels(), jaxsal.pixels(init_value=0.4)),
                 (jaxsal.pixels(), jaxsal.pixels(squash="tanh")),
                 (jaxsal.fourier(), jaxsal.fourier(decay_power=1.5)),
                 (jaxsal.fourier(), jaxsal.fourier(color_matrix=np.eye(3))),
                 (jaxsal.jitter(2), jaxsal.jitter(3)),
                 (jaxsal.jitter(2), jaxsal.jitter(2, mode="wrap")),
                 (jaxsal.pad(1, value=0.0), jaxsal.pad(1, value=-0.0)),
                 (jaxsal.random_rotate(10), jaxsal.random_rotate(11)),
                 (jaxsal.standard_transforms(16), jaxsal.standard_transforms(224)),
                 (jaxsal.standard_transforms(16), jaxsal.standard_transforms(16, pad_value=0.0)),
                 (jaxsal.total_variation(0.5), jaxsal.total_variation(0.6)),
                 (jaxsal.total_variation(0.5), jaxsal.total_variation(0.5, beta=2)),
                 (jaxsal.lp_norm(1.0), jaxsal.lp_norm(1.0, center=0.5)),
                 (jaxsal.blur_every(4, 1.0), jaxsal.blur_every(4, 1.5))]
    for a, b in different:
        assert a != b, (a, b)
    # numbers of different types trace differently: never one program for both
    from jaxsal._src.transforms import closure

    assert closure(_linear_fn, n=2) != closure(_linear_fn, n=2.0)
    assert closure(_linear_fn, n=1) != closure(_linear_fn, n=True)
    assert repr(jaxsal.jitter(2)) == "jitter(pixels=2, mode='reflect')"


def test_equal_models_share_a_program_with_their_own_params(compiles):
    """Two models computing the same function (here one function with two weight matrices)
    share one compiled program; each call still runs on its own model's params."""
    w = jax.random.normal(jax.random.key(0), (64, 2))
    a = jaxsal.maximize(_linear(w), [0], steps=20, key=0, **PLAIN)
    other = _linear(-w)
    compiles.n = 0
    b = jaxsal.maximize(other, [0], steps=20, key=0, **PLAIN)
    assert compiles.n == 0
    for res, sign in ((a, 1.0), (b, -1.0)):  # brighter where the model's own weight is > 0
        x = np.asarray(res.images[0]).ravel()
        pos = np.asarray(sign * w[:, 0]) > 0
        assert x[pos].mean() > x[~pos].mean() + 0.2
        np.testing.assert_allclose(res.scores[0], x @ (sign * np.asarray(w[:, 0])), rtol=1e-4)


@pytest.fixture(scope="module")
def channels_first_model(tmp_path_factory):
    """(2, 6, 8) images -> channels-first Conv2D "conv" (3 filters, maps (3, 4, 6)) -> Dense(2)."""
    keras = pytest.importorskip("keras")
    i = keras.Input((2, 6, 8))
    x = keras.layers.Conv2D(3, 3, data_format="channels_first", name="conv")(i)
    path = tmp_path_factory.mktemp("cf") / "cf.keras"
    keras.Model(i, keras.layers.Dense(2)(keras.layers.Flatten()(x))).save(path)
    return load_keras(path)


def test_a_channels_first_model_compiles_once(compiles, channels_first_model):
    """maximize optimizes a channels-first model through a channels_last() view made on each
    call; the view of the same model finds the program again."""
    m = channels_first_model
    first = jaxsal.maximize(m, [0, 1], steps=2, key=0, **PLAIN).images
    assert first.shape == (2, 2, 6, 8)  # the model's own layout
    compiles.n = 0
    again = jaxsal.maximize(m, [0, 1], steps=2, key=0, **PLAIN).images
    assert compiles.n == 0
    np.testing.assert_array_equal(first, again)


def test_output_units_of_a_channels_first_map_are_its_channels(tmp_path):
    """A channels-first segmentation model's output (N, K, H, W): output_objective(k) read
    the last axis, column k of the width, and accepted k up to W - 1; it now reads class k,
    the mean of the model's own output[:, k], and refuses k >= K."""
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(0)
    i = keras.Input((3, 8, 6))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu",
                            data_format="channels_first")(i)
    out = keras.layers.Conv2D(5, 1, data_format="channels_first", name="seg")(x)
    keras.Model(i, out).save(tmp_path / "seg.keras")
    m = load_keras(tmp_path / "seg.keras")
    assert m.output_data_format == "channels_first"
    res = jaxsal.maximize(m, [jaxsal.output_objective(4), jaxsal.output_objective(1)],
                          steps=3, key=0, **PLAIN)
    y = m.with_head("logits").apply(m.params, res.images)  # (2, 5, 8, 6)
    np.testing.assert_allclose(res.scores, [y[0, 4].mean(), y[1, 1].mean()], rtol=1e-5)
    with pytest.raises(ValueError, match=r"model output \(channels-first\) has 5 units.*"
                                         r"\(5, 8, 6\)"):
        jaxsal.maximize(m, [jaxsal.output_objective(5)], steps=1, key=0, **PLAIN)
    # targets="all" counts those classes (axis 0), not the map's width (6: class 5 refused)
    every = jaxsal.maximize(m, "all", steps=1, key=0, **PLAIN)
    assert every.images.shape == (5, 3, 8, 6)
    y = m.with_head("logits").apply(m.params, every.images)
    np.testing.assert_allclose(every.scores, y[jnp.arange(5), jnp.arange(5)].mean((1, 2)),
                               rtol=1e-5)


def test_unit_and_position_errors_read_the_same_in_either_layout(channels_first_model):
    """A channels-first layer (3, 4, 6) is seen through the model's channels-last view as
    (4, 6, 3): a neuron column 6 was refused as 'position 6 out of range on axis 1 of layer
    'conv' (shape (4, 6, 3))', axis 1 of the user's own (3, 4, 6) being the rows, and without
    the valid range. Positions are now named as rows and columns with their range."""
    m = channels_first_model
    assert m.layer("conv").output_shape == (3, 4, 6)  # channels, rows, columns
    maps = r"maps of 4 rows x 6 columns, 3 channels"
    with pytest.raises(ValueError, match=rf"column 6 of layer 'conv', which has {maps}; use a "
                                         r"column in 0\.\.5 \(position=\(row, column\)\)"):
        jaxsal.maximize(m, jaxsal.neuron_objective("conv", 1, (3, 6)), steps=1, **PLAIN)
    with pytest.raises(ValueError, match=rf"row 4 of layer 'conv', which has {maps}; use a "
                                         r"row in 0\.\.3"):
        jaxsal.maximize(m, jaxsal.neuron_objective("conv", 1, (4, 5)), steps=1, **PLAIN)
    with pytest.raises(ValueError, match=rf"index 3 out of range: layer 'conv' has 3 "
                                         rf"units/channels \({maps}\); use 0\.\.2"):
        jaxsal.maximize(m, [3], layer="conv", steps=1, **PLAIN)
    # image_shape is (C, H, W) for it, and errors show it as given (they showed the swapped
    # (H, W, C) of the channels-last view: (12, 12, 3) was reported as (12, 3, 12))
    cf = r"\(C, H, W\) for this channels-first model"
    for shape, want in (((1, 6, 8), rf"the model expects 2 channels, got image_shape=\(1, 6, "
                                     rf"8\); expected {cf}"),
                        ((6, 8, 2), rf"the model expects 2 channels, got image_shape=\(6, 8, "
                                     rf"2\); expected {cf}"),
                        ((2, 0, 8), rf"expected {cf}, got \(2, 0, 8\)"),
                        ((2, 6), rf"expected {cf}, got \(2, 6\)"),
                        ((2, 6.5, 8), rf"expected {cf} as three ints, got \(2, 6.5, 8\)")):
        with pytest.raises(ValueError, match=rf"image_shape: {want}"):
            jaxsal.maximize(m, [0], steps=1, image_shape=shape, **PLAIN)
    res = jaxsal.maximize(m, jaxsal.neuron_objective("conv", 1, (3, 5)), steps=1, **PLAIN)
    _, acts = m.apply(m.params, res.images, capture=["conv"])
    np.testing.assert_allclose(res.scores, acts["conv"][:, 1, 3, 5], rtol=1e-5)


def test_positions_of_a_layer_of_one_spatial_axis():
    """A layer of one spatial axis (a Conv1D's maps, (L, K)) is read at the position's row,
    its column 0; every position was refused there as 'no spatial axes' (the check sent
    every shape of fewer than 3 axes there). Here the layer's maps are the one-row image's
    row: (8, 2)."""
    m = jaxsal.FunctionModel(features=lambda p, x: x[:, 0] * p["s"],
                             head_fn=lambda p, a: a.mean(axis=1),
                             params={"s": jnp.ones(())}, layer="f", input_shape=(1, 8, 2))
    obj = (jaxsal.neuron_objective("f", 1, (5, 0))
           + jaxsal.direction_neuron_objective("f", [2.0, 0.0], (2, 0)))
    res = jaxsal.maximize(m, obj, steps=1, key=0, **PLAIN)
    img = np.asarray(res.images[0, 0])  # (8, 2)
    np.testing.assert_allclose(res.scores[0], img[5, 1] + 2 * img[2, 0], rtol=1e-5)
    maps = r"maps of 8 rows, 2 channels"
    with pytest.raises(ValueError, match=rf"row 8 of layer 'f', which has {maps}; use a row "
                                         r"in 0\.\.7 \(position=\(row, 0\)\)"):
        jaxsal.maximize(m, jaxsal.neuron_objective("f", 1, (8, 0)), steps=1, **PLAIN)
    with pytest.raises(ValueError, match=rf"column 1 of layer 'f', which has {maps}: one "
                                         r"spatial axis, no columns; use position=\(row, 0\)"):
        jaxsal.maximize(m, jaxsal.direction_neuron_objective("f", [1.0, 0.0], (5, 1)),
                        steps=1, **PLAIN)
    # a layer without spatial axes (K,) still takes no position
    flat = jaxsal.FunctionModel(features=lambda p, x: x.mean(axis=(1, 2)) * p["s"],
                                head_fn=lambda p, a: a, params={"s": jnp.ones(())},
                                layer="f", input_shape=(1, 8, 2))
    with pytest.raises(ValueError, match=r"layer 'f' has no spatial axes \(shape \(2,\)\); "
                                         r"pass position=None"):
        jaxsal.maximize(flat, jaxsal.neuron_objective("f", 1, (0, 0)), steps=1, **PLAIN)
    # positions given for the final maps move along the rows of smaller rounds' maps
    stacked = jaxsal.stack_objectives([jaxsal.neuron_objective("f", 0, (20, 0)),
                                       jaxsal.neuron_objective("f", 0)])
    got = _obj.positions_for(stacked, {"f": (8, 2)}, {"f": (32, 2)}).indices[0]
    np.testing.assert_array_equal(got, [[0, 5, 0], [0, -1, -1]])  # the cell of 20 at 8 rows


@pytest.mark.parametrize("param", [jaxsal.pixels(), jaxsal.pixels(squash="clip"),
                                   jaxsal.fourier()], ids=["sigmoid", "clip", "fourier"])
def test_input_range_respected(mnist, param):
    lo, hi = -1.5, 0.5
    res = jaxsal.maximize(mnist, [2, 6], steps=6, input_range=(lo, hi), key=0,
                          parameterization=param, optimizer=optax.sgd(10.0), **PLAIN)
    assert float(res.images.min()) >= lo and float(res.images.max()) <= hi
    assert float(res.images.max() - res.images.min()) > 0.05  # it did move
    assert np.all(np.isfinite(res.scores))


def test_multiscale_output_has_final_size(mnist):
    # rounds at 18x18, 27x27 and 40x40; each image is resized to the model's fixed 28x28 input
    res = jaxsal.maximize(mnist, [1, 4], steps=3, key=0, image_shape=(40, 40, 1),
                          upscaling_steps=3, upscaling_factor=1.5, upscale_blur=0.5, **PLAIN)
    assert res.images.shape == (2, 40, 40, 1)
    assert res.trajectory.shape == (2, 9)
    assert _max._round_sizes((40, 40), 3, 1.5) == [(18, 18), (27, 27), (40, 40)]
    logits = mnist.with_head("logits")(jax.image.resize(res.images, (2, 28, 28, 1), "linear"))
    np.testing.assert_allclose(res.scores, logits[jnp.arange(2), jnp.array([1, 4])], rtol=1e-4,
                               atol=1e-4)


def test_layer_channels_all_and_chunked(mnist):
    res = jaxsal.maximize(mnist, "all", layer="conv2d_1", steps=3, key=0, **PLAIN)
    assert res.images.shape == (32, 28, 28, 1)
    chunked = jaxsal.maximize(mnist, "all", layer="conv2d_1", steps=3, key=0, unit_chunk=10,
                              **PLAIN)
    np.testing.assert_allclose(chunked.images, res.images, atol=1e-5)
    np.testing.assert_allclose(chunked.scores, res.scores, rtol=1e-4, atol=1e-5)


def test_seed_images_and_step_regularizers(mnist):
    seed = jnp.full((28, 28, 1), 0.25)
    res = jaxsal.maximize(mnist, [3], steps=1, key=0, seed_images=seed,
                          optimizer=optax.sgd(0.0), regularizers=(), transforms=jaxsal.identity())
    np.testing.assert_allclose(res.images[0], seed, atol=1e-5)  # zero step: the seed comes back
    noisy = jax.random.uniform(jax.random.key(1), (1, 28, 28, 1))
    res = jaxsal.maximize(mnist, [3], steps=2, key=0, seed_images=noisy,
                          optimizer=optax.sgd(0.0), transforms=jaxsal.identity(),
                          regularizers=(jaxsal.blur_every(2, 1.0),))
    # the seed starts 1% of the range inside it (a sigmoid is flat at its ends)
    want = jaxsal.gaussian_blur(jnp.clip(noisy[0], 0.01, 0.99), 1.0)
    np.testing.assert_allclose(res.images[0], want, atol=1e-4)


def test_a_seed_at_the_ends_of_the_range_can_move():
    """A seed pixel at an end of the range (a digit's 0 background and 1 strokes, an image of
    0..255 values) started a sigmoid pixel at a variable of about -13.8, where it is flat: 50
    Adam(0.1) steps on a linear 8x8 model left the score where the seed had it (2.4% of the
    optimum). Seeds now start 1% of the range inside it (82% after 50 steps); the clipped
    pixels, which reach the ends, still start exactly at the seed."""
    w = jax.random.normal(jax.random.key(0), (64, 2))
    m = _linear(w)
    best = np.maximum(np.asarray(w), 0).sum(0)  # the maximum over [0, 1] images
    seed = np.zeros((8, 8, 1), np.float32)
    seed[:4] = 1.0  # half of the pixels at each end
    at_seed = (seed.reshape(-1) @ np.asarray(w)) / best
    assert np.all(at_seed < 0.1), at_seed
    res = jaxsal.maximize(m, "all", steps=50, key=0, seed_images=seed,
                          parameterization=jaxsal.pixels(), **PLAIN)
    assert np.all(np.asarray(res.scores) / best > 0.5), np.asarray(res.scores) / best
    frozen = optax.sgd(0.0)  # no step: the start comes back
    for par, start in ((jaxsal.pixels(), np.clip(seed, 0.01, 0.99)),
                       (jaxsal.pixels(squash="clip"), seed)):
        res = jaxsal.maximize(m, [0], steps=1, seed_images=seed, optimizer=frozen,
                              parameterization=par, **PLAIN)
        np.testing.assert_allclose(res.images[0], start, atol=1e-6)


def test_errors_are_raised_before_compute(mnist):
    with pytest.raises(ValueError, match="input_range"):
        jaxsal.maximize(mnist, [0], input_range=(1.0, 0.0))
    with pytest.raises(ValueError, match="out of range"):
        jaxsal.maximize(mnist, [10])
    with pytest.raises(ValueError, match="out of range"):
        jaxsal.maximize(mnist, [64], layer="conv2d_2")
    with pytest.raises(ValueError, match="unknown layer"):
        jaxsal.maximize(mnist, [0], layer="nope")
    with pytest.raises(ValueError, match="same"):
        jaxsal.maximize(mnist, [jaxsal.output_objective(0),
                                jaxsal.channel_objective("conv2d_2", 1)])
    with pytest.raises(ValueError, match="direction"):
        jaxsal.maximize(mnist, [jaxsal.direction_objective("conv2d_2", np.ones(3))])
    with pytest.raises(TypeError, match="optax"):
        jaxsal.maximize(mnist, [0], optimizer="adam")
    with pytest.raises(ValueError, match="steps"):
        jaxsal.maximize(mnist, [0], steps=0)
    with pytest.raises(ValueError, match="channels"):
        jaxsal.maximize(mnist, [0], image_shape=(28, 28, 3))
    with pytest.raises(TypeError, match="index"):
        jaxsal.output_objective(1.5)
    o = jaxsal.output_objective
    for bad in (jaxsal.stack_objectives([o(1), o(2)]) + o(0),  # a single term on a stack
                [jaxsal.stack_objectives([o(1), o(2)])]):  # a stack inside a list
        with pytest.raises(ValueError, match="stacked over one unit axis"):
            jaxsal.maximize(mnist, bad, steps=1)
    # an array weight: refused when multiplied (a factor is one real number)
    with pytest.raises(ValueError, match=r"Objective \* c: .*pass one number, not an array"):
        o(3) * np.array([1.0, 2.0])


# ---------------------------------------------------------------- building blocks
@pytest.mark.parametrize("mode,scipy_mode", [
    ("nearest", "nearest"), ("reflect", "reflect"), ("mirror", "mirror"),
    ("wrap", "grid-wrap"), ("grid-wrap", "grid-wrap"),
    ("constant", "grid-constant"), ("grid-constant", "grid-constant")])
def test_sample_modes_are_scipys(mode, scipy_mode):
    """random_scale / random_rotate read points outside the image as scipy.ndimage's modes
    (order=1) of the documented names: "wrap" has period n, SciPy's "grid-wrap" (SciPy's own
    "wrap" has period n - 1), "constant" interpolates towards the zeros beyond the edge,
    SciPy's "grid-constant"; both grid names are accepted as aliases."""
    from scipy import ndimage
    x = np.random.RandomState(0).rand(6, 7)
    s = 0.7  # zoom out: the corners read outside the image
    centre = np.array([2.5, 3.0])
    want = ndimage.affine_transform(x, np.eye(2) / s, centre - centre / s, order=1,
                                    mode=scipy_mode)
    got = jaxsal.random_scale(s, s, mode=mode)(jax.random.key(0), jnp.asarray(x[..., None]))
    np.testing.assert_allclose(np.asarray(got)[..., 0], want, atol=1e-6)
    jaxsal.random_rotate(5.0, mode=mode)  # accepted by both
    with pytest.raises(ValueError, match=r"random_rotate: expected mode in .*'grid-wrap'"):
        jaxsal.random_rotate(5.0, mode="scipy-wrap")


def test_pad_modes_are_numpys_and_documented():
    """pad's modes are np.pad's of the same names ("reflect" does not repeat the edge pixel:
    TF's REFLECT, SciPy's "mirror"), and its docstring lists exactly the modes it takes."""
    import re
    from jaxsal._src.transforms import _PAD_MODES
    x = np.random.RandomState(0).rand(3, 4, 2).astype(np.float32)
    widths = ((2, 2), (2, 2), (0, 0))
    for mode in _PAD_MODES:
        got = jaxsal.pad(2, mode=mode, value=0.5)(jax.random.key(0), jnp.asarray(x))
        kw = dict(constant_values=0.5) if mode == "constant" else {}
        np.testing.assert_array_equal(got, np.pad(x, widths, mode=mode, **kw))
    listed = re.findall(r'^\s*- ``"(\w+)"``', jaxsal.pad.__doc__, re.M)
    assert sorted(listed) == sorted(_PAD_MODES), listed
    with pytest.raises(ValueError, match=r"pad: expected mode in .*'reflect'"):
        jaxsal.pad(2, mode="mirror")  # SciPy's name for this "reflect": not taken


def test_transforms_shapes_and_determinism():
    img = jax.random.uniform(jax.random.key(0), (20, 24, 3))
    k = jax.random.key(3)
    for t in [jaxsal.jitter(3), jaxsal.random_scale(0.8, 1.2), jaxsal.random_rotate(20.0)]:
        t = jax.jit(t)
        out = t(k, img)
        assert out.shape == img.shape
        np.testing.assert_array_equal(out, t(k, img))
    std = jax.jit(jaxsal.standard_transforms(24))  # pads by 1 pixel (12 at 224 pixels)
    assert std(k, img).shape == (22, 26, 3)
    np.testing.assert_array_equal(std(k, img), std(k, img))
    assert jaxsal.pad(2)(k, img).shape == (24, 28, 3)
    np.testing.assert_allclose(jax.jit(jaxsal.random_rotate(0.0))(k, img), img, atol=1e-5)
    np.testing.assert_allclose(jax.jit(jaxsal.random_scale(1.0, 1.0))(k, img), img, atol=1e-5)
    shifted = jax.jit(jaxsal.jitter(2, mode="wrap"))(k, img)  # a wrap-around shift is a roll
    assert any(np.allclose(shifted, jnp.roll(img, (dy, dx), (0, 1)))
               for dy in range(-2, 3) for dx in range(-2, 3))
    # a quarter turn of a square image is a permutation of its pixels
    sq = img[:20, :20]
    rot = jax.jit(lambda im: jaxsal._src.transforms._affine(im, 1.0, jnp.pi / 2, "nearest"))(sq)
    assert any(np.allclose(rot, np.rot90(sq, k, axes=(0, 1)), atol=1e-5) for k in (1, 3))
    # a half-precision image keeps its dtype (the sampling weights and the blur's kernel are
    # float32: the scale, rotation, standard stack and blur gave float32 images)
    for dtype in (jnp.bfloat16, jnp.float16):
        half = img[:6, :7].astype(dtype)
        for t in [jaxsal.jitter(1), jaxsal.pad(1), jaxsal.random_scale(0.9, 1.1),
                  jaxsal.random_rotate(10.0), jaxsal.standard_transforms(8),
                  lambda k, im: jaxsal.gaussian_blur(im, 1.0)]:
            out = t(k, half)
            assert out.dtype == dtype, (t, out.dtype)
            np.testing.assert_allclose(out.astype(jnp.float32), t(k, half.astype(jnp.float32)),
                                       atol=2e-2)


def test_parameterizations_invert():
    x = jax.random.uniform(jax.random.key(0), (16, 18, 3), minval=0.05, maxval=0.95) * 255
    for p in [jaxsal.pixels(), jaxsal.pixels(squash="tanh"), jaxsal.pixels(squash="clip"),
              jaxsal.fourier(), jaxsal.fourier(decorrelate=False, decay_power=1.5)]:
        back = jax.jit(lambda x: p.to_image(p.from_image(x, (0.0, 255.0)), (0.0, 255.0)))(x)
        np.testing.assert_allclose(back, x, atol=2e-2, err_msg=p.name)
        v = p.init(jax.random.key(0), (16, 18, 3), (0.0, 255.0))
        assert p.to_image(v, (0.0, 255.0)).shape == (16, 18, 3)


def test_regularizer_values():
    x = jnp.zeros((4, 4, 1)).at[1, 1, 0].set(1.0)
    tv = jaxsal.total_variation(2.0).penalty(x)
    np.testing.assert_allclose(tv, 2.0 * (2 / 12 + 2 / 12), rtol=1e-6)
    np.testing.assert_allclose(jaxsal.lp_norm(3.0, p=1).penalty(x), 3.0 / 16, rtol=1e-6)
    np.testing.assert_allclose(jaxsal.l2_decay(1.0, center=0.5).penalty(x), 0.25, rtol=1e-6)
    spike = jnp.zeros((16, 16, 1)).at[8, 8, 0].set(1.0)
    blurred = jaxsal.blur_every(1, 1.0).step(spike)
    np.testing.assert_allclose(blurred.sum(), 1.0, atol=1e-5)  # away from the border
    np.testing.assert_allclose(blurred[8, 9, 0] / blurred[8, 8, 0], np.exp(-0.5), rtol=1e-5)
    half = jaxsal.blur_every(1, 1.0, weight=0.5).step(spike)
    np.testing.assert_allclose(half, 0.5 * spike + 0.5 * blurred, atol=1e-7)
    with pytest.raises(ValueError, match="weight"):
        jaxsal.total_variation(-1.0)
    # exponents >= 1 are exact
    d = jnp.tile(jnp.asarray([0.0, 0.5, 0.75, 0.75]).reshape(1, 4, 1), (2, 1, 1))  # dx .5 .25 0
    np.testing.assert_allclose(jaxsal.total_variation(1.0, beta=2.0).penalty(d),
                               (0.25 + 0.0625) / 3, rtol=1e-6)
    np.testing.assert_allclose(jaxsal.lp_norm(1.0, p=1.5).penalty(d),
                               np.mean(np.asarray([0.0, 0.5, 0.75, 0.75]) ** 1.5), rtol=1e-6)


def test_l1_penalties_have_zero_gradient_where_a_difference_is_zero():
    """total_variation (beta=1) and lp_norm (p=1) take the derivative of |d| at d = 0 as
    sign(0) = 0, as TensorFlow's abs does (tf.image.total_variation in tf-keras-vis; Lucid):
    d TV / d x_j = sum over axes of (sign(d_{j-1}) - sign(d_j)) / n_d, written out in NumPy.
    JAX's abs has slope 1 at 0: a flat image (TV's minimum) was pushed off it, and a
    mirror-symmetric image got a gradient that was not mirrored."""
    flat = jnp.full((4, 4, 1), 0.5)
    np.testing.assert_array_equal(jax.grad(jaxsal.total_variation(1.0).penalty)(flat), 0.0)
    np.testing.assert_array_equal(
        jax.grad(jaxsal.lp_norm(1.0, center=0.5).penalty)(flat), 0.0)
    row = jnp.asarray([0.5, 0.0, 0.0, 0.0, 0.5]).reshape(1, 5, 1)
    g = np.asarray(jax.grad(jaxsal.total_variation(1.0).penalty)(row)).ravel()
    np.testing.assert_array_equal(g, g[::-1])  # mirrored image: mirrored gradient
    # an image with many equal neighbours against the sign formula
    img = np.asarray([[0, 1, 1, 2], [0, 0, 1, 2], [2, 2, 1, 1]], np.float32)[..., None] / 2
    want = np.zeros_like(img)
    for ax in (0, 1):
        s = np.sign(np.diff(img, axis=ax)) / np.diff(img, axis=ax).size
        want += np.pad(s, [(1, 0) if a == ax else (0, 0) for a in range(3)])
        want -= np.pad(s, [(0, 1) if a == ax else (0, 0) for a in range(3)])
    np.testing.assert_allclose(jax.grad(jaxsal.total_variation(1.0).penalty)(jnp.asarray(img)),
                               want, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(jax.grad(jaxsal.lp_norm(2.0, center=0.5).penalty)(img),
                               2.0 * np.sign(img - 0.5) / img.size, rtol=1e-6)


def test_subunit_exponents_keep_gradients_finite():
    """|d|^q with q < 1 has an infinite slope at d = 0 (flat images, clipped pixels): the
    penalties are smoothed there (zero gradient at 0) and equal to |d|^q away from 0."""
    eps = jaxsal._src.regularizers.SUBUNIT_EPS
    flat = jnp.full((4, 4, 1), 0.3)
    for reg, n_terms in ((jaxsal.total_variation(2.0, beta=0.5), 2),
                         (jaxsal.lp_norm(2.0, p=0.5, center=0.3), 1)):
        np.testing.assert_array_equal(jax.grad(reg.penalty)(flat), 0.0)
        np.testing.assert_allclose(reg.penalty(flat), 2.0 * n_terms * eps ** 0.25, rtol=1e-5)
    ramp = jnp.asarray([0.0, 0.1, 0.3, 0.6])
    img = ramp[:, None, None] + 2 * ramp[None, :, None]  # no two neighbours equal
    want = np.mean(np.abs(np.diff(img, axis=0)) ** 0.5) + np.mean(np.abs(np.diff(img, axis=1))
                                                                  ** 0.5)
    np.testing.assert_allclose(jaxsal.total_variation(1.0, beta=0.5).penalty(img), want,
                               rtol=1e-4)
    np.testing.assert_allclose(jaxsal.lp_norm(1.0, p=0.5, center=-0.1).penalty(img),
                               np.mean(np.asarray(img + 0.1) ** 0.5), rtol=1e-4)
    m = _linear(jax.random.normal(jax.random.key(1), (64, 2)))
    for opts in (dict(regularizers=(jaxsal.total_variation(1.0, beta=0.5),),
                      seed_images=np.full((8, 8, 1), 0.3, np.float32)),
                 dict(regularizers=(jaxsal.lp_norm(1.0, p=0.5),),
                      parameterization=jaxsal.pixels(squash="clip"))):
        res = jaxsal.maximize(m, [0, 1], steps=6, key=0, transforms=jaxsal.identity(), **opts)
        assert np.all(np.isfinite(res.images)) and np.all(np.isfinite(res.scores))


def test_filter_images_feature_maps_and_grid(mnist, fixtures_dir):
    f = jaxsal.filter_images(mnist)
    assert f.shape == (32, 3, 3, 1)
    np.testing.assert_allclose(f.min(axis=(1, 2, 3)), 0.0, atol=1e-6)
    np.testing.assert_allclose(f.max(axis=(1, 2, 3)), 1.0, atol=1e-6)
    raw = jaxsal.filter_images(mnist, "conv2d_2", normalize=None)
    np.testing.assert_array_equal(raw, np.transpose(mnist.layer("conv2d_2").params["kernel"],
                                                    (3, 0, 1, 2)))
    with pytest.raises(ValueError, match="kernel"):
        jaxsal.filter_images(mnist, "flatten_1")

    d = np.load(fixtures_dir / "mnist_cnn_tfkeras2.expected.npz")
    x = d["x"][:2]
    maps = jaxsal.feature_maps(mnist, x, "conv2d_2")
    acts = mnist.intermediates(x, ["conv2d_2"])["conv2d_2"]
    assert maps.shape == (2, 64, 24, 24)
    np.testing.assert_allclose(maps[1, 5], acts[1, ..., 5], rtol=1e-6)
    assert jaxsal.feature_maps(mnist, x[0], "conv2d_2", normalize=True).shape == (64, 24, 24)

    imgs = jnp.arange(5 * 2 * 3, dtype=jnp.float32).reshape(5, 2, 3) + 1
    g = jaxsal.image_grid(imgs, ncols=3, pad=1)
    assert g.shape == (2 * 3 + 1, 3 * 4 + 1)
    np.testing.assert_array_equal(g[1:3, 5:8], imgs[1])
    np.testing.assert_array_equal(g[4:6, 1:4], imgs[3])
    np.testing.assert_array_equal(g[4:6, 9:12], 0.0)  # the empty sixth cell
    assert jaxsal.image_grid(jnp.ones((10, 4, 4, 3))).shape == (3 * 5 + 1, 4 * 5 + 1, 3)
    for bad in (1.5, -1, True):
        with pytest.raises(ValueError, match="pad as an int >= 0"):
            jaxsal.image_grid(imgs, pad=bad)
    for bad in (True, 2.0, 0):  # True was taken for one column
        with pytest.raises(ValueError, match="ncols"):
            jaxsal.image_grid(imgs, ncols=bad)


def test_ten_class_grid_renders_to_png(mnist, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = jaxsal.maximize(mnist, range(10), steps=2, key=0, **PLAIN)
    grid = np.asarray(jaxsal.image_grid(res.images, ncols=5, pad=2))
    assert grid.shape == (2 * 30 + 2, 5 * 30 + 2, 1)
    path = tmp_path / "grid.png"
    plt.imsave(path, grid[..., 0], cmap="gray", vmin=0.0, vmax=1.0)
    back = plt.imread(path)
    assert back.shape[:2] == grid.shape[:2]
    assert back.std() > 0


@pytest.mark.slow
def test_quality_bar_mnist_defaults(mnist):
    """The acceptance bar: 10 classes, 200 steps, default options, logits head, [0, 1].
    tf-keras-vis reaches a mean target logit of 3.16 with 4/10 classified correctly."""
    res = jaxsal.maximize(mnist, range(10), steps=200, input_range=(0.0, 1.0), key=0)
    logits = np.asarray(mnist.with_head("logits")(res.images))
    target = logits[np.arange(10), np.arange(10)]
    assert np.array_equal(logits.argmax(axis=1), np.arange(10)), logits.argmax(axis=1)
    assert target.mean() >= 2 * 3.16, target


def test_rgb_fourier_standard_transforms(fixtures_dir):
    """An RGB model (32x32x3, one sigmoid unit) with the Lucid-style options: Fourier
    parameterization with colour decorrelation, the standard transform stack (its padding
    enlarges the image, which is resized back to the model input), channel and neuron
    objectives of a conv layer, input range [0, 255]."""
    m = load_keras(fixtures_dir / "binary_cnn_keras3.keras")
    opts = dict(parameterization=jaxsal.fourier(), transforms=jaxsal.standard_transforms(32),
                regularizers=(jaxsal.total_variation(0.5),), input_range=(0.0, 255.0),
                optimizer=optax.adam(0.05), steps=30, key=0)
    res = jaxsal.maximize(m, [0, 5], layer="block2_conv1", **opts)
    assert res.images.shape == (2, 32, 32, 3)
    assert float(res.images.min()) >= 0.0 and float(res.images.max()) <= 255.0
    tr = np.asarray(res.trajectory)
    assert tr[:, -5:].mean() > tr[:, :5].mean()
    _, acts = m.apply(m.params, res.images, capture=["block2_conv1"])
    np.testing.assert_allclose(res.scores, [acts["block2_conv1"][0, ..., 0].mean(),
                                            acts["block2_conv1"][1, ..., 5].mean()], rtol=1e-4)
    # the colour channels are not all equal (decorrelation mixes them)
    assert float(jnp.abs(res.images[..., 0] - res.images[..., 1]).max()) > 1.0


def test_a_colour_matrix_for_images_without_three_channels_is_refused():
    """fourier(color_matrix=M) mixes the channels of images of M's channel count; on a
    grayscale (or 4-channel) model an RGB matrix was skipped without a word, it is refused
    (tests/test_parameterization.py: matrices of other channel counts). The default
    decorrelation (ImageNet's, for RGB) leaves other channel counts unmixed."""
    m = _linear(jax.random.normal(jax.random.key(0), (64, 1)))  # 8x8x1 images
    given = jaxsal.fourier(color_matrix=np.diag([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match=r"fourier: expected images of 3 channel\(s\) for the "
                                         r"\(3, 3\) color_matrix given, got 1 channel\(s\).*"
                                         r"decorrelate=False"):
        jaxsal.maximize(m, [0], steps=1, parameterization=given, **PLAIN)
    x = jnp.full((4, 4, 1), 0.3)
    for par in (jaxsal.fourier(), jaxsal.fourier(decorrelate=False)):
        back = par.to_image(par.from_image(x, (0.0, 1.0)), (0.0, 1.0))
        np.testing.assert_allclose(back, x, atol=1e-6)


def test_linear_function_model_reaches_the_analytic_optimum():
    """For y = W^T vec(x) with x in [0, 1], the maximizer of unit k is x = [W[:, k] > 0]."""
    w = jax.random.normal(jax.random.key(0), (8 * 8, 3))

    def fn(p, x):
        return x.reshape(x.shape[0], -1) @ p["w"]

    m = jaxsal.FunctionModel(fn, {"w": w}, input_shape=(8, 8, 1))
    res = jaxsal.maximize(m, "all", steps=150, key=0, **PLAIN)
    assert res.images.shape == (3, 8, 8, 1)
    want = (np.asarray(w).T.reshape(3, 8, 8, 1) > 0).astype(np.float32)
    np.testing.assert_allclose(res.images, want, atol=0.05)
    np.testing.assert_allclose(res.scores, np.maximum(np.asarray(w), 0).sum(0), rtol=0.02)
    with pytest.raises(ValueError, match="out of range"):
        jaxsal.maximize(m, [3])


def test_gaussian_blur_borders_and_shapes():
    """Reflected borders (NumPy's ``reflect``) while the radius fits the image, repeated
    edges after; one image only, with a message that says how to blur a batch."""
    img = np.random.default_rng(0).random((9, 9, 2)).astype(np.float32)

    def by_hand(sigma, mode):
        k = np.asarray(jaxsal._src.transforms.gaussian_kernel(sigma))
        r = len(k) // 2
        p = np.pad(img, ((r, r), (r, r), (0, 0)), mode=mode)
        p = sum(k[i] * p[i:i + 9] for i in range(len(k)))
        return sum(k[i] * p[:, i:i + 9] for i in range(len(k)))

    np.testing.assert_allclose(jaxsal.gaussian_blur(img, 2.0), by_hand(2.0, "reflect"),
                               atol=1e-6)  # radius 6 < 9
    np.testing.assert_allclose(jaxsal.gaussian_blur(img, 3.0), by_hand(3.0, "edge"),
                               atol=1e-6)  # radius 9: no reflection of 9 pixels
    for bad in (np.stack([img, img]), img[..., 0]):
        with pytest.raises(ValueError, match="one image \\(H, W, C\\).*jax.vmap"):
            jaxsal.gaussian_blur(bad, 1.0)
    np.testing.assert_array_equal(jaxsal.gaussian_blur(img, 0.0), img)  # 0: no blur
    with pytest.raises(ValueError, match="sigma >= 0.*got -2.0"):
        jaxsal.gaussian_blur(img, -2.0)


def test_centers_may_be_arrays_and_still_compare_equal():
    """``lp_norm``/``l2_decay``'s ``center`` may hold one value per channel."""
    img = np.random.default_rng(0).random((4, 4, 3)).astype(np.float32)
    c = np.array([0.2, 0.5, 0.8], np.float32)
    np.testing.assert_allclose(jaxsal.l2_decay(2.0, center=c).penalty(img),
                               2.0 * np.mean((img - c) ** 2), rtol=1e-6)
    np.testing.assert_allclose(jaxsal.lp_norm(1.0, p=1.0, center=c).penalty(img),
                               np.mean(np.abs(img - c)), rtol=1e-6)
    assert jaxsal.l2_decay(center=c) == jaxsal.l2_decay(center=c.copy())
    assert jaxsal.l2_decay(center=c) != jaxsal.l2_decay(center=c + 0.1)


def test_options_that_would_be_ignored_are_refused(mnist):
    """``layer=``/``objective=`` with Objectives as targets, and ``objective=`` for output
    units, would not be used: refused, saying why."""
    with pytest.raises(ValueError, match="layer= applies to unit indices; these targets are "
                                         "Objectives"):
        jaxsal.maximize(mnist, [jaxsal.output_objective(3)], layer="conv2d_2", steps=2, key=0)
    with pytest.raises(ValueError, match="objective= applies to unit indices"):
        jaxsal.maximize(mnist, jaxsal.channel_objective("conv2d_2", 1), objective="neuron",
                        steps=2, key=0)
    with pytest.raises(ValueError, match="objective='neuron' chooses how a unit of layer="):
        jaxsal.maximize(mnist, [3], objective="neuron", steps=2, key=0)
    # check_finite="False" read as true and None as false (the check silently off)
    for flag in ("False", None):
        with pytest.raises(TypeError, match="check_finite as a bool"):
            jaxsal.maximize(mnist, [3], steps=2, key=0, check_finite=flag)


def test_a_second_call_traces_nothing(mnist):
    """A second identical call runs the compiled program and traces no model: the model's
    output shape (its objective's bounds check, asked on every call through a fresh
    with_head variant) was traced again each time (twice per call)."""
    traces = []

    def listen(event, duration, **kw):
        if event == "/jax/core/compile/jaxpr_trace_duration":
            traces.append(event)

    jaxsal.maximize(mnist, [1, 2], steps=2, key=0, input_range=(0.0, 1.0))
    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        jaxsal.maximize(mnist, [1, 2], steps=2, key=0, input_range=(0.0, 1.0))
    finally:
        unregister = getattr(jax.monitoring, "unregister_event_duration_listener", None)
        if unregister is not None:
            unregister(listen)
    n = len(traces)
    traces.clear()
    assert n == 0


def test_an_axis_of_one_pixel_keeps_its_size():
    """A 1 x 40 image (one row) comes back 1 x 40, with one scale or several: the smaller
    rounds' floor of 2 pixels made every round, the last one included, 2 rows tall."""
    w = jax.random.normal(jax.random.key(0), (40, 2))
    m = jaxsal.FunctionModel(lambda p, x: x.reshape(x.shape[0], -1) @ p["w"], {"w": w},
                             input_shape=(1, 40, 1))
    for rounds in (1, 3):
        res = jaxsal.maximize(m, [0, 1], steps=2, key=0, upscaling_steps=rounds,
                              upscaling_factor=1.5, **PLAIN)
        assert res.images.shape == (2, 1, 40, 1), rounds
        np.testing.assert_allclose(res.scores, jnp.einsum("tk,kt->t", res.images.reshape(2, 40),
                                                          w), rtol=1e-5)
    assert _max._round_sizes((1, 40), 3, 1.5) == [(1, 18), (1, 27), (1, 40)]


def _below_range(p, x):
    """Output 0: minus how far the image's pixels lie below 0 (0 for an image in [0, 1])."""
    return jnp.minimum(x, 0.0).reshape(x.shape[0], -1).sum(1, keepdims=True) * jnp.ones((1, 2))


def test_projected_ascent_starts_inside_the_range():
    """pixels(squash="clip") is projected gradient ascent: the model sees images in
    input_range from the first step on. Its starting noise around init_value=0 was not
    clipped, so the first forward pass (trajectory[:, 0]) saw pixels below lo; a
    Parameterization of one's own is projected at the start too."""
    clip = jaxsal.pixels(squash="clip", init_value=0.0, init_std=0.1)
    start = clip.to_image(clip.init(jax.random.key(0), (8, 8, 1), (0.0, 1.0)), (0.0, 1.0))
    assert float(start.min()) >= 0.0 and float(start.max()) > 0.0
    m = jaxsal.FunctionModel(_below_range, {}, input_shape=(8, 8, 1))
    res = jaxsal.maximize(m, [0], steps=3, key=0, parameterization=clip, **PLAIN)
    np.testing.assert_array_equal(res.trajectory, 0.0)
    own = jaxsal.Parameterization(init=lambda k, s, r: jnp.full(s, -1.0),
                                  to_image=lambda p, r: p, from_image=lambda x, r: x,
                                  project=lambda p, r: jnp.clip(p, *r))
    res = jaxsal.maximize(m, [0], steps=3, key=0, parameterization=own, **PLAIN)
    np.testing.assert_array_equal(res.trajectory, 0.0)


def test_a_layer_named_by_its_name_and_by_its_path(tmp_path):
    """A nested model's layer may be named by its bare name or its path; one objective that
    uses both (here for two channels of one layer) reads that layer once. It raised a
    KeyError: the layer was captured under one of the two names only."""
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(0)
    ii = keras.Input((8, 8, 1))
    inner = keras.Model(ii, keras.layers.Conv2D(3, 3, name="conv")(ii), name="inner")
    i = keras.Input((8, 8, 1))
    keras.Model(i, keras.layers.Dense(2)(keras.layers.Flatten()(inner(i)))).save(
        tmp_path / "nested.keras")
    m = load_keras(tmp_path / "nested.keras")
    obj = jaxsal.channel_objective("conv", 1) + 0.5 * jaxsal.channel_objective("inner/conv", 2)
    res = jaxsal.maximize(m, obj, steps=2, key=0, **PLAIN)
    a = m.apply(m.params, res.images, capture=["inner/conv"])[1]["inner/conv"][0]
    np.testing.assert_allclose(res.scores[0], a[..., 1].mean() + 0.5 * a[..., 2].mean(),
                               rtol=1e-5)
    alone = jaxsal.maximize(m, [1], layer="conv", steps=2, key=0, **PLAIN)
    np.testing.assert_allclose(alone.scores[0], jaxsal.maximize(
        m, [1], layer="inner/conv", steps=2, key=0, **PLAIN).scores[0])


NAN, INF = float("nan"), float("inf")
_INVALID_HYPERPARAMETERS = {
    "total_variation(nan)": lambda: jaxsal.total_variation(NAN),
    "total_variation(inf)": lambda: jaxsal.total_variation(INF),
    "lp_norm(nan)": lambda: jaxsal.lp_norm(NAN),
    "lp_norm(center=nan)": lambda: jaxsal.lp_norm(1.0, center=NAN),
    "l2_decay(inf)": lambda: jaxsal.l2_decay(INF),
    "l2_decay(center=[0, inf])": lambda: jaxsal.l2_decay(1.0, center=[0.0, INF]),
    "blur_every(1.5)": lambda: jaxsal.blur_every(1.5, 0.5),
    "blur_every(1, nan)": lambda: jaxsal.blur_every(1, NAN),
    "random_rotate(nan)": lambda: jaxsal.random_rotate(NAN),
    "random_rotate(inf)": lambda: jaxsal.random_rotate(INF),
    "random_scale(0.9, inf)": lambda: jaxsal.random_scale(0.9, INF),
    "jitter(1.7)": lambda: jaxsal.jitter(1.7),
    "jitter(True)": lambda: jaxsal.jitter(True),
    # (an int too large for a float: OverflowError from float(), not this ValueError, before)
    "jitter(10**400)": lambda: jaxsal.jitter(10**400),
    "random_rotate(10**400)": lambda: jaxsal.random_rotate(10**400),
    "pad(1, value=nan)": lambda: jaxsal.pad(1, value=NAN),
    "standard_transforms(pad_value=inf)": lambda: jaxsal.standard_transforms(32, pad_value=INF),
    "pixels(init_std=nan)": lambda: jaxsal.pixels(init_std=NAN),
    "pixels(init_std=-1)": lambda: jaxsal.pixels(init_std=-1.0),
    "fourier(decay_power=nan)": lambda: jaxsal.fourier(decay_power=NAN),
    "fourier(init_std=inf)": lambda: jaxsal.fourier(init_std=INF),
    "fourier(color_matrix=zeros)": lambda: jaxsal.fourier(color_matrix=np.zeros((3, 3))),
    "output_objective(weight=nan)": lambda: jaxsal.output_objective(1, weight=NAN),
    "inf * channel_objective": lambda: INF * jaxsal.channel_objective("conv2d_2", 1),
    "direction_objective([nan, ...])": lambda: jaxsal.direction_objective(
        "conv2d_2", np.r_[NAN, np.ones(63)]),
}


@pytest.mark.parametrize("make", _INVALID_HYPERPARAMETERS.values(),
                         ids=_INVALID_HYPERPARAMETERS.keys())
def test_non_finite_or_fractional_hyperparameters_are_refused(make):
    """A NaN or infinite weight, angle, width or centre was accepted and every optimized
    image came back NaN (total_variation(nan), random_rotate(inf), ...); pixel counts and
    step intervals were truncated (jitter(1.7) jittered by 1). Refused when built."""
    with pytest.raises(ValueError,
                       match="expected .*(finite|whole number|invertible|as an int)"):
        make()



@pytest.mark.parametrize("make, error", [
    (lambda: jaxsal.total_variation(beta="2"), r"total_variation: expected beta > 0 \(an "
                                               r"exponent\), got '2'"),
    (lambda: jaxsal.lp_norm(p=True), r"lp_norm: expected p > 0 \(an exponent\), got True"),
    (lambda: jaxsal.lp_norm(p=0), r"lp_norm: expected p > 0"),
    (lambda: jaxsal.fourier(decay_power=-1), r"fourier: expected decay_power >= 0"),
])
def test_exponents_are_positive_numbers(make, error):
    """A string or bool exponent was taken through float() (beta='2' ran as 2.0); a negative
    spectral decay, which scales high frequencies up, was accepted."""
    with pytest.raises(ValueError, match=error):
        make()


@pytest.mark.parametrize("squash", ["sigmoid", "tanh"])
@pytest.mark.parametrize("end", [0.0, 1.0])
def test_a_squashed_start_at_the_end_of_the_range_is_refused(squash, end):
    """pixels(init_value=0.0) (sigmoid or tanh) was accepted and started every pixel at a
    variable of about -13.8 (the fraction clamped to 1e-6), where the squash is flat: on a
    linear 8x8 model, 50 Adam(0.1) steps reached 0.05% of the optimum (tanh: 6%; from
    init_value=0.05: 92%, tanh 99%). Refused with the fix; squash='clip' starts exactly at
    the end."""
    with pytest.raises(ValueError, match=rf"init_value strictly between 0 and 1 with "
                                         rf"squash='{squash}', got {end:g}.*saturated.*"
                                         r"squash='clip'"):
        jaxsal.pixels(squash=squash, init_value=end)
    jaxsal.pixels(squash="clip", init_value=end)  # the clipped pixels start at the end
    jaxsal.pixels(squash=squash, init_value=abs(end - 0.05))


def test_default_transforms_are_sized_to_each_round(monkeypatch):
    """With multi-scale rounds the default transforms follow each round's image size
    (jitter by size / 14): a 140-pixel image's 21-pixel first round was jittered by the
    final size's 10 pixels, half its width."""
    sizes = []

    def recording(image_size):
        sizes.append(image_size)
        return jaxsal.identity()

    monkeypatch.setattr(_max, "default_transforms", recording)
    m = jaxsal.FunctionModel(lambda p, x: x.mean(axis=(1, 2)) * p["w"], {"w": jnp.ones(1)},
                             input_shape=(None, None, 1))
    res = jaxsal.maximize(m, [0], steps=1, key=0, image_shape=(140, 70, 1), upscaling_steps=3,
                          upscaling_factor=2.6, regularizers=())
    assert res.images.shape == (1, 140, 70, 1)
    rounds = _max._round_sizes((140, 70), 3, 2.6)
    assert rounds == [(21, 10), (54, 27), (140, 70)]
    assert sizes == [max(hw) for hw in rounds]


def test_optimizers_that_read_the_loss():
    """optax transformations whose update reads the loss (L-BFGS's line search: value, grad
    and value_fn; reduce_on_plateau: value) are optax.GradientTransformations like any other;
    they raised a TypeError (missing keyword arguments) while the program was traced."""
    w = jax.random.normal(jax.random.key(0), (64, 3))
    m = _linear(w)
    best = np.maximum(np.asarray(w), 0).sum(0)  # the maximum over [0, 1] images
    lbfgs = optax.lbfgs()
    res = jaxsal.maximize(m, "all", steps=30, key=0, optimizer=lbfgs, **PLAIN)
    np.testing.assert_allclose(res.scores, best, rtol=2e-3)
    plateau = optax.chain(optax.sgd(0.5), optax.contrib.reduce_on_plateau(patience=2))
    res = jaxsal.maximize(m, "all", steps=30, key=0, optimizer=plateau,
                          parameterization=jaxsal.pixels(squash="clip"), **PLAIN)
    np.testing.assert_allclose(res.scores, best, rtol=2e-3)


def test_the_multi_input_recipe_keeps_the_logits_head(tmp_path):
    """maximize refuses a model of two inputs and says how to hold the other one fixed. Its
    recipe wrapped model.apply, whose softmax outputs a FunctionModel takes as logits: the
    images maximized probabilities, not the default logits. The recipe, as printed, now
    maximizes the logits."""
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(0)
    a, b = keras.Input((8, 8, 1), name="img"), keras.Input((4,), name="meta")
    h = keras.layers.Concatenate()([keras.layers.Flatten()(keras.layers.Conv2D(2, 3)(a)), b])
    keras.Model([a, b], keras.layers.Dense(3, activation="softmax")(h)).save(
        tmp_path / "two.keras")
    model = load_keras(tmp_path / "two.keras")
    with pytest.raises(ValueError, match="2 inputs") as err:
        jaxsal.maximize(model, [0], steps=2, key=0)
    recipe = str(err.value).split("(1, D): ")[1].split(" (a FunctionModel")[0]
    names = dict(jaxsal=jaxsal, jnp=jnp, model=model, meta=jnp.ones((1, 4)), D=4, H=8, W=8, C=1)
    wrapped = eval(recipe, names)
    res = jaxsal.maximize(wrapped, [0, 1], steps=2, key=0)
    logits = model.with_head("logits")([res.images, jnp.ones((2, 4))])
    np.testing.assert_allclose(res.scores, logits[jnp.arange(2), jnp.arange(2)], rtol=1e-5)


def test_total_variation_of_one_row_or_column():
    """An axis of one pixel has no neighbours along it: total variation is the other axis's
    term alone. It was the mean of an empty array, NaN, so the loss of every step of a
    1 x W image was NaN (and what reads it, L-BFGS's line search, failed)."""
    row = jnp.asarray([0.0, 1.0, 1.0, 3.0]).reshape(1, 4, 1)
    tv = jaxsal.total_variation(2.0, beta=2.0)
    np.testing.assert_allclose(tv.penalty(row), 2.0 * (1 + 0 + 4) / 3, rtol=1e-6)
    np.testing.assert_allclose(tv.penalty(row.reshape(4, 1, 1)), 2.0 * 5 / 3, rtol=1e-6)
    np.testing.assert_array_equal(tv.penalty(jnp.ones((1, 1, 3))), 0.0)
    w = jax.random.normal(jax.random.key(0), (40, 2))
    m = jaxsal.FunctionModel(lambda p, x: x.reshape(x.shape[0], -1) @ p["w"], {"w": w},
                             input_shape=(1, 40, 1))
    res = jaxsal.maximize(m, [0, 1], steps=30, key=0, optimizer=optax.lbfgs(),
                          transforms=jaxsal.identity(),
                          regularizers=(jaxsal.total_variation(0.01),))
    assert np.all(np.isfinite(np.asarray(res.images)))
    assert np.all(np.asarray(res.scores) > 0.9 * np.maximum(np.asarray(w), 0).sum(0))


@pytest.mark.parametrize("transforms", [jaxsal.identity(), jaxsal.pad(4)],
                         ids=["identity", "pad"])
def test_neuron_positions_follow_the_rounds_of_a_model_of_any_size(transforms):
    """A model without a fixed input size runs the smaller multi-scale rounds at their own
    size. A neuron position, given for the final maps, is moved to the same place of each
    round's smaller maps; it was clamped to their edge, so the first rounds brightened the
    bottom-right corner. A pad grows the maps: the position moves with the image's content
    (it was read 4 pixels up and left, so another pixel was lit: review probe p5). Here the
    layer's maps are the image itself."""
    m = jaxsal.FunctionModel(features=lambda p, x: x * p["s"],
                             head_fn=lambda p, a: a.mean(axis=(1, 2)),
                             params={"s": jnp.ones(())}, layer="f", input_shape=(None, None, 1))
    res = jaxsal.maximize(m, [jaxsal.neuron_objective("f", 0, (20, 12))], steps=20, key=0,
                          image_shape=(32, 32, 1), upscaling_steps=3, upscaling_factor=2.0,
                          transforms=transforms, regularizers=(jaxsal.l2_decay(0.01),))
    img = np.asarray(res.images[0, ..., 0])
    assert np.unravel_index(img.argmax(), img.shape) == (20, 12)
    np.testing.assert_allclose(res.scores[0], img[20, 12], rtol=1e-6)
    assert img[28:, 28:].max() < 0.1, img[28:, 28:]  # the corner the clamped rounds lit
    assert img[19:22, 11:14].mean() > 4 * np.median(img)  # the first rounds lit this place
    # the positions each round reads: the centre of the cell (20, 12) falls in, at 8 and 16
    obj = jaxsal.stack_objectives([jaxsal.neuron_objective("f", 0, (20, 12)),
                                   jaxsal.neuron_objective("f", 0)])
    for n, want in ((8, [[0, 5, 3], [0, -1, -1]]), (16, [[0, 10, 6], [0, -1, -1]]),
                    (32, [[0, 20, 12], [0, -1, -1]])):
        got = _obj.positions_for(obj, {"f": (n, n, 1)}, {"f": (32, 32, 1)}).indices[0]
        np.testing.assert_array_equal(got, want)
    # padded by 4: maps of n + 8, the content's cell shifted by 4 (the centre stays -1)
    for n, want in ((8, [[0, 9, 7], [0, -1, -1]]), (32, [[0, 24, 16], [0, -1, -1]])):
        got = _obj.positions_for(obj, {"f": (n + 8, n + 8, 1)}, {"f": (32, 32, 1)},
                                 {"f": (n, n, 1)}).indices[0]
        np.testing.assert_array_equal(got, want)


def test_neuron_positions_of_a_fixed_size_model_follow_a_pad():
    """A model of a fixed input size sees the padded image resized to its input: the
    content shrinks about the centre by its share of the padded image (8 of 16 pixels), and
    a position moves with it. It was read in the padding (pixel 7 of the resized 16-pixel
    image: padded pixels 14-15), where the image has no gradient: nothing moved."""
    m = jaxsal.FunctionModel(features=lambda p, x: x * p["s"],
                             head_fn=lambda p, a: a.mean(axis=(1, 2)),
                             params={"s": jnp.ones(())}, layer="f", input_shape=(8, 8, 1))
    obj = jaxsal.neuron_objective("f", 0, (7, 6))
    res = jaxsal.maximize(m, [obj], steps=10, key=0, transforms=jaxsal.pad(4),
                          regularizers=(), parameterization=jaxsal.pixels(),
                          optimizer=optax.sgd(20.0))
    img = np.asarray(res.images[0, ..., 0])
    assert img[7, 6] > 0.9 and np.median(img) < 0.6, img  # it started at 0.5
    # the cell of pixel (7, 6) at half the size about the centre: (5, 5)
    stacked = jaxsal.stack_objectives([obj, jaxsal.neuron_objective("f", 0, (0, 1))])
    got = _obj.positions_for(stacked, {"f": (8, 8, 1)}, {"f": (8, 8, 1)}, {"f": (8, 8, 1)},
                             (0.5, 0.5)).indices[0]
    np.testing.assert_array_equal(got, [[0, 5, 5], [0, 2, 2]])



def test_sum_of_objectives():
    """sum() of objectives (Python's sum starts from 0) is their + (it raised a TypeError:
    0 + Objective); adding any other number is still refused."""
    parts = [jaxsal.channel_objective("conv2d_2", k, weight=k + 1.0) for k in range(3)]
    total = sum(parts)
    assert total.kinds == ("channel",) * 3
    a2 = jax.random.uniform(jax.random.key(0), (24, 24, 64))
    np.testing.assert_allclose(total(jnp.zeros(10), {"conv2d_2": a2}),
                               sum((k + 1) * a2[..., k].mean() for k in range(3)), rtol=1e-6)
    for bad in (1, 0.5, True):
        with pytest.raises(TypeError):
            bad + parts[0]  # noqa: B018


def test_seed_images_of_another_size_are_refused(mnist, tmp_path):
    """A seed must have the images' size: one of 20 x 20 (or 28 x 32) for 28 x 28 images was
    resized without a word (distorted, for another aspect ratio), against the documented
    (H, W, C). The message gives the shape in the model's own layout and the fix."""
    for bad in (np.full((20, 20, 1), 0.5), np.full((2, 28, 32, 1), 0.5)):
        with pytest.raises(ValueError, match=r"seed_images: expected \(28, 28, 1\).*"
                                             r"\(2, 28, 28, 1\).*jax.image.resize"):
            jaxsal.maximize(mnist, [3, 4], steps=1, key=0, seed_images=bad, **PLAIN)
    ok = jaxsal.maximize(mnist, [3, 4], steps=1, key=0, seed_images=np.full((28, 28, 1), 0.5),
                         optimizer=optax.sgd(0.0), **PLAIN)
    np.testing.assert_allclose(ok.images, 0.5, atol=1e-6)
    keras = pytest.importorskip("keras")
    i = keras.Input((2, 6, 8))
    x = keras.layers.Conv2D(3, 3, data_format="channels_first")(i)
    keras.Model(i, keras.layers.Dense(2)(keras.layers.Flatten()(x))).save(tmp_path / "cf.keras")
    cf = load_keras(tmp_path / "cf.keras")
    with pytest.raises(ValueError, match=r"expected \(2, 6, 8\).*got \(2, 6, 6\)"):
        jaxsal.maximize(cf, [0], steps=1, key=0, seed_images=np.zeros((2, 6, 6)), **PLAIN)


def test_an_integer_image_model_is_refused_with_a_recipe_that_works(tmp_path):
    """A model of raw uint8 images (a Rescaling front end) casts its input: no gradient, so
    maximize refuses it. The message called its images "token ids or other codes" and gave
    no way on; it now gives a wrapper of floats, which maximizes the model's logits."""
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(0)
    i = keras.Input((8, 8, 3), dtype="uint8")
    x = keras.layers.Conv2D(4, 3, activation="relu")(keras.layers.Rescaling(1 / 255)(i))
    keras.Model(i, keras.layers.Dense(3, activation="softmax")(keras.layers.Flatten()(x))).save(
        tmp_path / "u8.keras")
    model = load_keras(tmp_path / "u8.keras")
    with pytest.raises(ValueError, match=r"integer images \(uint8, shape \(8, 8, 3\)\).*"
                                         r"input_range=\(0, 255\)\)") as err:
        jaxsal.maximize(model, [0], steps=2, input_range=(0, 255))
    call = str(err.value).split("not reproduced): ")[1]
    assert call.startswith("jaxsal.maximize(jaxsal.FunctionModel(")
    wrapped = eval(call.split("jaxsal.maximize(")[1].split(", targets,")[0],
                   dict(jaxsal=jaxsal, model=model))
    res = jaxsal.maximize(wrapped, [0, 2], steps=3, key=0, input_range=(0, 255))
    assert float(res.images.min()) >= 0 and float(res.images.max()) <= 255
    logits = model.with_head("logits").apply(model.params, res.images)
    np.testing.assert_allclose(res.scores, logits[jnp.arange(2), jnp.array([0, 2])], rtol=1e-5)


def test_a_bool_input_model_is_refused(tmp_path):
    """A model whose input is a bool InputLayer casts what it is given to bool, as Keras does:
    its gradient is zero, so maximize ran the ascent and returned the starting noise (a flat
    trajectory) without a word. It is now refused before compute, naming the input."""
    keras = pytest.importorskip("keras")
    b = keras.Input((4, 4, 1), dtype="bool", name="flags")
    y = keras.layers.Dense(3)(keras.layers.Flatten()(keras.ops.cast(b, "float32")))
    keras.Model(b, y).save(tmp_path / "flags.keras")
    model = load_keras(tmp_path / "flags.keras")
    with pytest.raises(ValueError, match=r"input 'flags' is a bool InputLayer.*gradient is "
                                         r"zero.*float32 keras.Input in its place"):
        jaxsal.maximize(model, [0], steps=2, **PLAIN)


def test_a_per_channel_center_must_match_the_channels():
    """lp_norm/l2_decay's center may hold one value per channel. Three values for a
    one-channel image broadcast it to three phantom channels (a penalty towards 0, 0.5 and 1
    at once), silently; refused, as is a center of more than one axis."""
    gray = jnp.full((4, 4, 1), 0.5)
    for make in (jaxsal.lp_norm, jaxsal.l2_decay):
        reg = make(1.0, center=[0.0, 0.5, 1.0])
        with pytest.raises(ValueError, match=r"center has 3 values .* 1 channel"):
            reg.penalty(gray)
        np.testing.assert_allclose(reg.penalty(jnp.full((4, 4, 3), 0.5)),
                                   np.mean(np.abs([-0.5, 0.0, 0.5]) ** (1 if make is
                                                                        jaxsal.lp_norm else 2)),
                                   rtol=1e-6)
        with pytest.raises(ValueError, match=r"one value per channel \(C,\), got shape \(1, 3\)"):
            make(1.0, center=[[0.0, 0.5, 1.0]])
    m = _linear(jax.random.normal(jax.random.key(0), (64, 2)))
    with pytest.raises(ValueError, match="center has 3 values"):
        jaxsal.maximize(m, [0], steps=2, key=0, transforms=jaxsal.identity(),
                        regularizers=(jaxsal.lp_norm(1.0, center=[0.0, 0.5, 1.0]),))


def test_a_grayscale_model_without_a_channel_axis_gets_a_recipe(tmp_path):
    """A model of (28, 28) inputs (Input((28, 28)) and Flatten: a gray image without its
    channel axis, or a signal) is refused, as 2-D transforms need (H, W, C) images; the
    message now gives the wrapper that adds the axis, and that wrapper maximizes the
    model's logits."""
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(0)
    i = keras.Input((12, 10))
    keras.Model(i, keras.layers.Dense(3, activation="softmax")(keras.layers.Flatten()(i))).save(
        tmp_path / "gray2d.keras")
    model = load_keras(tmp_path / "gray2d.keras")
    with pytest.raises(ValueError, match=r"input is \(12, 10\).*without a channel axis") as err:
        jaxsal.maximize(model, [0], steps=2, key=0)
    recipe = str(err.value).split("give it one: ")[1].split("; the images")[0]
    wrapped = eval(recipe, dict(jaxsal=jaxsal, model=model))
    res = jaxsal.maximize(wrapped, [0, 2], steps=3, key=0, **PLAIN)
    assert res.images.shape == (2, 12, 10, 1)
    logits = model.with_head("logits").apply(model.params, res.images[..., 0])
    np.testing.assert_allclose(res.scores, logits[jnp.arange(2), jnp.array([0, 2])], rtol=1e-5)
    # read as a signal of 12 steps and 10 channels (a Conv1D model): a one-row image, whose
    # 2-D transforms and penalties then act along the signal and leave its channels apart
    recipe = str(err.value).split("make it a one-row image: ")[1].split("; the signals")[0]
    wrapped = eval(recipe, dict(jaxsal=jaxsal, model=model))
    res = jaxsal.maximize(wrapped, [1], steps=3, key=0, **PLAIN)
    assert res.images.shape == (1, 1, 12, 10)
    logits = model.with_head("logits").apply(model.params, res.images[:, 0])
    np.testing.assert_allclose(res.scores, logits[:, 1], rtol=1e-5)


def test_building_blocks_passed_the_wrong_way_are_refused_with_the_fix(mnist):
    """One regularizer without a tuple was refused as "got Closure", a list of transforms
    without compose, and a factory (transforms=jaxsal.identity) failed while tracing with
    "identity() takes 0 positional arguments but 2 were given"."""
    with pytest.raises(TypeError, match=r"a sequence.*got one Regularizer.*"
                                        r"regularizers=\(total_variation\(1.0\),\)"):
        jaxsal.maximize(mnist, [1], steps=1, regularizers=jaxsal.total_variation(1.0))
    with pytest.raises(TypeError, match=r"got list.*jaxsal.compose\(t1, t2, ...\)"):
        jaxsal.maximize(mnist, [1], steps=1, transforms=[jaxsal.jitter(1)])
    for factory in (jaxsal.identity, jaxsal.jitter, jaxsal.standard_transforms):
        with pytest.raises(TypeError, match=rf"the factory jaxsal.{factory.__name__}; call "
                                            rf"it: transforms=jaxsal.{factory.__name__}\("):
            jaxsal.maximize(mnist, [1], steps=1, transforms=factory)
    with pytest.raises(TypeError, match=r"call it: parameterization=jaxsal.fourier\(...\)"):
        jaxsal.maximize(mnist, [1], steps=1, parameterization=jaxsal.fourier)
    with pytest.raises(TypeError, match=r"call it: regularizers=\(jaxsal.lp_norm\(...\),\)"):
        jaxsal.maximize(mnist, [1], steps=1, regularizers=[jaxsal.lp_norm])


@pytest.mark.parametrize("factory", [jaxsal.jitter, jaxsal.identity, jaxsal.compose,
                                     jaxsal.standard_transforms, jaxsal.default_transforms])
def test_compose_refuses_a_factory_with_the_fix(factory):
    """compose(jaxsal.jitter, ...) was accepted (a factory is callable) and failed only while
    maximize traced it: "jitter() takes 1 positional argument but 2 were given". maximize
    refused such a factory as transforms= itself, not inside compose."""
    name = factory.__name__
    with pytest.raises(TypeError, match=rf"compose: .*got the factory jaxsal\.{name}; call "
                                        rf"it: jaxsal\.{name}\(\.\.\.\)"):
        jaxsal.compose(jaxsal.pad(1), factory)
    # what the factories build, and functions of one's own, are transforms
    t = jaxsal.compose(jaxsal.identity(), jaxsal.jitter(1), lambda k, x: x, jaxsal.compose())
    assert t(jax.random.key(0), jnp.zeros((4, 4, 1))).shape == (4, 4, 1)


def test_optax_objects_passed_the_wrong_way_are_refused_with_the_fix():
    """optax.MultiSteps (a class whose transformation is a method) and an optax factory
    (optimizer=optax.adam) were refused as "got MultiSteps" / "got function", without the
    fix; the fix given works: MultiSteps' transformation updates every k-th step."""
    m = _linear(jax.random.normal(jax.random.key(0), (64, 1)))
    multi = optax.MultiSteps(optax.sgd(0.1), every_k_schedule=2)
    with pytest.raises(TypeError, match=r"got MultiSteps; pass it as one: "
                                        r"optimizer=opt\.gradient_transformation\(\)"):
        jaxsal.maximize(m, [0], steps=4, optimizer=multi, **PLAIN)
    for factory, public in ((optax.adam, "optax.adam"),
                            (optax.contrib.reduce_on_plateau, "optax.contrib.reduce_on_plateau")):
        with pytest.raises(TypeError, match=rf"the factory {public}; call it: "
                                            rf"optimizer={public}\(\.\.\.\)"):
            jaxsal.maximize(m, [0], steps=4, optimizer=factory, **PLAIN)
    res = jaxsal.maximize(m, [0], steps=4, key=0, optimizer=multi.gradient_transformation(),
                          parameterization=jaxsal.pixels(squash="clip"), **PLAIN)
    t = np.asarray(res.trajectory[0])  # scores before steps 0..3: updates after 1 and 3
    assert t[0] == t[1] and t[2] > t[1] and t[3] == t[2], t


def test_a_diverged_ascent_is_refused_not_returned():
    """A learning rate far too large overflows the ascent to NaN images; they were returned
    beside the finite ones without a word. Now the call raises, naming the units; with
    check_finite=False the rows come back as they are."""
    w = jax.random.normal(jax.random.key(0), (64, 3))
    m = _linear(w)
    fine = jaxsal.maximize(m, [0, 1, 2], steps=5, key=0, **PLAIN)
    assert np.isfinite(np.asarray(fine.images)).all()
    huge = optax.sgd(3e38, momentum=0.9)
    with pytest.raises(ValueError, match=r"failed for \d of 3 units.*diverged; lower the "
                                         r"learning_rate"):
        jaxsal.maximize(m, [0, 1, 2], steps=20, key=0, optimizer=huge,
                        parameterization=jaxsal.fourier(), **PLAIN)
    raw = jaxsal.maximize(m, [0, 1, 2], steps=20, key=0, optimizer=huge,
                          parameterization=jaxsal.fourier(), check_finite=False, **PLAIN)
    assert not np.isfinite(np.asarray(raw.images)).all()


def _nan_above_two(p, x):
    """The linear model, but unit 2 is ``log(2 - y)``: NaN once ``y > 2`` (finite images)."""
    y = _linear_fn(p, x)
    return y.at[:, 2].set(jnp.where(y[:, 2] > 2.0, jnp.log(2.0 - y[:, 2]), y[:, 2]))


def test_a_model_that_gives_nan_is_told_apart_from_a_diverged_ascent():
    """A unit whose image is finite but whose objective is NaN (the model gives NaN there) was
    reported as a diverged ascent with 'lower the learning_rate', which cannot help, and
    without the step at which it went wrong; the computed results were lost with the error
    (only a second run with check_finite=False gave back the finite rows). The error now
    tells the two apart, gives the first non-finite step and keeps the results as .result."""
    m = jaxsal.FunctionModel(_nan_above_two, {"w": jax.random.normal(jax.random.key(0),
                                                                     (64, 3))},
                             input_shape=(8, 8, 1))
    raw = jaxsal.maximize(m, [0, 1, 2], steps=30, key=0, check_finite=False, **PLAIN)
    traj = np.asarray(raw.trajectory)
    assert np.isfinite(traj[:2]).all() and np.isfinite(np.asarray(raw.images)).all()
    step = int(np.argmax(~np.isfinite(traj[2])))
    assert 0 < step < 29 and not np.isfinite(float(raw.scores[2]))
    with pytest.raises(ValueError, match=rf"failed for 1 of 3 units: positions 2 \(units "
                                         rf"\[2\]\).*position 2 at step {step}\. Positions 2 "
                                         r"have finite images on which the objective is not "
                                         r"finite") as err:
        jaxsal.maximize(m, [0, 1, 2], steps=30, key=0, **PLAIN)
    assert "learning_rate" not in str(err.value)
    kept = err.value.result
    assert isinstance(kept, jaxsal.MaximizeResult)
    for got, want in zip(kept[:3], raw[:3]):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, None])
def test_default_transforms_refuses_sizes_that_are_not_pixels(bad):
    """default_transforms(0) (or -3, 2.5, True) made transforms for no image without a
    word; the size is the image's side in pixels, an int >= 1."""
    with pytest.raises(ValueError, match="default_transforms: expected image_size as an int >= 1"):
        jaxsal.default_transforms(bad)
    assert jaxsal.default_transforms(224) == jaxsal.default_transforms(np.int64(224))


def _temp_bytes(model, targets, **options):
    run, args = _max.maximize_program(model, targets, **options)
    return run.lower(*args).compile().memory_analysis().temp_size_in_bytes


def test_units_are_chunked_under_the_memory_budget(mnist, monkeypatch):
    """By default the units run in chunks that fit the memory budget (each charged one
    forward pass of one image): a budget too small for two units runs them one at a time,
    with the results of one call over all of them; left to the default budget, a layer of
    many units of a large model does not optimize them all at once (VGG16 at 224x224: 64
    units peaked above 4.9 GB of RSS, one image's forward and backward pass per unit)."""
    opts = dict(layer="conv2d_1", steps=3, key=0, **PLAIN)
    whole = jaxsal.maximize(mnist, "all", unit_chunk=32, **opts)
    small = jaxsal.maximize(mnist, "all", memory_budget=1, **opts)
    np.testing.assert_allclose(small.images, whole.images, atol=1e-5)
    np.testing.assert_allclose(small.scores, whole.scores, rtol=1e-4, atol=1e-5)
    one = _temp_bytes(mnist, "all", memory_budget=1, **opts)
    all_at_once = _temp_bytes(mnist, "all", unit_chunk=32, **opts)
    assert one * 8 < all_at_once, (one, all_at_once)
    # the default budget: a model whose forward pass of one image exceeds every default
    # budget (as VGG16's 340 MiB does the CPU's 256 MiB), emulated by shrinking the budgets
    monkeypatch.setattr(base, "DEFAULT_CPU_MEMORY_BUDGET", 1)
    monkeypatch.setattr(base, "DEFAULT_MEMORY_BUDGET", 1)
    monkeypatch.setattr(base, "_accelerator_budget", lambda backend: 1)
    assert _temp_bytes(mnist, "all", **opts) == one
    with pytest.raises(ValueError, match="memory_budget"):
        jaxsal.maximize(mnist, [0], memory_budget=0, **opts)


def test_a_schedule_free_optimizer_s_result_is_its_evaluation_point():
    """optax.contrib's schedule-free optimizers step an iterate z and evaluate at an average x
    kept in their state (schedule_free_eval_params); maximize returned the iterate. Checked
    against the same loop written out with optax (clip pixels, no transforms or penalties:
    the loss is minus the linear score; a one-unit output: class 1 is the unit)."""
    w = jax.random.normal(jax.random.key(0), (64, 1))
    m = _linear(w)
    seed = jnp.full((1, 8, 8, 1), 0.5)
    for opt in (optax.contrib.schedule_free_sgd(0.05),
                optax.chain(optax.clip(1.0), optax.contrib.schedule_free_adamw(0.05))):
        res = jaxsal.maximize(m, [1], steps=6, optimizer=opt, seed_images=seed,
                              parameterization=jaxsal.pixels(squash="clip"), **PLAIN)
        p, state = seed[0], opt.init(seed[0])
        loss = jax.grad(lambda q: -_linear_fn({"w": w}, q[None])[0, 0])

        @jax.jit  # one program per optimizer (eagerly: each optax operation compiled alone)
        def step(p, state, opt=opt):
            updates, state = opt.update(loss(p), state, p)
            return jnp.clip(optax.apply_updates(p, updates), 0.0, 1.0), state

        for _ in range(6):
            p, state = step(p, state)
        free = [s for s in jax.tree_util.tree_leaves(
            state, is_leaf=lambda s: isinstance(s, optax.contrib.ScheduleFreeState))
            if isinstance(s, optax.contrib.ScheduleFreeState)]
        expected = jnp.clip(optax.contrib.schedule_free_eval_params(free[0], p), 0.0, 1.0)
        assert float(jnp.abs(expected - p).max()) > 1e-3  # the two points differ here
        np.testing.assert_allclose(np.asarray(res.images[0]), np.asarray(expected), atol=1e-6)


def test_the_seed_resize_fix_works_for_per_unit_seeds(mnist):
    """A per-unit seed (T, H', W', C) of another size was told to resize to one image's shape,
    jax.image.resize(seed, (28, 28, 1), 'linear'), which raises for a 4-D seed. The fix keeps
    the seed's leading axes; evaluated as written it gives starts that maximize takes (SGD of
    rate 0: the images are the resized seeds)."""
    seed = np.stack([np.full((20, 20, 1), 0.25), np.full((20, 20, 1), 0.75)])
    with pytest.raises(ValueError, match=r"jax\.image\.resize\(seed, seed\.shape\[:-3\]") as e:
        jaxsal.maximize(mnist, [3, 4], steps=1, key=0, seed_images=seed, **PLAIN)
    fix = re.search(r"(jax\.image\.resize\(seed, .*?, 'linear'\))", str(e.value)).group(1)
    resized = eval(fix, {"jax": jax, "seed": seed})  # noqa: S307
    res = jaxsal.maximize(mnist, [3, 4], steps=1, key=0, seed_images=resized,
                          optimizer=optax.sgd(0.0), **PLAIN)
    np.testing.assert_allclose(res.images, np.asarray(resized), atol=1e-6)
    np.testing.assert_allclose(res.images[:, 0, 0, 0], [0.25, 0.75], atol=1e-6)


@pytest.fixture(scope="module")
def any_size_model(tmp_path_factory):
    """Input (None, None, 1) -> Conv2D stride 2 "same" -> Conv2D 3x3 "valid" -> global
    average -> Dense(3): too small below 5x5 (the valid conv gets under 3x3 maps)."""
    keras = pytest.importorskip("keras")
    i = keras.Input((None, None, 1))
    x = keras.layers.Conv2D(2, 3, strides=2, padding="same", name="c")(i)
    x = keras.layers.Conv2D(3, 3, padding="valid", name="d")(x)
    km = keras.Model(i, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(x)))
    path = tmp_path_factory.mktemp("anysize") / "anysize.keras"
    km.save(path)
    return km, load_keras(path)


def test_multi_scale_rounds_too_small_for_the_model_are_refused_before_compute(
        any_size_model):
    """upscaling_steps=6 of a 10x10 image starts at 4x4, where Keras refuses the model (an
    empty convolution output): refused before any compute with maximize's fixes, not run on
    a NaN objective (zero gradient: the first round did nothing, and no error followed)."""
    km, m = any_size_model
    assert _max._round_sizes((10, 10), 6, 1.2)[0] == (4, 4)
    with pytest.raises(ValueError, match="empty output"):
        km(np.zeros((1, 4, 4, 1), "float32"))
    km(np.zeros((1, 5, 5, 1), "float32"))  # the second round's size: Keras runs it
    with pytest.raises(ValueError, match=r"(?s)round 1 of 6.*4 x 4.*layer 'd'.*fewer "
                                         r"upscaling_steps.*upscaling_factor.*image_shape"):
        jaxsal.maximize(m, [1], steps=1, image_shape=(10, 10, 1), upscaling_steps=6, **PLAIN)
    with pytest.raises(ValueError, match=r"(?s)image_shape \(4, 4, 1\).*layer 'd'.*larger "
                                         r"image_shape"):
        jaxsal.maximize(m, [1], steps=1, image_shape=(4, 4, 1), **PLAIN)
