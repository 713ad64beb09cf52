"""Attribution at a layer (``layer=``): gradients, gradient x activation and integrated
gradients with respect to a layer's output, and token models explained at their embedding."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")
from keras import layers  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import jaxsal  # noqa: E402
from model_import import load_keras  # noqa: E402

VOCAB, LEN = 30, 9


@pytest.fixture(scope="module")
def text_models(tmp_path_factory):
    """Two token classifiers: Embedding -> Conv1D -> global max pool -> Dense(3), and
    Embedding(mask_zero) -> LSTM -> Dense(2); token ids with padding (0) at the end."""
    keras.utils.set_random_seed(5)
    tmp = tmp_path_factory.mktemp("text")
    inp = keras.Input((LEN,), dtype="int32")
    h = layers.Embedding(VOCAB, 8, name="embedding")(inp)
    h = layers.Conv1D(6, 3, activation="relu", padding="same", name="conv")(h)
    h = layers.GlobalMaxPooling1D(name="gmp")(h)
    h = layers.Dense(5, activation="relu", name="hidden")(h)
    cnn = keras.Model(inp, layers.Dense(3, activation="softmax", name="out")(h))
    inp = keras.Input((LEN,), dtype="int32")
    h = layers.Embedding(VOCAB, 8, mask_zero=True, name="embedding")(inp)
    h = layers.LSTM(7, name="lstm")(h)
    rnn = keras.Model(inp, layers.Dense(2, name="out")(h))
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, VOCAB, size=(4, LEN)).astype(np.int32)
    tokens[0, 6:] = 0
    tokens[2, 4:] = 0
    paths = {}
    for name, model in (("cnn", cnn), ("rnn", rnn)):
        paths[name] = str(tmp / f"{name}.keras")
        model.save(paths[name])
    return load_keras(paths["cnn"], head="logits"), load_keras(paths["rnn"]), tokens


def _layer_grad(m, x, layer, k):
    """d score_k / d A by jax.grad of a perturbation at the layer (the reference)."""
    a = m.apply(m.params, x, capture=[layer])[1][layer]

    def score(delta):
        return m.apply(m.params, x, perturb={layer: delta})[:, k].sum()

    return np.asarray(jax.grad(score)(jnp.zeros_like(a))), np.asarray(a)


@pytest.mark.parametrize("which", ["cnn", "rnn"])
def test_layer_gradients_match_jax_grad(text_models, which):
    m = text_models[0] if which == "cnn" else text_models[1]
    x = text_models[2]
    targets = [0, 1]
    g = np.asarray(jaxsal.saliency(m, x, targets, layer="embedding", reduce=None))
    gx = np.asarray(jaxsal.gradient_x_input(m, x, targets, layer="embedding", reduce=None))
    assert g.shape == (4, 2, LEN, 8)
    for t, k in enumerate(targets):
        ref, a = _layer_grad(m, x, "embedding", k)
        np.testing.assert_allclose(g[:, t], ref, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(gx[:, t], ref * a, rtol=1e-5, atol=1e-6)
    per_token = np.asarray(jaxsal.gradient_x_input(m, x, targets, layer="embedding"))
    np.testing.assert_allclose(per_token, gx.sum(-1), rtol=1e-5, atol=1e-6)
    sal = np.asarray(jaxsal.saliency(m, x, 1, layer="embedding"))  # max |g| per token
    np.testing.assert_allclose(sal, np.abs(g[:, 1]).max(-1), rtol=1e-5, atol=1e-6)


def test_layer_integrated_gradients_completeness(text_models):
    """Per-token IG sums to S(x) - S(baseline): without masks the model from the
    baseline's embedding on is the model on the baseline tokens."""
    m, _, x = text_models
    base_tokens = np.zeros_like(x)
    ig = np.asarray(jaxsal.integrated_gradients(m, x, [0, 2], layer="embedding", steps=128,
                                                baseline=base_tokens))
    assert ig.shape == (4, 2, LEN)
    s, s0 = np.asarray(m(x))[:, [0, 2]], np.asarray(m(base_tokens))[:, [0, 2]]
    np.testing.assert_allclose(ig.sum(-1), s - s0, rtol=2e-3, atol=2e-3)
    # predicted class, the default target, and the path endpoints of the integrand
    top = np.asarray(jaxsal.integrated_gradients(m, x, layer="embedding", steps=4))
    assert top.shape == (4, LEN)


