"""The README's Python examples outside the Quick start (tests/test_readme_quickstart.py) run
as written, on the MNIST fixture (or a tiny function or Keras model where the README's model
is made up), with the names the README leaves to the reader bound, and give the shapes their
comments state. Each block is found by the heading above it, so an edited example is tested
as it reads; the substitutions are listed per test and must still match the README."""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsal
from model_import import load_keras

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _block(heading: str, nth: int = 0) -> str:
    """The ``nth`` ```python block after ``heading`` (and before the next heading)."""
    s = README.read_text()
    start = s.index(f"\n{heading}\n") + len(heading) + 2
    end = s.find("\n#", start)
    section = s[start:end if end >= 0 else len(s)]
    blocks = section.split("```python\n")[1:]
    assert len(blocks) > nth, f"no python block {nth} under {heading!r}"
    return blocks[nth].split("```", 1)[0]


def _run(code: str, subs=(), **scope):
    for old, new in subs:
        assert old in code, f"the README no longer has {old!r}: update this test"
        code = code.replace(old, new)
    scope.update(jax=jax, jnp=jnp, np=np, jaxsal=jaxsal, load_keras=load_keras)
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102
    return scope


@pytest.fixture(scope="module")
def x(mnist_digits):
    return mnist_digits[:2]


@pytest.fixture(scope="module")
def mnist_path(fixtures_dir):
    return repr(str(fixtures_dir / "mnist_cnn_tfkeras2.h5"))


def test_importing(x, mnist_path, capsys):
    s = _run(_block("## Importing Keras models (`model_import`)"), x=x, subs=[
        ('"model.h5"', mnist_path), ('"base/block_3_expand_relu"', '"conv2d_1"'),
        ('m.layer("dense")', 'm.layer("dense_1")')])
    assert s["y"].shape == (2, 10)
    assert s["acts"] == {} and s["pre"]["conv2d_2"].shape == (2, 24, 24, 64)
    assert np.asarray(s["pre"]["conv2d_2"]).min() < 0  # before the ReLU
    assert "conv2d_2 (Conv2D)" in capsys.readouterr().out


def test_attribution_methods(x):
    s = _run(_block("## Attribution methods"), x=x, subs=[("n=25", "n=2")])
    assert s["maps"].shape == (2, 10, 28, 28) and s["cams"].shape == (2, 2, 24, 24)
    assert s["sg"].shape == (2, 28, 28) and s["pics"].shape == (2, 10, 28, 28)
    assert float(s["pics"].min()) >= 0 and float(s["pics"].max()) <= 1


def test_fullgrad_decomposition(x, mnist_path):
    # jit-compiled (the same values): eagerly, op by op, the two passes take 10 s
    s = _run(_block("### FullGrad and the full-gradient decomposition"), x=x, c=3, subs=[
        ('"model.keras"', mnist_path), ("m.biases(m.params, x)", "jax.jit(m.biases)(m.params, x)"),
        ("gx, gz = jax.grad(", "gx, gz = jit_grad(")],
        jit_grad=lambda f, **kw: jax.jit(jax.grad(f, **kw)))
    m, b, gx, gz = s["m"], s["b"], s["gx"], s["gz"]
    assert m.affine_layers == ["conv2d_1", "conv2d_2", "dense_1", "dense_2"]
    assert {k: v.shape[0] for k, v in b.items()} == dict.fromkeys(m.affine_layers, 1)
    assert gx.shape == x.shape and gz.keys() == b.keys()
    # the README's claim: S(x) = <dS/dx, x> + sum_l <dS/dz_l, b_l> (ReLU, max pooling, Dense)
    total = (gx * x).sum() + sum((gz[k] * b[k]).sum() for k in b)
    np.testing.assert_allclose(total, m(x)[:, 3].sum(), rtol=1e-4)


def test_lrp_composites(x, mnist):
    s = _run(_block("### Layer-wise relevance propagation"), x=x, model=mnist.with_head("logits"),
             low=0.0, high=1.0, targets=[3, 5])
    assert s["maps"].shape == (2, 2, 28, 28)
    for name in ("plus", "plus_flat"):
        assert isinstance(s[name], jaxsal.LRPComposite)


