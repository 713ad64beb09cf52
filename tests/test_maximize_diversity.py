"""Several images per unit (``images_per_unit``) and the diversity penalty (Lucid's
``objectives.diversity``), on a small conv model in both layouts."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxsal
from jaxsal._src.objectives import diversity_penalty
from model_import import load_keras


@pytest.fixture(scope="module")
def conv_models(tmp_path_factory):
    """The same small conv model (12x12x3 -> relu Conv2D "c1" (6) -> relu Conv2D "c2" (5) ->
    mean -> Dense(4)) in the channels-last and the channels-first layout."""
    keras = pytest.importorskip("keras")
    L = keras.layers
    out = []
    for fmt, shape in (("channels_last", (12, 12, 3)), ("channels_first", (3, 12, 12))):
        i = keras.Input(shape)
        x = L.Conv2D(6, 3, activation="relu", data_format=fmt, name="c1")(i)
        x = L.Conv2D(5, 3, activation="relu", data_format=fmt, name="c2")(x)
        x = L.GlobalAveragePooling2D(data_format=fmt)(x)
        m = keras.Model(i, L.Dense(4, name="out")(x))
        # fixed weights (Keras's initial ones depend on the tests run before); kernels are
        # (kh, kw, in, out) in both layouts
        rs = np.random.RandomState(0)
        m.set_weights([(rs.normal(0.0, 0.3, w.shape) if w.ndim > 1 else np.full(w.shape, 0.1))
                       .astype(np.float32) for w in m.get_weights()])
        out.append(m)
    paths = []
    for m, name in zip(out, ("cl", "cf")):
        paths.append(tmp_path_factory.mktemp(name) / f"{name}.keras")
        m.save(paths[-1])
    return tuple(load_keras(p) for p in paths)


def _lucid_diversity(acts, xp=np):
    """Lucid's objectives.diversity, written out in NumPy (float64), or in ``xp=jnp``
    (float32, differentiable)."""
    a = np.asarray(acts, np.float64) if xp is np else acts
    k = len(a)
    flat = a.reshape(k, -1, a.shape[-1])
    grams = xp.stack([f.T @ f for f in flat])
    grams = grams / xp.sqrt(xp.maximum((grams ** 2).sum(axis=(1, 2), keepdims=True), 1e-10))
    return sum((grams[i] * grams[j]).sum() for i in range(k) for j in range(k) if j != i) / k


def test_diversity_penalty_values():
    pen = jax.jit(diversity_penalty)
    np.testing.assert_allclose(pen(jnp.ones((3, 4, 4, 2))), 2.0, rtol=1e-6)  # K - 1: alike
    orth = jnp.asarray([[[1.0, 0.0]], [[0.0, 1.0]]])  # Gram matrices e11 and e22
    np.testing.assert_allclose(pen(orth), 0.0, atol=1e-7)
    acts = jax.random.normal(jax.random.key(0), (4, 5, 6, 3))
    np.testing.assert_allclose(pen(acts), _lucid_diversity(acts), rtol=1e-5)
    dense = jax.random.normal(jax.random.key(1), (3, 7))  # no spatial axes: outer products
    np.testing.assert_allclose(pen(dense), _lucid_diversity(dense[:, None]), rtol=1e-5)


def test_the_loss_is_lucid_s_channel_mean_minus_the_weighted_diversity(conv_models):
    """Lucid's ``channel(l, n) - w * diversity(l)`` with ``batch=K``: its channel objective is
    a mean over the batch (``reduce_mean(T(l)[..., n])``). The K images' objectives were
    summed, so ``weight=w`` was Lucid's ``w / K`` (review probe p10); the loss is now the mean
    over the K images. Two SGD steps (not scale-free, as Adam nearly is) on clipped pixels
    from given starts equal the same steps on Lucid's loss written out."""
    cl = conv_models[0]
    K, w, lr = 3, 20.0, 20.0
    seeds = jax.random.uniform(jax.random.key(1), (1, K, 12, 12, 3), minval=0.3, maxval=0.7)

    def lucid(x):  # (K, H, W, C) -> the objective Lucid maximizes
        _, acts = cl.apply(cl.params, x, capture=["c1", "c2"])
        return jnp.mean(acts["c2"][..., 1]) - w * _lucid_diversity(acts["c1"], jnp)

    x = seeds[0]
    for _ in range(2):
        x = jnp.clip(x + lr * jax.grad(lucid)(x), 0.0, 1.0)
    res = jaxsal.maximize(cl, [1], layer="c2", steps=2, images_per_unit=K, seed_images=seeds,
                          parameterization=jaxsal.pixels(squash="clip"),
                          optimizer=optax.sgd(lr), transforms=jaxsal.identity(),
                          regularizers=(), diversity=jaxsal.diversity("c1", weight=w))
    assert float(jnp.abs(x - seeds[0]).max()) > 0.05  # both terms moved the images
    np.testing.assert_allclose(res.images[0], x, atol=1e-4)