def test_layer_integrated_gradients_with_masks(text_models):
    """With mask_zero the mask comes from x at every path point (as Captum's layer IG):
    completeness holds against the model run on x with the baseline's embedding."""
    _, m, x = text_models
    a = m.apply(m.params, x, capture=["embedding"])[1]["embedding"]
    a0 = m.apply(m.params, np.zeros_like(x), capture=["embedding"])[1]["embedding"]
    s = np.asarray(m(x))[:, 1]
    s_end = np.asarray(m.apply(m.params, x, perturb={"embedding": a0 - a}))[:, 1]
    ig = np.asarray(jaxsal.integrated_gradients(m, x, 1, layer="embedding", steps=128))
    np.testing.assert_allclose(ig.sum(-1), s - s_end, rtol=2e-3, atol=2e-3)
    # padded positions carry no attribution: their embeddings never reach the output
    assert np.all(ig[0, 6:] == 0) and np.all(ig[2, 4:] == 0)


def test_masked_token_model_with_a_baseline_that_keeps_the_padding(text_models):
    """A baseline that keeps x's padding (pad ids where x has them, another id elsewhere)
    gives the reference x's mask: DeepLIFT (whose cell updates take the product rule) and
    IG at the embedding of the Embedding(mask_zero) -> LSTM model then sum to
    S(x) - S(baseline). An all-padding baseline masks every step of DeepLIFT's reference
    run (it runs the baseline tokens, as Captum's LayerDeepLift runs the baseline), which no
    multiplier accounts for: its sum misses."""
    _, m, x = text_models
    keep = np.where(x == 0, 0, 1).astype(x.dtype)
    delta = np.asarray(m(x) - m(keep))[:, [0, 1]]
    scale = np.abs(delta).max()
    dl = np.asarray(jaxsal.deeplift(m, x, [0, 1], baseline=keep, layer="embedding"))
    np.testing.assert_allclose(dl.sum(-1), delta, rtol=1e-4, atol=1e-4 * scale)
    ig = np.asarray(jaxsal.integrated_gradients(m, x, [0, 1], baseline=keep,
                                                layer="embedding", steps=128))
    np.testing.assert_allclose(ig.sum(-1), delta, rtol=2e-3, atol=2e-3 * scale)
    assert np.all(dl[0, :, 6:] == 0) and np.all(dl[2, :, 4:] == 0)
    grad = np.asarray(jaxsal.deeplift(m, x, [0, 1], baseline=keep, layer="embedding",
                                      products="gradient"))  # the gates' gradient: misses
    assert np.abs(grad.sum(-1) - delta).max() > 1e-2 * scale
    pad = np.zeros_like(x)
    dl0 = np.asarray(jaxsal.deeplift(m, x, [0, 1], baseline=pad, layer="embedding"))
    delta0 = np.asarray(m(x) - m(pad))[:, [0, 1]]
    assert np.abs(dl0.sum(-1) - delta0).max() > 1e-2 * np.abs(delta0).max()


def test_cams_explain_token_ids_at_a_convolution(text_models):
    """Grad-CAM and the CAMs that read no input gradient take token ids as they are: the
    token axis is the spatial one (Embedding -> Conv1D, the default CAM layer). Grad-CAM
    equals its definition on jax.grad at the layer; Score-CAM (it multiplies the input by
    masks) and guided Grad-CAM (it needs the input gradient) are refused."""
    m, _, x = text_models
    assert jaxsal.default_cam_layer(m) == "conv" and "conv" in jaxsal.spatial_layers(m)
    cams = np.asarray(jaxsal.gradcam(m, x, [0, 2]))
    assert cams.shape == (4, 2, LEN)
    for t, k in enumerate([0, 2]):
        g, a = _layer_grad(m, x, "conv", k)  # (N, LEN, 6): "same" padding keeps LEN
        want = np.maximum((g.mean(1, keepdims=True) * a).sum(-1), 0.0)
        np.testing.assert_allclose(cams[:, t], want, rtol=1e-5, atol=1e-6)
    low = np.asarray(jaxsal.gradcam(m, x, [0, 2], upsample=False))
    np.testing.assert_allclose(low, cams, rtol=1e-5, atol=1e-6)
    for f in (jaxsal.gradcam_plus_plus, jaxsal.layercam, jaxsal.eigencam, jaxsal.ablationcam):
        assert np.asarray(f(m, x, 1)).shape == (4, LEN), f.__name__
    for f in (jaxsal.scorecam, jaxsal.guided_gradcam):
        with pytest.raises(TypeError, match="token ids"):
            f(m, x, 1)


