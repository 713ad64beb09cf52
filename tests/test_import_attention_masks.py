"""Attention layers' masked softmax by the Keras version recorded in the file.

One tiny model holds MultiHeadAttention and GroupedQueryAttention on their fused path (3-D
inputs, no dropout, no returned scores) and on their ``Softmax`` path (scores returned), with a
numeric ``attention_mask`` (0, 0.3, 0.7, 1 and a fully masked query row) as the only mask, and
an ``Attention`` layer with numeric query and value masks. The installed Keras (3.15.1)
is the reference for its own version; older versions are the same ``.h5`` with its
``keras_version`` attribute changed, against Keras's formulas written here in NumPy from the
sources at the release tags (keras/src/layers/attention/multi_head_attention.py,
grouped_query_attention.py, attention.py and keras/src/layers/activations/softmax.py):

- MultiHeadAttention / GroupedQueryAttention call ``ops.dot_product_attention`` (the mask as
  booleans; a fully masked row stays uniform) from 3.7 on; 3.0-3.6 always take the ``Softmax``
  layer. MultiHeadAttention casts a lone ``attention_mask`` to booleans from 3.7 on and hands
  it over as given before; GroupedQueryAttention hands it to its ``Softmax`` as given in
  every version.
- ``Softmax(mask)``: 3.0-3.9 add ``(1 - mask) * -1e9``; 3.10-3.12 also multiply the
  probabilities by the mask; 3.13+ keep ``mask > 0.5`` (booleans as they are) and zero the rest.
- ``Attention``: masked keys where the value mask is 0 get ``score - 1e9``; the output is
  multiplied by the query mask (3.0-3.14) or kept where it is non-zero (3.15+). With
  ``use_causal_mask``, 3.0.0-3.0.4 ignore the value mask (keras-team/keras#19093). Without it,
  3.0.5-3.11 broadcast the value mask ``(N, S)`` against the scores ``(N, T, S)`` unexpanded
  (keras-team/keras#21595): Keras fails for these shapes (N = 2, T = 3), and the reference, as
  the importer, masks as 3.0.0-3.0.4 and 3.12+ do (and those versions for N = 1).
"""

import numpy as np
import pytest

keras = pytest.importorskip("keras")
from keras import layers  # noqa: E402

from import_helpers import relabel_h5, save_keras_and_h5  # noqa: E402
from model_import import load_keras  # noqa: E402

N, T, D = 2, 3, 4
GQA = getattr(layers, "GroupQueryAttention", None) or getattr(layers, "GroupedQueryAttention")


def _model():
    x, am = keras.Input((T, D), name="x"), keras.Input((T, T), name="am")
    qm, vm = keras.Input((T,), name="qm"), keras.Input((T,), name="vm")
    outs = [
        layers.MultiHeadAttention(1, 2, name="mha")(x, x, attention_mask=am),
        layers.MultiHeadAttention(1, 2, name="mha_sm")(x, x, attention_mask=am,
                                                        return_attention_scores=True)[0],
        GQA(2, 2, 1, name="gqa")(x, x, attention_mask=am),
        GQA(2, 2, 1, name="gqa_sm")(x, x, attention_mask=am, return_attention_scores=True)[0],
        layers.Attention(name="att")([x, x], mask=[qm, vm]),
        layers.Attention(name="att_causal")([x, x], mask=[qm, vm], use_causal_mask=True),
    ]
    return keras.Model([x, am, qm, vm], outs)


def _data():
    x = np.random.default_rng(0).normal(0.0, 1.0, (N, T, D)).astype(np.float32)
    am = np.array([[[1, 0.7, 0], [0, 0, 0], [1, 0.3, 1]],      # row 1 fully masked
                   [[1, 1, 1], [0.7, 1, 0.3], [0.7, 0.7, 0.7]]], np.float32)
    qm = np.array([[1, 0.5, 0], [0.25, 1, 1]], np.float32)
    vm = np.array([[1, 0.5, 0], [0, 1, 1]], np.float32)
    return [x, am, qm, vm]


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _keras_softmax(s, m, minor, robust=False):
    """``Softmax(mask=m)`` of Keras 3.``minor`` (``m`` as the attention layer hands it over);
    ``robust``: tf-keras 2.21's ``robust_masking`` (no zeroing after the softmax)."""
    if robust:
        return _softmax(np.where(m if m.dtype == bool else m > 0.5, s, np.float32(-1e9)))
    if minor >= 13:
        keep = m if m.dtype == bool else m > 0.5
        return np.where(keep, _softmax(np.where(keep, s, np.float32(-1e9))), 0.0)
    mf = m.astype(np.float32)
    p = _softmax(s + (1.0 - mf) * np.float32(-1e9))
    return p * mf if minor >= 10 else p


