"""RISE: masks placed as the authors' code places them (scikit-image references), maps equal to
their definition computed with direct model calls on the same masks, and draws that depend
on the key and the input's global index only."""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsal
from jaxsal._src.postprocess import interp_matrix
from jaxsal._src.rise import _Plan
from model_import import load_keras
from small_models import token_sum_model

F = pathlib.Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def rgb():
    m = load_keras(F / "reference_models" / "rgb.keras")  # its softmax head, as the paper
    return m, np.load(F / "reference_models" / "tfkv_rgb.npz")["x"]


@pytest.mark.parametrize("case", ["a", "b", "c"])
def test_masks_are_placed_as_the_authors_code(case):
    """Bilinear upsampling to (grid + 1) * cell with mirrored edges, cropped at the shift:
    scikit-image's resize(order=1, mode="reflect") (tests/fixtures/reference_rise)."""
    ref = np.load(F / "reference_rise" / "rise_masks.npz")
    size, grid = tuple(ref[f"size_{case}"]), tuple(ref[f"grid_{case}"])
    plan = _Plan(size, grid, 0.5)
    got = jax.vmap(plan.place)(jnp.asarray(ref[f"cells_{case}"]),
                               jnp.asarray(ref[f"shift_{case}"]))
    np.testing.assert_allclose(got, ref[f"mask_{case}"], atol=1e-6)


def test_mirrored_interp_matrix():
    np.testing.assert_allclose(interp_matrix(2, 4, False, mirror=True),
                               [[0.75, 0.25], [0.75, 0.25], [0.25, 0.75], [0.25, 0.75]])
    np.testing.assert_allclose(interp_matrix(3, 3, False, mirror=True), np.eye(3))
    np.testing.assert_allclose(interp_matrix(1, 3, False, mirror=True), np.ones((3, 1)))


def test_maps_are_the_definition_on_the_same_masks(rgb):
    m, x = rgb
    n, classes = 48, [0, 2]
    got = np.asarray(jaxsal.rise(m, x, classes, key=3, n=n, grid=4, fill=0.25))
    for i in range(len(x)):
        masks = np.asarray(jaxsal.rise_masks(3, n, (18, 22), grid=4, index=i))
        xm = x[i][None] * masks[..., None] + 0.25 * (1 - masks[..., None])
        s = np.asarray(m(xm))[:, classes]
        want = np.einsum("kt,khw->thw", s, masks) / (n * 0.5)
        np.testing.assert_allclose(got[i], want, rtol=1e-5, atol=1e-6 * np.abs(want).max())


