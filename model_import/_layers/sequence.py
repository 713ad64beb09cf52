"""Sequence layers: Embedding, SimpleRNN, LSTM, GRU (and tf.keras 1's CuDNNLSTM/CuDNNGRU),
``RNN(cell)`` with the built-in cells or a ``StackedRNNCells`` of them, Bidirectional and
TimeDistributed.

Recurrences are one ``jax.lax.scan`` over time (pure, jit/vmap friendly); the input
projection of every step is one matmul before the scan. Masks (``Embedding(mask_zero=True)``,
``Masking``) follow Keras's generic RNN loop: at a masked step the state is carried over
unchanged and the output is the previous output (zeros with ``zero_output_for_mask``, which
``Bidirectional`` forces for sequences; Keras 3's unrolled loop on JAX/NumPy ignores it and
TensorFlow's zeroes by the mask in time order, see ``_recurrent_layer``). ``go_backwards``
runs the scan from the last step and returns the outputs in processing order, as Keras does.

Weights, in ``layer.weights`` order: ``kernel (features, gates * units)``,
``recurrent_kernel (units, gates * units)``, ``bias``; gates ``i, f, c, o`` (LSTM) and
``z, r, h`` (GRU), the same in Keras 3 and tf.keras 2. A GRU with ``reset_after=True`` has a
``(2, 3 * units)`` bias: input bias, then recurrent bias. ``RNN(cell)`` stores the cell's
weights the same way (``rnn/lstm_cell/kernel``); a ``StackedRNNCells`` lists each cell's in
cell order (``rnn/stacked_rnn_cells/gru_cell/kernel``, ...; a ``.keras`` file keeps them under
``cell/cells/<snake_case class>``, made unique: ``lstm_cell``, ``lstm_cell_1``).

``relu`` activations of the cells use the runtime ReLU (guided backprop's rule applies to
them as to Dense layers); gate activations (sigmoid, hard sigmoid) and tanh are not ReLUs.
The cells' affine steps go through ``Runtime.rule`` and their gates through
``Runtime.held`` (LRP's rules for recurrent networks, Arras et al. 2017; see
``_Cell.step``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from model_import._files import object_keys
from model_import._layers import masking as _masking
from model_import._layers.activations import get_activation, with_own_activation
from model_import._layers.registry import (MODEL_CLASSES, CellImpl, ConvertContext, LayerImpl,
                                           Runtime, builtin_converters, converter_for,
                                           functional_subclass, lookup, own_class,
                                           register_layer, returned_layer_impl)

Array = jax.Array


# ---------------------------------------------------------------------- Embedding
@register_layer("Embedding")
def _embedding(config, ctx):
    """Token ids ``(N, ...)`` (integers; floats are cast as Keras does) -> ``(N, ..., dim)``.
    ``mask_zero=True`` masks the id 0. Ids outside ``[0, input_dim)``, negative ones too,
    give NaN rows (Keras raises on CPU; its NumPy backend wraps negative ids); a
    :class:`~model_import.KerasModel` refuses such ids before running when it sees their
    values (:meth:`~model_import.KerasModel.check_token_ids`)."""
    if config.get("quantization_config"):
        raise ctx.error("quantized Embedding layers are not supported; save the model with "
                        "plain float weights")
    mask_zero = bool(config.get("mask_zero", False))

    def call(params, x, *, rt):
        return _lookup(params["embeddings"], x)

    def mask(m, x, *a, **k):
        return jnp.asarray(x) != 0

    return LayerImpl(call=call, convert_weights=lambda w: {"embeddings": w[0]}, n_weights=1,
                     compute_mask=mask if mask_zero else "drop")


def _lookup(table: Array, x: Array) -> Array:
    """Rows of ``table`` for the ids ``x`` (floats cast as Keras does); ids outside
    ``[0, len(table))``, negative ones too, give NaN rows."""
    ids = x if jnp.issubdtype(x.dtype, jnp.integer) else x.astype(jnp.int32)
    ids = jnp.where(ids < 0, table.shape[0], ids)  # take would wrap negative ids
    return jnp.take(table, ids, axis=0, mode="fill", fill_value=jnp.nan)


# ---------------------------------------------------------------------- ReversibleEmbedding
_REVERSE_DTYPES = {"float16": jnp.float16, "bfloat16": jnp.bfloat16, "float32": jnp.float32}


@register_layer("ReversibleEmbedding")
def _reversible_embedding(config, ctx):
    """Keras 3's ``ReversibleEmbedding``: ``call(ids)`` is an ``Embedding`` (``mask_zero``
    masks the id 0); ``call(x (N, ..., dim), reverse=True)`` gives logits ``x @ embeddings.T``
    (``tie_weights``, the default) or ``x @ reverse_embeddings (dim, input_dim)``, computed in
    ``reverse_dtype`` when set, then ``tanh(logits / cap) * cap`` with ``logit_soft_cap``;
    the logits carry no mask. Weights: ``embeddings`` then (untied) ``reverse_embeddings``.
    Ids as for :func:`_embedding`."""
    if config.get("quantization_config") or config.get("lora_rank"):
        raise ctx.error("quantized or LoRA ReversibleEmbedding layers are not supported; "
                        "save the model with plain float weights")
    mask_zero = bool(config.get("mask_zero", False))
    tie = bool(config.get("tie_weights", True))
    cap = config.get("logit_soft_cap")
    cap = None if cap is None else float(cap)
    rdtype = config.get("reverse_dtype")
    if isinstance(rdtype, Mapping):  # a serialized DTypePolicy
        rdtype = (rdtype.get("config") or {}).get("name")
    if rdtype is not None and rdtype not in _REVERSE_DTYPES:
        raise ctx.error(f"reverse_dtype {rdtype!r} is not supported; expected None or one of "
                        f"{sorted(_REVERSE_DTYPES)}")
    names = ("embeddings",) if tie else ("embeddings", "reverse_embeddings")

    def call(params, x, *, rt, reverse=False):
        table = params["embeddings"]
        if not reverse:
            return _lookup(table, x)
        kernel = table.T if tie else params["reverse_embeddings"]
        if rdtype is not None:
            x, kernel = x.astype(_REVERSE_DTYPES[rdtype]), kernel.astype(_REVERSE_DTYPES[rdtype])
        logits = jnp.matmul(x, kernel)
        if cap is not None:
            logits = jnp.tanh(logits / cap) * cap
        return logits.astype(jnp.float32)

    def compute_mask(mask, x, *args, reverse=False, **kwargs):
        if reverse or not mask_zero:
            return None
        return jnp.asarray(x) != 0

    dim, n = config.get("output_dim"), config.get("input_dim")
    shapes = {"embeddings": (n, dim)}
    if not tie:
        shapes["reverse_embeddings"] = (dim, n)
    return LayerImpl(call=call, convert_weights=lambda w: dict(zip(names, w)),
                     n_weights=len(names), compute_mask=compute_mask, param_shapes=shapes)


# ---------------------------------------------------------------------- the recurrence
def run_rnn(step: Callable[[Array, tuple], tuple[Array, tuple]], xs: Array,
            states: tuple[Array, ...], mask: Array | None = None, *,
            go_backwards: bool = False, zero_output_for_mask: bool = False,
            zero_initial_output: bool = False,
            output_state: int = 0) -> tuple[Array, tuple[Array, ...]]:
    """Keras's RNN loop as one ``lax.scan``.

    Args:
      step: ``step(x_t (N, ...), states) -> (output_t (N, ...), new_states)``;
        ``states[0]`` is the previous output for the built-in cells (``states[output_state]``
        for stacked cells).
      xs: ``(N, T, ...)`` per-step inputs (already projected if the step wants that).
      states: initial states, each ``(N, ...)``.
      mask: ``(N, T)`` booleans; a masked step keeps the states and outputs, unless
        ``zero_output_for_mask`` (zeros), ``states[output_state]`` as it is at that step
        (Keras 3's scan on JAX/NumPy), or the previous output with ``zero_initial_output``.
      go_backwards: process the steps from the last one.
      zero_initial_output: masked steps output the previous step's output, zeros before the
        first unmasked one (the loops of TensorFlow, tf.keras 2's too, and PyTorch, and
        every unrolled loop), instead of ``states[output_state]`` (Keras 3's scan on
        JAX/NumPy). The two differ where an initial state is given, and for a cell of the
        user's own whose output is not its first state.
      output_state: which of ``states`` Keras 3's scan outputs at masked steps: 0 for one
        cell, the first state of the last cell for stacked cells.
    Returns:
      ``(outputs (N, T, ...) in processing order, final states)``.
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
        if m is not None:  # (N,) flags against (N, ...) outputs and states
            def keep(a):
                return m.reshape(m.shape + (1,) * (a.ndim - 1))

            if zero_output_for_mask:
                held = jnp.zeros_like(out)
            else:
                held = states[output_state] if prev is None else prev
            out = jnp.where(keep(out), out, held)
            new = tuple(jnp.where(keep(n), n, s) for n, s in zip(new, states))
            prev = None if prev is None else out
        return (tuple(new), prev), out

    prev0 = None
    if mt is not None and zero_initial_output and not zero_output_for_mask:
        shape = jax.eval_shape(step, xt[0], tuple(states))[0]
        prev0 = jnp.zeros(shape.shape, shape.dtype)
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

    @property
    def n_weights(self) -> int:
        return 3 if self.use_bias else 2

    @property
    def state_shapes(self) -> tuple[tuple[int, ...], ...]:
        return ((self.units,),) * self.n_states

    def convert(self, w: Sequence[np.ndarray]) -> dict:
        p = {"kernel": np.asarray(w[0]), "recurrent_kernel": np.asarray(w[1])}
        g = self.gates * self.units
        # another architecture's (or a damaged file's) arrays would reshape or broadcast
        if p["kernel"].ndim != 2 or p["kernel"].shape[1] != g or \
                p["recurrent_kernel"].shape != (self.units, g):
            raise ValueError(
                f"expected a kernel of shape (input size, {g}) and a recurrent kernel of shape "
                f"({self.units}, {g}) for {self.units} units, got {p['kernel'].shape} and "
                f"{p['recurrent_kernel'].shape}")
        if self.use_bias:
            b = np.asarray(w[2])
            want = ({(2, g), (2 * g,)} if self.kind == "gru" and self.reset_after
                    else {(g,)} | ({(2 * g,)} if self.cudnn else set()))
            if b.shape not in want:
                raise ValueError(f"expected a bias of shape {' or '.join(map(str, sorted(want)))}"
                                 f" for {self.units} units, got {b.shape}")
            if self.cudnn and self.kind == "lstm":  # input and recurrent biases, summed
                b = b[: 4 * self.units] + b[4 * self.units:]
            elif self.kind == "gru" and self.reset_after:
                b = b.reshape(2, 3 * self.units)
            p["bias"] = b
        return p

    def input_projection(self, params, x: Array, rt: Runtime) -> Array:
        """``x @ kernel (+ input bias)`` for every step at once: ``(N, T, gates * units)``."""
        proj = {"kernel": params["kernel"]}
        if self.use_bias:
            b = params["bias"]
            proj["bias"] = b[0] if b.ndim == 2 else b
        return rt.rule(_affine, proj, x)

    def step(self, params, rt: Runtime) -> Callable:
        """The cell's step. Its affine parts (the recurrent projection, the state updates,
        a gate times a value) go through :meth:`Runtime.rule` and its gates through
        :meth:`Runtime.held`: under ``jaxsal.lrp``, the LRP of recurrent networks of Arras
        et al. (2017), the gates held and given no relevance (signal-take-all), every sum
        split by the epsilon rule. The values are the same."""
        u, act, ract = self.units, self.activation, self.recurrent_activation
        rk = params["recurrent_kernel"]
        rb = params["bias"][1] if (self.kind == "gru" and self.reset_after and self.use_bias) \
            else None

        def simple(xw, states):
            h = act(rt.rule(_recurrent, {"kernel": rk}, xw, states[0]), rt)
            return h, (h,)

        def lstm(xw, states):
            h, c = states
            z = rt.rule(_recurrent, {"kernel": rk}, xw, h)
            h, c = lstm_update(rt, act, ract, c, *(z[:, k * u:(k + 1) * u] for k in range(4)))
            return h, (h, c)

        def gru(xw, states):
            h = states[0]
            xz, xr, xh = xw[:, :u], xw[:, u:2 * u], xw[:, 2 * u:]
            if self.reset_after:
                inner = rt.rule(_affine, {"kernel": rk} if rb is None
                                else {"kernel": rk, "bias": rb}, h)
                z = gate(rt, ract, xz + inner[:, :u])
                r = gate(rt, ract, xr + inner[:, u:2 * u])
                hh = act(rt.rule(_reset_after, {}, xh, inner[:, 2 * u:], r), rt)
            else:
                z = gate(rt, ract, xz + h @ rk[:, :u])
                r = gate(rt, ract, xr + h @ rk[:, u:2 * u])
                hh = act(rt.rule(_reset_before, {"kernel": rk[:, 2 * u:]}, xh, h, r), rt)
            h = rt.rule(_interpolate, {}, h, hh, z)
            return h, (h,)

        return {"simple": simple, "lstm": lstm, "gru": gru}[self.kind]


@dataclasses.dataclass(frozen=True)
class _OwnCell:
    """A cell of the user's own, converted by a converter returning a :class:`CellImpl`, with
    the interface of :class:`_Cell` that :class:`_Stack` calls: no input projection (the
    step reads the raw input), the user's step, its states' shapes."""

    impl: CellImpl
    cls: str
    where: str  # "layer 'rnn'", for messages

    @property
    def n_states(self) -> int:
        return len(self.state_shapes)

    @property
    def state_shapes(self) -> tuple[tuple[int, ...], ...]:
        return _state_shapes(self.impl.state_size)

    @property
    def n_weights(self) -> int:
        return self.impl.n_weights

    def convert(self, w: Sequence[np.ndarray]) -> dict:
        return dict(self.impl.convert_weights(list(w)))

    def input_projection(self, params, x: Array, rt: Runtime) -> Array:
        return x

    def step(self, params, rt: Runtime) -> Callable:
        n, user_step = self.n_states, self.impl.step

        def own(x, states):
            got = user_step(params, x, tuple(states), rt=rt)
            if not isinstance(got, (tuple, list)) or len(got) != 2:
                raise ValueError(
                    f"{self.where}: the step of the {self.cls} cell must return (output, "
                    f"new_states), got {type(got).__name__}"
                    + (f" of length {len(got)}" if isinstance(got, (tuple, list)) else ""))
            out, new = got
            new = tuple(new) if isinstance(new, (tuple, list)) else (new,)
            if len(new) != n:
                raise ValueError(f"{self.where}: the step of the {self.cls} cell returned "
                                 f"{len(new)} new states, expected {n} (its state_size "
                                 f"{self.impl.state_size!r}); return them in that order")
            return out, new

        return own


def _state_shapes(size: Any) -> tuple[tuple[int, ...], ...]:
    """A ``CellImpl.state_size`` (an int, or ints and shapes, one per state) as a shape per
    state, or a ``TypeError`` saying what was expected."""
    def dim(d):
        return isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d > 0

    if dim(size):
        return ((int(size),),)
    if isinstance(size, (tuple, list)) and size:
        out = []
        for s in size:
            if dim(s):
                out.append((int(s),))
            elif isinstance(s, (tuple, list)) and s and all(dim(d) for d in s):
                out.append(tuple(int(d) for d in s))
            else:
                break
        else:
            return tuple(out)
    raise TypeError(f"expected CellImpl.state_size as a positive int or a non-empty sequence "
                    f"of positive ints and shapes (one per state, as Keras's cell.state_size: "
                    f"8, [8, 8] or [8, (4, 2)]), got {size!r}")


def gate(rt: Runtime, ract: Callable, v: Array) -> Array:
    """A recurrent cell's gate ``ract(v)``, held by the runtime (LRP: no relevance)."""
    return rt.held(ract(v, rt))


def lstm_update(rt: Runtime, act: Callable, ract: Callable, c: Array, i: Array, f: Array,
                g: Array, o: Array) -> tuple[Array, Array]:
    """``(h, c)`` of an LSTM step (LSTM and ConvLSTM cells) from the previous cell state
    ``c`` and the pre-activations ``i, f, g, o``: ``c = f c + i g``, ``h = o act(c)``, the
    gates held and the two products through ``rt.rule``."""
    c = rt.rule(_gated_sum, {}, c, act(g, rt), gate(rt, ract, f), gate(rt, ract, i))
    return rt.rule(_gated, {}, act(c, rt), gate(rt, ract, o)), c


# The affine steps of the cells, as functions of (params, tensors..., held gates...): what
# Runtime.rule passes to LRP's epsilon rule (the gates, held, take no relevance).
def _affine(p, x):  # x @ kernel (+ bias)
    y = jnp.matmul(x, p["kernel"])
    return y + p["bias"] if "bias" in p else y


def _recurrent(p, xw, h):
    return xw + h @ p["kernel"]


def _gated_sum(p, c, g, f_gate, i_gate):  # LSTM: f * c + i * g
    return f_gate * c + i_gate * g


def _gated(p, v, gate):  # LSTM: o * tanh(c)
    return gate * v


def _reset_after(p, xh, inner_h, r):  # GRU, reset after the recurrent matmul
    return xh + r * inner_h


def _reset_before(p, xh, h, r):  # GRU, reset before it
    return xh + (r * h) @ p["kernel"]


def _interpolate(p, h, hh, z):  # GRU: z * h + (1 - z) * hh
    return z * h + (1.0 - z) * hh


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


@dataclasses.dataclass(frozen=True)
class _Stack:
    """The cells of one recurrent layer, called in order at every step (Keras's
    ``StackedRNNCells``): each cell reads the previous cell's output, the layer outputs the
    last cell's. The states are all cells' states, flat, in cell order. A plain RNN layer is
    a stack of one cell whose params are the cell's own (``prefixes == ("",)``); stacked
    cells keep theirs under ``cell_0/``, ``cell_1/``, ...."""

    cells: tuple[_Cell | _OwnCell, ...]
    prefixes: tuple[str, ...]

    @property
    def n_states(self) -> int:
        return sum(c.n_states for c in self.cells)

    @property
    def output_state(self) -> int:
        """The index of the last cell's first state (its previous output)."""
        return self.n_states - self.cells[-1].n_states

    @property
    def n_weights(self) -> int:
        return sum(c.n_weights for c in self.cells)

    def state_shapes(self) -> list[tuple[int, ...]]:
        return [s for c in self.cells for s in c.state_shapes]

    def param_shapes(self) -> dict | None:
        """The own cells' ``param_shapes``, under their prefixes (``None``: none)."""
        out = {prefix + k: v for c, prefix in zip(self.cells, self.prefixes)
               if isinstance(c, _OwnCell) for k, v in (c.impl.param_shapes or {}).items()}
        return out or None

    def convert(self, w: Sequence[np.ndarray]) -> dict:
        out, i = {}, 0
        for cell, prefix in zip(self.cells, self.prefixes):
            k = cell.n_weights
            out.update({prefix + name: v for name, v in cell.convert(w[i:i + k]).items()})
            i += k
        return out

    def _own(self, params, prefix: str) -> dict:
        if not prefix:
            return params
        return {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}

    def input_projection(self, params, x: Array, rt: Runtime) -> Array:
        return self.cells[0].input_projection(self._own(params, self.prefixes[0]), x, rt)

    def step(self, params, rt: Runtime) -> Callable:
        if len(self.cells) == 1:
            return self.cells[0].step(self._own(params, self.prefixes[0]), rt)
        own = [self._own(params, p) for p in self.prefixes]
        steps = [c.step(o, rt) for c, o in zip(self.cells, own)]

        def stacked(xw, states):
            new: list = []
            i = 0
            out = None
            for k, (cell, step) in enumerate(zip(self.cells, steps)):
                if k:  # the next cell reads this step's output of the previous one
                    xw = cell.input_projection(own[k], out, rt)
                out, ns = step(xw, tuple(states[i:i + cell.n_states]))
                new.extend(ns)
                i += cell.n_states
            return out, tuple(new)

        return stacked


def _refuse_stateful(config: Mapping[str, Any], ctx: ConvertContext) -> None:
    if config.get("stateful"):
        raise ctx.error("stateful RNNs carry their state from one call to the next; an "
                        "attribution needs a pure function. Rebuild the layer with "
                        "stateful=False (same weights) and save again")


def _recurrent_layer(stack: _Stack, config: Mapping[str, Any], ctx: ConvertContext,
                     weight_groups: tuple[str, ...], what: str) -> LayerImpl:
    """A Keras RNN layer (``SimpleRNN``/``LSTM``/``GRU``, ``RNN(cell)``) running ``stack``."""
    return_sequences = bool(config.get("return_sequences", False))
    return_state = bool(config.get("return_state", False))
    go_backwards = bool(config.get("go_backwards", False))
    zero_output = bool(config.get("zero_output_for_mask", False))
    time_major = bool(config.get("time_major", False))
    unroll = bool(config.get("unroll", False))
    # At masked steps the loops of TensorFlow (tf.keras 2 too) and PyTorch, and every
    # unrolled loop, output the previous output (zeros before the first unmasked step);
    # Keras 3's scan on JAX/NumPy outputs the first state as it is (the initial state there).
    zero_initial_output = unroll or ctx.backend in ("tensorflow", "torch")
    # The unrolled loop of TensorFlow (tf.keras 2, Keras 3 on TensorFlow; Keras 3's PyTorch
    # backend has the same code) with zero_output_for_mask (a Bidirectional's layers) repeats
    # the previous output at masked steps like the generic loop, then zeroes the outputs
    # (kept in processing order) where the mask *in time order* is False: with go_backwards
    # output i is zeroed by the mask of step i, not of step T-1-i that it processed.
    tf_unrolled = unroll and ctx.backend in ("tensorflow", "torch")
    tf_unrolled_backwards = tf_unrolled and zero_output and go_backwards
    # Keras 3's unrolled loop on JAX/NumPy ignores zero_output_for_mask: masked steps repeat
    # the previous output there, in a Bidirectional too.
    if ctx.keras_major >= 3 and unroll and not tf_unrolled and zero_output:
        ctx.backend_dependent("an unrolled RNN with zero_output_for_mask (which "
                              "Bidirectional sets) outputs zeros at masked steps on Keras's "
                              "TensorFlow and PyTorch backends, the previous output on JAX "
                              "and NumPy")
        zero_output = False
    shapes = stack.state_shapes()
    sizes = [s[0] if len(s) == 1 else s for s in shapes]

    def call(params, x, *args, rt, mask=None, initial_state=None, **kwargs):
        if args:  # RNN(x, initial_state) called positionally
            initial_state = args[0]
        x, mask, initial_state = _split_inputs(x, mask, initial_state)
        if time_major:  # (time, batch, ...) arrays; tf.keras's masks are (time, batch) too
            x = jnp.swapaxes(x, 0, 1)
            mask = None if mask is None else jnp.swapaxes(mask, 0, 1)
        n = x.shape[0]
        # stacked cells take one list of states per cell ([[h1, c1], [h2]]): flat here
        states = (None if initial_state is None
                  else jax.tree_util.tree_leaves(_state_list(initial_state)))
        xw = stack.input_projection(params, x, rt)
        if states is None:  # an integer input (an Input of ints) runs in float32, as in Keras
            dtype = next((d for d in (x.dtype, xw.dtype)
                          if jnp.issubdtype(d, jnp.floating)), jnp.float32)
            states = [jnp.zeros((n,) + s, dtype) for s in shapes]
        if len(states) != len(shapes):
            raise ValueError(f"{what} expects {len(shapes)} initial states (of sizes {sizes}), "
                             f"got {len(states)}")
        quirk = tf_unrolled_backwards and mask is not None
        step = stack.step(params, rt)
        if mask is not None and not (zero_initial_output or zero_output):
            step = _warn_where_loops_differ(step, stack, initial_state is not None, ctx)
        outs, final = run_rnn(step, xw,
                              tuple(states), mask, go_backwards=go_backwards,
                              zero_output_for_mask=zero_output and not quirk,
                              zero_initial_output=zero_initial_output,
                              output_state=stack.output_state)
        if quirk:  # see tf_unrolled_backwards; the last output: the mask of its step (0)
            keep = mask.astype(bool).reshape(mask.shape[:2] + (1,) * (outs.ndim - 2))
            outs = (jnp.where(keep, outs, jnp.zeros_like(outs)) if return_sequences else
                    outs.at[:, -1].set(jnp.where(keep[:, 0], outs[:, -1], 0)))
        y = outs if return_sequences else outs[:, -1]
        if time_major and return_sequences:
            y = jnp.swapaxes(y, 0, 1)
        return (y, *final) if return_state else y

    def compute_mask(mask, *args, **kwargs):
        if isinstance(mask, (list, tuple)):  # [x, *initial_state] (tf.keras 2)
            mask = mask[0]
        out = mask if return_sequences else None
        return [out] + [None] * len(shapes) if return_state else out

    return LayerImpl(call=call, convert_weights=stack.convert, n_weights=stack.n_weights,
                     mask_call=True, compute_mask=compute_mask, weight_groups=weight_groups,
                     param_shapes=stack.param_shapes())


def _warn_where_loops_differ(step: Callable, stack: _Stack, initial_state: bool,
                             ctx: ConvertContext) -> Callable:
    """``step``, which warns (:meth:`ConvertContext.backend_dependent`, when traced) where
    the backend is unknown and Keras's loops differ at the masked steps of this call: with an
    ``initial_state`` (Keras 3's scan on JAX/NumPy outputs it before the first unmasked step,
    the loops of TensorFlow and PyTorch zeros), or where the last cell is one of the user's
    own whose output is not (the same array as) its first state (the scan outputs that state,
    those loops the previous output). Keras's cells output their first state."""
    own = isinstance(stack.cells[-1], _OwnCell)
    if initial_state:
        ctx.backend_dependent("a masked RNN with an initial_state outputs it at masked steps "
                              "before the first unmasked one on Keras's JAX and NumPy "
                              "backends, zeros on TensorFlow and PyTorch")
    if initial_state or not own or ctx.keras_backend is not None:
        return step

    def watched(xw, states):
        out, new = step(xw, states)
        if out is not new[stack.output_state]:
            ctx.backend_dependent(
                f"the output of its cell {stack.cells[-1].cls} is not its first state: at "
                "masked steps Keras's JAX and NumPy backends output that state, TensorFlow "
                "and PyTorch the previous output (zeros before the first unmasked step)")
        return out, new

    return watched


def _rnn_layer(kind: str, config: Mapping[str, Any], ctx: ConvertContext,
               cudnn: bool = False) -> LayerImpl:
    _refuse_stateful(config, ctx)
    cell = _cell_from_config(kind, config, ctx, cudnn)
    return _recurrent_layer(_Stack((cell,), ("",)), config, ctx, ("cell",), kind)


# ---------------------------------------------------------------------- RNN(cell)
#: the built-in cells an ``RNN`` layer may hold (alone or in a ``StackedRNNCells``)
_CELL_KINDS = {"SimpleRNNCell": "simple", "LSTMCell": "lstm", "GRUCell": "gru"}


def _serialized(obj: Any, ctx: ConvertContext, what: str) -> tuple[str, dict]:
    """``(class name, config)`` of a serialized Keras object (``{"class_name", "config"}``;
    Keras 3 may prefix the class with its package, ``"keras.layers>LSTMCell"``)."""
    if not isinstance(obj, Mapping) or "class_name" not in obj:
        raise ctx.error(f"expected {what} as a serialized Keras object with 'class_name' and "
                        f"'config', got {str(obj)[:200]}")
    return str(obj["class_name"]).split(">")[-1], dict(obj.get("config") or {})


def _unknown_cell(cls: str, ctx: ConvertContext, where: str = "", needs: str | None = None,
                  own: bool = False) -> Exception:
    mine = (f" (a class of the model's own code named like Keras's {cls}, which the built-in "
            "cell is not)" if own and cls in _CELL_KINDS else "")
    return ctx.error(
        f"its cell{where} is a {cls}{mine}, which has no converter: an RNN layer is converted "
        f"when its cell is one of {sorted(_CELL_KINDS)}, a cell with a registered converter, "
        "or a StackedRNNCells of them. For a cell of your own, register a converter that "
        "returns model_import.CellImpl(step=..., state_size=..., convert_weights=..., "
        f"n_weights=...), e.g. @register_layer({needs or cls!r}) def my_cell(config, ctx): "
        "... (README, 'Custom layers': recurrent cells)", needs=needs or cls, own=own)


def _cell(entry: Any, ctx: ConvertContext, what: str, where: str = ""
          ) -> tuple[_Cell | _OwnCell, str]:
    """A built-in cell (a ``SimpleRNNCell``, ``LSTMCell``, ``GRUCell`` of Keras's) or one of
    the user's own with a converter returning a :class:`CellImpl`, and its class name."""
    cls, cfg = _serialized(entry, ctx, what)
    raw = str(entry["class_name"])
    registered = raw if ">" in raw else entry.get("registered_name")
    own = own_class(entry)
    if cls in _CELL_KINDS and not own:
        return _cell_from_config(_CELL_KINDS[cls], cfg, ctx), cls
    name, conv = converter_for(cls, registered, own, ctx.custom_layers)
    if conv is None:
        raise _unknown_cell(cls, ctx, where, needs=registered if own and registered else cls,
                            own=own)
    ctx.note_user_converter(cls, conv)
    sub = dataclasses.replace(ctx, layer_name=f"{ctx.layer_name}/{cfg.get('name', cls)}",
                              class_name=cls)
    impl = conv(cfg, sub)
    if not isinstance(impl, CellImpl):
        raise ctx.error(
            f"its cell{where} is a {cls}, whose converter returned a "
            f"{type(impl).__name__}; a cell's converter must return model_import.CellImpl "
            "(its step, state_size and weights), which the RNN layer runs at every step",
            needs=name)
    if not isinstance(impl.n_weights, (int, np.integer)) or impl.n_weights < 0:
        raise ctx.error(f"the converter of its cell{where} ({cls}) gives n_weights="
                        f"{impl.n_weights!r}; expected the number of the cell's weight "
                        "arrays (an int, 0 for none)", needs=name)
    try:
        _state_shapes(impl.state_size)
    except TypeError as e:
        raise ctx.error(f"the converter of its cell{where} ({cls}): {e}", needs=name) from e
    return _OwnCell(impl, cls, f"layer {ctx.layer_name!r}"), cls


def _rnn_cells(config: Mapping[str, Any], ctx: ConvertContext
               ) -> tuple[_Stack, tuple[str, ...]]:
    """The cells of an ``RNN`` layer config and the groups of a Keras 3 weights file that
    hold their arrays (``cell``; ``cell/cells/<key>`` for stacked cells, ``key`` the
    snake_case class name made unique in cell order: ``lstm_cell``, ``lstm_cell_1``)."""
    entry = config.get("cell")
    cls, cfg = _serialized(entry, ctx, "the RNN's cell")
    if cls != "StackedRNNCells" or own_class(entry):
        cell, _ = _cell(entry, ctx, "the RNN's cell")
        return _Stack((cell,), ("",)), ("cell",)
    if cfg.get("reverse_state_order"):
        raise ctx.error("its StackedRNNCells has reverse_state_order=True (a tf.keras 1 "
                        "option), which is not supported; expected the cells' states in cell "
                        "order. Rebuild the layer without it")
    subs = cfg.get("cells")
    if not isinstance(subs, list) or not subs:
        raise ctx.error(f"its StackedRNNCells lists no cells (expected a non-empty 'cells' "
                        f"list, got {str(subs)[:200]})")
    cells, classes = [], []
    for i, sub in enumerate(subs):
        cell, scls = _cell(sub, ctx, f"cell {i} of the StackedRNNCells",
                           f" {i} in the StackedRNNCells")
        cells.append(cell)
        classes.append(scls)
    prefixes = tuple(f"cell_{i}/" for i in range(len(cells)))
    return (_Stack(tuple(cells), prefixes),
            tuple(f"cell/cells/{key}" for key in object_keys(classes)))


@register_layer("RNN")
def _rnn(config, ctx):
    """``keras.layers.RNN(cell)`` with a built-in cell (``SimpleRNNCell``, ``LSTMCell``,
    ``GRUCell``), a cell of the user's own whose converter returns a :class:`CellImpl`, or a
    ``StackedRNNCells`` of them: the same recurrence, masks, states and
    options as the SimpleRNN/LSTM/GRU layers (``unroll`` changes only what masked leading
    steps output: zeros, as Keras's unrolled loop does). A stack's ``return_state`` returns
    every cell's states, flat, in cell order (``out, h1, c1, h2``), as a Functional model
    indexes them; ``initial_state`` takes them nested per cell (``[[h1, c1], [h2]]``) or
    flat."""
    _refuse_stateful(config, ctx)
    stack, groups = _rnn_cells(config, ctx)
    return _recurrent_layer(stack, config, ctx, groups, "RNN")


def _state_count(cls: str, config: Mapping[str, Any], ctx: ConvertContext) -> int:
    """How many states a wrapped recurrent layer returns with ``return_state``."""
    if cls == "RNN":
        return _rnn_cells(config, ctx)[0].n_states
    return 2 if cls in ("LSTM", "CuDNNLSTM") or cls.startswith("ConvLSTM") else 1


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
    raw = str(layer_cfg["class_name"])
    registered = raw if ">" in raw else layer_cfg.get("registered_name")
    cls = raw.split(">")[-1]
    cfg = dict(layer_cfg.get("config") or {})
    own = own_class(layer_cfg)
    cls, conv = converter_for(cls, registered, own, ctx.custom_layers)
    if conv is None and (cls in MODEL_CLASSES or functional_subclass(layer_cfg)):
        # no converter to supply: models (and keras.Model subclasses built the Functional
        # way, saved under their own class name) are graphs
        raise _wrapped_model_error(cls, cfg, ctx)
    if conv is None:
        name = registered if own and registered else cls
        mine = (f" (a class of the model's own code named like Keras's {cls}, which the "
                "built-in converter of that name is not for)"
                if own and lookup(cls) is not None else "")
        raise ctx.error(f"it wraps a {cls} layer{mine}, which has no converter", needs=name,
                        own=own)
    ctx.note_user_converter(cls, conv)
    sub = dataclasses.replace(ctx, layer_name=f"{ctx.layer_name}/{cfg.get('name', cls)}",
                              class_name=cls)
    impl = with_own_activation(returned_layer_impl(conv(cfg, sub), conv, sub), sub)
    if impl.subgraph is not None:  # a converter that builds a nested graph (Pipeline)
        raise _wrapped_model_error(cls, cfg, ctx)
    impl = _masking.with_builtin_rules(impl, cls, cfg, sub,
                                       builtin=conv in builtin_converters())
    return cls, cfg, impl


def _wrapped_model_error(cls: str, cfg: Mapping[str, Any], ctx: ConvertContext) -> Exception:
    """The refusal of a wrapper (``ctx``) around a whole model, or a layer converted as one
    (``Pipeline``): a nested graph, which has no converter to register (``needs=None``)."""
    return ctx.error(f"it wraps a whole model ({cls} {cfg.get('name')!r}), which the importer "
                     "does not convert inside a wrapper. Wrap the model's layers one by one "
                     f"({ctx.class_name}(Dense(...)), ...) and save it again", needs=None)


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


def _merge_time(x: Array) -> Array:
    """``(N, T, ...)`` as one batch ``(T * N, ...)``, time-major: row ``t * N + i`` is
    ``x[i, t]``. Rows that are neighbours in ``x``'s batch stay neighbours within each step,
    as DeepLIFT's paired batch ``[x; x']`` (rows ``2 i``, ``2 i + 1``) needs its rules inside
    the wrapped layer to read (batch-major, ``x.reshape``, paired input ``i``'s step ``t``
    with its own step ``t + 1``)."""
    return jnp.swapaxes(x, 0, 1).reshape((x.shape[0] * x.shape[1],) + x.shape[2:])


@register_layer("TimeDistributed")
def _time_distributed(config, ctx):
    """The wrapped layer applied to every step ``x[:, t]`` (the batch and time axes merged
    into one batch); a mask ``(N, T, ...)`` reaches a mask-using wrapped layer step by step.
    The wrapped layer's fused activation is the wrapper's (the ``logits`` head removes it
    from a ``TimeDistributed(Dense(softmax))`` output), and a wrapped rule layer (``Dense``,
    a convolution) or affine layer is one too (LRP, FullGrad)."""
    cls, cfg, inner = convert_inner(config["layer"], ctx)
    major = ctx.keras_major
    # a named activation (over the last axis, if any) is the wrapper's; another (a Softmax
    # layer with its own axis) is applied per step, as the wrapped layer would
    lifted = isinstance(inner.activation, str)

    def step(params, x, *, rt, **kw):
        return (inner.call(params, x, rt=rt, **kw) if lifted
                else _apply(inner, params, x, rt, major, **kw))

    def call(params, x, *, rt, mask=None):
        n, t = x.shape[:2]
        kw = {}
        if inner.mask_call is True and mask is not None:
            if mask.ndim < 3:
                raise ValueError(f"the wrapped {cls} uses masks; a (batch, time) mask gives "
                                 "it one flag per sample, which Keras rejects as well")
            kw["mask"] = _merge_time(mask)
        elif inner.mask_call and mask is not None:  # (no mask: the wrapped layer's call)
            raise ValueError(f"TimeDistributed({cls}) with masks per argument is not "
                             "supported")
        y = step(params, _merge_time(x), rt=rt, **kw)
        if isinstance(y, (list, tuple)):
            raise ValueError(f"the wrapped {cls} returns several tensors")
        return jnp.swapaxes(y.reshape((t, n) + y.shape[1:]), 0, 1)

    return LayerImpl(call=call, activation=inner.activation if lifted else None,
                     convert_weights=inner.convert_weights, n_weights=inner.n_weights,
                     # a frozen wrapped layer (td.layer.trainable = False): all non-trainable
                     n_non_trainable=(inner.n_weights or 0) if cfg.get("trainable") is False
                     else inner.n_non_trainable, mask_call=True, compute_mask="propagate",
                     weight_groups=_groups("layer", inner), data_format=inner.data_format,
                     affine=inner.affine and (lifted or inner.activation is None),
                     relevance=(inner.relevance and inner.merge is None
                                and (lifted or inner.activation is None)))


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
    n_states = _state_count(fcls, fcfg, ctx)
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
        if merge_mode is None:
            out = (y, y_rev)
        elif merge_mode == "concat":
            out = (_MERGES[merge_mode](y, y_rev),)
        else:  # a sum (LRP's epsilon rule splits it) or a product of the two directions
            out = (rt.rule(lambda p, a, b: _MERGES[merge_mode](a, b), {}, y, y_rev,
                           product=merge_mode == "mul"),)
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

