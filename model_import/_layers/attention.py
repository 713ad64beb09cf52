"""Attention layers: EinsumDense, MultiHeadAttention, GroupedQueryAttention, Attention (Luong)
and AdditiveAttention (Bahdanau), with Keras's masks.

MultiHeadAttention follows Keras 3: the projections are EinsumDense kernels
``(features, heads, key_dim)``; the attention mask is the AND of an explicit
``attention_mask``, the query mask ``(N, T, 1)``, the value and key masks ``(N, 1, S)``, the
causal mask and the sliding window. Keras computes it in one of two ways that differ where a
whole row is masked (a masked query step) and for a numeric ``attention_mask``: Keras 3.7+'s
fused dot-product attention (3-D inputs without dropout or returned scores) leaves such a row
uniform, its ``Softmax`` path (dropout set, scores returned, inputs of rank 4+, and every call
of tf.keras 2 and Keras 3.0-3.6) masks as the file's Keras's ``Softmax`` layer does
(:func:`~model_import._layers.masking.softmax_mask_rule`). Both are reproduced
(:func:`_attention_softmax`).
"""

from __future__ import annotations

import math
import re
import string
from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from model_import._errors import KerasImportError
from model_import._layers.masking import LARGE_NEGATIVE, softmax_mask_rule
from model_import._layers.registry import LayerImpl, register_layer
from model_import._version import parse_version

Array = jax.Array


# ---------------------------------------------------------------------- EinsumDense
def _bias_shape(equation: str, bias_axes: str, ndim: int, out_shape: Sequence[int]) -> list:
    """The shape that broadcasts an EinsumDense bias (one entry per bias axis, in output
    order) against an output of rank ``ndim``."""
    spec = equation.split("->")[1].strip()
    letters = spec.replace("...", "")
    if spec.startswith("..."):
        pos = {c: ndim - len(letters) + i for i, c in enumerate(letters)}
    else:
        pos = {c: i for i, c in enumerate(letters)}
    shape = [1] * ndim
    for c in bias_axes:
        shape[pos[c]] = out_shape[pos[c]]
    return shape


@register_layer("EinsumDense")
def _einsum_dense(config, ctx):
    """``einsum(equation, x, kernel) + bias`` (bias on ``bias_axes`` of the output)."""
    if config.get("quantization_config"):
        raise ctx.error("quantized EinsumDense layers are not supported; save the model "
                        "with plain float weights")
    equation = str(config["equation"])
    bias_axes = config.get("bias_axes") or ""

    def call(params, x, *, rt):
        y = jnp.einsum(equation, x, params["kernel"])
        if bias_axes:
            y = y + params["bias"].reshape(_bias_shape(equation, bias_axes, y.ndim, y.shape))
        return y

    names = ("kernel", "bias") if bias_axes else ("kernel",)
    return LayerImpl(call=call, activation=config.get("activation"),
                     convert_weights=lambda w: dict(zip(names, w)), n_weights=len(names),
                     affine=bool(bias_axes), relevance=True)


# ---------------------------------------------------------------------- MultiHeadAttention
def _projection_weights(parts: Sequence[str], use_bias: bool):
    """Weight conversion of an attention layer made of EinsumDense projections ``parts``
    (in ``layer.weights`` order): ``[kernel, bias?] * len(parts)`` ->
    ``{"<part>_kernel": ..., "<part>_bias": ...}``."""
    per = 2 if use_bias else 1

    def convert(w):
        out = {}
        for i, name in enumerate(parts):
            out[f"{name}_kernel"] = w[i * per]
            if use_bias:
                out[f"{name}_bias"] = w[i * per + 1]
        return out

    return convert


def _project(params: Mapping[str, Array], name: str, x: Array, use_bias: bool) -> Array:
    """A head projection ``(N, T, D) x (D, heads, dim) -> (N, T, heads, dim)`` (Keras's
    EinsumDense ``"abc,cde->abde"``, bias ``(heads, dim)``)."""
    y = jnp.tensordot(x, params[f"{name}_kernel"], axes=1)
    return y + params[f"{name}_bias"] if use_bias else y