def test_draws_depend_on_the_key_and_the_global_index_only(rgb, tmp_path):
    m, x = rgb
    kw = dict(key=jax.random.key(5), n=40, grid=(3, 4))
    full = np.asarray(jaxsal.rise(m, x, [1, 4], **kw))
    np.testing.assert_allclose(jaxsal.rise(m, x, [1, 4], batch_size=7, **kw), full, rtol=1e-5,
                               atol=1e-7)
    np.testing.assert_allclose(jaxsal.rise(m, x, [1, 4], memory_budget=1, **kw), full,
                               rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(jaxsal.rise(m, x[1:3], [1, 4], index_offset=1, **kw), full[1:3],
                               rtol=1e-5, atol=1e-7)
    part = jaxsal.explain_to_file(jaxsal.rise, m, x, tmp_path / "r.npy", targets=[1, 4],
                                  batch_size=3, **kw)  # two chunks, the last padded
    np.testing.assert_allclose(part, full, rtol=1e-5, atol=1e-7)
    other = np.asarray(jaxsal.rise(m, x, [1, 4], **{**kw, "key": 6}))
    assert np.abs(other - full).max() > 0.05 * np.abs(full).max()
    # inputs get their own masks: the same image at two indices, two maps
    twice = np.asarray(jaxsal.rise(m, np.stack([x[0], x[0]]), 1, **kw))
    assert np.abs(twice[0] - twice[1]).max() > 0.05 * np.abs(twice).max()


def test_masks_keep_about_p_and_the_map_finds_the_pixel():
    masks = np.asarray(jaxsal.rise_masks(0, 4000, (20, 20), p=0.3))
    assert masks.min() >= 0 and masks.max() <= 1
    assert abs(masks.mean() - 0.3) < 0.02
    # a model that scores one pixel: the map peaks there (E[M_j M_j0] is largest at j = j0)
    fm = jaxsal.FunctionModel(lambda p, x: jnp.concatenate([x[:, 6, 13], x[:, 0, 0] * 0], -1) * p,
                              jnp.ones(2))  # two classes (one unit would be a binary model)
    sal = np.asarray(jaxsal.rise(fm, np.ones((1, 20, 20, 1), np.float32), 0, key=0, n=4000))
    assert np.unravel_index(sal[0].argmax(), sal[0].shape) == (6, 13)


def test_refusals(rgb):
    m, x = rgb
    with pytest.raises(ValueError, match="explicit PRNG key"):
        jaxsal.rise(m, x, 0)
    with pytest.raises(ValueError,
                       match=r"expected p in \(0, 1\) \(a finite number: the probability"):
        jaxsal.rise(m, x, 0, key=0, p=0)
    with pytest.raises(ValueError, match=r"grid \(30, 4\) has more cells than the input"):
        jaxsal.rise(m, x, 0, key=0, grid=(30, 4))
    with pytest.raises(ValueError, match="grid as a positive int or 2"):
        jaxsal.rise(m, x, 0, key=0, grid=(2, 2, 2))
    with pytest.raises(ValueError, match="fill of shape"):
        jaxsal.rise(m, x, 0, key=0, fill=np.zeros((5, 5)))


# ------------------------------------------------------------- features and token ids
def _linear():
    w = jnp.asarray(np.random.default_rng(0).normal(size=(6, 2)), jnp.float32)
    return jaxsal.FunctionModel(lambda p, x: x @ p, w), np.asarray(w)


def test_features_take_binary_masks_and_the_definition():
    m, w = _linear()
    x = np.random.default_rng(1).normal(size=(3, 6)).astype(np.float32)
    n = 40
    got = np.asarray(jaxsal.rise(m, x, [0, 1], key=2, n=n, fill=0.5, p=0.3))
    assert got.shape == (3, 2, 6)
    for i in range(3):
        masks = np.asarray(jaxsal.rise_masks(2, n, (6,), p=0.3, index=i, binary=True))
        assert set(np.unique(masks)) <= {0.0, 1.0}
        xm = np.where(masks > 0, x[i], 0.5)
        want = np.einsum("kt,kd->td", xm @ w, masks) / (n * 0.3)
        np.testing.assert_allclose(got[i], want, rtol=1e-5, atol=1e-5)


def test_features_expectation_of_a_linear_model():
    """With independent Bernoulli(p) positions, E[map_j] = b + w.fill + p sum_{i!=j} w_i d_i
    + w_j d_j (d = x - fill): differences between positions are (1 - p)(w_j d_j - w_k d_k)."""
    m, w = _linear()
    x = np.random.default_rng(3).normal(size=(1, 6)).astype(np.float32)
    p = 0.5
    got = np.asarray(jaxsal.rise(m, x, 0, key=0, n=20000, p=p))[0]
    contrib = w[:, 0] * x[0]
    want = p * contrib.sum() + (1 - p) * contrib
    np.testing.assert_allclose(got, want, atol=0.06 * np.abs(contrib).sum())


def test_binary_masks_with_fewer_cells_keep_runs_of_positions():
    masks = np.asarray(jaxsal.rise_masks(1, 50, (10,), grid=4, binary=True))
    assert set(np.unique(masks)) <= {0.0, 1.0}
    # 5 cells of 3 positions cropped at a shift below 3: at most 5 runs each
    runs = 1 + (np.diff(masks, axis=1) != 0).sum(1)
    assert runs.max() <= 5 and runs.min() >= 1
    assert 0.3 < masks.mean() < 0.7


def test_token_ids_with_an_id_as_fill():
    m, _, ids = token_sum_model()
    n = 32
    got = np.asarray(jaxsal.rise(m, ids, [0, 1], key=4, n=n, fill=5))
    for i in range(2):
        masks = np.asarray(jaxsal.rise_masks(4, n, (4,), index=i, binary=True))
        xm = np.where(masks > 0, np.asarray(ids[i]), 5)
        s = np.asarray(m(jnp.asarray(xm)))
        np.testing.assert_allclose(got[i], np.einsum("kt,kl->tl", s, masks) / (n * 0.5),
                                   rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="whole numbers"):
        jaxsal.rise(m, ids, 0, key=0, fill=0.5)


@pytest.fixture(scope="module")
def text_model(tmp_path_factory):
    import keras

    km = keras.Sequential([keras.Input((5,), dtype="int32"), keras.layers.Embedding(12, 4),
                           keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(3)])
    path = tmp_path_factory.mktemp("text") / "text.keras"
    km.save(path)
    return str(path), np.array([[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]], np.int32)


def test_token_ids_of_a_keras_model_refuse_a_fill_outside_the_vocabulary(text_model):
    path, ids = text_model
    m = load_keras(path)
    maps = np.asarray(jaxsal.rise(m, ids, [0, 2], key=0, n=16, fill=0))
    assert maps.shape == (2, 2, 5) and np.isfinite(maps).all()
    with pytest.raises(ValueError, match="fill"):
        jaxsal.rise(m, ids, 0, key=0, n=16, fill=99)


def test_cli_explains_token_ids_with_rise(text_model, tmp_path):
    from jaxsal import cli

    path, ids = text_model
    np.save(tmp_path / "ids.npy", ids)
    rc = cli.main(["explain", path, str(tmp_path / "ids.npy"), "--method", "rise", "--seed",
                   "3", "--option", "n=16", "--option", "fill=0", "--targets", "0,2",
                   "--out", str(tmp_path / "maps.npy")])
    assert rc == 0
    ref = jaxsal.rise(load_keras(path, head="logits"), ids, [0, 2], key=jax.random.key(3),
                      n=16, fill=0)
    np.testing.assert_allclose(np.load(tmp_path / "maps.npy"), ref, rtol=1e-5, atol=1e-6)


def test_rise_masks_errors_name_its_own_arguments():
    # the errors said "index_offset" (rise's option) for index=, and "got None" for a size
    with pytest.raises(ValueError, match=r"expected index .*as an int >= 0 .*got -1"):
        jaxsal.rise_masks(0, 2, (8, 8), index=-1)
    with pytest.raises(ValueError, match=r"expected size .*got \(8\.5, 8\)"):
        jaxsal.rise_masks(0, 2, (8.5, 8))


def test_masks_that_keep_all_or_nothing_are_refused():
    """p=1 kept every pixel of every mask: the map was S(x) at every pixel. A p so small
    that every mask of an input keeps nothing gave 0 everywhere, whatever the model: refused
    (NaN under the caller's jit, where nothing can be raised)."""
    m, _ = _linear()
    x = np.random.default_rng(1).normal(size=(2, 6)).astype(np.float32)
    with pytest.raises(ValueError, match=r"with p=1 every mask keeps every pixel.*S\(x\) at "
                                         r"every pixel.*in \(0, 1\)"):
        jaxsal.rise(m, x, 0, key=0, n=4, p=1.0)
    with pytest.raises(ValueError, match=r"all n=4 masks of 2 inputs \(the first: 0\) keep "
                                         r"nothing.*map would be 0 whatever the model"):
        jaxsal.rise(m, x, 0, key=0, n=4, p=1e-9)
    traced = jax.jit(lambda v: jaxsal.rise(m, v, 0, key=0, n=4, p=1e-9))(jnp.asarray(x))
    assert np.isnan(np.asarray(traced)).all()


@pytest.mark.parametrize("p", [1.5, 1, 1.0, 0, -0.5, float("nan")])
def test_every_refused_p_is_told_the_same_range(p):
    """p=1.5 was refused as "expected p in (0, 1]", and then p=1 as "expected p ... below 1":
    the two errors stated different ranges. Every refused p is now told (0, 1)."""
    m, _ = _linear()
    x = np.ones((1, 6), np.float32)
    with pytest.raises(ValueError, match=r"^rise: expected p in \(0, 1\) \(.*probability that "
                                         r"a cell is kept\), got "):
        jaxsal.rise(m, x, 0, key=0, n=4, p=p)


def test_a_non_finite_masked_score_is_refused_naming_the_input():
    """One masked copy of NaN score made the whole map NaN, returned without a word (0 * NaN
    in the sum over masks; occlusion keeps it to its patch, but every RISE mask weighs every
    position). With check_finite it is refused naming the input; the other target's map and
    the other input's are the definition without it."""
    def f(_, x):  # NaN only where feature 0 is masked and feature 1 kept (input 0)
        return jnp.stack([x.sum(1) + jnp.sqrt(x[:, 0] - 0.5 * x[:, 1]), x.sum(1)], 1)

    m = jaxsal.FunctionModel(f, None)
    x = np.array([[1.0, 1.0, 1.0, 1.0], [1.0, 0.0, 2.0, 1.0]], np.float32)
    n = 16
    with pytest.raises(jaxsal.NonFiniteMaps, match=r"rise: the maps of input 0 are not finite: "
                                                   r"the model's score on some of their masked "
                                                   r"copies is NaN or inf \(\d+ of 16 masks x 2 "
                                                   r"targets for input 0\)") as e:
        jaxsal.rise(m, x, [0, 1], key=0, n=n)
    assert e.value.rows == [0]
    got = np.asarray(jaxsal.rise(m, x, [0, 1], key=0, n=n, check_finite=False))
    assert np.isnan(got[0, 0]).all() and np.isfinite(got[0, 1]).all()
    for i in (0, 1):  # the maps that are finite: the definition
        masks = np.asarray(jaxsal.rise_masks(0, n, (4,), index=i, binary=True))
        s = np.asarray(f(None, jnp.asarray(np.where(masks > 0, x[i], 0.0))))
        want = np.einsum("kt,kd->td", s, masks) / (n * 0.5)
        for t in (0, 1):
            if np.isfinite(s[:, t]).all():
                np.testing.assert_allclose(got[i, t], want[t], rtol=1e-5, atol=1e-6)
    traced = np.asarray(jax.jit(lambda v: jaxsal.rise(m, v, [0, 1], key=0, n=n))(x))
    np.testing.assert_array_equal(traced, got)
