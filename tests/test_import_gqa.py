"""Keras 3's GroupedQueryAttention (recorded as ``GroupQueryAttention``) against real Keras 3
(NumPy backend unless ``KERAS_BACKEND`` says otherwise: see conftest.py), saved as ``.keras``,
legacy ``.h5`` and ``.weights.h5``.

One Functional model holds every case: self and cross attention (a key of its own with its own
mask), one, two and as many key/value heads as query heads, ``use_bias=False``, dropout,
``use_gate`` with ``sliding_window``, causal masks (self and cross with ``T != S``, alone and
with other masks), an ``Embedding(mask_zero=True)`` query/value mask and ``Masking`` value and
key masks, ``attention_mask`` (with 0, 0.3 and 1: Keras's fused attention keeps 0.3, its
``Softmax`` path drops it when the attention mask is the only mask), returned scores, and
layers after the attention that read the masks (the output's, and the input's, which
GroupedQueryAttention leaves in place). Kernels are drawn large enough that the attention is
peaked, so that a wrong weight, head order or mask changes the outputs.
"""

import json
import re

import numpy as np
import pytest

keras = pytest.importorskip("keras")
from keras import layers  # noqa: E402

from import_helpers import (keras_outputs, layer_errors, load_saved, perturb_keras,  # noqa: E402
                            rel_err, save_all_formats)
from model_import import (KerasImportError, UnsupportedLayerError, build_model,  # noqa: E402
                          load_keras)

TOL = 1e-5
N, T, S = 4, 7, 5
GQA = getattr(layers, "GroupQueryAttention", None) or getattr(layers, "GroupedQueryAttention")

# Keras warns about every layer that drops a mask, and (quantize) about layers without
# weights to quantize: expected here.
pytestmark = [pytest.mark.filterwarnings("ignore:.*does not support masking:UserWarning"),
              pytest.mark.filterwarnings("ignore:.*does not have a `quantize` method:UserWarning")]


def _model():
    tok = keras.Input((T,), dtype="int32", name="tok")
    ctx = keras.Input((S, 8), name="ctx")
    kin = keras.Input((S, 5), name="kin")
    xq = keras.Input((T, 8), name="xq")
    am = keras.Input((T, S), name="am")
    e = layers.Embedding(30, 8, mask_zero=True, name="emb")(tok)
    vm = layers.Masking(0.0, name="vmask")(ctx)
    km = layers.Masking(0.0, name="kmask")(kin)
    outs = {
        # fused dot_product_attention: padded query rows stay uniform
        "gqa_self": GQA(3, 4, 2, name="gqa_self")(e, e),
        "gqa_mqa_cross": GQA(3, 4, 1, use_bias=False, name="gqa_mqa_cross")(e, vm, km),
        "gqa_cross_causal": GQA(2, 2, 1, name="gqa_cross_causal")(e, vm, use_causal_mask=True),
        "gqa_am_masked": GQA(3, 2, 1, name="gqa_am_masked")(xq, vm, attention_mask=am),
        "gqa_am_fused": GQA(3, 2, 2, name="gqa_am_fused")(xq, ctx, attention_mask=am),
        "gqa_causal_only": GQA(2, 4, 2, name="gqa_causal_only")(xq, xq, use_causal_mask=True),
        "gqa_gate_window": GQA(2, 4, 2, use_gate=True, sliding_window=3, name="gqa_gate_window")(
            e, e, use_causal_mask=True),
        # Keras's Softmax path (scores returned or dropout): masked rows become 0
        "gqa_scores_causal": GQA(2, 4, 4, name="gqa_scores_causal")(
            e, e, use_causal_mask=True, return_attention_scores=True),
        "gqa_am_scores": GQA(3, 2, 2, name="gqa_am_scores")(
            xq, ctx, attention_mask=am, return_attention_scores=True),
        "gqa_dropout": GQA(3, 4, 2, dropout=0.3, name="gqa_dropout")(e, vm, km,
                                                                      attention_mask=am),
    }
    # The output carries the query's mask; the inputs keep theirs (read after the attention).
    pooled = [layers.GlobalAveragePooling1D(name="gap_self")(outs["gqa_self"]),
              layers.GlobalAveragePooling1D(name="gap_emb")(e),
              layers.GlobalAveragePooling1D(name="gap_value")(vm)]
    flat = [layers.Flatten(name=f"flat_{k}")(v if not isinstance(v, tuple) else v[0])
            for k, v in outs.items()]
    scores = [layers.Flatten(name=f"flat_scores_{k}")(v[1]) for k, v in outs.items()
              if isinstance(v, tuple)]
    out = layers.Concatenate(name="cat")(pooled + flat + scores)
    return keras.Model([tok, ctx, kin, xq, am], layers.Dense(3, name="out")(out),
                       name="gqa_zoo")


