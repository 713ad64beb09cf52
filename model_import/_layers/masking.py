"""Keras masks: how ``Embedding(mask_zero=True)`` and ``Masking`` reach RNNs and attention.

Keras attaches a boolean mask ``(batch, time)`` to a tensor; every later layer either passes
it on (``supports_masking``: Dense, activations, normalizations, dropout...), computes a new
one (merges, RNNs returning sequences, attention), or drops it (convolutions, pooling,
Flatten, Keras operations). Layers whose ``call`` has a ``mask`` parameter use it: RNNs keep
their state over masked steps, attention ignores masked keys, ``GlobalAveragePooling1D``
averages over unmasked steps only, ``Softmax`` ignores masked entries.

The graph interpreter (:meth:`model_import._graph.Graph.run`) carries the masks beside the
values, with the rules of :class:`~model_import._layers.registry.LayerImpl`
(``mask_call``, ``compute_mask``). :func:`with_builtin_rules` gives the layers converted
before masks were supported their Keras rule, by class name. A custom converter that states
no rule makes the mask *unknown* (:data:`UNKNOWN`); a mask-using layer that would receive an
unknown mask raises instead of computing something Keras would not.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp

from model_import._layers.merge import extremum_of, keras_ranks
from model_import._layers.registry import ConvertContext, LayerImpl, register_layer
from model_import._version import parse_version

Array = jax.Array

#: Keras's stand-in for minus infinity in masked softmaxes (float32).
LARGE_NEGATIVE = -1e9


class _Unknown:
    """The mask of a tensor that went through a converter without a mask rule."""

    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN = _Unknown()


def _flat(m) -> list:
    if isinstance(m, (list, tuple)):
        return [x for b in m for x in _flat(b)]
    if isinstance(m, dict):
        return [x for b in m.values() for x in _flat(b)]
    return [m]


def any_mask(masks: Sequence[Any]) -> bool:
    """Whether any of ``masks`` (nested lists) is set (an array or :data:`UNKNOWN`)."""
    return any(m is not None for m in _flat(list(masks)))


def has_unknown(m) -> bool:
    return any(x is UNKNOWN for x in _flat(m))


class UnknownMaskError(ValueError):
    """A mask-using layer would receive a mask the importer cannot know."""


def _refuse(where: str, class_name: str) -> Exception:
    return UnknownMaskError(
        f"layer {where!r} ({class_name}) uses Keras masks, but the mask of its input went "
        "through a custom converter that does not say how it treats masks, so the importer "
        "cannot know what Keras passes here. Give that converter's LayerImpl a "
        "compute_mask ('propagate' if the Keras layer supports masking and keeps the mask, "
        "'drop' if it does not, or a function of the mask and the inputs)")


def call_masks(impl: LayerImpl, in_mask: Any, explicit: bool, arg_masks: Mapping[Any, Any],
               where: str, class_name: str) -> dict:
    """The mask keyword(s) a layer's ``call`` receives, as Keras's ``Layer.__call__`` fills
    them: ``mask=`` from the node's explicit ``mask`` argument, else the mask of the call's
    only tensor argument (none when there are several); ``masks=`` (every tensor
    argument's mask, by position or keyword) for ``mask_call="arguments"``."""
    if not impl.mask_call:
        return {}
    if impl.mask_call == "arguments":
        if has_unknown(list(arg_masks.values())):
            raise _refuse(where, class_name)
        return {"masks": dict(arg_masks)}
    if explicit:
        m = in_mask
    elif len(arg_masks) == 1:
        m = next(iter(arg_masks.values()))
    else:
        m = None
    if has_unknown(m):
        raise _refuse(where, class_name)
    return {"mask": m}


def output_mask(impl: LayerImpl, in_mask: Any, args: Sequence, kwargs: Mapping, y: Any,
                any_in: bool) -> Any:
    """The mask Keras attaches to a layer's output(s) (a tuple for several outputs)."""
    rule = impl.compute_mask
    if rule is None:
        out = UNKNOWN if any_in else None
    elif rule == "drop":
        out = None
    elif rule == "propagate":
        out = in_mask
    elif has_unknown(in_mask):
        out = UNKNOWN
    else:
        out = rule(in_mask, *args, **kwargs)
    if isinstance(y, (list, tuple)):
        ms = list(out) if isinstance(out, (list, tuple)) else [out]
        return tuple((ms + [None] * len(y))[: len(y)])
    while isinstance(out, (list, tuple)):  # Keras attaches the first mask to a single output
        out = out[0] if out else None
    return out


# ---------------------------------------------------------------------- built-in rules
#: Layers whose Keras class supports masking and passes the mask on unchanged (Keras 3 and
#: tf.keras 2 agree on these).
PROPAGATE = frozenset({
    "Activation", "ELU", "LeakyReLU", "PReLU", "ReLU", "ThresholdedReLU", "Dense", "Identity",
    "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise",
    "GaussianDropout", "AlphaDropout", "ActivityRegularization", "BatchNormalization",
    "SyncBatchNormalization", "GroupNormalization", "LayerNormalization", "UnitNormalization",
    "Normalization", "Rescaling",
})
_ELEMENTWISE_MERGES = frozenset({"Add", "Subtract", "Multiply", "Average", "Maximum",
                                 "Minimum"})


def _merge_mask(keras_major: int) -> Callable:
    """Keras 3 ORs the inputs' masks (``None`` if any input has none); tf.keras 2 ANDs the
    given ones."""

    def rule(mask, inputs, *a, **k):
        if not isinstance(mask, (list, tuple)):
            return None
        if keras_major >= 3:
            if any(m is None for m in mask):
                return None
            return jax.tree_util.tree_reduce(jnp.logical_or, list(mask))
        given = [m for m in mask if m is not None]
        if not given:
            return None
        return jax.tree_util.tree_reduce(jnp.logical_and, given)

    return rule


def _concat_mask(axis: int, keras_major: int) -> Callable:
    """Each input's mask (all-true for unmasked inputs) broadcast to the input's shape,
    concatenated along ``axis`` and reduced over the last axis: ``any`` in Keras 3, ``all``
    in tf.keras 2."""
    reduce = jnp.any if keras_major >= 3 else jnp.all

    def rule(mask, inputs, *a, **k):
        if not isinstance(mask, (list, tuple)) or all(m is None for m in mask):
            return None
        full = []
        for x, m in zip(inputs, mask):
            if m is None:
                full.append(jnp.ones(x.shape, bool))
            elif m.ndim < x.ndim:
                full.append(jnp.broadcast_to(m[..., None], x.shape))
            else:
                full.append(m.astype(bool))
        return reduce(jnp.concatenate(full, axis=axis), axis=-1)

    return rule


def _masked_global_average_1d(config: Mapping[str, Any], impl: LayerImpl) -> LayerImpl:
    """``GlobalAveragePooling1D`` with a mask: the mean over the unmasked steps."""
    cf = config.get("data_format") == "channels_first"
    keepdims = bool(config.get("keepdims", False))

    def call(params, x, *, rt, mask=None):
        if mask is None:
            return impl.call(params, x, rt=rt)
        m = mask.astype(bool)[:, None, :] if cf else mask.astype(bool)[:, :, None]
        axis = 2 if cf else 1
        total = jnp.sum(jnp.where(m, x, 0.0), axis=axis, keepdims=keepdims)
        return total / jnp.sum(m.astype(x.dtype), axis=axis, keepdims=keepdims)

    return dataclasses.replace(impl, call=call, mask_call=True, compute_mask="drop")


def softmax_mask_rule(version: str, robust_masking: bool = False) -> str:
    """How the Keras that wrote the file applies a ``Softmax`` layer's mask (read in Keras's
    ``keras/src/layers/activations/softmax.py`` at each release tag, and tf-keras's
    ``tf_keras/layers/activation/softmax.py``).

    ``"additive"``: tf.keras 2 and Keras 3.0-3.9 add ``(1 - mask) * -1e9`` and stop there (a
    fully masked row is a softmax of the shifted values). ``"additive_zeroed"``: Keras
    3.10-3.12 also multiply the probabilities by the mask (a fully masked row is zeros).
    ``"above_half"``: Keras 3.13 and later keep the entries where the mask is true or, for a
    numeric mask, ``> 0.5``, set the others to -1e9 and zero them after the softmax. A bare
    ``"3"`` (no minor version recorded) is taken as the newest. ``"above_half_kept"``:
    ``robust_masking`` (tf-keras 2.21's ``Softmax(robust_masking=True)`` and
    ``MultiHeadAttention(softmax_robust_masking=True)``, the only writers of that option):
    the entries true or ``> 0.5`` are kept and the others set to -1e9, with no zeroing
    after the softmax (a fully masked row is uniform)."""
    if robust_masking:
        return "above_half_kept"
    v = parse_version(version)
    if v.major < 3 or v.before(3, 10, unrecorded=False):
        return "additive"
    return "additive_zeroed" if v.before(3, 13, unrecorded=False) else "above_half"


def _masked_softmax(config: Mapping[str, Any], impl: LayerImpl, version: str) -> LayerImpl:
    """``Softmax`` with a mask (broadcast from the right), as ``softmax_mask_rule(version)``
    says: ``"above_half"`` gives the entries whose mask is false (numbers: ``<= 0.5``) exactly
    -1e9; ``"additive"`` adds ``(1 - mask) * -1e9``; ``"additive_zeroed"`` adds it where the
    mask is not 0 and gives exactly -1e9 where it is 0. The masked pre-activation stays in
    ``call`` (the ``logits`` head's output); except under ``"additive"``, the activation
    zeroes the entries equal to exactly -1e9, which only masking produces (Keras 3.10-3.12
    multiply the probabilities by the mask: a fractional mask's scaling is not followed)."""
    axis = config.get("axis", -1)
    axes = tuple(axis) if isinstance(axis, (list, tuple)) else (axis,)
    rule = softmax_mask_rule(version, bool(config.get("robust_masking", False)))

    def call(params, x, *, rt, mask=None):
        if mask is None:
            return x
        if rule in ("above_half", "above_half_kept"):
            keep = mask if mask.dtype == jnp.bool_ else mask > 0.5
            return jnp.where(keep, x, LARGE_NEGATIVE)
        shifted = x + (1.0 - mask.astype(x.dtype)) * LARGE_NEGATIVE
        if rule == "additive":
            return shifted
        return jnp.where(mask.astype(bool), shifted, LARGE_NEGATIVE)

    def act(z, rt):
        y = rt.softmax_of(z, axes)
        if rule in ("additive", "above_half_kept"):
            return y
        return jnp.where(z == LARGE_NEGATIVE, 0.0, y)

    return dataclasses.replace(impl, call=call, activation=act, mask_call=True,
                               compute_mask="propagate")


def _keras3_before_3_4(version: str) -> bool:
    """Keras 3.0-3.3: ``Layer.__call__`` read the mask of a list argument as ``None`` (only
    the first argument's own ``_keras_mask``), so merge layers had no output mask there."""
    v = parse_version(version)
    return v.major == 3 and v.before(3, 4, unrecorded=False)


def _keras3_masked_merges(version: str) -> bool:
    """Whether ``Maximum``/``Minimum``/``Multiply`` see their inputs' masks: Keras 3.4+ (3.0-3.3
    merge the values as they are). Measured with one model written and run eagerly by each
    of Keras 3.4.1, 3.5.0, 3.6.0, 3.7.0, 3.8.0, 3.9.2, 3.10.0, 3.11.3, 3.12.0, 3.13.2, 3.14.0
    and 3.15.1 on JAX, and run by 3.4.1, 3.9.2, 3.13.2 and 3.15.1 on TensorFlow (eager and
    ``predict``). Two Keras paths lose these masks and are not followed: Functional runs on
    the NumPy backend of Keras 3.4-3.13, and jitted calls (``predict``) of Keras 3.4-3.5 on JAX."""
    return not parse_version(version).before(3, 4, unrecorded=False)


def null_mask_rule(version: str) -> str:
    """What a call's recorded ``"mask": null`` means for the Keras that wrote the config.

    ``"none"``: tf.keras (``2.x.y-tf``, 2.4 and later): the user passed ``mask=None``; the
    layer's call got no mask and its output mask was computed from none.
    ``"call"``: standalone Keras 2.0-2.3 (the call got no mask, the output mask is still
    computed from the tensor's).
    ``"if_unknown"``: Keras 3.0-3.9 record the kwargs after filling in the mask the tensor
    had when the model was built (a user's ``mask=None`` on a masked tensor is recorded as
    that mask), and at run time replace a ``None`` mask by the tensor's own, as for a missing
    key. So a ``null`` says the built tensor had no mask, which is not always the run's
    mask (a nested model's inner layers see its caller's mask; a nested Sequential's output
    carries its input's mask at run time only). It is trusted only where the importer cannot
    know the mask (after a custom layer without a mask rule): there it means none.
    ``"implicit"``: Keras 3.10+ record the user's own kwargs and replace ``mask=None`` with
    the tensor's mask, as for a missing key; also an unknown version (a bare ``"3"``: a
    ``.weights.h5`` with a config that records none).
    """
    v = parse_version(version)
    if v.major < 3:  # a bare "2": an .h5 without a keras_version attribute, i.e. an old one
        return "none" if v.tf_keras or not v.before(2, 4, unrecorded=True) else "call"
    return "if_unknown" if v.before(3, 10, unrecorded=False) else "implicit"


def _merge_operands(xs, args, mask) -> list[tuple[Array, Array | None]]:
    """A merge call's inputs, each with its mask as a boolean array of the input's shape
    (Keras 3.4+ expands a mask on the last axis and broadcasts it), or ``None`` if the
    input has none. Inputs of lower rank are expanded at axis 1 (``keras_ranks``) and lose
    their masks, as in Keras (``ops.expand_dims`` returns a tensor without the mask; measured
    with Keras 3.15.1 on JAX)."""
    xs = (list(xs) if isinstance(xs, (list, tuple)) else [xs]) + list(args)
    masks = list(mask) if isinstance(mask, (list, tuple)) else [None] * len(xs)
    aligned = keras_ranks(xs)
    return [(y, None if m is None or jnp.ndim(y) != jnp.ndim(x)
             else jnp.broadcast_to(jnp.expand_dims(m.astype(bool), -1), y.shape))
            for x, y, m in zip(xs, aligned, masks)]


def _masked_extremum(op: Callable, impl: LayerImpl, keras_major: int) -> LayerImpl:
    """Keras 3.4+'s ``Maximum``/``Minimum`` of masked inputs: where an input is masked, the
    running result stands in for it (and it for a masked running result), so a masked step
    of one input never wins; where every input is masked the result is the first input.
    Each step is ``rt.pair(op, ...)``, as in the unmasked merge, where a ``pairwise`` rule
    is installed; without one, the same values as the extremum of the unmasked inputs
    (:func:`extremum_of`, its derivative split equally among tied inputs), the first input
    where every input is masked."""
    kind = "max" if op is jnp.maximum else "min"

    def call(params, xs, *args, rt, mask=None, **kwargs):
        operands = _merge_operands(xs, args, mask)
        if rt.pairwise is None and all(jnp.issubdtype(jnp.result_type(x), jnp.floating)
                                       for x, _ in operands):
            fill = -jnp.inf if kind == "max" else jnp.inf
            y = extremum_of([x if m is None else jnp.where(m, x, fill) for x, m in operands],
                            kind, rt)
            if all(m is None for _, m in operands):
                return y
            valid = functools.reduce(jnp.logical_or, [
                jnp.ones((), bool) if m is None else m for _, m in operands])
            return jnp.where(valid, y, operands[0][0])
        out = out_mask = None
        for i, (x, m) in enumerate(operands):
            if i == 0:
                out, out_mask = x, m
                continue
            if m is not None:
                x = jnp.where(m, x, out)
            if out_mask is not None:
                out = jnp.where(out_mask, out, x)
            out_mask = (jnp.logical_or(out_mask, m) if m is not None and out_mask is not None
                        else None)
            out = rt.pair(op, out, x)
        return out

    return dataclasses.replace(impl, call=call, mask_call=True,
                               compute_mask=_merge_mask(keras_major))


def _masked_multiply(impl: LayerImpl, keras_major: int) -> LayerImpl:
    """Keras 3.4+'s ``Multiply`` of masked inputs: a masked input counts as 1 at its masked
    steps (it does not zero the product); when every input is masked, the product is 0
    where all of them are masked (Keras 3.15's ``Multiply._merge_function``; unmasked
    inputs multiply as they are)."""

    def call(params, xs, *args, rt, mask=None, **kwargs):
        operands = _merge_operands(xs, args, mask)
        all_masked = all(m is not None for _, m in operands)
        out = out_mask = None
        for x, m in operands:
            if m is not None:
                x = jnp.where(m, x, jnp.ones((), x.dtype))
                if all_masked:
                    out_mask = m if out_mask is None else jnp.logical_or(out_mask, m)
            out = x if out is None else out * x
        if all_masked:
            out = jnp.where(out_mask, out, jnp.zeros((), out.dtype))
        return out

    return dataclasses.replace(impl, call=call, mask_call=True,
                               compute_mask=_merge_mask(keras_major))


def with_builtin_rules(impl: LayerImpl, class_name: str, config: Mapping[str, Any],
                       ctx: ConvertContext, *, builtin: bool) -> LayerImpl:
    """``impl`` with the Keras mask rule of its class, for built-in converters that do not
    state one (custom converters without a rule stay unknown)."""
    if impl.compute_mask is not None or impl.mask_call or not builtin:
        return impl
    major = ctx.keras_major
    if class_name in PROPAGATE:
        return dataclasses.replace(impl, compute_mask="propagate")
    if class_name in _ELEMENTWISE_MERGES | {"Concatenate"} and _keras3_before_3_4(
            ctx.keras_version):
        return dataclasses.replace(impl, compute_mask="drop")
    masked_merges = _keras3_masked_merges(ctx.keras_version)
    if class_name in ("Maximum", "Minimum") and masked_merges:
        return _masked_extremum(jnp.maximum if class_name == "Maximum" else jnp.minimum,
                                impl, major)
    if class_name == "Multiply" and masked_merges:
        return _masked_multiply(impl, major)
    if class_name in _ELEMENTWISE_MERGES:
        return dataclasses.replace(impl, compute_mask=_merge_mask(major))
    if class_name == "Concatenate":
        return dataclasses.replace(impl,
                                   compute_mask=_concat_mask(int(config.get("axis", -1)), major))
    if class_name in ("GlobalAveragePooling1D", "GlobalAvgPool1D"):
        return _masked_global_average_1d(config, impl)
    if class_name == "Softmax":
        return _masked_softmax(config, impl, ctx.keras_version)
    return dataclasses.replace(impl, compute_mask="drop")


# ---------------------------------------------------------------------- layers and ops
@register_layer("Masking")
def _masking(config, ctx):
    """``Masking(mask_value)``: steps whose features all equal ``mask_value`` are masked and
    set to zero; the mask is ``any(x != mask_value, axis=-1)``."""
    value = config.get("mask_value", 0.0)
    if isinstance(value, Mapping):
        raise ctx.error("a Masking layer whose mask_value is a serialized tensor is not "
                        "supported; expected a number")
    value = float(value)

    def keep(x: Array) -> Array:
        return jnp.any(x != value, axis=-1)

    def call(params, x, *, rt):
        return jnp.where(keep(x)[..., None], x, 0.0)

    return LayerImpl(call=call, compute_mask=lambda mask, x, *a, **k: keep(x))


def _comparison(fn):
    def convert(config, ctx):
        def call(params, x, y, *, rt):
            return fn(jnp.asarray(x), jnp.asarray(y))

        return LayerImpl(call=call, compute_mask="drop")
    return convert


# Keras 3 (>= 3.10 or so) records the mask of a mask_zero Embedding as an explicit
# ``not_equal(tokens, 0)`` operation whose output is passed to later layers as ``mask=``.
register_layer("ops.NotEqual")(_comparison(jnp.not_equal))
register_layer("ops.Equal")(_comparison(jnp.equal))
register_layer("ops.LogicalAnd")(_comparison(jnp.logical_and))
register_layer("ops.LogicalOr")(_comparison(jnp.logical_or))


def _op_layer(make: Callable[[Mapping[str, Any]], Callable]) -> Callable:
    def convert(config, ctx):
        fn = make(config)

        def call(params, *args, rt, **kwargs):
            return fn(*args, **kwargs)

        return LayerImpl(call=call, compute_mask="drop")
    return convert


def _dtype(config) -> Any:
    dt = config.get("dtype")
    if isinstance(dt, Mapping):
        dt = (dt.get("config") or {}).get("name")
    return None if dt is None else jnp.dtype(str(dt))


def _reduce_bool(fn):
    def make(config):
        axis = config.get("axis")
        axis = tuple(axis) if isinstance(axis, list) else axis
        keepdims = bool(config.get("keepdims", False))
        return lambda x: fn(jnp.asarray(x), axis=axis, keepdims=keepdims)
    return make


# The operations Keras 3 records while computing masks symbolically (Concatenate's and
# Attention's compute_mask): ones/zeros of an input's shape, any/all, conversions.
register_layer("ops.Any")(_op_layer(_reduce_bool(jnp.any)))
register_layer("ops.All")(_op_layer(_reduce_bool(jnp.all)))
register_layer("ops.LogicalNot")(_op_layer(lambda c: jnp.logical_not))
register_layer("ops.ZerosLike")(_op_layer(
    lambda c: lambda x: jnp.zeros(jnp.shape(x), _dtype(c) or jnp.asarray(x).dtype)))
register_layer("ops.OnesLike")(_op_layer(
    lambda c: lambda x: jnp.ones(jnp.shape(x), _dtype(c) or jnp.asarray(x).dtype)))
register_layer("ops.ConvertToTensor")(_op_layer(
    lambda c: lambda x: jnp.asarray(x, _dtype(c))))