def _attention_equations(rank: int, attn_axes: tuple[int, ...]) -> tuple[str, str]:
    """Einsum equations over projected tensors ``(N, <other axes>, <attention axes>, heads,
    channels)`` of rank ``rank``: ``key, query -> scores`` with scores
    ``(<batch axes incl. heads>, <query attention axes>, <key attention axes>)``, and
    ``scores, value -> output`` shaped like the query."""
    letters = string.ascii_lowercase
    query = letters[:rank]
    extra = iter(letters[rank:])
    key = "".join(next(extra) if i in attn_axes else query[i] for i in range(rank))
    batch = [i for i in range(rank) if i not in attn_axes and i != rank - 1]
    scores = ("".join(query[i] for i in batch) + "".join(query[i] for i in attn_axes)
              + "".join(key[i] for i in attn_axes))
    return f"{key},{query}->{scores}", f"{scores},{key}->{query}"


def _call_tensors(args: Sequence, query, value, key) -> tuple:
    """``(query, value, key, key given?)`` of an attention call ``(query, value, key=None)``
    whose tensors come positionally or by keyword; without a key, the value serves as key."""
    pos = list(args) + [None] * 3
    query = pos[0] if query is None else query
    value = pos[1] if value is None else value
    key_given = key is not None or pos[2] is not None
    key = (pos[2] if key is None else key) if key_given else value
    return query, value, key, key_given


def _as_mask(m) -> Array:
    """A Keras mask as booleans: a boolean array as is, numbers as ``!= 0`` (``ops.cast``)."""
    m = jnp.asarray(m)
    return m if m.dtype == jnp.bool_ else m != 0


def _and(*masks):
    """The AND of the masks that are not ``None`` (``None`` if all are)."""
    out = None
    for m in masks:
        if m is not None:
            out = m if out is None else jnp.logical_and(out, m)
    return out


def _derived_mask(q_mask, kv_masks, t_len: int, s_len: int, causal: bool, window):
    """The mask an attention layer derives itself: the query's ``(N, T, 1)`` AND the
    value's/key's ``(N, 1, S)`` AND the causal lower triangle (from the top left) AND the
    sliding window ``|i - j| < window``; ``None`` when there is none of them."""
    parts = [None if q_mask is None else _as_mask(q_mask)[..., None]]
    parts += [None if m is None else jnp.expand_dims(_as_mask(m), -2) for m in kv_masks]
    if causal:
        parts.append(jnp.tril(jnp.ones((t_len, s_len), bool))[None])
    if window is not None:
        i = jnp.arange(t_len)[:, None]
        j = jnp.arange(s_len)[None, :]
        parts.append((jnp.abs(i - j) < int(window))[None])
    return _and(*parts)


def _fused_attention_in(version: str) -> bool:
    """Whether ``MultiHeadAttention``/``GroupedQueryAttention`` of the Keras that wrote the
    file call the fused ``ops.dot_product_attention`` for 3-D inputs without dropout or
    returned scores: Keras 3.7 and later; Keras 3.0-3.6 and tf.keras 2 always call their
    ``Softmax`` layer. An ``attention_mask`` that is the only mask is cast to booleans on the
    fused path and, from 3.7 on, by MultiHeadAttention on both paths; otherwise it reaches
    the ``Softmax`` layer as given."""
    v = parse_version(version)
    return v.major >= 3 and not v.before(3, 7, unrecorded=False)


def _attention_softmax(scores: Array, mask, axis, rule: str, rt) -> Array:
    """Softmax of ``scores`` over ``axis`` under ``mask`` (broadcast to ``scores``), as the
    attention layer of the Keras that wrote the file computes it.

    ``rule``: ``"fused"``, Keras 3.7+'s ``dot_product_attention``: the mask as booleans
    (``!= 0``), masked scores set to a large negative number, so a fully masked row stays a
    uniform softmax. Otherwise a :func:`~model_import._layers.masking.softmax_mask_rule` of
    the ``Softmax`` layer the attention calls, on the mask as the layer hands it over
    (booleans, or a numeric ``attention_mask`` as given): ``"additive"`` (tf.keras 2, Keras
    3.0-3.9) adds ``(1 - mask) * -1e9`` (a fully masked row stays a softmax of the shifted
    scores), ``"additive_zeroed"`` (Keras 3.10-3.12) also multiplies the probabilities by
    the mask (a fully masked row is 0; a fractional mask scales them), ``"above_half"``
    (Keras 3.13+) keeps the entries that are true or ``> 0.5`` and zeroes the others,
    ``"above_half_kept"`` (tf-keras 2.21's ``softmax_robust_masking``) keeps them and
    zeroes nothing (a fully masked row stays uniform)."""
    if mask is None:
        return rt.softmax_of(scores, axis)
    mask = jnp.asarray(mask)
    if rule in ("fused", "above_half", "above_half_kept"):
        keep = (_as_mask(mask) if rule == "fused" or mask.dtype == jnp.bool_
                else mask > 0.5)
        probs = rt.softmax_of(jnp.where(keep, scores, LARGE_NEGATIVE), axis)
        return jnp.where(keep, probs, 0.0) if rule == "above_half" else probs
    m = mask.astype(scores.dtype)
    probs = rt.softmax_of(scores + (1.0 - m) * LARGE_NEGATIVE, axis)
    return probs * m if rule == "additive_zeroed" else probs


