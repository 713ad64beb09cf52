"""Keras 3 models written the way tutorials and notebooks write them, against Keras itself.

- A ``keras.Model`` subclass built the Functional way, ``MyModel(inputs, outputs)`` (keras.io's
  custom ``train_step`` models): Keras saves it under its own class name with a Functional
  config and reloads it as that graph; so does the importer, at the top and nested (a
  registered subclass shared by two branches, one inside a Sequential), from ``.keras``,
  ``.h5`` and ``.weights.h5`` + config (also a config rebuilt in code, whose layers Keras
  named on: the weights are then found by Keras's keys, ``reg_model`` for the nested model).
  A subclass that makes its layers in ``__init__`` is refused saying what loads instead.
- Idioms of tutorials whose graphs reuse another model's nodes: a Grad-CAM model
  (``keras.Model(m.inputs, [conv.output, m.output])``), layers first called in a discarded
  model (Keras renumbers their calls in the saved config), a model reloaded with
  ``load_model`` and extended from an inner layer, keras.io's OCR prediction model (from an
  inner input to an inner output), and keras.io's ViT (an augmentation Sequential without an
  Input, ``extract_patches``, a position Embedding of ``arange``), from the three forms,
  against Keras.
- Custom layers made of sublayers (keras.io's ``TokenAndPositionEmbedding``; a block holding a
  Sequential, a LayerNormalization and a weight of its own) with user converters that name
  the sublayers' groups (``LayerImpl(weight_groups=...)``), from the three forms; without
  them the error lists the groups and their shapes.
"""

import re

import jax
import numpy as np
import pytest

keras = pytest.importorskip("keras")
from keras import layers  # noqa: E402

from import_helpers import load_saved, perturb_keras, rel_err, save_all_formats  # noqa: E402
from model_import import (KerasImportError, LayerImpl, UnsupportedLayerError,  # noqa: E402
                          load_keras)

TOL = 1e-5
x64 = getattr(jax, "enable_x64", None)
if x64 is None:  # older JAX
    from jax.experimental import enable_x64 as x64


class TrainStepModel(keras.Model):
    """keras.io's "customizing what happens in fit": only ``train_step`` is overridden."""

    def train_step(self, data):
        return super().train_step(data)


@keras.saving.register_keras_serializable(package="jaxsal_zoo")
class RegModel(keras.Model):
    pass


def _functional_subclasses():
    """A TrainStepModel holding a RegModel encoder shared by two inputs and a Sequential
    that nests a TrainStepModel."""
    i = keras.Input((6,))
    h = layers.BatchNormalization()(layers.Dense(5, activation="relu")(i))
    enc = RegModel(i, layers.Dense(3)(h))
    j = keras.Input((3,))
    head = keras.Sequential([keras.Input((3,)), layers.Dense(3),
                             TrainStepModel(j, layers.Dense(3, activation="tanh")(j))])
    a, b = keras.Input((6,)), keras.Input((6,))
    out = layers.Dense(2, activation="softmax")(
        layers.Concatenate()([head(enc(a)), enc(b)]))
    m = TrainStepModel([a, b], out)
    perturb_keras(m, kernels=True)
    return m


def _inputs(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(3, 6)).astype(np.float32) for _ in range(2)]


@pytest.fixture(scope="module")
def subclassed(tmp_path_factory):
    d = tmp_path_factory.mktemp("subclassed")
    m = _functional_subclasses()
    assert type(m).__name__ == "TrainStepModel"
    return m, save_all_formats(m, d, "m")


def _keras_logits(m, x) -> np.ndarray:
    """Keras's outputs of ``m`` (a softmax last layer) with that layer's activation linear.
    Called eagerly: ``predict`` keeps the function it compiled first (on the JAX backend a
    jitted trace holding the softmax), so it would not see the new activation."""
    last = m.layers[-1]
    last.activation = keras.activations.linear
    try:
        return np.asarray(m(x, training=False))
    finally:
        last.activation = keras.activations.softmax


FORMS = [".keras", ".h5", ".weights.h5"]


@pytest.mark.parametrize("form", FORMS)
def test_functional_subclass_loads_as_its_graph(subclassed, form):
    m, paths = subclassed
    x = _inputs()
    ref = np.asarray(m.predict(x, verbose=0))
    jm = load_saved(paths, form, m)
    assert rel_err(np.asarray(jm(x)), ref) < TOL
    # the logits head: the same model with a linear last layer, in Keras
    assert rel_err(np.asarray(jm.with_head("logits")(x)), _keras_logits(m, x)) < TOL
    # the nested encoder's layers are addressable, as a Functional model's
    assert any(n.startswith("reg_model/") for n in jm.layer_names)


def test_functional_subclass_rebuilt_config_finds_weights_by_keras_keys(subclassed):
    # a second build in the same session names its layers on (dense_7...), so the names
    # recorded in the weights file are not the architecture's and Keras loads by its keys
    m, paths = subclassed
    rebuilt = _functional_subclasses()
    assert {lay.name for lay in rebuilt.layers} != {lay.name for lay in m.layers}
    rebuilt.load_weights(paths[".weights.h5"])
    x = _inputs(1)
    ref = np.asarray(rebuilt.predict(x, verbose=0))
    assert rel_err(ref, np.asarray(m.predict(x, verbose=0))) < TOL  # Keras found them
    jm = load_keras(paths[".weights.h5"], config=rebuilt.to_json())
    assert rel_err(np.asarray(jm(x)), ref) < TOL


