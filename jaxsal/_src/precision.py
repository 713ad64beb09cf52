"""Low-precision matmuls: bfloat16 operands, float32 accumulation, everything else float32.

``precision="bfloat16"`` is built on one transform, :func:`low_precision`: it re-evaluates a
function's jaxpr with every float32 ``dot_general`` and ``conv_general_dilated`` given
bfloat16 operands and float32 accumulation (``preferred_element_type=float32``, so their
outputs stay float32), and every other operation (elementwise, reductions, ReLU masks,
max-pool selections) unchanged in float32. The matmuls and convolutions are where the time
goes and where accelerators gain from bfloat16; keeping the rest float32 bounds the error to
the operands' rounding.

Where it is applied matters more than how. The input gradient of a deep ReLU network is a
discontinuous function of the forward values: rounding them flips ReLU and max-pool routing,
and the map changes wherever one flips. On VGG16 (random weights, 112x112), float32
computation on an input merely rounded to bfloat16 gave maps with a Pearson r of 0.96 against
the float32 maps, and bfloat16 operands anywhere in the forward pass 0.87; a float32 forward
pass with a backward pass in low precision gave 0.9999. So jaxsal's gradient methods run only
their backward passes through :func:`low_precision` (``targets.target_pullback`` asks
:func:`backward_dtype` while jaxsal traces its program), and only the forward-only methods
(Score-CAM, Eigen-CAM, occlusion), whose outputs are continuous in the forward values, run
their whole program through it.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
from typing import Any, Callable, Iterator, Sequence, TypeVar

import jax
import jax.numpy as jnp
from jax import lax
from jax.extend import core as jcore

F = TypeVar("F", bound=Callable[..., Any])
#: The placeholder of an unused output (in ``jax.extend.core`` in JAX 0.10; in ``jax.core``
#: only in 0.4.38 to 0.8).
_DropVar = getattr(jcore, "DropVar", None) or jax.core.DropVar

#: The primitives whose float32 operands are rounded.
_LOW = (lax.dot_general_p, lax.conv_general_dilated_p)
#: Loops and branches: their bodies are rewritten in place and the primitive bound again.
_LOOPS = frozenset({"scan", "while", "cond"})
#: Calls whose body is evaluated inline (custom derivative rules are dropped: the transformed
#: function is evaluated, not differentiated).
_CALLS = frozenset({"jit", "pjit", "closed_call", "core_call", "checkpoint", "remat", "remat2",
                    "custom_jvp_call", "custom_vjp_call", "custom_vjp_call_jaxpr"})
_CALL_PARAMS = ("jaxpr", "call_jaxpr", "fun_jaxpr")


def low_precision(fn: F, dtype: Any = jnp.bfloat16, *, native: bool | None = None,
                  pullback: bool = False) -> F:
    """``fn`` with the operands of its float32 matmuls and convolutions rounded to ``dtype``.

    Every ``dot_general`` / ``conv_general_dilated`` of ``fn`` whose operands are all float32
    is computed from operands cast to ``dtype``, accumulating in float32 and returning float32
    (``preferred_element_type``); everything else, and the dtypes of all values, are those of
    ``fn``. The rewrite reaches into ``scan``, ``while``/``fori_loop`` and ``cond`` bodies and
    inlines nested ``jit``, ``checkpoint``, ``custom_jvp`` and ``custom_vjp`` calls (their
    custom derivative rules are dropped, so transform after differentiating, not before).
    Other higher-order primitives (e.g. ``shard_map``) run unchanged, as do integer dots and
    a dot or convolution that asks for ``Precision.HIGHEST`` or a dot algorithm explicitly;
    ``jax_default_matmul_precision`` (global or ``jax.default_matmul_precision(...)``) is not
    such a request: ``fn`` is traced without it, and the dots left unrounded get it back.
    The dots of a pullback (``pullback=True``) were traced with its forward pass, before: they
    carry the default, and those that carry it are rounded too.

    Args:
      fn: a function of arrays (pytrees of arrays) returning arrays; it is traced with
        :func:`jax.make_jaxpr` on every call, so call the result inside ``jit``.
      dtype: the operand dtype, default ``bfloat16``.
      native: ``True`` passes ``dtype`` operands to the dot/convolution; ``False`` rounds the
        operands to ``dtype`` and back to float32 and multiplies those: the same products
        (a product of two bfloat16 numbers is exact in float32) and float32 sums, without
        the speed. ``None`` (default): native, except on the CPU backend (the default
        backend when traced), whose XLA dot runtime rejects some mixed dots ("Unsupported
        element type for DotThunk::Execute: BF16 x BF16 = F32" for a batched ``einsum``)
        and where bfloat16 measured no faster.
      pullback: ``fn`` is the pullback of a ``jax.vjp`` traced outside it: its dots carry
        the precision of the forward pass's, ``jax_default_matmul_precision`` where these
        asked for none, and a dot at that default is rounded as one without (a dot whose
        forward asked for that very precision itself is too: the two cannot be told apart).
    Returns:
      A function with ``fn``'s signature and output structure; usable under ``jit``, ``vmap``
      and ``grad``, and inside another trace (``fn`` may close over its tracers).

    Example::

        f = low_precision(lambda w, x: jax.nn.relu(x @ w).sum())
        jax.jit(f)(w, x)  # x @ w from bfloat16 operands, relu and sum in float32
    """
    dtype = jnp.dtype(dtype)

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        rule = _Rule(dtype, jax.default_backend() != "cpu" if native is None else bool(native),
                     _default_precision() if pullback else None)
        # traced without a default matmul precision: under jax_default_matmul_precision
        # ="highest" (or "float32") every dot would carry HIGHEST and none be rounded; only a
        # dot that asks for a precision itself carries one (_eval_eqn gives the others the
        # caller's default again)
        with jax.default_matmul_precision(None):
            closed, out_shape = jax.make_jaxpr(fn, return_shape=True)(*args, **kwargs)
        outs = _eval(closed.jaxpr, closed.consts, jax.tree_util.tree_leaves((args, kwargs)),
                     rule)
        return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(out_shape), outs)

    return wrapped  # type: ignore[return-value]


# ---------------------------------------------------------------------- the trace-time context
_BACKWARD_DTYPE: contextvars.ContextVar[Any] = contextvars.ContextVar(
    "jaxsal_backward_dtype", default=None)


@contextlib.contextmanager
def low_precision_backward(dtype: Any) -> Iterator[None]:
    """Within this context, the pullbacks built by ``targets.target_pullback`` run through
    :func:`low_precision` with ``dtype``.

    A trace-time setting: ``base.compiled`` enters it only while JAX traces one of jaxsal's
    own programs, and only ``target_pullback`` reads it; the compiled program keeps the
    choice, nothing is read when it runs.
    """
    token = _BACKWARD_DTYPE.set(jnp.dtype(dtype))
    try:
        yield
    finally:
        _BACKWARD_DTYPE.reset(token)


def backward_dtype() -> Any:
    """The operand dtype for backward passes set by :func:`low_precision_backward`, or
    ``None`` (float32)."""
    return _BACKWARD_DTYPE.get()


# ---------------------------------------------------------------------- the jaxpr interpreter
@dataclasses.dataclass(frozen=True)
class _Rule:
    """How a float32 dot/convolution is computed: from ``dtype`` operands (``native``) or
    from float32 copies of them."""

    dtype: Any
    native: bool
    #: a precision that counts as none asked for (the caller's default, for a pullback)
    default: Any = None

    def bind(self, prim: jcore.Primitive, params: dict, invals: list):
        if self.native:
            ops = [lax.convert_element_type(a, self.dtype) for a in invals]
            return prim.bind(*ops, **dict(params, preferred_element_type=jnp.dtype(jnp.float32)))
        # reduce_precision, not a float32 -> dtype -> float32 round trip: XLA may drop such a
        # pair of converts as "excess precision" (jaxlib 0.4.30's CPU compiler did)
        info = jnp.finfo(self.dtype)
        return prim.bind(*(lax.reduce_precision(a, exponent_bits=info.nexp,
                                                mantissa_bits=info.nmant) for a in invals),
                         **params)


def _eval(jaxpr: jcore.Jaxpr, consts: Sequence[Any], args: Sequence[Any], rule: _Rule) -> list:
    env: dict = {}

    def read(v):
        return v.val if isinstance(v, jcore.Literal) else env[v]

    def write(v, val):
        if not isinstance(v, _DropVar):
            env[v] = val

    for v, a in zip(jaxpr.constvars, consts):
        write(v, a)
    for v, a in zip(jaxpr.invars, args):
        write(v, a)
    for eqn in jaxpr.eqns:
        outs = _eval_eqn(eqn, [read(v) for v in eqn.invars], rule)
        if not eqn.primitive.multiple_results:
            outs = [outs]
        for v, o in zip(eqn.outvars, outs):
            write(v, o)
    return [read(v) for v in jaxpr.outvars]


def _eval_eqn(eqn: jcore.JaxprEqn, invals: list, rule: _Rule):
    prim = eqn.primitive
    if prim in _LOW:
        if _rounds(eqn.params, invals, rule.default):
            return rule.bind(prim, eqn.params, invals)
        if eqn.params.get("precision", False) is None:  # traced without the default: as fn
            return _bind(prim, dict(eqn.params, precision=_default_precision()),
                         invals)
    if prim.name in _LOOPS:
        return _bind(prim, {k: _rewrite(v, rule) for k, v in eqn.params.items()}, invals)
    if prim.name in _CALLS:
        body = next((eqn.params[k] for k in _CALL_PARAMS if k in eqn.params), None)
        if isinstance(body, jcore.ClosedJaxpr):
            return _eval(body.jaxpr, body.consts, invals, rule)
        if isinstance(body, jcore.Jaxpr):
            return _eval(body, (), invals, rule)
    return _bind(prim, eqn.params, invals)


def _rounds(params: dict, invals: list, default: Any = None) -> bool:
    """Whether a dot/convolution gets low-precision operands: all float32, and no explicit
    request for full precision or for a dot algorithm (``default``, not ``None``: a precision
    that counts as no request)."""
    if not all(getattr(a, "dtype", None) == jnp.float32 for a in invals):
        return False
    precision = params.get("precision")
    if precision is None or (default is not None and precision == default):
        return True
    choices = precision if isinstance(precision, tuple) else (precision,)
    return all(p is None or (isinstance(p, lax.Precision) and p != lax.Precision.HIGHEST)
               for p in choices)


def _default_precision() -> Any:
    """The precision a dot traced now carries when it asks for none: that of
    ``jax_default_matmul_precision`` (global or a context), ``None`` when unset."""
    one = jax.ShapeDtypeStruct((1, 1), jnp.float32)
    (eqn,) = jax.make_jaxpr(lax.dot)(one, one).eqns
    return eqn.params.get("precision")


def _rewrite(value: Any, rule: _Rule) -> Any:
    """A loop/branch parameter with its jaxprs rewritten (same signature); others as is."""
    if isinstance(value, tuple) and value and all(isinstance(b, jcore.ClosedJaxpr)
                                                  for b in value):
        return tuple(_rewrite(b, rule) for b in value)
    if not isinstance(value, jcore.ClosedJaxpr):
        return value
    avals = value.in_avals
    if not all(hasattr(a, "shape") and hasattr(a, "dtype") for a in avals):
        return value  # tokens or other abstract values: keep the body as written
    specs = [jax.ShapeDtypeStruct(a.shape, a.dtype, weak_type=getattr(a, "weak_type", False))
             for a in avals]
    return jax.make_jaxpr(lambda *a: _eval(value.jaxpr, value.consts, a, rule))(*specs)


def _bind(prim: jcore.Primitive, params: dict, invals: list):
    bind_params = prim.get_bind_params(params)
    if isinstance(bind_params, tuple):  # older jax: (subfuns, params)
        subfuns, bind_params = bind_params
        return prim.bind(*subfuns, *invals, **bind_params)
    return prim.bind(*invals, **bind_params)