def _times(a: Array, g: Array) -> Array:
    """``a * g``: attended heads times their gate (both ``(N, T, heads, dim)``)."""
    return a * g


def _attention_output(params, out: Array, query: Array, use_gate: bool,
                      use_bias: bool, rt) -> Array:
    """The attended heads ``(N, T, heads, dim)`` gated (``use_gate``: times the sigmoid of the
    query's gate projection) and projected back, ``output_kernel (heads, dim, D)``.

    The sigmoid is an activation (``rt.act``) and the gate a value weighing the heads, like
    attention probabilities (``rt.held``: ``jaxsal.lrp`` holds it, so the layer stays linear
    in its values and conserves relevance); their product is an elementwise function of two
    tensors (``rt.pair``: ``jaxsal.deeplift``'s two-player rule)."""
    if use_gate:
        gate = rt.held(rt.act(jax.nn.sigmoid, _project(params, "gate", query, use_bias)))
        out = rt.pair(_times, out, gate)
    y = jnp.tensordot(out, params["output_kernel"], axes=2)
    return y + params["output_bias"] if use_bias else y


@register_layer("MultiHeadAttention")
def _multi_head_attention(config, ctx):
    """Keras's ``MultiHeadAttention(query, value, key=None, attention_mask=None, ...)``.

    Shapes: query ``(N, T..., Dq)``, value ``(N, S..., Dv)``, key ``(N, S..., Dk)`` ->
    ``(N, T..., output_shape or Dq)``.
    """
    key_dim = int(config["key_dim"])
    use_bias = bool(config.get("use_bias", True))
    use_gate = bool(config.get("use_gate", False))
    dropout = float(config.get("dropout", 0.0) or 0.0)
    window = config.get("sliding_window")
    axes_cfg = config.get("attention_axes")
    if isinstance(axes_cfg, int):
        axes_cfg = (axes_cfg,)
    scale = 1.0 / math.sqrt(float(key_dim))
    parts = ["query", "key"] + (["gate"] if use_gate else []) + ["value", "output"]
    per = 2 if use_bias else 1
    convert = _projection_weights(parts, use_bias)
    fused_in_keras = _fused_attention_in(ctx.keras_version)
    softmax_rule = softmax_mask_rule(ctx.keras_version,
                                     bool(config.get("softmax_robust_masking", False)))

    def project(params, name, x):
        return _project(params, name, x, use_bias)

    def call(params, *args, rt, masks=None, query=None, value=None, key=None,
             query_mask=None, value_mask=None, key_mask=None, attention_mask=None,
             return_attention_scores=False, use_causal_mask=False, training=None):
        masks = masks or {}
        query, value, key, key_given = _call_tensors(args, query, value, key)
        # Keras reads the query's mask from the tensor; value/key masks from arguments first.
        q_mask = masks.get(0, masks.get("query"))
        v_mask = value_mask if value_mask is not None else masks.get(1, masks.get("value"))
        k_mask = key_mask if key_mask is not None else (
            masks.get(2, masks.get("key")) if key_given else v_mask)
        q = project(params, "query", query)
        k = project(params, "key", key)
        v = project(params, "value", value)
        rank = q.ndim
        attn_axes = (tuple(range(1, rank - 2)) if axes_cfg is None else
                     tuple(a if a >= 0 else rank - 1 + a for a in axes_cfg))
        n_attn = len(attn_axes)
        t_shape = tuple(q.shape[a] for a in attn_axes)
        s_shape = tuple(k.shape[a] for a in attn_axes)
        if use_causal_mask and n_attn != 1:
            raise ValueError("use_causal_mask needs a single attention axis")
        derived = _derived_mask(q_mask, (v_mask, k_mask), t_shape[0], s_shape[0],
                                use_causal_mask, window)
        if attention_mask is not None and (derived is not None or fused_in_keras):
            attention_mask = _as_mask(attention_mask)
        mask = _and(attention_mask, derived)  # a lone attention_mask as given before 3.7
        dot_eq, combine_eq = _attention_equations(rank, attn_axes)
        scores = rt.product_of(lambda a, b: jnp.einsum(dot_eq, a, b), k, q * scale)
        norm = tuple(range(scores.ndim - n_attn, scores.ndim))
        if mask is not None:
            while mask.ndim < scores.ndim:
                mask = jnp.expand_dims(mask, -2 * n_attn - 1)
        fused = fused_in_keras and not (dropout > 0.0 or return_attention_scores or rank != 4)
        probs = rt.held(_attention_softmax(scores, mask, norm,
                                           "fused" if fused else softmax_rule, rt))
        attended = rt.product_of(lambda a, b: jnp.einsum(combine_eq, a, b), probs, v)
        y = _attention_output(params, attended, query, use_gate, use_bias, rt)
        return (y, probs) if return_attention_scores else y

    # .keras groups are named after the attributes: in Keras 3 public properties for
    # query/key/value/output, the private `_gate_dense` for the gate; tf.keras 2's archive
    # (2.13+) uses its private attributes (`_query_dense`...).
    private = ctx.keras_major < 3
    groups = tuple(f"_{p}_dense" if (p == "gate" or private) else f"{p}_dense" for p in parts)
    if parse_version(ctx.keras_version).before(2, 10, unrecorded=True):
        # tf.keras before 2.10 did not read the inputs' Keras masks in MultiHeadAttention,
        # and its output had no mask (the layer did not support masking; checked with TF 2.4
        # and 2.8 files in tests/test_import_keras2_tf2x.py).
        return LayerImpl(call=call, convert_weights=convert, n_weights=per * len(parts),
                         compute_mask="drop", weight_groups=groups, relevance=True)
    return LayerImpl(call=call, convert_weights=convert, n_weights=per * len(parts),
                     mask_call="arguments", compute_mask="propagate", weight_groups=groups,
                     clears_input_masks=ctx.keras_major >= 3, relevance=True)