def test_functional_subclass_gradient_matches_central_differences(subclassed):
    m, paths = subclassed
    jm = load_keras(paths[".keras"]).with_head("logits")
    x = [np.asarray(a[:1], np.float64) for a in _inputs(2)]
    p64 = jax.tree.map(lambda a: np.asarray(a, np.float64), jm.params)
    w = np.random.default_rng(3).normal(size=2)

    def f(a, b):
        return jax.numpy.sum(jm.apply(p64, [a, b])[0] * w)

    with x64(True):
        g = jax.grad(f, argnums=(0, 1))(*x)
        rng = np.random.default_rng(4)
        for _ in range(3):
            da, db = rng.normal(size=x[0].shape), rng.normal(size=x[1].shape)
            eps = 1e-6
            fd = (f(x[0] + eps * da, x[1] + eps * db) - f(x[0] - eps * da, x[1] - eps * db))
            fd = float(fd) / (2 * eps)
            an = float(np.sum(g[0] * da) + np.sum(g[1] * db))
            assert abs(fd - an) <= 1e-6 * max(1.0, abs(fd))


@keras.saving.register_keras_serializable(package="jaxsal_zoo")
class InitLayersModel(keras.Model):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.hidden = layers.Dense(3, activation="relu")
        self.out = layers.Dense(2)

    def call(self, x):
        return self.out(self.hidden(x))


class SequentialSubclass(keras.Sequential):
    pass


@keras.saving.register_keras_serializable(package="jaxsal_zoo")
class GraphInInit(keras.Model):
    """A Functional graph built inside the subclass's own ``__init__``: Keras saves only its
    constructor's arguments."""

    def __init__(self, units=3, **kw):
        i = keras.Input((4,))
        super().__init__(i, layers.Dense(2)(layers.Dense(units, activation="relu")(i)), **kw)
        self.units = units

    def get_config(self):
        return {"units": self.units, "name": self.name}


@pytest.mark.parametrize("make", ["init_layers", "sequential_subclass", "graph_in_init"])
def test_subclass_without_graph_refused_saying_what_loads(tmp_path, make):
    x = np.ones((1, 4), np.float32)
    if make == "init_layers":
        m = InitLayersModel()
        m(x)
    elif make == "sequential_subclass":
        m = SequentialSubclass([keras.Input((4,)), layers.Dense(2)])
    else:
        m = GraphInInit(5)
    m.save(tmp_path / "m.keras")
    cls = type(m).__name__
    if make == "sequential_subclass":  # its config records its layers: not "no graph"
        match = (rf"got class '{cls}', a subclass of keras\.Sequential: its config records "
                 r"its layers.*overridden call\(\).*save keras\.Model\(model\.inputs, "
                 r"model\.outputs\)")
    else:
        match = (rf"got class '{cls}'.*records no graph.*MyModel\(inputs, outputs\), loads "
                 r"as its graph.*save keras\.Model\(model\.inputs, model\.outputs\).*"
                 r"keras\.Sequential")
    with pytest.raises(KerasImportError, match=match):
        load_keras(tmp_path / "m.keras")
    if make != "init_layers":  # the way out the error gives
        perturb_keras(m, kernels=True)
        keras.Model(m.inputs, m.outputs).save(tmp_path / "plain.keras")
        x = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
        jm = load_keras(tmp_path / "plain.keras")
        assert rel_err(np.asarray(jm(x)), np.asarray(m.predict(x, verbose=0))) < TOL


# keras.io's "Text classification with Transformer" writes its embedding as a layer made of
# two Embedding sublayers; a feed-forward block with a Sequential, a LayerNormalization and a
# weight of its own is the same pattern one level deeper. A `.keras` archive (and a
# `.weights.h5`) stores each sublayer's arrays under its attribute name (`pos_emb/vars`,
# sorted: not `layer.weights` order); a legacy `.h5` stores them all in the layer's group in
# `layer.weights` order. A converter names the groups with `LayerImpl(weight_groups=...)`.
@keras.saving.register_keras_serializable(package="jaxsal_zoo")
class TokenAndPositionEmbedding(layers.Layer):
    def __init__(self, maxlen, vocab, dim, **kw):
        super().__init__(**kw)
        self.maxlen, self.vocab, self.dim = maxlen, vocab, dim
        self.token_emb = layers.Embedding(vocab, dim)
        self.pos_emb = layers.Embedding(maxlen, dim)

    def build(self, shape):
        self.token_emb.build(shape)
        self.pos_emb.build((self.maxlen,))

    def call(self, x):
        return self.token_emb(x) + self.pos_emb(keras.ops.arange(0, keras.ops.shape(x)[-1]))

    def compute_output_shape(self, shape):
        return (*shape, self.dim)

    def get_config(self):
        return {**super().get_config(), "maxlen": self.maxlen, "vocab": self.vocab,
                "dim": self.dim}


@keras.saving.register_keras_serializable(package="jaxsal_zoo")
class FFNBlock(layers.Layer):
    def __init__(self, dim, ff, **kw):
        super().__init__(**kw)
        self.dim, self.ff = dim, ff
        self.ffn = keras.Sequential([layers.Dense(ff, activation="relu"), layers.Dense(dim)])
        self.norm = layers.LayerNormalization(epsilon=1e-3)

    def build(self, shape):
        self.scale = self.add_weight(shape=(self.dim,), initializer="ones", name="scale")
        self.ffn.build(shape)
        self.norm.build(shape)

    def call(self, x):
        return self.norm(x + self.ffn(x)) * self.scale

    def compute_output_shape(self, shape):
        return shape

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "ff": self.ff}


