"""Whether a model computes each example's outputs from that example alone.

Every attribution method reads row ``i`` of the model's outputs as the score of input ``i``,
and most of them run the model on batches they build themselves: an input and its reference
in one pass (DeepLIFT), path points or noisy copies (integrated gradients, SmoothGrad),
masked copies (occlusion, LIME, RISE, Shapley values). A model whose outputs mix the
examples of a batch -- ``tf.nn.l2_loss`` or ``tf.reduce_sum`` over every element, a sum or
a mean over the batch axis, ``h / l2_loss(h)`` -- gives maps that depend on which other rows
share the pass: silently meaningless. So does one whose output row ``i`` is computed from
another example than ``i`` (``x[::-1]``, ``jnp.roll(x, 1, axis=0)``, ``x[perm]``): the maps
would be another input's. :func:`check_per_example` refuses such a model before anything is
compiled.

The check reads the jaxpr of one forward pass (traced for the shapes anyway; nothing is
compiled or run) and follows the batch axis of the inputs through it: which axis of every
value holds the examples (through transposes, reshapes that merge or split it with other
axes, matmuls, convolutions, loops), and whether an operation reduces over it (a sum, a max,
an ``argmax``, a cumulative sum, a sort, a matmul contracting it, a window sliding along
it) or pairs rows of two examples (``x @ x.T``). Through static reorderings and selections
of the batch axis (a reversal, a slice with static bounds, a concatenation of rows along it,
a split, a tile, a gather or a ``dynamic_slice`` whose indices are constants) it keeps which
example each row comes from (:class:`Rows`'s ``order``): an elementwise operation combining
rows of different examples (``x - x[:1]``, ``x + x[::-1]``) mixes them, and an output whose
row ``i`` does not come from example ``i`` is refused, while rows that come back in their
order (test-time augmentation: ``concat([x, flip(x)])``, a network, the two halves split and
averaged) pass. So it does through rows written into the batch axis and loops over it:

- padding of the batch axis (``jnp.pad``, ``lax.pad``, interior and negative padding too)
  adds rows of no example (:data:`NO_EXAMPLE`): padding sliced off again passes, an output
  row of padding or of the next example (``jnp.pad(x, ((1, 0), ...))[:n]``) is refused, and
  padding combined with one example's rows mixes nothing;
- a scatter with constant indices (``x.at[perm].set(y)``, ``x.at[::-1].set(y)``,
  ``x.at[1:3].set(y)``, ``jnp.zeros_like(x).at[idx].add(x)``, ``x.at[:, 0].set(v)``) and a
  ``lax.dynamic_update_slice`` with a constant start write rows into rows: a ``scatter`` of
  whole rows replaces them, a ``scatter-add`` (and the other combining scatters) or a write
  of part of a row combines the two, so rows put back in their order pass, rows written out
  of it are refused, and two examples' rows combined into one are refused as mixing;
- a ``lax.scan`` or ``lax.map`` over the batch axis in any order: iteration ``t`` depends on
  the example of row ``t`` and its stacked outputs keep those rows (``lax.map(f, x[::-1])``
  is refused, ``lax.map(f, x[::-1])[::-1]`` passes); a carry from one iteration to the next
  mixes the examples.

A choice made once for the whole batch, on a predicate computed from several examples, counts
as mixing them, however it is written: ``jnp.where(jnp.mean(x) > 0, x, -x)`` (``select_n``),
a ``lax.cond`` or ``lax.switch`` on ``jnp.all(x > 0)``, a while loop run until
``jnp.max(err)`` over the batch is small. Row ``i``'s value then depends on the other inputs
(which value, branch or number of iterations the batch picks), so the methods' batches of
noisy or masked copies, an input with its reference, or chunks of another size would pick
differently: the check cannot tell a choice whose branches agree on every row from one whose
do not, and ``jnp.where``'s and ``lax.cond``'s verdicts agree. The same choices made for
each row on its own input pass: a predicate per row (``jnp.all(x > 0, axis=(1, 2, 3))`` in a
``jnp.where``), or ``jax.vmap`` over single inputs, which writes a ``cond`` on one input as
``select_n`` and gives a while loop one predicate per row. A predicate the check cannot
follow leaves the chosen values' rows unknown.

Where it loses track of the batch axis, it assumes nothing: the check refuses only what it
has seen mix or reorder the examples, so a model it cannot follow is never refused (and not
vouched for either). It loses track at a gather or a scatter that indexes the batch axis
with values it cannot compute (a parameter, an input) or out of bounds (dropped or clamped
rows), a scatter that sets two examples' rows into one row (which one is kept is not
defined), a scatter under ``jax.vmap`` with indices per row (``operand_batching_dims``), a
loop over the batch axis together with rows in another order, a reshape that splits the
batch axis across two axes (``jnp.repeat(x, 2, axis=0)`` read back as ``.reshape(2, n, k)``:
a later mean over either of them, which mixes examples, is then not seen), an operation it
does not know, and a reordering of a batch axis merged with more than :data:`_MAX_ROWS` entries.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import jax
import numpy as np

#: A value that does not depend on the inputs (weights, constants, shapes).
NONE = "none"
#: A value whose dependence on the inputs the check could not follow.
UNKNOWN = "unknown"
#: Inside a loop over the batch axis (``lax.scan``, ``lax.map``): a value that depends on
#: the example of the current iteration only.
ONE = "one example"
#: In :attr:`Rows.order`: entries that depend on no example (rows of padding, constant rows
#: written into the batch axis).
NO_EXAMPLE = -1


@dataclasses.dataclass(frozen=True)
class Rows:
    """A value whose axis ``axis`` holds the examples: along it, ``outer`` blocks of ``m``
    groups of ``inner`` consecutive entries each, the entries of group ``j`` depending on
    example ``order[j]`` alone. ``order`` ``None``: the examples in their order, ``m = n``
    (``inner`` > 1 after a reshape merged the batch axis with the axes after it,
    ``(N, T, F) -> (N*T, F)``; ``outer`` > 1 after one merged it with axes before it, or
    after the batch was tiled). A tuple of example indices after a static reordering or
    selection of the batch axis (``x[::-1]``: ``(n-1, ..., 0)``; ``x[1:]``: ``(1, ...,
    n-1)``; :data:`NO_EXAMPLE` for rows of padding, ``jnp.pad(x, ((1, 0), ...))``: ``(-1, 0,
    ..., n-1)``), one ``Rows`` per map from entries to examples (:meth:`_Analysis._rows`);
    ``via`` names the operation that first reordered the rows (not compared)."""

    axis: int
    inner: int = 1
    order: tuple[int, ...] | None = None
    via: str = dataclasses.field(default="", compare=False)

    def __post_init__(self):  # NumPy ints from a jaxpr's parameters compare equal anyway
        object.__setattr__(self, "axis", int(self.axis))
        object.__setattr__(self, "inner", int(self.inner))
        if self.order is not None:
            object.__setattr__(self, "order", tuple(int(e) for e in self.order))

    def at(self, axis: int) -> "Rows":
        """The same rows on axis ``axis`` (the value transposed, an axis added or removed)."""
        return Rows(axis, self.inner, self.order, self.via)

    def example(self, k: int, n: int) -> int:
        """The example entry ``k`` along the axis depends on."""
        j = k // self.inner
        return j % n if self.order is None else self.order[j % len(self.order)]

    def mixes(self) -> bool:
        """Whether the entries along the axis come from several examples (an operation
        combining them mixes examples; one example's entries, with rows of padding or not,
        can be pooled)."""
        return self.order is None or len(set(self.order) - {NO_EXAMPLE}) > 1


#: The longest batch axis whose rows the check maps one by one (a reordering of a longer
#: one -- the batch axis merged with large axes -- is not followed).
_MAX_ROWS = 1 << 16


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


def _decided(eqn: Any, pred: Any, outs: list, what: str) -> list:
    """The states of ``outs``, values chosen by ``eqn`` (``what`` it decides: the value
    ``jnp.where`` picks, the branch of a ``lax.cond``, the iterations of a while loop) on a
    predicate of state ``pred``: a predicate computed from several examples (one choice for
    the whole batch) makes every output depend on them all; one the check could not follow
    leaves their rows unknown; else (a constant, or one predicate per row, as ``jax.vmap``
    writes a ``cond`` or a while loop on one example) ``outs``."""
    if isinstance(pred, Coupled):
        return [Coupled(f"{pred.where}, which decides {what}{_located(eqn)}")] * len(outs)
    if pred == UNKNOWN:
        return [UNKNOWN if isinstance(o, Rows) else o for o in outs]
    return outs


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


def _relocated(what: str, call: Any) -> str:
    """``what`` (an operation inside a nested call, with no layer named) located by the
    ``call`` that contains it: by its layer where JAX recorded one (replacing the inner
    line, a line of the function called), else by its line where ``what`` has none."""
    outer = _located(call)
    if " in layer " in outer:
        return (what.rpartition(" at ")[0] if " at " in what else what) + outer
    return what if " at " in what else what + outer


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


def _scan_counts(params: dict) -> tuple[int, int]:
    """How many of a ``scan``'s operands are constants and how many the carry: the
    ``num_consts`` and ``num_carry`` parameters up to jax 0.10, the sizes of the first two
    groups of its ``ft_in`` (operand tree: constants, carry, scanned arrays) from jax 0.11."""
    if "num_consts" in params:
        return params["num_consts"], params["num_carry"]
    consts, carry, _ = params["ft_in"].unpack()
    return len(consts), len(carry)


def _broadcast(eqn: Any, a: np.ndarray) -> np.ndarray:
    shape, dims = eqn.params["shape"], eqn.params["broadcast_dimensions"]
    full = [1] * len(shape)
    for i, d in enumerate(dims):
        full[d] = a.shape[i]
    return np.broadcast_to(a.reshape(full), shape)


def _iota(eqn: Any) -> np.ndarray:
    p = eqn.params
    shape, d = tuple(p["shape"]), p["dimension"]
    line = np.arange(shape[d], dtype=p["dtype"]).reshape([-1 if i == d else 1
                                                          for i in range(len(shape))])
    return np.broadcast_to(line, shape)


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:  # lax.div: rounds toward zero
    if np.issubdtype(np.result_type(a, b), np.integer):
        q = np.abs(a) // np.abs(b)
        return np.where((a < 0) != (b < 0), -q, q)
    return a / b


#: NumPy for the operations that compute constant indices (``jnp.take``'s normalization
#: of negative indices, ``jnp.arange``, a permutation built from ``iota``); values computed
#: only where a rule asks (:meth:`_Analysis._const`).
_EVAL = {
    "add": lambda e, a, b: a + b, "sub": lambda e, a, b: a - b, "mul": lambda e, a, b: a * b,
    "div": lambda e, a, b: _div(a, b), "rem": lambda e, a, b: np.fmod(a, b),
    "neg": lambda e, a: -a, "abs": lambda e, a: np.abs(a), "sign": lambda e, a: np.sign(a),
    "max": lambda e, a, b: np.maximum(a, b), "min": lambda e, a, b: np.minimum(a, b),
    "lt": lambda e, a, b: a < b, "le": lambda e, a, b: a <= b, "gt": lambda e, a, b: a > b,
    "ge": lambda e, a, b: a >= b, "eq": lambda e, a, b: a == b, "ne": lambda e, a, b: a != b,
    "and": lambda e, a, b: a & b, "or": lambda e, a, b: a | b, "not": lambda e, a: ~a,
    "select_n": lambda e, w, *cases: np.choose(np.asarray(w).astype(np.int64), cases),
    "clamp": lambda e, lo, a, hi: np.clip(a, lo, hi),
    "convert_element_type": lambda e, a: a.astype(e.params["new_dtype"]),
    "copy": lambda e, a: a, "copy_p": lambda e, a: a,
    "device_put": lambda e, a: a,  # (older JAX: x[perm] with a NumPy perm puts it first)
    "broadcast_in_dim": _broadcast, "iota": lambda e: _iota(e),
    "reshape": lambda e, a, *dyn: a.reshape(e.params["new_sizes"]),
    "squeeze": lambda e, a: np.squeeze(a, tuple(e.params["dimensions"])),
    "transpose": lambda e, a: np.transpose(a, e.params["permutation"]),
    "rev": lambda e, a: np.flip(a, tuple(e.params["dimensions"])),
    "concatenate": lambda e, *a: np.concatenate(a, e.params["dimension"]),
    "slice": lambda e, a: a[tuple(slice(b, l, 1 if e.params["strides"] is None
                                        else e.params["strides"][i])
                                  for i, (b, l) in enumerate(zip(e.params["start_indices"],
                                                                 e.params["limit_indices"])))],
}


def _evaluate(eqn: Any, args: list) -> list | None:
    """The outputs of ``eqn`` on the constant NumPy arrays ``args``, or ``None`` (an
    operation not in :data:`_EVAL`, a value larger than :data:`_MAX_ROWS` elements)."""
    if any(a.size > _MAX_ROWS for a in args):
        return None
    name = eqn.primitive.name
    try:
        with np.errstate(all="ignore"):
            if name in _CALLS:
                sub = _Analysis._subjaxpr(eqn)
                outs = None if sub is None else _eval_jaxpr(sub, args)
            elif name in _EVAL and len(eqn.outvars) == 1:
                outs = [_EVAL[name](eqn, *args)]
            else:
                outs = None
            if outs is None:
                return None
            outs = [np.asarray(o) for o in outs]
    except Exception:  # an operation's parameters this table does not read
        return None
    return None if any(o.size > _MAX_ROWS for o in outs) else outs


def _eval_jaxpr(closed: Any, args: list) -> list | None:
    jaxpr = getattr(closed, "jaxpr", closed)
    env = {v: np.asarray(c) for v, c in zip(jaxpr.constvars, getattr(closed, "consts", ()))}
    env.update(zip(jaxpr.invars, args))

    def read(v):
        return np.asarray(v.val) if type(v).__name__ == "Literal" else env[v]

    for eqn in jaxpr.eqns:
        outs = _evaluate(eqn, [read(v) for v in eqn.invars])
        if outs is None:
            return None
        env.update(zip(eqn.outvars, outs))
    return [read(v) for v in jaxpr.outvars]


def _padded(f: tuple, lo: int, hi: int, interior: int) -> tuple:
    """The examples ``f`` of the entries along an axis, padded as ``lax.pad`` pads it:
    ``interior`` entries of :data:`NO_EXAMPLE` between two entries, ``lo`` before and ``hi``
    after them (negative: that many entries cut off)."""
    spaced = [NO_EXAMPLE] * (len(f) + max(len(f) - 1, 0) * interior)
    spaced[::interior + 1] = f
    spaced = [NO_EXAMPLE] * max(lo, 0) + spaced[max(-lo, 0):]
    return tuple(spaced[:len(spaced) + min(hi, 0)] + [NO_EXAMPLE] * max(hi, 0))


def _written(base: np.ndarray, rows: np.ndarray, ex: np.ndarray,
             combine: bool) -> np.ndarray | None:
    """The examples of the entries along an axis (``base``: one per entry,
    :data:`NO_EXAMPLE` for none) after entries of examples ``ex`` are written into entries
    ``rows``: replacing them (``combine`` false: a scatter, a ``dynamic_update_slice`` of
    whole rows), or combined with them (an elementwise operation, a scatter-add, a write of
    part of a row: the one example among the entry's and those written to it). ``None``
    where an entry gets two examples: which one is not defined (replacing) or both are
    mixed (combining)."""
    if combine:  # rows of no example combine with anything
        keep = ex != NO_EXAMPLE
        rows, ex = rows[keep], ex[keep]
    got = np.array(base, dtype=np.int64)
    got[rows] = ex  # two examples written into one entry: one of them, compared below
    if (got[rows] != ex).any():
        return None
    if combine and ((base[rows] != NO_EXAMPLE) & (base[rows] != ex)).any():
        return None
    return got


class _Consts:
    """Where the values of one jaxpr's variables that do not depend on the inputs come from,
    for :meth:`_Analysis._const`: ``("v", value)`` (a constant), ``("e", eqn, k)`` (output
    ``k`` of an equation of this jaxpr) or ``("o", var, frame)`` (a variable of the
    enclosing jaxpr, ``frame`` its :class:`_Consts`); ``memo``: the equations computed."""

    __slots__ = ("src", "memo")

    def __init__(self):
        self.src: dict = {}
        self.memo: dict = {}


class _Analysis:
    def __init__(self, n: int):
        self.n = n
        self.frame = _Consts()  # the constants of the jaxpr being walked

    # ------------------------------------------------------------------ a jaxpr
    def run(self, jaxpr: Any, in_states: Sequence[Any], consts_states: Sequence[Any] = (),
            in_srcs: Sequence[Any] = (), const_srcs: Sequence[Any] = ()) -> list:
        env: dict = {}
        frame = _Consts()

        def read(v):
            if type(v).__name__ == "Literal":
                return NONE
            return env.get(v, NONE)

        for v, s in zip(jaxpr.constvars, consts_states):
            env[v] = s
        for v, s in zip(jaxpr.invars, in_states):
            env[v] = s
        for v, src in zip([*jaxpr.constvars, *jaxpr.invars], [*const_srcs, *in_srcs]):
            if src is not None:
                frame.src[v] = src
        outer, self.frame = self.frame, frame
        try:
            for eqn in jaxpr.eqns:
                ins = [read(v) for v in eqn.invars]
                outs = self.eqn(eqn, ins)
                for v, s in zip(eqn.outvars, outs):
                    env[v] = s
                if outs and outs[0] == NONE:  # a constant: computed if a rule asks
                    for k, v in enumerate(eqn.outvars):
                        frame.src[v] = ("e", eqn, k)
        finally:
            self.frame = outer
        return [read(v) for v in jaxpr.outvars]

    def closed(self, closed_jaxpr: Any, in_states: Sequence[Any],
               in_srcs: Sequence[Any] = ()) -> list:
        jaxpr = getattr(closed_jaxpr, "jaxpr", closed_jaxpr)
        consts = getattr(closed_jaxpr, "consts", ())
        return self.run(jaxpr, in_states, [NONE] * len(jaxpr.constvars), in_srcs,
                        [("v", c) for c in consts])

    def _src(self, v: Any) -> tuple:
        """Where ``v``, an operand of an equation of the jaxpr being walked, comes from, for
        a jaxpr it calls."""
        if type(v).__name__ == "Literal":
            return ("v", v.val)
        return ("o", v, self.frame)

    def _const(self, v: Any, frame: _Consts | None = None, depth: int = 0) -> Any:
        """The value of ``v`` (a NumPy array) where it is a constant the check can compute
        (see :data:`_EVAL`), else ``None``."""
        if type(v).__name__ == "Literal":
            return np.asarray(v.val)
        frame = self.frame if frame is None else frame
        src = frame.src.get(v)
        if src is None or depth > 64:
            return None
        if src[0] == "v":
            return np.asarray(src[1])
        if src[0] == "o":
            return self._const(src[1], src[2], depth + 1)
        eqn, k = src[1], src[2]
        if id(eqn) not in frame.memo:
            args = [self._const(u, frame, depth + 1) for u in eqn.invars]
            frame.memo[id(eqn)] = (None if any(a is None for a in args)
                                   else _evaluate(eqn, args))
        outs = frame.memo[id(eqn)]
        return None if outs is None else outs[k]

    # ------------------------------------------------------------------ rows of examples
    def _examples(self, s: Rows, size: int) -> tuple | None:
        """The example each of the ``size`` entries along ``s.axis`` depends on, or
        ``None`` (more than :data:`_MAX_ROWS` of them)."""
        order = range(self.n) if s.order is None else s.order
        block = tuple(e for e in order for _ in range(s.inner))
        if size > _MAX_ROWS or not block or size % len(block):
            return None
        return block * (size // len(block))

    def _entries(self, s: Any, axis: int, size: int) -> tuple | None:
        """The example each of the ``size`` entries along ``axis`` of a value of state
        ``s`` depends on: :data:`NO_EXAMPLE` for a value of no example (:data:`NONE`), those
        of its rows for ``Rows`` on that axis; ``None`` otherwise (or too many entries)."""
        if s == NONE and size <= _MAX_ROWS:
            return (NO_EXAMPLE,) * size
        if isinstance(s, Rows) and s.axis == axis:
            return self._examples(s, size)
        return None

    def _rows(self, axis: int, f: Sequence[int], via: str) -> Any:
        """The :class:`Rows` of an axis whose entries depend on the examples ``f``, one per
        entry: the same map gives the same ``Rows`` (runs of equal examples become
        ``inner``, a repeated block ``outer``, the examples in their order ``order=None``);
        :data:`NONE` where no entry depends on an example."""
        f = tuple(int(e) for e in f)
        if not f:
            return UNKNOWN  # no rows at all
        if all(e == NO_EXAMPLE for e in f):
            return NONE
        inner, start = 0, 0
        for k in range(1, len(f) + 1):
            if k == len(f) or f[k] != f[start]:
                inner, start = math.gcd(inner, k - start), k
        c = f[::inner]
        m = len(c)
        for p in range(1, m + 1):
            if m % p == 0 and c[:p] * (m // p) == c:
                c = c[:p]
                break
        if c == tuple(range(self.n)):
            return Rows(axis, inner)
        return Rows(axis, inner, c, via)

    def _reordered(self, eqn: Any, s: Rows, size: int, axis: int, pick: Any,
                   what: str) -> Any:
        """``s``'s rows (``size`` of them) reordered or selected by ``pick`` (a function of
        the examples of the rows), on axis ``axis``; ``what``: the operation, named in
        ``via`` unless ``s``'s rows were reordered before."""
        f = self._examples(s, size)
        if f is None:
            return UNKNOWN
        return self._rows(axis, tuple(pick(f)), s.via or what + _located(eqn))

    def _combined(self, eqn: Any, states: Sequence[Any], what: str) -> Any:
        """Where ``states`` hold different rows on one axis (of the output's size there), an
        operation combining them entry by entry (``what``) gives: a :class:`Coupled` where
        it combines rows of different examples, the ``Rows`` of the combination where each
        entry combines one example's rows with rows of no example (``x`` with its first row
        replaced by padding, plus ``x``); else ``None`` (rows on different axes, or all in
        their order: not followed, as before)."""
        rows = [t for t in states if isinstance(t, Rows)]
        if len(set(rows)) < 2 or len({t.axis for t in rows}) > 1 or \
                all(t.order is None for t in rows):
            return None
        via = next((t.via for t in rows if t.via), "an operation")
        axis = rows[0].axis
        size = _shape(eqn.outvars[0])[axis]
        fs = [self._entries(t, axis, size) for t in rows]
        if all(f is not None for f in fs):
            got = _written(np.asarray(fs[0]), np.tile(np.arange(size), len(fs) - 1),
                           np.concatenate([np.asarray(f) for f in fs[1:]]), combine=True)
            if got is not None:
                return self._rows(axis, got, via)
        return _where(eqn, f"{what} combining rows of different inputs (the rows of one "
                           f"reordered or selected by {via})")

    def _write(self, eqn: Any, axis: int, base: Any, upd: Any, fu: tuple | None,
               writes: tuple[np.ndarray, np.ndarray], combine: bool, what: str) -> Any:
        """The state of ``base`` (rows on axis ``axis``, or :data:`NONE`) after entries of
        ``upd`` are written into it: ``fu`` the examples of ``upd``'s entries along its batch
        axis (``None``: not followed), ``writes`` ``(rows, pos)``: its entries ``pos`` written
        into ``base``'s entries ``rows``, replacing them or ``combine``-d with them
        (:func:`_written`); ``what``: the operation. ``UNKNOWN`` where the check cannot map
        the entries, or where two examples are written into one entry."""
        fo = self._entries(base, axis, _shape(eqn.outvars[0])[axis])
        if fo is None or fu is None:
            return UNKNOWN
        rows, pos = writes
        got = _written(np.asarray(fo), rows, np.asarray(fu)[pos], combine)
        if got is None:
            return (_where(eqn, f"{what} combining rows of different inputs in one row")
                    if combine else UNKNOWN)
        via = next((t.via for t in (base, upd) if isinstance(t, Rows) and t.via),
                   what + _located(eqn))
        return self._rows(axis, got, via)

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
            # operands may broadcast along axes of size 1: the batch axis only where it holds
            # one selected row (x - x[:1]: that example's row against every row); a bitcast
            # that changes the last axis is not followed
            if isinstance(s, Rows) and (len(shape) != len(out_shape)
                                        or shape[s.axis] != out_shape[s.axis]):
                size = out_shape[s.axis] if len(shape) == len(out_shape) else 0
                s = (self._reordered(eqn, s, 1, s.axis, lambda f: f * size,
                                     f"{eqn.primitive.name} broadcasting one row")
                     if size and shape[s.axis] == 1 and s.order is not None else UNKNOWN)
            states.append(s)
        mixed = self._combined(eqn, states, eqn.primitive.name)
        return [mixed or _join(states)] * len(eqn.outvars)

    def _reduce(self, eqn, ins):
        (s,) = ins[:1]
        axes = tuple(eqn.params["axes"])
        if isinstance(s, Rows):
            if s.axis in axes:  # the rows of one selected example: that example's value
                return [_where(eqn, f"{eqn.primitive.name} over the batch axis")
                        if s.mixes() else UNKNOWN]
            return [s.at(s.axis - sum(a < s.axis for a in axes))]
        return [s]

    def _reduce_generic(self, eqn, ins):  # lax.reduce: k operands, then k initial values
        k = len(eqn.outvars)
        init = _join(ins[k:])
        if isinstance(init, (Coupled, Rows)) or init == UNKNOWN:
            return self._opaque(ins, k)
        out = []
        for s in ins[:k]:
            if isinstance(s, Rows) and s.axis in tuple(eqn.params["dimensions"]):
                return [_where(eqn, "reduce over the batch axis") if s.mixes()
                        else UNKNOWN] * k
            if isinstance(s, Rows):
                dims = tuple(eqn.params["dimensions"])
                s = s.at(s.axis - sum(d < s.axis for d in dims))
            out.append(s)
        return [_join(out)] * k

    def _along(self, eqn, ins, axis, what):
        s = _join(ins)
        if isinstance(s, Rows) and s.axis == axis % max(len(_shape(eqn.invars[0])), 1) \
                and s.mixes():
            return [_where(eqn, what)] * len(eqn.outvars)
        return [s] * len(eqn.outvars)

    def _window(self, eqn, ins):
        s = ins[0]
        if not isinstance(s, Rows):
            return [s]
        p = eqn.params
        a = s.axis
        if p["window_dimensions"][a] > 1:
            return [_where(eqn, f"{eqn.primitive.name} with a window along the batch axis")
                    if s.mixes() else UNKNOWN]
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
            size = eqn.params["shape"][dims[s.axis]]
            if size != src[s.axis]:  # one selected row broadcast (jnp.broadcast_to(x[:1]))
                return [self._reordered(eqn, s, 1, dims[s.axis], lambda f: f * size,
                                        "broadcast_in_dim of one row along the batch axis")
                        if src[s.axis] == 1 and s.order is not None else UNKNOWN]
            return [s.at(dims[s.axis])]
        return [_join(ins)]  # a dynamic shape's operands: sizes, not values

    def _p_reshape(self, eqn, ins):
        s = ins[0]
        if not isinstance(s, Rows) or eqn.params.get("dimensions") is not None:
            return [s if not isinstance(s, Rows) else UNKNOWN]
        src, dst = _shape(eqn.invars[0]), tuple(eqn.params["new_sizes"])
        # the batch digit of the flat (row-major) index: stride `lo`, radix m (n, or the
        # length of the reordered block)
        lo = s.inner * math.prod(src[s.axis + 1:])
        hi = lo * (self.n if s.order is None else len(s.order))
        for b in range(len(dst)):
            stride = math.prod(dst[b + 1:])
            if stride <= lo and lo % stride == 0 and hi <= stride * dst[b] \
                    and (stride * dst[b]) % hi == 0:
                return [Rows(b, lo // stride, s.order, s.via)]
        return [UNKNOWN]

    def _p_squeeze(self, eqn, ins):
        s = ins[0]
        if isinstance(s, Rows):
            dims = tuple(d % len(_shape(eqn.invars[0])) for d in eqn.params["dimensions"])
            if s.axis in dims:
                return [UNKNOWN]
            return [s.at(s.axis - sum(d < s.axis for d in dims))]
        return [s]

    def _p_transpose(self, eqn, ins):
        s = ins[0]
        if isinstance(s, Rows):
            return [s.at(tuple(eqn.params["permutation"]).index(s.axis))]
        return [s]

    def _p_rev(self, eqn, ins):
        s = ins[0]
        if isinstance(s, Rows) and s.axis in tuple(eqn.params["dimensions"]):
            return [self._reordered(eqn, s, _shape(eqn.invars[0])[s.axis], s.axis,
                                    lambda f: f[::-1], "rev along the batch axis")]
        return [s]

    def _p_slice(self, eqn, ins):
        s = ins[0]
        if isinstance(s, Rows):
            a = s.axis
            p = eqn.params
            size = _shape(eqn.invars[0])[a]
            start, limit = p["start_indices"][a], p["limit_indices"][a]
            step = 1 if p["strides"] is None else p["strides"][a]
            if start == 0 and limit == size and step == 1:
                return [s]
            return [self._reordered(eqn, s, size, a, lambda f: f[start:limit:step],
                                    "a slice of the batch axis")]
        return [s]

    def _p_pad(self, eqn, ins):
        """Padding of the batch axis adds rows of no example (:data:`NO_EXAMPLE`) between
        and around the rows, or cuts some off (negative padding)."""
        s, fill = ins[0], ins[1]
        if isinstance(fill, Coupled):
            return [fill]
        if isinstance(s, Rows):
            a = s.axis
            lo, hi, interior = (int(k) for k in eqn.params["padding_config"][a])
            if (lo, hi, interior) == (0, 0, 0):
                return [s if fill == NONE else UNKNOWN]
            if fill != NONE or _shape(eqn.outvars[0])[a] > _MAX_ROWS:
                return [UNKNOWN]
            return [self._reordered(eqn, s, _shape(eqn.invars[0])[a], a,
                                    lambda f: _padded(f, lo, hi, interior),
                                    "pad of the batch axis")]
        return [_join(ins)]

    def _p_concatenate(self, eqn, ins):
        d = eqn.params["dimension"]
        coupled = [t for t in ins if isinstance(t, Coupled)]
        if coupled:
            return coupled[:1]
        if any(isinstance(t, Rows) and t.axis == d for t in ins):  # rows stacked
            if not all(isinstance(t, Rows) and t.axis == d for t in ins):
                return [UNKNOWN]  # with rows of no example (constants) or unknown ones
            parts = [self._examples(t, _shape(v)[d]) for v, t in zip(eqn.invars, ins)]
            if any(f is None for f in parts) or sum(map(len, parts)) > _MAX_ROWS:
                return [UNKNOWN]
            via = next((t.via for t in ins if t.via),
                       "concatenate along the batch axis" + _located(eqn))
            return [self._rows(d, tuple(e for f in parts for e in f), via)]
        return [self._combined(eqn, ins, "concatenate") or _join(ins)]

    def _p_select_n(self, eqn, ins):
        """``jnp.where`` / ``lax.select``: elementwise, its predicate an operand like the
        others (:func:`_decided` names a predicate computed from several examples)."""
        out = self._elementwise(eqn, ins)
        if any(isinstance(t, Coupled) for t in ins[1:]):
            return out
        return _decided(eqn, ins[0], out, "the values select_n (jnp.where) picks")

    def _p_optimization_barrier(self, eqn, ins):  # each operand as it is
        return list(ins)

    def _p_stack(self, eqn, ins):
        s = _join(ins)
        if isinstance(s, Rows):
            return [s.at(s.axis + (s.axis >= eqn.params["axis"]))]
        return [s]

    def _p_tile(self, eqn, ins):
        s = ins[0]
        reps = eqn.params["reps"]
        if isinstance(s, Rows) and reps[s.axis] != 1:  # the rows repeated
            return [self._reordered(eqn, s, _shape(eqn.invars[0])[s.axis], s.axis,
                                    lambda f: f * reps[s.axis], "tile along the batch axis")]
        return [s]

    def _p_split(self, eqn, ins):
        s = ins[0]
        shape = _shape(eqn.invars[0])
        if isinstance(s, Rows) and s.axis == eqn.params["axis"] % len(shape):
            f = self._examples(s, shape[s.axis])
            if f is None:
                return [UNKNOWN] * len(eqn.outvars)
            via = s.via or "split of the batch axis" + _located(eqn)
            starts = [0]
            for k in eqn.params["sizes"]:
                starts.append(starts[-1] + int(k))
            return [self._rows(s.axis, f[b:e], via) for b, e in zip(starts, starts[1:])]
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
            if s.axis >= rank - len(eqn.params["fft_lengths"]) and s.mixes():
                return [_where(eqn, "an FFT along the batch axis")]
        return [s]

    def _p_dynamic_slice(self, eqn, ins):
        s, idx = ins[0], ins[1:]
        if any(isinstance(t, Coupled) for t in idx):
            return [next(t for t in idx if isinstance(t, Coupled))]
        if isinstance(s, Rows) and all(t == NONE for t in idx):
            size, k = _shape(eqn.invars[0])[s.axis], eqn.params["slice_sizes"][s.axis]
            if k == size:
                return [s]
            start = self._const(eqn.invars[1 + s.axis])  # rows start..start+k: constants?
            if start is not None and start.size == 1:
                b = min(max(int(start.reshape(())), 0), size - k)  # clamped, as XLA does
                return [self._reordered(eqn, s, size, s.axis, lambda f: f[b:b + k],
                                        "dynamic_slice of the batch axis")]
        return [s if isinstance(s, Coupled) else UNKNOWN]

    def _p_dynamic_update_slice(self, eqn, ins):
        """Rows written into the batch axis (of the operand, or of a buffer of no example)
        at a constant start: ``k`` rows from there replaced by the update's, or combined
        with them where the update covers part of each row (some columns)."""
        s, upd, idx = ins[0], ins[1], ins[2:]
        coupled = next((t for t in ins if isinstance(t, Coupled)), None)
        if coupled is not None:
            return [coupled]
        rows = [t for t in (s, upd) if isinstance(t, Rows)]
        if not rows or len({t.axis for t in rows}) > 1 or any(t != NONE for t in idx):
            return [UNKNOWN]
        a = rows[0].axis
        shape, ushape = _shape(eqn.invars[0]), _shape(eqn.invars[1])
        size, k = shape[a], ushape[a]
        start = np.zeros(()) if k == size else self._const(eqn.invars[2 + a])
        if start is None or start.size != 1:
            return [UNKNOWN]
        b = min(max(int(start.reshape(())), 0), size - k)  # clamped, as XLA does
        whole = all(ushape[d] == shape[d] for d in range(len(shape)) if d != a)
        return [self._write(eqn, a, s, upd, self._entries(upd, a, k),
                            (np.arange(b, b + k), np.arange(k)), not whole,
                            "dynamic_update_slice of the batch axis")]

    def _p_scatter(self, eqn, ins):
        """Rows written into the batch axis at constant indices (``x.at[perm].set(y)``,
        ``jnp.zeros_like(x).at[idx].add(x)``, ``x.at[1:3].set(y)``) or into part of every row
        (``x.at[:, 0].set(v)``): replaced (``scatter`` of whole rows), or combined with the
        rows there (``scatter-add`` and the other combining scatters, ``.at[].apply``, a write
        of part of a row). ``UNKNOWN`` where the indices are not constants the check can
        compute, out of bounds, or batched (a scatter under ``vmap`` with per-row indices)."""
        s, idx, upd = ins[:3]
        coupled = next((t for t in ins if isinstance(t, Coupled)), None)
        if coupled is not None:
            return [coupled]
        dn = eqn.params["dimension_numbers"]
        if idx != NONE or len(ins) != 3 or getattr(dn, "operand_batching_dims", ()):
            return [UNKNOWN]
        shape, ushape = _shape(eqn.invars[0]), _shape(eqn.invars[2])
        uwd, inserted = tuple(dn.update_window_dims), tuple(dn.inserted_window_dims)
        smap = tuple(dn.scatter_dims_to_operand_dims)
        window = [d for d in range(len(shape)) if d not in inserted]  # in the order of uwd
        sizes = [1 if d in inserted else ushape[uwd[window.index(d)]] for d in range(len(shape))]
        indices = self._const(eqn.invars[1])
        if indices is None or not indices.size or indices.shape[-1:] != (len(smap),):
            return [UNKNOWN]
        indices = np.asarray(indices).astype(np.int64)
        if ((indices < 0) | (indices > np.array([shape[d] - sizes[d] for d in smap]))).any():
            return [UNKNOWN]  # dropped or clamped: not followed
        a = self._scatter_axis(s, upd, uwd, window, [d for d in inserted if d in smap])
        if a is None:
            return [UNKNOWN]
        # one start along the batch axis per scatter position (0 where it is not indexed)
        starts = indices[..., smap.index(a)] if a in smap else np.zeros(indices.shape[:-1],
                                                                       np.int64)
        if a in inserted:  # one row per scatter position: the indices pick it
            if isinstance(upd, Rows) and upd.axis in uwd:
                return [UNKNOWN]
            u = upd.axis if isinstance(upd, Rows) else None
            scatter_dims = [d for d in range(len(ushape)) if d not in uwd]
            rows = starts.reshape(-1)
            pos = (np.zeros_like(rows) if u is None
                   else np.indices(starts.shape)[scatter_dims.index(u)].reshape(-1))
            alone = True
        else:  # the batch axis in the window: rows b.. of every window, the update's rows
            u = uwd[window.index(a)]
            if (starts != starts.flat[0]).any() or (isinstance(upd, Rows) and upd.axis != u):
                return [UNKNOWN]
            b, k = int(starts.flat[0]), sizes[a]
            rows, pos, alone = np.arange(b, b + k), np.arange(k), starts.size == 1
        whole = alone and all(sizes[d] == shape[d] for d in range(len(shape)) if d != a)
        replace = eqn.primitive.name == "scatter" and eqn.params.get("update_jaxpr") is None
        fu = (NO_EXAMPLE,) if u is None else self._entries(upd, u, ushape[u])
        return [self._write(eqn, a, s, upd, fu, (rows, pos), not (replace and whole),
                            f"{eqn.primitive.name} along the batch axis")]

    _p_scatter_add = _p_scatter_sub = _p_scatter_mul = _p_scatter_min = _p_scatter_max = \
        _p_scatter

    @staticmethod
    def _scatter_axis(s, upd, uwd, window, picked) -> int | None:
        """The operand's batch axis of a scatter: the operand's (``s``); else the window axis
        the update's batch axis is written along; else the one axis whose rows the indices
        pick (``picked``: inserted window axes); ``None`` where none is."""
        if isinstance(s, Rows):
            return s.axis
        if s != NONE or not isinstance(upd, Rows):
            return None
        if upd.axis in uwd:
            return window[uwd.index(upd.axis)]
        return picked[0] if len(picked) == 1 else None

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
            return [idx.at(batch_out[idx_dims.index(idx.axis)])]
        if isinstance(s, Rows) and idx == NONE:
            a = s.axis
            kept = [d for d in range(len(_shape(eqn.invars[0])))
                    if d not in dn.collapsed_slice_dims and d not in op_batching]
            if a in dn.start_index_map and a not in op_batching:  # rows picked by indices
                return [self._gathered(eqn, s, batch_out, offset, kept)]
            if a in dn.collapsed_slice_dims or a in op_batching:
                return [UNKNOWN]
            if eqn.params["slice_sizes"][a] != _shape(eqn.invars[0])[a]:
                return [UNKNOWN]
            return [s.at(offset[kept.index(a)])]
        if isinstance(s, Rows) and isinstance(idx, Rows) and s.inner == idx.inner == 1 \
                and s.axis in op_batching and idx.axis in idx_batching \
                and op_batching.index(s.axis) == idx_batching.index(idx.axis):
            # take_along_axis: each example's own indices into its own row
            if s.order != idx.order:
                return [_where(eqn, "a gather indexing the rows of one input with the "
                                    f"indices of another (reordered or selected by "
                                    f"{s.via or idx.via})")]
            return [idx.at(batch_out[idx_dims.index(idx.axis)])]
        return [UNKNOWN]

    def _gathered(self, eqn, s, batch_out, offset, kept):
        """The rows of a gather whose start indices along ``s``'s batch axis are constants
        (``jnp.take(x, perm, axis=0)``, ``x[perm]``): one row per index, or one block of
        rows; ``UNKNOWN`` where the indices are not constants the check can compute, or out
        of bounds (filled or clamped rows)."""
        idx = self._const(eqn.invars[1])
        if idx is None or not idx.size:
            return UNKNOWN
        a, smap = s.axis, tuple(eqn.params["dimension_numbers"].start_index_map)
        shape, sizes = _shape(eqn.invars[0]), eqn.params["slice_sizes"]
        idx = np.asarray(idx).astype(np.int64)
        hi = np.array([shape[d] - sizes[d] for d in smap])
        if ((idx < 0) | (idx > hi)).any():
            return UNKNOWN
        starts = idx[..., smap.index(a)]  # one per index position (the last axis: the vector)
        many = [d for d, k in enumerate(starts.shape) if k > 1]
        what = "a gather along the batch axis"
        if len(many) == 1 and sizes[a] == 1:  # row j of the result: row starts[j]
            rows = [int(i) for i in starts.reshape(-1)]
            return self._reordered(eqn, s, shape[a], batch_out[many[0]],
                                   lambda f: [f[i] for i in rows], what)
        if not many and a in kept:  # one block of rows
            b, k = int(starts.reshape(-1)[0]), sizes[a]
            return self._reordered(eqn, s, shape[a], offset[kept.index(a)],
                                   lambda f: f[b:b + k], what)
        return UNKNOWN

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
                return [_where(eqn, "a matmul contracting the batch axis") if t.mixes()
                        else UNKNOWN]
        outs = []
        for t, batch, free, shift in ((lhs, lb, lfree, len(lb)),
                                      (rhs, rb, rfree, len(lb) + len(lfree))):
            if isinstance(t, Rows):
                outs.append(t.at(tuple(batch).index(t.axis)) if t.axis in batch
                            else t.at(shift + free.index(t.axis)))
        if len(outs) == 2 and outs[0] != outs[1]:
            if all(isinstance(t, Rows) and t.axis not in b for t, b in ((lhs, lb), (rhs, rb))):
                return [_where(eqn, "a matmul pairing the rows of two examples (x @ x.T)")]
            return [self._combined(eqn, outs, "a batched matmul") or UNKNOWN]
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
            return [lhs.at(out_spec[0])] if p["batch_group_count"] == 1 else [UNKNOWN]
        if not lhs.mixes():  # the rows of one selected example
            return [UNKNOWN]
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
        outs = self.closed(sub, ins, [self._src(v) for v in eqn.invars])
        # a jnp function's own jit (jnp.flip in older JAX): the caller's layer (or line),
        # where the callee names no layer
        for k, o in enumerate(outs):
            if isinstance(o, Coupled) and o not in ins and " in layer " not in o.where:
                outs[k] = Coupled(_relocated(o.where, eqn))
            elif isinstance(o, Rows) and o.via and o not in ins and " in layer " not in o.via:
                outs[k] = dataclasses.replace(o, via=_relocated(o.via, eqn))
        return outs

    def _p_scan(self, eqn, ins):
        """A loop over the batch axis (``lax.scan``, ``lax.map`` over the rows of the
        examples, in their order or reordered): inside it, each iteration's slice of those
        rows depends on one example (:data:`ONE`), the examples of the iterations are
        those of the rows (:meth:`_iterations`), and the stacked outputs have its rows; a
        carry from one iteration to the next mixes the examples. A loop over another axis
        keeps the batch axis of the values it slices."""
        p = eqn.params
        nc, ncarry = _scan_counts(p)
        consts, carry, xs = ins[:nc], ins[nc:nc + ncarry], ins[nc + ncarry:]
        loop = self._iterations(xs, p["length"])
        inner_xs = []
        for s in xs:
            if isinstance(s, Rows) and s.axis == 0:  # a loop over the examples
                s = ONE if loop is not None and s == loop[0] else UNKNOWN
            elif isinstance(s, Rows):
                s = s.at(s.axis - 1)
            inner_xs.append(s)
        # a value of one iteration's example carried into the next: of one example, with no
        # batch axis, where the loop runs over one example's rows
        carried = UNKNOWN
        if loop is not None and len(set(loop[1]) - {NO_EXAMPLE}) > 1:
            carried = _where(eqn, "a loop over the batch axis carrying values from one "
                                  "example to the next (an RNN run over the batch axis?)")
        ys = []
        for _ in range(4):
            out = self.closed(p["jaxpr"], [*consts, *carry, *inner_xs])
            new = [_join([c, o]) for c, o in zip(carry, out[:ncarry])]
            new = [carried if c == ONE else c for c in new]
            ys = out[ncarry:]
            if new == list(carry):
                break
            carry = new
        else:
            carry = [c if isinstance(c, Coupled) else UNKNOWN for c in carry]
            ys = [y if isinstance(y, Coupled) else UNKNOWN for y in ys]
        return [*carry, *(self._stacked(y, loop) for y in ys)]

    def _stacked(self, y: Any, loop: tuple[Rows, tuple] | None) -> Any:
        """The state of a loop's output ``y`` (of one iteration) stacked over the iterations
        of ``loop`` (:meth:`_iterations`) along a new leading axis."""
        if isinstance(y, Rows):
            return y.at(y.axis + 1)
        if y == ONE:  # the examples of the iterations
            return UNKNOWN if loop is None else self._rows(0, loop[1], loop[0].via)
        return y

    def _iterations(self, xs: Sequence[Any], length: int) -> tuple[Rows, tuple] | None:
        """For a loop of ``length`` iterations over ``xs``: the rows it loops over (the first
        of ``xs`` with rows on its leading axis) and the example of each iteration, or
        ``None`` (no such rows, or not mapped). Others of ``xs`` with those same rows are
        sliced with them; others with other rows are not followed."""
        rows = next((s for s in xs if isinstance(s, Rows) and s.axis == 0), None)
        f = None if rows is None else self._examples(rows, length)
        return None if f is None else (rows, f)

    def _p_while(self, eqn, ins):
        """The carry's states at the loop's fixed point; the loop's condition decides how
        many iterations change them (:func:`_decided`), not the values the body passes on
        unchanged."""
        p = eqn.params
        cn, bn = p["cond_nconsts"], p["body_nconsts"]
        cconsts, bconsts, carry = ins[:cn], ins[cn:cn + bn], ins[cn + bn:]
        for _ in range(4):
            out = self.closed(p["body_jaxpr"], [*bconsts, *carry])
            new = [_join([c, o]) for c, o in zip(carry, out)]
            if new == list(carry):
                break
            carry = new
        else:
            return [c if isinstance(c, Coupled) else UNKNOWN for c in carry]
        pred = self.closed(p["cond_jaxpr"], [*cconsts, *carry])[0]
        body = getattr(p["body_jaxpr"], "jaxpr", p["body_jaxpr"])
        changed = [o is not i for o, i in zip(body.outvars, body.invars[bn:])]
        decided = iter(_decided(eqn, pred, [c for c, k in zip(carry, changed) if k],
                                "how many iterations of while run"))
        return [next(decided) if k else c for c, k in zip(carry, changed)]

    def _p_cond(self, eqn, ins):
        """The branches' outputs joined; the branch index decides which (:func:`_decided`)."""
        results = [self.closed(b, ins[1:]) for b in eqn.params["branches"]]
        return _decided(eqn, ins[0], [_join(list(r)) for r in zip(*results)],
                        "the branch of cond")


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


def problem(s: Any, shape: tuple, n: int) -> tuple[str, str] | None:
    """What keeps an output of state ``s`` and shape ``shape`` (for a batch of ``n``) from
    having one row per input computed from that input alone: ``(kind, what)``, ``kind``
    ``"mixes"`` (it mixes the examples), ``"order"`` (its rows come from other examples
    than their own, or some inputs have none) or ``"rows"`` (the batch axis elsewhere, or
    merged with another); ``None`` where nothing is (or the check could not follow it)."""
    if isinstance(s, Coupled):
        return "mixes", s.where
    if not isinstance(s, Rows):
        return None
    if s.axis != 0:
        return "rows", f"its inputs are on axis {s.axis}, not on axis 0"
    if s.order is not None:
        size = int(shape[0])
        how = f" (the rows reordered or selected by {s.via})" if s.via else ""
        bad = next((r for r in range(size) if r >= n or s.example(r, n) != r), None)
        if bad is None:
            return "order", (f"in a batch of {n} inputs, it has rows for inputs 0 to "
                             f"{size - 1} only{how}")
        src = s.example(bad, n)
        got = ("no input (a row of padding or constants)" if src == NO_EXAMPLE
               else f"input {src}")
        other = "" if bad >= n else f", not input {bad}"
        return "order", (f"in a batch of {n} inputs, its row {bad} is computed from "
                         f"{got}{other}{how}")
    if s.inner != 1 or shape[0] != n:
        return "rows", ("its first axis holds the inputs together with other values (a "
                        "reshape merged the batch axis with another, or the batch was "
                        "repeated)")
    return None


def coupling(model: Any, x: Any) -> tuple[int, str, str] | None:
    """``(output position, kind, what)`` (:func:`problem`) for the first output (leaf) of
    ``model`` that mixes the examples of a batch, reorders them or holds them elsewhere than
    on its first axis alone, or ``None`` (traced once per model and input shapes, cached)."""
    from jaxsal._src import base

    xs = _analysis_inputs(x)
    n = int(jax.tree_util.tree_leaves(xs)[0].shape[0])
    key = ("per-example", base.function_key(model), base.shape_key(xs))

    def make():
        for i, (s, shape) in enumerate(output_states(model, xs) or ()):
            found = problem(s, shape, n)
            if found is not None:
                return (i, *found)
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
            got += f". {'It mixes the inputs' if found[1] == 'mixes' else 'Why'}: {found[2]}"
    else:
        i, kind, where = found
        which = f"output {i}" if len(outs) > 1 else "output"
        does = {"mixes": "mixes the inputs of the batch", "rows": "has no row per input",
                "order": "does not keep the inputs in their order"}[kind]
        got = (f"the model's {which} (shape {tuple(outs[i].shape)} for a batch of {inputs}) "
               f"{does}: {where}; {expected}. Every method reads row i as input i's score"
               + (": the maps of one input would be another's" if kind == "order" else
                  " and runs the model on batches it builds (an input with its reference, "
                  "noisy or masked copies): the maps would depend on the other rows"))
    if len(outs) > 1:
        _, first = base.several_outputs(model, [o.shape for o in outs])
        hint = base.pick_output_hint(model, first)
        got += (f". Every output of the model is checked; to explain one that keeps the "
                f"inputs apart, {hint[0].lower()}{hint[1:]}")
    if not unbatched and found[1] == "order":
        raise ValueError(
            f"{got}. Make the model return row i for input i: leave the rows of its outputs "
            "in the order of its inputs (undo a reordering of the batch before the output: "
            "y[::-1] for y computed from x[::-1], y[jnp.argsort(perm)] for y computed from "
            "x[perm])")
    raise ValueError(
        f"{got}. Make the model map each input to its own output: reduce over the axes "
        "after the batch axis only (tf.reduce_sum(h, axis=-1), not tf.reduce_sum(h) or "
        "tf.nn.l2_loss(h)), or run it on one input at a time: jaxsal.FunctionModel("
        "lambda p, x: jax.vmap(lambda xi: model.apply(p, xi[None]).reshape(-1))(x), "
        "model.params)")