# ---------------------------------------------------------------------- GroupedQueryAttention
#: GroupedQueryAttention config keys of Keras 3.15 (and the base layer's); any other key
#: with a value other than None/False/0 is refused rather than silently ignored.
_GQA_KEYS = frozenset({
    "name", "trainable", "dtype", "head_dim", "num_query_heads", "num_key_value_heads",
    "use_bias", "use_gate", "sliding_window", "dropout", "flash_attention", "seed",
    "kernel_initializer", "bias_initializer", "kernel_regularizer", "bias_regularizer",
    "activity_regularizer", "kernel_constraint", "bias_constraint",
})


def _positive_int(config, key, ctx) -> int:
    v = config.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or int(v) != v or v < 1:
        raise ctx.error(f"expected a positive integer {key}, got {v!r}")
    return int(v)


@register_layer("GroupQueryAttention", "GroupedQueryAttention")
def _grouped_query_attention(config, ctx):
    """Keras 3's ``GroupedQueryAttention``, exported as ``keras.layers.GroupQueryAttention``:
    ``.keras`` configs and ``to_json()`` record ``GroupQueryAttention``, legacy ``.h5`` configs
    the Python class name ``GroupedQueryAttention`` (and ``.keras`` weights files key it
    ``grouped_query_attention``).
    ``call(query (N, T, D), value (N, S, Dv), key=None (N, S, Dk), query_mask, value_mask,
    key_mask, attention_mask, return_attention_scores, use_causal_mask) -> (N, T, D)``
    (and scores ``(N, num_query_heads, T, S)``).

    The EinsumDense projections are kernels ``query (D, U, H)``, ``key (Dk, V, H)``,
    ``gate (D, U, H)`` (``use_gate``: sigmoid), ``value (Dv, V, H)``, ``attention_output
    (U, H, D)`` with biases ``(U, H)``, ``(V, H)`` and ``(D,)``, in that order (``layer.weights``,
    the legacy ``.h5`` ``weight_names``; ``.keras`` groups ``_query_dense``, ``_key_dense``,
    ``_gate_dense``, ``_value_dense``, ``_output_dense``). Key and value heads are repeated
    (``repeat``, not ``tile``: key head ``j`` serves query heads ``j*r .. j*r+r-1``,
    ``r = U // V``); scores are ``q k / sqrt(H)``.

    Masks, as Keras 3.15: ``Layer.__call__`` fills ``query_mask``/``value_mask``/``key_mask``
    (when not passed) from the Keras masks of the query, value and (only when given) key
    tensors; the attention mask is their AND with ``attention_mask``, the causal mask (a
    lower triangle from the top left) and the ``sliding_window`` band ``|i - j| < window``.
    Without dropout or returned scores Keras 3.7+ use their fused ``dot_product_attention``
    (the mask counts where non-zero; a fully masked query row stays uniform); otherwise, and
    always in Keras 3.0-3.6, the ``Softmax`` layer, under the file's Keras version's rule
    (:func:`_attention_softmax`: a fully masked row is 0 from Keras 3.10, a softmax of the
    shifted scores before), which receives an ``attention_mask`` that is the only mask as
    given (3.13+: a number counts where ``> 0.5``; before: ``(1 - mask) * -1e9`` is added),
    and any other mask as booleans (non-zero). Unlike MultiHeadAttention, the layer leaves
    its inputs' masks in place; its output carries the query's mask.
    """
    unknown = sorted(k for k in config if k not in _GQA_KEYS
                     and config[k] not in (None, False, 0, 0.0, "", [], {}))
    if unknown:
        raise ctx.error(
            "unsupported GroupQueryAttention option(s) "
            + ", ".join(f"{k}={config[k]!r}" for k in unknown)
            + "; expected only the options of Keras 3.15's GroupedQueryAttention "
            f"({', '.join(sorted(_GQA_KEYS - {'name', 'trainable', 'dtype'}))}), others at "
            "their defaults (None/False/0). Re-save the model without them, or override the "
            "built-in converter (register_layer(..., override=True))")
    head_dim = _positive_int(config, "head_dim", ctx)
    n_q = _positive_int(config, "num_query_heads", ctx)
    n_kv = _positive_int(config, "num_key_value_heads", ctx)
    if n_q % n_kv:
        raise ctx.error(f"num_query_heads ({n_q}) must be a multiple of num_key_value_heads "
                        f"({n_kv}), as Keras requires; got a config Keras cannot build")
    repeats = n_q // n_kv
    use_bias = bool(config.get("use_bias", True))
    use_gate = bool(config.get("use_gate", False))
    dropout = float(config.get("dropout", 0.0) or 0.0)
    window = config.get("sliding_window")
    if window is not None:
        window = _positive_int(config, "sliding_window", ctx)
    scale = 1.0 / math.sqrt(float(head_dim))
    parts = ["query", "key"] + (["gate"] if use_gate else []) + ["value", "output"]
    per = 2 if use_bias else 1
    n_weights = per * len(parts)
    to_params = _projection_weights(parts, use_bias)
    fused_in_keras = _fused_attention_in(ctx.keras_version)
    softmax_rule = softmax_mask_rule(ctx.keras_version)

    def convert(w):
        if len(w) == n_weights:
            return to_params(w)
        shapes = [tuple(np.shape(a)) for a in w]
        if any(not np.issubdtype(np.asarray(a).dtype, np.floating) for a in w):
            raise ctx.error(
                f"its weights include integer arrays ({len(w)} arrays, shapes {shapes}): a "
                "quantized model (model.quantize(...)); expected float kernels. Load the model "
                "saved before quantization")
        raise KerasImportError(
            f"layer {ctx.layer_name!r} ({ctx.class_name}): expected {n_weights} weight arrays "
            f"({', '.join(parts)}: kernel{' and bias' if use_bias else ''} each, as its config "
            f"says), the file has {len(w)} (shapes {shapes}); the weights belong to another "
            "architecture (load them with the config they were saved with)", path=ctx.path)

    def call(params, *args, rt, masks=None, query=None, value=None, key=None,
             query_mask=None, value_mask=None, key_mask=None, attention_mask=None,
             return_attention_scores=False, use_causal_mask=False, training=None):
        masks = masks or {}
        query, value, key, key_given = _call_tensors(args, query, value, key)
        # Layer.__call__ fills each <arg>_mask that the call did not pass from the tensor.
        if query_mask is None:
            query_mask = masks.get(0, masks.get("query"))
        if value_mask is None:
            value_mask = masks.get(1, masks.get("value"))
        if key_mask is None and key_given:
            key_mask = masks.get(2, masks.get("key"))
        q = _project(params, "query", query, use_bias)            # (N, T, U, H)
        k = jnp.repeat(_project(params, "key", key, use_bias), repeats, axis=2)
        v = jnp.repeat(_project(params, "value", value, use_bias), repeats, axis=2)
        t_len, s_len = q.shape[1], k.shape[1]
        fused = fused_in_keras and not (dropout > 0.0 or return_attention_scores)
        derived = _derived_mask(query_mask, (value_mask, key_mask), t_len, s_len,
                                use_causal_mask, window)
        if attention_mask is not None and (derived is not None or fused):
            attention_mask = _as_mask(attention_mask)
        mask = _and(attention_mask, derived)  # a lone attention_mask as given to Softmax
        scores = rt.product_of(lambda a, b: jnp.einsum("btuh,bsuh->buts", a, b), q * scale,
                               k)
        if mask is not None:
            while mask.ndim < 4:
                mask = jnp.expand_dims(mask, -3)
        probs = rt.held(_attention_softmax(scores, mask, -1,
                                           "fused" if fused else softmax_rule, rt))
        attended = rt.product_of(lambda a, b: jnp.einsum("buts,bsuh->btuh", a, b), probs, v)
        y = _attention_output(params, attended, query, use_gate, use_bias, rt)
        return (y, probs) if return_attention_scores else y

    shapes = {"query_kernel": (None, n_q, head_dim), "key_kernel": (None, n_kv, head_dim),
              "value_kernel": (None, n_kv, head_dim), "output_kernel": (n_q, head_dim, None)}
    if use_gate:
        shapes["gate_kernel"] = (None, n_q, head_dim)
    if use_bias:
        shapes.update({f"{p}_bias": (n_kv if p in ("key", "value") else n_q, head_dim)
                       for p in parts if p != "output"})
        shapes["output_bias"] = (None,)
    return LayerImpl(call=call, convert_weights=convert, n_weights=None,
                     mask_call="arguments", compute_mask="propagate",
                     weight_groups=tuple(f"_{p}_dense" for p in parts), param_shapes=shapes,
                     relevance=True)