def test_occlusion_of_token_ids(text_models):
    """Occlusion takes token ids: each token in turn replaced by the ``fill`` id, the map
    its score drop; a fractional fill or one outside the vocabulary is refused."""
    m, _, x = text_models
    got = np.asarray(jaxsal.occlusion(m, x, [0, 2], fill=1))
    assert got.shape == (4, 2, LEN)
    s = np.asarray(m(x))[:, [0, 2]]
    want = np.stack([s - np.asarray(m(np.where(np.arange(LEN) == i, 1, x)))[:, [0, 2]]
                     for i in range(LEN)], -1)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="whole numbers"):
        jaxsal.occlusion(m, x, 0, fill=0.5)
    with pytest.raises(ValueError, match=r"fill: .*token ids must be in \[0, 30\)"):
        jaxsal.occlusion(m, x, 0, fill=VOCAB)


def test_shapley_methods_on_token_ids(text_models):
    """The Shapley family takes token ids, absent tokens replaced by the ``fill`` id: exact
    Shapley values over the 9 tokens are efficient, ``sum = S(x) - S(fill everywhere)``,
    as KernelSHAP and Shapley sampling are; LIME needs distance='interpretable' there."""
    m, _, x = text_models
    delta = np.asarray(m(x) - m(np.ones_like(x)))[:, [0, 2]]
    exact = np.asarray(jaxsal.shapley_values(m, x, [0, 2], fill=1))
    assert exact.shape == (4, 2, LEN)
    np.testing.assert_allclose(exact.sum(-1), delta, rtol=1e-4, atol=1e-5)
    key = jax.random.key(0)
    for f in (jaxsal.kernel_shap, jaxsal.shapley_value_sampling):
        approx = np.asarray(f(m, x, [0, 2], fill=1, key=key))
        np.testing.assert_allclose(approx.sum(-1), delta, rtol=1e-4, atol=1e-5,
                                   err_msg=f.__name__)
    lime = np.asarray(jaxsal.lime(m, x, 0, fill=1, key=key, distance="interpretable"))
    assert lime.shape == (4, LEN) and np.isfinite(lime).all()
    with pytest.raises(ValueError, match="distance='interpretable'"):
        jaxsal.lime(m, x, 0, fill=1, key=key)
    with pytest.raises(ValueError, match="whole numbers"):
        jaxsal.kernel_shap(m, x, 0, fill=0.5, key=key)


def test_token_inputs_need_a_layer(text_models):
    m, _, x = text_models
    with pytest.raises(TypeError, match=r"integer inputs \(int32.*layer='embedding'"):
        jaxsal.saliency(m, x, 0)
    with pytest.raises(TypeError, match="layer='embedding'"):
        jaxsal.integrated_gradients(m, x, 0)
    with pytest.raises(TypeError, match=r"takes integer inputs \(int32"):  # ids as floats
        jaxsal.saliency(m, x.astype(np.float32), 0)
    with pytest.raises(TypeError, match="takes integer inputs"):
        jaxsal.gradcam(m, x.astype(np.float32), 0, layer="conv")
    with pytest.raises(ValueError, match=r"maximize optimizes continuous inputs"):
        jaxsal.maximize(m, 0, steps=2, input_range=(0.0, 1.0))
    with pytest.raises(ValueError, match=r"unknown layer 'embed'"):
        jaxsal.saliency(m, x, 0, layer="embed")