def _token_and_position(config, ctx, groups=("token_emb", "pos_emb")):
    from model_import import LayerImpl

    def call(p, x, *, rt):
        return p["tok"][x] + p["pos"][: x.shape[-1]]
    return LayerImpl(call=call, convert_weights=lambda w: {"tok": w[0], "pos": w[1]},
                     n_weights=2, weight_groups=groups)


def _ffn_block(config, ctx, groups=("ffn/layers/dense", "ffn/layers/dense_1", "norm")):
    import jax.numpy as jnp
    from model_import import LayerImpl

    def call(p, x, *, rt):
        h = rt.relu(x @ p["k1"] + p["b1"]) @ p["k2"] + p["b2"] + x
        mean = h.mean(-1, keepdims=True)
        var = ((h - mean) ** 2).mean(-1, keepdims=True)
        return ((h - mean) / jnp.sqrt(var + 1e-3) * p["gamma"] + p["beta"]) * p["scale"]

    names = ("scale", "k1", "b1", "k2", "b2", "gamma", "beta")
    return LayerImpl(call=call, convert_weights=lambda w: dict(zip(names, w)), n_weights=7,
                     weight_groups=groups)


@pytest.fixture(scope="module")
def made_of_sublayers(tmp_path_factory):
    d = tmp_path_factory.mktemp("sublayers")
    i = keras.Input((7,), dtype="int32")
    h = TokenAndPositionEmbedding(7, 20, 8)(i)
    h = FFNBlock(8, 16)(h)
    h = layers.GlobalAveragePooling1D()(h)
    m = keras.Model(i, layers.Dense(3, activation="softmax")(h))
    perturb_keras(m, kernels=True)
    return m, save_all_formats(m, d, "m")


@pytest.mark.parametrize("form", FORMS)
def test_custom_layers_made_of_sublayers(made_of_sublayers, form):
    m, paths = made_of_sublayers
    x = np.random.default_rng(0).integers(0, 20, (3, 7)).astype(np.int32)
    ref = np.asarray(m.predict(x, verbose=0))
    custom = {"TokenAndPositionEmbedding": _token_and_position, "FFNBlock": _ffn_block}
    jm = load_saved(paths, form, m, custom_layers=custom)
    assert rel_err(np.asarray(jm(x)), ref) < TOL


def test_custom_layer_made_of_sublayers_without_weight_groups_says_where(made_of_sublayers):
    m, paths = made_of_sublayers

    def plain(config, ctx):  # reads the layer's own arrays only: none in a .keras
        return _token_and_position(config, ctx, groups=None)

    custom = {"TokenAndPositionEmbedding": plain, "FFNBlock": _ffn_block}
    with pytest.raises(KerasImportError, match=(
            r"'token_and_position_embedding' \(TokenAndPositionEmbedding\) expects 2 weight "
            r"arrays, the file has 0.*'pos_emb' \[\(7, 8\)\], 'token_emb' \[\(20, 8\)\]\. "
            r"Give the converter's LayerImpl weight_groups=\(\.\.\.\)")):
        load_keras(paths[".keras"], custom_layers=custom)
    # with its own weight only, a block finds one array and is told about the others
    custom = {"TokenAndPositionEmbedding": _token_and_position,
              "FFNBlock": lambda c, ctx: _ffn_block(c, ctx, groups=None)}
    with pytest.raises(KerasImportError, match=(
            r"expects 7 weight arrays, the file has 1 .*'ffn/layers/dense' \[\(8, 16\), "
            r"\(16,\)\], 'ffn/layers/dense_1' \[\(16, 8\), \(8,\)\], 'norm' \[\(8,\), \(8,\)\]")):
        load_keras(paths[".keras"], custom_layers=custom)
    jm = load_keras(paths[".h5"], custom_layers=custom)  # the legacy .h5 needs no groups
    x = np.arange(14, dtype=np.int32).reshape(2, 7)
    assert rel_err(np.asarray(jm(x)), np.asarray(m.predict(x, verbose=0))) < TOL


def _gradcam_model(tmp_path, rng):
    i = keras.Input((10, 10, 3))
    h = layers.Conv2D(4, 3, activation="relu", name="c1")(i)
    h = layers.Conv2D(4, 3, activation="relu", name="c2")(h)
    o = layers.Dense(3, activation="softmax")(layers.GlobalAveragePooling2D()(h))
    m = keras.Model(i, o)
    return keras.Model(m.inputs, [m.get_layer("c2").output, m.output]), (10, 10, 3)


def _reused_layers(tmp_path, rng):
    d1, d2 = layers.Dense(5, activation="relu"), layers.Dense(3)
    a = keras.Input((4,))
    keras.Model(a, d2(d1(a)))  # discarded; Keras renumbers the calls below when saving
    b = keras.Input((4,))
    return keras.Model(b, layers.Add()([d2(d1(b)), d2(layers.Dense(5)(b))])), (4,)


def _reloaded_extended(tmp_path, rng):
    i = keras.Input((6,), name="x")
    h = layers.BatchNormalization(name="bn")(layers.Dense(5, activation="relu")(i))
    base = keras.Model(i, layers.Dense(3, activation="softmax")(h))
    perturb_keras(base, rng=rng, kernels=True)
    base.save(tmp_path / "base.keras")
    r = keras.models.load_model(tmp_path / "base.keras")
    return keras.Model(r.input, layers.Dense(2, name="new")(r.get_layer("bn").output)), (6,)


