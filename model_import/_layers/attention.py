"""Attention layers: EinsumDense, MultiHeadAttention, Attention (Luong) and AdditiveAttention
(Bahdanau), with Keras's masks.

MultiHeadAttention follows Keras 3: the projections are EinsumDense kernels
``(features, heads, key_dim)``; the attention mask is the AND of an explicit
``attention_mask``, the query mask ``(N, T, 1)``, the value and key masks ``(N, 1, S)``, the
causal mask and the sliding window. Keras computes it in one of two ways that differ only
where a whole row is masked (a masked query step): its fused dot-product attention (3-D
inputs without dropout or returned scores) leaves such a row uniform, its ``Softmax`` path
(dropout set, scores returned, or inputs of rank 4+) zeroes it. Both are reproduced.
"""

from __future__ import annotations

import math
import string
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from model_import._layers.masking import LARGE_NEGATIVE
from model_import._layers.registry import LayerImpl, register_layer

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
    if config.get("quantization_config") or config.get("lora_rank"):
        raise ctx.error("quantized or LoRA EinsumDense layers are not supported")
    equation = str(config["equation"])
    bias_axes = config.get("bias_axes") or ""

    def call(params, x, *, rt):
        y = jnp.einsum(equation, x, params["kernel"])
        if bias_axes:
            y = y + params["bias"].reshape(_bias_shape(equation, bias_axes, y.ndim, y.shape))
        return y

    names = ("kernel", "bias") if bias_axes else ("kernel",)
    return LayerImpl(call=call, activation=config.get("activation"),
                     convert_weights=lambda w: dict(zip(names, w)), n_weights=len(names))


# ---------------------------------------------------------------------- MultiHeadAttention
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


@register_layer("MultiHeadAttention")
def _multi_head_attention(config, ctx):
    """Keras's ``MultiHeadAttention(query, value, key=None, attention_mask=None, ...)``.

    Shapes: query ``(N, T..., Dq)``, value ``(N, S..., Dv)``, key ``(N, S..., Dk)`` ->
    ``(N, T..., output_shape or Dq)``.
    """
    heads = int(config["num_heads"])
    key_dim = int(config["key_dim"])
    value_dim = int(config.get("value_dim") or key_dim)
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

    def convert(w):
        out = {}
        for i, name in enumerate(parts):
            out[f"{name}_kernel"] = w[i * per]
            if use_bias:
                out[f"{name}_bias"] = w[i * per + 1]
        return out

    def project(params, name, x):
        y = jnp.tensordot(x, params[f"{name}_kernel"], axes=1)
        return y + params[f"{name}_bias"] if use_bias else y

    def call(params, *args, rt, masks=None, query=None, value=None, key=None,
             query_mask=None, value_mask=None, key_mask=None, attention_mask=None,
             return_attention_scores=False, use_causal_mask=False, training=None):
        masks = masks or {}
        pos = list(args) + [None] * 3
        query = pos[0] if query is None else query
        value = pos[1] if value is None else value
        key_given = key is not None or len(args) > 2
        key = (pos[2] if key is None else key) if key_given else value
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
        auto = []
        if q_mask is not None:
            auto.append(q_mask.astype(bool)[..., None])
        for m in (v_mask, k_mask):
            if m is not None:
                auto.append(jnp.expand_dims(m.astype(bool), -2))
        if use_causal_mask:
            if n_attn != 1:
                raise ValueError("use_causal_mask needs a single attention axis")
            auto.append(jnp.tril(jnp.ones((t_shape[0], s_shape[0]), bool))[None])
        if window is not None:
            i = jnp.arange(t_shape[0])[:, None]
            j = jnp.arange(s_shape[0])[None, :]
            auto.append((jnp.abs(i - j) < int(window))[None])
        mask = None if attention_mask is None else jnp.asarray(attention_mask).astype(bool)
        for m in auto:
            mask = m if mask is None else jnp.logical_and(mask, m)
        dot_eq, combine_eq = _attention_equations(rank, attn_axes)
        scores = jnp.einsum(dot_eq, k, q * scale)
        norm = tuple(range(scores.ndim - n_attn, scores.ndim))
        if mask is not None:
            while mask.ndim < scores.ndim:
                mask = jnp.expand_dims(mask, -2 * n_attn - 1)
        fused = not (dropout > 0.0 or return_attention_scores or rank != 4)
        if mask is None:
            probs = jax.nn.softmax(scores, axis=norm)
        elif fused or ctx.keras_major < 3:  # dot_product_attention / tf.keras's Softmax
            probs = jax.nn.softmax(jnp.where(mask, scores, LARGE_NEGATIVE), axis=norm)
        else:  # Keras's Softmax layer with a mask: masked probabilities are 0
            probs = jax.nn.softmax(jnp.where(mask, scores, LARGE_NEGATIVE), axis=norm)
            probs = jnp.where(mask, probs, 0.0)
        out = jnp.einsum(combine_eq, probs, v)
        if use_gate:
            out = out * jax.nn.sigmoid(project(params, "gate", query))
        y = jnp.tensordot(out, params["output_kernel"], axes=2)
        if use_bias:
            y = y + params["output_bias"]
        return (y, probs) if return_attention_scores else y

    # .keras groups are named after the attributes: in Keras 3 public properties for
    # query/key/value/output, the private `_gate_dense` for the gate; tf.keras 2's archive
    # (2.13+) uses its private attributes (`_query_dense`...).
    private = ctx.keras_major < 3
    groups = tuple(f"_{p}_dense" if (p == "gate" or private) else f"{p}_dense" for p in parts)
    if ctx.keras_major < 3 and _version(ctx.keras_version) < (2, 10):
        # tf.keras before 2.10 did not read the inputs' Keras masks in MultiHeadAttention.
        return LayerImpl(call=call, convert_weights=convert, n_weights=per * len(parts),
                         compute_mask="propagate", weight_groups=groups)
    return LayerImpl(call=call, convert_weights=convert, n_weights=per * len(parts),
                     mask_call="arguments", compute_mask="propagate", weight_groups=groups,
                     clears_input_masks=ctx.keras_major >= 3)