def test_gradcam_at_the_embedding_rnn_and_attention_layers_of_a_token_model(text_models,
                                                                          tmp_path):
    """Keras fixes the layout of an Embedding's output, (N, L, E) with the token axis first
    and its vectors last, and the layers after it that keep its rank keep it (an RNN's
    sequences, attention, LayerNormalization): they are CAM layers of a token model,
    as a Conv1D is. They were refused as having "no known layout" (blaming a Permute or a
    Reshape), and spatial_layers listed none. Checked against Grad-CAM's definition on
    ``jax.grad`` at the layer: ReLU(sum_k mean_l(dS/dA)_k A_k)."""
    x = text_models[2]
    inp = keras.Input((LEN,), dtype="int32")
    e = layers.Embedding(VOCAB, 4, name="embedding")(inp)
    h = layers.LSTM(4, return_sequences=True, name="lstm")(e)
    h = layers.MultiHeadAttention(1, 2, name="mha")(h, h)
    h = layers.LayerNormalization(name="ln")(h)
    h = layers.GlobalAveragePooling1D()(h)
    keras.Model(inp, layers.Dense(2, name="out")(h)).save(tmp_path / "seq.keras")
    seq = load_keras(tmp_path / "seq.keras")
    assert jaxsal.spatial_layers(seq) == ["embedding", "lstm", "mha", "ln"]
    assert jaxsal.default_cam_layer(seq) == "ln"  # the last spatial layer: no convolution
    for name in ("embedding", "ln"):
        a = seq.apply(seq.params, x, capture=[name])[1][name]
        g = jax.jit(jax.grad(lambda d, name=name: seq.apply(
            seq.params, x, perturb={name: d})[:, 1].sum()))(jnp.zeros_like(a))
        g, a = np.asarray(g), np.asarray(a)
        want = np.maximum((g.mean(axis=1, keepdims=True) * a).sum(-1), 0)
        got = np.asarray(jaxsal.gradcam(seq, x, 1, layer=name))
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7 * np.abs(want).max(),
                                   err_msg=name)


def test_token_input_error_names_the_models_embedding(tmp_path):
    """The error for token ids names the layer that reads them: the example
    layer='embedding' was an unknown layer for an embedding of another name."""
    inp = keras.Input((LEN,), dtype="int32")
    h = layers.GlobalAveragePooling1D()(layers.Embedding(VOCAB, 4, name="tok_emb")(inp))
    keras.Model(inp, layers.Dense(2)(h)).save(tmp_path / "emb.keras")
    m = load_keras(tmp_path / "emb.keras")
    x = np.ones((2, LEN), np.int32)
    with pytest.raises(TypeError, match=r"integrated_gradients\(model, x, layer='tok_emb'\)"):
        jaxsal.integrated_gradients(m, x, 0)
    assert jaxsal.integrated_gradients(m, x, 0, layer="tok_emb", steps=4).shape == (2, LEN)


def test_a_layer_holding_token_ids_is_refused_as_layer(text_models, tmp_path):
    """``layer=`` naming the input of token ids, or a layer between it and the Embedding,
    is refused as the ids are without ``layer=`` (naming the Embedding to use): their
    gradient is zero, so the gradient methods returned all-zero maps as an answer and
    smoothgrad failed inside ``jax.random.normal`` (int32 noise)."""
    _, m, x = text_models  # Embedding(mask_zero) -> LSTM, int32 ids
    ids = m.layer_names[0]
    for f, kw in ((jaxsal.saliency, {}), (jaxsal.integrated_gradients, {}),
                  (jaxsal.smoothgrad, {"key": 0})):
        with pytest.raises(TypeError, match=rf"layer={ids!r}.*layer='embedding'"):
            f(m, x, 0, layer=ids, reduce=None, **kw)
    inp = keras.Input((LEN,), name="ids")  # float-declared ids, reshaped before the lookup
    h = layers.Reshape((LEN,), name="reshape")(inp)
    h = layers.Embedding(VOCAB, 4, name="tok_emb")(h)
    h = layers.GlobalAveragePooling1D()(h)
    keras.Model(inp, layers.Dense(2)(h)).save(tmp_path / "float_ids.keras")
    mf = load_keras(tmp_path / "float_ids.keras")
    for name in ("ids", "reshape"):
        with pytest.raises(TypeError, match=rf"layer={name!r}.*Embedding 'tok_emb'.*"
                                            r"layer='tok_emb'"):
            jaxsal.saliency(mf, x, 0, layer=name, reduce=None)
    assert np.abs(jaxsal.saliency(mf, x, 0, layer="tok_emb")).sum() > 0


def test_baseline_ids_outside_the_vocabulary_are_refused(text_models):
    """A baseline of token ids outside the Embedding's vocabulary is refused naming the
    baseline, as a fill is; it gave NaN maps, reported as "not finite"."""
    _, m, x = text_models
    for bad in (VOCAB, -1):
        for f in (jaxsal.integrated_gradients, jaxsal.deeplift):
            with pytest.raises(ValueError, match=r"baseline: .*token ids must be in \[0, 30\)"):
                f(m, x, 0, layer="embedding", baseline=np.full_like(x, bad))


