"""Sequence layers: Embedding, SimpleRNN, LSTM, GRU (and tf.keras 1's CuDNNLSTM/CuDNNGRU),
Bidirectional and TimeDistributed.

Recurrences are one ``jax.lax.scan`` over time (pure, jit/vmap friendly); the input
projection of every step is one matmul before the scan. Masks (``Embedding(mask_zero=True)``,
``Masking``) follow Keras's generic RNN loop: at a masked step the state is carried over
unchanged and the output is the previous output (zeros with ``zero_output_for_mask``, which
``Bidirectional`` forces for sequences). ``go_backwards`` runs the scan from the last step
and returns the outputs in processing order, as Keras does.

Weights, in ``layer.weights`` order: ``kernel (features, gates * units)``,
``recurrent_kernel (units, gates * units)``, ``bias``; gates ``i, f, c, o`` (LSTM) and
``z, r, h`` (GRU), the same in Keras 3 and tf.keras 2. A GRU with ``reset_after=True`` has a
``(2, 3 * units)`` bias: input bias, then recurrent bias.

``relu`` activations of the cells use the runtime ReLU (guided backprop's rule applies to
them as to Dense layers); gate activations (sigmoid, hard sigmoid) and tanh are not ReLUs.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from model_import._layers import masking as _masking
from model_import._layers.activations import get_activation
from model_import._layers.registry import (ConvertContext, LayerImpl, Runtime,
                                           builtin_converters, lookup, register_layer)

Array = jax.Array


# ---------------------------------------------------------------------- Embedding
@register_layer("Embedding")
def _embedding(config, ctx):
    """Token ids ``(N, ...)`` (integers; floats are cast as Keras does) -> ``(N, ..., dim)``.
    ``mask_zero=True`` masks the id 0. Ids outside ``[0, input_dim)``, negative ones too,
    give NaN rows (Keras raises on CPU; its NumPy backend wraps negative ids); a
    :class:`~model_import.KerasModel` refuses such ids before running when it sees their
    values (:meth:`~model_import.KerasModel.check_token_ids`)."""
    if config.get("quantization_config") or config.get("lora_rank"):
        raise ctx.error("quantized or LoRA Embedding layers are not supported; save the "
                        "model with plain float weights")
    mask_zero = bool(config.get("mask_zero", False))

    def call(params, x, *, rt):
        ids = x if jnp.issubdtype(x.dtype, jnp.integer) else x.astype(jnp.int32)
        table = params["embeddings"]
        ids = jnp.where(ids < 0, table.shape[0], ids)  # take would wrap negative ids
        return jnp.take(table, ids, axis=0, mode="fill", fill_value=jnp.nan)

    def mask(m, x, *a, **k):
        return jnp.asarray(x) != 0

    return LayerImpl(call=call, convert_weights=lambda w: {"embeddings": w[0]}, n_weights=1,
                     compute_mask=mask if mask_zero else "drop")


# ---------------------------------------------------------------------- the recurrence
def run_rnn(step: Callable[[Array, tuple], tuple[Array, tuple]], xs: Array,
            states: tuple[Array, ...], mask: Array | None = None, *,
            go_backwards: bool = False, zero_output_for_mask: bool = False,
            zero_initial_output: bool = False) -> tuple[Array, tuple[Array, ...]]:
    """Keras's RNN loop as one ``lax.scan``.

    Args:
      step: ``step(x_t (N, ...), states) -> (output_t (N, U), new_states)``; ``states[0]``
        is the previous output.
      xs: ``(N, T, ...)`` per-step inputs (already projected if the step wants that).
      states: initial states, each ``(N, ...)``.
      mask: ``(N, T)`` booleans; a masked step keeps the states and outputs the previous
        output (zeros if ``zero_output_for_mask``).
      go_backwards: process the steps from the last one.
      zero_initial_output: the "previous output" of masked steps before the first unmasked
        one is zeros (tf.keras 2's loop), not ``states[0]`` (Keras 3 on JAX/NumPy); they
        differ when an initial state is given.
    Returns:
      ``(outputs (N, T, U) in processing order, final states)``.
    """
    xt = jnp.swapaxes(xs, 0, 1)
    mt = None if mask is None else jnp.swapaxes(mask.astype(bool), 0, 1)
    if go_backwards:
        xt = jnp.flip(xt, 0)
        mt = None if mt is None else jnp.flip(mt, 0)

    def body(carry, inp):
        states, prev = carry
        x, m = inp
        out, new = step(x, states)
        if m is not None:
            keep = m[:, None]
            out = jnp.where(keep, out, jnp.zeros_like(out) if zero_output_for_mask else prev)
            new = tuple(jnp.where(keep.reshape(keep.shape + (1,) * (n.ndim - 2)), n, s)
                        for n, s in zip(new, states))
        return (tuple(new), out), out

    prev0 = jnp.zeros_like(states[0]) if zero_initial_output else states[0]
    (final, _), outs = jax.lax.scan(body, (tuple(states), prev0), (xt, mt))
    return jnp.swapaxes(outs, 0, 1), final


@dataclasses.dataclass(frozen=True)
class _Cell:
    """One recurrent cell: ``kind`` in ``simple``/``lstm``/``gru``."""

    kind: str
    units: int
    activation: Callable
    recurrent_activation: Callable | None
    use_bias: bool
    reset_after: bool = False
    cudnn: bool = False

    @property
    def gates(self) -> int:
        return {"simple": 1, "lstm": 4, "gru": 3}[self.kind]

    @property
    def n_states(self) -> int:
        return 2 if self.kind == "lstm" else 1

    def convert(self, w: Sequence[np.ndarray]) -> dict:
        p = {"kernel": np.asarray(w[0]), "recurrent_kernel": np.asarray(w[1])}
        if self.use_bias:
            b = np.asarray(w[2])
            if self.cudnn and self.kind == "lstm":  # input and recurrent biases, summed
                b = b[: 4 * self.units] + b[4 * self.units:]
            elif self.kind == "gru" and self.reset_after:
                b = b.reshape(2, 3 * self.units)
            p["bias"] = b
        return p

    def input_projection(self, params, x: Array) -> Array:
        """``x @ kernel (+ input bias)`` for every step at once: ``(N, T, gates * units)``."""
        y = jnp.matmul(x, params["kernel"])
        if self.use_bias:
            b = params["bias"]
            y = y + (b[0] if b.ndim == 2 else b)
        return y

    def step(self, params, rt: Runtime) -> Callable:
        u, act, ract = self.units, self.activation, self.recurrent_activation
        rk = params["recurrent_kernel"]
        rb = params["bias"][1] if (self.kind == "gru" and self.reset_after and self.use_bias) \
            else None

        def simple(xw, states):
            h = act(xw + states[0] @ rk, rt)
            return h, (h,)

        def lstm(xw, states):
            h, c = states
            z = xw + h @ rk
            i, f, g, o = (z[:, k * u:(k + 1) * u] for k in range(4))
            c = ract(f, rt) * c + ract(i, rt) * act(g, rt)
            h = ract(o, rt) * act(c, rt)
            return h, (h, c)

        def gru(xw, states):
            h = states[0]
            xz, xr, xh = xw[:, :u], xw[:, u:2 * u], xw[:, 2 * u:]
            if self.reset_after:
                inner = h @ rk
                if rb is not None:
                    inner = inner + rb
                z = ract(xz + inner[:, :u], rt)
                r = ract(xr + inner[:, u:2 * u], rt)
                hh = act(xh + r * inner[:, 2 * u:], rt)
            else:
                z = ract(xz + h @ rk[:, :u], rt)
                r = ract(xr + h @ rk[:, u:2 * u], rt)
                hh = act(xh + (r * h) @ rk[:, 2 * u:], rt)
            h = z * h + (1.0 - z) * hh
            return h, (h,)

        return {"simple": simple, "lstm": lstm, "gru": gru}[self.kind]


def _cell_from_config(kind: str, config: Mapping[str, Any], ctx: ConvertContext,
                      cudnn: bool = False) -> _Cell:
    units = int(config["units"])
    if cudnn:  # CuDNNLSTM/CuDNNGRU: fixed activations, always biased, GRU resets after
        act = get_activation("tanh", ctx.keras_major, ctx)
        ract = get_activation("sigmoid", ctx.keras_major, ctx)
        return _Cell(kind, units, act, ract, True, reset_after=True, cudnn=True)
    act = get_activation(config.get("activation", "tanh"), ctx.keras_major, ctx)
    ract = None if kind == "simple" else get_activation(
        config.get("recurrent_activation", "sigmoid"), ctx.keras_major, ctx)
    # Keras 3 and tf.keras 2 default to reset_after=True; standalone Keras 2.0-2.2 had no such
    # option (reset before the recurrent matmul).
    reset_after = bool(config.get("reset_after", False)) if kind == "gru" else False
    return _Cell(kind, units, act, ract, bool(config.get("use_bias", True)), reset_after)


def _split_inputs(x, mask, initial_state):
    """tf.keras 2 records ``RNN(x, initial_state=s)`` as one list input ``[x, *s]``, whose
    masks are ``[mask of x, None, ...]``: back to ``x``, its mask and the states."""
    if isinstance(x, (list, tuple)):
        x, initial_state = x[0], list(x[1:]) or initial_state
    if isinstance(mask, (list, tuple)):
        mask = mask[0]
    return x, mask, initial_state


def _state_list(initial_state) -> list | None:
    if initial_state is None:
        return None
    return list(initial_state) if isinstance(initial_state, (list, tuple)) else [initial_state]


def _rnn_layer(kind: str, config: Mapping[str, Any], ctx: ConvertContext,
               cudnn: bool = False) -> LayerImpl:
    if config.get("stateful"):
        raise ctx.error("stateful RNNs carry their state from one call to the next; an "
                        "attribution needs a pure function. Rebuild the layer with "
                        "stateful=False (same weights) and save again")
    cell = _cell_from_config(kind, config, ctx, cudnn)
    return_sequences = bool(config.get("return_sequences", False))
    return_state = bool(config.get("return_state", False))
    go_backwards = bool(config.get("go_backwards", False))
    zero_output = bool(config.get("zero_output_for_mask", False))
    time_major = bool(config.get("time_major", False))

    def call(params, x, *args, rt, mask=None, initial_state=None, **kwargs):
        if args:  # RNN(x, initial_state) called positionally
            initial_state = args[0]
        x, mask, initial_state = _split_inputs(x, mask, initial_state)
        if time_major:  # (time, batch, ...) arrays; tf.keras's masks are (time, batch) too
            x = jnp.swapaxes(x, 0, 1)
            mask = None if mask is None else jnp.swapaxes(mask, 0, 1)
        n = x.shape[0]
        states = _state_list(initial_state)
        if states is None:
            states = [jnp.zeros((n, cell.units), x.dtype)] * cell.n_states
        if len(states) != cell.n_states:
            raise ValueError(f"{kind} expects {cell.n_states} initial states, got "
                             f"{len(states)}")
        outs, final = run_rnn(cell.step(params, rt), cell.input_projection(params, x),
                              tuple(states), mask, go_backwards=go_backwards,
                              zero_output_for_mask=zero_output,
                              zero_initial_output=ctx.keras_major < 3)
        y = outs if return_sequences else outs[:, -1]
        if time_major and return_sequences:
            y = jnp.swapaxes(y, 0, 1)
        return (y, *final) if return_state else y

    def compute_mask(mask, *args, **kwargs):
        if isinstance(mask, (list, tuple)):  # [x, *initial_state] (tf.keras 2)
            mask = mask[0]
        out = mask if return_sequences else None
        return [out] + [None] * cell.n_states if return_state else out

    return LayerImpl(call=call, convert_weights=cell.convert,
                     n_weights=3 if cell.use_bias else 2, mask_call=True,
                     compute_mask=compute_mask, weight_groups=("cell",))


@register_layer("SimpleRNN")
def _simple_rnn(config, ctx):
    return _rnn_layer("simple", config, ctx)


@register_layer("LSTM")
def _lstm(config, ctx):
    return _rnn_layer("lstm", config, ctx)


@register_layer("GRU")
def _gru(config, ctx):
    return _rnn_layer("gru", config, ctx)


@register_layer("CuDNNLSTM")
def _cudnn_lstm(config, ctx):
    return _rnn_layer("lstm", config, ctx, cudnn=True)


@register_layer("CuDNNGRU")
def _cudnn_gru(config, ctx):
    return _rnn_layer("gru", config, ctx, cudnn=True)


# ---------------------------------------------------------------------- wrappers
def convert_inner(layer_cfg: Mapping[str, Any], ctx: ConvertContext) -> tuple[str, dict,
                                                                             LayerImpl]:
    """Convert the layer a wrapper holds (its serialized ``{"class_name", "config"}``)."""
    if not isinstance(layer_cfg, Mapping) or "class_name" not in layer_cfg:
        raise ctx.error(f"expected the wrapped layer's config, got {str(layer_cfg)[:200]}")
    cls = str(layer_cfg["class_name"]).split(">")[-1]
    cfg = dict(layer_cfg.get("config") or {})
    conv = lookup(cls)
    if conv is None:
        raise ctx.error(f"it wraps a {cls} layer, which has no converter (register one with "
                        "model_import.register_layer)")
    sub = dataclasses.replace(ctx, layer_name=f"{ctx.layer_name}/{cfg.get('name', cls)}",
                              class_name=cls)
    impl = conv(cfg, sub)
    if impl.subgraph is not None:
        raise ctx.error(f"it wraps a model ({cls}); wrapping a whole model is not supported")
    impl = _masking.with_builtin_rules(impl, cls, cfg, sub,
                                       builtin=conv in builtin_converters())
    return cls, cfg, impl


def _apply(impl: LayerImpl, params, x, rt, keras_major: int, **kwargs):
    """A converted layer's call followed by its fused activation."""
    y = impl.call(params, x, rt=rt, **kwargs)
    if impl.activation is not None:
        y = get_activation(impl.activation, keras_major)(y, rt)
    return y


def _groups(prefix: str, impl: LayerImpl) -> tuple[str, ...]:
    return (prefix,) + tuple(f"{prefix}/{g}" for g in impl.weight_groups or ())


def _prefixed(prefix: str, d: Mapping[str, Any]) -> dict:
    return {f"{prefix}/{k}": v for k, v in d.items()}


def _unprefixed(prefix: str, d: Mapping[str, Any]) -> dict:
    p = prefix + "/"
    return {k[len(p):]: v for k, v in d.items() if k.startswith(p)}


@register_layer("TimeDistributed")
def _time_distributed(config, ctx):
    """The wrapped layer applied to every step ``x[:, t]`` (the batch and time axes merged
    into one batch); a mask ``(N, T, ...)`` reaches a mask-using wrapped layer step by step."""
    cls, cfg, inner = convert_inner(config["layer"], ctx)
    major = ctx.keras_major

    def call(params, x, *, rt, mask=None):
        n, t = x.shape[:2]
        kw = {}
        if inner.mask_call is True and mask is not None:
            if mask.ndim < 3:
                raise ValueError(f"the wrapped {cls} uses masks; a (batch, time) mask gives "
                                 "it one flag per sample, which Keras rejects as well")
            kw["mask"] = mask.reshape((n * t,) + mask.shape[2:])
        elif inner.mask_call:
            raise ValueError(f"TimeDistributed({cls}) with masks per argument is not "
                             "supported")
        y = _apply(inner, params, x.reshape((n * t,) + x.shape[2:]), rt, major, **kw)
        if isinstance(y, (list, tuple)):
            raise ValueError(f"the wrapped {cls} returns several tensors")
        return y.reshape((n, t) + y.shape[1:])

    return LayerImpl(call=call, convert_weights=inner.convert_weights,
                     n_weights=inner.n_weights, mask_call=True, compute_mask="propagate",
                     weight_groups=_groups("layer", inner), data_format=inner.data_format)


_MERGES = {
    "concat": lambda a, b: jnp.concatenate([a, b], axis=-1),
    "sum": lambda a, b: a + b,
    "ave": lambda a, b: (a + b) / 2,
    "mul": lambda a, b: a * b,
}


@register_layer("Bidirectional")
def _bidirectional(config, ctx):
    """A forward and a backward RNN on the same sequence; the backward outputs are flipped
    back to time order (sequences) and merged (``concat``/``sum``/``ave``/``mul``, or both
    returned for ``merge_mode=None``). Keras forces ``zero_output_for_mask`` to
    ``return_sequences`` on both. Without a ``backward_layer`` config (tf.keras 2), the
    backward layer is the forward one with ``go_backwards`` flipped."""
    merge_mode = config.get("merge_mode", "concat")
    if merge_mode is not None and merge_mode not in _MERGES:
        raise ctx.error(f"unknown merge_mode {merge_mode!r}; expected one of "
                        f"{sorted(_MERGES)} or None")
    fwd_cfg = dict(config["layer"])
    bwd_cfg = config.get("backward_layer")
    if bwd_cfg is None:
        inner_cfg = dict(fwd_cfg.get("config") or {})
        inner_cfg["go_backwards"] = not inner_cfg.get("go_backwards", False)
        bwd_cfg = {**fwd_cfg, "config": inner_cfg}
    layers = []
    for lc in (fwd_cfg, bwd_cfg):
        lc = dict(lc)
        inner_cfg = dict(lc.get("config") or {})
        inner_cfg["zero_output_for_mask"] = bool(inner_cfg.get("return_sequences", False))
        lc["config"] = inner_cfg
        layers.append(convert_inner(lc, ctx))
    (fcls, fcfg, fwd), (_, bcfg, bwd) = layers
    n_states = 2 if fcls in ("LSTM", "CuDNNLSTM") else 1
    return_sequences = bool(fcfg.get("return_sequences", False))
    return_state = bool(fcfg.get("return_state", False))
    time_axis = 0 if fcfg.get("time_major", False) else 1
    nf = fwd.n_weights
    if nf is None:
        raise ctx.error("the wrapped layer does not say how many weights it has")

    def call(params, x, *args, rt, mask=None, initial_state=None, **kwargs):
        if args:
            initial_state = args[0]
        x, mask, initial_state = _split_inputs(x, mask, initial_state)
        states = _state_list(initial_state)
        kf, kb = {}, {}
        if states is not None:
            half = len(states) // 2
            kf["initial_state"], kb["initial_state"] = states[:half], states[half:]
        if fwd.mask_call:
            kf["mask"] = kb["mask"] = mask
        y = _apply(fwd, _unprefixed("forward", params), x, rt, ctx.keras_major, **kf)
        y_rev = _apply(bwd, _unprefixed("backward", params), x, rt, ctx.keras_major, **kb)
        st: tuple = ()
        if return_state:
            st = tuple(y[1:]) + tuple(y_rev[1:])
            y, y_rev = y[0], y_rev[0]
        if return_sequences:
            y_rev = jnp.flip(y_rev, axis=time_axis)
        out = (y, y_rev) if merge_mode is None else (_MERGES[merge_mode](y, y_rev),)
        return out + st if (return_state or merge_mode is None) else out[0]

    def compute_mask(mask, *args, **kwargs):
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        out = mask if return_sequences else None
        outs = [out, out] if merge_mode is None else [out]
        if return_state:
            outs += [None] * (2 * n_states)
        return outs if len(outs) > 1 else outs[0]

    def convert(w):
        return {**_prefixed("forward", fwd.convert_weights(w[:nf])),
                **_prefixed("backward", bwd.convert_weights(w[nf:]))}

    n_b = bwd.n_weights
    return LayerImpl(call=call, convert_weights=convert,
                     n_weights=None if n_b is None else nf + n_b, mask_call=True,
                     compute_mask=compute_mask,
                     weight_groups=_groups("forward_layer", fwd) + _groups("backward_layer",
                                                                            bwd))