def _randomize(m, seed=1):
    """Random biases (perturb_keras) and kernels large enough for a peaked attention."""
    perturb_keras(m, seed=seed)
    rng = np.random.default_rng(seed + 1)
    for v in m.weights:
        name = v.name.split("/")[-1]
        a = np.asarray(v.numpy())
        if name == "embeddings":
            v.assign(rng.normal(0.0, 1.0, a.shape).astype(a.dtype))
        elif name == "kernel" and a.ndim == 3:  # the attention projections
            v.assign(rng.normal(0.0, 0.8, a.shape).astype(a.dtype))


def _data(seed=3):
    rng = np.random.default_rng(seed)
    tok = rng.integers(1, 30, (N, T)).astype("int32")
    tok[0, 5:] = 0  # padded at the end
    tok[1, :2] = 0  # at the start
    tok[2, 3] = 0  # in the middle
    ctx = rng.normal(0.0, 1.0, (N, S, 8)).astype("float32")
    ctx[0, 3:] = 0.0
    ctx[2, 0] = 0.0
    kin = rng.normal(0.0, 1.0, (N, S, 5)).astype("float32")
    kin[1, 4] = 0.0  # the key's mask differs from the value's
    kin[3, 1:3] = 0.0
    xq = rng.normal(0.0, 1.0, (N, T, 8)).astype("float32")
    am = rng.choice(np.array([0.0, 0.3, 1.0], "float32"), (N, T, S), p=[0.25, 0.25, 0.5])
    am[0, 2] = 0.0  # a fully masked query row
    am[1, 4] = 0.3  # masked for the Softmax path only
    return [tok, ctx, kin, xq, am]


GQA_NAMES = ["gqa_self", "gqa_mqa_cross", "gqa_cross_causal", "gqa_am_masked", "gqa_am_fused",
             "gqa_causal_only", "gqa_gate_window", "gqa_scores_causal", "gqa_am_scores",
             "gqa_dropout"]
COMPARED = GQA_NAMES + ["gap_self", "gap_emb", "gap_value"]


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    km = _model()
    _randomize(km)
    x = _data()
    ref = keras_outputs(km, COMPARED, x)
    return km, x, ref, save_all_formats(km, tmp_path_factory.mktemp("gqa"), "gqa")


@pytest.mark.parametrize("ext", [".keras", ".h5", ".weights.h5"])
def test_gqa_matches_keras(zoo, ext):
    km, x, ref, paths = zoo
    m = load_saved(paths, ext, km)
    y, acts = m.apply(m.params, x, capture=COMPARED)
    errs = layer_errors(acts, ref)
    assert max(errs.values()) <= TOL, {k: v for k, v in errs.items() if v > TOL}
    assert rel_err(y, np.asarray(km(x, training=False))) <= TOL
    for n in GQA_NAMES:  # (N, T, query features) whatever the key width
        shape = m.layer(n).output_shape
        shape = shape[0] if isinstance(shape[0], tuple) else shape
        assert tuple(shape) == (T, 8), (n, shape)
    assert np.allclose(np.asarray(m(x)), np.asarray(y), rtol=1e-5, atol=1e-6)  # jit == eager


def test_weights_found_by_class_key_without_recorded_names(zoo, tmp_path):
    """Keras keys a saved layer by its Python class (``grouped_query_attention``), not the
    config's ``GroupQueryAttention``; a file without the recorded layer names (older
    writers) is read by that key."""
    import shutil

    import h5py

    km, x, ref, paths = zoo
    bare = tmp_path / "bare.weights.h5"
    shutil.copy(paths[".weights.h5"], bare)
    with h5py.File(bare, "r+") as f:
        def strip(name, obj):
            if isinstance(obj, h5py.Group) and "name" in obj.attrs:
                del obj.attrs["name"]
        f.visititems(strip)
        assert any(k.startswith("grouped_query_attention") for k in f["layers"])
    m = load_keras(bare, config=km.to_json())
    assert rel_err(m(x), np.asarray(km(x, training=False))) <= TOL