def _version(v: str) -> tuple[int, ...]:
    out = []
    for part in str(v).split(".")[:2]:
        digits = "".join(ch for ch in part if ch.isdigit())
        out.append(int(digits) if digits else 0)
    return tuple(out)


# ---------------------------------------------------------------------- Attention layers
def _dot_attention(scores: Array, value: Array, q_mask, v_mask, causal: bool
                   ) -> tuple[Array, Array]:
    """Masked softmax of ``scores (N, T, S)`` applied to ``value (N, S, D)``: masked keys
    get ``score - 1e9``, masked queries a zero output (Keras's Attention/AdditiveAttention)."""
    mask = None if v_mask is None else jnp.expand_dims(v_mask.astype(bool), -2)
    if causal:
        tri = jnp.tril(jnp.ones(scores.shape[-2:], bool))[None]
        mask = tri if mask is None else jnp.logical_and(mask, tri)
    if mask is not None:
        scores = jnp.where(mask, scores, scores - 1e9)
    weights = jax.nn.softmax(scores, axis=-1)
    out = weights @ value
    if q_mask is not None:
        out = jnp.where(q_mask.astype(bool)[..., None], out, 0.0)
    return out, weights


def _attention_layer(config, ctx, additive: bool) -> LayerImpl:
    use_scale = bool(config.get("use_scale", additive))
    score_mode = "additive" if additive else config.get("score_mode", "dot")
    if score_mode not in ("dot", "concat", "additive"):
        raise ctx.error(f"unknown score_mode {score_mode!r}; expected 'dot' or 'concat'")
    causal_cfg = bool(config.get("causal", False))  # tf.keras < 2.10 spelled it so
    names = (["scale"] if use_scale else []) + (["concat_score_weight"]
                                                 if score_mode == "concat" else [])

    def scores_of(params, q, k):
        if score_mode == "dot":
            s = q @ jnp.swapaxes(k, -1, -2)
            return s * params["scale"] if use_scale else s
        pair = q[..., :, None, :] + k[..., None, :, :]
        if score_mode == "additive":
            t = jnp.tanh(pair)
            return jnp.sum(params["scale"] * t if use_scale else t, axis=-1)
        t = jnp.tanh(params["scale"] * pair if use_scale else pair)
        return params["concat_score_weight"] * jnp.sum(t, axis=-1)

    def call(params, inputs, *, rt, mask=None, use_causal_mask=False,
             return_attention_scores=False, training=None):
        if not isinstance(inputs, (list, tuple)) or len(inputs) not in (2, 3):
            raise ValueError("expected [query, value] or [query, value, key]")
        q, v = inputs[0], inputs[1]
        k = inputs[2] if len(inputs) > 2 else v
        q_mask = mask[0] if mask else None
        v_mask = mask[1] if mask else None
        out, weights = _dot_attention(scores_of(params, q, k), v, q_mask, v_mask,
                                      bool(use_causal_mask) or causal_cfg)
        return (out, weights) if return_attention_scores else out

    def compute_mask(mask, *args, **kwargs):
        if not mask or mask[0] is None:
            return None
        return mask[0]

    return LayerImpl(call=call, convert_weights=lambda w: dict(zip(names, w)),
                     n_weights=len(names), mask_call=True, compute_mask=compute_mask)


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
