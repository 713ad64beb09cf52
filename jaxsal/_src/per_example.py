"""Whether a model computes each example's outputs from that example alone.

Every attribution method reads row ``i`` of the model's outputs as the score of input ``i``,
and most of them run the model on batches they build themselves: an input and its reference
in one pass (DeepLIFT), path points or noisy copies (integrated gradients, SmoothGrad),
masked copies (occlusion, LIME, RISE, Shapley values). A model whose outputs mix the
examples of a batch -- ``tf.nn.l2_loss`` or ``tf.reduce_sum`` over every element, a sum or
a mean over the batch axis, ``h / l2_loss(h)`` -- gives maps that depend on which other rows
share the pass: silently meaningless. :func:`check_per_example` refuses such a model before
anything is compiled.

The check reads the jaxpr of one forward pass (traced for the shapes anyway; nothing is
compiled or run) and follows the batch axis of the inputs through it: which axis of every
value holds the examples (through transposes, reshapes that merge or split it with other
axes, matmuls, convolutions, loops), and whether an operation reduces over it (a sum, a max,
an ``argmax``, a cumulative sum, a sort, a matmul contracting it, a window sliding along
it) or pairs rows of two examples (``x @ x.T``). Where it loses track of the batch axis
(a gather or a scatter that indexes it, slices of it, an operation it does not know), it
assumes nothing: the check refuses only what it has seen mix the examples, so a model it
cannot follow is never refused (and not vouched for either). Control flow that depends on
the whole batch (a ``lax.cond`` on ``jnp.all(x > 0)``) is not counted: only values that
reach the outputs are.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import jax

#: A value that does not depend on the inputs (weights, constants, shapes).
NONE = "none"
#: A value whose dependence on the inputs the check could not follow.
UNKNOWN = "unknown"
#: Inside a loop over the batch axis (``lax.scan``, ``lax.map``): a value that depends on
#: the example of the current iteration only.
ONE = "one example"


@dataclasses.dataclass(frozen=True)
class Rows:
    """A value whose axis ``axis`` holds the examples: along it, ``outer`` blocks of ``n``
    examples of ``inner`` consecutive entries each (``inner`` > 1 after a reshape merged
    the batch axis with the axes after it, ``(N, T, F) -> (N*T, F)``; ``outer`` > 1 after
    one merged it with axes before it). Each entry depends on its own example only."""

    axis: int
    inner: int = 1

    def __post_init__(self):  # NumPy ints from a jaxpr's parameters compare equal anyway
        object.__setattr__(self, "axis", int(self.axis))
        object.__setattr__(self, "inner", int(self.inner))


@dataclasses.dataclass(frozen=True)
class Coupled:
    """A value that depends on several examples of the batch; ``where`` says what mixed
    them (an operation and, where JAX recorded them, the layer's name and the line)."""

    where: str


def _join(states: Sequence[Any]) -> Any:
    """The state of a value computed elementwise from values in ``states``."""
    out = NONE
    for s in states:
        if isinstance(s, Coupled):
            return s
        if s == NONE:
            continue
        if out == NONE:
            out = s
        elif out != s:
            out = UNKNOWN
    return out


def _where(eqn: Any, what: str) -> Coupled:
    """A :class:`Coupled` for ``eqn``: ``what`` it does, named by the layer (JAX's name
    stack: the layer scopes of a ``KerasModel``) and the source line JAX recorded for it
    (completed by the enclosing call's, :meth:`_Analysis._call`, where it has none)."""
    return Coupled(what + _located(eqn))


def _located(eqn: Any) -> str:
    """`` in layer 'dense_1' at file.py:12 (f)`` for ``eqn``, as much as JAX recorded."""
    parts = []
    try:
        from jax._src import source_info_util

        scope = str(eqn.source_info.name_stack)
        line = source_info_util.summarize(eqn.source_info)
        if scope:  # a Keras layer: its name says more than a line of the importer
            parts.append(f"in layer {scope!r}")
        elif line and "unknown" not in line:
            parts.append(f"at {line}")
    except Exception:  # JAX's private source info moved: the operation alone
        pass
    return "".join(" " + p for p in parts)


_ELEMENTWISE = frozenset("""
abs acos acosh add and asin asinh atan atan2 atanh bessel_i0e bessel_i1e cbrt ceil clamp
clz complex conj convert_element_type copy copy_p cos cosh digamma div eq erf erf_inv erfc
exp exp2 expm1 floor ge gt igamma igamma_grad_a igammac imag integer_pow is_finite le lgamma
log log1p logistic lt max min mul ne neg nextafter not or polygamma population_count pow
random_gamma_grad real reduce_precision regularized_incomplete_beta rem round rsqrt
select_n shift_left shift_right_arithmetic shift_right_logical sign sin sinh sqrt square
sub tan tanh xor zeta stop_gradient
""".split())

_REDUCTIONS = frozenset("""
reduce_sum reduce_max reduce_min reduce_prod reduce_and reduce_or reduce_xor argmax argmin
""".split())

_CUMULATIVE = frozenset("cumsum cumprod cummax cummin cumlogsumexp".split())

_WINDOWS = frozenset("reduce_window_sum reduce_window_max reduce_window_min".split())

#: Primitives that call a jaxpr on their operands as they are (nested jits, checkpoints,
#: custom derivatives): the check follows the batch axis into them. Others that carry a
#: jaxpr (``reduce``'s reducer, ``shard_map``'s per-shard body) are not calls.
_CALLS = frozenset("""
jit pjit closed_call core_call remat remat2 checkpoint custom_jvp_call custom_vjp_call
custom_vjp_call_jaxpr
""".split())

_LINALG = frozenset("""
cholesky eigh eig lu qr householder_product svd schur triangular_solve tridiagonal
tridiagonal_solve lu_pivots_to_permutation
""".split())


def _shape(v: Any) -> tuple:
    return tuple(getattr(getattr(v, "aval", None), "shape", ()))


class _Analysis:
    def __init__(self, n: int):
        self.n = n

    # ------------------------------------------------------------------ a jaxpr
    def run(self, jaxpr: Any, in_states: Sequence[Any], consts_states: Sequence[Any] = ()
            ) -> list:
        env: dict = {}

        def read(v):
            if type(v).__name__ == "Literal":
                return NONE
            return env.get(v, NONE)

        for v, s in zip(jaxpr.constvars, consts_states):
            env[v] = s
        for v, s in zip(jaxpr.invars, in_states):
            env[v] = s
        for eqn in jaxpr.eqns:
            ins = [read(v) for v in eqn.invars]
            outs = self.eqn(eqn, ins)
            for v, s in zip(eqn.outvars, outs):
                env[v] = s
        return [read(v) for v in jaxpr.outvars]

    def closed(self, closed_jaxpr: Any, in_states: Sequence[Any]) -> list:
        jaxpr = getattr(closed_jaxpr, "jaxpr", closed_jaxpr)
        return self.run(jaxpr, in_states, [NONE] * len(jaxpr.constvars))

    # ------------------------------------------------------------------ one equation
    def eqn(self, eqn: Any, ins: list) -> list:
        nout = len(eqn.outvars)
        if all(s == NONE for s in ins):
            return [NONE] * nout
        if all(s in (NONE, ONE) for s in ins):
            return [ONE] * nout
        # the current example of a loop with the whole batch: not followed
        ins = [UNKNOWN if s == ONE else s for s in ins]
        name = eqn.primitive.name
        # a rule of its own (``_p_<primitive>``), else one of a family
        rule = (self._reduce_generic if name == "reduce"
                else getattr(self, "_p_" + name.replace("-", "_"), None))
        if rule is not None:
            return rule(eqn, ins)
        if name in _ELEMENTWISE:
            return self._elementwise(eqn, ins)
        if name in _REDUCTIONS:
            return self._reduce(eqn, ins)
        if name in _CUMULATIVE:
            return self._along(eqn, ins, eqn.params["axis"], f"{name} along the batch axis")
        if name in _WINDOWS:
            return self._window(eqn, ins)
        if name in _LINALG:
            return self._linalg(eqn, ins)
        sub = self._subjaxpr(eqn) if name in _CALLS else None
        if sub is not None:
            return self._call(eqn, ins, sub)
        return self._opaque(ins, nout)

    @staticmethod
    def _opaque(ins: list, nout: int) -> list:
        coupled = [s for s in ins if isinstance(s, Coupled)]
        return [coupled[0] if coupled else UNKNOWN] * nout

    def _elementwise(self, eqn, ins):
        out_shape = _shape(eqn.outvars[0])
        states = []
        for v, s in zip(eqn.invars, ins):
            shape = _shape(v)
            # operands may broadcast along axes of size 1 (never the batch axis, of size
            # n >= 2); a bitcast that changes the last axis is not followed
            if isinstance(s, Rows) and (len(shape) != len(out_shape)
                                        or shape[s.axis] != out_shape[s.axis]):
                s = UNKNOWN
            states.append(s)
        return [_join(states)] * len(eqn.outvars)

    def _reduce(self, eqn, ins):
        (s,) = ins[:1]
        axes = tuple(eqn.params["axes"])
        if isinstance(s, Rows):
            if s.axis in axes:
                return [_where(eqn, f"{eqn.primitive.name} over the batch axis")]
            return [Rows(s.axis - sum(a < s.axis for a in axes), s.inner)]
        return [s]

    def _reduce_generic(self, eqn, ins):  # lax.reduce: k operands, then k initial values
        k = len(eqn.outvars)
        init = _join(ins[k:])
        if isinstance(init, (Coupled, Rows)) or init == UNKNOWN:
            return self._opaque(ins, k)
        out = []
        for s in ins[:k]:
            if isinstance(s, Rows) and s.axis in tuple(eqn.params["dimensions"]):
                return [_where(eqn, "reduce over the batch axis")] * k
            if isinstance(s, Rows):
                dims = tuple(eqn.params["dimensions"])
                s = Rows(s.axis - sum(d < s.axis for d in dims), s.inner)
            out.append(s)
        return [_join(out)] * k

    def _along(self, eqn, ins, axis, what):
        s = _join(ins)
        if isinstance(s, Rows) and s.axis == axis % max(len(_shape(eqn.invars[0])), 1):
            return [_where(eqn, what)] * len(eqn.outvars)
        return [s] * len(eqn.outvars)

    def _window(self, eqn, ins):
        s = ins[0]
        if not isinstance(s, Rows):
            return [s]
        p = eqn.params
        a = s.axis
        if p["window_dimensions"][a] > 1:
            return [_where(eqn, f"{eqn.primitive.name} with a window along the batch axis")]
        trivial = (p["window_strides"][a] == 1 and tuple(p["padding"][a]) == (0, 0)
                   and p["base_dilation"][a] == 1 and p["window_dilation"][a] == 1)
        return [s if trivial else UNKNOWN]

    def _linalg(self, eqn, ins):
        s = _join(ins)
        if isinstance(s, Rows):
            ranks = [len(_shape(v)) for v, t in zip(eqn.invars, ins) if t != NONE]
            if s.axis < min(ranks) - 2:  # a leading (batch) axis of the matrices
                return [s if len(_shape(o)) > s.axis else UNKNOWN for o in eqn.outvars]
            return [UNKNOWN] * len(eqn.outvars)
        return [s] * len(eqn.outvars)

    # ------------------------------------------------------------------ structure
    def _p_broadcast_in_dim(self, eqn, ins):
        s = ins[0]
        if isinstance(s, Rows):
            dims = eqn.params["broadcast_dimensions"]
            src = _shape(eqn.invars[0])
            if eqn.params["shape"][dims[s.axis]] != src[s.axis]:
                return [UNKNOWN]
            return [Rows(int(dims[s.axis]), s.inner)]
        return [_join(ins)]  # a dynamic shape's operands: sizes, not values

    def _p_reshape(self, eqn, ins):
        s = ins[0]
        if not isinstance(s, Rows) or eqn.params.get("dimensions") is not None:
            return [s if not isinstance(s, Rows) else UNKNOWN]
        src, dst = _shape(eqn.invars[0]), tuple(eqn.params["new_sizes"])
        # the batch digit of the flat (row-major) index: stride `lo`, radix n
        lo = s.inner * math.prod(src[s.axis + 1:])
        hi = lo * self.n
        for b in range(len(dst)):
            stride = math.prod(dst[b + 1:])
            if stride <= lo and lo % stride == 0 and hi <= stride * dst[b] \
                    and (stride * dst[b]) % hi == 0:
                return [Rows(b, lo // stride)]
        return [UNKNOWN]

    def _p_squeeze(self, eqn, ins):
        s = ins[0]
        if isinstance(s, Rows):
            dims = tuple(d % len(_shape(eqn.invars[0])) for d in eqn.params["dimensions"])
            if s.axis in dims:
                return [UNKNOWN]
            return [Rows(s.axis - sum(d < s.axis for d in dims), s.inner)]
        return [s]

    def _p_transpose(self, eqn, ins):
        s = ins[0]
        if isinstance(s, Rows):
            return [Rows(tuple(eqn.params["permutation"]).index(s.axis), s.inner)]
        return [s]

    def _p_rev(self, eqn, ins):
        s = ins[0]
        if isinstance(s, Rows) and s.axis in tuple(eqn.params["dimensions"]):
            return [UNKNOWN]  # the examples in another order
        return [s]

    def _p_slice(self, eqn, ins):
        s = ins[0]
        if isinstance(s, Rows):
            a = s.axis
            p = eqn.params
            whole = (p["start_indices"][a] == 0
                     and p["limit_indices"][a] == _shape(eqn.invars[0])[a]
                     and (p["strides"] is None or p["strides"][a] == 1))
            return [s if whole else UNKNOWN]
        return [s]

    def _p_pad(self, eqn, ins):
        s, fill = ins[0], ins[1]
        if isinstance(fill, Coupled):
            return [fill]
        if isinstance(s, Rows):
            trivial = tuple(eqn.params["padding_config"][s.axis]) == (0, 0, 0)
            return [s if trivial and fill == NONE else UNKNOWN]
        return [_join(ins)]

    def _p_concatenate(self, eqn, ins):
        s = _join(ins)
        if isinstance(s, Rows) and s.axis == eqn.params["dimension"]:
            return [UNKNOWN]  # examples stacked with other rows
        return [s]

    def _p_optimization_barrier(self, eqn, ins):  # each operand as it is
        return list(ins)

    def _p_stack(self, eqn, ins):
        s = _join(ins)
        if isinstance(s, Rows):
            return [Rows(s.axis + (s.axis >= eqn.params["axis"]), s.inner)]
        return [s]

    def _p_tile(self, eqn, ins):
        s = ins[0]
        if isinstance(s, Rows) and eqn.params["reps"][s.axis] != 1:
            return [UNKNOWN]  # the examples repeated
        return [s]

    def _p_split(self, eqn, ins):
        s = ins[0]
        if isinstance(s, Rows) and s.axis == eqn.params["axis"]:
            return [UNKNOWN] * len(eqn.outvars)
        return [s] * len(eqn.outvars)

    def _p_sort(self, eqn, ins):
        return self._along(eqn, ins, eqn.params["dimension"], "sort along the batch axis")

    def _p_top_k(self, eqn, ins):
        rank = len(_shape(eqn.invars[0]))
        return self._along(eqn, ins, rank - 1, "top_k along the batch axis")

    def _p_fft(self, eqn, ins):
        s = ins[0]
        if isinstance(s, Rows):
            rank = len(_shape(eqn.invars[0]))
            if s.axis >= rank - len(eqn.params["fft_lengths"]):
                return [_where(eqn, "an FFT along the batch axis")]
        return [s]

    def _p_dynamic_slice(self, eqn, ins):
        s, idx = ins[0], ins[1:]
        if any(isinstance(t, Coupled) for t in idx):
            return [next(t for t in idx if isinstance(t, Coupled))]
        if isinstance(s, Rows) and all(t == NONE for t in idx) and \
                eqn.params["slice_sizes"][s.axis] == _shape(eqn.invars[0])[s.axis]:
            return [s]
        return [s if isinstance(s, Coupled) else UNKNOWN]

    def _p_dynamic_update_slice(self, eqn, ins):
        s, upd, idx = ins[0], ins[1], ins[2:]
        joined = _join([s, upd])
        if isinstance(joined, Coupled) or any(isinstance(t, Coupled) for t in idx):
            return [joined if isinstance(joined, Coupled)
                    else next(t for t in idx if isinstance(t, Coupled))]
        if isinstance(joined, Rows) and all(t == NONE for t in idx) and \
                _shape(eqn.invars[1])[joined.axis] == _shape(eqn.invars[0])[joined.axis]:
            return [joined]
        return [UNKNOWN]

    def _p_gather(self, eqn, ins):
        s, idx = ins[0], ins[1]
        if isinstance(s, Coupled) or isinstance(idx, Coupled):
            return [s if isinstance(s, Coupled) else idx]
        dn = eqn.params["dimension_numbers"]
        out_rank = len(_shape(eqn.outvars[0]))
        offset = tuple(dn.offset_dims)
        batch_out = [d for d in range(out_rank) if d not in offset]
        op_batching = tuple(getattr(dn, "operand_batching_dims", ()) or ())
        idx_batching = tuple(getattr(dn, "start_indices_batching_dims", ()) or ())
        idx_rank = len(_shape(eqn.invars[1]))
        idx_dims = list(range(idx_rank - 1))  # the last is the index vector
        if s == NONE and isinstance(idx, Rows) and idx.axis < idx_rank - 1:
            # rows of a table picked by each example's indices (an embedding)
            return [Rows(batch_out[idx_dims.index(idx.axis)], idx.inner)]
        if isinstance(s, Rows) and idx == NONE:
            a = s.axis
            if a in dn.collapsed_slice_dims or a in dn.start_index_map or a in op_batching:
                return [UNKNOWN]
            if eqn.params["slice_sizes"][a] != _shape(eqn.invars[0])[a]:
                return [UNKNOWN]
            kept = [d for d in range(len(_shape(eqn.invars[0])))
                    if d not in dn.collapsed_slice_dims and d not in op_batching]
            return [Rows(offset[kept.index(a)], s.inner)]
        if isinstance(s, Rows) and isinstance(idx, Rows) and s.inner == idx.inner == 1 \
                and s.axis in op_batching and idx.axis in idx_batching \
                and op_batching.index(s.axis) == idx_batching.index(idx.axis):
            # take_along_axis: each example's own indices into its own row
            return [Rows(batch_out[idx_dims.index(idx.axis)], 1)]
        return [UNKNOWN]

    def _p_dot_general(self, eqn, ins):
        (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
        lhs, rhs = ins[0], ins[1]
        for t in (lhs, rhs):
            if isinstance(t, Coupled):
                return [t]
        if UNKNOWN in (lhs, rhs):
            return [UNKNOWN]
        lrank, rrank = len(_shape(eqn.invars[0])), len(_shape(eqn.invars[1]))
        lfree = [d for d in range(lrank) if d not in lc and d not in lb]
        rfree = [d for d in range(rrank) if d not in rc and d not in rb]
        for t, contract in ((lhs, lc), (rhs, rc)):
            if isinstance(t, Rows) and t.axis in contract:
                return [_where(eqn, "a matmul contracting the batch axis")]
        outs = []
        for t, batch, free, shift in ((lhs, lb, lfree, len(lb)),
                                      (rhs, rb, rfree, len(lb) + len(lfree))):
            if isinstance(t, Rows):
                outs.append(Rows(tuple(batch).index(t.axis), t.inner) if t.axis in batch
                            else Rows(shift + free.index(t.axis), t.inner))
        if len(outs) == 2 and outs[0] != outs[1]:
            if all(isinstance(t, Rows) and t.axis not in b for t, b in ((lhs, lb), (rhs, rb))):
                return [_where(eqn, "a matmul pairing the rows of two examples (x @ x.T)")]
            return [UNKNOWN]
        return [outs[0]]

    def _p_conv_general_dilated(self, eqn, ins):
        lhs, rhs = ins[0], ins[1]
        for t in (lhs, rhs):
            if isinstance(t, Coupled):
                return [t]
        if rhs != NONE or not isinstance(lhs, Rows):
            return [UNKNOWN]
        p = eqn.params
        dn = p["dimension_numbers"]
        lhs_spec, rhs_spec, out_spec = dn.lhs_spec, dn.rhs_spec, dn.out_spec
        a = lhs.axis
        if a == lhs_spec[0]:
            return [Rows(out_spec[0], lhs.inner)] if p["batch_group_count"] == 1 \
                else [UNKNOWN]
        if a == lhs_spec[1]:
            if p["feature_group_count"] == 1 and p["batch_group_count"] == 1:
                return [_where(eqn, "a convolution summing over the batch axis "
                                    "(as its channels)")]
            return [UNKNOWN]
        k = list(lhs_spec[2:]).index(a)
        if _shape(eqn.invars[1])[rhs_spec[2 + k]] > 1:
            return [_where(eqn, "a convolution sliding along the batch axis")]
        return [UNKNOWN]

    # ------------------------------------------------------------------ calls and loops
    @staticmethod
    def _subjaxpr(eqn):
        for key in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
            j = eqn.params.get(key)
            if j is not None and hasattr(getattr(j, "jaxpr", j), "eqns"):
                return j
        return None

    def _call(self, eqn, ins, sub):
        jaxpr = getattr(sub, "jaxpr", sub)
        if len(jaxpr.invars) != len(ins) or len(jaxpr.outvars) != len(eqn.outvars):
            return self._opaque(ins, len(eqn.outvars))
        outs = self.closed(sub, ins)
        where = _located(eqn)  # a jnp function's own jit: the caller's line and layer
        return [Coupled(o.where + where) if isinstance(o, Coupled) and o not in ins
                and " at " not in o.where else o for o in outs]

    def _p_scan(self, eqn, ins):
        p = eqn.params
        nc, ncarry = p["num_consts"], p["num_carry"]
        consts, carry, xs = ins[:nc], ins[nc:nc + ncarry], ins[nc + ncarry:]
        over_batch = p["length"] == self.n
        inner_xs = []
        for v, s in zip(eqn.invars[nc + ncarry:], xs):
            if isinstance(s, Rows) and s.axis == 0:  # a loop over the examples
                s = ONE if over_batch and s.inner == 1 and _shape(v)[0] == self.n \
                    else UNKNOWN
            elif isinstance(s, Rows):
                s = Rows(s.axis - 1, s.inner)
            inner_xs.append(s)
        ys = []
        for _ in range(4):
            out = self.closed(p["jaxpr"], [*consts, *carry, *inner_xs])
            new = [_join([c, o]) for c, o in zip(carry, out[:ncarry])]
            new = [_where(eqn, "a loop over the batch axis carrying values from one example "
                               "to the next (an RNN run over the batch axis?)")
                   if c == ONE else c for c in new]
            ys = out[ncarry:]
            if new == list(carry):
                break
            carry = new
        else:
            carry = [c if isinstance(c, Coupled) else UNKNOWN for c in carry]
            ys = [y if isinstance(y, Coupled) else UNKNOWN for y in ys]
        ys = [Rows(y.axis + 1, y.inner) if isinstance(y, Rows)
              else Rows(0, 1) if y == ONE else y for y in ys]
        return [*carry, *ys]

    def _p_while(self, eqn, ins):
        p = eqn.params
        cn, bn = p["cond_nconsts"], p["body_nconsts"]
        bconsts, carry = ins[cn:cn + bn], ins[cn + bn:]
        for _ in range(4):
            out = self.closed(p["body_jaxpr"], [*bconsts, *carry])
            new = [_join([c, o]) for c, o in zip(carry, out)]
            if new == list(carry):
                return carry
            carry = new
        return [c if isinstance(c, Coupled) else UNKNOWN for c in carry]

    def _p_cond(self, eqn, ins):
        ops = ins[1:]  # the branch index: control, not data (see the module docstring)
        results = [self.closed(b, ops) for b in eqn.params["branches"]]
        return [_join(list(r)) for r in zip(*results)]


def output_states(model: Any, x: Any) -> list | None:
    """``(state, shape)`` of each of ``model``'s output arrays (leaves) for inputs of
    ``x``'s shapes (abstract: ``jax.ShapeDtypeStruct`` leaves): the state a :class:`Rows`,
    a :class:`Coupled`, :data:`NONE` or :data:`UNKNOWN`. ``None`` where the model cannot be
    traced so."""
    from jaxsal._src import base

    leaves = jax.tree_util.tree_leaves(x)
    try:
        closed = base.forward_jaxpr(model, x)[0]
    except Exception:  # a function that runs only at some batch sizes, say
        return None
    n_params = len(jax.tree_util.tree_leaves(model.params))
    ins = [NONE] * n_params + [Rows(0, 1)] * len(leaves)
    if len(ins) != len(closed.jaxpr.invars):
        return None
    states = _Analysis(int(leaves[0].shape[0])).closed(closed, ins)
    return list(zip(states, (tuple(o.aval.shape) for o in closed.jaxpr.outvars)))


def _analysis_inputs(x: Any) -> Any:
    """The abstract inputs the check traces: ``x``'s, or a batch of 2 of them where ``x``
    holds a single example (then the batch axis cannot be told apart from other axes of
    size 1 after a reshape)."""
    from jaxsal._src import base

    n = int(jax.tree_util.tree_leaves(x)[0].shape[0])
    return base._sds(x) if n >= 2 else base.sub_batch_shapes(x, 2)


def coupling(model: Any, x: Any) -> tuple[int, bool, str] | None:
    """``(output position, mixed, what)`` for the first output (leaf) of ``model`` that
    mixes the examples of a batch (``mixed``) or holds them elsewhere than on its first axis
    alone, or ``None`` (traced once per model and input shapes, cached)."""
    from jaxsal._src import base

    xs = _analysis_inputs(x)
    n = int(jax.tree_util.tree_leaves(xs)[0].shape[0])
    key = ("per-example", base.function_key(model), base.shape_key(xs))

    def make():
        for i, (s, shape) in enumerate(output_states(model, xs) or ()):
            if isinstance(s, Coupled):
                return i, True, s.where
            if isinstance(s, Rows) and s.axis != 0:
                return i, False, f"its inputs are on axis {s.axis}, not on axis 0"
            if isinstance(s, Rows) and (s.inner != 1 or shape[0] != n):
                return i, False, ("its first axis holds the inputs together with other "
                                  "values (a reshape merged the batch axis with another)")
        return None

    return base._SHAPES.get(key, make)


def check_per_example(model: Any, x: Any, y: Any = None, *, mixing: bool = True) -> None:
    """Refuse ``model`` unless its outputs (``y``, abstract, for the inputs ``x``; traced
    when not given) have one row per input, each computed from its own input alone (see the
    module docstring): a ``ValueError`` saying what was expected, what the model does and
    how to fix it. ``mixing=False``: the outputs' shapes only (:func:`jaxsal.maximize` runs
    the model on one image at a time, where mixing a batch of one changes nothing)."""
    from jaxsal._src import base

    if y is None:
        y = base.model_shapes(model, x)[0]
    n = int(jax.tree_util.tree_leaves(x)[0].shape[0])
    inputs = f"{n} input{'s' if n != 1 else ''}"
    outs = jax.tree_util.tree_leaves(y)
    unbatched = [tuple(o.shape) for o in outs if not o.shape or o.shape[0] != n]
    found = coupling(model, x) if unbatched or mixing else None
    if not unbatched and found is None:
        return
    expected = (f"expected outputs with the batch axis first, (N={n}, ...), one row per "
                "input, each computed from its own input alone")
    if unbatched:  # scores would be read across inputs, or broadcast against the wrong N
        got = (f"the model returned outputs of shape {', '.join(map(str, unbatched))} for a "
               f"batch of {inputs}; {expected}")
        if found is not None:
            got += f". {'It mixes the inputs' if found[1] else 'Why'}: {found[2]}"
    else:
        i, mixed, where = found
        which = f"output {i}" if len(outs) > 1 else "output"
        got = (f"the model's {which} (shape {tuple(outs[i].shape)} for a batch of {inputs}) "
               f"{'mixes the inputs of the batch' if mixed else 'has no row per input'}: "
               f"{where}; {expected}. Every method reads row i as input i's score and runs "
               "the model on batches it builds (an input with its reference, noisy or masked "
               "copies): the maps would depend on the other rows")
    if len(outs) > 1:
        _, first = base.several_outputs(model, [o.shape for o in outs])
        hint = base.pick_output_hint(model, first)
        got += (f". Every output of the model is checked; to explain one that keeps the "
                f"inputs apart, {hint[0].lower()}{hint[1:]}")
    raise ValueError(
        f"{got}. Make the model map each input to its own output: reduce over the axes "
        "after the batch axis only (tf.reduce_sum(h, axis=-1), not tf.reduce_sum(h) or "
        "tf.nn.l2_loss(h)), or run it on one input at a time: jaxsal.FunctionModel("
        "lambda p, x: jax.vmap(lambda xi: model.apply(p, xi[None]).reshape(-1))(x), "
        "model.params)")