def test_reference_ids_outside_the_vocabulary_are_refused(text_models):
    """One unknown id in one reference of a distribution is refused naming ``baselines``:
    deeplift_shap gave NaN maps, reported as "not finite" (blaming a square root or the
    all-zero baseline), where gradient_shap refused them."""
    _, m, x = text_models
    refs = np.ones((2, LEN), np.int32)
    refs[1, 3] = VOCAB
    with pytest.raises(ValueError, match=r"baselines: .*token ids must be in \[0, 30\)"):
        jaxsal.deeplift_shap(m, x, 0, layer="embedding", baselines=refs)
    with pytest.raises(ValueError, match=r"baselines: .*token ids must be in \[0, 30\)"):
        jaxsal.gradient_shap(m, x, 0, layer="embedding", baselines=refs, key=0, n=2)


def test_float_declared_token_input_is_explained_as_token_ids(text_models, tmp_path):
    """``keras.Input((L,))`` (float, as many tutorials declare it) read only by an Embedding
    (and the ``not_equal`` its mask records) holds token ids that Keras casts. The gradient
    methods at the input gave all-zero maps (the gradient through the cast) and the token CAMs
    found no CAM layer; now such a model is explained as its int32-declared twin (same
    weights): the input gradient refused, CAMs and layer maps equal the twin's for integer or
    whole-number float ids, fractional ids refused."""
    twin, _, x = text_models  # Embedding -> Conv1D "conv" -> max pool -> Dense, int32 input
    inp = keras.Input((LEN,))
    h = layers.Embedding(VOCAB, 8, mask_zero=True, name="embedding")(inp)  # records not_equal
    h = layers.Conv1D(6, 3, activation="relu", padding="same", name="conv")(h)
    h = layers.GlobalMaxPooling1D(name="gmp")(h)
    h = layers.Dense(5, activation="relu", name="hidden")(h)
    km = keras.Model(inp, layers.Dense(3, activation="softmax", name="out")(h))
    for name in ("embedding", "conv", "hidden", "out"):
        km.get_layer(name).set_weights([np.asarray(twin.params[name][k]) for k in
                                        (("embeddings",) if name == "embedding"
                                         else ("kernel", "bias"))])
    km.save(tmp_path / "float_input.keras")
    m = load_keras(tmp_path / "float_input.keras", head="logits")
    np.testing.assert_allclose(np.asarray(m(x)), np.asarray(twin(x)), rtol=1e-6, atol=1e-7)
    for f in (jaxsal.saliency, jaxsal.integrated_gradients, jaxsal.scorecam):
        for ids in (x, x.astype(np.float32)):
            with pytest.raises(TypeError, match=r"declared float but read only by Embedding "
                                                r"'embedding'.*layer='embedding'"):
                f(m, ids, 0)
    assert jaxsal.default_cam_layer(m) == "conv"
    want = np.asarray(jaxsal.gradcam(twin, x, [0, 2]))
    lay = np.asarray(jaxsal.saliency(twin, x, [0, 2], layer="embedding"))
    for ids in (x, x.astype(np.float32)):
        np.testing.assert_allclose(np.asarray(jaxsal.gradcam(m, ids, [0, 2])), want,
                                   rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(np.asarray(jaxsal.saliency(m, ids, [0, 2], layer="embedding")),
                                   lay, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match=r"whole-number token ids.*got 1.5"):
        jaxsal.saliency(m, np.where(x == x[0, 0], 1.5, x).astype(np.float32), 0,
                        layer="embedding")
    with pytest.raises(ValueError, match="whole numbers"):
        jaxsal.occlusion(m, x.astype(np.float32), 0, fill=0.5)


def test_float_declared_token_input_read_by_a_nested_encoder(text_models, tmp_path):
    """The same float-declared ids read by an Embedding inside a nested Sequential encoder
    (``enc(keras.Input((L,)))``): saliency gave all-zero maps without a word (only the
    input's direct readers were looked at, here the encoder); now refused naming the nested
    embedding, and explained there as the int32 twin is at its own embedding."""
    twin, _, x = text_models  # Embedding -> Conv1D "conv" -> max pool -> Dense, int32 input
    enc = keras.Sequential([layers.Embedding(VOCAB, 8, name="embedding"),
                            layers.Conv1D(6, 3, activation="relu", padding="same", name="conv"),
                            layers.GlobalMaxPooling1D(name="gmp")], name="enc")
    inp = keras.Input((LEN,))
    h = layers.Dense(5, activation="relu", name="hidden")(enc(inp))
    km = keras.Model(inp, layers.Dense(3, activation="softmax", name="out")(h))
    for layer, name in ((enc.get_layer("embedding"), "embedding"),
                        (enc.get_layer("conv"), "conv"), (km.get_layer("hidden"), "hidden"),
                        (km.get_layer("out"), "out")):
        layer.set_weights([np.asarray(twin.params[name][k]) for k in
                           (("embeddings",) if name == "embedding" else ("kernel", "bias"))])
    km.save(tmp_path / "nested_float_input.keras")
    m = load_keras(tmp_path / "nested_float_input.keras", head="logits")
    np.testing.assert_allclose(np.asarray(m(x)), np.asarray(twin(x)), rtol=1e-6, atol=1e-7)
    with pytest.raises(TypeError, match=r"declared float but read only by Embedding "
                                        r"'enc/embedding'.*layer='enc/embedding'"):
        jaxsal.saliency(m, x.astype(np.float32), 0)
    lay = np.asarray(jaxsal.saliency(twin, x, [0, 2], layer="embedding"))
    np.testing.assert_allclose(
        np.asarray(jaxsal.saliency(m, x.astype(np.float32), [0, 2], layer="enc/embedding")),
        lay, rtol=1e-5, atol=1e-7)


def test_cams_of_token_ids_beside_features(tmp_path):
    """A model of [token ids (N, L), features (N, D)]: Grad-CAM was refused, "needs an input
    with 1 to 3 spatial axes", the token axis not counted as one (it is for a model of token
    ids alone), whatever layer= was given. Now it maps the token axis, equal to its
    definition on jax.grad at the layer; inputs with no such axis are refused saying what to
    do (integer ids, layer=, or a method for features)."""
    keras.utils.set_random_seed(4)
    tok = keras.Input((LEN,), dtype="int32", name="tok")
    feat = keras.Input((3,), name="feat")
    h = layers.Conv1D(4, 3, padding="same", name="conv")(
        layers.Embedding(VOCAB, 8, name="embedding")(tok))
    h = layers.Concatenate()([layers.GlobalAveragePooling1D()(h), layers.Dense(4)(feat)])
    keras.Model([tok, feat], layers.Dense(2, name="out")(h)).save(tmp_path / "tf.keras")
    m = load_keras(tmp_path / "tf.keras", head="logits")
    rng = np.random.default_rng(1)
    x = [rng.integers(0, VOCAB, (2, LEN)).astype(np.int32),
         rng.normal(size=(2, 3)).astype(np.float32)]
    for layer in (None, "conv"):
        cams = np.asarray(jaxsal.gradcam(m, x, [0, 1], layer=layer))
        assert cams.shape == (2, 2, LEN)
        for t in (0, 1):
            g, a = _layer_grad(m, x, "conv", t)
            want = np.maximum((g.mean(1, keepdims=True) * a).sum(-1), 0.0)
            np.testing.assert_allclose(cams[:, t], want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"or of integer token ids \(N, L\), whose token axis "
                       r"is the spatial one; got inputs of shapes \(2, 3\) float32, \(2, 3\) "
                       r"float32\. Token ids stored as floats: pass them as integers.*layer=.*"
                       r"Features \(N, D\) alone have no axis to map: explain them with "
                       r"jaxsal\.saliency"):
        jaxsal.gradcam(jaxsal.FunctionModel(lambda p, x: x[0] @ p + x[1] @ p, jnp.ones((3, 2))),
                       [x[1], x[1]], 0)


def test_float_declared_tokens_read_by_a_nested_model_of_several_inputs(tmp_path):
    """Float-declared ids read by an Embedding inside a nested model of two inputs,
    ``enc([tokens, features])``: saliency gave all-zero token maps without a word (only
    nested models of one input were looked into); now refused naming ``'enc/embedding'``,
    explained there as integer ids are, and ids outside its vocabulary (which Keras on NumPy
    refuses with an IndexError) refused instead of giving NaN outputs."""
    keras.utils.set_random_seed(3)
    tok, feat = keras.Input((LEN,), name="tok"), keras.Input((3,), name="feat")
    h = layers.Conv1D(4, 3, padding="same", name="conv")(
        layers.Embedding(VOCAB, 8, name="embedding")(tok))
    h = layers.Concatenate()([layers.GlobalAveragePooling1D()(h), layers.Dense(4)(feat)])
    enc = keras.Model([tok, feat], h, name="enc")
    t, f = keras.Input((LEN,)), keras.Input((3,))
    km = keras.Model([t, f], layers.Dense(2, name="out")(enc([t, f])))
    km.save(tmp_path / "nested_two_inputs.keras")
    m = load_keras(tmp_path / "nested_two_inputs.keras")
    rng = np.random.default_rng(0)
    ids = rng.integers(0, VOCAB, (2, LEN)).astype(np.float32)
    x = [ids, rng.normal(size=(2, 3)).astype(np.float32)]
    np.testing.assert_allclose(np.asarray(m(x)), km.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    with pytest.raises(TypeError, match=r"declared float but read only by Embedding "
                                        r"'enc/embedding'.*layer='enc/embedding'"):
        jaxsal.saliency(m, x, 0)
    a = m.apply(m.params, x, capture=["enc/embedding"])[1]["enc/embedding"]
    ref = jax.grad(lambda d: m.apply(m.params, x, perturb={"enc/embedding": d})[:, 1].sum())(
        jnp.zeros_like(a))
    for tokens in (ids, ids.astype(np.int32)):
        g = jaxsal.saliency(m, [tokens, x[1]], 1, layer="enc/embedding", reduce=None)
        np.testing.assert_allclose(np.asarray(g), np.asarray(ref), rtol=1e-5, atol=1e-7)
    bad = np.where(ids == ids[0, 0], VOCAB, ids).astype(np.float32)
    if keras.backend.backend() == "numpy":  # (jnp.take on the JAX backend gives NaN rows)
        with pytest.raises(IndexError):
            km.predict([bad, x[1]], verbose=0)
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 30\) for Embedding "
                                         r"'enc/embedding'"):
        m([bad, x[1]])