def _ocr_prediction_model(tmp_path, rng):
    i = keras.Input((16, 8, 1), name="image")
    h = layers.MaxPooling2D()(layers.Conv2D(4, 3, activation="relu", padding="same")(i))
    h = layers.Dense(8, activation="relu")(layers.Reshape((8, 16))(h))
    h = layers.Bidirectional(layers.LSTM(6, return_sequences=True, dropout=0.25))(h)
    m = keras.Model(i, layers.Dense(5, activation="softmax", name="dense2")(h))
    return keras.Model(m.get_layer("image").output, m.get_layer("dense2").output), (16, 8, 1)


def _keras_io_vit(tmp_path, rng):
    aug = keras.Sequential([layers.Normalization(), layers.Resizing(12, 12),
                            layers.RandomFlip("horizontal"), layers.RandomRotation(0.02),
                            layers.RandomZoom(0.2, 0.2)], name="data_augmentation")
    aug.layers[0].adapt(rng.normal(size=(10, 8, 8, 3)).astype(np.float32))
    i = keras.Input((8, 8, 3))
    p = keras.ops.reshape(keras.ops.image.extract_patches(aug(i), 4), (-1, 9, 48))
    e = layers.Dense(8)(p) + layers.Embedding(9, 8)(keras.ops.arange(9))
    x = layers.LayerNormalization(epsilon=1e-6)(e)
    x = layers.Add()([layers.MultiHeadAttention(2, 8, dropout=0.1)(x, x), e])
    x = layers.Flatten()(layers.LayerNormalization(epsilon=1e-6)(x))
    x = layers.Dense(6, activation=keras.activations.gelu)(layers.Dropout(0.5)(x))
    return keras.Model(i, layers.Dense(3)(x)), (8, 8, 3)


_IDIOMS = {"gradcam_model": _gradcam_model, "reused_layers": _reused_layers,
           "reloaded_extended": _reloaded_extended, "ocr_prediction_model": _ocr_prediction_model,
           "keras_io_vit": _keras_io_vit}


@pytest.mark.parametrize("idiom", sorted(_IDIOMS))
def test_tutorial_idioms(tmp_path, idiom):
    rng = np.random.default_rng(7)
    m, shape = _IDIOMS[idiom](tmp_path, rng)
    perturb_keras(m, rng=rng, kernels=True)
    x = rng.normal(size=(3, *shape)).astype(np.float32)
    ref = m.predict(x, verbose=0)
    ref = [np.asarray(r) for r in (ref if isinstance(ref, list) else [ref])]
    m.save(tmp_path / "m.keras")
    m.save(tmp_path / "m.h5")
    m.save_weights(tmp_path / "m.weights.h5")
    for jm in (load_keras(tmp_path / "m.keras"), load_keras(tmp_path / "m.h5"),
               load_keras(tmp_path / "m.weights.h5", config=m.to_json())):
        got = jm(x)
        got = got if isinstance(got, list) else [got]
        assert len(got) == len(ref)
        for g, r in zip(got, ref):
            assert rel_err(np.asarray(g), r) < TOL


# Classes of a model's own code named like Keras layers: keras.io's CaiT defines its own
# LayerScale, Kaggle notebooks an attention pooling called Attention. Keras loads them only
# from that code (a `.keras` entry records their module, here test_import_zoo, or None for
# __main__; Keras 3's legacy `.h5` names a registered one "package>Class"), never as its own
# class of that name.
@keras.saving.register_keras_serializable(package="jaxsal_zoo")
class LayerScale(layers.Layer):
    """Not Keras's ConvNeXt LayerScale (``x * gamma``): this one adds 1."""

    def __init__(self, init_values, projection_dim, **kw):
        super().__init__(**kw)
        self.init_values, self.projection_dim = init_values, projection_dim

    def build(self, shape):
        self.gamma = self.add_weight(
            shape=(self.projection_dim,),
            initializer=keras.initializers.Constant(self.init_values))

    def call(self, x):
        return x * self.gamma + 1.0

    def compute_output_shape(self, shape):
        return shape

    def get_config(self):
        return {**super().get_config(), "init_values": self.init_values,
                "projection_dim": self.projection_dim}


class Attention(layers.Layer):
    """An attention pooling over time (not registered: Keras needs custom_objects)."""

    def build(self, shape):
        self.w = self.add_weight(shape=(shape[-1],), name="w")

    def call(self, x):
        a = keras.ops.softmax(keras.ops.tensordot(x, self.w, 1), axis=1)
        return keras.ops.sum(x * a[..., None], axis=1)

    def compute_output_shape(self, shape):
        return (shape[0], shape[-1])


def _own_layer_scale(config, ctx):
    from model_import import LayerImpl
    return LayerImpl(call=lambda p, x, *, rt: x * p["gamma"] + 1.0,
                     convert_weights=lambda w: {"gamma": w[0]}, n_weights=1)


def _own_attention(config, ctx):
    import jax.numpy as jnp
    from model_import import LayerImpl

    def call(p, x, *, rt):
        a = jax.nn.softmax(x @ p["w"], axis=1)
        return jnp.sum(x * a[..., None], axis=1)
    return LayerImpl(call=call, convert_weights=lambda w: {"w": w[0]}, n_weights=1)


@pytest.fixture(scope="module")
def own_classes(tmp_path_factory):
    from keras.src.applications.convnext import LayerScale as KerasLayerScale
    d = tmp_path_factory.mktemp("own_classes")
    i = keras.Input((5, 4))
    h = KerasLayerScale(0.5, 4)(i)  # Keras's own, beside the model's own of that name
    h = LayerScale(0.5, 4)(h)
    m = keras.Model(i, layers.Dense(2)(Attention()(h)))
    perturb_keras(m, kernels=True)
    m.save(d / "m.keras")
    # the legacy .h5 cannot tell an unregistered own class from Keras's: leave it out there
    j = keras.Input((5, 4))
    mh = keras.Model(j, layers.Flatten()(LayerScale(0.5, 4)(KerasLayerScale(0.5, 4)(j))))
    perturb_keras(mh, kernels=True)
    mh.save(d / "mh.h5")
    return m, mh, d