@pytest.fixture(scope="module")
def diverse(conv_models):
    """Channels 1 and 2 of "c2", four images each, diversity at "c1": both layouts."""
    opts = dict(layer="c2", steps=30, key=0, images_per_unit=4, transforms=jaxsal.jitter(1),
                diversity=jaxsal.diversity("c1", weight=100.0))
    return [jaxsal.maximize(m, [1, 2], **opts) for m in conv_models], opts


def test_images_per_unit_shapes_scores_and_layouts(conv_models, diverse):
    """K images per unit: ``(T, K, ...)`` results; scores are the objective on the returned
    images; the channels-first model gives the same images in its own layout."""
    cl, ((res, res_cf), _) = conv_models[0], diverse
    assert res.images.shape == (2, 4, 12, 12, 3)
    assert res.scores.shape == (2, 4) and res.trajectory.shape == (2, 4, 30)
    assert res_cf.images.shape == (2, 4, 3, 12, 12)
    np.testing.assert_allclose(jnp.moveaxis(res_cf.images, 2, -1), res.images, atol=1e-6)
    assert float(res.images.min()) >= 0.0 and float(res.images.max()) <= 1.0
    with pytest.raises(ValueError, match=r"the \(T, K, \.\.\.\) images of maximize\(images_per_"
                                         r"unit=4\)\..*ncols=4, channels_first=True\)"):
        jaxsal.image_grid(res_cf.images, channels_first=True)
    grid = jaxsal.image_grid(res.images.reshape(-1, 12, 12, 3), ncols=4, pad=1)  # the fix
    np.testing.assert_array_equal(grid[14:26, 1:13], res.images[1, 0])  # row 2: unit 2
    for t, k in enumerate([1, 2]):
        _, acts = cl.apply(cl.params, res.images[t], capture=["c2"])
        np.testing.assert_allclose(res.scores[t], acts["c2"][..., k].mean(axis=(1, 2)),
                                   rtol=1e-5, atol=1e-6)


def test_diversity_makes_the_images_of_a_unit_differ(conv_models, diverse):
    """Without the penalty the four images of a channel converge to one style (the Gram
    matrices' summed cosine similarity stays at its maximum, K - 1 = 3); with it they
    spread."""
    cl = conv_models[0]
    (res, _), opts = diverse
    plain = jaxsal.maximize(cl, [1, 2], **{**opts, "diversity": None})

    def similarity(images):
        _, acts = cl.apply(cl.params, images, capture=["c1"])
        return float(diversity_penalty(acts["c1"]))

    for t in range(2):  # measured: 3.0 -> 1.36 and 1.35 (1.9 and 1.4 with the summed loss)
        assert similarity(plain.images[t]) > 2.9, similarity(plain.images[t])
        assert similarity(res.images[t]) < 2.5, similarity(res.images[t])


def test_one_unit_at_a_time_and_same_key_give_the_same_images(conv_models, diverse):
    """A unit's K images do not depend on the other units of the call; a key fixes them."""
    cl = conv_models[0]
    (res, _), opts = diverse
    again = jaxsal.maximize(cl, [1, 2], **opts)
    np.testing.assert_array_equal(again.images, res.images)
    one = jaxsal.maximize(cl, [2], **opts)
    # batched and unbatched convolutions round differently; 30 steps amplify that (2e-6)
    np.testing.assert_allclose(one.images[0], res.images[1], atol=1e-3)
    assert float(jnp.abs(res.images[0] - res.images[1]).max()) > 0.1  # units really differ


