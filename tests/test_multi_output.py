"""Multi-output models: ``KerasModel.with_output`` against Keras 3, and the methods on it."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")
from keras import layers  # noqa: E402

import jaxsal  # noqa: E402
from jaxsal import cli  # noqa: E402
from import_helpers import save_keras_and_h5  # noqa: E402
from model_import import load_keras  # noqa: E402


@pytest.fixture(scope="module")
def multi(tmp_path_factory):
    """A two-output model (softmax classifier 'cls', linear regression 'reg'), saved as
    ``.keras`` and ``.h5``, with its Keras outputs on ``x``."""
    keras.utils.set_random_seed(3)
    inp = keras.Input((8, 8, 3))
    h = layers.Conv2D(5, 3, activation="relu", name="conv")(inp)
    g = layers.GlobalAveragePooling2D(name="gap")(h)
    cls = layers.Dense(4, activation="softmax", name="cls")(g)
    reg = layers.Dense(2, name="reg")(layers.Dense(6, activation="relu", name="hidden")(g))
    model = keras.Model(inp, [cls, reg])
    lin = model.get_layer("cls")
    logits = keras.Model(inp, [layers.Dense(4, name="cls_logits")(g), reg])
    logits.get_layer("cls_logits").set_weights(lin.get_weights())
    x = np.random.default_rng(0).normal(size=(3, 8, 8, 3)).astype(np.float32)
    d = tmp_path_factory.mktemp("multi")
    paths = {ext: str(p) for ext, p in save_keras_and_h5(model, d, "multi").items()}
    return paths, x, model.predict(x, verbose=0), logits.predict(x, verbose=0)


@pytest.mark.parametrize("ext", [".keras", ".h5"])
def test_with_output_matches_keras(multi, ext):
    paths, x, (cls, reg), (cls_logits, _) = multi
    m = load_keras(paths[ext])
    assert m.output_names == ["cls", "reg"]
    both = m(x)
    assert isinstance(both, list) and len(both) == 2
    np.testing.assert_allclose(m.with_output("cls")(x), cls, atol=1e-6)
    np.testing.assert_allclose(m.with_output(1)(x), reg, atol=1e-5)
    np.testing.assert_allclose(m.with_output(-1)(x), reg, atol=1e-5)
    np.testing.assert_allclose(m.with_output("cls").with_head("logits")(x), cls_logits,
                               atol=1e-5)
    assert m.with_output("cls").output_shape == (4,)
    assert m.with_output("reg").with_output(None).output_shape == [(4,), (2,)]
    assert m.output_index is None  # with_output returns a new model
    assert "output='reg'" in repr(m.with_output("reg"))


def test_outputs_of_two_calls_of_one_layer_have_their_own_names(tmp_path):
    """A shared layer whose two calls are both outputs: each has a name of its own (both
    were "shared:0", and with_output("shared:0") gave the first call's output for both)."""
    a, b = keras.Input((4,)), keras.Input((4,))
    shared = layers.Dense(3, name="shared")
    model = keras.Model([a, b], [shared(a), layers.Dense(2, name="mid")(a), shared(b)])
    x = [np.random.default_rng(i).normal(size=(2, 4)).astype(np.float32) for i in (0, 1)]
    first, _, second = model.predict(x, verbose=0)
    assert np.abs(first - second).max() > 0.1
    m = load_keras(save_keras_and_h5(model, tmp_path, "shared")[".keras"])
    assert m.output_names == ["shared:0:0", "mid", "shared:1:0"]
    np.testing.assert_allclose(m.with_output("shared:1:0")(x), second, atol=1e-5)


def test_with_output_errors(multi):
    m = load_keras(multi[0][".keras"])
    with pytest.raises(ValueError, match=r"unknown output 'nope'.*\['cls', 'reg'\]"):
        m.with_output("nope")
    with pytest.raises(ValueError, match="out of range: this model has 2 output"):
        m.with_output(2)
    with pytest.raises(TypeError, match="position .* or a name"):
        m.with_output(1.0)


def test_methods_need_one_output(multi):
    m = load_keras(multi[0][".keras"])
    x = multi[1]
    with pytest.raises(ValueError, match=r"2 outputs \('cls' \(3, 4\), 'reg' \(3, 2\)\).*"
                                         r"with_output\('cls'\)"):
        jaxsal.saliency(m, x, targets=[0, 1])
    with pytest.raises(ValueError, match="with_output"):
        jaxsal.gradcam(m, x)
    # A score function sees the list of outputs.
    a = jaxsal.saliency(m, x, targets=lambda outs: outs[1][:, 0], reduce=None)
    b = jaxsal.saliency(m.with_output("reg"), x, targets=jaxsal.class_score(0), reduce=None)
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_each_output_is_its_own_program(multi):
    """Outputs are part of the compiled program's key: explaining one output and then the
    other must not reuse the first one's program."""
    m = load_keras(multi[0][".keras"]).with_head("logits")
    x = multi[1]
    g_cls = jaxsal.saliency(m.with_output("cls"), x, targets=1, reduce=None)
    g_reg = jaxsal.saliency(m.with_output("reg"), x, targets=1, reduce=None)
    ref_cls = jaxsal.saliency(m, x, targets=lambda o: o[0][:, 1], reduce=None)
    ref_reg = jaxsal.saliency(m, x, targets=lambda o: o[1][:, 1], reduce=None)
    np.testing.assert_allclose(g_cls, ref_cls, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(g_reg, ref_reg, rtol=1e-5, atol=1e-7)
    assert not np.allclose(g_cls, g_reg)


def test_saved_head_kind_follows_the_selected_output(multi):
    """With the saved head the softmax output holds probabilities and the linear one logits:
    the predicted class of each follows the output's own kind."""
    from jaxsal._src import base

    m = load_keras(multi[0][".keras"])
    assert base.output_kind(m.with_output("cls")) == ("prob", False)
    assert base.output_kind(m.with_output("reg")) == ("logit", False)
    cams = jaxsal.gradcam(m.with_output("cls"), multi[1], targets=[0, 3])
    assert cams.shape == (3, 2, 8, 8)


def test_cli_output_option(multi, tmp_path, capsys):
    paths, x = multi[0], multi[1]
    inputs = tmp_path / "x.npy"
    np.save(inputs, x)
    out = tmp_path / "maps.npy"
    rc = cli.main(["explain", paths[".keras"], str(inputs), "--output", "cls",
                   "--targets", "all", "--out", str(out)])
    assert rc == 0
    maps = np.load(out)
    ref = jaxsal.saliency(load_keras(paths[".keras"], head="logits").with_output("cls"), x,
                          targets=list(range(4)))
    np.testing.assert_allclose(maps, ref, rtol=1e-5, atol=1e-7)
    rc = cli.main(["explain", paths[".keras"], str(inputs), "--output", "bad",
                   "--out", str(tmp_path / "other.npy")])
    assert rc == 2 and "unknown output 'bad'" in capsys.readouterr().err


def test_maximize_output_units_need_one_output(multi):
    m = load_keras(multi[0][".keras"])
    with pytest.raises(ValueError, match=r"2 outputs.*with_output\('cls'\)"):
        jaxsal.maximize(m, [0, 1], steps=2, input_range=(0.0, 1.0))
    a = jaxsal.maximize(m.with_output("reg"), [0, 1], steps=3, input_range=(0.0, 1.0), key=1)
    ref = m.with_output("reg").with_head("logits")(a.images)
    np.testing.assert_allclose(a.scores, np.diagonal(np.asarray(ref)), rtol=1e-4, atol=1e-5)
    # Channels of a layer need no output: the unselected model is fine.
    f = jaxsal.maximize(m, [0, 1], layer="conv", steps=2, input_range=(0.0, 1.0))
    assert f.images.shape == (2, 8, 8, 3)