def test_layer_without_channel_axis_needs_reduce_none(text_models):
    m, _, x = text_models
    with pytest.raises(ValueError, match=r"'hidden' has output shape \(4, 5\).*reduce=None"):
        jaxsal.gradient_x_input(m, x, 0, layer="hidden")
    g = np.asarray(jaxsal.gradient_x_input(m, x, [0, 1], layer="hidden", reduce=None))
    assert g.shape == (4, 2, 5)
    # the hidden layer feeds the output Dense directly: g = W[:, k] * hidden (logits head)
    h = np.asarray(m.apply(m.params, x, capture=["hidden"])[1]["hidden"])
    w = np.asarray(m.params["out"]["kernel"])
    np.testing.assert_allclose(g[:, 1], h * w[:, 1], rtol=1e-5, atol=1e-6)


def test_image_model_layer_attribution_is_gradcam_material():
    """On an image model, the gradient at a convolution averaged over positions is
    Grad-CAM's channel weight: the layer map and Grad-CAM share their pieces."""
    m = load_keras("tests/fixtures/mnist_cnn_tfkeras2.h5").with_head("logits")
    x = np.load("tests/fixtures/mnist_5k.npz")["x"][:3, :, :, None].astype(np.float32) / 255
    g = np.asarray(jaxsal.saliency(m, x, [2, 7], layer="conv2d_2", reduce=None))
    a = np.asarray(m.apply(m.params, x, capture=["conv2d_2"])[1]["conv2d_2"])
    cam = np.maximum(np.einsum("nhwk,ntk->nthw", a, g.mean(axis=(2, 3))), 0)
    np.testing.assert_allclose(jaxsal.gradcam(m, x, [2, 7], layer="conv2d_2", upsample=False),
                               cam, rtol=1e-4, atol=1e-5)