def test_own_classes_named_like_keras_layers_are_refused_naming_them(own_classes):
    m, mh, d = own_classes
    with pytest.raises(UnsupportedLayerError, match=(
            r"class 'jaxsal_zoo>LayerScale' cannot be ported.*named like Keras's LayerScale "
            r"\(the file records module 'test_import_zoo' and registered name "
            r"'jaxsal_zoo>LayerScale'")):
        load_keras(d / "m.keras")
    with pytest.raises(UnsupportedLayerError, match=(
            r"class 'Attention' cannot be ported.*named like Keras's Attention.*"
            r"register_keras_serializable\(package='mypkg'\).*records 'mypkg>Attention'")):
        load_keras(d / "m.keras", custom_layers={"jaxsal_zoo>LayerScale": _own_layer_scale})
    with pytest.raises(UnsupportedLayerError, match=(
            r"class 'jaxsal_zoo>LayerScale'.*\(the file names it 'jaxsal_zoo>LayerScale', a "
            r"class registered with keras.saving.register_keras_serializable\)")):
        load_keras(d / "mh.h5")


def test_own_classes_named_like_keras_layers_take_their_converters(own_classes):
    m, mh, d = own_classes
    x = np.random.default_rng(0).normal(size=(3, 5, 4)).astype(np.float32)
    custom = {"jaxsal_zoo>LayerScale": _own_layer_scale, "Attention": _own_attention}
    jm = load_keras(d / "m.keras", custom_layers=custom)
    assert rel_err(np.asarray(jm(x)), np.asarray(m.predict(x, verbose=0))) < TOL
    jm = load_keras(d / "mh.h5", custom_layers=custom)
    assert rel_err(np.asarray(jm(x)), np.asarray(mh.predict(x, verbose=0))) < TOL


def gelu(x):
    """GPT-2's tanh approximation, the model's own function named like Keras's gelu."""
    return 0.5 * x * (1 + keras.ops.tanh(0.7978845608 * (x + 0.044715 * x ** 3)))


def test_unregistered_function_named_like_a_keras_activation_loads_as_keras_reloads_it(
        tmp_path):
    # saved as the bare name "gelu": Keras reloads its own gelu, and so does the importer
    i = keras.Input((4,))
    m = keras.Model(i, layers.Dense(2)(layers.Dense(6, activation=gelu)(i)))
    perturb_keras(m, kernels=True)
    m.save(tmp_path / "m.keras")
    x = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32) * 3
    reloaded = np.asarray(keras.models.load_model(tmp_path / "m.keras").predict(x, verbose=0))
    assert rel_err(reloaded, np.asarray(m.predict(x, verbose=0))) > 1e-5  # not the model's
    assert rel_err(np.asarray(load_keras(tmp_path / "m.keras")(x)), reloaded) < TOL


def test_own_class_named_like_a_keras_layer_inside_a_wrapper(tmp_path):
    i = keras.Input((3, 5, 4))
    m = keras.Model(i, layers.TimeDistributed(LayerScale(0.5, 4))(i))
    perturb_keras(m, kernels=True)
    m.save(tmp_path / "m.keras")
    m.save(tmp_path / "m.h5")
    x = np.random.default_rng(0).normal(size=(2, 3, 5, 4)).astype(np.float32)
    ref = np.asarray(m.predict(x, verbose=0))
    for form in ("keras", "h5"):
        with pytest.raises(KerasImportError, match=(
                r"it wraps a LayerScale layer \(a class of the model's own code named like "
                r"Keras's LayerScale.*custom_layers=\{'jaxsal_zoo>LayerScale': converter\}")):
            load_keras(tmp_path / f"m.{form}")
        jm = load_keras(tmp_path / f"m.{form}",
                        custom_layers={"jaxsal_zoo>LayerScale": _own_layer_scale})
        assert rel_err(np.asarray(jm(x)), ref) < TOL


def test_converter_under_registered_name_finds_weights_by_keras_keys(tmp_path):
    # a config rebuilt in code names its layers on (layer_scale_2...): the weights are then
    # found by Keras's keys, the snake_case Python class ("layer_scale"), not the registered
    # name the converter is registered under ("jaxsal_zoo>LayerScale")
    def build():
        i = keras.Input((5, 4))
        return keras.Model(i, LayerScale(0.5, 3)(layers.Dense(3)(LayerScale(0.5, 4)(i))))

    m = build()
    perturb_keras(m, kernels=True)
    m.save_weights(tmp_path / "m.weights.h5")
    rebuilt = build()
    assert {lay.name for lay in rebuilt.layers} != {lay.name for lay in m.layers}
    rebuilt.load_weights(tmp_path / "m.weights.h5")
    x = np.random.default_rng(0).normal(size=(2, 5, 4)).astype(np.float32)
    ref = np.asarray(rebuilt.predict(x, verbose=0))
    assert rel_err(ref, np.asarray(m.predict(x, verbose=0))) < TOL  # Keras found them
    jm = load_keras(tmp_path / "m.weights.h5", config=rebuilt.to_json(),
                    custom_layers={"jaxsal_zoo>LayerScale": _own_layer_scale})
    assert rel_err(np.asarray(jm(x)), ref) < TOL