def _without_recorded_masks(cfg):
    """The config as Keras 3 before 3.10 writes it: no ``mask`` arguments filled in by Keras,
    and none of the operations that computed them; masks must then flow implicitly (the
    attention's output carries the query's mask, its inputs keep theirs)."""
    cfg = json.loads(json.dumps(cfg))
    lays = cfg["config"]["layers"]
    for lc in lays:
        for node in lc.get("inbound_nodes", []):
            node.get("kwargs", {}).pop("mask", None)
    while True:
        used = set(re.findall(r'"keras_history": \["([^"]+)"', json.dumps(lays)))
        outs = cfg["config"]["output_layers"]
        used |= {o[0] for o in ([outs] if isinstance(outs[0], str) else outs)}
        kept = [lc for lc in lays if lc["name"] in used
                or not str(lc.get("module", "")).startswith("keras.src.ops")]
        if len(kept) == len(lays):
            break
        lays = kept
    cfg["config"]["layers"] = lays
    return cfg


def test_masks_flow_without_recorded_mask_arguments(zoo):
    km, x, ref, paths = zoo
    cfg = json.loads(km.to_json())
    stripped = _without_recorded_masks(cfg)
    assert '"mask"' in json.dumps(cfg) and '"mask"' not in json.dumps(stripped)
    m = load_keras(paths[".keras"], config=stripped)
    _, acts = m.apply(m.params, x, capture=COMPARED)
    errs = layer_errors(acts, ref)
    assert max(errs.values()) <= TOL, {k: v for k, v in errs.items() if v > TOL}


def test_the_cases_are_discriminating(zoo):
    """The zoo tells apart what a wrong converter would confuse: key and value kernels, the
    key/value head each query head reads, the fused and Softmax treatments of masked rows,
    and the two readings of a 0.3 attention mask."""
    km, x, ref, paths = zoo
    m = load_keras(paths[".keras"])
    p = m.params["gqa_self"]
    swapped = dict(p, key_kernel=p["value_kernel"], value_kernel=p["key_kernel"],
                   key_bias=p["value_bias"], value_bias=p["key_bias"])
    heads = dict(p, key_kernel=p["key_kernel"][:, ::-1], key_bias=p["key_bias"][::-1],
                 value_kernel=p["value_kernel"][:, ::-1], value_bias=p["value_bias"][::-1])
    for bad in (swapped, heads):
        _, acts = m.apply(dict(m.params, gqa_self=bad), x, capture=["gqa_self"])
        assert rel_err(acts["gqa_self"], ref["gqa_self"]) > 1e-2
    # fused (uniform) and Softmax (zero) rows differ for padded queries
    tok = x[0]
    pad = tok == 0
    q_rows = ref["gqa_scores_causal"][1].transpose(0, 2, 1, 3)[pad]  # (rows, heads, S)
    assert np.all(q_rows == 0)
    # an attention mask of 0.3 attends in the fused path, not in the Softmax path: the data
    # exercises both readings (the converter matching Keras is test_gqa_matches_keras)
    am = x[4]
    w = ref["gqa_am_scores"][1]
    assert np.all(w[np.broadcast_to((am == 0.3)[:, None], w.shape)] == 0)
    names = ["gqa_am_fused", "gqa_am_scores"]

    def outputs(mask):
        _, acts = m.apply(m.params, x[:4] + [mask], capture=names)
        return {n: acts[n][0] if isinstance(acts[n], tuple) else acts[n] for n in names}

    base = outputs(am)
    for value, changed in ((0.0, "gqa_am_fused"), (1.0, "gqa_am_scores")):
        new = outputs(np.where(am == 0.3, value, am))
        for n in names:
            assert (rel_err(new[n], base[n]) > 1e-2) == (n == changed), (value, n)


def _gqa_config(km, name):
    cfg = json.loads(km.to_json())
    lc = next(lc for lc in cfg["config"]["layers"] if lc["config"]["name"] == name)
    return cfg, lc["config"]