def test_cli_explains_token_ids_at_a_layer(text_models, tmp_path):
    from jaxsal import cli

    m, _, x = text_models
    np.save(tmp_path / "tokens.npy", x)
    out = tmp_path / "ig.npy"
    rc = cli.main(["explain", m.source, str(tmp_path / "tokens.npy"), "--method",
                   "integrated_gradients", "--layer", "embedding", "--targets", "all",
                   "--out", str(out)])
    assert rc == 0
    ref = jaxsal.integrated_gradients(m, x, [0, 1, 2], layer="embedding")
    np.testing.assert_allclose(np.load(out), ref, rtol=1e-5, atol=1e-6)


def test_smoothgrad_at_a_layer_is_its_definition_with_the_same_noise(text_models):
    """SmoothGrad in the embedding space: the noise (key -> sample k -> input i, the layer's
    shape) added to the layer's output, the gradient taken there, averaged."""
    m, _, x = text_models
    key, n, std = jax.random.key(4), 5, 0.3
    got = np.asarray(jaxsal.smoothgrad(m, x, [0, 2], key=key, n=n, noise_std=std,
                                       layer="embedding", reduce=None, abs_first=False))
    a = np.asarray(m.apply(m.params, x, capture=["embedding"])[1]["embedding"])
    want = np.zeros((len(x), 2) + a.shape[1:], np.float32)
    for k in range(n):
        kk = jax.random.fold_in(key, k)
        eps = np.stack([np.asarray(jax.random.normal(jax.random.fold_in(kk, i), a.shape[1:]))
                        for i in range(len(x))])
        for j, t in enumerate([0, 2]):
            def score(delta):
                return m.apply(m.params, x, perturb={"embedding": std * eps + delta})[:, t].sum()
            want[:, j] += np.asarray(jax.grad(score)(jnp.zeros_like(a))) / n
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    # per token (the embedding axis reduced), and without noise the layer's saliency
    per_token = jaxsal.smoothgrad(m, x, [0, 2], key=key, n=3, noise_std=0.0, layer="embedding")
    assert per_token.shape == (len(x), 2, LEN)
    np.testing.assert_allclose(per_token, jaxsal.saliency(m, x, [0, 2], layer="embedding"),
                               rtol=1e-5, atol=1e-7)
    gxi = jaxsal.smoothgrad(m, x, 1, key=key, n=2, noise_std=0.0, layer="embedding",
                            method="gradient_x_input")
    np.testing.assert_allclose(gxi, jaxsal.gradient_x_input(m, x, 1, layer="embedding"),
                               rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="not integrated_gradients"):
        jaxsal.smoothgrad(m, x, 0, key=0, layer="embedding", method="integrated_gradients")