# ---------------------------------------------------------------------- Attention layers
def _query_mask_multiplies(version: str) -> bool:
    """Whether ``Attention``/``AdditiveAttention`` of the Keras that wrote the file multiply
    their output by the query mask cast to floats (tf.keras 2, Keras 3.0-3.14: a numeric
    mask scales the output) rather than keep it where the mask is non-zero (Keras 3.15+,
    ``ops.where``). The two differ only for masks that are neither 0 nor 1."""
    v = parse_version(version)
    return v.major < 3 or v.before(3, 15, unrecorded=False)


def _causal_drops_value_mask(version: str) -> bool:
    """Whether the file's Keras is 3.0.0-3.0.4, whose ``Attention._calculate_score_mask``
    returns the causal mask alone when a value mask is given (inverted test, fixed in 3.0.5
    by keras-team/keras#19093): with ``use_causal_mask`` the value mask is ignored there."""
    m = re.match(r"3\.0\.(\d+)", str(version).strip())
    return m is not None and int(m[1]) <= 4


def _dot_attention(scores: Array, value: Array, q_mask, v_mask, causal: bool,
                   multiply_query_mask: bool, rt) -> tuple[Array, Array]:
    """Masked softmax of ``scores (N, T, S)`` applied to ``value (N, S, D)``, as Keras's
    Attention/AdditiveAttention compute it (every version): masked keys (value mask ``== 0``,
    or above the diagonal when ``causal``) get ``score - 1e9``, so a fully masked row stays a
    softmax of the shifted scores; the output at a masked query step is 0. A numeric query
    mask multiplies the output where ``multiply_query_mask`` (tf.keras 2, Keras <= 3.14),
    else counts where non-zero. Not followed: Keras 3.0.5-3.11 subtract the non-causal value
    mask ``(N, S)`` from the scores ``(N, T, S)`` unexpanded (keras-team/keras#21595), which
    fails for ``N > 1`` unless ``N == T``, and then masks row ``t`` by example ``t``'s mask."""
    mask = None if v_mask is None else jnp.expand_dims(v_mask.astype(bool), -2)
    if causal:
        tri = jnp.tril(jnp.ones(scores.shape[-2:], bool))[None]
        mask = tri if mask is None else jnp.logical_and(mask, tri)
    if mask is not None:
        scores = jnp.where(mask, scores, scores - 1e9)
    weights = rt.held(rt.softmax_of(scores, -1))
    out = rt.product_of(jnp.matmul, weights, value)
    if q_mask is not None:
        q_mask = jnp.asarray(q_mask)[..., None]
        if multiply_query_mask and q_mask.dtype != jnp.bool_:
            out = out * q_mask.astype(out.dtype)
        else:
            out = jnp.where(q_mask.astype(bool), out, 0.0)
    return out, weights