@keras.saving.register_keras_serializable(package="jaxsal_zoo")
class Mean(layers.Layer):
    """A pooling of the model's own named like keras.ops.mean's operation, whose get_config
    leaves out super()'s entries (a common slip): its config then looks like an
    operation's (no ``trainable``, no dtype policy)."""

    def __init__(self, axis=1, **kw):
        super().__init__(**kw)
        self.axis = axis

    def call(self, x):
        return keras.ops.mean(x, axis=self.axis) * 2.0

    def get_config(self):
        return {"axis": self.axis}


def test_own_class_named_like_an_operation_is_not_one(tmp_path):
    i = keras.Input((5, 4))
    m = keras.Model(i, layers.Dense(2)(Mean(1)(i)))
    perturb_keras(m, kernels=True)
    m.save(tmp_path / "m.keras")
    m.save(tmp_path / "m.h5")
    x = np.random.default_rng(0).normal(size=(2, 5, 4)).astype(np.float32)
    ref = np.asarray(m.predict(x, verbose=0))

    def mean(config, ctx):
        from model_import import LayerImpl
        return LayerImpl(call=lambda p, x, *, rt: x.mean(axis=config["axis"]) * 2.0)

    for form in ("keras", "h5"):
        with pytest.raises(UnsupportedLayerError, match=r"layer 'mean(_\d+)?' of class 'Mean'"):
            load_keras(tmp_path / f"m.{form}")
        jm = load_keras(tmp_path / f"m.{form}", custom_layers={"jaxsal_zoo>Mean": mean})
        assert rel_err(np.asarray(jm(x)), ref) < TOL


@keras.saving.register_keras_serializable(package="jaxsal_zoo")
class ReLU(layers.Layer):
    """A leaky "ReLU" of the model's own, given as a Dense layer's activation."""

    def call(self, x):
        return keras.ops.where(x > 0, x, 0.3 * x)


def test_own_layer_as_an_activation_named_like_a_keras_layer(tmp_path):
    i = keras.Input((4,))
    m = keras.Model(i, layers.Dense(2)(layers.Dense(3, activation=ReLU())(i)))
    perturb_keras(m, kernels=True)
    m.save(tmp_path / "m.keras")
    m.save(tmp_path / "m.h5")
    x = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32) * 3
    ref = np.asarray(m.predict(x, verbose=0))

    def leaky(config, ctx):
        import jax.numpy as jnp
        from model_import import LayerImpl
        return LayerImpl(call=lambda p, x, *, rt: jnp.where(x > 0, x, 0.3 * x))

    for form in ("keras", "h5"):
        with pytest.raises(KerasImportError, match=(
                r"its activation is a layer of the model's own code, 'jaxsal_zoo>ReLU'.*"
                r"custom_layers=\{'jaxsal_zoo>ReLU': converter\}")):
            load_keras(tmp_path / f"m.{form}")
        jm = load_keras(tmp_path / f"m.{form}", custom_layers={"jaxsal_zoo>ReLU": leaky})
        assert rel_err(np.asarray(jm(x)), ref) < TOL


@keras.saving.register_keras_serializable(package="jaxsal_zoo")
class Twice(layers.Layer):
    """A layer of the model's own code, held by a wrapper."""

    def call(self, x):
        return 2.0 * x


@pytest.mark.parametrize("build, layer_class", [
    (lambda: layers.TimeDistributed(Twice()), "TimeDistributed"),
    (lambda: layers.TimeDistributed(layers.Dense(2, activation=ReLU())), "Dense"),
    (lambda: layers.Bidirectional(layers.SimpleRNN(2, activation=ReLU())), "SimpleRNN"),
    (lambda: layers.Dense(2, activation=ReLU()), "Dense"),
])
def test_missing_converter_inside_a_layer_names_the_class_to_register(
        tmp_path, build, layer_class):
    # the converter missing is the held layer's or the activation's, not the outer layer's
    m = keras.Sequential([keras.Input((3, 4)), build()])
    m.save(tmp_path / "m.keras")
    with pytest.raises(UnsupportedLayerError) as info:
        load_keras(tmp_path / "m.keras")
    needs = info.value.needs
    assert needs in ("jaxsal_zoo>Twice", "jaxsal_zoo>ReLU")
    assert info.value.class_name == layer_class
    message = str(info.value)
    assert f"register_layer({needs!r})" in message
    assert f"custom_layers={{{needs!r}: converter}}" in message
    assert "register_layer('" + layer_class not in message
    assert "'" + layer_class + "': converter" not in message


def test_sublayer_groups_hint_for_own_class_named_like_a_keras_layer(tmp_path):
    # the user's converter is registered under Keras's bare class name "Attention": the hint
    # on where the sublayers' arrays are is for that converter, as for any other of the user's
    class Attention(layers.Layer):  # noqa: F811 (the model's own, made of a sublayer)
        def __init__(self, **kw):
            super().__init__(**kw)
            self.score = layers.Dense(1)

        def call(self, x):
            a = keras.ops.softmax(self.score(x)[..., 0], axis=1)
            return keras.ops.sum(x * a[..., None], axis=1)

        def compute_output_shape(self, shape):
            return (shape[0], shape[-1])

        def get_config(self):
            return super().get_config()

    m = keras.Sequential([keras.Input((5, 4)), Attention()])
    m.save(tmp_path / "m.keras")

    def plain(config, ctx):  # reads the layer's own arrays only: none in a .keras
        from model_import import LayerImpl
        return LayerImpl(call=lambda p, x, *, rt: x, convert_weights=lambda w: {},
                         n_weights=2)

    with pytest.raises(KerasImportError, match=(
            r"\(Attention\) expects 2 weight arrays, the file has 0.*'score' \[\(4, 1\), "
            r"\(1,\)\]\. Give the converter's LayerImpl weight_groups=\(\.\.\.\)")):
        load_keras(tmp_path / "m.keras", custom_layers={"Attention": plain})