def test_cli_smoothgrad_at_a_layer(text_models, tmp_path):
    from jaxsal import cli

    m, _, x = text_models
    np.save(tmp_path / "tokens.npy", x)
    out = tmp_path / "sg.npy"
    rc = cli.main(["explain", m.source, str(tmp_path / "tokens.npy"), "--method", "smoothgrad",
                   "--layer", "embedding", "--seed", "2", "--option", "n=4", "--targets", "0,1",
                   "--out", str(out)])
    assert rc == 0
    ref = jaxsal.smoothgrad(m, x, [0, 1], key=jax.random.key(2), n=4, layer="embedding")
    assert ref.shape == (len(x), 2, LEN)
    np.testing.assert_allclose(np.load(out), ref, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("rank", [1, 2])
def test_default_cam_layer_takes_transposed_convolutions_in_every_rank(rank, tmp_path):
    """Conv -> ConvTranspose -> BatchNormalization: the default CAM layer is the transposed
    convolution in 1-D as in 2-D (Conv1DTranspose was missing from the convolutions: the
    1-D model's CAMs explained the earlier layer)."""
    from keras import layers

    conv, up = ((layers.Conv1D, layers.Conv1DTranspose) if rank == 1
                else (layers.Conv2D, layers.Conv2DTranspose))
    inp = keras.Input((8,) * rank + (2,))
    h = layers.BatchNormalization(name="bn")(up(3, 3, padding="same", name="convT")(
        conv(4, 3, padding="same", name="conv")(inp)))
    pool = layers.GlobalAveragePooling1D() if rank == 1 else layers.GlobalAveragePooling2D()
    model = keras.Model(inp, layers.Dense(2)(pool(h)))
    path = tmp_path / f"t{rank}.keras"
    model.save(path)
    m = load_keras(path)
    assert jaxsal.spatial_layers(m) == ["conv", "convT", "bn"]
    assert jaxsal.default_cam_layer(m) == "convT"