def test_plain_jax_functions():
    w1 = jax.random.normal(jax.random.key(0), (3, 3, 1, 4))
    w2 = jax.random.normal(jax.random.key(1), (4, 5))
    params = {"w1": w1, "w2": w2}

    def conv_part(p, x):
        return jax.nn.relu(jax.lax.conv_general_dilated(
            x, p["w1"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")))

    def rest(p, a):
        return a.mean((1, 2)) @ p["w2"]

    def f(p, x, relu=jax.nn.relu):
        return rest(p, relu(conv_part(p, x)))

    s = _run(_block("### Plain JAX functions"), f=f, params=params, conv_part=conv_part,
             rest=rest)
    x = jax.random.uniform(jax.random.key(2), (2, 6, 6, 1))
    # the last line's comment: relu_mode="guided" is .with_backprop("guided")
    plain = jaxsal.FunctionModel(f, params, relu_kwarg="relu")
    np.testing.assert_array_equal(jaxsal.saliency(s["m"], x, [1]),
                                  jaxsal.saliency(plain.with_backprop("guided"), x, [1]))


def test_differentiating_through_the_methods(x, mnist):
    m = mnist.with_head("logits")
    s = _run(_block("### Differentiating through the methods (double backprop)"), m=m, x=x,
             y=3)
    assert jax.tree_util.tree_structure(s["g"]) == jax.tree_util.tree_structure(m.params)
    assert all(bool(jnp.isfinite(a).all()) for a in jax.tree_util.tree_leaves(s["g"]))
    assert s["gx"].shape == x.shape and bool(jnp.isfinite(s["gx"]).all())
    assert float(jnp.max(jnp.abs(s["gx"]))) > 0


def test_like_pytorch_grad_cam(x, mnist):
    s = _run(_block("### Captum and pytorch-grad-cam"), x=x, m=mnist.with_head("logits"),
             targets=[3, 5], subs=[('layer="c3"', 'layer="conv2d_2"')])
    assert s["cam"].shape == (2, 2, 24, 24) and s["like_pgc"].shape == (2, 2, 28, 28)


def test_plotting(x, mnist, tmp_path):
    pytest.importorskip("matplotlib")
    _run(_block("## Plotting and worked examples"), x=x, model=mnist, subs=[
        ('save="maps.png"', f"save={str(tmp_path / 'maps.png')!r}")])
    assert (tmp_path / "maps.png").stat().st_size > 0


def test_xrai_segments(x, mnist):
    """The XRAI block: PAIR's regions by default (the same maps as given them), and
    Felzenszwalb label images of two scales as masks."""
    s = _run(_block("### XRAI"), images=x, model=mnist.with_head("logits"), targets=[3, 5],
             subs=[("segments=masks)", "segments=masks, steps=8, min_pixel_diff=20)"),
                   ("segments=jaxsal.segment_masks(labels))",
                    "segments=jaxsal.segment_masks(labels), steps=8, min_pixel_diff=20)")])
    assert s["masks"].shape[:2] == (2, s["masks"].shape[1]) and s["masks"].dtype == bool
    assert s["maps"].shape == (2, 2, 28, 28) and s["coarse"].shape == (2, 2, 28, 28)
    assert len(np.unique(np.asarray(s["maps"])[0, 0])) > 3
    assert s["labels"].shape == (2, 2, 28, 28)
    np.testing.assert_array_equal(s["maps"], jaxsal.xrai(s["model"], x, [3, 5], steps=8,
                                                         min_pixel_diff=20))


@pytest.fixture(scope="module")
def readme_models(tmp_path_factory):
    """Small Keras 3 models standing in for the README's made-up files: ``two_inputs.keras``
    (inputs "img" and "meta"), ``sentiment.keras`` (token ids -> Embedding -> Conv1D ->
    Dense) and a U-Net-like segmentation model whose output layer is
    ``Conv2D(3, 1, activation="softmax", name="seg")``."""
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(0)
    d = tmp_path_factory.mktemp("readme_models")
    layers = keras.layers
    img, meta = keras.Input((8, 8, 1), name="img"), keras.Input((3,), name="meta")
    h = layers.GlobalAveragePooling2D()(layers.Conv2D(4, 3, activation="relu")(img))
    out = layers.Dense(2, activation="softmax")(layers.Concatenate()([h, meta]))
    keras.Model([img, meta], out).save(d / "two_inputs.keras")
    ids = keras.Input((16,), dtype="int32")
    h = layers.Embedding(30, 8, name="embedding")(ids)
    h = layers.GlobalMaxPooling1D()(layers.Conv1D(4, 3, activation="relu", name="conv")(h))
    keras.Model(ids, layers.Dense(2, activation="softmax")(h)).save(d / "sentiment.keras")
    inp = keras.Input((8, 8, 2))
    h = layers.Conv2D(4, 3, padding="same", activation="relu", name="c1")(inp)
    h = layers.Conv2D(4, 3, padding="same", activation="relu", name="c2")(h)
    out = layers.Conv2D(3, 1, activation="softmax", name="seg")(h)
    keras.Model(inp, out).save(d / "unet.keras")
    return d


def test_attribution_at_a_layer_of_token_ids(readme_models):
    ids = np.random.default_rng(0).integers(1, 30, (3, 16)).astype(np.int32)
    s = _run(_block("### Attribution at a layer; text and other token models"), token_ids=ids,
             subs=[('"sentiment.keras"', repr(str(readme_models / "sentiment.keras")))])
    assert s["ig"].shape == (3, 2, 16) and s["cam"].shape == (3, 2, 16)
    assert jaxsal.default_cam_layer(s["m"]) == "conv"  # "at the last Conv1D"


def test_segmentation_region_targets(readme_models):
    unet = load_keras(readme_models / "unet.keras")
    x = np.random.default_rng(1).random((2, 8, 8, 2)).astype(np.float32)
    s = _run(_block("### Targets"), unet=unet, x=x)
    assert s["cam"].shape == (2, 8, 8) and s["ig"].shape == (2, 8, 8)
    assert jaxsal.default_cam_layer(unet) == "c2"  # "at the layer before "seg""
    region = s["region"](unet(x)) - s["region"](unet(np.zeros_like(x)))
    np.testing.assert_allclose(s["ig"].sum((1, 2)), region, rtol=2e-2, atol=1e-4)


def test_models_with_several_inputs(readme_models):
    rng = np.random.default_rng(2)
    img = rng.random((2, 8, 8, 1)).astype(np.float32)
    meta = rng.random((2, 3)).astype(np.float32)
    s = _run(_block("### Models with several inputs"), img=img, meta=meta,
             meta_mean=meta.mean(0),
             subs=[('"two_inputs.keras"', repr(str(readme_models / "two_inputs.keras")))])
    m = s["m"]
    assert m.input_names == ["img", "meta"]
    assert s["img_map"].shape == (2, 2, 8, 8) and s["meta_map"].shape == (2, 2, 3)
    ig = s["ig"]
    assert set(ig) == {"img", "meta"} and ig["img"].shape == (2, 8, 8)
    assert ig["meta"].shape == (2, 3)
    # completeness over both inputs (up to the quadrature error of 50 steps through ReLUs):
    # S(x) - S(baseline), each input's baseline its own
    base = [np.zeros_like(img), np.broadcast_to(meta.mean(0), meta.shape)]
    delta = m([img, meta])[:, 1] - m(base)[:, 1]
    np.testing.assert_allclose(ig["img"].sum((1, 2)) + ig["meta"].sum(1), delta, rtol=5e-2,
                               atol=1e-4)


def test_recurrent_cells_of_your_own(tmp_path, monkeypatch):
    # the example's converter, registered (in a copy of the registry), loads an RNN of
    # tests/test_import_rnn_own_cells.py's MinimalRNNCell and gives Keras's outputs
    from keras import Input, Model, layers

    from model_import._layers import registry
    from test_import_rnn_own_cells import MinimalRNNCell

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    xs = np.random.default_rng(0).normal(size=(2, 5, 3)).astype(np.float32)
    inp = Input((5, 3))
    km = Model(inp, layers.RNN(MinimalRNNCell(4), return_sequences=True)(inp))
    km.save(tmp_path / "rnn.keras")
    s = _run(_block("#### Recurrent cells of your own"), x=xs,
             subs=[('"rnn.keras"', repr(str(tmp_path / "rnn.keras")))])
    np.testing.assert_allclose(s["y"], np.asarray(km(xs)), rtol=1e-5, atol=1e-6)


def test_custom_layers_weight_groups_of_a_list_and_a_dict():
    # the example names the sublayers of tests/test_import_keras2_custom.py's ListDict as its
    # converter there does (tf.keras: the dict's by sorted key)
    from model_import import LayerImpl

    s = _run(_block("### Custom layers", 1), LayerImpl=LayerImpl)
    impl = s["list_dict"]({}, None)
    assert impl.weight_groups == ("blocks/dense", "blocks/dense_1", "blocks/dense_2",
                                  "heads/dense_1", "heads/dense")
    assert impl.n_weights == 11 and set(impl.param_shapes) == {"ks", "ke"}