def _small():
    x = keras.Input((T, 8), name="x")
    y = GQA(3, 4, 2, name="gqa")(x, x)
    return keras.Model(x, y)


def test_unknown_options_are_refused_defaults_accepted(tmp_path):
    km = _small()
    km.save_weights(tmp_path / "w.weights.h5")
    cfg, lc = _gqa_config(km, "gqa")
    lc["use_rope"] = True
    with pytest.raises(UnsupportedLayerError, match=r"use_rope=True; expected only .*head_dim"):
        build_model(cfg, None)
    lc["use_rope"] = False
    lc["attn_logits_soft_cap"] = None  # a default value of an unknown option is harmless
    x = np.random.default_rng(0).normal(size=(2, T, 8)).astype("float32")
    m = load_keras(tmp_path / "w.weights.h5", config=cfg)
    assert rel_err(m(x), np.asarray(km(x))) <= TOL
    lc["num_query_heads"] = 3
    with pytest.raises(UnsupportedLayerError, match=r"num_query_heads \(3\).*\(2\)"):
        build_model(cfg, None)


def test_weights_of_another_architecture_are_refused(tmp_path):
    km = _small()
    km.save_weights(tmp_path / "w.weights.h5")
    cfg, lc = _gqa_config(km, "gqa")
    lc["num_key_value_heads"] = 1
    want = r"key_kernel of shape \('\?', 1, 3\), the weights file has \(8, 2, 3\)"
    with pytest.raises(KerasImportError, match=want):
        load_keras(tmp_path / "w.weights.h5", config=cfg)
    lc["num_key_value_heads"] = 2
    lc["use_bias"] = False
    with pytest.raises(KerasImportError, match=r"expected 4 weight arrays.*has 8"):
        load_keras(tmp_path / "w.weights.h5", config=cfg)


def test_quantized_model_is_refused(tmp_path):
    km = _small()
    try:
        km.quantize("int8")
    except Exception as e:  # a backend without int8 support
        pytest.skip(f"keras cannot quantize here: {e}")
    km.save(tmp_path / "q.keras")
    with pytest.raises(UnsupportedLayerError, match="quantized"):
        load_keras(tmp_path / "q.keras")


# ---------------------------------------------------------------------- ReversibleEmbedding
def _reversible_model():
    tok = keras.Input((T,), dtype="int32", name="tok")
    untied = layers.ReversibleEmbedding(20, 6, mask_zero=True, tie_weights=False,
                                        logit_soft_cap=2.0, name="rev_untied")
    tied = layers.ReversibleEmbedding(20, 6, name="rev_tied")
    e = untied(tok)  # masked where tok == 0
    h = layers.Dense(6, name="h")(e)
    logits = untied(h, reverse=True)  # no mask, whatever h's
    logits_tied = tied(layers.Dense(6, name="h_tied")(tied(tok)), reverse=True)
    outs = [layers.GlobalAveragePooling1D(name="gap_e")(e),
            layers.GlobalAveragePooling1D(name="gap_h")(h),
            layers.GlobalAveragePooling1D(name="gap_logits")(logits), logits, logits_tied]
    return keras.Model(tok, outs, name="reversible")


def test_reversible_embedding_matches_keras(tmp_path):
    km = _reversible_model()
    perturb_keras(km, seed=4)
    rng = np.random.default_rng(5)
    for v in km.weights:
        if v.name.split("/")[-1] in ("embeddings", "reverse_embeddings"):
            v.assign(rng.normal(0.0, 1.0, v.shape).astype("float32"))
    x = _data()[0][:, :T] % 20
    ref = [np.asarray(a) for a in km(x)]
    assert np.abs(ref[3]).max() > 1.5  # the soft cap (2.0) bends the logits
    km.save(tmp_path / "r.keras")
    km.save(tmp_path / "r.h5")
    km.save_weights(tmp_path / "r.weights.h5")
    for ext in (".keras", ".h5", ".weights.h5"):
        m = load_saved({ext: tmp_path / f"r{ext}"}, ext, km)
        ours = m(x)
        errs = [rel_err(a, b) for a, b in zip(ours, ref)]
        assert max(errs) <= TOL, (ext, errs)
    bad = x.copy()
    bad[0, 0] = 20  # outside the 20-row table: refused, not NaN rows
    with pytest.raises(ValueError, match="token ids must be in"):
        m(bad)