# The user's own classes inside nested models and wrappers, with sublayers in a list and a
# dict attribute. Keras 3 keys a list's or dict's sublayers by class in the archive
# (`blocks/dense`, `blocks/dense_1`, `heads/dense` for the dict's first value, insertion
# order) and lists them in `layer.weights` (the legacy .h5) in the same order.
@keras.saving.register_keras_serializable(package="jaxsal_zoo")
class ZooAffine(layers.Layer):
    def build(self, shape):
        self.scale = self.add_weight(shape=(shape[-1],), name="scale", initializer="ones")
        self.shift = self.add_weight(shape=(shape[-1],), name="shift", initializer="zeros")

    def call(self, x):
        return x * self.scale + self.shift

    def compute_output_shape(self, shape):
        return shape


@keras.saving.register_keras_serializable(package="jaxsal_zoo")
class ListHeads(layers.Layer):
    """Two Dense in a list (the first named "proj", as a layer of the nested model holding
    it), then a dict of two Dense heads, {"end": Dense(3), "start": Dense(2)} (not sorted).
    ``__init__(**kw)`` without get_config: Keras 3 saves no name for it in a Sequential."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.blocks = [layers.Dense(5, name="proj"), layers.Dense(5)]
        self.heads = {"start": layers.Dense(2), "end": layers.Dense(3)}

    def build(self, shape):
        for block in self.blocks:
            block.build(shape)
            shape = (*shape[:-1], 5)
        for head in self.heads.values():
            head.build(shape)

    def call(self, x):
        for block in self.blocks:
            x = keras.ops.relu(block(x))
        return keras.ops.concatenate([self.heads["start"](x), self.heads["end"](x)], -1)

    def compute_output_shape(self, shape):
        return (*shape[:-1], 5)


@keras.saving.register_keras_serializable(package="jaxsal_zoo")
class CumRNN(layers.Layer):
    """A recurrent layer of the user's own, ``y_t = tanh(sum_{s <= t} x_s @ w)`` (reversed
    time with ``go_backwards``), with what Bidirectional asks of the layer it wraps."""

    def __init__(self, units, go_backwards=False, return_sequences=False,
                 return_state=False, **kwargs):
        super().__init__(**kwargs)
        self.units, self.go_backwards = units, go_backwards
        self.return_sequences, self.return_state, self.stateful = (return_sequences,
                                                                   return_state, False)

    def build(self, shape):
        self.w = self.add_weight(shape=(shape[-1], self.units), name="w")

    def call(self, x, mask=None, training=None, initial_state=None):
        if self.go_backwards:
            x = keras.ops.flip(x, 1)
        y = keras.ops.tanh(keras.ops.cumsum(keras.ops.matmul(x, self.w), axis=1))
        return y if self.return_sequences else y[:, -1]

    def compute_output_shape(self, shape):
        return (*shape[:2], self.units) if self.return_sequences else (shape[0], self.units)

    def get_config(self):
        return {**super().get_config(), "units": self.units,
                "go_backwards": self.go_backwards, "return_sequences": self.return_sequences,
                "return_state": self.return_state}


def _zoo_affine(config, ctx):
    from model_import import LayerImpl
    return LayerImpl(call=lambda p, x, *, rt: x * p["scale"] + p["shift"],
                     convert_weights=lambda w: {"scale": w[0], "shift": w[1]}, n_weights=2)


def _list_heads(config, ctx):
    import jax.numpy as jnp
    from model_import import LayerImpl

    def call(p, x, *, rt):
        for i in range(2):
            x = rt.relu(x @ p[f"k{i}"] + p[f"b{i}"])
        return jnp.concatenate([x @ p["ks"] + p["bs"], x @ p["ke"] + p["be"]], -1)

    names = ("k0", "b0", "k1", "b1", "ks", "bs", "ke", "be")
    return LayerImpl(call=call, convert_weights=lambda w: dict(zip(names, w)), n_weights=8,
                     weight_groups=("blocks/dense", "blocks/dense_1", "heads/dense",
                                    "heads/dense_1"),
                     param_shapes={"ks": (5, 2), "ke": (5, 3)})


def _cum_rnn(config, ctx):
    import jax.numpy as jnp
    from model_import import LayerImpl

    def call(p, x, *, rt, mask=None):
        if config["go_backwards"]:
            x = jnp.flip(x, 1)
        y = jnp.tanh(jnp.cumsum(x @ p["w"], axis=1))
        return y if config["return_sequences"] else y[:, -1]

    return LayerImpl(call=call, convert_weights=lambda w: {"w": w[0]}, n_weights=1)


NESTED_OWN = {"jaxsal_zoo>ZooAffine": _zoo_affine, "jaxsal_zoo>ListHeads": _list_heads,
              "jaxsal_zoo>CumRNN": _cum_rnn}


@pytest.fixture(scope="module")
def own_classes_nested(tmp_path_factory):
    d = tmp_path_factory.mktemp("own_nested")
    i = keras.Input((5, 4))
    h = ListHeads(name="heads")(ZooAffine(name="aff")(i))
    inner = keras.Model(i, layers.Dense(4, name="proj")(h), name="inner")
    seq = keras.Sequential([keras.Input((5, 4)), ZooAffine(name="aff2"), ListHeads()],
                           name="seq")
    x = keras.Input((5, 4))
    h = layers.TimeDistributed(ZooAffine(), name="td")(inner(x))
    h = layers.Bidirectional(CumRNN(3, return_sequences=True), name="bi")(seq(h))
    h = layers.Bidirectional(CumRNN(2), name="bi_last", merge_mode="sum")(h)
    m = keras.Model(x, layers.Dense(3, activation="softmax", name="out")(h))
    perturb_keras(m, kernels=True)
    return m, save_all_formats(m, d, "m")


@pytest.mark.parametrize("form", FORMS)
def test_own_classes_in_nested_models_and_wrappers(own_classes_nested, form):
    # a Functional and a Sequential model used as layers, TimeDistributed, Bidirectional of
    # a recurrent layer of the user's own; the list's "proj" sublayer beside the nested
    # model's layer "proj" (the legacy .h5 names its arrays "heads/proj/kernel")
    m, paths = own_classes_nested
    seq = m.get_layer("seq")
    assert "name" not in seq.get_config()["layers"][-1]["config"]  # Keras saved none
    x = np.random.default_rng(1).normal(size=(3, 5, 4)).astype(np.float32)
    ref = np.asarray(m.predict(x, verbose=0))
    jm = load_saved(paths, form, m, custom_layers=NESTED_OWN)
    assert rel_err(np.asarray(jm(x)), ref) < TOL
    assert rel_err(np.asarray(jm.with_head("logits")(x)), _keras_logits(m, x)) < TOL
    assert "seq/list_heads" in jm.layer_names  # named as Keras names it when it reloads


def test_long_list_of_sublayers_listed_in_list_order(tmp_path):
    # eleven blocks: the archive's keys sort as dense, dense_1, dense_10, dense_2...; the
    # error lists them in the list's order
    @keras.saving.register_keras_serializable(package="jaxsal_zoo")
    class DeepList(layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.blocks = [layers.Dense(3 + k) for k in range(11)]

        def call(self, x):
            for block in self.blocks:
                x = block(x)
            return x

        def compute_output_shape(self, shape):
            return (*shape[:-1], 13)

    m = keras.Sequential([keras.Input((2,)), DeepList()])
    m.save(tmp_path / "m.keras")

    def plain(config, ctx):
        from model_import import LayerImpl
        return LayerImpl(call=lambda p, x, *, rt: x, convert_weights=lambda w: {},
                         n_weights=22)

    with pytest.raises(KerasImportError) as info:
        load_keras(tmp_path / "m.keras", custom_layers={"jaxsal_zoo>DeepList": plain})
    listed = re.findall(r"'blocks/(dense(?:_\d+)?)'", str(info.value))
    assert listed == ["dense"] + [f"dense_{k}" for k in range(1, 11)]
    assert "'blocks/dense_2' [(4, 5), (5,)]" in str(info.value)


@keras.saving.register_keras_serializable(package="jaxsal_zoo")
class FrozenOwn(layers.Layer):
    """A Dense and a BatchNormalization sublayer, and weights of its own that are all
    non-trainable: Keras 3's legacy .h5 lists them after the sublayers' trainable ones."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.proj = layers.Dense(3, name="proj")
        self.bn = layers.BatchNormalization(name="bn")

    def build(self, shape):
        self.proj.build(shape)
        self.bn.build((*shape[:-1], 3))
        self.c = self.add_weight(shape=(3,), name="c", trainable=False)
        self.g = self.add_weight(shape=(3,), name="g", trainable=False)

    def call(self, x):
        return self.bn(self.proj(x)) * self.g + self.c

    def compute_output_shape(self, shape):
        return (*shape[:-1], 3)