def test_images_per_unit_and_diversity_refusals(conv_models):
    cl = conv_models[0]
    d = jaxsal.diversity("c1")
    with pytest.raises(ValueError, match=r"expected images_per_unit >= 2 with it, got "
                                         r"images_per_unit=1\. Pass images_per_unit=4"):
        jaxsal.maximize(cl, [0], layer="c2", steps=1, diversity=d)
    with pytest.raises(TypeError, match=r"the factory jaxsal\.diversity; call it"):
        jaxsal.maximize(cl, [0], layer="c2", steps=1, images_per_unit=2,
                        diversity=jaxsal.diversity)
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match=r"maximize: expected images_per_unit as an int >= 1"):
            jaxsal.maximize(cl, [0], layer="c2", steps=1, images_per_unit=bad)
    # one seed for K images: equal starts stay equal; one start per image is asked for
    with pytest.raises(ValueError, match=r"seed_images: with images_per_unit=2 expected one "
                                         r"start per image, \(1, 2, 12, 12, 3\).*got "
                                         r"\(12, 12, 3\)"):
        jaxsal.maximize(cl, [0], layer="c2", steps=1, images_per_unit=2,
                        seed_images=np.zeros((12, 12, 3), np.float32))
    with pytest.raises(ValueError, match="nope"):
        jaxsal.maximize(cl, [0], layer="c2", steps=1, images_per_unit=2,
                        diversity=jaxsal.diversity("nope"))
    with pytest.raises(ValueError, match=r"diversity: expected weight >= 0"):
        jaxsal.diversity("c1", weight=-1.0)


def test_a_channels_first_model_gets_its_twin_s_images_under_every_transform(conv_models):
    """Transforms (pad, jitter, scale, rotation: ``standard_transforms``), regularizers and
    the parameterization act on the channels-last view of a channels-first model: the same
    key gives the channels-last twin's images, in the model's own layout, for channel,
    neuron and direction objectives alike."""
    objs = [jaxsal.channel_objective("c2", 1) + jaxsal.neuron_objective("c2", 2, (1, 6))
            + jaxsal.direction_objective("c2", np.linspace(-1.0, 1.0, 5)) for _ in range(2)]
    objs[1] = 0.5 * objs[1]
    opts = dict(steps=4, key=3, transforms=jaxsal.standard_transforms(12),
                regularizers=(jaxsal.total_variation(0.5),), input_range=(-1.0, 2.0))
    cl, cf = (jaxsal.maximize(m, objs, **opts) for m in conv_models)
    assert cf.images.shape == (2, 3, 12, 12)
    np.testing.assert_allclose(jnp.moveaxis(cf.images, 1, -1), cl.images, atol=1e-6)
    np.testing.assert_allclose(cf.scores, cl.scores, rtol=1e-5, atol=1e-6)
    assert float(cl.images.min()) >= -1.0 and float(cl.images.max()) <= 2.0


def test_a_failed_ascent_with_several_images_per_unit_names_the_units():
    """With K images per unit, a unit fails when one of its images does; the error names
    the unit and the first step at which one of its images' objective was not finite."""
    w = jax.random.normal(jax.random.key(0), (16, 2))
    m = jaxsal.FunctionModel(lambda p, x: jnp.log(x.reshape(x.shape[0], -1) - 0.5) @ p["w"],
                             {"w": w}, input_shape=(4, 4, 1))  # NaN wherever a pixel < 0.5
    with pytest.raises(ValueError, match=r"failed for 2 of 2 units: positions 0, 1 \(units "
                                         r"\[0, 1\]\).*position 0 at step 0; position 1 at "
                                         r"step 0\..*the model or the objective gives NaN") as e:
        jaxsal.maximize(m, [0, 1], steps=2, images_per_unit=3, transforms=jaxsal.identity(),
                        regularizers=())
    assert e.value.result.images.shape == (2, 3, 4, 4, 1)
    assert e.value.result.scores.shape == (2, 3)