def _heads(layer, x, am, minor, fused_eligible, grouped, robust=False):
    """MultiHeadAttention (``grouped=False``) or GroupedQueryAttention of Keras 3.``minor``
    (tf.keras 2 computes MultiHeadAttention as Keras 3.0-3.6 do: ``minor=0``)."""
    w = layer.get_weights()  # query, key, value, output: kernel, bias each
    q, k, v = (np.einsum("btd,dhk->bthk", x, w[i]) + w[i + 1] for i in (0, 2, 4))
    if grouped:
        reps = q.shape[2] // k.shape[2]
        k, v = np.repeat(k, reps, axis=2), np.repeat(v, reps, axis=2)
    s = np.einsum("bshk,bthk->bhts", k, q * np.float32(1.0 / np.sqrt(q.shape[-1])))
    if minor >= 7 and fused_eligible:  # ops.dot_product_attention
        p = _softmax(np.where(am[:, None] != 0, s, np.float32(-1e9)))
    else:
        m = am != 0 if (minor >= 7 and not grouped) else am  # MHA casts from 3.7
        p = _keras_softmax(s, m[:, None], minor, robust)
    o = np.einsum("bhts,bshk->bthk", p, v)
    return np.einsum("bthk,hkd->btd", o, w[6]) + w[7]


def _attention(x, qm, vm, version, causal=False):
    """``Attention()([x, x], mask=[qm, vm], use_causal_mask=causal)`` of Keras ``version``."""
    minor = int(version.split(".")[1])
    s = x @ np.swapaxes(x, -1, -2)
    keep = np.broadcast_to((vm != 0)[:, None, :], s.shape)
    if causal:  # 3.0.0-3.0.4 return the causal mask alone when there is a value mask
        tri = np.tril(np.ones(s.shape[-2:], bool))
        keep = tri if version in ("3.0.0", "3.0.1", "3.0.2", "3.0.3", "3.0.4") else keep & tri
    s = np.where(keep, s, s - np.float32(1e9))
    o = _softmax(s) @ x
    return o * qm[..., None] if minor < 15 else np.where(qm[..., None] != 0, o, 0.0)


@pytest.mark.parametrize("version", [None, "3.14.0", "3.12.4", "3.9.2", "3.0.4", "2.21.0"])
def test_attention_masks_follow_the_keras_version(tmp_path, version):
    """Fully masked rows and numeric masks in MultiHeadAttention, GroupedQueryAttention and
    Attention, as the Keras that wrote the file computed them (module docstring). "2.21.0":
    tf-keras 2.21 with ``MultiHeadAttention(softmax_robust_masking=True)`` (set in the
    config): its ``Softmax(robust_masking=True)`` keeps the entries ``> 0.5`` and zeroes
    nothing (tf_keras/layers/activation/softmax.py at v2.21.0); only the MultiHeadAttention
    outputs are compared (tf.keras has no GroupedQueryAttention, and its Attention refuses a
    numeric value mask: ``tf.logical_not`` of floats)."""
    model = _model()
    data = _data()
    x, am, qm, vm = data
    paths = save_keras_and_h5(model, tmp_path, "attmask")
    keras2 = version is not None and version.startswith("2.")
    minor = 15 if version is None else 0 if keras2 else int(version.split(".")[1])
    ref = [_heads(model.get_layer("mha"), x, am, minor, True, False, keras2),
           _heads(model.get_layer("mha_sm"), x, am, minor, False, False, keras2),
           _heads(model.get_layer("gqa"), x, am, minor, True, True),
           _heads(model.get_layer("gqa_sm"), x, am, minor, False, True),
           _attention(x, qm, vm, version or keras.__version__),
           _attention(x, qm, vm, version or keras.__version__, causal=True)]
    if version is None:  # the formulas above are Keras 3.15.1's
        assert keras.__version__.startswith("3.15")
        for a, b in zip(model.predict(data, verbose=0), ref):
            np.testing.assert_allclose(np.asarray(a), b, rtol=1e-5, atol=1e-6)
    else:
        relabel_h5(paths[".h5"], version,
                   ("MultiHeadAttention", "softmax_robust_masking") if keras2 else None)
        paths = {".h5": paths[".h5"]}
    names = ["mha", "mha_sm"] if keras2 else ["mha", "mha_sm", "gqa", "gqa_sm", "att",
                                              "att_causal"]
    for path in paths.values():
        got = load_keras(path)(data)
        for name, a, b in zip(names, got, ref):
            np.testing.assert_allclose(np.asarray(a), b, rtol=1e-5, atol=1e-6, err_msg=name)