def _attention_layer(config, ctx, additive: bool) -> LayerImpl:
    use_scale = bool(config.get("use_scale", additive))
    score_mode = "additive" if additive else config.get("score_mode", "dot")
    if score_mode not in ("dot", "concat", "additive"):
        raise ctx.error(f"unknown score_mode {score_mode!r}; expected 'dot' or 'concat'")
    causal_cfg = bool(config.get("causal", False))  # tf.keras < 2.10 spelled it so
    multiply_query_mask = _query_mask_multiplies(ctx.keras_version)
    causal_drops_value_mask = _causal_drops_value_mask(ctx.keras_version)
    names = (["scale"] if use_scale else []) + (["concat_score_weight"]
                                                 if score_mode == "concat" else [])

    def scores_of(params, q, k, rt):
        if score_mode == "dot":
            s = rt.product_of(lambda a, b: a @ jnp.swapaxes(b, -1, -2), q, k)
            return s * params["scale"] if use_scale else s
        pair = q[..., :, None, :] + k[..., None, :, :]
        if score_mode == "additive":
            t = rt.act(jnp.tanh, pair)
            return jnp.sum(params["scale"] * t if use_scale else t, axis=-1)
        t = rt.act(jnp.tanh, params["scale"] * pair if use_scale else pair)
        return params["concat_score_weight"] * jnp.sum(t, axis=-1)

    def call(params, inputs, *, rt, mask=None, use_causal_mask=False,
             return_attention_scores=False, training=None):
        if not isinstance(inputs, (list, tuple)) or len(inputs) not in (2, 3):
            got = (f"a list of {len(inputs)} tensors" if isinstance(inputs, (list, tuple))
                   else f"one tensor of shape {tuple(getattr(inputs, 'shape', ()))}")
            raise ValueError(
                f"expected a list [query, value] or [query, value, key] of (N, T, D) tensors, "
                f"got {got}; call the layer on such a list, as Keras requires (self-attention: "
                "layer([x, x]))")
        q, v = inputs[0], inputs[1]
        k = inputs[2] if len(inputs) > 2 else v
        q_mask = mask[0] if mask else None
        v_mask = mask[1] if mask else None
        causal = bool(use_causal_mask) or causal_cfg
        if causal and causal_drops_value_mask:
            v_mask = None
        out, weights = _dot_attention(scores_of(params, q, k, rt), v, q_mask, v_mask, causal,
                                      multiply_query_mask, rt)
        return (out, weights) if return_attention_scores else out

    def compute_mask(mask, *args, **kwargs):
        if not mask or mask[0] is None:
            return None
        return mask[0]

    return LayerImpl(call=call, convert_weights=lambda w: dict(zip(names, w)),
                     n_weights=len(names), mask_call=True, compute_mask=compute_mask,
                     relevance=True)


@register_layer("Attention")
def _attention(config, ctx):
    """Luong attention on ``[query (N, T, D), value (N, S, D), key?]``: scores
    ``q k^T`` (times ``scale`` with ``use_scale``), or ``score_mode="concat"``:
    ``w * sum(tanh(scale * (q + k)))``."""
    return _attention_layer(config, ctx, additive=False)


@register_layer("AdditiveAttention")
def _additive_attention(config, ctx):
    """Bahdanau attention: scores ``sum(scale * tanh(q + k), -1)``, ``scale (D,)``."""
    return _attention_layer(config, ctx, additive=True)