@keras.saving.register_keras_serializable(package="jaxsal_zoo")
class FrozenOwnNamed(FrozenOwn):
    """FrozenOwn whose config keeps its name (Keras 3 saves none for FrozenOwn: it is
    reloaded as frozen_own, where the .h5 names its arrays seq/own/...)."""

    def get_config(self):
        return super().get_config()


def _frozen_own(config, ctx):
    names = ("c", "g", "k", "b", "gamma", "beta", "mean", "var")

    def call(p, x, *, rt):
        h = x @ p["k"] + p["b"]
        h = (h - p["mean"]) / jax.numpy.sqrt(p["var"] + 1e-3)
        return (h * p["gamma"] + p["beta"]) * p["g"] + p["c"]

    return LayerImpl(call=call, convert_weights=lambda w: dict(zip(names, w)), n_weights=8,
                     weight_groups=("proj", "bn"))


@pytest.mark.parametrize("cls", [FrozenOwn, FrozenOwnNamed])
@pytest.mark.parametrize("form", ["keras", "h5"])
def test_own_non_trainable_weights_of_a_layer_in_a_nested_model(tmp_path, form, cls):
    # the legacy .h5 names them "seq/own/c", "seq/own/g" (the nested Sequential's scope
    # first), after the sublayers' kernels: still the layer's own, first as in the archive
    i = keras.Input((4,))
    seq = keras.Sequential([keras.Input((4,)), cls(name="own")], name="seq")
    m = keras.Model(i, seq(i))
    perturb_keras(m, kernels=True)
    m.save(tmp_path / f"m.{form}")
    assert ("name" in seq.get_config()["layers"][-1]["config"]) == (cls is FrozenOwnNamed)
    x = np.random.default_rng(2).normal(size=(3, 4)).astype(np.float32)
    jm = load_keras(tmp_path / f"m.{form}",
                    custom_layers={f"jaxsal_zoo>{cls.__name__}": _frozen_own})
    assert rel_err(np.asarray(jm(x)), np.asarray(m.predict(x, verbose=0))) < TOL
